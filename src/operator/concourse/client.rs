//! The Concourse API client: credentials, the token exchange, and one
//! bounded, retried request at a time.
//!
//! Credentials come from `--fly-target NAME` (the token `fly login` saved),
//! `CONCOURSE_TOKEN` (a bearer token), or `CONCOURSE_USERNAME` and
//! `CONCOURSE_PASSWORD` (a local user), which are exchanged once per
//! Concourse and run for a token the way `fly login -u -p` does on 6.1 and
//! later: the OAuth password grant at `/sky/issuer/token` with client `fly`.
//! A token is checked once at `/api/v1/user` before it is relied on: a
//! public pipeline's builds answer even a wrong token, which would hide it.
//!
//! Every question is asked within [`Bounds`]: a connect and a total
//! timeout per request, a number of attempts, and a deadline for all the
//! questions of one command (or one `pool serve` round), so a Concourse
//! that accepts connections and never answers costs seconds, not minutes.
//! Network faults and 5xx answers are retried with the back-off of git
//! faults ([`crate::process::retry::Backoff`]) while the deadline allows,
//! certificate and credential failures never. Errors name the URL (which
//! holds no secret: credentials travel in headers) and never the
//! credentials. A client is shared by the threads that ask in parallel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Deserialize;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig, TlsProvider};

use super::build::{Build, BuildRef, Lookup};
use super::flyrc;
use crate::error::{Error, Result};
use crate::process::log::Log;
use crate::process::retry::Backoff;
use crate::process::signal::Interrupt;

/// How long a TCP (and TLS) connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may take, answer included, at most.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of an answer read: a build is a few hundred bytes.
const BODY_LIMIT: u64 = 1 << 20;
/// fly's OAuth client (`atc/atccmd/command.go`).
const FLY_CLIENT: (&str, &str) = ("fly", "Zmx5");
/// The scopes `fly login` asks for (`fly/commands/login.go`).
const FLY_SCOPES: &str = "openid profile email federated:id groups";

/// The credentials to offer, and where they came from (for messages).
#[derive(Clone)]
pub enum Credentials {
    /// None: public pipelines only.
    Anonymous,
    /// `Authorization: SCHEME VALUE`.
    Token {
        /// `Bearer`, or the type a fly target saved.
        scheme: String,
        /// The token.
        value: String,
        /// `CONCOURSE_TOKEN`, `fly target NAME`.
        from: String,
    },
    /// A local user, exchanged for a token.
    Password {
        /// `CONCOURSE_USERNAME`.
        username: String,
        /// `CONCOURSE_PASSWORD`.
        password: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.source())
    }
}

impl Credentials {
    /// Where they came from, for messages: never the secret.
    pub fn source(&self) -> &str {
        match self {
            Credentials::Anonymous => "no credentials",
            Credentials::Token { from, .. } => from,
            Credentials::Password { .. } => "CONCOURSE_USERNAME and CONCOURSE_PASSWORD",
        }
    }
}

/// How to reach Concourse: which one to ask, with what, trusting what.
#[derive(Clone, Debug)]
pub struct Access {
    /// `--concourse-url`, else a fly target's `api`; `None`: the one each
    /// claim recorded.
    pub url: Option<String>,
    /// The credentials.
    pub credentials: Credentials,
    /// A fly target's `ca_cert` (PEM), trusted besides the system's CAs.
    pub ca_cert: Option<String>,
    /// A fly target's `insecure`: no certificate verification.
    pub insecure: bool,
}

