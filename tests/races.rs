//! Mutual exclusion under contention: many `out` processes racing for a few
//! locks over a real git server (git daemon) and over a local bare
//! repository. Afterwards the branch history is replayed with the git CLI:
//! no lock is ever claimed twice without an unclaim between, every claim is
//! released by the very process that made it, every version a process
//! printed is that process's commit on the branch, every commit message is
//! unique, and the pool ends with every lock unclaimed. A commit may move
//! several locks (`acquire: N`, `claim: [A, B]`): each one is replayed.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use pool_resource::model::message::Parsed;
use serde_json::{json, Value};

use crate::support::{finish_within, spawn_bin, CommitInfo, GitDaemon, LockRepo};
use crate::{lock_name, version, Inputs};

pub(crate) const POOL: &str = "envs";
const LOCKS: [&str; 3] = ["a", "b", "c"];

/// Short network backoff, so a transient fault under load costs little.
const ENV: [(&str, &str); 1] = [("POOL_RESOURCE_BACKOFF_BASE_MS", "50")];

/// How long a racer waits before looking again at a pool with no free lock.
/// Shorter is not faster on a small machine: every look is a fetch, and
/// with "20ms" the waiting processes' fetches starve the ones holding locks
/// (measured on 2 cores: 8 processes x 2 cycles over git daemon took 10 s
/// with 20ms and 7-11 s with 100ms, with more lost races to exercise the
/// compare-and-swap).
const RETRY_DELAY: &str = "100ms";

/// The longest one racer's put may take: every process must finish, so a
/// put that would wait forever (a deadlock) fails the race instead.
const PUT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// Where the racers reach the repository.
#[derive(Clone, Copy)]
enum Remote {
    Daemon,
    LocalPath,
}

/// A lock repository with [`LOCKS`] unclaimed, and how to reach it.
struct Arena {
    repo: LockRepo,
    _daemon: Option<GitDaemon>,
    source: Value,
    /// The tip before the race: the replay starts after it.
    base: String,
    stats: Mutex<Stats>,
}

/// Totals over every put of a race, from what the processes logged.
#[derive(Debug, Default)]
struct Stats {
    puts: usize,
    lost_races: usize,
    waits: usize,
    warnings: usize,
}

impl Stats {
    /// Adds one put's `done after T (N lost races, M waits)` line and warnings.
    fn add(&mut self, stderr: &str) {
        self.puts += 1;
        self.warnings += stderr.matches("warning:").count();
        let Some(line) = stderr.lines().find(|l| l.starts_with("done after ")) else {
            return;
        };
        let numbers: Vec<usize> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        if let [.., races, waits] = numbers[..] {
            self.lost_races += races;
            self.waits += waits;
        }
    }
}

impl Arena {
    fn new(remote: Remote) -> Arena {
        Arena::with_locks(remote, &LOCKS)
    }

    /// An arena whose pool holds `locks`, unclaimed.
    fn with_locks(remote: Remote, locks: &[&str]) -> Arena {
        let repo = LockRepo::new("master");
        for lock in locks {
            repo.add_lock(POOL, lock, false, format!("{lock}-meta").as_bytes());
        }
        let (daemon, uri) = match remote {
            Remote::Daemon => {
                let daemon = GitDaemon::start(repo.root());
                let uri = daemon.url("locks.git");
                (Some(daemon), uri)
            }
            Remote::LocalPath => (None, repo.path().display().to_string()),
        };
        let source =
            json!({"uri": uri, "branch": "master", "pool": POOL, "retry_delay": RETRY_DELAY});
        let base = repo.tip();
        Arena {
            repo,
            _daemon: daemon,
            source,
            base,
            stats: Mutex::default(),
        }
    }

    /// Runs `out` with `params` as build `build`, asserting success; returns
    /// `(lock, version)`.
    fn put(&self, params: Value, inputs: &Inputs, build: &str) -> (String, String) {
        let mut env = ENV.to_vec();
        env.push(("BUILD_ID", build));
        let child = spawn_bin(
            "out",
            &[inputs.path()],
            &json!({"source": self.source, "params": params}),
            &env,
        );
        let run = finish_within(child, &format!("out {params} as {build}"), PUT_DEADLINE);
        let out = run.assert_success().json();
        self.stats.lock().expect("stats").add(&run.stderr);
        (lock_name(&out), version(&out))
    }

