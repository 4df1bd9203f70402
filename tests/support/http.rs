//! A smart-HTTP(S) git server: a small HTTP/1.1 server that runs
//! `git http-backend` as a CGI program for every request. Being ours, it can
//! require Basic auth, serve TLS with a [`TestCa`], live under a URL prefix
//! like hosted forges do, and record exactly what the client sent.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use openssl::ssl::SslAcceptor;

use super::net::{basic_credentials, read_body, read_head, Head, Server};
use super::TestCa;

/// Decides whether `(user, password)` may access `path` (the request path
/// after the URL prefix, e.g. `/locks.git/info/refs`).
pub type AuthCheck = Arc<dyn Fn(&str, &str, &str) -> bool + Send + Sync>;

/// How an [`HttpGitServer`] behaves; `Default` is plain HTTP without auth.
#[derive(Clone, Default)]
pub struct HttpOptions {
    /// Require these Basic credentials on every request.
    pub basic_auth: Option<(String, String)>,
    /// Require Basic credentials accepted by this check (takes precedence
    /// over `basic_auth`).
    pub auth_check: Option<AuthCheck>,
    /// Serve HTTPS with this CA's server certificate.
    pub tls: Option<Arc<TestCa>>,
    /// Path prefix before the repository name, e.g. `/v1/repos`.
    pub url_prefix: String,
}

/// A running smart-HTTP git server exporting every repository under a root
/// directory. Dropping it stops the accept loop and closes all connections.
pub struct HttpGitServer {
    server: Server,
    state: Arc<State>,
}

struct State {
    root: PathBuf,
    opts: HttpOptions,
    acceptor: Option<SslAcceptor>,
    auth_headers: Mutex<Vec<String>>,
    requests: Mutex<Vec<String>>,
    count: AtomicUsize,
}

impl HttpGitServer {
    /// Starts serving the repositories under `root` on a free port of
    /// 127.0.0.1.
    pub fn start(root: &Path, opts: HttpOptions) -> HttpGitServer {
        let acceptor = opts.tls.as_ref().map(|ca| ca.acceptor());
        let state = Arc::new(State {
            root: root.to_owned(),
            opts,
            acceptor,
            auth_headers: Mutex::default(),
            requests: Mutex::default(),
            count: AtomicUsize::new(0),
        });
        let server = {
            let state = Arc::clone(&state);
            Server::start(move |stream, _| serve(stream, &state))
        };
        HttpGitServer { server, state }
    }

