//! A TCP fault injector to put between the resource and a git server.
//!
//! [`FaultProxy`] listens on 127.0.0.1, relays every connection to a target
//! (a `git daemon`) and, at seeded rates or as scripted, breaks connections
//! the ways a real network does: it drops a connection as soon as it is
//! accepted, stalls one (relays nothing more, for longer than any client
//! timeout), cuts a fetch while the server's pack is coming or a push while
//! the client's pack is going, and loses (or stalls) the reply of a push the
//! server has already applied, the nastiest case for a compare-and-swap
//! client. It reads the `git://` request line to tell fetches
//! (`git-upload-pack`) from pushes (`git-receive-pack`) and the pkt-lines of
//! a push's ref advertisement to know where the server's report begins.
//!
//! Every fault that actually happened is counted ([`FaultCounts`]). A
//! connection the proxy gives up on is closed towards the client at once,
//! but its server side is only half-closed and drained to the end, so once
//! [`FaultProxy::wait_idle`] returns, the server has finished everything it
//! was sent and the branch is final. At most [`MAX_CONNECTIONS`] connections
//! (two threads each) are served at once; dropping the proxy shuts every
//! socket and joins every thread.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Connections served at once; more clients wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 32;
/// How long the proxy waits for a client's request line, and for a server
/// to finish after the connection was cut.
const LINGER: Duration = Duration::from_secs(30);
/// How often a stall looks at whether the proxy is being dropped.
const STALL_POLL: Duration = Duration::from_millis(50);

/// One way of breaking a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Accept the connection and close it before reading anything.
    DropAtAccept,
    /// Relay `after` bytes of the server's output, then nothing more in
    /// either direction until the client hangs up (or the stall limit).
    /// `after: 0` is a server that accepts and never answers.
    Stall { after: usize },
    /// Relay `after` bytes of a fetch's server output, then cut the
    /// connection (only if the server had more to send).
    CutFetch { after: usize },
    /// Relay `after` bytes a pushing client sent after its request line, then
    /// cut the connection (only if the client had more: the server never
    /// gets the whole push, so it never applies it).
    CutPush { after: usize },
    /// Relay the whole push to the server and let it apply it, then close
    /// the client's connection without relaying the server's report-status.
    LosePushReply,
    /// Like [`Fault::LosePushReply`], but hold the connection silent until
    /// the client gives up instead of closing it.
    StallPushReply,
    /// No fault: a scripted placeholder that lets the next connection
    /// through, so that the fault queued after it hits the one after.
    Pass,
}

impl Fault {
    /// Whether this fault can happen to a connection for `service`.
    fn applies_to(self, service: Service) -> bool {
        match self {
            Fault::DropAtAccept | Fault::Stall { .. } | Fault::Pass => true,
            Fault::CutFetch { .. } => service == Service::UploadPack,
            Fault::CutPush { .. } | Fault::LosePushReply | Fault::StallPushReply => {
                service == Service::ReceivePack
            }
        }
    }
}

/// The git service a connection asked for in its `git://` request line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// `git-upload-pack`: a fetch or ls-remote.
    UploadPack,
    /// `git-receive-pack`: a push.
    ReceivePack,
    /// Anything else; only drops and stalls apply.
    Other,
}

/// How often each fault is injected: probabilities per connection, drawn
/// from a generator seeded with `seed`, so that a client making the same
/// connections meets the same faults.
#[derive(Clone, Debug)]
pub struct Rates {
    /// Seed of the fault generator.
    pub seed: u64,
    /// Any connection.
    pub drop_at_accept: f64,
    /// Any connection that was not dropped, at a random point of the
    /// server's output.
    pub stall: f64,
    /// A fetch, at a random point of the server's output.
    pub cut_fetch: f64,
    /// A push, at a random point of the client's output.
    pub cut_push: f64,
    /// A push: its reply is lost.
    pub lose_push_reply: f64,
    /// A push: its reply never comes.
    pub stall_push_reply: f64,
    /// Random stall and fetch cut points are drawn below this many bytes of
    /// the server's output (a depth-1 fetch of a small pool is 0.5-2 KiB, the
    /// first ~300 bytes being the ref advertisement).
    pub server_bytes: usize,
    /// Random push cut points are drawn below this many bytes of the
    /// client's output (a one-lock push of a small pool is about 500 bytes).
    pub client_bytes: usize,
    /// The longest a stall lasts when the client does not give up first.
    pub stall_limit: Duration,
    /// Every connection waits a random time below this (drawn from the
    /// seeded generator) before it reaches the server, so that runs with
    /// different seeds interleave their processes differently.
    pub latency: Duration,
}

