//! The pipeline's `source`, validated: the repository, branch and pool,
//! credentials, `git_config`, the tunnel, `retry_delay` and `expire_after`,
//! and which backend reaches the pool.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::config::fields::MAX_PARAM_PATH;
use crate::config::secret::{
    Secret, PASSWORD, PRIVATE_KEY, PRIVATE_KEY_PASSPHRASE, PROXY_PASSWORD,
};
use crate::config::uri::RepoUri;
use crate::error::{quoted, shortened, Error, Result};
use crate::model::duration::parse_go_duration;
use crate::model::names::{check_branch_name, PoolPath};
use crate::protocol::{Fields, RawRequest};

/// The retry delay when `retry_delay` is absent or zero, as in the Go resource.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(10);

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
    pub line: crate::config::line::LineSource,
    /// Warnings for the build log (unknown fields, ignored settings).
    pub warnings: Vec<String>,
}

/// Where the region of a CodeCommit URI that names none comes from. The
/// executables pass the AWS SDK's default region chain (the store's, which
/// talks to AWS: `Source::from_request` in
/// [`crate::store::codecommit::creds`]); tests pass a fake.
pub trait RegionLookup {
    /// The region for the URI's `profile` (`PROFILE@NAME`); `None` if
    /// nothing says.
    fn region(&mut self, profile: Option<&str>) -> Result<Option<String>>;

    /// Where [`RegionLookup::region`] looked, in order, for the error when
    /// none of them said.
    fn tried(&self, profile: Option<&str>) -> String;
}

impl Source {
    /// Validates the `source` of `req`. The region of a `codecommit://NAME`
    /// URI that the request does not give is asked of `lookup` once
    /// everything else is valid.
    pub fn from_request_with(req: &RawRequest, lookup: &mut dyn RegionLookup) -> Result<Source> {
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
        let codecommit_repo = crate::config::codecommit_uri::parse(&uri)
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
        if let Err(why) = check_branch_name(&branch) {
            return Err(Error::bad_request(format!(
                "invalid payload: source.branch {} is not a valid branch name (it {why})",
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
        let line = crate::config::line::parse_source(&mut f)?;
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
                let region = lookup
                    .region(cc.profile.as_deref())?
                    .filter(|r| crate::config::codecommit_uri::is_region(r))
                    .ok_or_else(|| {
                        Error::bad_request(format!(
                            "invalid payload: source.uri {} does not say which AWS region, and none was found; tried {}. Use codecommit::REGION://{}, or set source.aws_region",
                            quoted(&written),
                            lookup.tried(cc.profile.as_deref()),
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
        if git.http_proxy.is_some() && matches!(uri.scheme, crate::config::uri::Scheme::Http) {
            // Measured with libgit2 1.9: it sends plain http:// requests
            // straight to the server whatever the proxy options say.
            warnings.push(
                "source.git_config http.proxy is only used for https:// remotes; libgit2 connects to an http:// remote directly"
                    .into(),
            );
        }
        if https_tunnel.is_some() && !matches!(uri.scheme, crate::config::uri::Scheme::Ssh) {
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
    AwaitingRegion(String, crate::config::codecommit_uri::CodeCommitRepo),
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
    cc: &crate::config::codecommit_uri::CodeCommitRepo,
    region: &str,
) -> String {
    if written.starts_with("https://") {
        return written.to_string();
    }
    let host = cc
        .host
        .clone()
        .unwrap_or_else(|| crate::config::codecommit_uri::git_host(region));
    format!("https://{host}/v1/repos/{}", cc.name)
}

/// The error of a string `source.FIELD` that is not a Go duration. A
/// quoted bare number (`"10"`) says how to write what was meant: a bare
/// number is nanoseconds only as a JSON number.
fn duration_error(field: &str, text: &str, error: &str) -> Error {
    let n = text.trim();
    let bare = !n.is_empty() && n.len() <= 12 && n.bytes().all(|b| b.is_ascii_digit());
    let note = if bare {
        format!(
            "; a bare number means nanoseconds only as a JSON number, not a string: write {field}: {n}s for {n} seconds, or {field}: {n}000000000 unquoted"
        )
    } else {
        String::new()
    };
    Error::bad_request(format!("invalid payload: source.{field}: {error}{note}"))
}

fn parse_retry_delay(value: Option<Value>) -> Result<Duration> {
    let delay = match value {
        None => Duration::ZERO,
        Some(Value::String(s)) if s.is_empty() => Duration::ZERO,
        Some(Value::String(s)) => parse_go_duration(&s)
            .map_err(|e| duration_error("retry_delay", &s, &e))?,
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
        Some(Value::String(s)) => {
            parse_go_duration(&s).map_err(|e| duration_error("expire_after", &s, &e))?
        }
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

    /// A region chain that answers `found` and notes which profiles it was
    /// asked about.
    struct FakeChain {
        found: Option<String>,
        asked: Vec<Option<String>>,
    }

    impl RegionLookup for FakeChain {
        fn region(&mut self, profile: Option<&str>) -> Result<Option<String>> {
            self.asked.push(profile.map(String::from));
            Ok(self.found.clone())
        }

        fn tried(&self, _: Option<&str>) -> String {
            "the fake chain".into()
        }
    }

    #[test]
    fn a_codecommit_uri_without_a_region_asks_the_region_chain_last() {
        let with = |src: serde_json::Value, lookup: &mut FakeChain| {
            Source::from_request_with(&req(json!({ "source": src })), lookup)
        };
        let chain = |found: Option<&str>| FakeChain {
            found: found.map(String::from),
            asked: Vec::new(),
        };
        let src = |uri: &str| json!({"uri": uri, "branch": "main", "pool": "p"});
        let mut eu = chain(Some("eu-west-1"));
        let s = with(src("codecommit://ops@locks"), &mut eu).unwrap();
        assert_eq!(eu.asked, [Some("ops".to_string())]);
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
        let mut never = chain(Some("eu-west-1"));
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
        assert!(never.asked.is_empty(), "the region chain was asked");

        // Nothing says, or something that is no region: the places tried.
        for found in [None, Some("evil.example/x")] {
            let err = with(src("codecommit://locks"), &mut chain(found))
                .unwrap_err()
                .to_string();
            for needle in [
                "does not say which AWS region",
                "tried the fake chain",
                "source.aws_region",
            ] {
                assert!(err.contains(needle), "{needle}: {err}");
            }
        }
    }
}