    /// The clone URL of `repo`: `http://127.0.0.1:P{prefix}/repo`, or
    /// `https://localhost:P{prefix}/repo` with TLS.
    pub fn url(&self, repo: &str) -> String {
        let (scheme, host) = if self.state.acceptor.is_some() {
            ("https", "localhost")
        } else {
            ("http", "127.0.0.1")
        };
        format!(
            "{scheme}://{host}:{}{}/{repo}",
            self.port(),
            self.state.opts.url_prefix
        )
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Every `Authorization` header value received, in order.
    pub fn auth_headers(&self) -> Vec<String> {
        self.state.auth_headers.lock().expect("lock").clone()
    }

    /// Every request received, as `METHOD target`, in order.
    pub fn requests(&self) -> Vec<String> {
        self.state.requests.lock().expect("lock").clone()
    }

    /// How many requests were received.
    pub fn request_count(&self) -> usize {
        self.state.count.load(Ordering::SeqCst)
    }
}

/// Serves one connection, after the TLS handshake if configured. Errors just
/// end the connection: clients that give up (or distrust our CA) are part
/// of the tests.
fn serve(stream: TcpStream, state: &State) {
    match &state.acceptor {
        Some(acceptor) => {
            if let Ok(tls) = acceptor.accept(stream) {
                let _ = serve_requests(BufReader::new(tls), state);
            }
        }
        None => {
            let _ = serve_requests(BufReader::new(stream), state);
        }
    }
}

fn serve_requests<S: Read + Write>(mut conn: BufReader<S>, state: &State) -> io::Result<()> {
    while let Some(head) = read_head(&mut conn)? {
        if !respond(&mut conn, &head, state)? {
            break;
        }
    }
    conn.get_mut().flush()
}

/// Answers one request; returns whether the connection may be reused.
fn respond<S: Read + Write>(
    conn: &mut BufReader<S>,
    head: &Head,
    state: &State,
) -> io::Result<bool> {
    state.count.fetch_add(1, Ordering::SeqCst);
    state
        .requests
        .lock()
        .expect("lock")
        .push(format!("{} {}", head.method, head.target));
    let authorization = head.header("authorization");
    if let Some(value) = authorization {
        state
            .auth_headers
            .lock()
            .expect("lock")
            .push(value.to_owned());
    }
    let has_body = head.header("transfer-encoding").is_some()
        || head
            .header("content-length")
            .is_some_and(|n| n.trim() != "0");
    let expects_continue = head
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    let keep_alive = head.keep_alive();
    let (path, query) = split_target(&head.target);
    let path_info = path
        .strip_prefix(state.opts.url_prefix.as_str())
        .filter(|rest| rest.starts_with('/'))
        .map(percent_decode);
    let verdict = match &path_info {
        None => Err(("404 Not Found", None)),
        Some(path_info) => authorize(state, authorization, path_info).map_err(|()| {
            let challenge = ("WWW-Authenticate", "Basic realm=\"git\"");
            ("401 Unauthorized", Some(challenge))
        }),
    };
    let user = match verdict {
        Ok(user) => user,
        Err((status, header)) => {
            // A client waiting for "100 Continue" never sends its body, so
            // the connection cannot be reused; otherwise drain the body.
            let reuse = keep_alive && !expects_continue;
            if reuse {
                read_body(conn, head)?;
            }
            simple_response(conn.get_mut(), status, header.as_slice(), reuse)?;
            return Ok(reuse);
        }
    };
    let path_info = path_info.expect("authorized requests have a path");
    if expects_continue {
        conn.get_mut().write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        conn.get_mut().flush()?;
    }
    let body = read_body(conn, head)?;

    let mut cgi = Command::new("git");
    cgi.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", &state.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &head.method)
        .env("PATH_INFO", &path_info)
        .env("QUERY_STRING", query)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(user) = &user {
        cgi.env("REMOTE_USER", user).env("AUTH_TYPE", "Basic");
    }
    if has_body {
        cgi.env("CONTENT_LENGTH", body.len().to_string());
    }
    for (header, var) in [
        ("content-type", "CONTENT_TYPE"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "GIT_PROTOCOL"),
    ] {
        if let Some(value) = head.header(header) {
            cgi.env(var, value);
        }
    }
    let mut child = cgi.spawn().expect("spawning git http-backend");
    let mut stdin = child.stdin.take().expect("CGI stdin");
    let writer = std::thread::spawn(move || stdin.write_all(&body));
    let mut stderr = child.stderr.take().expect("CGI stderr");
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut stdout = BufReader::new(child.stdout.take().expect("CGI stdout"));
    let result = relay_cgi_response(&mut stdout, conn.get_mut(), keep_alive);
    let _ = writer.join();
    let _ = child.wait();
    let errors = errors.join().unwrap_or_default();
    if !errors.trim().is_empty() {
        eprintln!("git http-backend {} {}: {errors}", head.method, head.target);
    }
    result.map(|()| keep_alive)
}

/// Checks credentials if the server requires them; `Ok(Some(user))` for a
/// valid login, `Ok(None)` when no auth is configured.
fn authorize(state: &State, authorization: Option<&str>, path: &str) -> Result<Option<String>, ()> {
    let opts = &state.opts;
    if opts.auth_check.is_none() && opts.basic_auth.is_none() {
        return Ok(None);
    }
    let (user, password) = authorization.and_then(basic_credentials).ok_or(())?;
    let valid = match (&opts.auth_check, &opts.basic_auth) {
        (Some(check), _) => check(&user, &password, path),
        (None, Some((u, p))) => *u == user && *p == password,
        (None, None) => unreachable!("checked above"),
    };
    if valid {
        Ok(Some(user))
    } else {
        Err(())
    }
}

/// Splits a request target (origin or absolute form) into path and query.
fn split_target(target: &str) -> (&str, &str) {
    let origin = match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    origin.split_once('?').unwrap_or((origin, ""))
}

fn percent_decode(path: &str) -> String {
    percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .into_owned()
}

/// Turns the CGI output (headers with an optional `Status:`, then the body)
/// into an HTTP response, streaming the body with its length or chunked.
fn relay_cgi_response(
    cgi: &mut impl BufRead,
    out: &mut impl Write,
    keep_alive: bool,
) -> io::Result<()> {
    let mut status = "200 OK".to_owned();
    let mut headers = Vec::new();
    let mut length = None;
    loop {
        let mut line = String::new();
        if cgi.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            status = value.to_owned();
        } else {
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.to_owned());
            }
            headers.push(format!("{name}: {value}"));
        }
    }
    let mut head = format!("HTTP/1.1 {status}\r\n");
    for header in &headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    if length.is_none() {
        head.push_str("Transfer-Encoding: chunked\r\n");
    }
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    if length.is_some() {
        io::copy(cgi, out)?;
    } else {
        let mut buf = [0; 64 * 1024];
        loop {
            let n = cgi.read(&mut buf)?;
            write!(out, "{n:x}\r\n")?;
            out.write_all(&buf[..n])?;
            out.write_all(b"\r\n")?;
            if n == 0 {
                break;
            }
        }
    }
    out.flush()
}

/// A response without body.
fn simple_response(
    out: &mut impl Write,
    status: &str,
    headers: &[(&str, &str)],
    keep_alive: bool,
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.flush()
}