impl Rates {
    /// No random faults: only scripted ones ([`FaultProxy::inject`]).
    pub fn none() -> Rates {
        Rates {
            seed: 0,
            drop_at_accept: 0.0,
            stall: 0.0,
            cut_fetch: 0.0,
            cut_push: 0.0,
            lose_push_reply: 0.0,
            stall_push_reply: 0.0,
            server_bytes: 1536,
            client_bytes: 512,
            stall_limit: Duration::from_secs(60),
            latency: Duration::ZERO,
        }
    }
}

/// Faults that actually happened (a fault drawn for a connection that ended
/// before reaching its cut point is not counted), and connections seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Connections accepted.
    pub connections: usize,
    /// [`Fault::DropAtAccept`].
    pub dropped_at_accept: usize,
    /// [`Fault::Stall`].
    pub stalled: usize,
    /// [`Fault::CutFetch`].
    pub cut_mid_fetch: usize,
    /// [`Fault::CutPush`].
    pub cut_mid_push: usize,
    /// [`Fault::LosePushReply`] after the server did reply.
    pub lost_push_replies: usize,
    /// [`Fault::StallPushReply`] after the server did reply.
    pub stalled_push_replies: usize,
    /// Of the lost and stalled replies, those that reported the branch
    /// updated (`ok refs/...`): pushes that landed unbeknownst to the client.
    /// The others reported a push the server refused (a race lost there).
    pub unreported_updates: usize,
    /// Connections closed because the server could not be reached (not an
    /// injected fault: the server was down).
    pub server_unreachable: usize,
}

impl FaultCounts {
    /// Every injected fault.
    pub fn injected(&self) -> usize {
        self.dropped_at_accept
            + self.stalled
            + self.cut_mid_fetch
            + self.cut_mid_push
            + self.lost_push_replies
            + self.stalled_push_replies
    }
}

impl std::ops::AddAssign for FaultCounts {
    fn add_assign(&mut self, o: FaultCounts) {
        self.connections += o.connections;
        self.dropped_at_accept += o.dropped_at_accept;
        self.stalled += o.stalled;
        self.cut_mid_fetch += o.cut_mid_fetch;
        self.cut_mid_push += o.cut_mid_push;
        self.lost_push_replies += o.lost_push_replies;
        self.stalled_push_replies += o.stalled_push_replies;
        self.unreported_updates += o.unreported_updates;
        self.server_unreachable += o.server_unreachable;
    }
}

/// A running fault proxy. Dropping it closes every connection and joins
/// every thread.
pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    target: SocketAddr,
    rates: Rates,
    rng: Mutex<fastrand::Rng>,
    script: Mutex<VecDeque<(Option<Service>, Fault)>>,
    counts: Mutex<FaultCounts>,
    stop: AtomicBool,
    active: Mutex<usize>,
    active_changed: Condvar,
    next_socket: AtomicU64,
    sockets: Mutex<HashMap<u64, TcpStream>>,
}

impl FaultProxy {
    /// Starts a proxy on a free port of 127.0.0.1 relaying to
    /// 127.0.0.1:`target_port`, injecting faults at `rates`.
    pub fn start(target_port: u16, rates: Rates) -> FaultProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("binding 127.0.0.1:0 for the fault proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared {
            target: SocketAddr::from((Ipv4Addr::LOCALHOST, target_port)),
            rng: Mutex::new(fastrand::Rng::with_seed(rates.seed)),
            rates,
            script: Mutex::default(),
            counts: Mutex::default(),
            stop: AtomicBool::new(false),
            active: Mutex::new(0),
            active_changed: Condvar::new(),
            next_socket: AtomicU64::new(0),
            sockets: Mutex::default(),
        });
        let accept = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || accept_loop(&listener, &shared))
        };
        FaultProxy {
            port,
            shared,
            accept: Some(accept),
        }
    }

    /// The port the proxy listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `git://` URL of repository `repo` through the proxy.
    pub fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }

    /// Queues `fault` for the next connection it can happen to, before any
    /// random fault; queued faults are used in order.
    pub fn inject(&self, fault: Fault) {
        self.shared.queue(None, fault);
    }

    /// Queues `fault` for the next connection for `service`.
    pub fn inject_on(&self, service: Service, fault: Fault) {
        self.shared.queue(Some(service), fault);
    }

    /// Drops the queued faults not yet used (an outage scripted as many
    /// drops ends now); returns how many there were.
    pub fn clear_script(&self) -> usize {
        let mut script = self.shared.script.lock().expect("script lock");
        let left = script.len();
        script.clear();
        left
    }

    /// What happened so far.
    pub fn counts(&self) -> FaultCounts {
        *self.shared.counts.lock().expect("counts lock")
    }

    /// Waits until no connection is open (its server side drained to the
    /// end); false if that takes longer than `timeout`.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut active = self.shared.active.lock().expect("active lock");
        while *active > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            active = self
                .shared
                .active_changed
                .wait_timeout(active, left)
                .expect("active lock")
                .0;
        }
        true
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop, blocked in accept() or waiting for a slot.
        self.shared.active_changed.notify_all();
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
        for stream in self.shared.sockets.lock().expect("sockets lock").values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

