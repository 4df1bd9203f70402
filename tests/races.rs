//! Mutual exclusion under contention: many `out` processes racing for a few
//! locks over a real git server (git daemon) and over a local bare
//! repository. Afterwards the branch history is replayed with the git CLI:
//! no lock is ever claimed twice without an unclaim between, every claim is
//! released by the very process that made it, every version a process
//! printed is that process's commit on the branch, every commit message is
//! unique, and the pool ends with every lock unclaimed. A commit may move
//! several locks (`acquire: N`, `claim: [A, B]`): each one is replayed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use pool_resource::model::line::{Asker, Line};
use pool_resource::model::message::{Parsed, Trailer};
use pool_resource::model::names::{LockName, PoolPath};
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
    race_named(arena, "w", workers, cycles, claim_params)
}

/// [`race`] with builds named `{prefix}{w}-c{c}`: racers started side by
/// side must not share build ids (the line knows a put by its build).
fn race_named(
    arena: &Arena,
    prefix: &str,
    workers: usize,
    cycles: usize,
    claim_params: &Value,
) -> Vec<Cycle> {
    race_each_named(arena, prefix, workers, cycles, &|_| claim_params.clone())
}

/// [`race`] with worker `w` claiming with `params_of(w)`.
fn race_each(
    arena: &Arena,
    workers: usize,
    cycles: usize,
    params_of: &(dyn Fn(usize) -> Value + Sync),
) -> Vec<Cycle> {
    race_each_named(arena, "w", workers, cycles, params_of)
}

/// [`race_each`] with builds named `{prefix}{w}-c{c}`.
fn race_each_named(
    arena: &Arena,
    prefix: &str,
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
                        let build = format!("{prefix}{w}-c{c}");
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

/// What the replay found.
#[derive(Debug)]
pub(crate) struct Replayed {
    /// For each claim commit, the commit that next changed that lock.
    pub(crate) next_after_claim: HashMap<String, String>,
    /// Each lock's state at the end.
    pub(crate) states: HashMap<String, State>,
    /// What the order check saw of the line.
    pub(crate) line: LineTotals,
    /// The line at the last commit.
    pub(crate) last_line: Line,
}

/// What the order check of a replay saw, so that a run can tell whether
/// there was a line to check at all.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LineTotals {
    /// Commits that changed the line and no lock (join, renew, leave).
    pub(crate) ticket_commits: usize,
    /// Claims made while at least one live ticket waited.
    pub(crate) claims_beside_waiters: usize,
    /// Of those, claims by a put that had a ticket (and took it out).
    pub(crate) claims_by_ticket: usize,
    /// Claims after which a free lock stayed free because a live ticket
    /// ahead kept it (the line doing its work).
    pub(crate) claims_that_passed_a_kept_lock: usize,
    /// The most live tickets seen at once.
    pub(crate) longest_line: usize,
}

/// The path of [`POOL`]'s line file.
pub(crate) fn line_path() -> String {
    Line::path(&PoolPath::new(POOL).expect("a valid pool"))
}

/// The line at commit `sha` of `repo` (empty when there is no line file).
fn line_at(repo: &LockRepo, sha: &str) -> Line {
    let line = repo
        .file_at(sha, &line_path())
        .map(|bytes| Line::parse(&bytes))
        .unwrap_or_default();
    assert_eq!(line.unreadable, None, "the line file at {sha}");
    line
}

/// Replays `log` (the history of `repo` after its base commit `log[0]`)
/// from `initial`, panicking at the first commit that breaks mutual
/// exclusion, the order of the line ([`check_order`]) or the repository
/// layout. Commits that change only the line file (a ticket joining,
/// renewed, leaving) are allowed anywhere; a claim may also take its own
/// put's ticket out of the line, and nothing else may touch it.
pub(crate) fn replay(repo: &LockRepo, log: &[CommitInfo], initial: &[&str]) -> Replayed {
    replay_with_priorities(repo, log, initial, &HashMap::new())
}

