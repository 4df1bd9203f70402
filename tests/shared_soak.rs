//! Readers and writers mixed, through a faulty network, then the history
//! replayed with the rules of shared holds: no exclusive claim while a
//! share is held, no share while an exclusive claim is held, the order of
//! the line (a reader waits only behind writers ahead, a writer behind
//! everyone), every share given back by its holder, and the shares file at
//! every commit saying exactly who holds what.
//!
//! `POOL_SHARED_SOAK_SEEDS` (comma-separated) and
//! `POOL_SHARED_SOAK_SECONDS` run it longer, `POOL_SHARED_SOAK_EXPIRE`
//! (a duration) with `expire_after`; CI runs the short version.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pool_resource::model::line::{Asker, Line};
use pool_resource::model::message::{Parsed, Trailer};
use pool_resource::model::names::{LockName, PoolPath};
use pool_resource::model::shares::Shares;
use serde_json::{json, Value};

use crate::support::faults::{FaultProxy, Rates};
use crate::support::{run_bin, spawn_bin, Bg, CommitInfo, GitDaemon, LockRepo};
use crate::{lock_name, version, Inputs};

const POOL: &str = "envs";
const LOCKS: [&str; 2] = ["a", "b"];
/// Longer than any put here may take, waits included.
const PUT_DEADLINE: Duration = Duration::from_secs(180);

/// Random faults on about one connection in six.
fn flaky(seed: u64) -> Rates {
    Rates {
        seed,
        drop_at_accept: 0.04,
        stall: 0.01,
        cut_fetch: 0.04,
        cut_push: 0.05,
        lose_push_reply: 0.05,
        ..Rates::none()
    }
}

/// A lock's state in the replay.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Held {
    Free,
    /// Claimed alone, by this build id.
    Alone(String),
    /// Held shared: holder id → build id.
    Shared(BTreeMap<String, String>),
}

/// What one put asked for, for the order check.
#[derive(Clone, Debug, Default)]
struct Asked {
    priority: i64,
}

