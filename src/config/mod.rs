//! `source` and `params`, validated into types that cannot be wrong.
//!
//! The raw request is picked apart with [`Fields`]; what comes out is a
//! [`Source`] with a parsed URI, pool path and retry delay, and a put
//! [`Operation`] with validated lock names and the lock files already read
//! from the build's inputs. Mistakes fail here, before any network traffic,
//! with the field's name in the message.

pub mod line;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::{quoted, shortened, Error, Result};
use crate::model::duration::parse_go_duration;
use crate::model::names::{LockName, PoolPath};
use crate::model::pool::{join_names, Operation};
use crate::resource::protocol::{Fields, RawRequest};
use crate::store::git::uri::RepoUri;

/// The retry delay when `retry_delay` is absent or zero, as in the Go resource.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(10);

/// A string that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself, for the one place that must hand it on.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// `source.https_tunnel`: reach SSH servers through an HTTP CONNECT proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tunnel {
    /// Proxy host.
    pub host: String,
    /// Proxy port.
    pub port: u16,
    /// Proxy user and password for `Proxy-Authorization: Basic`.
    pub auth: Option<(String, Secret)>,
}

/// The `git_config` settings that mean something to libgit2.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GitSettings {
    /// `user.name` for commits.
    pub user_name: Option<String>,
    /// `user.email` for commits.
    pub user_email: Option<String>,
    /// `http.proxy`.
    pub http_proxy: Option<String>,
    /// `http.sslVerify` (false disables TLS verification).
    pub ssl_verify: Option<bool>,
    /// `http.sslCAInfo`: a CA bundle file.
    pub ssl_ca_info: Option<PathBuf>,
    /// `http.sslCAPath`: a directory of CA certificates.
    pub ssl_ca_path: Option<PathBuf>,
}

/// Which backend drives the pool (`source.backend`), carrying what it
/// needs: the API backend cannot exist without a CodeCommit repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `git` (default): libgit2 over any transport; `codecommit` when the
    /// URI is CodeCommit's (Git over HTTPS, signed with IAM credentials
    /// unless a username and password are given).
    Git { codecommit: Option<CodeCommit> },
    /// `codecommit-api`: the CodeCommit API, no clone.
    CodeCommitApi(CodeCommit),
}

impl Backend {
    /// The CodeCommit repository, whichever backend reaches it.
    pub fn codecommit(&self) -> Option<&CodeCommit> {
        match self {
            Backend::Git { codecommit } => codecommit.as_ref(),
            Backend::CodeCommitApi(cc) => Some(cc),
        }
    }
}

/// A CodeCommit repository named by `source.uri`, with its region resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeCommit {
    /// Region: from the URI, else `source.aws_region`, else the AWS SDK's
    /// default region chain (`AWS_REGION`/`AWS_DEFAULT_REGION`, the shared
    /// profile, EC2 instance metadata).
    pub region: String,
    /// Repository name.
    pub name: String,
    /// AWS profile (`PROFILE@NAME`).
    pub profile: Option<String>,
    /// Whether Git traffic is signed with IAM credentials (no username/password given).
    pub iam_auth: bool,
}

/// The `source` fields that hold secrets (read by [`Source::from_request`]
/// and by [`raw_secrets`], which must agree).
const PASSWORD: &str = "password";
const PRIVATE_KEY: &str = "private_key";
const PRIVATE_KEY_PASSPHRASE: &str = "private_key_passphrase";
/// `https_tunnel.proxy_password`.
const PROXY_PASSWORD: &str = "proxy_password";

/// The secrets in a raw `source`, as written and as `{:?}` quotes them:
/// read before the source is validated, so that even the errors of
/// validation never show them.
pub fn raw_secrets(source: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(String::from);
    let mut found: Vec<String> = [PASSWORD, PRIVATE_KEY, PRIVATE_KEY_PASSPHRASE]
        .iter()
        .filter_map(|field| text(source.get(*field)))
        .collect();
    found.extend(text(
        source
            .get("https_tunnel")
            .and_then(|t| t.get(PROXY_PASSWORD)),
    ));
    if let Some(uri) = text(source.get("uri")) {
        found.extend(crate::store::git::uri::embedded_passwords(&uri));
    }
    let escaped: Vec<String> = found
        .iter()
        .map(|s| {
            let quoted = format!("{s:?}");
            quoted[1..quoted.len() - 1].to_string()
        })
        .filter(|e| !found.contains(e))
        .collect();
    found.extend(escaped);
    found
}

