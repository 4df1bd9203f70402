//! An HTTP proxy that tunnels `CONNECT` requests (and forwards absolute-form
//! requests, which is how clients reach `http://` URLs through a proxy), to
//! prove the resource's proxy settings and proxy credentials are used.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::net::{basic_credentials, read_head, Head, Server, Sockets};

/// A running proxy on 127.0.0.1 that only reaches 127.0.0.1/localhost.
/// Dropping it stops it and closes every tunnel.
pub struct ConnectProxy {
    server: Server,
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    auth: Option<(String, String)>,
    connections: AtomicUsize,
    rejected: AtomicUsize,
    auth_headers: Mutex<Vec<String>>,
}

impl ConnectProxy {
    /// Starts the proxy on a free port; with `auth`, requests need a matching
    /// `Proxy-Authorization: Basic` header.
    pub fn start(auth: Option<(String, String)>) -> ConnectProxy {
        let state = Arc::new(State {
            auth,
            ..State::default()
        });
        let server = {
            let state = Arc::clone(&state);
            Server::start(move |stream, sockets| {
                let _ = serve(stream, &state, sockets);
            })
        };
        ConnectProxy { server, state }
    }

    /// The port the proxy listens on.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The proxy URL, `http://127.0.0.1:P`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// How many tunnels (or forwarded connections) were established.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// How many requests were answered `407` (missing or wrong credentials,
    /// including a client's first, unauthenticated attempt).
    pub fn rejected(&self) -> usize {
        self.state.rejected.load(Ordering::SeqCst)
    }

    /// Every `Proxy-Authorization` header value received, in order.
    pub fn auth_headers(&self) -> Vec<String> {
        self.state.auth_headers.lock().expect("lock").clone()
    }
}

fn serve(client: TcpStream, state: &State, sockets: &Arc<Sockets>) -> io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    while let Some(head) = read_head(&mut reader)? {
        if let Some(value) = head.header("proxy-authorization") {
            state
                .auth_headers
                .lock()
                .expect("lock")
                .push(value.to_owned());
        }
        if !authorized(state, &head) {
            state.rejected.fetch_add(1, Ordering::SeqCst);
            // CONNECT has no body, so the client may retry on this
            // connection; a forwarded request's body is unread, so close.
            let reuse = head.method == "CONNECT" && head.keep_alive();
            let close = if reuse { "" } else { "Connection: close\r\n" };
            write!(
                client,
                "HTTP/1.1 407 Proxy Authentication Required\r\n\
                 Proxy-Authenticate: Basic realm=\"proxy\"\r\nContent-Length: 0\r\n{close}\r\n"
            )?;
            if reuse {
                continue;
            }
            return Ok(());
        }
        let Some(authority) = target_authority(&head) else {
            client.write_all(
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
            return Ok(());
        };
        let upstream = match TcpStream::connect(&authority) {
            Ok(upstream) => upstream,
            Err(_) => {
                client.write_all(
                    b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )?;
                return Ok(());
            }
        };
        let _registration = sockets.register(&upstream);
        state.connections.fetch_add(1, Ordering::SeqCst);
        let mut upstream_writer = upstream.try_clone()?;
        if head.method == "CONNECT" {
            client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
        } else {
            upstream_writer.write_all(forwarded_head(&head).as_bytes())?;
        }
        // Bytes the client already sent after the head are in the reader's
        // buffer; they go first.
        upstream_writer.write_all(reader.buffer())?;
        reader.consume(reader.buffer().len());
        let to_upstream = std::thread::spawn(move || pipe(reader.into_inner(), upstream_writer));
        let _ = pipe(upstream, client);
        let _ = to_upstream.join();
        return Ok(());
    }
    Ok(())
}

fn authorized(state: &State, head: &Head) -> bool {
    let Some((user, password)) = &state.auth else {
        return true;
    };
    head.header("proxy-authorization")
        .and_then(basic_credentials)
        .is_some_and(|(u, p)| u == *user && p == *password)
}

/// `host:port` to connect to, if it is a loopback target.
fn target_authority(head: &Head) -> Option<String> {
    let authority = if head.method == "CONNECT" {
        head.target.clone()
    } else {
        let rest = head.target.strip_prefix("http://")?;
        let authority = rest.split('/').next()?;
        if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        }
    };
    let (host, port) = authority.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let loopback = matches!(host, "127.0.0.1" | "localhost" | "[::1]");
    loopback.then(|| format!("{}:{port}", Ipv4Addr::LOCALHOST))
}

/// The request head to send upstream, without proxy headers.
fn forwarded_head(head: &Head) -> String {
    let mut out = format!("{} {} {}\r\n", head.method, head.target, head.version);
    for (name, value) in &head.headers {
        if !name.to_ascii_lowercase().starts_with("proxy-") {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    out.push_str("\r\n");
    out
}

/// Copies until `from` ends, then passes the end of stream on to `to`.
fn pipe(mut from: impl Read, to: TcpStream) -> io::Result<u64> {
    let mut writer = &to;
    let copied = io::copy(&mut from, &mut writer);
    let _ = to.shutdown(Shutdown::Write);
    copied
}