/// Replays `log` (after its base `log[0]`) with the rules of shared holds;
/// every broken rule is one line of the result.
fn replay_shared(
    repo: &LockRepo,
    log: &[CommitInfo],
    asked: &HashMap<String, Asked>,
) -> Vec<String> {
    let pool = PoolPath::new(POOL).expect("a pool name");
    let line_path = Line::path(&pool);
    let shares_path = Shares::path(&pool);
    let mut held: BTreeMap<String, Held> =
        LOCKS.iter().map(|l| (l.to_string(), Held::Free)).collect();
    let mut bad = Vec::new();
    let line_at = |sha: &str| {
        repo.file_at(sha, &line_path)
            .map(|b| Line::parse(&b))
            .unwrap_or_default()
    };
    for (i, c) in log.iter().enumerate().skip(1) {
        let parent = &log[i - 1];
        let parsed = Parsed::new(&c.body);
        let at = format!("{} ({})", &c.sha[..10], c.subject);
        let pool_paths: Vec<&String> = c
            .changed
            .iter()
            .map(|(_, p)| p)
            .filter(|p| p.starts_with(&format!("{POOL}/")))
            .collect();
        let Some((verb, locks)) = parsed.locks() else {
            if !c
                .changed
                .iter()
                .all(|(_, p)| p.starts_with(".pool-resource/line/"))
            {
                bad.push(format!("{at} changes more than the line: {:?}", c.changed));
            }
            continue;
        };
        let [lock] = locks.as_slice() else {
            bad.push(format!("{at} moves several locks"));
            continue;
        };
        let lock = lock.to_string();
        let share = parsed.trailer(Trailer::Share).map(str::to_string);
        let build = parsed.trailer(Trailer::BuildId).unwrap_or("").to_string();
        // An operator, or a put ending an expired claim or share
        // (`expire_after`), may end a hold that is not its own.
        let operator = parsed.trailer(Trailer::Operator).is_some()
            || parsed
                .trailer(Trailer::Reason)
                .is_some_and(|r| r.starts_with("expired: "));
        let before = held.get(&lock).cloned().unwrap_or(Held::Free);
        let moves = !pool_paths.is_empty();
        // The order of the line, for every claim and share.
        if matches!(verb.as_str(), "claiming" | "sharing") {
            let line = line_at(&parent.sha);
            let free: BTreeSet<LockName> = held
                .iter()
                .filter(|(_, h)| **h == Held::Free)
                .map(|(l, _)| LockName::new(l).expect("a lock"))
                .collect();
            let shared: BTreeSet<LockName> = held
                .iter()
                .filter(|(_, h)| matches!(h, Held::Shared(_)))
                .map(|(l, _)| LockName::new(l).expect("a lock"))
                .collect();
            let ticket = line
                .tickets
                .iter()
                .find(|t| t.build_id.as_deref() == Some(build.as_str()));
            let asker = match ticket {
                Some(t) => Asker::Ticket(&t.id),
                None => Asker::Newcomer {
                    priority: asked.get(&build).map_or(0, |a| a.priority),
                },
            };
            let l = LockName::new(&lock).expect("a lock");
            let (from, to) = (parent.committer_time, c.committer_time);
            let seconds: Vec<i64> = if to - from <= 60 {
                (from..=to).collect()
            } else {
                vec![from, to]
            };
            // Who waited ahead of the put: the line's order (priority,
            // then joining), live at some second of the window.
            let writer_ahead_every_second = share.is_some()
                && shared.contains(&l)
                && seconds.iter().all(|now| {
                    line.ahead_of(asker, *now)
                        .iter()
                        .any(|t| !t.shared && t.wants.could_use(&l))
                });
            if writer_ahead_every_second {
                bad.push(format!(
                    "{at} by {build} joined {lock}, held shared, while a writer ahead in line waited for it; line: {:?}",
                    line.tickets
                ));
            }
            // Which free locks tickets ahead keep: the line's reservation
            // (by tiers, tested on its own in the races' replay).
            let kept_every_second = seconds.iter().all(|now| {
                let k = line.kept_from(asker, share.is_some(), &free, &shared, *now);
                k.owners.contains_key(&l) || k.closed.contains_key(&l)
            });
            if kept_every_second {
                bad.push(format!(
                    "{at} by {build} took {lock}, kept for a waiter ahead (shared: {}); line: {:?}",
                    share.is_some(),
                    line.tickets
                ));
            }
        }
        let after = match (verb.as_str(), &share, &before) {
            ("claiming", None, Held::Free) if moves => Held::Alone(build.clone()),
            ("claiming", Some(id), Held::Free) if moves => {
                Held::Shared([(id.clone(), build.clone())].into())
            }
            ("sharing", Some(id), Held::Shared(h)) if !moves && !h.contains_key(id) => {
                let mut h = h.clone();
                h.insert(id.clone(), build.clone());
                Held::Shared(h)
            }
            ("unsharing", Some(id), Held::Shared(h))
                if !moves && h.len() > 1 && (h.get(id) == Some(&build) || operator) =>
            {
                let mut h = h.clone();
                h.remove(id);
                Held::Shared(h)
            }
            ("unclaiming", Some(id), Held::Shared(h))
                if moves && h.len() == 1 && (h.get(id) == Some(&build) || operator) =>
            {
                Held::Free
            }
            ("unclaiming", None, Held::Alone(owner)) if moves && (*owner == build || operator) => {
                Held::Free
            }
            // An operator's release of every holder (one Share trailer each).
            ("unclaiming", _, Held::Shared(_)) if moves && operator => Held::Free,
            _ => {
                bad.push(format!(
                    "{at} by build {build:?} (share {share:?}) is not allowed on {lock} while it is {before:?}"
                ));
                before.clone()
            }
        };
        held.insert(lock.clone(), after);
        // The shares file says exactly who holds what.
        let file = repo
            .file_at(&c.sha, &shares_path)
            .map(|b| Shares::parse(&b))
            .unwrap_or_default();
        for (l, h) in &held {
            let want: BTreeSet<&str> = match h {
                Held::Shared(ids) => ids.keys().map(String::as_str).collect(),
                _ => BTreeSet::new(),
            };
            let have: BTreeSet<&str> = file
                .holders(&LockName::new(l).expect("a lock"))
                .iter()
                .map(|h| h.id.as_str())
                .collect();
            if want != have {
                bad.push(format!(
                    "{at}: the shares file has {have:?} for {l}, the history {want:?}"
                ));
            }
        }
    }
    for (l, h) in &held {
        if *h != Held::Free {
            bad.push(format!("lock {l} is still held at the end: {h:?}"));
        }
    }
    bad
}