/// A validated `source`.
#[derive(Clone, Debug)]
pub struct Source {
    /// `uri`, parsed.
    pub uri: RepoUri,
    /// `branch`.
    pub branch: String,
    /// `pool`.
    pub pool: PoolPath,
    /// `private_key`.
    pub private_key: Option<Secret>,
    /// `private_key_user`.
    pub private_key_user: Option<String>,
    /// `private_key_passphrase`.
    pub private_key_passphrase: Option<Secret>,
    /// `username` (or the user from the URL).
    pub username: Option<String>,
    /// `password` (or the password from the URL).
    pub password: Option<Secret>,
    /// `git_config`, the settings we honour.
    pub git: GitSettings,
    /// `retry_delay`.
    pub retry_delay: Duration,
    /// `expire_after`: `acquire` and `claim` may take over a claim older
    /// than this; `None` (absent or zero): claims never expire.
    pub expire_after: Option<Duration>,
    /// `https_tunnel`.
    pub https_tunnel: Option<Tunnel>,
    /// `skip_ssl_verification` (or `http.sslVerify: false`).
    pub skip_ssl_verification: bool,
    /// `known_hosts`: verify SSH host keys against these lines.
    pub known_hosts: Option<String>,
    /// `backend`, with the CodeCommit repository if `uri` names one.
    pub backend: Backend,
    /// `queue` and `waiter_lease`: the line of waiting puts.
    pub line: line::LineSource,
    /// Warnings for the build log (unknown fields, ignored settings).
    pub warnings: Vec<String>,
}

/// Finds the region of a CodeCommit URI that names none, given the URI's
/// profile (`PROFILE@NAME`); `None` if nothing says.
pub type RegionLookup<'a> = &'a mut dyn FnMut(Option<&str>) -> Result<Option<String>>;

impl Source {
    /// Validates the `source` of `req`. The region of a `codecommit://NAME`
    /// URI that the request does not give is asked of the AWS SDK's default
    /// region chain ([`crate::store::codecommit::creds::default_region`]) once
    /// everything else is valid.
    pub fn from_request(req: &RawRequest) -> Result<Source> {
        Source::from_request_with(req, &mut crate::store::codecommit::creds::default_region)
    }

