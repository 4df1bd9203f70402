//! The accept loop shared by the in-process servers (HTTP and proxy): a thread
//! per connection, and a guard that stops accepting and shuts every open
//! socket down so no thread outlives the test.

use std::collections::HashMap;
use std::io::{self, BufRead, Read};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Idle connections are dropped after this long, in case a client hangs.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Open sockets of one server, so that stopping it unblocks every thread.
#[derive(Default)]
pub(crate) struct Sockets {
    next: AtomicU64,
    open: Mutex<HashMap<u64, TcpStream>>,
}

/// Removes its socket from [`Sockets`] when the connection ends.
pub(crate) struct Registration {
    sockets: Arc<Sockets>,
    id: u64,
}

impl Sockets {
    /// Tracks `stream` until the returned registration is dropped.
    pub(crate) fn register(self: &Arc<Self>, stream: &TcpStream) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = stream.try_clone() {
            self.open.lock().expect("sockets lock").insert(id, clone);
        }
        Registration {
            sockets: Arc::clone(self),
            id,
        }
    }

    fn shutdown_all(&self) {
        for stream in self.open.lock().expect("sockets lock").values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.sockets
            .open
            .lock()
            .expect("sockets lock")
            .remove(&self.id);
    }
}

/// A listener on 127.0.0.1 with a thread per connection.
pub(crate) struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    sockets: Arc<Sockets>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds a free port and calls `handle` on a new thread for every
    /// connection; the stream is already registered in the sockets passed
    /// along, which the handler may use for further sockets it opens.
    pub(crate) fn start<F>(handle: F) -> Server
    where
        F: Fn(TcpStream, &Arc<Sockets>) + Send + Sync + 'static,
    {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding 127.0.0.1:0 for a server");
        let port = listener.local_addr().expect("listener address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let sockets = Arc::new(Sockets::default());
        let handle = Arc::new(handle);
        let accept = {
            let stop = Arc::clone(&stop);
            let sockets = Arc::clone(&sockets);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
                    let registration = sockets.register(&stream);
                    let sockets = Arc::clone(&sockets);
                    let handle = Arc::clone(&handle);
                    std::thread::spawn(move || {
                        let _registration = registration;
                        handle(stream, &sockets);
                    });
                }
            })
        };
        Server {
            port,
            stop,
            sockets,
            accept: Some(accept),
        }
    }

    /// The port the server listens on.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the loop sees the flag.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        self.sockets.shutdown_all();
    }
}

/// The request line and headers of an HTTP/1.x request.
pub(crate) struct Head {
    pub(crate) method: String,
    pub(crate) target: String,
    pub(crate) version: String,
    pub(crate) headers: Vec<(String, String)>,
}

impl Head {
    /// The first header called `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the client wants the connection kept open after the response.
    pub(crate) fn keep_alive(&self) -> bool {
        let close = self
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        self.version == "HTTP/1.1" && !close
    }
}

/// Reads a request head; `None` on a clean end of stream before it.
pub(crate) fn read_head(reader: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut line = String::new();
    // Tolerate stray empty lines between pipelined requests.
    while line.trim_end().is_empty() {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad request line {line:?}"),
        ));
    };
    let mut head = Head {
        method: method.to_owned(),
        target: target.to_owned(),
        version: version.to_owned(),
        headers: Vec::new(),
    };
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            return Ok(Some(head));
        }
        if let Some((name, value)) = line.split_once(':') {
            head.headers
                .push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
}

/// Reads the whole request body, decoding `Transfer-Encoding: chunked`.
/// Buffering keeps the servers simple; test bodies are small.
pub(crate) fn read_body(conn: &mut impl BufRead, head: &Head) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if head
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        loop {
            let mut size_line = String::new();
            conn.read_line(&mut size_line)?;
            let size = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                // Skip trailers up to the final empty line.
                loop {
                    let mut line = String::new();
                    if conn.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                        return Ok(body);
                    }
                }
            }
            let start = body.len();
            body.resize(start + size, 0);
            conn.read_exact(&mut body[start..])?;
            let mut crlf = [0; 2];
            conn.read_exact(&mut crlf)?;
        }
    }
    if let Some(length) = head.header("content-length") {
        let length: u64 = length
            .trim()
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length"))?;
        conn.take(length).read_to_end(&mut body)?;
    }
    Ok(body)
}

/// The user and password of a `Basic` credentials header value.
pub(crate) fn basic_credentials(value: &str) -> Option<(String, String)> {
    use base64::Engine;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}
