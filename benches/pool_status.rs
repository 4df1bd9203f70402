//! How long `pool status` takes, and whether it grows with the lock
//! repository's history (issue 12: about what one put costs, whatever the
//! history). Run on demand (not in CI):
//!
//! ```text
//! cargo bench --bench pool_status          # 100 and 200 000 commits
//! POOL_BENCH_RUNS=50 cargo bench --bench pool_status
//! ```
//!
//! Each run is the real `pool status --json` executable against a bare
//! repository reached as a local path and through `git daemon` on loopback,
//! with one lock claimed by a build (so its claim must be found) and the
//! history padded with commits that touch a file outside the pool, on top of
//! the claim: the worst case, where the look-back ends before the claim.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{run_bin, run_bin_raw, GitDaemon, LockRepo};

fn status(uri: &str) -> Duration {
    let source = json!({"uri": uri, "branch": "main", "pool": "pool"}).to_string();
    let start = Instant::now();
    let run = run_bin_raw(
        "pool",
        &[Path::new("status"), Path::new("--json")],
        b"",
        &[("POOL_SOURCE", source.as_str())],
    );
    let took = start.elapsed();
    let st = run.assert_success().json();
    assert_eq!(st["pools"][0]["locks"].as_array().map(Vec::len), Some(2));
    took
}

fn millis(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn main() {
    let runs: usize = std::env::var("POOL_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    println!("pool status --json, {runs} runs each (ms)");
    println!(
        "{:<10} {:>9} {:>8} {:>8} {:>8} {:>11}",
        "transport", "history", "median", "p90", "min", "looked_back"
    );
    for history in [100usize, 200_000] {
        let repo = LockRepo::new("main");
        repo.add_lock("pool", "a", false, b"a");
        repo.add_lock("pool", "b", false, b"b");
        let inputs = tempfile::TempDir::new().expect("creating the inputs dir");
        let source =
            json!({"uri": repo.path().display().to_string(), "branch": "main", "pool": "pool"});
        run_bin(
            "out",
            &[inputs.path()],
            &json!({"source": source, "params": {"claim": "a"}}),
            &[("BUILD_ID", "1"), ("BUILD_NAME", "1")],
        )
        .assert_success();
        repo.add_commits(history);
        let daemon = GitDaemon::start(repo.root());
        for (transport, uri) in [
            ("local", repo.path().display().to_string()),
            ("git://", daemon.url("locks.git")),
        ] {
            status(&uri);
            let mut times: Vec<Duration> = (0..runs).map(|_| status(&uri)).collect();
            times.sort();
            let source = json!({"uri": uri, "branch": "main", "pool": "pool"}).to_string();
            let looked = run_bin_raw(
                "pool",
                &[Path::new("status"), Path::new("--json")],
                b"",
                &[("POOL_SOURCE", source.as_str())],
            )
            .json()["looked_back"]
                .clone();
            println!(
                "{:<10} {:>9} {:>8} {:>8} {:>8} {:>11}",
                transport,
                history,
                millis(times[times.len() / 2]),
                millis(times[times.len() * 9 / 10]),
                millis(times[0]),
                looked
            );
        }
    }
}