    /// [`Source::from_request`], with the region looked up by `lookup`.
    pub fn from_request_with(req: &RawRequest, lookup: RegionLookup<'_>) -> Result<Source> {
        let mut f = Fields::new("source", req.source.clone());
        let uri = f.string("uri")?;
        let branch = f.string("branch")?;
        let pool = f.string("pool")?;
        // The Go resource reports every missing field at once, one per line.
        let mut missing = Vec::new();
        for (field, value) in [("uri", &uri), ("branch", &branch), ("pool", &pool)] {
            if value.is_none() {
                missing.push(format!("invalid payload (missing {field})"));
            }
        }
        if !missing.is_empty() {
            return Err(Error::bad_request(missing.join("\n")));
        }
        let (uri, branch, pool) = (
            uri.unwrap_or_default(),
            branch.unwrap_or_default(),
            pool.unwrap_or_default(),
        );

        if uri.len() > MAX_PARAM_PATH {
            return Err(Error::bad_request(format!(
                "invalid payload: source.uri is {} bytes long (at most {MAX_PARAM_PATH})",
                uri.len()
            )));
        }
        let aws_region = f.string("aws_region")?;
        let codecommit_repo = crate::store::codecommit::url::parse(&uri)
            .map_err(|e| Error::bad_request(format!("invalid payload: {e}")))?;
        let mut codecommit = None;
        let parse_uri = |u: &str| {
            RepoUri::parse(u).map_err(|e| Error::bad_request(format!("invalid payload: {e}")))
        };
        let uri = match codecommit_repo {
            None => Written::Parsed(parse_uri(&uri)?),
            Some(cc) => match cc.region.clone().or_else(|| aws_region.clone()) {
                Some(region) => {
                    let https = codecommit_https(&uri, &cc, &region);
                    codecommit = Some(CodeCommit {
                        region,
                        name: cc.name,
                        profile: cc.profile,
                        iam_auth: true,
                    });
                    Written::Parsed(parse_uri(&https)?)
                }
                None => Written::AwaitingRegion(uri, cc),
            },
        };
        if !git2::Reference::is_valid_name(&format!("refs/heads/{branch}")) {
            return Err(Error::bad_request(format!(
                "invalid payload: source.branch {} is not a valid branch name",
                quoted(&branch)
            )));
        }
        let pool = PoolPath::new(&pool)
            .map_err(|e| Error::bad_request(format!("invalid payload: source.{e}")))?;

        let mut warnings = Vec::new();
        let private_key = f.string(PRIVATE_KEY)?.map(Secret::new);
        let private_key_user = f.string("private_key_user")?;
        let private_key_passphrase = f.string(PRIVATE_KEY_PASSPHRASE)?.map(Secret::new);
        if f.bool("forward_agent")? == Some(true) {
            warnings.push(
                "source.forward_agent is not supported (libssh2 cannot forward an agent) and is ignored"
                    .into(),
            );
        }
        let username = f.string("username")?.or_else(|| uri.parsed()?.user.clone());
        let password = f
            .string(PASSWORD)?
            .or_else(|| uri.parsed()?.password.clone())
            .map(Secret::new);
        let git = parse_git_config(f.take("git_config"), &mut warnings)?;
        let retry_delay = parse_retry_delay(f.take("retry_delay"))?;
        let expire_after = parse_expire_after(f.take("expire_after"))?;
        let line = line::parse_source(&mut f)?;
        let https_tunnel = parse_tunnel(&mut f, &mut warnings)?;
        let skip_ssl_verification =
            f.bool("skip_ssl_verification")?.unwrap_or(false) || git.ssl_verify == Some(false);
        let known_hosts = f.string("known_hosts")?;
        let wants_api = match f.string("backend")?.as_deref() {
            None | Some("git") => false,
            Some("codecommit-api") => true,
            Some(other) => {
                return Err(Error::bad_request(format!(
                    "invalid payload: source.backend {other:?} is not a backend (git or codecommit-api)"
                )))
            }
        };
        let is_codecommit = codecommit.is_some() || uri.parsed().is_none();
        let api_needs_codecommit = || {
            Error::bad_request(
                "invalid payload: source.backend codecommit-api needs a CodeCommit source.uri (https://git-codecommit.REGION.amazonaws.com/v1/repos/NAME or codecommit::REGION://NAME)",
            )
        };
        if wants_api && !is_codecommit {
            return Err(api_needs_codecommit());
        }
        if aws_region.is_some() && !is_codecommit {
            warnings
                .push("source.aws_region only applies to CodeCommit URIs and is ignored".into());
        }
        for field in f.leftover() {
            warnings.push(format!(
                "unknown field source.{} is ignored",
                shortened(&field)
            ));
        }
        // Everything else is valid: only now may the region chain ask
        // instance metadata.
        let uri = match uri {
            Written::Parsed(uri) => uri,
            Written::AwaitingRegion(written, cc) => {
                let region = lookup(cc.profile.as_deref())?
                    .filter(|r| crate::store::codecommit::url::is_region(r))
                    .ok_or_else(|| {
                        Error::bad_request(format!(
                            "invalid payload: source.uri {} does not say which AWS region, and none was found; tried {}. Use codecommit::REGION://{}, or set source.aws_region",
                            quoted(&written),
                            crate::store::codecommit::creds::region_sources(cc.profile.as_deref()),
                            match &cc.profile {
                                Some(p) => format!("{p}@{}", cc.name),
                                None => cc.name.clone(),
                            }
                        ))
                    })?;
                let https = codecommit_https(&written, &cc, &region);
                codecommit = Some(CodeCommit {
                    region,
                    name: cc.name,
                    profile: cc.profile,
                    iam_auth: true,
                });
                parse_uri(&https)?
            }
        };
        if let Some(cc) = &mut codecommit {
            cc.iam_auth = username.is_none() && password.is_none();
        }
        let backend = match (wants_api, codecommit) {
            (true, Some(cc)) => Backend::CodeCommitApi(cc),
            (true, None) => return Err(api_needs_codecommit()),
            (false, codecommit) => Backend::Git { codecommit },
        };
        if git.http_proxy.is_some() && matches!(uri.scheme, crate::store::git::uri::Scheme::Http) {
            // Measured with libgit2 1.9: it sends plain http:// requests
            // straight to the server whatever the proxy options say.
            warnings.push(
                "source.git_config http.proxy is only used for https:// remotes; libgit2 connects to an http:// remote directly"
                    .into(),
            );
        }
        if https_tunnel.is_some() && !matches!(uri.scheme, crate::store::git::uri::Scheme::Ssh) {
            warnings.push(
                "source.https_tunnel only applies to SSH URIs; for http(s) use git_config http.proxy"
                    .into(),
            );
        }
        Ok(Source {
            uri,
            branch,
            pool,
            private_key,
            private_key_user,
            private_key_passphrase,
            username,
            password,
            git,
            retry_delay,
            expire_after,
            https_tunnel,
            skip_ssl_verification,
            known_hosts,
            backend,
            line,
            warnings,
        })
    }

    /// The CodeCommit repository `uri` names, if it is one.
    pub fn codecommit(&self) -> Option<&CodeCommit> {
        self.backend.codecommit()
    }

    /// Every secret in the source, for scrubbing output.
    pub fn secrets(&self) -> Vec<String> {
        let mut out: Vec<String> = [
            &self.private_key,
            &self.private_key_passphrase,
            &self.password,
        ]
        .into_iter()
        .flatten()
        .map(|s| s.expose().to_string())
        .collect();
        if let Some(Tunnel {
            auth: Some((_, pass)),
            ..
        }) = &self.https_tunnel
        {
            out.push(pass.expose().to_string());
        }
        out
    }
}

