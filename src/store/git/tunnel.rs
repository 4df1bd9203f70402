//! `https_tunnel`: SSH through an HTTP CONNECT proxy, in-process.
//!
//! libssh2 cannot use a proxy, and the Go resource shelled out to a
//! ProxyCommand. Instead we listen on a loopback port, and for every
//! connection libssh2 makes there we open a CONNECT tunnel through the proxy
//! to the real SSH server and copy bytes both ways. libgit2 is then pointed at
//! `ssh://user@127.0.0.1:PORT/path`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::config::Tunnel;
use crate::error::{Error, Result};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Why the last tunnel could not be opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TunnelError {
    /// The proxy wants (other) credentials: HTTP 407.
    ProxyAuth(String),
    /// Anything else: proxy unreachable, refused the target, broke the connection.
    Other(String),
}

/// A running loopback forwarder; stops accepting when dropped.
pub struct LocalTunnel {
    port: u16,
    stop: Arc<AtomicBool>,
    last_error: Arc<Mutex<Option<TunnelError>>>,
}

impl LocalTunnel {
    /// Listens on 127.0.0.1 and forwards each connection through `proxy` to
    /// `target_host:target_port`.
    pub fn start(proxy: &Tunnel, target_host: &str, target_port: u16) -> Result<LocalTunnel> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| Error::io("could not listen on loopback for https_tunnel", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::io("could not read the tunnel's port", e))?
            .port();
        let stop = Arc::new(AtomicBool::new(false));
        let last_error = Arc::new(Mutex::new(None));
        let target = if target_host.contains(':') {
            format!("[{target_host}]:{target_port}")
        } else {
            format!("{target_host}:{target_port}")
        };
        let auth = proxy.auth.as_ref().map(|(user, pass)| {
            format!(
                "Proxy-Authorization: Basic {}\r\n",
                STANDARD.encode(format!("{user}:{}", pass.expose()))
            )
        });
        let (proxy_host, proxy_port) = (proxy.host.clone(), proxy.port);
        let (stop2, errors) = (Arc::clone(&stop), Arc::clone(&last_error));
        thread::spawn(move || {
            for client in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let (target, auth, host, errors) = (
                    target.clone(),
                    auth.clone(),
                    proxy_host.clone(),
                    Arc::clone(&errors),
                );
                thread::spawn(move || {
                    // Held until the error is recorded: libgit2 must not see
                    // the connection close before `last_error` explains why.
                    let _open_until_recorded = client.try_clone();
                    if let Err(e) = forward(client, &host, proxy_port, &target, auth.as_deref()) {
                        if let Ok(mut slot) = errors.lock() {
                            *slot = Some(e);
                        }
                    }
                });
            }
        });
        Ok(LocalTunnel {
            port,
            stop,
            last_error,
        })
    }

    /// The loopback port libgit2 should connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Why the most recent tunnel failed, if one did.
    pub fn last_error(&self) -> Option<TunnelError> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }
}

impl Drop for LocalTunnel {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn connect_proxy(host: &str, port: u16) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn forward(
    client: TcpStream,
    proxy_host: &str,
    proxy_port: u16,
    target: &str,
    auth: Option<&str>,
) -> Result<(), TunnelError> {
    let other = |what: &str, e: io::Error| {
        TunnelError::Other(format!("{what} proxy {proxy_host}:{proxy_port}: {e}"))
    };
    let mut upstream =
        connect_proxy(proxy_host, proxy_port).map_err(|e| other("could not connect to", e))?;
    let request = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{}\r\n",
        auth.unwrap_or("")
    );
    upstream
        .write_all(request.as_bytes())
        .map_err(|e| other("could not write to", e))?;
    upstream
        .set_read_timeout(Some(CONNECT_TIMEOUT))
        .map_err(|e| other("could not configure the connection to", e))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > MAX_RESPONSE_HEAD {
            return Err(TunnelError::Other(format!(
                "proxy {proxy_host}:{proxy_port} sent an oversized response"
            )));
        }
        match upstream.read(&mut byte) {
            Ok(0) => {
                return Err(TunnelError::Other(format!(
                    "proxy {proxy_host}:{proxy_port} closed the connection during CONNECT"
                )))
            }
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(other("no answer to CONNECT from", e)),
        }
    }
    let status_line = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    let code = status_line.split_whitespace().nth(1).unwrap_or("");
    match code {
        "200" => {}
        "407" => {
            return Err(TunnelError::ProxyAuth(format!(
                "proxy {proxy_host}:{proxy_port} requires authentication ({status_line}); check https_tunnel.proxy_user and proxy_password"
            )))
        }
        _ => {
            return Err(TunnelError::Other(format!(
                "proxy {proxy_host}:{proxy_port} refused CONNECT {target}: {status_line}"
            )))
        }
    }
    let _ = upstream.set_read_timeout(None);
    let (Ok(mut client_r), Ok(mut upstream_w)) = (client.try_clone(), upstream.try_clone()) else {
        return Err(TunnelError::Other("could not clone a socket".into()));
    };
    let pump = thread::spawn(move || {
        let _ = io::copy(&mut client_r, &mut upstream_w);
        let _ = upstream_w.shutdown(Shutdown::Write);
    });
    let (mut upstream_r, mut client_w) = (upstream, client);
    let _ = io::copy(&mut upstream_r, &mut client_w);
    let _ = client_w.shutdown(Shutdown::Write);
    let _ = pump.join();
    Ok(())
}
