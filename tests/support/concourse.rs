//! A Concourse API stand-in: the routes `pool` uses, answering as the ATC
//! does (read in concourse/concourse `atc/routes.go`, `atc/api/...`,
//! `skymarshal/token/access_token.go`).
//!
//! - `GET /api/v1/info`: `{"version", "worker_version", "feature_flags", "external_url"}`.
//! - `POST /sky/issuer/token`: the OAuth password grant `fly login -u -p`
//!   makes, client `fly`/`Zmx5` in Basic auth (or the form), answering
//!   `{"access_token", "token_type": "bearer", "expires_in", "id_token"}`;
//!   a wrong user is a 401 `{"error": "access_denied"}`. Each exchange is
//!   counted.
//! - `GET /api/v1/user`: 401 `not authorized` unless the bearer token is valid.
//! - `GET /api/v1/builds/:id` and
//!   `GET /api/v1/teams/:team/pipelines/:pipeline/jobs/:job/builds/:name`
//!   (instance vars from `vars=` and `vars.K=` as `atc.InstanceVarsFromQueryParams`
//!   reads them): 404 for an unknown build *before* any credentials are
//!   checked, as the ATC does; then 401 unless the bearer token is valid;
//!   then the build as `atc.Build` JSON.
//!
//! Tokens valid on Concourse 6.1–6.4 are the `id_token` (a JWT-looking
//! string), from 6.5 on the `access_token`, as fly used them.

use std::io::{self, BufReader, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use openssl::ssl::SslAcceptor;
use serde_json::{json, Map, Value};

use super::imds::random_string;
use super::net::{basic_credentials, read_body, read_head, Head, Server};
use super::TestCa;

/// One request as the stand-in saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// `GET`, `POST`.
    pub method: String,
    /// Path and query.
    pub target: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The body (the token exchange's form).
    pub body: String,
    /// The status answered.
    pub status: u16,
}

/// A build the stand-in knows.
#[derive(Clone, Debug)]
pub struct Build {
    /// Its id.
    pub id: i64,
    /// `team`, `pipeline`, `job`, build `name`.
    pub team: String,
    /// The pipeline.
    pub pipeline: String,
    /// The pipeline's instance vars (instanced pipelines), if any.
    pub instance_vars: Option<Value>,
    /// The job.
    pub job: String,
    /// The build name.
    pub name: String,
    /// `pending`, `started`, `succeeded`, `failed`, `errored`, `aborted`.
    pub status: String,
    /// Unix seconds.
    pub end_time: Option<i64>,
}

impl Build {
    /// Build `id` of `main/app/deploy`, named `name`, in `status`.
    pub fn new(id: i64, name: &str, status: &str, end_time: Option<i64>) -> Build {
        Build {
            id,
            team: "main".into(),
            pipeline: "app".into(),
            instance_vars: None,
            job: "deploy".into(),
            name: name.into(),
            status: status.into(),
            end_time,
        }
    }

    /// The `atc.Build` JSON, omitting what Go's `omitempty` omits.
    pub fn json(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "team_name": self.team,
            "name": self.name,
            "status": self.status,
            "api_url": format!("/api/v1/builds/{}", self.id),
            "job_name": self.job,
            "pipeline_id": 3,
            "pipeline_name": self.pipeline,
            "start_time": self.end_time.unwrap_or(1_700_000_000) - 60,
        });
        if let Some(vars) = &self.instance_vars {
            v["pipeline_instance_vars"] = vars.clone();
        }
        if let Some(t) = self.end_time {
            v["end_time"] = json!(t);
        }
        v
    }
}

struct State {
    version: String,
    users: Vec<(String, String)>,
    tokens: Mutex<Vec<String>>,
    builds: Mutex<Vec<Build>>,
    exchanges: AtomicUsize,
    /// Answer this many requests with 503 before answering properly.
    unavailable: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    base: Mutex<String>,
    acceptor: Option<SslAcceptor>,
}