/// `source.uri` on its way to a [`RepoUri`].
enum Written {
    Parsed(RepoUri),
    /// `codecommit://[PROFILE@]NAME` whose region the request does not give
    /// (as written): the region chain may have to ask instance metadata, so
    /// that waits until everything else is valid. It has no credentials in
    /// it and becomes an https URL.
    AwaitingRegion(String, crate::store::codecommit::url::CodeCommitRepo),
}

impl Written {
    fn parsed(&self) -> Option<&RepoUri> {
        match self {
            Written::Parsed(uri) => Some(uri),
            Written::AwaitingRegion(..) => None,
        }
    }
}

/// The https URL of a CodeCommit repository: as written if it is one, else
/// its Git endpoint in `region`.
fn codecommit_https(
    written: &str,
    cc: &crate::store::codecommit::url::CodeCommitRepo,
    region: &str,
) -> String {
    if written.starts_with("https://") {
        return written.to_string();
    }
    let host = cc
        .host
        .clone()
        .unwrap_or_else(|| crate::store::codecommit::url::git_host(region));
    format!("https://{host}/v1/repos/{}", cc.name)
}

fn parse_retry_delay(value: Option<Value>) -> Result<Duration> {
    let delay = match value {
        None => Duration::ZERO,
        Some(Value::String(s)) if s.is_empty() => Duration::ZERO,
        Some(Value::String(s)) => parse_go_duration(&s)
            .map_err(|e| Error::bad_request(format!("invalid payload: source.retry_delay: {e}")))?,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(nanos) => Duration::from_nanos(nanos),
            None => {
                return Err(Error::bad_request(format!(
                    "invalid payload: source.retry_delay {n} is not a whole, non-negative number of nanoseconds"
                )))
            }
        },
        Some(_) => {
            return Err(Error::bad_request(
                "invalid payload: source.retry_delay must be a duration such as \"10s\" or \"1m30s\"",
            ))
        }
    };
    Ok(if delay.is_zero() {
        DEFAULT_RETRY_DELAY
    } else {
        delay
    })
}

fn parse_expire_after(value: Option<Value>) -> Result<Option<Duration>> {
    let expiry = match value {
        None => return Ok(None),
        Some(Value::String(s)) if s.is_empty() => return Ok(None),
        Some(Value::String(s)) => parse_go_duration(&s).map_err(|e| {
            Error::bad_request(format!("invalid payload: source.expire_after: {e}"))
        })?,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(nanos) => Duration::from_nanos(nanos),
            None => {
                return Err(Error::bad_request(format!(
                    "invalid payload: source.expire_after {n} is not a whole, non-negative number of nanoseconds"
                )))
            }
        },
        Some(_) => {
            return Err(Error::bad_request(
                "invalid payload: source.expire_after must be a duration such as \"4h\" or \"30m\"",
            ))
        }
    };
    Ok(Some(expiry).filter(|d| !d.is_zero()))
}

fn parse_tunnel(f: &mut Fields, warnings: &mut Vec<String>) -> Result<Option<Tunnel>> {
    let Some(mut t) = f.object("https_tunnel", "source.https_tunnel")? else {
        return Ok(None);
    };
    let host = t.string("proxy_host")?.ok_or_else(|| {
        Error::bad_request("invalid payload: source.https_tunnel.proxy_host is required")
    })?;
    let port = t.scalar("proxy_port")?.ok_or_else(|| {
        Error::bad_request("invalid payload: source.https_tunnel.proxy_port is required")
    })?;
    let port = port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
        Error::bad_request(format!(
            "invalid payload: source.https_tunnel.proxy_port {port:?} is not a port number"
        ))
    })?;
    let user = t.string("proxy_user")?;
    let password = t.string(PROXY_PASSWORD)?;
    let auth = match (user, password) {
        (Some(u), p) => Some((u, Secret::new(p.unwrap_or_default()))),
        (None, Some(_)) => {
            return Err(Error::bad_request(
                "invalid payload: source.https_tunnel.proxy_password needs proxy_user",
            ))
        }
        (None, None) => None,
    };
    for field in t.leftover() {
        warnings.push(format!(
            "unknown field source.https_tunnel.{field} is ignored"
        ));
    }
    Ok(Some(Tunnel { host, port, auth }))
}

fn parse_bool_setting(name: &str, value: &str) -> Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(Error::bad_request(format!(
            "invalid payload: source.git_config {name} must be true or false, not {}",
            quoted(value)
        ))),
    }
}

