//! How fast a released lock reaches the build waiting for it, and how many
//! reads the waiters cost the server (issue 18: the waiting room). Run on
//! demand (not in CI):
//!
//! ```text
//! cargo bench --bench handover
//! POOL_BENCH_HANDOVERS=10 POOL_BENCH_WINDOW_SECS=120 cargo bench --bench handover
//! ```
//!
//! Everything goes over `git daemon` on loopback, with the default
//! `retry_delay` (10 s) and `waiter_lease` (5 m), in a pool of one lock.
//!
//! **Hand-over latency.** A holder holds the lock and one waiter (the real
//! `out`, `acquire: true`) waits for it; once the waiter has logged that it
//! waits, the holder keeps the lock a random while longer (uniform below
//! `retry_delay`, seeded: a real holder does not release in step with the
//! waiter's looks) and releases it with the real `out`. A thread polls the
//! bare repository's branch every 2 ms and notes when each commit became
//! the tip; the hand-over is from the release commit to the waiter's claim
//! commit, both as the server has them. The waiter then holds the lock for
//! the next round. Once with the line (the default), once with
//! `queue: false` (polling every `retry_delay`, as before the line).
//!
//! **Reads per minute.** A counting proxy ([`support::faults::FaultProxy`]
//! injecting nothing) sits in front of the daemon; every `git://` fetch,
//! ref listing or push is one TCP connection through it. With the lock
//! held, N waiters join; once all of them are waiting, the connections
//! over a fixed window are counted, less the pushes (the commits the branch
//! gained in the window), and given per minute.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::faults::{FaultProxy, Rates};
use support::{run_bin, spawn_bin, GitDaemon, LockRepo};