/// A running stand-in on 127.0.0.1; dropping it stops it (connections
/// are then refused).
pub struct Concourse {
    server: Server,
    state: Arc<State>,
}

impl Concourse {
    /// A Concourse of `version` with local users `users` (`(name, password)`).
    pub fn start(version: &str, users: &[(&str, &str)]) -> Concourse {
        Concourse::start_with(version, users, None)
    }

    /// [`Concourse::start`] serving HTTPS with `ca`'s certificate for
    /// `localhost`.
    pub fn start_tls(version: &str, users: &[(&str, &str)], ca: &TestCa) -> Concourse {
        Concourse::start_with(version, users, Some(ca.acceptor()))
    }

    fn start_with(
        version: &str,
        users: &[(&str, &str)],
        acceptor: Option<SslAcceptor>,
    ) -> Concourse {
        let state = Arc::new(State {
            version: version.into(),
            users: users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
            tokens: Mutex::default(),
            builds: Mutex::default(),
            exchanges: AtomicUsize::new(0),
            unavailable: AtomicUsize::new(0),
            seen: Mutex::default(),
            base: Mutex::default(),
            acceptor,
        });
        let server = {
            let state = Arc::clone(&state);
            Server::start(move |stream, _| match &state.acceptor {
                Some(acceptor) => {
                    // A client that distrusts the CA ends the handshake.
                    if let Ok(tls) = acceptor.accept(stream) {
                        let _ = serve(BufReader::new(tls), &state);
                    }
                }
                None => {
                    let _ = serve(BufReader::new(stream), &state);
                }
            })
        };
        let c = Concourse { server, state };
        *c.state.base.lock().expect("base lock") = c.url();
        c
    }

    /// `http://127.0.0.1:PORT` (`https://localhost:PORT` with TLS):
    /// `ATC_EXTERNAL_URL`, `--concourse-url`.
    pub fn url(&self) -> String {
        match self.state.acceptor {
            Some(_) => format!("https://localhost:{}", self.server.port()),
            None => format!("http://127.0.0.1:{}", self.server.port()),
        }
    }

    /// Makes `token` a valid bearer token (as a `fly login` would).
    pub fn add_token(&self, token: &str) {
        self.state
            .tokens
            .lock()
            .expect("tokens lock")
            .push(token.into());
    }

    /// Adds or replaces (by id) a build.
    pub fn put_build(&self, build: Build) {
        let mut builds = self.state.builds.lock().expect("builds lock");
        builds.retain(|b| b.id != build.id);
        builds.push(build);
    }

    /// Answers the next `n` requests with 503 Service Unavailable.
    pub fn unavailable_for(&self, n: usize) {
        self.state.unavailable.store(n, Ordering::SeqCst);
    }

    /// Password grants answered, successful or not.
    pub fn exchanges(&self) -> usize {
        self.state.exchanges.load(Ordering::SeqCst)
    }

    /// Every request, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("seen lock").clone()
    }

    /// The requests for builds (by id or by job), as `path?query`.
    pub fn build_requests(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter(|s| {
                s.target.starts_with("/api/v1/builds/") || s.target.starts_with("/api/v1/teams/")
            })
            .map(|s| s.target)
            .collect()
    }

    /// Every token this stand-in handed out.
    pub fn tokens(&self) -> Vec<String> {
        self.state.tokens.lock().expect("tokens lock").clone()
    }
}