    /// The commits made since the race started, oldest first.
    fn race_log(&self) -> Vec<CommitInfo> {
        let log = self.repo.log();
        let start = log
            .iter()
            .position(|c| c.sha == self.base)
            .expect("the base commit is on the branch");
        log[start..].to_vec()
    }
}

/// One process's claim and the release it made afterwards.
#[derive(Debug, Clone)]
pub(crate) struct Cycle {
    pub(crate) build: String,
    pub(crate) lock: String,
    pub(crate) claim: String,
    pub(crate) release: String,
}

/// `workers` threads, each running `cycles` claim → release cycles, the
/// claim made with `claim_params`; returns every cycle.
fn race(arena: &Arena, workers: usize, cycles: usize, claim_params: &Value) -> Vec<Cycle> {
    race_each(arena, workers, cycles, &|_| claim_params.clone())
}

/// [`race`] with worker `w` claiming with `params_of(w)`.
fn race_each(
    arena: &Arena,
    workers: usize,
    cycles: usize,
    params_of: &(dyn Fn(usize) -> Value + Sync),
) -> Vec<Cycle> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                scope.spawn(move || {
                    let inputs = Inputs::new();
                    let mut done = Vec::new();
                    for c in 0..cycles {
                        let build = format!("w{w}-c{c}");
                        let (lock, claim) = arena.put(params_of(w), &inputs, &build);
                        inputs.lock("held", &held_names(&lock), b"");
                        let (released, release) =
                            arena.put(json!({"release": "held"}), &inputs, &build);
                        assert_eq!(released, lock, "{build} released what it claimed");
                        done.push(Cycle {
                            build,
                            lock,
                            claim,
                            release,
                        });
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a racer panicked"))
            .collect()
    })
}

/// What the get after a put writes to `name` for its `lock_name` metadata:
/// one name a line (the race tests' lock names have no `, `).
pub(crate) fn held_names(lock_name: &str) -> String {
    lock_name.split(", ").collect::<Vec<_>>().join("\n")
}

/// What a lock looked like at some point of the replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Unclaimed,
    /// Claimed by the commit with this id.
    Claimed(String),
}

/// Replays `log` (the race, after its base commit `log[0]`) from `initial`,
/// panicking at the first commit that breaks mutual exclusion or the
/// repository layout. Returns, for each claim commit, the commit that next
/// changed that lock, and the final states.
pub(crate) fn replay(
    log: &[CommitInfo],
    initial: &[&str],
) -> (HashMap<String, String>, HashMap<String, State>) {
    let mut states: HashMap<String, State> = initial
        .iter()
        .map(|l| (l.to_string(), State::Unclaimed))
        .collect();
    let mut next_after_claim = HashMap::new();
    for pair in log.windows(2) {
        let (prev, c) = (&pair[0], &pair[1]);
        assert_eq!(
            c.parents,
            std::slice::from_ref(&prev.sha),
            "{} is a fast-forward of the previous commit",
            c.sha
        );
        let (verb, locks) = Parsed::new(&c.body)
            .locks()
            .map(|(verb, locks)| (verb.as_str(), locks))
            .unwrap_or_else(|| panic!("unexpected commit {c:?}"));
        assert_eq!(
            Parsed::new(&c.body).subject(),
            c.subject,
            "{} subject and message agree",
            c.sha
        );
        if locks.len() > 1 {
            assert!(
                matches!(verb, "claiming" | "unclaiming"),
                "{} moves several locks with {verb}",
                c.sha
            );
        }
        let mut changed = c.changed.clone();
        changed.sort();
        let mut expected = Vec::new();
        for lock in locks {
            let lock = lock.to_string();
            let before = states.get(&lock).cloned();
            if let Some(State::Claimed(claim)) = &before {
                // Every lock of one claim must be ended by the same commit.
                let ended = next_after_claim
                    .entry(claim.clone())
                    .or_insert_with(|| c.sha.clone());
                if *ended != c.sha {
                    *ended = format!("split between {ended} and {}", c.sha);
                }
            }
            let (edits, after) = step(verb, &lock, &before, c);
            expected.extend(edits);
            match after {
                Some(state) => states.insert(lock, state),
                None => states.remove(&lock),
            };
        }
        expected.sort();
        assert_eq!(changed, expected, "{} changes exactly its locks", c.sha);
    }
    (next_after_claim, states)
}