const POOL: &str = "pool";
const LOCK: &str = "a";
/// The default `retry_delay`, which the benchmark does not set.
const RETRY_DELAY: Duration = Duration::from_secs(10);
/// Longer than any put here should wait.
const DEADLINE: Duration = Duration::from_secs(60);

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn build_env(name: &str) -> Vec<(String, String)> {
    [
        ("BUILD_ID", format!("10{name}")),
        ("BUILD_NAME", name.to_string()),
        ("BUILD_JOB_NAME", "deploy".into()),
        ("BUILD_PIPELINE_NAME", "app".into()),
        ("BUILD_TEAM_NAME", "main".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn source(uri: &str, queue: bool) -> Value {
    let mut src = json!({"uri": uri, "branch": "main", "pool": POOL});
    if !queue {
        src["queue"] = json!(false);
    }
    src
}

/// An `acquire: true` put running in the background, its stderr collected.
struct Waiter {
    child: Child,
    stderr: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Waiter {
    fn start(src: &Value, name: &str, inputs: &Path) -> Waiter {
        let env = build_env(name);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let request = json!({"source": src, "params": {"acquire": true}});
        let mut child = spawn_bin("out", &[inputs], &request, &env);
        let pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().expect("stderr buffer");
                s.push_str(&line);
                s.push('\n');
            }
        });
        Waiter {
            child,
            stderr,
            reader: Some(reader),
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr buffer").clone()
    }

    /// Waits until the put logged that it waits (with the line: after its
    /// ticket was committed).
    fn until_waiting(&mut self) {
        let start = Instant::now();
        while !self.stderr().contains("waiting: ") {
            let running = self.child.try_wait().expect("polling").is_none();
            assert!(
                running && start.elapsed() < DEADLINE,
                "the waiter did not wait:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the put to end with a lock; returns its commit.
    fn claimed(mut self) -> String {
        let start = Instant::now();
        while self.child.try_wait().expect("polling").is_none() {
            assert!(
                start.elapsed() < DEADLINE,
                "the waiter was not served:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let status = self.child.wait().expect("status");
        let mut stdout = String::new();
        if let Some(mut pipe) = self.child.stdout.take() {
            pipe.read_to_string(&mut stdout).expect("stdout");
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        assert!(status.success(), "the waiter failed:\n{}", self.stderr());
        let out: Value = serde_json::from_str(&stdout).expect("one JSON document");
        out["version"]["ref"]
            .as_str()
            .expect("version.ref")
            .to_string()
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Notes when each commit became the branch tip of the bare repository.
struct TipWatch {
    seen: Arc<Mutex<Vec<(String, Instant)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TipWatch {
    fn start(repo: &Path) -> TipWatch {
        let git = git2::Repository::open_bare(repo).expect("opening the bare repository");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut last = None;
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(tip) = git.refname_to_id("refs/heads/main") {
                        if last != Some(tip) {
                            last = Some(tip);
                            let at = Instant::now();
                            seen.lock().expect("seen").push((tip.to_string(), at));
                        }
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        TipWatch {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// When `commit` became the tip.
    fn when(&self, commit: &str) -> Instant {
        let start = Instant::now();
        loop {
            let seen = self.seen.lock().expect("seen");
            if let Some((_, at)) = seen.iter().find(|(c, _)| c == commit) {
                return *at;
            }
            drop(seen);
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "commit {commit} was never seen at the tip"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for TipWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Releases the lock with the real `out`; returns the release commit.
fn release(src: &Value, inputs: &Path) -> String {
    let held = inputs.join("held");
    std::fs::create_dir_all(&held).expect("creating the lock dir");
    std::fs::write(held.join("name"), LOCK).expect("writing the lock name");
    let env = build_env("holder");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = run_bin(
        "out",
        &[inputs],
        &json!({"source": src, "params": {"release": "held"}}),
        &env,
    );
    out.assert_success().json()["version"]["ref"]
        .as_str()
        .expect("version.ref")
        .to_string()
}

/// `rounds` hand-overs of the one lock; each one's latency.
fn handovers(queue: bool, rounds: usize, rng: &mut fastrand::Rng) -> Vec<Duration> {
    let repo = LockRepo::new("main");
    repo.add_lock(POOL, LOCK, false, b"a");
    let daemon = GitDaemon::start(repo.root());
    let src = source(&daemon.url("locks.git"), queue);
    let inputs = tempfile::TempDir::new().expect("creating the inputs dir");
    let watch = TipWatch::start(repo.path());
    Waiter::start(&src, "0", inputs.path()).claimed();
    (1..=rounds)
        .map(|i| {
            let mut waiter = Waiter::start(&src, &i.to_string(), inputs.path());
            waiter.until_waiting();
            std::thread::sleep(RETRY_DELAY.mul_f64(rng.f64()));
            let released = release(&src, inputs.path());
            let claimed = waiter.claimed();
            watch.when(&claimed) - watch.when(&released)
        })
        .collect()
}

/// Connections and pushes the server sees in `window` while `waiters`
/// wait on the held lock.
fn reads(queue: bool, waiters: usize, window: Duration) -> (usize, usize) {
    let repo = LockRepo::new("main");
    repo.add_lock(POOL, LOCK, true, b"a");
    let daemon = GitDaemon::start(repo.root());
    let proxy = FaultProxy::start(daemon.port(), Rates::none());
    let src = source(&proxy.url("locks.git"), queue);
    let inputs = tempfile::TempDir::new().expect("creating the inputs dir");
    let mut running: Vec<Waiter> = (0..waiters)
        .map(|i| {
            let mut w = Waiter::start(&src, &format!("w{i}"), inputs.path());
            w.until_waiting();
            w
        })
        .collect();
    let before = (proxy.counts().connections, repo.tip());
    std::thread::sleep(window);
    let after = (proxy.counts().connections, repo.tip());
    let pushes = repo
        .git_out(&["rev-list", "--count", &format!("{}..{}", before.1, after.1)])
        .trim()
        .parse::<usize>()
        .expect("a commit count");
    for w in &mut running {
        assert!(
            w.child.try_wait().expect("polling").is_none(),
            "a waiter ended:\n{}",
            w.stderr()
        );
    }
    (after.0 - before.0, pushes)
}

fn millis(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn mode(queue: bool) -> &'static str {
    if queue {
        "line (default)"
    } else {
        "queue: false"
    }
}

fn main() {
    let rounds = env_number("POOL_BENCH_HANDOVERS", 5).max(1) as usize;
    let window = Duration::from_secs(env_number("POOL_BENCH_WINDOW_SECS", 60).max(1));
    let mut rng = fastrand::Rng::with_seed(env_number("POOL_BENCH_SEED", 18));
    println!("load average at start: {}", load());
    println!(
        "hand-over over git:// on loopback, retry_delay 10s (default), {rounds} hand-overs each (ms)"
    );
    println!(
        "{:<15} {:>8} {:>8} {:>8}  all",
        "mode", "median", "max", "min"
    );
    for queue in [true, false] {
        let times = handovers(queue, rounds, &mut rng);
        let mut sorted = times.clone();
        sorted.sort();
        println!(
            "{:<15} {:>8} {:>8} {:>8}  {}",
            mode(queue),
            millis(sorted[sorted.len() / 2]),
            millis(sorted[sorted.len() - 1]),
            millis(sorted[0]),
            times
                .iter()
                .map(|t| millis(*t))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    println!(
        "reads the server sees while waiters wait on a held lock, {}s window",
        window.as_secs()
    );
    println!(
        "{:<15} {:>7} {:>11} {:>6} {:>9}",
        "mode", "waiters", "connections", "pushes", "reads/min"
    );
    for queue in [true, false] {
        for waiters in [1, 8] {
            let (connections, pushes) = reads(queue, waiters, window);
            let per_minute = (connections - pushes) as f64 * 60.0 / window.as_secs_f64();
            println!(
                "{:<15} {:>7} {:>11} {:>6} {:>9.1}",
                mode(queue),
                waiters,
                connections,
                pushes,
                per_minute
            );
        }
    }
    println!("load average at end: {}", load());
}