fn parse_git_config(value: Option<Value>, warnings: &mut Vec<String>) -> Result<GitSettings> {
    let mut git = GitSettings::default();
    let entries = match value {
        None => return Ok(git),
        Some(Value::Array(entries)) => entries,
        Some(_) => {
            return Err(Error::bad_request(
                "invalid payload: source.git_config must be a list of {name, value}",
            ))
        }
    };
    for (i, entry) in entries.into_iter().enumerate() {
        let Value::Object(map) = entry else {
            return Err(Error::bad_request(format!(
                "invalid payload: source.git_config[{i}] must be an object with name and value"
            )));
        };
        let mut e = Fields::new("source.git_config[]", map);
        let name = e.string("name")?.ok_or_else(|| {
            Error::bad_request(format!(
                "invalid payload: source.git_config[{i}].name is missing"
            ))
        })?;
        let value = e.scalar("value")?.unwrap_or_default();
        if value.chars().any(|c| c == '\0' || c == '\n') {
            return Err(Error::bad_request(format!(
                "invalid payload: source.git_config {} contains a newline or NUL",
                shortened(&name)
            )));
        }
        match name.to_ascii_lowercase().as_str() {
            "user.name" => git.user_name = Some(value),
            "user.email" => git.user_email = Some(value),
            "http.proxy" | "https.proxy" => git.http_proxy = Some(value).filter(|v| !v.is_empty()),
            "http.sslverify" => git.ssl_verify = Some(parse_bool_setting(&name, &value)?),
            "http.sslcainfo" => git.ssl_ca_info = Some(PathBuf::from(value)),
            "http.sslcapath" => git.ssl_ca_path = Some(PathBuf::from(value)),
            _ => warnings.push(format!(
                "source.git_config {} is not used by pool-resource and is ignored (honoured: user.name, user.email, http.proxy, http.sslVerify, http.sslCAInfo, http.sslCAPath)",
                shortened(&name)
            )),
        }
    }
    Ok(git)
}

/// The longest directory a put param may name, and the longest `source.uri`:
/// Linux's PATH_MAX.
const MAX_PARAM_PATH: usize = 4096;

const PUT_ACTIONS: [&str; 9] = [
    "acquire",
    "release",
    "remove",
    "claim",
    "add",
    "add_claimed",
    "update",
    "check",
    "check_unclaimed",
];

/// The nearest known name to a mistyped one, if it is close enough.
fn suggest(unknown: &str, known: &[&str]) -> Option<String> {
    known
        .iter()
        // Cheap first: no name more than two characters longer or shorter
        // is within two edits, and a huge name must not cost seconds.
        .filter(|k| unknown.chars().count().abs_diff(k.chars().count()) <= 2)
        .map(|k| (edit_distance(unknown, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k.to_string())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn reject_unknown_params(f: &Fields, known: &[&str]) -> Result<()> {
    if let Some(field) = f.leftover().first() {
        let hint = match suggest(field, known) {
            Some(s) => format!(" (did you mean {s}?)"),
            None if known.is_empty() => " (this step takes no params)".to_string(),
            None => format!(" (known: {})", known.join(", ")),
        };
        return Err(Error::bad_request(format!(
            "invalid payload: unknown field {}.{}{hint}",
            f.section(),
            shortened(field)
        )));
    }
    Ok(())
}

fn lock_name(value: &str, field: &str) -> Result<LockName> {
    LockName::new(value).map_err(|e| Error::bad_request(format!("invalid payload: {field}: {e}")))
}

fn read_input(src: &Path, dir: &str, file: &str, param: &str) -> Result<Vec<u8>> {
    let path = src.join(dir).join(file);
    std::fs::read(&path).map_err(|source| Error::Input {
        what: format!("could not read {file} for params.{param}: {source}"),
        path,
        source,
    })
}

fn read_lock_name(src: &Path, dir: &str, param: &str) -> Result<LockName> {
    let bytes = read_input(src, dir, "name", param)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        Error::bad_request(format!(
            "invalid payload: {}/name (params.{param}) is not UTF-8 text",
            dir
        ))
    })?;
    lock_name(text.trim(), &format!("{dir}/name (params.{param})"))
}

/// Validated put `params`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutParams {
    /// The one action.
    pub op: Operation,
    /// `idempotent: true`: a put run again by the same build gets back what
    /// the first run did (see [`crate::resource::rerun`]) instead of doing it twice.
    pub idempotent: bool,
    /// `release: DIR` whose `DIR/claim` (written by `in`) names the claim
    /// commit: the release is fenced to that claim ([`crate::resource::holder::check_fence`]).
    pub fence: Option<String>,
    /// `priority` and `wait_timeout`: how the put waits in line.
    pub line: line::LineParams,
}