/// One lock's part of a replayed commit `c` with `verb`, from state
/// `before`: the changes it must make and the state it leaves.
fn step(
    verb: &str,
    lock: &str,
    before: &Option<State>,
    c: &CommitInfo,
) -> (Vec<(char, String)>, Option<State>) {
    let path = |state: &str| format!("{POOL}/{state}/{lock}");
    match verb {
        "claiming" => {
            assert_eq!(
                *before,
                Some(State::Unclaimed),
                "{} claims {lock} while it is {before:?}",
                c.sha
            );
            (
                vec![('A', path("claimed")), ('D', path("unclaimed"))],
                Some(State::Claimed(c.sha.clone())),
            )
        }
        "unclaiming" => {
            assert!(
                matches!(before, Some(State::Claimed(_))),
                "{} releases {lock} while it is {before:?}",
                c.sha
            );
            (
                vec![('A', path("unclaimed")), ('D', path("claimed"))],
                Some(State::Unclaimed),
            )
        }
        "updating" => {
            assert_eq!(
                *before,
                Some(State::Unclaimed),
                "{} updates {lock} while it is {before:?}",
                c.sha
            );
            (vec![('M', path("unclaimed"))], Some(State::Unclaimed))
        }
        "adding claimed" => {
            assert_eq!(*before, None, "{} adds {lock}, which exists", c.sha);
            (
                vec![('A', path("claimed"))],
                Some(State::Claimed(c.sha.clone())),
            )
        }
        "removing" => {
            let dir = match before {
                Some(State::Claimed(_)) => "claimed",
                Some(State::Unclaimed) => "unclaimed",
                None => panic!("{} removes {lock}, which does not exist", c.sha),
            };
            (vec![('D', path(dir))], None)
        }
        other => panic!("unexpected commit {other:?} in {c:?}"),
    }
}

/// Everything the race promised, checked against the history.
fn assert_mutual_exclusion(arena: &Arena, cycles: &[Cycle], expected_claims: usize) {
    assert_race_history(&arena.race_log(), &LOCKS, cycles, expected_claims);
    assert!(arena.repo.claimed(POOL).is_empty());
    assert_eq!(arena.repo.unclaimed(POOL), LOCKS);
}

/// Checks a race of claim → release `cycles` against `log` (the branch from
/// the race's base commit `log[0]`, whose pool held `locks` unclaimed): the
/// replay finds no double claim, there are `expected_claims` claims, each
/// version a process printed is its own commit of the right kind on the
/// branch and printed once, each claim was ended by its holder's release,
/// every commit message is unique, and every lock ends unclaimed.
pub(crate) fn assert_race_history(
    log: &[CommitInfo],
    locks: &[&str],
    cycles: &[Cycle],
    expected_claims: usize,
) {
    let (next_after_claim, states) = replay(log, locks);
    let by_sha: HashMap<&str, &CommitInfo> = log.iter().map(|c| (c.sha.as_str(), c)).collect();

    let claims = log.iter().filter(|c| c.subject.starts_with("claiming: "));
    assert_eq!(claims.count(), expected_claims, "one claim per cycle");
    assert_eq!(cycles.len(), expected_claims);
    let mut printed = HashSet::new();
    for cycle in cycles {
        for (sha, verb) in [(&cycle.claim, "claiming"), (&cycle.release, "unclaiming")] {
            assert!(printed.insert(sha.clone()), "{sha} printed twice");
            let commit = by_sha
                .get(sha.as_str())
                .unwrap_or_else(|| panic!("{cycle:?}: {sha} is not on the branch"));
            assert_eq!(
                commit.subject,
                format!("{verb}: {}", cycle.lock),
                "{cycle:?}"
            );
            let trailer = format!("Pool-Resource-Build-Id: {}", cycle.build);
            assert!(
                commit.body.lines().any(|l| l == trailer),
                "{cycle:?}: {sha} was made by another build:\n{}",
                commit.body
            );
        }
        assert_eq!(
            next_after_claim.get(&cycle.claim),
            Some(&cycle.release),
            "{cycle:?}: the lock changed hands before its holder released it"
        );
    }
    let mut bodies = HashSet::new();
    for c in &log[1..] {
        assert!(
            bodies.insert(&c.body),
            "two commits with one message:\n{}",
            c.body
        );
    }
    for lock in locks {
        assert_eq!(
            states.get(*lock),
            Some(&State::Unclaimed),
            "{lock} at the end"
        );
    }
}