fn serve<S: Read + Write>(mut conn: BufReader<S>, state: &State) -> io::Result<()> {
    while let Some(head) = read_head(&mut conn)? {
        let body = read_body(&mut conn, &head)?;
        let body = String::from_utf8_lossy(&body).into_owned();
        let (status, content_type, answer) = if state
            .unavailable
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            (503, "text/plain", "service unavailable".to_string())
        } else {
            respond(&head, &body, state)
        };
        state.seen.lock().expect("seen lock").push(Seen {
            method: head.method.clone(),
            target: head.target.clone(),
            authorization: head.header("authorization").map(String::from),
            body,
            status,
        });
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            405 => "Method Not Allowed",
            _ => "Service Unavailable",
        };
        let keep_alive = head.keep_alive();
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{}\r\n{answer}",
            answer.len(),
            if keep_alive { "" } else { "Connection: close\r\n" }
        );
        conn.get_mut().write_all(response.as_bytes())?;
        conn.get_mut().flush()?;
        if !keep_alive {
            break;
        }
    }
    Ok(())
}

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

fn respond(head: &Head, body: &str, state: &State) -> (u16, &'static str, String) {
    let (path, query) = head.target.split_once('?').unwrap_or((&head.target, ""));
    let segments: Vec<String> = path.split('/').skip(1).map(percent_decode).collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (head.method.as_str(), segments.as_slice()) {
        ("GET", ["api", "v1", "info"]) => (
            200,
            JSON,
            json!({
                "version": state.version,
                "worker_version": "2.5",
                "feature_flags": {"global_resources": false},
                "external_url": *state.base.lock().expect("base lock"),
            })
            .to_string(),
        ),
        ("POST", ["sky", "issuer", "token"]) => token(head, body, state),
        ("GET", ["api", "v1", "user"]) => {
            if !authorized(head, state) {
                return (401, TEXT, "not authorized".into());
            }
            (
                200,
                JSON,
                json!({"sub": "Cg1sb2NhbA", "name": "ops", "user_id": "ops", "user_name": "ops",
                       "email": "", "is_admin": false, "is_system": false,
                       "teams": {"main": ["member"]}, "display_user_id": "ops"})
                .to_string(),
            )
        }
        ("GET", ["api", "v1", "builds", id]) => {
            let Ok(id) = id.parse::<i64>() else {
                return (400, TEXT, String::new());
            };
            let found = state
                .builds
                .lock()
                .expect("builds lock")
                .iter()
                .find(|b| b.id == id)
                .cloned();
            answer_build(found, head, state)
        }
        (
            "GET",
            ["api", "v1", "teams", team, "pipelines", pipeline, "jobs", job, "builds", name],
        ) => {
            let Some(vars) = instance_vars(query) else {
                return (400, TEXT, String::new());
            };
            let found = state
                .builds
                .lock()
                .expect("builds lock")
                .iter()
                .find(|b| {
                    b.team == *team
                        && b.pipeline == *pipeline
                        && b.job == *job
                        && b.name == *name
                        && b.instance_vars.clone().unwrap_or(Value::Null) == vars
                })
                .cloned();
            answer_build(found, head, state)
        }
        _ => (404, TEXT, "404 page not found".into()),
    }
}

/// 404 before the credentials are looked at, as the ATC's handlers do.
fn answer_build(found: Option<Build>, head: &Head, state: &State) -> (u16, &'static str, String) {
    let Some(build) = found else {
        return (404, TEXT, String::new());
    };
    if !authorized(head, state) {
        return (401, TEXT, "not authorized".into());
    }
    (200, JSON, build.json().to_string())
}

/// A valid `Authorization: Bearer TOKEN` (the scheme in any case, as the
/// ATC's verifier compares it).
fn authorized(head: &Head, state: &State) -> bool {
    let Some(value) = head.header("authorization") else {
        return false;
    };
    let parts: Vec<&str> = value.split(' ').collect();
    match parts.as_slice() {
        [scheme, token] if scheme.eq_ignore_ascii_case("bearer") => state
            .tokens
            .lock()
            .expect("tokens lock")
            .iter()
            .any(|t| t == token),
        _ => false,
    }
}