/// Validates put `params` into one [`Operation`], reading lock files under `src`.
pub fn parse_put(req: &RawRequest, src: &Path) -> Result<PutParams> {
    let mut f = Fields::new("params", req.params.clone());
    let (acquire, many) = parse_acquire(&mut f)?;
    let claim_list = parse_claim_list(&mut f)?;
    let mut dirs = Vec::new();
    for action in &PUT_ACTIONS[1..] {
        if let Some(v) = f.string(action)? {
            // A lock name (claim) is checked, with its own message, later.
            if *action != "claim" && v.len() > MAX_PARAM_PATH {
                return Err(Error::bad_request(format!(
                    "invalid payload: params.{action} is {} bytes long (at most {MAX_PARAM_PATH})",
                    v.len()
                )));
            }
            dirs.push((*action, v));
        }
    }
    let idempotent = f.bool("idempotent")?.unwrap_or(false);
    let line = line::parse_params(&mut f)?;
    let mut known = PUT_ACTIONS.to_vec();
    known.push("idempotent");
    known.extend(line::PARAMS);
    reject_unknown_params(&f, &known)?;
    let op = match (many, claim_list) {
        (Some(n), None) if dirs.is_empty() => Operation::AcquireMany(n),
        (None, Some(mut locks)) if dirs.is_empty() && acquire != Some(true) => {
            if locks.len() == 1 {
                Operation::Claim(locks.remove(0))
            } else {
                Operation::ClaimAll(locks)
            }
        }
        // Two actions, or none: parse_action names them.
        (many, list) => {
            if let Some(locks) = list {
                dirs.push(("claim", join_names(&locks)));
            }
            parse_action(acquire.or(many.map(|_| true)), dirs, src)?
        }
    };
    if idempotent
        && !matches!(
            op,
            Operation::Acquire
                | Operation::Claim(_)
                | Operation::Release(_)
                | Operation::AcquireMany(_)
                | Operation::ClaimAll(_)
                | Operation::ReleaseAll(_)
        )
    {
        return Err(Error::bad_request(format!(
            "invalid payload: params.idempotent applies to acquire, claim and release, not {}",
            op.param()
        )));
    }
    line.check_applies(&op)?;
    let fence = match (&op, release_dir(&req.params)) {
        (Operation::Release(_), Some(dir)) => read_fence(src, &dir)?,
        _ => None,
    };
    Ok(PutParams {
        op,
        idempotent,
        fence,
        line,
    })
}

/// `acquire`: `true`, or a count of locks; 1 is `true`. Returns the
/// boolean form and, for N ≥ 2, the count.
fn parse_acquire(f: &mut Fields) -> Result<(Option<bool>, Option<usize>)> {
    match f.take("acquire") {
        None => Ok((None, None)),
        Some(Value::Bool(b)) => Ok((Some(b), None)),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(0) | None => Err(Error::bad_request(format!(
                "invalid payload: params.acquire must be true or a number of locks (1 or more), not {n}"
            ))),
            Some(1) => Ok((Some(true), None)),
            Some(n) => Ok((None, Some(usize::try_from(n).unwrap_or(usize::MAX)))),
        },
        Some(other) => Err(Error::bad_request(format!(
            "invalid payload: params.acquire must be true or a number of locks, not {}",
            match other {
                Value::String(_) => "a string",
                Value::Array(_) => "a list",
                Value::Object(_) => "an object",
                _ => "null",
            }
        ))),
    }
}

/// `claim: [A, B]`: a list of distinct lock names (a string stays `claim: A`).
fn parse_claim_list(f: &mut Fields) -> Result<Option<Vec<LockName>>> {
    if !matches!(f.peek("claim"), Some(Value::Array(_))) {
        return Ok(None);
    }
    let Some(Value::Array(items)) = f.take("claim") else {
        return Ok(None);
    };
    let mut locks: Vec<LockName> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Value::String(name) = item else {
            return Err(Error::bad_request(format!(
                "invalid payload: params.claim[{i}] must be a lock name (a string)"
            )));
        };
        let lock = lock_name(name, &format!("params.claim[{i}]"))?;
        if locks.contains(&lock) {
            return Err(Error::bad_request(format!(
                "invalid payload: params.claim names lock {lock} twice"
            )));
        }
        locks.push(lock);
    }
    if locks.is_empty() {
        return Err(Error::bad_request(
            "invalid payload: params.claim is an empty list",
        ));
    }
    Ok(Some(locks))
}

/// `release: DIR`: the locks named in `DIR/name`, one a line (what the get
/// after `acquire: N` or `claim: [A, B]` writes); two or more are released
/// in one commit.
fn release_op(src: &Path, dir: &str) -> Result<Operation> {
    let bytes = read_input(src, dir, "name", "release")?;
    let text = String::from_utf8(bytes).map_err(|_| {
        Error::bad_request(format!(
            "invalid payload: {dir}/name (params.release) is not UTF-8 text"
        ))
    })?;
    let mut locks: Vec<LockName> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let lock = lock_name(line, &format!("{dir}/name (params.release)"))?;
        if !locks.contains(&lock) {
            locks.push(lock);
        }
    }
    Ok(match locks.len() {
        // Empty: the one-lock path says what is wrong with it.
        0 => Operation::Release(read_lock_name(src, dir, "release")?),
        1 => Operation::Release(locks.remove(0)),
        _ => Operation::ReleaseAll(locks),
    })
}