/// One worker: puts shared or exclusive, perhaps aborted, then the get,
/// a short hold and the release of what it got.
struct Worker<'a> {
    w: usize,
    src: Value,
    direct: &'a Value,
    repo: &'a LockRepo,
    rng: fastrand::Rng,
    asked: &'a Mutex<HashMap<String, Asked>>,
    served: &'a Mutex<Vec<(bool, Duration)>>,
    bad: &'a Mutex<Vec<String>>,
}

impl Worker<'_> {
    fn env(id: &str) -> Vec<(&'static str, String)> {
        vec![
            ("BUILD_ID", id.to_string()),
            ("BUILD_NAME", id.to_string()),
            ("BUILD_JOB_NAME", "job".into()),
            ("BUILD_PIPELINE_NAME", "soak".into()),
            ("BUILD_TEAM_NAME", "main".into()),
            ("POOL_RESOURCE_BACKOFF_BASE_MS", "30".into()),
            ("POOL_RESOURCE_GIT_TIMEOUT_MS", "1000".into()),
        ]
    }

    fn out(
        &self,
        id: &str,
        params: &Value,
        inputs: &Inputs,
        term_after: Option<Duration>,
    ) -> crate::support::Run {
        let env = Self::env(id);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let request = json!({"source": self.src, "params": params});
        let mut bg = Bg::new(
            spawn_bin("out", &[inputs.path()], &request, &env),
            id.to_string(),
            PUT_DEADLINE,
        );
        if let Some(after) = term_after {
            let start = Instant::now();
            while bg.running() && start.elapsed() < after {
                std::thread::sleep(Duration::from_millis(10));
            }
            if bg.running() {
                bg.signal("TERM");
            }
        }
        bg.finish()
    }

    fn cycle(&mut self, c: usize) {
        let id = format!("w{}c{c}", self.w);
        let shared = self.rng.f64() < 0.6;
        let mut params = if self.rng.bool() {
            json!({"acquire": true})
        } else {
            json!({"claim": LOCKS[self.rng.usize(..LOCKS.len())]})
        };
        if shared {
            params["shared"] = json!(true);
        }
        let priority = if self.rng.f64() < 0.2 { 1 } else { 0 };
        params["priority"] = json!(priority);
        if self.rng.f64() < 0.2 {
            params["wait_timeout"] = json!("3s");
        }
        self.asked
            .lock()
            .expect("asked")
            .insert(id.clone(), Asked { priority });
        let term = (self.rng.f64() < 0.15).then(|| Duration::from_millis(self.rng.u64(50..3000)));
        let inputs = Inputs::new();
        let started = Instant::now();
        let run = self.out(&id, &params, &inputs, term);
        let (ok, stdout, stderr) = run.parts();
        if !ok {
            if stderr.contains("panicked") {
                self.bad
                    .lock()
                    .expect("bad")
                    .push(format!("{id} panicked:\n{stderr}"));
            }
            // A put that failed must hold nothing.
            if let Some(left) = self.left_by(&id) {
                self.bad
                    .lock()
                    .expect("bad")
                    .push(format!("{id} exited non-zero holding {left}:\n{stderr}"));
            }
            return;
        }
        self.served
            .lock()
            .expect("served")
            .push((shared, started.elapsed()));
        let out: Value = serde_json::from_str(&stdout).expect("one JSON document");
        let dest = inputs.path().join("held");
        let expiring = self.direct.get("expire_after").is_some();
        let get = run_bin(
            "in",
            &[dest.as_path()],
            &json!({"source": self.direct, "version": {"ref": version(&out)}}),
            &[],
        );
        // With expire_after a writer may have ended the hold already.
        if expiring && get.stderr.contains("no longer acquired") {
            return;
        }
        get.assert_success();
        assert_eq!(
            dest.join("share").exists(),
            shared,
            "{id}: in writes share for a shared hold only"
        );
        assert_eq!(
            std::fs::read_to_string(dest.join("name"))
                .unwrap_or_default()
                .trim(),
            lock_name(&out)
        );
        std::thread::sleep(Duration::from_millis(self.rng.u64(50..600)));
        for attempt in 1..=8 {
            let _ = attempt;
            let run = self.out(&id, &json!({"release": "held"}), &inputs, None);
            if run.status.success() {
                return;
            }
            if run.stderr.contains("refusing to release") && expiring {
                // A writer gave the hold back after expire_after; the
                // replay says whether it was expired when it did.
                return;
            }
            if run.stderr.contains("refusing to release") {
                self.bad.lock().expect("bad").push(format!(
                    "{id}: its own release was refused:\n{}",
                    run.stderr
                ));
                return;
            }
        }
        self.bad
            .lock()
            .expect("bad")
            .push(format!("{id}: 8 releases failed"));
    }

    /// What build `id` holds at the tip, if anything: `lock (how)`.
    fn left_by(&self, id: &str) -> Option<String> {
        let pool = PoolPath::new(POOL).expect("a pool");
        let shares = self
            .repo
            .file_at("master", &Shares::path(&pool))
            .map(|b| Shares::parse(&b))
            .unwrap_or_default();
        for (lock, holders) in &shares.locks {
            if holders.iter().any(|h| h.build_id.as_deref() == Some(id)) {
                return Some(format!("a share of {lock}"));
            }
        }
        // An exclusive claim of its that no later commit changed.
        let log = self.repo.log();
        let mut mine = None;
        for (i, c) in log.iter().enumerate() {
            let p = Parsed::new(&c.body);
            if p.trailer(Trailer::BuildId) == Some(id)
                && p.trailer(Trailer::Share).is_none()
                && p.verb().is_some_and(|(v, _)| v.as_str() == "claiming")
            {
                mine = p.locks().map(|(_, ls)| (ls.join(", "), i));
            }
        }
        let (locks, i) = mine?;
        let changed_since = log[i + 1..].iter().any(|c| {
            Parsed::new(&c.body)
                .locks()
                .is_some_and(|(_, ls)| locks.split(", ").any(|l| ls.contains(&l)))
        });
        (!changed_since).then_some(locks)
    }
}