/// The password grant.
fn token(head: &Head, body: &str, state: &State) -> (u16, &'static str, String) {
    state.exchanges.fetch_add(1, Ordering::SeqCst);
    let form = parse_form(body);
    let get = |k: &str| {
        form.iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.as_str())
    };
    let client = head
        .header("authorization")
        .and_then(basic_credentials)
        .or_else(|| {
            Some((
                get("client_id")?.to_string(),
                get("client_secret")?.to_string(),
            ))
        });
    let error = |status: u16, code: &str| {
        (
            status,
            JSON,
            json!({"error": code, "error_description": code}).to_string(),
        )
    };
    if client != Some(("fly".into(), "Zmx5".into())) {
        return error(401, "invalid_client");
    }
    if get("grant_type") != Some("password") {
        return error(400, "unsupported_grant_type");
    }
    let user = (get("username"), get("password"));
    let known = state
        .users
        .iter()
        .any(|(u, p)| user == (Some(u.as_str()), Some(p.as_str())));
    if !known {
        return error(401, "access_denied");
    }
    let access = base64_ish(38);
    let id = format!("eyJhbGciOiJSUzI1NiJ9.{}.{}", base64_ish(60), base64_ish(40));
    let old = state.version.starts_with("6.") && {
        let minor: u32 = state
            .version
            .split('.')
            .nth(1)
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        (1..=4).contains(&minor)
    };
    state
        .tokens
        .lock()
        .expect("tokens lock")
        .push(if old { id.clone() } else { access.clone() });
    (
        200,
        JSON,
        json!({"access_token": access, "token_type": "bearer", "expires_in": 86399, "id_token": id})
            .to_string(),
    )
}

fn base64_ish(len: usize) -> String {
    random_string(
        len,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
    )
}

/// `application/x-www-form-urlencoded` pairs, decoded.
pub fn parse_form(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

/// The instance vars of a query, as `atc.InstanceVarsFromQueryParams`
/// reads them: `vars={...}` and `vars.a.b=<JSON>`; `Null` for none,
/// `None` for a value that is not JSON (a 400).
fn instance_vars(query: &str) -> Option<Value> {
    let mut vars = Map::new();
    let mut any = false;
    let mut pairs = parse_form(query);
    pairs.sort();
    for (k, v) in pairs {
        let path: Vec<&str> = match k.as_str() {
            "vars" => Vec::new(),
            k => match k.strip_prefix("vars.") {
                Some(rest) => rest.split('.').collect(),
                None => continue,
            },
        };
        let value: Value = serde_json::from_str(&v).ok()?;
        any = true;
        if path.is_empty() {
            for (name, inner) in value.as_object()? {
                vars.insert(name.clone(), inner.clone());
            }
            continue;
        }
        let mut at = &mut vars;
        for (i, key) in path.iter().enumerate() {
            if i + 1 == path.len() {
                at.insert((*key).to_string(), value.clone());
            } else {
                at = at
                    .entry((*key).to_string())
                    .or_insert_with(|| Value::Object(Map::new()))
                    .as_object_mut()?;
            }
        }
    }
    Some(if any {
        Value::Object(vars)
    } else {
        Value::Null
    })
}

/// Decodes `%XX` (and nothing else: `+` stays, as in a path).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// A Concourse that accepts connections and never answers: a hung web
/// node, a black-holed load balancer. It reads what is sent and holds the
/// socket open until dropped.
pub struct Hung {
    server: Server,
    connections: Arc<AtomicUsize>,
}

impl Hung {
    /// Listens on a free port of 127.0.0.1.
    pub fn start() -> Hung {
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        let server = Server::start(move |mut stream, _| {
            counted.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return,
                }
            }
        });
        Hung {
            server,
            connections,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port())
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// `http://127.0.0.1:PORT` of a port nothing listens on: connections are
/// refused at once (a stopped web node).
pub fn refusing_url() -> String {
    let listener =
        std::net::TcpListener::bind(("127.0.0.1", 0)).expect("binding 127.0.0.1:0 for a port");
    let port = listener.local_addr().expect("listener address").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}