fn parse_action(
    acquire: Option<bool>,
    mut dirs: Vec<(&str, String)>,
    src: &Path,
) -> Result<Operation> {
    let mut given: Vec<&str> = dirs.iter().map(|(a, _)| *a).collect();
    if acquire == Some(true) {
        given.insert(0, "acquire");
    }
    match given.len() {
        0 => {
            return Err(Error::bad_request(
                "invalid payload (missing acquire, release, remove, claim, add, add_claimed, update, check, or check_unclaimed)",
            ))
        }
        1 => {}
        _ => {
            return Err(Error::bad_request(format!(
                "invalid payload: a put takes exactly one action, but params has {} (the Go resource ran them all in a fixed order; use one put per action)",
                given.join(" and ")
            )))
        }
    }
    let Some((action, dir)) = dirs.pop() else {
        return Ok(Operation::Acquire);
    };
    let read_name = || read_lock_name(src, &dir, action);
    let read_content = || read_input(src, &dir, "metadata", action);
    Ok(match action {
        "claim" => Operation::Claim(lock_name(&dir, "params.claim")?),
        "release" => release_op(src, &dir)?,
        "remove" => Operation::Remove(read_name()?),
        "add" | "add_claimed" => Operation::Add {
            lock: read_name()?,
            content: read_content()?,
            claimed: action == "add_claimed",
        },
        "update" => Operation::Update {
            lock: read_name()?,
            content: read_content()?,
        },
        "check" => Operation::WaitUntilUnclaimed(read_name()?),
        "check_unclaimed" => Operation::WaitUntilClaimed(read_name()?),
        other => unreachable!("put action {other} is listed but not handled"),
    })
}

/// The file `in` writes next to `name` and `metadata` for a claimed lock:
/// the claim commit's id, which fences a later `release` of that directory.
pub const FENCE_FILE: &str = "claim";

fn release_dir(params: &Map<String, Value>) -> Option<String> {
    params.get("release")?.as_str().map(String::from)
}

/// Reads `DIR/claim`; `None` when there is none (a hand-made directory).
fn read_fence(src: &Path, dir: &str) -> Result<Option<String>> {
    let path = src.join(dir).join(FENCE_FILE);
    let text = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Input {
                what: format!("could not read {FENCE_FILE} for params.release: {source}"),
                path,
                source,
            })
        }
    };
    let id = String::from_utf8_lossy(&text).trim().to_string();
    if id.len() != 40 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::bad_request(format!(
            "invalid payload: {dir}/{FENCE_FILE} (params.release) must hold a 40-digit commit id, as in writes it"
        )));
    }
    Ok(Some(id))
}

/// Validated get `params`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GetParams {
    /// `depth`: how much history to fetch at first.
    pub depth: Option<u32>,
}

/// Validates get `params`.
pub fn parse_get(req: &RawRequest) -> Result<GetParams> {
    let mut f = Fields::new("params", req.params.clone());
    let depth = f.uint("depth")?;
    reject_unknown_params(&f, &["depth"])?;
    let depth = match depth {
        None | Some(0) => None,
        Some(d) => Some(u32::try_from(d).unwrap_or(u32::MAX).min(i32::MAX as u32)),
    };
    Ok(GetParams { depth })
}