impl Access {
    /// The access the command line and environment configure, if any:
    /// `--fly-target NAME`, else `CONCOURSE_TOKEN`, else
    /// `CONCOURSE_USERNAME` with `CONCOURSE_PASSWORD`, else anonymous
    /// access to `--concourse-url`; `None` when nothing is configured.
    pub fn configure(
        url: Option<&str>,
        fly_target: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Access>> {
        let url = url.map(|u| u.trim().trim_end_matches('/').to_string());
        if let Some(u) = &url {
            if !is_http(u) {
                return Err(Error::Usage(format!(
                    "--concourse-url {u:?} is not an http(s) URL"
                )));
            }
        }
        let set = |k: &str| env(k).filter(|v| !v.is_empty());
        if let Some(name) = fly_target {
            let target = flyrc::load(name, env)?;
            let token = target.token.unwrap_or_default();
            let scheme = if token.kind.is_empty() || token.kind.eq_ignore_ascii_case("bearer") {
                "Bearer".to_string()
            } else {
                token.kind
            };
            return Ok(Some(Access {
                url: url.or_else(|| Some(target.api.trim().trim_end_matches('/').to_string())),
                credentials: Credentials::Token {
                    scheme,
                    value: token.value,
                    from: format!("fly target {name}"),
                },
                ca_cert: target.ca_cert.filter(|c| !c.trim().is_empty()),
                insecure: target.insecure,
            }));
        }
        let credentials = match (
            set("CONCOURSE_TOKEN"),
            set("CONCOURSE_USERNAME"),
            set("CONCOURSE_PASSWORD"),
        ) {
            (Some(value), _, _) => Credentials::Token {
                scheme: "Bearer".into(),
                value,
                from: "CONCOURSE_TOKEN".into(),
            },
            (None, Some(username), Some(password)) => Credentials::Password { username, password },
            (None, Some(_), None) | (None, None, Some(_)) => {
                return Err(Error::Usage(
                    "CONCOURSE_USERNAME and CONCOURSE_PASSWORD go together: set both, or CONCOURSE_TOKEN"
                        .into(),
                ))
            }
            (None, None, None) if url.is_some() => Credentials::Anonymous,
            (None, None, None) => return Ok(None),
        };
        Ok(Some(Access {
            url,
            credentials,
            ca_cert: None,
            insecure: false,
        }))
    }

    /// The values that must never be printed.
    pub fn secrets(&self) -> Vec<String> {
        match &self.credentials {
            Credentials::Anonymous => Vec::new(),
            Credentials::Token { value, .. } => vec![value.clone()],
            Credentials::Password { password, .. } => vec![password.clone()],
        }
    }
}

fn is_http(url: &str) -> bool {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    lower.starts_with("https://") || lower.starts_with("http://")
}

/// `url` without a `user:password@` part, for messages.
pub fn shown(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host_end = rest.find(['/', '?']).unwrap_or(rest.len());
            match rest[..host_end].rfind('@') {
                Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

/// An HTTP status for people: `401 Unauthorized`.
fn status_line(status: u16) -> String {
    let reason = match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    };
    format!("{status} {reason}").trim_end().to_string()
}

/// How long the questions of one command may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Attempts per request (network faults and 5xx answers are retried).
    pub attempts: u32,
    /// How long one request may take, answer included.
    pub request: Duration,
    /// How long all the questions together may take.
    pub total: Duration,
}

impl Bounds {
    /// `pool status` and `pool history`: the locks are what matters; a
    /// build status not got in a few seconds is shown as unknown.
    pub const SHOW: Bounds = Bounds {
        attempts: 2,
        request: Duration::from_secs(4),
        total: Duration::from_secs(4),
    };
    /// One round of `pool serve`'s lookups, which run beside the refresh
    /// of the locks and never delay it; the next round asks again.
    pub const SERVE: Bounds = Bounds {
        attempts: 2,
        request: Duration::from_secs(10),
        total: Duration::from_secs(10),
    };
    /// `pool reap --dead`: every answer is needed, so more patience, but
    /// it gives up within a minute (git's time aside).
    pub const REAP: Bounds = Bounds {
        attempts: 6,
        request: Duration::from_secs(15),
        total: Duration::from_secs(45),
    };