impl Shared {
    fn queue(&self, service: Option<Service>, fault: Fault) {
        self.script
            .lock()
            .expect("script lock")
            .push_back((service, fault));
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn count(&self, f: impl FnOnce(&mut FaultCounts)) {
        f(&mut self.counts.lock().expect("counts lock"));
    }

    /// Tracks `stream` so that dropping the proxy can shut it down.
    fn register(&self, stream: &TcpStream) -> Option<u64> {
        let clone = stream.try_clone().ok()?;
        let id = self.next_socket.fetch_add(1, Ordering::Relaxed);
        self.sockets.lock().expect("sockets lock").insert(id, clone);
        // A socket registered after Drop shut the others must not linger.
        if self.stopping() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        Some(id)
    }

    fn unregister(&self, id: Option<u64>) {
        if let Some(id) = id {
            self.sockets.lock().expect("sockets lock").remove(&id);
        }
    }

    /// Whether a connection is dropped at accept. Draws from the generator
    /// for every connection, so scripted faults do not shift the sequence.
    fn drops_at_accept(&self) -> bool {
        let roll = self.rng.lock().expect("rng lock").f64();
        let mut script = self.script.lock().expect("script lock");
        if matches!(script.front(), Some((None, Fault::DropAtAccept))) {
            script.pop_front();
            return true;
        }
        roll < self.rates.drop_at_accept
    }

    /// How long the next connection waits before reaching the server.
    fn latency(&self) -> Duration {
        let max = self.rates.latency.as_micros() as u64;
        if max == 0 {
            return Duration::ZERO;
        }
        Duration::from_micros(self.rng.lock().expect("rng lock").u64(0..max))
    }

    /// The fault, if any, for a connection asking for `service`.
    fn choose(&self, service: Service) -> Option<Fault> {
        let (roll, at, push_at) = {
            let mut rng = self.rng.lock().expect("rng lock");
            (
                rng.f64(),
                rng.usize(0..self.rates.server_bytes.max(1)),
                rng.usize(0..self.rates.client_bytes.max(1)),
            )
        };
        {
            let mut script = self.script.lock().expect("script lock");
            let found = script.iter().position(|(s, f)| {
                *f != Fault::DropAtAccept && s.is_none_or(|s| s == service) && f.applies_to(service)
            });
            if let Some(i) = found {
                return script.remove(i).map(|(_, f)| f);
            }
        }
        let r = &self.rates;
        let candidates: &[(f64, Fault)] = match service {
            Service::UploadPack => &[
                (r.stall, Fault::Stall { after: at }),
                (r.cut_fetch, Fault::CutFetch { after: at }),
            ],
            Service::ReceivePack => &[
                (r.stall, Fault::Stall { after: at }),
                (r.cut_push, Fault::CutPush { after: push_at }),
                (r.lose_push_reply, Fault::LosePushReply),
                (r.stall_push_reply, Fault::StallPushReply),
            ],
            Service::Other => &[(r.stall, Fault::Stall { after: at })],
        };
        let mut sum = 0.0;
        for (p, fault) in candidates {
            sum += p;
            if roll < sum {
                return Some(*fault);
            }
        }
        None
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    loop {
        {
            let mut active = shared.active.lock().expect("active lock");
            while *active >= MAX_CONNECTIONS && !shared.stopping() {
                active = shared
                    .active_changed
                    .wait_timeout(active, STALL_POLL)
                    .expect("active lock")
                    .0;
            }
        }
        let accepted = listener.accept();
        if shared.stopping() {
            break;
        }
        let Ok((client, _)) = accepted else { continue };
        *shared.active.lock().expect("active lock") += 1;
        shared.count(|c| c.connections += 1);
        threads.retain(|t| !t.is_finished());
        let shared = Arc::clone(shared);
        threads.push(std::thread::spawn(move || {
            let id = shared.register(&client);
            serve(&shared, client);
            shared.unregister(id);
            *shared.active.lock().expect("active lock") -= 1;
            shared.active_changed.notify_all();
        }));
    }
    for t in threads {
        let _ = t.join();
    }
}

/// Reads the client's first pkt-line (`git-upload-pack /repo\0host=...\0`).
/// Returns the bytes read and the service asked for; anything that does not
/// look like a pkt-line is passed on as [`Service::Other`].
fn read_request(client: &mut TcpStream) -> io::Result<(Vec<u8>, Service)> {
    let mut head = [0u8; 4];
    client.read_exact(&mut head)?;
    let Some(len) = pkt_len(&head).filter(|l| *l >= 4) else {
        return Ok((head.to_vec(), Service::Other));
    };
    let mut line = head.to_vec();
    line.resize(len, 0);
    client.read_exact(&mut line[4..])?;
    let service = if line[4..].starts_with(b"git-upload-pack ") {
        Service::UploadPack
    } else if line[4..].starts_with(b"git-receive-pack ") {
        Service::ReceivePack
    } else {
        Service::Other
    };
    Ok((line, service))
}

/// The length in a pkt-line header (four hex digits).
fn pkt_len(head: &[u8]) -> Option<usize> {
    std::str::from_utf8(head)
        .ok()
        .and_then(|h| usize::from_str_radix(h, 16).ok())
}

fn serve(shared: &Arc<Shared>, mut client: TcpStream) {
    if shared.drops_at_accept() {
        shared.count(|c| c.dropped_at_accept += 1);
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let _ = client.set_read_timeout(Some(LINGER));
    let Ok((request, service)) = read_request(&mut client) else {
        return;
    };
    let fault = shared.choose(service);
    let latency = shared.latency();
    if !latency.is_zero() {
        std::thread::sleep(latency);
    }
    let Ok(mut server) = TcpStream::connect(shared.target) else {
        shared.count(|c| c.server_unreachable += 1);
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let server_id = shared.register(&server);
    if server.write_all(&request).is_ok() {
        let _ = client.set_read_timeout(None);
        let conn = Conn {
            client,
            server,
            service,
            fault,
            state: Mutex::default(),
            changed: Condvar::new(),
        };
        std::thread::scope(|scope| {
            scope.spawn(|| conn.client_to_server());
            conn.server_to_client(shared);
        });
        conn.count_upstream(shared);
    }
    shared.unregister(server_id);
}

/// Where a connection stands; shared by its two relaying threads.
#[derive(Default)]
struct ConnState {
    /// The connection was cut: relay nothing more, drain the server.
    cut: bool,
    /// A stall began: relay nothing more until the client hangs up.
    stalled: bool,
    /// The client closed its side (or its socket failed).
    client_gone: bool,
    /// Client bytes relayed after the request line.
    sent: usize,
    /// A [`Fault::CutPush`] happened.
    push_cut: bool,
}

struct Conn {
    client: TcpStream,
    server: TcpStream,
    service: Service,
    fault: Option<Fault>,
    state: Mutex<ConnState>,
    changed: Condvar,
}

impl Conn {
    fn state(&self) -> std::sync::MutexGuard<'_, ConnState> {
        self.state.lock().expect("connection lock")
    }

    /// Ends the connection for the client now; the server gets an end of
    /// input and is drained by [`Conn::server_to_client`].
    fn cut(&self) {
        self.state().cut = true;
        self.changed.notify_all();
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Write);
    }

    fn counts_as(&self, fault: Fault) -> bool {
        self.fault == Some(fault) && fault.applies_to(self.service)
    }

    fn client_to_server(&self) {
        let mut buf = [0u8; 16 * 1024];
        let cut_at = match self.fault {
            Some(Fault::CutPush { after }) if self.service == Service::ReceivePack => Some(after),
            _ => None,
        };
        let mut client = &self.client;
        let mut server = &self.server;
        loop {
            let n = match client.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let (sent, stop) = {
                let st = self.state();
                (st.sent, st.cut || st.stalled)
            };
            if stop {
                // Cut or stalled: the client's bytes go nowhere.
                continue;
            }
            let mut chunk = &buf[..n];
            let mut cutting = false;
            if let Some(after) = cut_at {
                if sent + n > after {
                    chunk = &buf[..after.saturating_sub(sent)];
                    cutting = true;
                }
            }
            if server.write_all(chunk).is_err() {
                self.cut();
                break;
            }
            self.state().sent += chunk.len();
            if cutting {
                self.state().push_cut = true;
                self.cut();
                break;
            }
        }
        let pass_on_eof = {
            let mut st = self.state();
            st.client_gone = true;
            !st.cut && !st.stalled
        };
        self.changed.notify_all();
        if pass_on_eof {
            let _ = self.server.shutdown(Shutdown::Write);
        }
    }

    /// Relays the server's output until the server is done, applying the
    /// connection's fault; counts what happened.
    fn server_to_client(&self, shared: &Shared) {
        let mut buf = [0u8; 16 * 1024];
        let mut relayed = 0usize;
        let mut advert = AdvertisementEnd::default();
        let mut client = &self.client;
        let mut server = &self.server;
        let withhold_reply =
            self.counts_as(Fault::LosePushReply) || self.counts_as(Fault::StallPushReply);
        // The report withheld from the client (its start is enough to tell
        // `ok` from `ng`).
        let mut withheld: Vec<u8> = Vec::new();
        let mut reply_withheld = false;
        let _ = self.server.set_read_timeout(Some(LINGER));
        loop {
            let n = match server.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if self.state().cut {
                continue;
            }
            let mut chunk = &buf[..n];
            let mut then: Option<fn(&Conn, &Shared)> = None;
            match self.fault {
                Some(Fault::Stall { after }) if relayed + n > after => {
                    chunk = &buf[..after - relayed];
                    then = Some(Conn::stall);
                }
                Some(Fault::CutFetch { after })
                    if self.service == Service::UploadPack && relayed + n > after =>
                {
                    chunk = &buf[..after - relayed];
                    then = Some(|conn, shared| {
                        shared.count(|c| c.cut_mid_fetch += 1);
                        conn.cut();
                    });
                }
                _ if withhold_reply => {
                    let keep = advert.feed(chunk);
                    if keep < chunk.len() {
                        reply_withheld = true;
                        if withheld.len() < 64 * 1024 {
                            withheld.extend_from_slice(&chunk[keep..]);
                        }
                    }
                    chunk = &chunk[..keep];
                }
                _ => {}
            }
            relayed += chunk.len();
            if client.write_all(chunk).is_err() {
                // The client is gone; keep draining the server.
                let _ = self.server.shutdown(Shutdown::Write);
                self.state().cut = true;
                continue;
            }
            if let Some(then) = then {
                then(self, shared);
            }
        }
        // The server is done: everything it was sent has been applied or refused.
        if reply_withheld {
            if withheld.windows(8).any(|w| w == b"ok refs/") {
                shared.count(|c| c.unreported_updates += 1);
            }
            if self.counts_as(Fault::StallPushReply) {
                shared.count(|c| c.stalled_push_replies += 1);
                self.wait_for_client_or_limit(shared);
            } else {
                shared.count(|c| c.lost_push_replies += 1);
            }
        }
        let _ = self.client.shutdown(Shutdown::Both);
    }

    /// Stops relaying until the client hangs up, then cuts the connection.
    fn stall(&self, shared: &Shared) {
        shared.count(|c| c.stalled += 1);
        self.state().stalled = true;
        self.wait_for_client_or_limit(shared);
        self.cut();
    }

    fn wait_for_client_or_limit(&self, shared: &Shared) {
        let deadline = Instant::now() + shared.rates.stall_limit;
        let mut st = self.state();
        while !st.client_gone && !shared.stopping() && Instant::now() < deadline {
            st = self
                .changed
                .wait_timeout(st, STALL_POLL)
                .expect("connection lock")
                .0;
        }
    }

    fn count_upstream(&self, shared: &Shared) {
        if self.state().push_cut {
            shared.count(|c| c.cut_mid_push += 1);
        }
    }
}

/// Finds the end of a ref advertisement (its flush-pkt, `0000`) in a stream
/// of pkt-lines fed chunk by chunk.
#[derive(Default)]
struct AdvertisementEnd {
    header: Vec<u8>,
    skip: usize,
    done: bool,
}

impl AdvertisementEnd {
    /// How many leading bytes of `chunk` belong to the advertisement.
    fn feed(&mut self, chunk: &[u8]) -> usize {
        let mut i = 0;
        while i < chunk.len() && !self.done {
            if self.skip > 0 {
                let k = self.skip.min(chunk.len() - i);
                i += k;
                self.skip -= k;
                continue;
            }
            self.header.push(chunk[i]);
            i += 1;
            if self.header.len() == 4 {
                match pkt_len(&self.header) {
                    Some(n) if n >= 4 => self.skip = n - 4,
                    // A flush (or anything unexpected) ends the advertisement.
                    _ => self.done = true,
                }
                self.header.clear();
            }
        }
        i
    }
}