/// A pool of [`LOCKS`], all free, and the commit that made it.
fn soak_pool() -> (LockRepo, String) {
    let repo = LockRepo::new("master");
    for l in LOCKS {
        repo.add_lock(POOL, l, false, format!("{l}-meta").as_bytes());
    }
    let base = repo.tip();
    (repo, base)
}

fn soak(seed: u64, seconds: u64, workers: usize) -> Vec<String> {
    let (repo, base) = soak_pool();
    let daemon = GitDaemon::start(repo.root());
    let mut direct = json!({"uri": daemon.url("locks.git"), "branch": "master", "pool": POOL, "retry_delay": "200ms"});
    // `POOL_SHARED_SOAK_EXPIRE=2s`: writers give back shares held longer.
    if let Ok(expire) = std::env::var("POOL_SHARED_SOAK_EXPIRE") {
        direct["expire_after"] = json!(expire);
    }
    let proxies: Vec<FaultProxy> = (0..workers)
        .map(|w| FaultProxy::start(daemon.port(), flaky(seed.wrapping_add(w as u64))))
        .collect();
    let asked = Mutex::new(HashMap::new());
    let served = Mutex::new(Vec::new());
    let bad = Mutex::new(Vec::new());
    let until = Instant::now() + Duration::from_secs(seconds);
    std::thread::scope(|s| {
        for (w, proxy) in proxies.iter().enumerate() {
            let mut src = direct.clone();
            src["uri"] = json!(proxy.url("locks.git"));
            let mut worker = Worker {
                w,
                src,
                direct: &direct,
                repo: &repo,
                rng: fastrand::Rng::with_seed(seed.wrapping_mul(31).wrapping_add(w as u64)),
                asked: &asked,
                served: &served,
                bad: &bad,
            };
            s.spawn(move || {
                let mut c = 0;
                while Instant::now() < until {
                    worker.cycle(c);
                    c += 1;
                }
            });
        }
    });
    let log = repo.log();
    let start = log
        .iter()
        .position(|c| c.sha == base)
        .expect("the base on the branch");
    let log = &log[start..];
    let asked = asked.into_inner().expect("asked");
    let mut bad = bad.into_inner().expect("bad");
    bad.extend(replay_shared(&repo, log, &asked));
    // A free lock, a live waiter that could take it, nobody taking it.
    let ended = log.last().map_or(0, |c| c.committer_time);
    let stall = crate::races::longest_stall(&repo, log, &LOCKS, ended);
    if stall.seconds > crate::races::stall_bound(None) {
        bad.push(format!("seed {seed}: a stall past the bound: {stall}"));
    }
    let expiries = log
        .iter()
        .filter(|c| c.body.contains("Pool-Resource-Reason: expired: "))
        .count();
    let served = served.into_inner().expect("served");
    let shares = log
        .iter()
        .filter(|c| c.subject.starts_with("sharing:"))
        .count();
    let longest = |shared: bool| {
        served
            .iter()
            .filter(|(s, _)| *s == shared)
            .map(|(_, d)| *d)
            .max()
            .unwrap_or_default()
    };
    eprintln!(
        "shared soak, seed {seed}: {} commits, {} puts served ({} shared, {} joined a lock held shared), {expiries} expiries, longest wait: reader {:?}, writer {:?}, longest stall {}s; {} violations",
        log.len() - 1,
        served.len(),
        served.iter().filter(|(s, _)| *s).count(),
        shares,
        longest(true),
        longest(false),
        stall.seconds,
        bad.len()
    );
    assert!(
        served.iter().any(|(s, _)| *s) && served.iter().any(|(s, _)| !*s) && shares > 0,
        "seed {seed}: the soak must serve readers, writers and readers together"
    );
    bad
}

