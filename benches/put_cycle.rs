//! How long one acquire → release cycle takes, and whether it grows with the
//! lock repository's history. Run on demand (not in CI):
//!
//! ```text
//! cargo bench --bench put_cycle            # 100 and 200 000 commits
//! POOL_BENCH_CYCLES=50 cargo bench --bench put_cycle
//! ```
//!
//! Each cycle runs the real `out` executable twice (acquire, then release),
//! as Concourse would, against a bare repository reached as a local path and
//! through `git daemon` on loopback. The history is padded with commits that
//! touch a file outside the pool.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{run_bin, GitDaemon, LockRepo};

fn cycle(uri: &str, inputs: &std::path::Path) -> Duration {
    let source = json!({"uri": uri, "branch": "main", "pool": "pool"});
    let start = Instant::now();
    let out = run_bin(
        "out",
        &[inputs],
        &json!({"source": source, "params": {"acquire": true}}),
        &[],
    );
    let acquired = out.assert_success().json();
    let name = acquired["metadata"][0]["value"]
        .as_str()
        .expect("lock name");
    let held = inputs.join("held");
    std::fs::create_dir_all(&held).expect("creating the lock dir");
    std::fs::write(held.join("name"), name).expect("writing the lock name");
    run_bin(
        "out",
        &[inputs],
        &json!({"source": source, "params": {"release": "held"}}),
        &[],
    )
    .assert_success();
    start.elapsed()
}

fn millis(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn main() {
    let cycles: usize = std::env::var("POOL_BENCH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    println!("acquire+release cycle, {cycles} cycles each (ms)");
    println!(
        "{:<10} {:>9} {:>8} {:>8} {:>8}",
        "transport", "history", "median", "p90", "min"
    );
    for history in [100usize, 200_000] {
        let repo = LockRepo::new("main");
        repo.add_lock("pool", "a", false, b"a");
        repo.add_lock("pool", "b", false, b"b");
        repo.add_commits(history);
        let daemon = GitDaemon::start(repo.root());
        let inputs = tempfile::TempDir::new().expect("creating the inputs dir");
        for (transport, uri) in [
            ("local", repo.path().display().to_string()),
            ("git://", daemon.url("locks.git")),
        ] {
            cycle(&uri, inputs.path());
            let mut times: Vec<Duration> =
                (0..cycles).map(|_| cycle(&uri, inputs.path())).collect();
            times.sort();
            println!(
                "{:<10} {:>9} {:>8} {:>8} {:>8}",
                transport,
                history,
                millis(times[times.len() / 2]),
                millis(times[times.len() * 9 / 10]),
                millis(times[0])
            );
        }
    }
}