/// [`replay`], knowing the priority each build's put asked for
/// (`known`): a put that claimed without ever joining the line has no
/// ticket to say it.
pub(crate) fn replay_with_priorities(
    repo: &LockRepo,
    log: &[CommitInfo],
    initial: &[&str],
    known: &HashMap<String, i64>,
) -> Replayed {
    let mut states: HashMap<String, State> = initial
        .iter()
        .map(|l| (l.to_string(), State::Unclaimed))
        .collect();
    let mut next_after_claim = HashMap::new();
    let line_file = line_path();
    let line_dir = format!("{}/", Line::DIR);
    let mut line = line_at(repo, &log[0].sha);
    let mut totals = LineTotals::default();
    // The priority of each build's put, from its tickets; a put seen
    // without a ticket is taken to have priority 0 (every race here).
    let mut priorities: HashMap<String, i64> = known.clone();
    for (i, c) in log.iter().enumerate().skip(1) {
        let prev = &log[i - 1];
        assert_eq!(
            c.parents,
            std::slice::from_ref(&prev.sha),
            "{} is a fast-forward of the previous commit",
            c.sha
        );
        let touches_line = c.changed.iter().any(|(_, p)| *p == line_file);
        // The line's part of the commit: anything under the line's folder,
        // its file, the `.gitkeep` the CodeCommit API (`keepEmptyFolders`)
        // leaves when it goes, and whatever the waiting room writes there
        // (a `dropping a waiter:` commit, say, under any subject).
        let of_line = |p: &String| p.starts_with(&line_dir);
        let line_after = if touches_line {
            line_at(repo, &c.sha)
        } else {
            line.clone()
        };
        assert_one_ticket_per_build(&line_after, c);
        for t in &line_after.tickets {
            if let Some(b) = &t.build_id {
                priorities.insert(b.clone(), t.priority);
            }
        }
        totals.longest_line = totals
            .longest_line
            .max(line_after.live(c.committer_time).len());
        let parsed = Parsed::new(&c.body);
        let Some((verb, locks)) = parsed.locks().map(|(verb, locks)| (verb.as_str(), locks)) else {
            assert!(
                !c.changed.is_empty() && c.changed.iter().all(|(_, p)| of_line(p)),
                "unexpected commit {c:?}"
            );
            totals.ticket_commits += 1;
            line = line_after;
            continue;
        };
        assert_eq!(
            parsed.subject(),
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
        if verb == "claiming" {
            let takeover = parsed.trailer(Trailer::Replaces).is_some();
            // The put planned on the tip below its push: the parent, or for
            // a takeover (`unclaiming:` then `claiming:` in one push) the
            // parent's parent.
            let planned_on = &log[i.saturating_sub(if takeover { 2 } else { 1 })];
            let free: BTreeSet<LockName> = states
                .iter()
                .filter(|(_, s)| **s == State::Unclaimed)
                .map(|(l, _)| LockName::new(l).expect("a lock name"))
                .collect();
            let claim = Claim {
                commit: c,
                build: parsed.trailer(Trailer::BuildId),
                locks: locks
                    .iter()
                    .map(|l| LockName::new(l).expect("a lock name"))
                    .collect(),
                takeover,
                window: (planned_on.committer_time, c.committer_time),
            };
            check_order(&line, &free, &claim, &priorities, &mut totals);
            check_ticket_taken_out(&line, &line_after, &claim);
        } else {
            assert!(!touches_line, "{} ({}) changes the line", c.sha, c.subject);
        }
        let mut changed: Vec<(char, String)> = c
            .changed
            .iter()
            .filter(|(_, p)| !of_line(p))
            .cloned()
            .collect();
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
        line = line_after;
    }
    Replayed {
        next_after_claim,
        states,
        line: totals,
        last_line: line,
    }
}

/// One claim commit, as the order check sees it.
struct Claim<'a> {
    commit: &'a CommitInfo,
    /// Its `Pool-Resource-Build-Id`.
    build: Option<&'a str>,
    locks: Vec<LockName>,
    /// An expiry takeover: the lock was claimed when the put planned.
    takeover: bool,
    /// The earliest and latest Unix second the put can have planned at:
    /// the commit it planned on was made before it looked, its own commit
    /// after it planned (one clock: every process runs on this machine).
    window: (i64, i64),
}

/// No line holds two tickets of one build: each put has one ticket id,
/// and a retried write (after a lost reply) replaces it.
fn assert_one_ticket_per_build(line: &Line, c: &CommitInfo) {
    let mut seen = HashSet::new();
    for t in &line.tickets {
        if let Some(b) = &t.build_id {
            assert!(
                seen.insert(b.as_str()),
                "{} ({}) leaves two tickets of build {b} in the line: {:#?}",
                c.sha,
                c.subject,
                line.tickets
            );
        }
    }
}