/// `check` takes no params; reject any so a misplaced param is noticed.
pub fn parse_check(req: &RawRequest) -> Result<()> {
    reject_unknown_params(&Fields::new("params", req.params.clone()), &[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(v: serde_json::Value) -> RawRequest {
        RawRequest::parse(v.to_string().as_bytes()).unwrap()
    }

    fn source(extra: serde_json::Value) -> Result<Source> {
        let mut s = json!({"uri": "/tmp/x", "branch": "main", "pool": "p"});
        s.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        Source::from_request(&req(json!({ "source": s })))
    }

    #[test]
    fn missing_required_fields_use_the_go_messages() {
        let err = Source::from_request(&req(json!({"source": {}})))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid payload (missing uri)\ninvalid payload (missing branch)\ninvalid payload (missing pool)"
        );
    }

    #[test]
    fn retry_delay_accepts_go_strings_and_nanoseconds() {
        assert_eq!(source(json!({})).unwrap().retry_delay, DEFAULT_RETRY_DELAY);
        assert_eq!(
            source(json!({"retry_delay": "1m30s"})).unwrap().retry_delay,
            Duration::from_secs(90)
        );
        assert_eq!(
            source(json!({"retry_delay": 5_000_000_000u64}))
                .unwrap()
                .retry_delay,
            Duration::from_secs(5)
        );
        assert_eq!(
            source(json!({"retry_delay": "0s"})).unwrap().retry_delay,
            DEFAULT_RETRY_DELAY
        );
        let err = source(json!({"retry_delay": "soon"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("source.retry_delay"), "{err}");
    }

    #[test]
    fn unknown_source_fields_are_warnings_not_errors() {
        let s = source(json!({"colour": "blue"})).unwrap();
        assert_eq!(s.warnings, ["unknown field source.colour is ignored"]);
    }

    #[test]
    fn git_config_is_interpreted_never_executed() {
        let s = source(json!({"git_config": [
            {"name": "user.name", "value": "Pool Bot"},
            {"name": "http.sslVerify", "value": false},
            {"name": "core.sshCommand", "value": "$(rm -rf /)"}
        ]}))
        .unwrap();
        assert_eq!(s.git.user_name.as_deref(), Some("Pool Bot"));
        assert!(s.skip_ssl_verification);
        assert!(s.warnings[0].contains("core.sshCommand"));
    }

    #[test]
    fn secrets_are_never_debug_printed() {
        let s = source(json!({"password": "hunter2", "private_key": "KEYDATA"})).unwrap();
        let dbg = format!("{s:?}");
        assert!(
            !dbg.contains("hunter2") && !dbg.contains("KEYDATA"),
            "{dbg}"
        );
        assert_eq!(s.secrets().len(), 2);
    }

    #[test]
    fn misspelled_put_params_are_named_with_a_suggestion() {
        let err = parse_put(
            &req(json!({"source": {}, "params": {"aquire": true}})),
            Path::new("/"),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "invalid payload: unknown field params.aquire (did you mean acquire?)"
        );
    }

    #[test]
    fn two_actions_in_one_put_are_refused_naming_both() {
        let err = parse_put(
            &req(json!({"source": {}, "params": {"acquire": true, "claim": "x"}})),
            Path::new("/"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("acquire and claim"), "{err}");
    }

    #[test]
    fn a_put_without_an_action_uses_the_go_message() {
        for params in [json!({}), json!({"acquire": false})] {
            let err = parse_put(
                &req(json!({"source": {}, "params": params})),
                Path::new("/"),
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.starts_with("invalid payload (missing acquire, release"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_codecommit_uri_without_a_region_asks_the_region_chain_last() {
        let with = |src: serde_json::Value, lookup: RegionLookup<'_>| {
            Source::from_request_with(&req(json!({ "source": src })), lookup)
        };
        let src = |uri: &str| json!({"uri": uri, "branch": "main", "pool": "p"});
        let mut asked = Vec::new();
        let s = with(src("codecommit://ops@locks"), &mut |p| {
            asked.push(p.map(String::from));
            Ok(Some("eu-west-1".into()))
        })
        .unwrap();
        assert_eq!(asked, [Some("ops".to_string())]);
        let cc = s.codecommit().cloned().unwrap();
        assert_eq!(
            (cc.region.as_str(), cc.name.as_str()),
            ("eu-west-1", "locks")
        );
        assert!(cc.iam_auth);
        assert_eq!(
            s.uri.to_string(),
            "https://git-codecommit.eu-west-1.amazonaws.com/v1/repos/locks"
        );

        // A region from the URI or the source, or no CodeCommit URI at all:
        // nothing is asked.
        let mut never =
            |_: Option<&str>| -> Result<Option<String>> { panic!("the region chain was asked") };
        for s in [
            src("codecommit::eu-west-2://locks"),
            src("https://git-codecommit.eu-west-2.amazonaws.com/v1/repos/locks"),
            json!({"uri": "codecommit://locks", "branch": "main", "pool": "p", "aws_region": "eu-west-2"}),
            src("/srv/locks.git"),
            src("https://github.com/org/locks.git"),
        ] {
            with(s, &mut never).unwrap();
        }
        // Everything else is validated first: no lookup for a bad request.
        let err = with(
            json!({"uri": "codecommit://locks", "branch": "a..b", "pool": "p"}),
            &mut never,
        )
        .unwrap_err();
        assert!(err.to_string().contains("source.branch"), "{err}");

        // Nothing says, or something that is no region: the places tried.
        for found in [None, Some("evil.example/x".to_string())] {
            let err = with(src("codecommit://locks"), &mut |_| Ok(found.clone()))
                .unwrap_err()
                .to_string();
            for needle in [
                "does not say which AWS region",
                "source.aws_region",
                "AWS_REGION",
                "shared config file",
                "EC2 instance metadata",
            ] {
                assert!(err.contains(needle), "{needle}: {err}");
            }
        }
    }

    #[test]
    fn get_depth_must_be_a_number() {
        assert_eq!(
            parse_get(&req(json!({"source": {}, "params": {"depth": 3}})))
                .unwrap()
                .depth,
            Some(3)
        );
        assert!(parse_get(&req(json!({"source": {}, "params": {"depth": "3"}}))).is_err());
        assert!(parse_get(&req(json!({"source": {}, "params": {"dept": 3}}))).is_err());
    }
}