    /// The deadline of questions asked from now on.
    pub fn start(self) -> Deadline {
        Deadline {
            at: Instant::now() + self.total,
            bounds: self,
        }
    }
}

/// When the questions of one command must be answered by.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    at: Instant,
    bounds: Bounds,
}

impl Deadline {
    /// The bounds it was started from.
    pub fn bounds(&self) -> Bounds {
        self.bounds
    }

    /// The time left.
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// Whether the time is up.
    pub fn passed(&self) -> bool {
        self.remaining().is_zero()
    }

    /// `Concourse did not answer within 4s`: the reason a build status
    /// not got in time is unknown.
    pub fn no_answer(&self) -> String {
        format!(
            "Concourse did not answer within {}s",
            self.bounds.total.as_secs_f64().ceil() as u64
        )
    }
}

/// Why a question got no answer.
#[derive(Debug)]
pub struct Failure {
    /// A few words for an `unknown` build status: `Concourse did not
    /// answer within 4s`, or the error.
    pub reason: String,
    /// The error, naming the URL.
    pub error: Box<Error>,
}

impl Failure {
    /// No answer from `url` by `deadline`; `last` says what the last
    /// attempt met.
    pub fn no_answer(what: &str, url: &str, deadline: &Deadline, last: &str) -> Failure {
        let reason = deadline.no_answer();
        Failure {
            error: Box::new(Error::ConcourseApi {
                what: what.to_string(),
                url: shown(url),
                detail: format!("{reason} (last: {last})"),
            }),
            reason,
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure {
            reason: error.chain(),
            error: Box::new(error),
        }
    }
}

/// An answer, read whole.
struct Reply {
    status: u16,
    body: String,
    location: Option<String>,
}

/// Why one attempt failed.
enum Attempt {
    /// Worth another try: a network fault.
    Fault(String),
    /// Not worth it.
    Fatal(Error),
}

/// `GET /api/v1/info` (`atc.Info`).
#[derive(Deserialize)]
struct Info {
    version: String,
}

/// The token endpoint's answer (RFC 6749 §5.1, with dex's `id_token`).
#[derive(Deserialize)]
struct TokenReply {
    #[serde(default)]
    access_token: String,
    #[serde(default)]
    token_type: String,
    #[serde(default)]
    id_token: Option<String>,
}

/// A Concourse API client for one run (or one `pool serve`): it keeps one
/// session (an `Authorization` value) per Concourse, shared by the threads
/// asking through it.
pub struct Client {
    access: Access,
    agent: ureq::Agent,
    backoff: Backoff,
    log: Log,
    interrupt: Interrupt,
    /// Per Concourse URL: the `Authorization` header to send (`None`:
    /// anonymous), once established. Held while one is established, so a
    /// token is checked (or a local user exchanged) once, not per thread.
    sessions: Mutex<HashMap<String, Option<String>>>,
    /// Why no CA certificate could be loaded, if none was.
    no_roots: Option<String>,
    /// The one Concourse credentials go to when no URL was given: the
    /// first one a claim named.
    bound: Mutex<Option<String>>,
}

impl Client {
    /// A client for `access`; tokens it obtains are added to `log`'s secrets.
    pub fn new(access: Access, log: &Log, interrupt: &Interrupt) -> Result<Client> {
        let mut roots: Vec<Certificate<'static>> = Vec::new();
        let native = rustls_native_certs::load_native_certs();
        roots.extend(
            native
                .certs
                .iter()
                .map(|der| Certificate::from_der(der.as_ref()).to_owned()),
        );
        if let Some(pem) = &access.ca_cert {
            for item in ureq::tls::parse_pem(pem.as_bytes()) {
                match item {
                    Ok(PemItem::Certificate(c)) => roots.push(c),
                    Ok(_) => {}
                    Err(e) => {
                        return Err(Error::bad_request(format!(
                            "the fly target's ca_cert is not PEM certificates: {e}"
                        )))
                    }
                }
            }
        }
        let no_roots = roots.is_empty().then(|| {
            let why: Vec<String> = native.errors.iter().map(|e| e.to_string()).collect();
            format!(
                "no CA certificates were found (set SSL_CERT_FILE){}",
                if why.is_empty() {
                    String::new()
                } else {
                    format!(": {}", why.join("; "))
                }
            )
        });
        let crypto = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(crypto)
            .root_certs(RootCerts::new_with_certs(&roots))
            .disable_verification(access.insecure)
            .build();
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(REQUEST_TIMEOUT))
            .user_agent(format!("pool-resource/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        log.add_secrets(access.secrets());
        Ok(Client {
            access,
            agent,
            backoff: Backoff::from_env(),
            log: log.clone(),
            interrupt: interrupt.clone(),
            sessions: Mutex::default(),
            no_roots,
            bound: Mutex::default(),
        })
    }

    /// The access this client uses.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// What Concourse says of the build `r`, by `deadline`.
    pub fn build(&self, r: &BuildRef, deadline: &Deadline) -> std::result::Result<Lookup, Failure> {
        let url = r.api_url();
        let what = format!("asking Concourse about {}", r.describe());
        let mut renewed = false;
        loop {
            let auth = self.session(&r.concourse, deadline)?;
            let reply = self.call(&what, &url, auth.as_deref(), None, deadline)?;
            match reply.status {
                200 => {
                    return serde_json::from_str::<Build>(&reply.body)
                        .map(Lookup::Found)
                        .map_err(|e| {
                            Failure::from(Error::ConcourseApi {
                                what,
                                url: shown(&url),
                                detail: format!("the answer is not a Concourse build: {e}"),
                            })
                        })
                }
                404 => return Ok(Lookup::Missing),
                401 | 403 => {
                    // A local user's token may have expired (fly's last a
                    // day): one fresh exchange, then it is the credentials.
                    let exchanged = matches!(self.access.credentials, Credentials::Password { .. });
                    if exchanged && !renewed {
                        renewed = true;
                        self.sessions().remove(&r.concourse);
                        continue;
                    }
                    return Err(self.rejected(&url, reply.status).into());
                }
                status => return Err(unexpected(what, &url, &reply, status).into()),
            }
        }
    }

    /// Binds the credentials to `base` when no URL was given and no
    /// Concourse was asked yet: the first claim's, before the questions
    /// run in parallel, so which one gets them never depends on timing.
    pub fn bind_first(&self, base: &str) {
        let anonymous = matches!(self.access.credentials, Credentials::Anonymous);
        if !anonymous && self.access.url.is_none() {
            let mut bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
            if bound.is_none() {
                *bound = Some(base.to_string());
            }
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<String>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `Authorization` header for `base`, establishing the session
    /// (a checked token, or an exchanged one) on first use.
    fn session(
        &self,
        base: &str,
        deadline: &Deadline,
    ) -> std::result::Result<Option<String>, Failure> {
        let mut sessions = self.sessions();
        if let Some(auth) = sessions.get(base) {
            return Ok(auth.clone());
        }
        // Credentials go to one Concourse: the claims' URLs come from the
        // lock repository, and a commit naming another must not get them.
        let anonymous = matches!(self.access.credentials, Credentials::Anonymous);
        if !anonymous && self.access.url.is_none() {
            let mut bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
            match &*bound {
                Some(first) if first != base => {
                    return Err(Error::bad_request(format!(
                        "the claims name more than one Concourse ({} and {}): give --concourse-url to say which one the credentials from {} belong to",
                        shown(first),
                        shown(base),
                        self.access.credentials.source()
                    ))
                    .into())
                }
                Some(_) => {}
                None => *bound = Some(base.to_string()),
            }
        }
        let auth = match self.access.credentials.clone() {
            Credentials::Anonymous => None,
            Credentials::Token { scheme, value, .. } => {
                let auth = format!("{scheme} {value}");
                self.check_token(base, &auth, deadline)?;
                Some(auth)
            }
            Credentials::Password { username, password } => {
                Some(self.exchange(base, &username, &password, deadline)?)
            }
        };
        sessions.insert(base.to_string(), auth.clone());
        Ok(auth)
    }

    /// `GET /api/v1/user`: 401 unless the token is valid.
    fn check_token(
        &self,
        base: &str,
        auth: &str,
        deadline: &Deadline,
    ) -> std::result::Result<(), Failure> {
        let url = format!("{base}/api/v1/user");
        let what = "checking the Concourse credentials";
        let reply = self.call(what, &url, Some(auth), None, deadline)?;
        match reply.status {
            200 => Ok(()),
            401 | 403 => Err(self.rejected(&url, reply.status).into()),
            status => Err(unexpected(what.into(), &url, &reply, status).into()),
        }
    }

    /// `fly login -u -p`: the password grant at `/sky/issuer/token`. On
    /// Concourse 6.1 to 6.4 fly used the `id_token` as the bearer token,
    /// from 6.5 on the `access_token` (concourse#5851); `/api/v1/info`
    /// says which Concourse this is.
    fn exchange(
        &self,
        base: &str,
        username: &str,
        password: &str,
        deadline: &Deadline,
    ) -> std::result::Result<String, Failure> {
        let info_url = format!("{base}/api/v1/info");
        let what = "asking Concourse its version";
        let reply = self.call(what, &info_url, None, None, deadline)?;
        if reply.status != 200 {
            return Err(unexpected(what.into(), &info_url, &reply, reply.status).into());
        }
        let info: Info = serde_json::from_str(&reply.body).map_err(|e| Error::ConcourseApi {
            what: what.into(),
            url: shown(&info_url),
            detail: format!("the answer is not Concourse's info: {e}"),
        })?;
        let url = format!("{base}/sky/issuer/token");
        let what = "exchanging the local user for a token";
        let form = [
            ("grant_type", "password"),
            ("username", username),
            ("password", password),
            ("scope", FLY_SCOPES),
        ];
        let reply = self.call(what, &url, None, Some(&form), deadline)?;
        match reply.status {
            200 => {}
            400 | 401 | 403 => {
                // RFC 6749 §5.2: `{"error": "...", ...}`; the code is safe to show.
                let code = serde_json::from_str::<serde_json::Value>(&reply.body)
                    .ok()
                    .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
                    .map(|c| format!(", {c}"))
                    .unwrap_or_default();
                return Err(Error::Auth {
                    uri: shown(&url),
                    detail: format!(
                        "Concourse rejected the local user from {} ({}{code})",
                        self.access.credentials.source(),
                        status_line(reply.status)
                    ),
                }
                .into());
            }
            status => return Err(unexpected(what.into(), &url, &reply, status).into()),
        }
        let token: TokenReply =
            serde_json::from_str(&reply.body).map_err(|e| Error::ConcourseApi {
                what: what.into(),
                url: shown(&url),
                detail: format!("the answer is not an OAuth token: {e}"),
            })?;
        let value = if uses_id_token(&info.version) {
            token.id_token.unwrap_or_default()
        } else {
            token.access_token
        };
        if value.is_empty() {
            return Err(Error::ConcourseApi {
                what: what.into(),
                url: shown(&url),
                detail: format!("the answer has no token for Concourse {}", info.version),
            }
            .into());
        }
        self.log.add_secrets([value.clone()]);
        let scheme =
            if token.token_type.is_empty() || token.token_type.eq_ignore_ascii_case("bearer") {
                "Bearer".to_string()
            } else {
                token.token_type
            };
        Ok(format!("{scheme} {value}"))
    }

    fn rejected(&self, url: &str, status: u16) -> Error {
        let detail = match &self.access.credentials {
            Credentials::Anonymous => format!(
                "Concourse wants credentials ({}): set CONCOURSE_TOKEN, CONCOURSE_USERNAME and CONCOURSE_PASSWORD, or --fly-target",
                status_line(status)
            ),
            c if status == 403 => format!(
                "Concourse rejected the credentials from {} ({}: not a member of the build's team?)",
                c.source(),
                status_line(status)
            ),
            c => format!(
                "Concourse rejected the credentials from {} ({})",
                c.source(),
                status_line(status)
            ),
        };
        Error::Auth {
            uri: shown(url),
            detail,
        }
    }

    /// One request, retried on network faults and 5xx answers within
    /// `deadline`'s attempts and time.
    fn call(
        &self,
        what: &str,
        url: &str,
        auth: Option<&str>,
        form: Option<&[(&str, &str)]>,
        deadline: &Deadline,
    ) -> std::result::Result<Reply, Failure> {
        let mut failures = 0;
        let mut fault = "not asked: the time was up".to_string();
        loop {
            self.interrupt.check(what)?;
            if deadline.passed() {
                return Err(Failure::no_answer(what, url, deadline, &fault));
            }
            let timeout = deadline.bounds().request.min(deadline.remaining());
            fault = match self.once(url, auth, form, timeout) {
                Ok(reply) if reply.status >= 500 => {
                    format!("Concourse answered {}", status_line(reply.status))
                }
                Ok(reply) => return Ok(reply),
                Err(Attempt::Fault(why)) => why,
                Err(Attempt::Fatal(e)) => return Err(e.into()),
            };
            failures += 1;
            if failures >= deadline.bounds().attempts.max(1) {
                return Err(Error::GaveUp {
                    attempts: failures,
                    last: format!("{what} ({}): {fault}", shown(url)),
                    unconfirmed: Vec::new(),
                }
                .into());
            }
            let delay = self.backoff.delay(failures);
            if delay >= deadline.remaining() {
                return Err(Failure::no_answer(what, url, deadline, &fault));
            }
            self.log.warn(format_args!(
                "{what} ({}): {fault}; trying again in {}",
                shown(url),
                crate::model::duration::human(delay)
            ));
            self.interrupt.sleep(delay, what)?;
        }
    }

    /// One attempt, taking at most `timeout` (connecting at most
    /// [`CONNECT_TIMEOUT`] of it).
    fn once(
        &self,
        url: &str,
        auth: Option<&str>,
        form: Option<&[(&str, &str)]>,
        timeout: Duration,
    ) -> std::result::Result<Reply, Attempt> {
        let connect = CONNECT_TIMEOUT.min(timeout);
        let sent = match form {
            None => {
                let mut req = self
                    .agent
                    .get(url)
                    .config()
                    .timeout_global(Some(timeout))
                    .timeout_connect(Some(connect))
                    .build()
                    .header("Accept", "application/json");
                if let Some(a) = auth {
                    req = req.header("Authorization", a);
                }
                req.call()
            }
            Some(form) => {
                let basic = base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", FLY_CLIENT.0, FLY_CLIENT.1));
                self.agent
                    .post(url)
                    .config()
                    .timeout_global(Some(timeout))
                    .timeout_connect(Some(connect))
                    .build()
                    .header("Accept", "application/json")
                    .header("Authorization", format!("Basic {basic}"))
                    .send_form(form.iter().copied())
            }
        };
        let mut response = sent.map_err(|e| self.classify(url, e))?;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let body = response
            .body_mut()
            .with_config()
            .limit(BODY_LIMIT)
            .read_to_string()
            .map_err(|e| self.classify(url, e))?;
        Ok(Reply {
            status,
            body,
            location,
        })
    }

    /// Whether a failed attempt is a network fault (retried) or not.
    fn classify(&self, url: &str, e: ureq::Error) -> Attempt {
        let identity = |detail: String| {
            let detail = match &self.no_roots {
                Some(why) => format!("{detail} ({why})"),
                None => detail,
            };
            Attempt::Fatal(Error::Identity {
                uri: shown(url),
                detail,
            })
        };
        match e {
            ureq::Error::Tls(why) => identity(why.to_string()),
            ureq::Error::Rustls(e) => identity(e.to_string()),
            ureq::Error::Io(io) => {
                let tls = io
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    .map(|e| e.to_string());
                match tls {
                    Some(why) => identity(why),
                    None => Attempt::Fault(io.to_string()),
                }
            }
            ureq::Error::Timeout(_)
            | ureq::Error::HostNotFound
            | ureq::Error::ConnectionFailed
            | ureq::Error::Protocol(_) => Attempt::Fault(e.to_string()),
            other => Attempt::Fatal(Error::ConcourseApi {
                what: "calling the Concourse API".into(),
                url: shown(url),
                detail: other.to_string(),
            }),
        }
    }
}

/// An answer no route should give.
fn unexpected(what: String, url: &str, reply: &Reply, status: u16) -> Error {
    let detail = match (status, &reply.location) {
        (300..=399, Some(to)) => format!(
            "Concourse answered {} to {}: give the URL it redirects to with --concourse-url",
            status_line(status),
            shown(to)
        ),
        _ => format!("Concourse answered {}", status_line(status)),
    };
    Error::ConcourseApi {
        what,
        url: shown(url),
        detail,
    }
}

/// Whether fly used the `id_token` as the bearer token on this version:
/// 6.1.0 to 6.4.x (6.5.0 moved to the `access_token`).
fn uses_id_token(version: &str) -> bool {
    let mut parts = version
        .split(['.', '-', '+'])
        .map(|p| p.parse::<u32>().ok());
    matches!(
        (parts.next().flatten(), parts.next().flatten()),
        (Some(6), Some(1..=4))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn a_token_wins_over_a_local_user_and_nothing_configured_is_none() {
        let a = Access::configure(
            None,
            None,
            &env(&[
                ("CONCOURSE_TOKEN", "t0k3n"),
                ("CONCOURSE_USERNAME", "u"),
                ("CONCOURSE_PASSWORD", "p"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.credentials.source(), "CONCOURSE_TOKEN");
        assert_eq!(a.secrets(), ["t0k3n"]);
        assert!(!format!("{a:?}").contains("t0k3n"));
        assert!(Access::configure(None, None, &env(&[])).unwrap().is_none());
        let anon = Access::configure(Some("https://ci/"), None, &env(&[]))
            .unwrap()
            .unwrap();
        assert_eq!(anon.url.as_deref(), Some("https://ci"));
        assert!(matches!(anon.credentials, Credentials::Anonymous));
    }

    #[test]
    fn half_a_local_user_or_a_non_http_url_is_a_usage_error() {
        let e = Access::configure(None, None, &env(&[("CONCOURSE_USERNAME", "u")])).unwrap_err();
        assert!(matches!(e, Error::Usage(_)), "{e}");
        let e = Access::configure(Some("ftp://ci"), None, &env(&[])).unwrap_err();
        assert!(matches!(e, Error::Usage(_)), "{e}");
    }

    #[test]
    fn fly_used_the_id_token_only_from_6_1_to_6_4() {
        for v in ["6.1.0", "6.4.1", "6.3.0-rc.1"] {
            assert!(uses_id_token(v), "{v}");
        }
        for v in ["6.5.0", "6.7.6", "7.11.2", "8.0.1", "0.0.0-dev", "v6.2"] {
            assert!(!uses_id_token(v), "{v}");
        }
    }

    #[test]
    fn a_shown_url_has_no_user_or_password() {
        assert_eq!(
            shown("https://bob:pw@ci.example.com/api/v1/builds/1"),
            "https://ci.example.com/api/v1/builds/1"
        );
        assert_eq!(shown("http://ci/x?a=b@c"), "http://ci/x?a=b@c");
    }
}