/// The order of the line, at claim commit `claim` made on `line` with
/// `free` locks unclaimed: no lock it took was kept for a live ticket ahead
/// of its put ([`Line::reserved_for`]: by priority, then order of joining,
/// each ticket ahead keeping from the free locks what it could use); for an
/// expiry takeover, no live ticket ahead could use the lock
/// ([`Line::wanted_ahead`]). Its put is its ticket's holder if its build
/// has a ticket in the line, else a newcomer (behind every live ticket of
/// its priority or higher). Liveness depends on the second the put looked,
/// known only to lie within `claim.window`: a claim is out of order only if
/// it is out of order at every second of it.
fn check_order(
    line: &Line,
    free: &BTreeSet<LockName>,
    claim: &Claim<'_>,
    priorities: &HashMap<String, i64>,
    totals: &mut LineTotals,
) {
    let c = claim.commit;
    let ticket = claim.build.and_then(|b| {
        line.tickets
            .iter()
            .find(|t| t.build_id.as_deref() == Some(b))
    });
    let asker = match ticket {
        Some(t) => Asker::Ticket(&t.id),
        None => Asker::Newcomer {
            priority: claim
                .build
                .and_then(|b| priorities.get(b).copied())
                .unwrap_or(0),
        },
    };
    let (from, to) = claim.window;
    assert!(from <= to, "{} was made before its parent", c.sha);
    // At most a minute of seconds: a put plans within the round it pushes.
    let seconds: Vec<i64> = if to - from <= 60 {
        (from..=to).collect()
    } else {
        vec![from, to]
    };
    let kept_at = |now: i64| -> Vec<LockName> {
        if claim.takeover {
            claim
                .locks
                .iter()
                .filter(|l| line.wanted_ahead(asker, l, now))
                .cloned()
                .collect()
        } else {
            let reserved = line.reserved_for(asker, free, now);
            claim
                .locks
                .iter()
                .filter(|l| reserved.contains(*l))
                .cloned()
                .collect()
        }
    };
    if seconds.iter().any(|now| kept_at(*now).is_empty()) {
        if !line.live(to).is_empty() {
            totals.claims_beside_waiters += 1;
            totals.claims_by_ticket += usize::from(ticket.is_some());
            if !claim.takeover && !line.reserved_for(asker, free, to).is_empty() {
                totals.claims_that_passed_a_kept_lock += 1;
            }
        }
        return;
    }
    let now = to;
    panic!(
        "{} ({}, by build {:?}, {}) took {:?}, kept for live tickets ahead in line; \
         free then: {:?}; ahead: {:#?}; whole line: {:#?}",
        c.sha,
        c.subject,
        claim.build,
        match asker {
            Asker::Ticket(id) => format!("its ticket {id}"),
            Asker::Newcomer { priority } => format!("no ticket, priority {priority}"),
        },
        kept_at(now),
        free,
        line.ahead_of(asker, now),
        line.tickets
    );
}

/// A claim by a put with a ticket takes that ticket out in the same commit,
/// and a claim adds no ticket.
fn check_ticket_taken_out(before: &Line, after: &Line, claim: &Claim<'_>) {
    let c = claim.commit;
    if let Some(b) = claim.build {
        let left = after
            .tickets
            .iter()
            .find(|t| t.build_id.as_deref() == Some(b));
        assert!(
            left.is_none(),
            "{} ({}) by build {b} leaves its ticket in the line: {left:#?}",
            c.sha,
            c.subject
        );
    }
    for t in &after.tickets {
        assert!(
            before.find(&t.id).is_some(),
            "{} ({}) adds ticket {} to the line",
            c.sha,
            c.subject,
            t.id
        );
    }
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

/// The longest a lock may sit free while a live waiter in line could take
/// it and nobody does, at the default `waiter_lease` (5 minutes): a dead or
/// leaving waiter must cost the pool at most about 30 s (issue 23), plus
/// room for a slow hand-over under faults.
pub(crate) const STALL_BOUND_AT_DEFAULTS: i64 = 45;

/// With a short `waiter_lease`, a stall may last the lease (a dead waiter
/// counts until then) plus this: the next waiter's look, fetch and push,
/// through a faulty network on a loaded machine.
pub(crate) const STALL_SLACK: i64 = 15;

/// The stall bound for runs at `waiter_lease` `lease` seconds (`None`: the
/// default): [`STALL_BOUND_AT_DEFAULTS`], or less with a short lease.
pub(crate) fn stall_bound(lease: Option<u64>) -> i64 {
    match lease {
        None => STALL_BOUND_AT_DEFAULTS,
        Some(l) => (l as i64 + STALL_SLACK).min(STALL_BOUND_AT_DEFAULTS),
    }
}

/// The longest free-with-waiters stretch of a history: a lock free while a
/// live ticket in line (live by its `renewed` and `lease`, still in the
/// line file) could take it, everything it wants being free and not kept
/// for a live ticket ahead of it, and nobody took it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Stall {
    /// Its length, whole seconds.
    pub(crate) seconds: i64,
    /// The lock that sat free.
    pub(crate) lock: String,
    /// When it began (Unix seconds) and the commit that was the tip then.
    pub(crate) from: i64,
    pub(crate) at_commit: String,
    /// The ticket that could have taken the lock when it began.
    pub(crate) waiter: String,
}