const WORKERS: usize = 8;
/// Cycles per process in CI; the soak test takes its count from [`SOAK_ENV`].
const CYCLES: usize = 2;
/// `RACE_SOAK_CYCLES=N cargo test --test integration races::soak -- --ignored --nocapture`
const SOAK_ENV: &str = "RACE_SOAK_CYCLES";

fn acquire_race(remote: Remote, per_process: usize) {
    let arena = Arena::new(remote);
    let start = Instant::now();
    let cycles = race(&arena, WORKERS, per_process, &json!({"acquire": true}));
    eprintln!(
        "{} acquire/release cycles by {WORKERS} processes in {:?}: {:?}",
        cycles.len(),
        start.elapsed(),
        arena.stats.lock().expect("stats")
    );
    assert_mutual_exclusion(&arena, &cycles, WORKERS * per_process);
}

fn claim_race(remote: Remote) {
    let arena = Arena::new(remote);
    let workers = 6;
    let start = Instant::now();
    let cycles = race(&arena, workers, CYCLES, &json!({"claim": "a"}));
    eprintln!(
        "{} claim/release cycles of one lock by {workers} processes in {:?}: {:?}",
        cycles.len(),
        start.elapsed(),
        arena.stats.lock().expect("stats")
    );
    assert!(cycles.iter().all(|c| c.lock == "a"));
    assert_mutual_exclusion(&arena, &cycles, workers * CYCLES);
}

/// Locks of the multi-lock races: more wanted at once than are free.
pub(crate) const FIVE: [&str; 5] = ["a", "b", "c", "d", "e"];

/// 6 processes each taking 2 of [`FIVE`] locks at once (at most two can
/// hold theirs at a time), with `acquire: 2` or `claim: [two of them]`.
fn multi_race(remote: Remote, params_of: &(dyn Fn(usize) -> Value + Sync)) {
    let arena = Arena::with_locks(remote, &FIVE);
    let workers = 6;
    let start = Instant::now();
    let cycles = race_each(&arena, workers, CYCLES, params_of);
    eprintln!(
        "{} two-lock cycles by {workers} processes in {:?}: {:?}",
        cycles.len(),
        start.elapsed(),
        arena.stats.lock().expect("stats")
    );
    assert!(cycles.iter().all(|c| c.lock.split(", ").count() == 2));
    assert_race_history(&arena.race_log(), &FIVE, &cycles, workers * CYCLES);
    assert!(arena.repo.claimed(POOL).is_empty());
}

#[test]
fn racing_acquires_of_two_locks_over_git_daemon_never_share_or_deadlock() {
    multi_race(Remote::Daemon, &|_| json!({"acquire": 2}));
}

#[test]
fn racing_claims_of_overlapping_pairs_over_git_daemon_never_share_or_deadlock() {
    // Worker w claims locks w and w+1 (mod 5): every pair overlaps two others.
    multi_race(
        Remote::Daemon,
        &|w| json!({"claim": [FIVE[w % 5], FIVE[(w + 1) % 5]]}),
    );
}

#[test]
fn racing_acquires_over_git_daemon_never_share_a_lock() {
    acquire_race(Remote::Daemon, CYCLES);
}

#[test]
fn racing_acquires_on_a_local_repository_never_share_a_lock() {
    acquire_race(Remote::LocalPath, CYCLES);
}

#[test]
fn racing_claims_of_one_lock_over_git_daemon_take_turns() {
    claim_race(Remote::Daemon);
}