fn seeds(default: &[u64]) -> Vec<u64> {
    std::env::var("POOL_SHARED_SOAK_SEEDS")
        .ok()
        .map(|s| {
            s.split(',')
                .filter_map(|x| x.trim().parse().ok())
                .collect::<Vec<u64>>()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

fn seconds(default: u64) -> u64 {
    std::env::var("POOL_SHARED_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
fn readers_and_writers_mixed_through_a_faulty_network_keep_every_rule_of_shared_holds() {
    let mut all = Vec::new();
    for seed in seeds(&[3, 17]) {
        all.extend(soak(seed, seconds(20), 4));
    }
    assert!(
        all.is_empty(),
        "{} violations:\n{}",
        all.len(),
        all.join("\n")
    );
}

#[test]
fn the_shared_replay_rejects_a_claim_under_readers_and_a_reader_giving_back_anothers_share() {
    let (repo, base) = soak_pool();
    let src =
        json!({"uri": repo.file_url(), "branch": "master", "pool": POOL, "retry_delay": "50ms"});
    let inputs = Inputs::new();
    let env = |id: &'static str| vec![("BUILD_ID", id), ("BUILD_NAME", id)];
    let r1 = crate::put(
        &src,
        json!({"claim": "a", "shared": true}),
        &inputs,
        &env("r1"),
    );
    crate::put(
        &src,
        json!({"claim": "a", "shared": true}),
        &inputs,
        &env("r2"),
    );
    let r1_id = r1["metadata"]
        .as_array()
        .and_then(|m| m.iter().find(|x| x["name"] == "share"))
        .and_then(|x| x["value"].as_str())
        .expect("out names the share")
        .to_string();
    // By hand, as a broken tool would: build w9 gives back r1's share
    // (the shares file rewritten without it), then claims "a" alone under
    // the remaining reader (a commit moving nothing but saying so).
    let path = Shares::path(&PoolPath::new(POOL).expect("pool"));
    let file = Shares::parse(&repo.file_at("HEAD", &path).expect("the shares file"));
    let without = file.after(
        &pool_resource::model::shares::ShareEdit::Leave {
            lock: LockName::new("a").expect("lock"),
            id: r1_id.clone(),
        },
        None,
    );
    repo.commit_file(
        &path,
        &without.to_bytes().expect("r2 still holds"),
        &format!("unsharing: a\n\nPool-Resource-Share: {r1_id}\nPool-Resource-Build-Id: w9"),
    );
    repo.commit_file("x", b"x", "claiming: a\n\nPool-Resource-Build-Id: w9");
    let log = repo.log();
    let start = log.iter().position(|c| c.sha == base).expect("base");
    let bad = replay_shared(&repo, &log[start..], &HashMap::new());
    assert!(
        bad.iter().any(|b| b.contains("unsharing: a")
            && b.contains("\"w9\"")
            && b.contains("not allowed")),
        "{bad:#?}"
    );
    assert!(
        bad.iter()
            .any(|b| b.contains("claiming: a") && b.contains("not allowed")),
        "{bad:#?}"
    );
}

#[test]
fn the_shared_replay_rejects_a_reader_joining_while_a_writer_ahead_waits() {
    let (repo, base) = soak_pool();
    let src =
        json!({"uri": repo.file_url(), "branch": "master", "pool": POOL, "retry_delay": "50ms"});
    let inputs = Inputs::new();
    crate::put(
        &src,
        json!({"claim": "a", "shared": true}),
        &inputs,
        &[("BUILD_ID", "r1"), ("BUILD_NAME", "r1")],
    );
    let pool = PoolPath::new(POOL).expect("pool");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    // A writer waits for "a", first in line, and stays live.
    let writer = json!({"tickets": [{
        "id": "w5ticket", "build": "main/app/deploy #5", "build_id": "w5",
        "wants": {"claim": ["a"]}, "priority": 0, "arrived": now, "seq": 1,
        "renewed": now, "lease": 3600
    }]});
    repo.commit_file(
        &Line::path(&pool),
        writer.to_string().as_bytes(),
        "waiting in line: envs\n\nPool-Resource-Build-Id: w5",
    );
    // By hand, as a broken put would: a reader joins "a" all the same.
    let path = Shares::path(&pool);
    let file = Shares::parse(&repo.file_at("HEAD", &path).expect("the shares file"));
    let joined = file.after(
        &pool_resource::model::shares::ShareEdit::Join {
            lock: LockName::new("a").expect("lock"),
            id: "x9".into(),
        },
        file.holders(&LockName::new("a").expect("lock")).first(),
    );
    repo.commit_file(
        &path,
        &joined.to_bytes().expect("two holders"),
        "sharing: a\n\nPool-Resource-Share: x9\nPool-Resource-Build-Id: r9",
    );
    let log = repo.log();
    let start = log.iter().position(|c| c.sha == base).expect("base");
    let bad = replay_shared(&repo, &log[start..], &HashMap::new());
    assert!(
        bad.iter()
            .any(|b| b.contains("sharing: a") && b.contains("while a writer ahead in line waited")),
        "{bad:#?}"
    );
}