impl std::fmt::Display for Stall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.seconds == 0 {
            return write!(f, "0 s");
        }
        write!(
            f,
            "{} s (lock {} from {} at {}, usable by {})",
            self.seconds,
            self.lock,
            self.from,
            &self.at_commit[..self.at_commit.len().min(10)],
            self.waiter
        )
    }
}

/// The live ticket (described) that could take `lock` at `now`, if any:
/// what it wants is all free and nothing of it kept for a live ticket
/// ahead ([`Line::reserved_for`]), and `lock` is part of it.
fn waiter_for(line: &Line, free: &BTreeSet<LockName>, lock: &LockName, now: i64) -> Option<String> {
    use pool_resource::model::line::Wants;
    line.live(now).into_iter().find_map(|t| {
        let reserved = line.reserved_for(Asker::Ticket(&t.id), free, now);
        let open: BTreeSet<&LockName> = free.difference(&reserved).collect();
        let could = match &t.wants {
            Wants::Acquire(n) => open.len() >= *n && open.contains(lock),
            Wants::Claim(locks) => locks.contains(lock) && locks.iter().all(|l| open.contains(l)),
        };
        could.then(|| {
            format!(
                "{} ({}, priority {}, renewed {}, lease {})",
                t.build_id.as_deref().unwrap_or(&t.build),
                t.wants.describe(),
                t.priority,
                t.renewed,
                t.lease
            )
        })
    })
}

/// The longest free-with-waiters stretch ([`Stall`]) in `log` (the history
/// of `repo` from its base commit `log[0]`, whose pool held `initial`
/// unclaimed), looked at every second from the base commit to `until`
/// (Unix seconds; stretches still open then end there). A stretch of a
/// lock ends when it is claimed or when no live waiter could take it any
/// more (its ticket left, lapsed or was dropped, or a lock it also wants
/// was taken).
pub(crate) fn longest_stall(
    repo: &LockRepo,
    log: &[CommitInfo],
    initial: &[&str],
    until: i64,
) -> Stall {
    let mut free: BTreeSet<LockName> = initial
        .iter()
        .map(|l| LockName::new(l).expect("a lock name"))
        .collect();
    let mut exists: BTreeSet<LockName> = free.clone();
    let line_file = line_path();
    let mut line = line_at(repo, &log[0].sha);
    let mut open: HashMap<LockName, Stall> = HashMap::new();
    let mut longest = Stall::default();
    let mut close = |open: &mut HashMap<LockName, Stall>, lock: &LockName, at: i64| {
        if let Some(mut s) = open.remove(lock) {
            s.seconds = at - s.from;
            if s.seconds > longest.seconds {
                longest = s;
            }
        }
    };
    for (i, c) in log.iter().enumerate() {
        if i > 0 {
            if c.changed.iter().any(|(_, p)| *p == line_file) {
                line = line_at(repo, &c.sha);
            }
            if let Some((verb, locks)) = Parsed::new(&c.body).locks() {
                for l in locks {
                    let Ok(l) = LockName::new(l) else { continue };
                    match verb.as_str() {
                        "claiming" | "adding claimed" => {
                            free.remove(&l);
                            exists.insert(l);
                        }
                        "unclaiming" | "adding unclaimed" | "updating" => {
                            free.insert(l.clone());
                            exists.insert(l);
                        }
                        "removing" => {
                            free.remove(&l);
                            exists.remove(&l);
                        }
                        _ => {}
                    }
                }
            }
        }
        let start = c.committer_time;
        let end = log
            .get(i + 1)
            .map_or(until, |n| n.committer_time)
            .min(until);
        // Several commits within one second: only the last one's state
        // lasts, and it is looked at with the next.
        for now in start..end {
            for lock in &exists {
                let waiter = free
                    .contains(lock)
                    .then(|| waiter_for(&line, &free, lock, now))
                    .flatten();
                match (waiter, open.contains_key(lock)) {
                    (Some(w), false) => {
                        open.insert(
                            lock.clone(),
                            Stall {
                                seconds: 0,
                                lock: lock.to_string(),
                                from: now,
                                at_commit: c.sha.clone(),
                                waiter: w,
                            },
                        );
                    }
                    (None, true) => close(&mut open, lock, now),
                    _ => {}
                }
            }
        }
    }
    let locks: Vec<LockName> = open.keys().cloned().collect();
    for lock in locks {
        close(&mut open, &lock, until);
    }
    longest
}