#[test]
fn racing_claims_of_one_lock_on_a_local_repository_take_turns() {
    claim_race(Remote::LocalPath);
}

/// Acquirers and claimers race with a process updating a lock's content and
/// one adding and removing a lock of its own; every operation keeps the pool
/// consistent, and the last update's content is what remains.
fn mixed_race(remote: Remote) {
    let arena = Arena::new(remote);
    let start = Instant::now();
    let rounds = CYCLES;
    let (cycles, updates, adds) = std::thread::scope(|scope| {
        let acquirers = scope.spawn(|| race(&arena, 3, rounds, &json!({"acquire": true})));
        let claimers = scope.spawn(|| race(&arena, 2, rounds, &json!({"claim": "a"})));
        let updater = scope.spawn(|| {
            let inputs = Inputs::new();
            (0..rounds)
                .map(|i| {
                    let content = format!("b-meta v{i}");
                    inputs.lock("new", "b", content.as_bytes());
                    let (lock, sha) = arena.put(json!({"update": "new"}), &inputs, "updater");
                    assert_eq!(lock, "b");
                    (sha, content)
                })
                .collect::<Vec<_>>()
        });
        let adder = scope.spawn(|| {
            let inputs = Inputs::new();
            (0..rounds)
                .map(|i| {
                    let name = format!("extra-{i}");
                    inputs.lock("mine", &name, b"mine");
                    let (_, added) = arena.put(json!({"add_claimed": "mine"}), &inputs, "adder");
                    let (_, removed) = arena.put(json!({"remove": "mine"}), &inputs, "adder");
                    (name, added, removed)
                })
                .collect::<Vec<_>>()
        });
        let mut cycles = acquirers.join().expect("acquirers");
        cycles.extend(claimers.join().expect("claimers"));
        (
            cycles,
            updater.join().expect("updater"),
            adder.join().expect("adder"),
        )
    });
    eprintln!(
        "mixed race: {} claims, {} updates, {} add/remove pairs in {:?}: {:?}",
        cycles.len(),
        updates.len(),
        adds.len(),
        start.elapsed(),
        arena.stats.lock().expect("stats")
    );
    let log = arena.race_log();
    let subjects: HashMap<&str, &str> = log
        .iter()
        .map(|c| (c.sha.as_str(), c.subject.as_str()))
        .collect();
    for (sha, _) in &updates {
        assert_eq!(subjects.get(sha.as_str()), Some(&"updating: b"));
    }
    for (name, added, removed) in &adds {
        assert_eq!(
            subjects.get(added.as_str()).copied(),
            Some(format!("adding claimed: {name}").as_str())
        );
        assert_eq!(
            subjects.get(removed.as_str()).copied(),
            Some(format!("removing: {name}").as_str())
        );
    }
    // Extra locks were claimed by their adder: claims of the pool's own
    // locks are the cycles' only.
    assert_mutual_exclusion(&arena, &cycles, 5 * rounds);
    assert_eq!(
        arena.repo.file_at("HEAD", &format!("{POOL}/unclaimed/b")),
        Some(updates.last().expect("updates").1.clone().into_bytes()),
        "the last update's content remains"
    );
}

#[test]
fn acquire_claim_update_add_and_remove_race_safely_over_git_daemon() {
    mixed_race(Remote::Daemon);
}

/// The soak run: the same race with many more cycles (50 per process unless
/// [`SOAK_ENV`] says otherwise), over git daemon and then a local repository,
/// printing the totals.
#[test]
#[ignore = "minutes long; run on demand"]
fn soak_racing_acquires_never_share_a_lock() {
    let per_process = std::env::var(SOAK_ENV)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(50);
    acquire_race(Remote::Daemon, per_process);
    acquire_race(Remote::LocalPath, per_process);
}

