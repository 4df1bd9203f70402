//! What `/annotations.json` costs over a lock repository with 200 000
//! commits older than the look-back against one of 100 commits, with the
//! same recent activity (issue 26: the cost must not grow with the
//! repository's age). Run on demand (not in CI):
//!
//! ```text
//! cargo bench --bench annotations          # 100 and 200 000 commits
//! POOL_BENCH_RUNS=50 cargo bench --bench annotations
//! ```
//!
//! Both repositories have pool `pool` (locks a to d) added 31 days ago and,
//! in the last ten hours, 20 builds' claims and releases (40 commits, with
//! the Go resource's `Build URL:` line) and filler up to 100 recent commits;
//! the large one has 200 000 commits from 30 days ago between the two,
//! made by `git fast-import`. Measured in-process, as `pool serve` does:
//!
//! - `read`: [`watch::read_all`] on an open store, what each refresh does
//!   when the tip moved (status, history, operator events, metadata);
//! - `answer`: [`annotations::answer`] for the last 6 hours, what each
//!   `GET /annotations.json` does (from the read kept in memory).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use pool_resource::config::Source;
use pool_resource::operator::annotations::{self, Query};
use pool_resource::operator::watch;
use pool_resource::process::clock::now_unix;
use pool_resource::process::log::Log;
use pool_resource::process::signal::Interrupt;
use pool_resource::protocol::RawRequest;
use pool_resource::store::git::GitStore;
use pool_resource::store::seam::{Cache, Identity, LockStore};
use serde_json::json;
use support::LockRepo;

const DAY: i64 = 86_400;
const LOCKS: [&str; 4] = ["a", "b", "c", "d"];

fn repository(old: usize) -> LockRepo {
    let repo = LockRepo::new("main");
    let now = now_unix();
    for l in LOCKS {
        let path = format!("pool/unclaimed/{l}");
        repo.commit_changes_at(
            &[(path.as_str(), l.as_bytes())],
            &[],
            &format!("adding: {l}"),
            Some(now - 31 * DAY),
        );
    }
    if old > 0 {
        repo.add_commits_at(old, (now - 30 * DAY) as u64);
    }
    for i in 0..20i64 {
        let lock = LOCKS[i as usize % LOCKS.len()];
        let at = now - 10 * 3600 + i * 1500;
        let url = format!(
            "Build URL: https://ci.example.com/teams/main/pipelines/app/jobs/deploy/builds/{i}\n"
        );
        repo.move_lock_at("pool", lock, true, at, &url);
        repo.move_lock_at("pool", lock, false, at + 600, &url);
    }
    repo.add_commits(100 - LOCKS.len() - 40);
    repo
}

fn open(repo: &LockRepo) -> Box<dyn LockStore> {
    let request = json!({"source": {"uri": repo.path().display().to_string(), "branch": "main", "pool": "pool"}});
    let request = RawRequest::parse(request.to_string().as_bytes()).expect("request");
    let source = Source::from_request(&request).expect("source");
    Box::new(
        GitStore::open(
            &source,
            Identity::default(),
            Cache::Fresh,
            Log::new(Box::new(std::io::sink())),
            Interrupt::default(),
        )
        .expect("opening the git store"),
    )
}

fn millis(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn timed<T>(runs: usize, mut f: impl FnMut() -> T) -> (Vec<Duration>, T) {
    let mut last = f();
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            last = f();
            start.elapsed()
        })
        .collect();
    times.sort();
    (times, last)
}

fn main() {
    let runs: usize = std::env::var("POOL_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    println!("/annotations.json, last 6 hours, {runs} runs each (ms)");
    println!(
        "{:<7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>12}",
        "what", "commits", "median", "p90", "min", "holds", "history_read"
    );
    for old in [0usize, 200_000] {
        let repo = repository(old);
        let total = repo.git_out(&["rev-list", "--count", "main"]);
        let mut store = open(&repo);
        let (times, read) = timed(runs, || {
            watch::read_all(store.as_mut(), "main", None).expect("reading the repository")
        });
        let row = |what: &str, times: &[Duration], holds: usize| {
            println!(
                "{:<7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>12}",
                what,
                total.trim(),
                millis(times[times.len() / 2]),
                millis(times[times.len() * 9 / 10]),
                millis(times[0]),
                holds,
                format!("{}d", (read.status.now - read.annotations.read_from) / DAY)
            );
        };
        row("read", &times, read.history.len());
        let now = now_unix();
        let q = Query {
            from: (now - 6 * 3600) * 1000,
            to: now * 1000,
            ..Query::default()
        };
        let (times, found) = timed(runs * 10, || annotations::answer(&read, "locks", &q, now));
        row("answer", &times, found.len());
    }
}