/// Releases that freed a lock another build held: a release (an
/// `unclaiming:` commit by a build) of a lock whose current claim was made
/// by a build with another holder (`holder` maps a build id to who holds
/// what it claims: the build id itself, or the worker that ran it). An
/// operator's release (no build id) may end anyone's claim.
pub(crate) fn releases_of_others(
    log: &[CommitInfo],
    holder: &dyn Fn(&str) -> String,
) -> Vec<String> {
    let mut claimed_by: HashMap<String, (String, Option<String>)> = HashMap::new();
    let mut found = Vec::new();
    for c in log.iter().skip(1) {
        let parsed = Parsed::new(&c.body);
        let Some((verb, locks)) = parsed.locks() else {
            continue;
        };
        let by = parsed.trailer(Trailer::BuildId).map(str::to_string);
        for lock in locks {
            match verb.as_str() {
                "claiming" | "adding claimed" => {
                    claimed_by.insert(lock.to_string(), (c.sha.clone(), by.clone()));
                }
                "unclaiming" | "removing" => {
                    if let (Some((claim, Some(owner))), Some(releaser)) =
                        (claimed_by.remove(lock), &by)
                    {
                        if holder(&owner) != holder(releaser) {
                            found.push(format!(
                                "{} ({}) by build {releaser} freed lock {lock}, which build {owner} held since {claim}",
                                c.sha, c.subject
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    found
}

/// Claims left behind by puts that exited non-zero: a claim commit made by
/// a build of `failed` that the same build did not give back (an
/// `unclaiming:` of those locks by that build id, after it).
pub(crate) fn claims_left(log: &[CommitInfo], failed: &HashSet<String>) -> Vec<String> {
    let mut held: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for c in log.iter().skip(1) {
        let parsed = Parsed::new(&c.body);
        let (Some((verb, locks)), Some(by)) = (parsed.locks(), parsed.trailer(Trailer::BuildId))
        else {
            continue;
        };
        if !failed.contains(by) {
            continue;
        }
        let mine = held.entry(by.to_string()).or_default();
        match verb.as_str() {
            "claiming" => mine.extend(locks.iter().map(|l| (l.to_string(), c.sha.clone()))),
            "unclaiming" => mine.retain(|(l, _)| !locks.contains(&l.as_str())),
            _ => {}
        }
    }
    let mut left: Vec<String> = held
        .into_iter()
        .filter(|(_, locks)| !locks.is_empty())
        .map(|(build, locks)| {
            format!("build {build} exited non-zero and left its claim behind: {locks:?}")
        })
        .collect();
    left.sort();
    left
}

/// Everything the race promised, checked against the history.
fn assert_mutual_exclusion(arena: &Arena, cycles: &[Cycle], expected_claims: usize) {
    assert_race_history(
        &arena.repo,
        &arena.race_log(),
        &LOCKS,
        cycles,
        expected_claims,
    );
    assert!(arena.repo.claimed(POOL).is_empty());
    assert_eq!(arena.repo.unclaimed(POOL), LOCKS);
}

/// Checks a race of claim → release `cycles` against `log` (the branch of
/// `repo` from the race's base commit `log[0]`, whose pool held `locks`
/// unclaimed): the replay finds no double claim and no claim out of the
/// line's order, there are `expected_claims` claims, each version a process
/// printed is its own commit of the right kind on the branch and printed
/// once, each claim was ended by its holder's release, every commit message
/// is unique, every lock ends unclaimed and no ticket is left in line.
/// Prints and returns what the order check saw.
pub(crate) fn assert_race_history(
    repo: &LockRepo,
    log: &[CommitInfo],
    locks: &[&str],
    cycles: &[Cycle],
    expected_claims: usize,
) -> LineTotals {
    let Replayed {
        next_after_claim,
        states,
        line,
        last_line,
    } = replay(repo, log, locks);
    eprintln!("the line in this history: {line:?}");
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
    assert!(
        last_line.tickets.is_empty(),
        "every put succeeded, yet tickets are left in line: {:#?}",
        last_line.tickets
    );
    line
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
    assert_race_history(
        &arena.repo,
        &arena.race_log(),
        &FIVE,
        &cycles,
        workers * CYCLES,
    );
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
        let claimers =
            scope.spawn(|| race_named(&arena, "claimer", 2, rounds, &json!({"claim": "a"})));
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
    let double = std::panic::catch_unwind(|| replay(&repo, &log[start..], &["a"]));
    assert!(double.is_err(), "a double claim went unnoticed");

    let repo = LockRepo::new("master");
    repo.add_lock(POOL, "a", false, b"");
    let base = repo.tip();
    let claim = repo.move_lock(POOL, "a", true);
    let release = repo.move_lock(POOL, "a", false);
    let log = repo.log();
    let start = log.iter().position(|c| c.sha == base).unwrap();
    let replayed = replay(&repo, &log[start..], &["a"]);
    assert_eq!(replayed.next_after_claim.get(&claim), Some(&release));
    assert_eq!(replayed.states.get("a"), Some(&State::Unclaimed));
}

/// A ticket of build `build` wanting `wants` (`{"acquire": 1}`,
/// `{"claim": ["a"]}`), joined `seq`-th, live for an hour from now.
fn ticket(build: &str, wants: Value, seq: u64) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    json!({
        "id": format!("id-{build}"), "build": format!("build {build}"), "build_id": build,
        "wants": wants, "priority": 0, "arrived": now, "seq": seq, "renewed": now,
        "lease": 3600
    })
}

/// A pool of locks `a` and `b`, unclaimed, with `tickets` in line (joined
/// in one commit of its own), then `claimer` claiming `lock` and taking out
/// its ticket if it has one; the replay of that history.
fn replay_claim_beside(
    tickets: &[Value],
    claimer: &str,
    lock: &str,
) -> std::thread::Result<Replayed> {
    let repo = LockRepo::new("master");
    repo.add_lock(POOL, "a", false, b"");
    repo.add_lock(POOL, "b", false, b"");
    let base = repo.tip();
    let line = line_path();
    let joined = serde_json::to_vec(&json!({ "tickets": tickets })).expect("JSON");
    repo.commit_changes(
        &[(&line, &joined)],
        &[],
        &format!("waiting in line: {POOL}\n\nPool-Resource-Build-Id: {claimer}"),
    );
    let left: Vec<&Value> = tickets
        .iter()
        .filter(|t| t["build_id"] != claimer)
        .collect();
    let left = serde_json::to_vec(&json!({ "tickets": left })).expect("JSON");
    let moved = [
        (format!("{POOL}/claimed/{lock}"), Vec::new()),
        (line.clone(), left),
    ];
    let writes: Vec<(&str, &[u8])> = moved
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_slice()))
        .collect();
    repo.commit_changes(
        &writes,
        &[&format!("{POOL}/unclaimed/{lock}")],
        &format!("claiming: {lock}\n\nPool-Resource-Build-Id: {claimer}"),
    );
    let log = repo.log();
    let start = log.iter().position(|c| c.sha == base).expect("base");
    std::panic::catch_unwind(|| replay(&repo, &log[start..], &["a", "b"]))
}

/// The replay's order check itself: it must reject a claim of a lock a
/// live ticket ahead could use, by a newcomer or by a ticket behind, and
/// accept the claims the line allows, or else the races prove nothing
/// about order.
#[test]
fn the_replay_rejects_a_claim_out_of_the_lines_order() {
    let acquire = json!({"acquire": 1});
    let claim_a = json!({"claim": ["a"]});
    let rejected: [(&str, Vec<Value>, &str, &str); 4] = [
        (
            "a newcomer takes the lock kept for an acquire ahead",
            vec![ticket("w1", acquire.clone(), 1)],
            "new",
            "a",
        ),
        (
            "a newcomer takes the lock a claim waiter waits for",
            vec![ticket("w1", claim_a.clone(), 1)],
            "new",
            "a",
        ),
        (
            "the second in line takes the first's lock",
            vec![
                ticket("w1", acquire.clone(), 1),
                ticket("w2", acquire.clone(), 2),
            ],
            "w2",
            "a",
        ),
        (
            "an acquire: 2 ahead keeps both free locks",
            vec![
                ticket("w1", json!({"acquire": 2}), 1),
                ticket("w2", acquire.clone(), 2),
            ],
            "w2",
            "b",
        ),
    ];
    for (what, tickets, claimer, lock) in rejected {
        let why = match replay_claim_beside(&tickets, claimer, lock) {
            Ok(_) => panic!("not rejected: {what}"),
            Err(e) => e.downcast::<String>().map(|s| *s).unwrap_or_default(),
        };
        assert!(
            why.contains("kept for live tickets ahead in line"),
            "{what}: rejected for another reason: {why}"
        );
    }
    let accepted: [(&str, Vec<Value>, &str, &str); 4] = [
        (
            "the first in line takes its lock",
            vec![
                ticket("w1", acquire.clone(), 1),
                ticket("w2", acquire.clone(), 2),
            ],
            "w1",
            "a",
        ),
        (
            "the second in line takes the lock the first leaves",
            vec![
                ticket("w1", acquire.clone(), 1),
                ticket("w2", acquire.clone(), 2),
            ],
            "w2",
            "b",
        ),
        (
            "a claim waiter does not hold up another lock",
            vec![ticket("w1", claim_a.clone(), 1)],
            "new",
            "b",
        ),
        ("a newcomer takes what nobody waits for", vec![], "new", "a"),
    ];
    for (what, tickets, claimer, lock) in accepted {
        let replayed = replay_claim_beside(&tickets, claimer, lock)
            .unwrap_or_else(|_| panic!("rejected: {what}"));
        assert!(replayed.last_line.find(&format!("id-{claimer}")).is_none());
    }
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
    let replayed = replay(&arena.repo, &log, &LOCKS);
    eprintln!("the line in this history: {:?}", replayed.line);
}

/// Seconds since the Unix epoch.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// A pool of `a` and `b`: `a` claimed by build `holder` at `t0`, `b` by
/// `other`; at `t0 + 1` build `w1` joins the line wanting `wants` (renewed
/// then, for `lease` seconds); at `t0 + 2` `holder` releases `a`; at `t0 +
/// 102` `w1` claims `a` and takes its ticket out. The longest stall of
/// that history, to `t0 + 102`.
fn stall_of(wants: Value, lease: u64) -> Stall {
    let repo = LockRepo::new("master");
    repo.add_lock(POOL, "a", false, b"");
    repo.add_lock(POOL, "b", false, b"");
    let base = repo.tip();
    let t0 = unix_now() + 10;
    repo.move_lock_at(POOL, "a", true, t0, "Pool-Resource-Build-Id: holder");
    repo.move_lock_at(POOL, "b", true, t0, "Pool-Resource-Build-Id: other");
    let ticket = json!({
        "id": "id-w1", "build": "build w1", "build_id": "w1", "wants": wants,
        "priority": 0, "arrived": t0 + 1, "seq": 1, "renewed": t0 + 1, "lease": lease
    });
    let joined = serde_json::to_vec(&json!({ "tickets": [ticket] })).expect("JSON");
    repo.commit_changes_at(
        &[(&line_path(), &joined)],
        &[],
        &format!("waiting in line: {POOL}\n\nPool-Resource-Build-Id: w1"),
        Some(t0 + 1),
    );
    repo.move_lock_at(POOL, "a", false, t0 + 2, "Pool-Resource-Build-Id: holder");
    repo.commit_changes_at(
        &[(&format!("{POOL}/claimed/a"), b"")],
        &[&format!("{POOL}/unclaimed/a"), &line_path()],
        "claiming: a\n\nPool-Resource-Build-Id: w1",
        Some(t0 + 102),
    );
    let log = repo.log();
    let start = log.iter().position(|c| c.sha == base).expect("base");
    longest_stall(&repo, &log[start..], &["a", "b"], t0 + 102)
}

/// The stall check itself: a lock left free for 100 s beside a live
/// waiter that could take it is a stall over the bound; a waiter whose
/// lease lapsed stops counting then; a waiter that cannot take the free
/// lock (it wants a claimed one too, or more locks than are free) is no
/// stall at all.
#[test]
fn the_stall_check_finds_a_lock_left_free_beside_a_live_waiter() {
    let stall = stall_of(json!({"acquire": 1}), 3600);
    assert_eq!(stall.seconds, 100, "{stall}");
    assert_eq!(stall.lock, "a");
    assert!(stall.waiter.starts_with("w1 (acquire"), "{stall}");
    assert!(stall.seconds > stall_bound(None), "{stall}");
    let lapsed = stall_of(json!({"acquire": 1}), 10);
    assert_eq!(lapsed.seconds, 10, "{lapsed}");
    assert!(lapsed.seconds <= stall_bound(Some(10)));
    assert!(lapsed.seconds > stall_bound(Some(1)) - STALL_SLACK);
    for wants in [json!({"claim": ["a", "b"]}), json!({"acquire": 2})] {
        let none = stall_of(wants.clone(), 3600);
        assert_eq!(none.seconds, 0, "{wants}: {none}");
    }
}

/// The exclusion check on releases: a release by build A of a lock an
/// operator released and build B claimed since is found; A releasing its
/// own claim, and the operator releasing anyone's, are not.
#[test]
fn the_replay_finds_a_release_that_frees_a_lock_claimed_since_by_another_build() {
    let repo = LockRepo::new("master");
    repo.add_lock(POOL, "a", false, b"");
    let base = repo.tip();
    let now = unix_now();
    let by = |b: &str| format!("Pool-Resource-Build-Id: {b}");
    repo.move_lock_at(POOL, "a", true, now, &by("A"));
    repo.move_lock_at(POOL, "a", false, now, "Pool-Resource-Operator: ops");
    repo.move_lock_at(POOL, "a", true, now, &by("B"));
    let log = repo.log();
    let start = log.iter().position(|c| c.sha == base).expect("base");
    let same = |b: &str| b.to_string();
    assert!(releases_of_others(&log[start..], &same).is_empty());
    repo.move_lock_at(POOL, "a", false, now, &by("A"));
    let log = repo.log();
    let found = releases_of_others(&log[start..], &same);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("by build A freed lock a, which build B held"),
        "{found:?}"
    );
    // The replay itself takes it for an ordinary release: only this check
    // tells the holders apart.
    replay(&repo, &log[start..], &["a"]);
}

/// The check that no failed put leaves a claim: a claim by a build that
/// exited non-zero is found unless that build gave it back itself.
#[test]
fn the_replay_finds_a_claim_left_by_a_put_that_failed() {
    let repo = LockRepo::new("master");
    repo.add_lock(POOL, "a", false, b"");
    repo.add_lock(POOL, "b", false, b"");
    let base = repo.tip();
    let now = unix_now();
    let by = |b: &str| format!("Pool-Resource-Build-Id: {b}");
    repo.move_lock_at(POOL, "a", true, now, &by("gave-back"));
    repo.move_lock_at(POOL, "a", false, now, &by("gave-back"));
    repo.move_lock_at(POOL, "b", true, now, &by("left"));
    repo.move_lock_at(POOL, "a", true, now, &by("succeeded"));
    let log = repo.log();
    let start = log.iter().position(|c| c.sha == base).expect("base");
    let failed: HashSet<String> = ["gave-back", "left"].map(String::from).into();
    let left = claims_left(&log[start..], &failed);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].starts_with("build left exited non-zero"),
        "{left:?}"
    );
}

/// A commit of the waiting room under a subject the replay has never seen
/// (`dropping a waiter:`), changing only the line's folder and adding
/// fields to the line file, replays as a line commit; a commit with that
/// subject that also moves a lock does not.
#[test]
fn the_replay_accepts_any_commit_that_changes_only_the_line() {
    let repo = LockRepo::new("master");
    repo.add_lock(POOL, "a", false, b"");
    let base = repo.tip();
    let joined = serde_json::to_vec(&json!({
        "tickets": [ticket("w1", json!({"acquire": 1}), 1), ticket("w2", json!({"acquire": 1}), 2)]
    }))
    .expect("JSON");
    repo.commit_changes(
        &[(&line_path(), &joined)],
        &[],
        "waiting in line: envs\n\nPool-Resource-Build-Id: w2",
    );
    let dropped = serde_json::to_vec(&json!({
        "tickets": [ticket("w2", json!({"acquire": 1}), 2)],
        "dropped": [{"id": "id-w1", "build": "build w1", "why": "not renewed"}]
    }))
    .expect("JSON");
    repo.commit_changes(
        &[(&line_path(), &dropped)],
        &[],
        "dropping a waiter: envs (build w1)\n\nPool-Resource-Build-Id: w2",
    );
    let log = repo.log();
    let start = log.iter().position(|c| c.sha == base).expect("base");
    let replayed = replay(&repo, &log[start..], &["a"]);
    assert_eq!(replayed.line.ticket_commits, 2);
    assert_eq!(replayed.last_line.tickets.len(), 1);
    repo.commit_changes(
        &[(&format!("{POOL}/claimed/a"), b"")],
        &[&format!("{POOL}/unclaimed/a")],
        "dropping a waiter: envs\n\nPool-Resource-Build-Id: w2",
    );
    let log = repo.log();
    let start = log.iter().position(|c| c.sha == base).expect("base");
    let moved = std::panic::catch_unwind(|| replay(&repo, &log[start..], &["a"]));
    assert!(moved.is_err(), "a lock moved under a line commit's subject");
}