/// The replay itself: it must reject a history in which a lock was claimed
/// twice, and pair each claim with the change that ended it, or else the race
/// tests above prove nothing.
#[test]
fn the_replay_rejects_a_double_claim_and_pairs_each_claim_with_its_release() {
    let repo = LockRepo::new("master");
    repo.add_lock(POOL, "a", false, b"");
    let base = repo.tip();
    repo.move_lock(POOL, "a", true);
    // A second claimer that believed it won: same subject, lock already claimed.
    repo.commit_changes(&[(&format!("{POOL}/claimed/a"), b"x")], &[], "claiming: a");
    let log = repo.log();
    let start = log.iter().position(|c| c.sha == base).unwrap();
    let double = std::panic::catch_unwind(|| replay(&log[start..], &["a"]));
    assert!(double.is_err(), "a double claim went unnoticed");

    let repo = LockRepo::new("master");
    repo.add_lock(POOL, "a", false, b"");
    let base = repo.tip();
    let claim = repo.move_lock(POOL, "a", true);
    let release = repo.move_lock(POOL, "a", false);
    let log = repo.log();
    let start = log.iter().position(|c| c.sha == base).unwrap();
    let (next, states) = replay(&log[start..], &["a"]);
    assert_eq!(next.get(&claim), Some(&release));
    assert_eq!(states.get("a"), Some(&State::Unclaimed));
}

/// Fairness, measured not required: while two processes keep taking and
/// giving back single locks of a pool of three, does an `acquire: 2` get
/// through? The churn stops after [`CHURN_LIMIT`] at the latest, so the
/// test ends either way; it prints how long the two-lock put waited,
/// whether it got through during the churn, and what it logged. Two
/// churners by default, `FAIRNESS_CHURNERS` to change it.
/// `cargo test --test integration races::fairness -- --ignored --nocapture`
#[test]
#[ignore = "a measurement, up to a minute long; run on demand"]
fn fairness_of_a_two_lock_put_among_single_lock_churn() {
    const CHURN_LIMIT: std::time::Duration = std::time::Duration::from_secs(45);
    // FAIRNESS_CHURNERS=3: as many churners as locks, so two are rarely free.
    let churners: usize = std::env::var("FAIRNESS_CHURNERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2);
    let arena = Arena::new(Remote::Daemon);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let churned = std::sync::atomic::AtomicUsize::new(0);
    let start = Instant::now();
    let (multi, got_through_during_churn, waited) = std::thread::scope(|scope| {
        for w in 0..churners {
            let (arena, stop, churned) = (&arena, &stop, &churned);
            scope.spawn(move || {
                let inputs = Inputs::new();
                let mut c = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst)
                    && start.elapsed() < CHURN_LIMIT
                {
                    let build = format!("churn{w}-c{c}");
                    let (lock, _) = arena.put(json!({"acquire": true}), &inputs, &build);
                    inputs.lock("held", &lock, b"");
                    arena.put(json!({"release": "held"}), &inputs, &build);
                    churned.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    c += 1;
                }
            });
        }
        // The two-lock put starts once the churn is going: as many cycles
        // done as there are churners.
        while churned.load(std::sync::atomic::Ordering::SeqCst) < churners
            && start.elapsed() < CHURN_LIMIT
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let asked = Instant::now();
        let mut env = ENV.to_vec();
        env.push(("BUILD_ID", "multi"));
        let inputs = Inputs::new();
        let child = spawn_bin(
            "out",
            &[inputs.path()],
            &json!({"source": arena.source, "params": {"acquire": 2}}),
            &env,
        );
        let run = finish_within(child, "acquire: 2", CHURN_LIMIT * 2);
        let waited = asked.elapsed();
        let during =
            !stop.load(std::sync::atomic::Ordering::SeqCst) && start.elapsed() < CHURN_LIMIT;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        (run, during, waited)
    });
    multi.assert_success();
    let waits: Vec<&str> = multi
        .stderr
        .lines()
        .filter(|l| l.contains("locks wanted"))
        .collect();
    eprintln!(
        "acquire: 2 among {churners} single-lock churners: {} after {waited:?} ({} single cycles meanwhile, {} waits); first wait line: {:?}",
        if got_through_during_churn { "got through during the churn" } else { "got through only once the churn stopped" },
        churned.load(std::sync::atomic::Ordering::SeqCst),
        waits.len(),
        waits.first()
    );
    let log = arena.race_log();
    replay(&log, &LOCKS);
}
