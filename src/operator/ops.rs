//! The operator's view of pools: who holds what since when, who waits in
//! line, the claim history, and the operator's changes (`pool status`,
//! `history`, `init`, `add`, `remove`, `claim`, `release`, `hold`,
//! `unhold`, `reap`, `dequeue`).
//!
//! The read side is a library model ([`Status`], [`Interval`]) that
//! serialises to the JSON `pool status --json` and `pool history --json`
//! print (documented in the README), built from any [`LockStore`] with a
//! bounded look at the history ([`crate::store::reads`], shared with the
//! resource): at most [`STATUS_LOOKBACK`] commits, so its cost does not
//! grow with the repository; a state older than that is reported as "since
//! before" the oldest commit seen. Holders are named as on every screen
//! ([`Actor::name`]). The write side makes the same Go-compatible commits
//! the resource makes, with the operator and reason as trailers
//! ([`crate::model::message`]), in the same read–plan–commit loop
//! ([`crate::store::retry`]); a network fault fails the command at once
//! (a person is there to run it again).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::commit::CommitMeta;
use crate::model::duration::{ago, utc};
use crate::model::line::{Line, Ticket, Wants};
use crate::model::message::{commit_message, dequeue_subject, operator_trailers, Verb};
use crate::model::names::{LockName, PoolPath};
use crate::model::pool::{plan, Hold, LockState, Operation, Plan, Single, Wait};
use crate::operator::concourse::build::{
    judge, judge_ticket, BuildRef, BuildState, DeadPolicy, Lookup, Target, Verdict,
};
use crate::process::clock::now_unix;
use crate::process::log::Log;
use crate::process::signal::Interrupt;
use crate::store::explain::explain;
use crate::store::reads::{changed, claim_of, lock_dirs, lock_verbs};
use crate::store::retry::{self, Policy, Round, Tries};
use crate::store::seam::{FileEdit, LockStore, Step, HISTORY_WALK_LIMIT};

pub use crate::model::commit::Actor;
pub use crate::store::reads::STATUS_LOOKBACK;
pub use crate::store::reads::{find_pools, POOL_SEARCH_DEPTH};

/// Lost races tolerated by one operator command.
const MAX_RACES: u32 = 20;

/// When a lock got into its state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Since {
    /// The commit that put it there: its id, committer time and maker.
    Commit {
        /// The commit id.
        commit: String,
        /// Committer time, Unix seconds.
        time: i64,
        /// The same, RFC 3339 UTC.
        utc: String,
        /// Who made it.
        by: Actor,
        /// What it did to the lock (claimed, released, added, updated it):
        /// for the page's words, not in the JSON.
        #[serde(skip)]
        verb: Verb,
    },
    /// Beyond the look-back: before the oldest commit seen.
    Before {
        /// The oldest commit seen, Unix seconds.
        time: i64,
        /// The same, RFC 3339 UTC.
        utc: String,
    },
}

impl Since {
    /// The time it gives (exact or a bound).
    pub fn time(&self) -> i64 {
        match self {
            Since::Commit { time, .. } | Since::Before { time, .. } => *time,
        }
    }
}

/// One lock in [`Status`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LockStatus {
    /// The lock's name.
    pub name: LockName,
    /// `claimed` or `unclaimed` in JSON.
    pub state: LockState,
    /// Since when, and by whom.
    pub since: Since,
    /// Seconds from `since` to the time of the status.
    pub for_seconds: i64,
    /// What Concourse says of the holder's build, when Concourse access
    /// is configured and a build holds the lock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_status: Option<BuildState>,
}

/// One pool in [`Status`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PoolStatus {
    /// The pool's directory.
    pub pool: String,
    /// The operator's hold, if any.
    pub hold: Option<Hold>,
    /// Its locks, by name.
    pub locks: Vec<LockStatus>,
    /// Who waits for its locks ([`waiters`]): the live tickets in the
    /// order they are served, then the expired ones (marked, no position).
    pub line: Vec<Waiter>,
    /// Why the line file could not be read, when it could not (the line
    /// then counts as empty until the next write replaces the file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line_unreadable: Option<String>,
    /// The line file as read, so that [`Status::at`] can tell again which
    /// tickets are live later on (a lease lapses without any commit).
    #[serde(skip)]
    pub line_file: Line,
}

impl PoolStatus {
    /// The live tickets at `now`: how many wait, and since when the one
    /// that has waited longest waits (Unix seconds).
    pub fn waiting(&self, now: i64) -> (usize, Option<i64>) {
        let live = self.line_file.live(now);
        (live.len(), live.iter().map(|t| t.arrived).min())
    }
}

/// One ticket of a pool's line in [`PoolStatus::line`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Waiter {
    /// 1-based place among the live tickets, in the order they are served
    /// (priority, then the order they joined); `None` when expired.
    pub position: Option<usize>,
    /// The ticket id (what `pool dequeue` takes).
    pub id: String,
    /// Who waits: `team/pipeline/job #name`, or `build ID`.
    pub build: String,
    /// Concourse's `BUILD_ID`, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    /// The build's URL, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// What it waits for: `{"acquire": N}` or `{"claim": [L, ..]}`, as in
    /// the line file.
    pub wants: Wants,
    /// Its priority (higher goes first).
    pub priority: i64,
    /// When it joined the line, Unix seconds.
    pub arrived: i64,
    /// The same, RFC 3339 UTC.
    pub arrived_utc: String,
    /// Seconds from `arrived` to the time of the status.
    pub waiting_seconds: i64,
    /// When its put last renewed it, Unix seconds.
    pub renewed: i64,
    /// Seconds after `renewed` that it still counts (`source.waiter_lease`).
    pub lease_seconds: u64,
    /// Whether its lease lapsed: it counts for no one, and the next commit
    /// that writes the line drops it.
    pub expired: bool,
}

/// The tickets of `line` at `now`: the live ones in the order they are
/// served, then the expired ones by arrival.
pub fn waiters(line: &Line, now: i64) -> Vec<Waiter> {
    let waiter = |t: &Ticket, position: Option<usize>| Waiter {
        position,
        id: t.id.clone(),
        build: t.build.clone(),
        build_id: t.build_id.clone(),
        url: t.url.clone(),
        wants: t.wants.clone(),
        priority: t.priority,
        arrived: t.arrived,
        arrived_utc: utc(t.arrived),
        waiting_seconds: (now - t.arrived).max(0),
        renewed: t.renewed,
        lease_seconds: t.lease,
        expired: position.is_none(),
    };
    let mut out: Vec<Waiter> = line
        .live(now)
        .into_iter()
        .enumerate()
        .map(|(i, t)| waiter(t, Some(i + 1)))
        .collect();
    let mut expired: Vec<&Ticket> = line.tickets.iter().filter(|t| !t.is_live(now)).collect();
    expired.sort_by_key(|t| (t.arrived, t.id.clone()));
    out.extend(expired.into_iter().map(|t| waiter(t, None)));
    out
}

/// `pool status`: every pool asked for at the branch tip.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The branch.
    pub branch: String,
    /// The commit the status was read at.
    pub tip: String,
    /// When it was read, Unix seconds.
    pub now: i64,
    /// How many commits were looked at.
    pub looked_back: usize,
    /// The pools.
    pub pools: Vec<PoolStatus>,
}

/// One claim of a lock in [`history`]: from the claim to its release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Interval {
    /// The pool.
    pub pool: String,
    /// The lock.
    pub lock: LockName,
    /// The claiming commit.
    pub claimed_commit: String,
    /// Its committer time, Unix seconds.
    pub claimed_at: i64,
    /// Who claimed it.
    pub claimed_by: Actor,
    /// The commit that released (or removed) it; `None` while claimed.
    pub released_commit: Option<String>,
    /// Its committer time.
    pub released_at: Option<i64>,
    /// Who released it.
    pub released_by: Option<Actor>,
    /// Seconds held (until now while still claimed).
    pub seconds: i64,
    /// What Concourse says of the claimant's build, for a claim still held
    /// when Concourse access is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_status: Option<BuildState>,
}

fn tip_of(store: &mut dyn LockStore, branch: &str) -> Result<String> {
    match store.branch_tip()? {
        Some(tip) => Ok(tip),
        None => {
            let missing = Error::BranchNotFound {
                branch: branch.to_string(),
                uri: "the lock repository".into(),
            };
            Err(explain(store, missing))
        }
    }
}

/// Reads the status of `pool` (or of every pool on the branch).
pub fn status(store: &mut dyn LockStore, branch: &str, pool: Option<&PoolPath>) -> Result<Status> {
    let tip = tip_of(store, branch)?;
    let now = now_unix();
    let names = match pool {
        Some(p) => vec![p.to_string()],
        None => find_pools(store, &tip)?,
    };
    let mut pools = Vec::new();
    // (pool, lock) → state, for the locks whose "since" is still unknown.
    let mut open: BTreeMap<(String, LockName), LockState> = BTreeMap::new();
    for name in &names {
        let Some(locks) = lock_dirs(store, &tip, name)? else {
            let missing = Error::PoolNotFound {
                pool: name.clone(),
                branch: branch.to_string(),
                uri: "the lock repository".into(),
            };
            return Err(explain(store, missing));
        };
        for (lock, state) in locks {
            open.insert((name.clone(), lock), state);
        }
        let hold_path = format!("{}/{name}.json", Hold::DIR);
        let hold = store.read_file(&tip, &hold_path)?.map(|b| Hold::parse(&b));
        let line_path = format!("{}/{name}.json", Line::DIR);
        let line_file = store
            .read_file(&tip, &line_path)?
            .map(|b| Line::parse(&b))
            .unwrap_or_default();
        pools.push(PoolStatus {
            pool: name.clone(),
            hold,
            locks: Vec::new(),
            line: waiters(&line_file, now),
            line_unreadable: line_file.unreadable.clone(),
            line_file,
        });
    }
    let mut found: BTreeMap<(String, LockName), Since> = BTreeMap::new();
    let mut oldest = now;
    let mut looked_back = 0;
    let mut candidates: Vec<CommitMeta> = Vec::new();
    // First the walk (cheap), then the path checks on the few candidates.
    // The walk stops once each open lock has a candidate that would leave
    // it in its present state (a same-named lock of another pool can take
    // that place; the path check then leaves it "since before").
    let mut need: BTreeMap<&str, Vec<LockState>> = BTreeMap::new();
    for ((_, lock), state) in &open {
        need.entry(lock.as_str()).or_default().push(*state);
    }
    store.walk_commits(&tip, STATUS_LOOKBACK, &mut |c| {
        looked_back += 1;
        oldest = c.time;
        for (verb, lock) in lock_verbs(c) {
            if let Some(states) = need.get_mut(lock) {
                if candidates.last().map(|k| &k.id) != Some(&c.id) {
                    candidates.push(c.clone());
                }
                let resulting = if verb.leaves_claimed() {
                    LockState::Claimed
                } else {
                    LockState::Unclaimed
                };
                if verb != Verb::Removing {
                    if let Some(i) = states.iter().position(|s| *s == resulting) {
                        states.remove(i);
                    }
                }
                if states.is_empty() {
                    need.remove(lock);
                }
            }
        }
        need.is_empty()
    })?;
    for c in &candidates {
        for (verb, lock) in lock_verbs(c) {
            let keys: Vec<(String, LockName)> = open
                .keys()
                .filter(|(_, l)| l.as_str() == lock)
                .cloned()
                .collect();
            for key in keys {
                let state = open[&key];
                let resulting = if verb.leaves_claimed() {
                    LockState::Claimed
                } else {
                    LockState::Unclaimed
                };
                if resulting != state || verb == Verb::Removing {
                    continue;
                }
                let path = format!("{}/{}/{}", key.0, state.dir(), key.1);
                if changed(store, c, &path)? {
                    open.remove(&key);
                    found.insert(
                        key,
                        Since::Commit {
                            commit: c.id.clone(),
                            time: c.time,
                            utc: utc(c.time),
                            by: Actor::of(c),
                            verb,
                        },
                    );
                }
            }
        }
        if open.is_empty() {
            break;
        }
    }
    for p in &mut pools {
        let locks = lock_dirs(store, &tip, &p.pool)?.unwrap_or_default();
        for (name, state) in locks {
            let since = found
                .remove(&(p.pool.clone(), name.clone()))
                .unwrap_or(Since::Before {
                    time: oldest,
                    utc: utc(oldest),
                });
            p.locks.push(LockStatus {
                name,
                state,
                for_seconds: (now - since.time()).max(0),
                since,
                build_status: None,
            });
        }
    }
    Ok(Status {
        branch: branch.to_string(),
        tip,
        now,
        looked_back,
        pools,
    })
}

impl Status {
    /// This status as read at `now` instead: the times brought up to it,
    /// and the line's positions and expiries again (`pool serve` reads only
    /// when the tip moves, and a ticket's lease lapses without a commit).
    pub fn at(&self, now: i64) -> Status {
        let mut st = self.clone();
        st.now = now;
        for p in &mut st.pools {
            for l in &mut p.locks {
                l.for_seconds = (now - l.since.time()).max(0);
            }
            p.line = waiters(&p.line_file, now);
        }
        st
    }

    /// The status for people, one line per pool and lock, then the pool's
    /// line (only when someone waits or waited).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for p in &self.pools {
            out.push_str(&format!("pool {}", p.pool));
            if let Some(h) = &p.hold {
                out.push_str(&format!(" — {}", h.describe(self.now)));
            }
            out.push('\n');
            if p.locks.is_empty() {
                out.push_str("  (no locks)\n");
            }
            for l in &p.locks {
                let when = match &l.since {
                    Since::Commit { utc, by, .. } => {
                        format!(
                            "since {utc} (for {}) by {}",
                            ago(l.since.time(), self.now),
                            by.describe()
                        )
                    }
                    Since::Before { utc, .. } => format!("since before {utc}"),
                };
                let build = match &l.build_status {
                    Some(b) => format!(" — build {}", b.describe(self.now)),
                    None => String::new(),
                };
                out.push_str(&format!("  {:<24} {:<9} {when}{build}\n", l.name, l.state));
            }
            out.push_str(&render_line(p, self.now));
        }
        out
    }
}

/// A pool's line for people: nothing when nobody waits.
fn render_line(p: &PoolStatus, now: i64) -> String {
    let mut out = String::new();
    if let Some(why) = &p.line_unreadable {
        out.push_str(&format!(
            "  line: {why} (counts as empty; the next commit to the line replaces it)\n"
        ));
    }
    if p.line.is_empty() {
        return out;
    }
    let live = p.line.iter().filter(|w| !w.expired).count();
    out.push_str(&format!("  line: {live} waiting\n"));
    for w in &p.line {
        let place = match w.position {
            Some(n) => format!("{n}."),
            None => "-".into(),
        };
        let mut row = format!(
            "    {place:<3} {}  {}, priority {}, ",
            w.build,
            w.wants.describe(),
            w.priority
        );
        if w.expired {
            row.push_str(&format!(
                "expired {} ago (lease lapsed; counts for no one)",
                ago(w.renewed.saturating_add(w.lease_seconds as i64), now)
            ));
        } else {
            row.push_str(&format!(
                "waiting {} (since {})",
                ago(w.arrived, now),
                w.arrived_utc
            ));
        }
        row.push_str(&format!("  ticket {}", w.id));
        if let Some(url) = &w.url {
            row.push_str(&format!("  {url}"));
        }
        out.push_str(&row);
        out.push('\n');
    }
    out
}

/// `pool history`: claims of the pools' locks (of `lock` only, if given)
/// made since `since` (Unix seconds), newest first, with their releases.
/// A `lock` that is in none of the pools and has no claims in the window
/// is an error (a typo must not read as "never claimed").
pub fn history(
    store: &mut dyn LockStore,
    branch: &str,
    pools: &[String],
    lock: Option<&str>,
    since: i64,
) -> Result<Vec<Interval>> {
    let tip = tip_of(store, branch)?;
    let now = now_unix();
    let mut commits = Vec::new();
    store.walk_commits(&tip, HISTORY_WALK_LIMIT, &mut |c| {
        if c.time < since {
            return true;
        }
        if lock_verbs(c)
            .iter()
            .any(|(_, l)| lock.is_none_or(|want| want == *l))
        {
            commits.push(c.clone());
        }
        false
    })?;
    let mut releases: BTreeMap<(String, LockName), (String, i64, Actor)> = BTreeMap::new();
    let mut out = Vec::new();
    for c in &commits {
        for (verb, l) in lock_verbs(c) {
            // A name no lock can have (status lists none such) has no claims.
            let Ok(lock) = LockName::new(l) else {
                continue;
            };
            for pool in pools {
                let path = format!("{pool}/claimed/{l}");
                if !changed(store, c, &path)? {
                    continue;
                }
                let key = (pool.clone(), lock.clone());
                if verb.leaves_claimed() {
                    let release = releases.remove(&key);
                    let end = release.as_ref().map(|r| r.1).unwrap_or(now);
                    out.push(Interval {
                        pool: pool.clone(),
                        lock: lock.clone(),
                        claimed_commit: c.id.clone(),
                        claimed_at: c.time,
                        claimed_by: Actor::of(c),
                        released_commit: release.as_ref().map(|r| r.0.clone()),
                        released_at: release.as_ref().map(|r| r.1),
                        released_by: release.map(|r| r.2),
                        seconds: (end - c.time).max(0),
                        build_status: None,
                    });
                } else {
                    releases.insert(key, (c.id.clone(), c.time, Actor::of(c)));
                }
            }
        }
    }
    if let Some(lock) = lock {
        if out.is_empty() && !lock_in_any(store, &tip, pools, lock)? {
            return Err(unknown_lock(branch, pools, lock));
        }
    }
    Ok(out)
}

/// Whether `lock` is a lock (claimed or not) of one of `pools` at `tip`.
fn lock_in_any(store: &mut dyn LockStore, tip: &str, pools: &[String], lock: &str) -> Result<bool> {
    for pool in pools {
        for state in [LockState::Claimed, LockState::Unclaimed] {
            let path = format!("{pool}/{}/{lock}", state.dir());
            if store.entry_id(tip, &path)?.is_some() {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// The error for a lock that `history` finds nowhere.
fn unknown_lock(branch: &str, pools: &[String], lock: &str) -> Error {
    match pools {
        [pool] => Error::LockNotFound {
            pool: pool.clone(),
            lock: lock.to_string(),
        },
        _ => {
            const SHOWN: usize = 10;
            let mut names = pools
                .iter()
                .take(SHOWN)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            if pools.len() > SHOWN {
                names.push_str(&format!(" and {} more", pools.len() - SHOWN));
            }
            Error::Repository {
                what: format!("lock {lock:?} does not exist"),
                detail: if pools.is_empty() {
                    format!("branch {branch:?} has no pools")
                } else {
                    format!("it is in none of the pools on branch {branch:?} ({names}) and has no claims in the window")
                },
            }
        }
    }
}

/// Who is acting and why, for the trailers of an operator's commit.
#[derive(Clone, Debug)]
pub struct Operator {
    /// `--as`, else git's user, else `$USER@hostname`.
    pub name: String,
    /// `--reason`.
    pub reason: Option<String>,
}

impl Operator {
    fn message(&self, subject: &str) -> String {
        commit_message(
            subject,
            None,
            &operator_trailers(&self.name, self.reason.as_deref()),
        )
    }
}

/// What an operator's change came to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Done {
    /// The commits made, oldest first (none when there was nothing to do).
    pub commits: Vec<String>,
    /// One line per commit or decision, for people.
    pub lines: Vec<String>,
}

/// `pool init LOCK...`: the pool's `claimed/.gitkeep` and
/// `unclaimed/.gitkeep` and the missing locks (unclaimed), one lock per
/// commit; the branch is created in an empty repository. Nothing to do, no
/// commit.
pub fn init(
    store: &mut dyn LockStore,
    pool: &PoolPath,
    locks: &[LockName],
    who: &Operator,
) -> Result<Done> {
    let mut done = Done {
        commits: Vec::new(),
        lines: Vec::new(),
    };
    rounds(&format!("initialising pool {pool}"), |tries| {
        let tip = store.branch_tip()?;
        tries.check_rejected(tip.as_deref().unwrap_or_default())?;
        let mut edits = Vec::new();
        let mut existing = BTreeMap::new();
        for dir in ["claimed", "unclaimed"] {
            let keep = format!("{pool}/{dir}/.gitkeep");
            let has = match &tip {
                Some(t) => store.entry_id(t, &keep)?.is_some(),
                None => false,
            };
            if !has {
                edits.push(FileEdit {
                    path: keep,
                    content: Some(Vec::new()),
                });
            }
            if let Some(t) = &tip {
                if let Some(entries) = store.list_folder(t, &format!("{pool}/{dir}"))? {
                    for e in entries {
                        existing.insert(e.name, dir);
                    }
                }
            }
        }
        let missing = locks.iter().find(|l| !existing.contains_key(l.as_str()));
        let subject = match missing {
            Some(lock) => {
                edits.push(FileEdit {
                    path: pool.lock_path(LockState::Unclaimed, lock),
                    content: Some(format!("{lock}\n").into_bytes()),
                });
                Verb::AddingUnclaimed.subject(lock)
            }
            None if edits.is_empty() => return Ok(Round::Done(())),
            None => format!("initialising pool: {pool}"),
        };
        let outcome = store.commit_files(tip.as_deref(), &edits, &who.message(&subject))?;
        if let Some(made) = made(tries, outcome, tip.as_deref().unwrap_or_default(), &subject) {
            done.lines.extend(made.lines);
            done.commits.extend(made.commits);
        }
        Ok(Round::Again)
    })?;
    Ok(done)
}

/// Called between looks by a waiting `claim --wait` with why it waits;
/// an error (a signal) stops the wait.
pub type WaitFn<'a> = &'a mut dyn FnMut(&str) -> Result<()>;

/// What an operator's change to one lock needs besides the operation.
#[derive(Clone, Copy, Debug, Default)]
pub struct Guard {
    /// `--force`: release a build's claim, remove a claimed lock.
    pub force: bool,
}

/// `add`, `remove`, `claim`, `release` by an operator: one commit made as
/// the resource makes it, refused (nothing committed) when the pool says
/// no. `claim` of a claimed lock (or of a held pool) fails unless `wait`
/// is given, which is called between looks and may fail to stop.
pub fn change_lock(
    store: &mut dyn LockStore,
    pool: &PoolPath,
    op: &Operation,
    who: &Operator,
    guard: Guard,
    wait: Option<WaitFn<'_>>,
) -> Result<Done> {
    let mut wait = wait;
    rounds(&format!("running {} on pool {pool}", op.param()), |tries| {
        let snap = store.snapshot().map_err(|e| explain(store, e))?;
        if let Some(found) = tries.recovery.recover(store)? {
            return Ok(Round::Done(Done {
                lines: vec![format!(
                    "an earlier push whose reply was lost did reach the branch: {} ({})",
                    found.commit, found.lock
                )],
                commits: vec![found.commit.to_string()],
            }));
        }
        tries.check_rejected(&snap.tip)?;
        let mut note = None;
        match op {
            Operation::Single(Single::Release(lock)) if snap.claimed.contains_key(lock) => {
                let claim = claim_of(store, &snap.tip, pool, lock)?;
                note = claim.as_ref().and_then(|c| claimed_with(c, lock, pool));
                let by_build = claim.as_ref().is_none_or(|c| Actor::of(c).is_build());
                if by_build && !(guard.force && who.reason.is_some()) {
                    let holder = claim
                        .as_ref()
                        .map(|c| Actor::of(c).describe())
                        .unwrap_or_else(|| "a claim older than the look-back".into());
                    return Err(Error::bad_request(format!(
                        "lock {lock} of pool {pool} is claimed by {holder}; releasing a build's claim needs --force --reason TEXT"
                    )));
                }
            }
            Operation::Single(Single::Remove(lock))
                if snap.claimed.contains_key(lock) && !guard.force =>
            {
                return Err(Error::bad_request(format!(
                    "lock {lock} of pool {pool} is claimed; removing a claimed lock needs --force"
                )));
            }
            _ => {}
        }
        let planned = plan(op, &snap, pool, &mut |n| fastrand::usize(..n));
        let change = match planned.map_err(|e| explain(store, e))? {
            Plan::Commit(change) => change,
            Plan::Satisfied(_) => {
                return Ok(Round::Done(Done {
                    commits: Vec::new(),
                    lines: vec!["nothing to do".into()],
                }))
            }
            Plan::Wait(waits_for) => {
                let why = waits_for.describe(pool, now_unix());
                match wait.as_mut() {
                    Some(w) => {
                        w(&why)?;
                        return Ok(Round::Waited);
                    }
                    None => return Err(refusal(store, &snap.tip, pool, op, &waits_for, why)),
                }
            }
        };
        let subject = change.subject.clone();
        let step = Step::new(change, who.message(&subject));
        Ok(match tries.commit(store, &snap, &[step])? {
            Some(id) => {
                let mut done = one(&subject, id.to_string());
                done.lines.extend(note.take());
                Round::Done(done)
            }
            None => Round::Again,
        })
    })
}

/// For the release of `lock` whose claim `c` claimed other locks with it
/// in one commit: a line saying that the holder's release of the set now
/// refuses, and which locks to free with it ([`crate::resource::holder::check_fences`]).
fn claimed_with(c: &CommitMeta, lock: &LockName, pool: &PoolPath) -> Option<String> {
    let others: Vec<&str> = lock_verbs(c)
        .into_iter()
        .map(|(_, l)| l)
        .filter(|l| *l != lock.as_str())
        .collect();
    if others.is_empty() {
        return None;
    }
    Some(format!(
        "note: lock {lock} of pool {pool} was claimed together with {} by {} in {}; that build's release of the set now refuses and leaves them claimed: free them too (pool release NAME --force --reason TEXT)",
        others.join(", "),
        Actor::of(c).describe(),
        c.id
    ))
}

/// Runs an operator command's rounds in the one read–plan–commit loop:
/// lost races retried (at most [`MAX_RACES`]), a refused push looked at
/// again, a network fault failing at once. Nothing is logged: the command
/// prints what it did.
fn rounds<T>(doing: &str, round: impl FnMut(&mut Tries) -> Result<Round<T>>) -> Result<T> {
    let quiet = Log::new(Box::new(std::io::sink()));
    let policy = Policy {
        log: &quiet,
        interrupt: &Interrupt::default(),
        backoff: None,
        max_races: MAX_RACES,
        doing,
        uri: "the lock repository",
    };
    retry::run(&policy, round)
}

/// What one commit made: its id, and one line for people.
fn one(subject: &str, id: String) -> Done {
    Done {
        lines: vec![format!("{subject} ({id})")],
        commits: vec![id],
    }
}

/// Why a change that would have to wait was refused, and the way out:
/// for a claimed lock who holds it and since when, then `--wait`.
fn refusal(
    store: &mut dyn LockStore,
    tip: &str,
    pool: &PoolPath,
    op: &Operation,
    waits_for: &Wait,
    why: String,
) -> Error {
    let (why, until) = match waits_for {
        Wait::Claimed(lock) => {
            let holder = match claim_of(store, tip, pool, lock) {
                Ok(Some(c)) => format!(
                    " by {} since {} (for {})",
                    Actor::of(&c).describe(),
                    utc(c.time),
                    ago(c.time, now_unix())
                ),
                Ok(None) => format!(" since before the last {STATUS_LOOKBACK} commits"),
                Err(_) => String::new(),
            };
            (format!("{why}{holder}"), "until it is released")
        }
        Wait::Held(_) => (why, "until the pool is unheld (pool unhold)"),
        _ => (why, "until it can be done"),
    };
    Error::bad_request(format!(
        "{}: {why}; add --wait to wait {until}, or see who holds what with pool status",
        op.param()
    ))
}

/// What an operator's file commit built on `tip` came to
/// ([`Tries::outcome`]): the commit, or `None` to look again.
fn made(
    tries: &mut Tries,
    outcome: crate::store::seam::CommitOutcome,
    tip: &str,
    subject: &str,
) -> Option<Done> {
    tries
        .outcome(outcome, tip)
        .map(|id| one(subject, id.to_string()))
}

/// `hold` (with `Some(reason)`) or `unhold` (`None`) of `pool`.
pub fn set_hold(
    store: &mut dyn LockStore,
    pool: &PoolPath,
    who: &Operator,
    hold: bool,
) -> Result<Done> {
    let doing = format!("{} pool {pool}", if hold { "holding" } else { "unholding" });
    rounds(&doing, |tries| {
        let snap = store.snapshot().map_err(|e| explain(store, e))?;
        tries.check_rejected(&snap.tip)?;
        let path = Hold::path(pool);
        let (subject, content) = match (&snap.hold, hold) {
            (Some(h), true) => {
                return Err(Error::bad_request(format!(
                    "pool {pool} is already {}",
                    h.describe(now_unix())
                )))
            }
            (None, false) => {
                return Err(Error::bad_request(format!("pool {pool} is not held")));
            }
            (None, true) => {
                let h = Hold {
                    by: who.name.clone(),
                    reason: who.reason.clone().unwrap_or_default(),
                    since: now_unix(),
                };
                let json = serde_json::to_vec_pretty(&h).unwrap_or_default();
                (crate::model::message::hold_subject(pool), Some(json))
            }
            (Some(_), false) => (crate::model::message::unhold_subject(pool), None),
        };
        let edits = [FileEdit { path, content }];
        let outcome = store.commit_files(Some(&snap.tip), &edits, &who.message(&subject))?;
        Ok(match made(tries, outcome, &snap.tip, &subject) {
            Some(done) => Round::Done(done),
            None => Round::Again,
        })
    })
}

/// `reap`: releases the claims of `pool` older than `older_than` seconds
/// (by the claim commit's committer time; a claim beyond the look-back is
/// older than the oldest commit seen), recording why. With `dry_run`, only
/// says which.
pub fn reap(
    store: &mut dyn LockStore,
    branch: &str,
    pool: &PoolPath,
    older_than: i64,
    dry_run: bool,
    who: &Operator,
) -> Result<Done> {
    let st = status(store, branch, Some(pool))?;
    let mut done = Done {
        commits: Vec::new(),
        lines: Vec::new(),
    };
    let limit = st.now - older_than;
    for p in &st.pools {
        for l in &p.locks {
            if l.state != LockState::Claimed || l.since.time() > limit {
                continue;
            }
            let held = ago(l.since.time(), st.now);
            if dry_run {
                done.lines
                    .push(format!("would release {} (claimed for {held})", l.name));
                continue;
            }
            let lock = l.name.clone();
            let reason = match &who.reason {
                Some(r) => format!("{r} (reaped: claimed for {held})"),
                None => format!(
                    "reaped: claimed for {held}, longer than {}",
                    ago(0, older_than)
                ),
            };
            let reaper = Operator {
                name: who.name.clone(),
                reason: Some(reason),
            };
            let one = change_lock(
                store,
                pool,
                &Single::Release(lock).into(),
                &reaper,
                Guard { force: true },
                None,
            )?;
            done.commits.extend(one.commits);
            done.lines.extend(one.lines);
        }
    }
    if done.lines.is_empty() {
        done.lines.push(format!(
            "no claim in pool {pool} is older than {}",
            ago(0, older_than)
        ));
    }
    Ok(done)
}

/// Releases `lock` of `pool` only while its claim is still commit `claim`:
/// one commit, `None` (nothing committed) when the lock was released, or
/// released and claimed again, since that claim was looked at.
pub fn release_claim(
    store: &mut dyn LockStore,
    pool: &PoolPath,
    lock: &LockName,
    claim: &str,
    who: &Operator,
) -> Result<Option<Done>> {
    rounds(&format!("reaping lock {lock} of pool {pool}"), |tries| {
        let snap = store.snapshot()?;
        if let Some(found) = tries.recovery.recover(store)? {
            return Ok(Round::Done(Some(one(
                &format!("unclaiming: {}", found.lock),
                found.commit.to_string(),
            ))));
        }
        tries.check_rejected(&snap.tip)?;
        if !snap.claimed.contains_key(lock) {
            return Ok(Round::Done(None));
        }
        match claim_of(store, &snap.tip, pool, lock)? {
            Some(c) if c.id == claim => {}
            _ => return Ok(Round::Done(None)),
        }
        let op = Operation::from(Single::Release(lock.clone()));
        let change = match plan(&op, &snap, pool, &mut |n| fastrand::usize(..n))? {
            Plan::Commit(change) => change,
            Plan::Satisfied(_) | Plan::Wait(_) => return Ok(Round::Done(None)),
        };
        let subject = change.subject.clone();
        let step = Step::new(change, who.message(&subject));
        Ok(match tries.commit(store, &snap, &[step])? {
            Some(id) => Round::Done(Some(one(&subject, id.to_string()))),
            None => Round::Again,
        })
    })
}

/// What to do with a claim or ticket whose build Concourse answered about:
/// keep it when the answer is about another build than the one recorded
/// (a reused id), else what `judged` says.
fn verdict(
    answer: &Lookup,
    recorded: crate::operator::concourse::build::Recorded<'_>,
    judged: impl FnOnce() -> Verdict,
) -> Verdict {
    if let Lookup::Found(b) = answer {
        if let Some(why) = crate::operator::concourse::build::mismatch(recorded, b) {
            return Verdict::Keep(why);
        }
    }
    judged()
}

/// The operator `who` reaping for `why`: the reason recorded in the commit.
fn reaper(who: &Operator, why: &str) -> Operator {
    let reason = match &who.reason {
        Some(r) => format!("{r} (reaped: {why})"),
        None => format!("reaped: {why}"),
    };
    Operator {
        name: who.name.clone(),
        reason: Some(reason),
    }
}

/// Asks Concourse about all the builds given at once (see
/// [`crate::operator::concourse::Builds::lookup_all`]): every answer, or
/// an error.
pub type BuildLookupFn<'a> = &'a mut dyn FnMut(&[BuildRef]) -> Result<BTreeMap<BuildRef, Lookup>>;

/// `reap --dead`: releases the claims of `pool` whose build is over as
/// `policy` counts it (ended `failed`, `errored` or `aborted` longer than
/// the grace ago; `succeeded` too with `finished`; unknown to Concourse
/// with `missing`), then removes from the pool's line the live tickets
/// whose build ended in any status longer than the grace ago
/// ([`judge_ticket`]; expired tickets are left to the next write of the
/// line, unasked). Operators' claims and running builds are never
/// released. Every build is asked about before anything is released or
/// removed, so an API failure changes nothing. Each release is its own
/// commit, fenced on the claim looked at, and each removal a commit of the
/// line file alone, as `dequeue` makes it, of the ticket looked at; both
/// with the build, its status and end time as the reason. `concourse`
/// (`--concourse-url`, a fly target's URL) is asked instead of the
/// Concourse each claim or ticket recorded. With `dry_run`, only says what
/// it would do.
#[allow(clippy::too_many_arguments)]
pub fn reap_dead(
    store: &mut dyn LockStore,
    branch: &str,
    pool: &PoolPath,
    policy: DeadPolicy,
    dry_run: bool,
    who: &Operator,
    concourse: Option<&str>,
    lookup: BuildLookupFn<'_>,
) -> Result<Done> {
    let st = status(store, branch, Some(pool))?;
    let mut done = Done {
        commits: Vec::new(),
        lines: Vec::new(),
    };
    // (lock, claim commit, holder, build, the build in words)
    let mut claims: Vec<(String, String, Actor, BuildRef, String)> = Vec::new();
    for p in &st.pools {
        for l in p.locks.iter().filter(|l| l.state == LockState::Claimed) {
            let (commit, by) = match &l.since {
                Since::Commit { commit, by, .. } => (commit, by),
                Since::Before { utc, .. } => {
                    done.lines.push(format!(
                        "kept {}: claimed before {utc}, beyond the look-back, so its build is unknown",
                        l.name
                    ));
                    continue;
                }
            };
            if let Some(op) = &by.operator {
                done.lines
                    .push(format!("kept {}: claimed by operator {op}", l.name));
                continue;
            }
            match crate::operator::concourse::build::find(
                crate::operator::concourse::build::recorded(by),
                concourse,
            ) {
                Ok(r) => {
                    let what = match (&by.build, &r.target) {
                        (Some(b), Target::Id(id)) => format!("{b} (build {id})"),
                        (Some(b), Target::Job { .. }) => b.clone(),
                        (None, _) => r.describe(),
                    };
                    claims.push((l.name.to_string(), commit.clone(), by.clone(), r, what));
                }
                Err(why) => done.lines.push(format!(
                    "kept {}: claimed by {}: {why}",
                    l.name,
                    by.describe()
                )),
            }
        }
    }
    // (ticket, build, the build in words)
    let mut tickets: Vec<(Ticket, BuildRef, String)> = Vec::new();
    for p in &st.pools {
        if let Some(why) = &p.line_unreadable {
            done.lines.push(format!(
                "line of pool {pool}: {why} (counts as empty; the next commit to the line replaces it)"
            ));
        }
        for t in &p.line_file.tickets {
            if !t.is_live(st.now) {
                // It counts for no one already: no question to ask.
                done.lines.push(format!(
                    "left ticket {} ({}): its lease lapsed, so it counts for no one and the next write of the line drops it",
                    t.id, t.build
                ));
                continue;
            }
            match crate::operator::concourse::build::find(
                crate::operator::concourse::build::waiting(t),
                concourse,
            ) {
                Ok(r) => {
                    let what = match &r.target {
                        Target::Id(id) if t.build != r.describe() => {
                            format!("{} (build {id})", t.build)
                        }
                        _ => t.build.clone(),
                    };
                    tickets.push((t.clone(), r, what));
                }
                Err(why) => done
                    .lines
                    .push(format!("kept ticket {} ({}): {why}", t.id, t.build)),
            }
        }
    }
    // No API, no reaping: every answer first.
    // In the order of the claims, then the tickets: the first names the
    // Concourse credentials go to when no URL was given.
    let mut refs: Vec<BuildRef> = Vec::new();
    for r in claims
        .iter()
        .map(|(_, _, _, r, _)| r)
        .chain(tickets.iter().map(|(_, r, _)| r))
    {
        if !refs.contains(r) {
            refs.push(r.clone());
        }
    }
    let answers = if refs.is_empty() {
        BTreeMap::new()
    } else {
        lookup(&refs)?
    };
    for (name, claim, by, r, what) in &claims {
        let Some(answer) = answers.get(r) else {
            continue;
        };
        let recorded = crate::operator::concourse::build::recorded(by);
        let why = match verdict(answer, recorded, || judge(what, answer, st.now, policy)) {
            Verdict::Keep(why) => {
                done.lines.push(format!("kept {name}: {why}"));
                continue;
            }
            Verdict::Reap(why) => why,
        };
        if dry_run {
            done.lines.push(format!("would release {name}: {why}"));
            continue;
        }
        let Ok(lock) = LockName::new(name) else {
            continue;
        };
        match release_claim(store, pool, &lock, claim, &reaper(who, &why))? {
            Some(one) => {
                done.commits.extend(one.commits);
                done.lines
                    .extend(one.lines.into_iter().map(|l| format!("{l}: {why}")));
            }
            None => done.lines.push(format!(
                "kept {name}: released or claimed again since {why}"
            )),
        }
    }
    for (ticket, r, what) in &tickets {
        let Some(answer) = answers.get(r) else {
            continue;
        };
        let named = format!("ticket {} ({})", ticket.id, ticket.build);
        let recorded = crate::operator::concourse::build::waiting(ticket);
        let why = match verdict(answer, recorded, || {
            judge_ticket(what, answer, st.now, policy)
        }) {
            Verdict::Keep(why) => {
                done.lines.push(format!("kept {named}: {why}"));
                continue;
            }
            Verdict::Reap(why) => why,
        };
        if dry_run {
            done.lines.push(format!(
                "would remove {named} from the line of pool {pool}: {why}"
            ));
            continue;
        }
        let reaper = reaper(who, &why);
        // The ticket looked at, while it still counts: one that left the
        // line (its put gave up or got its locks) or lapsed is not touched.
        let doing = format!("removing {named} from the line of pool {pool}");
        let mut pick =
            |line: &Line, now: i64| Ok(line.find(&ticket.id).filter(|t| t.is_live(now)).cloned());
        match remove_ticket(store, pool, &doing, &reaper, &mut pick)? {
            Some(mut one) => {
                if let Some(last) = one.lines.last_mut() {
                    last.push_str(&format!(": {why}"));
                }
                done.commits.extend(one.commits);
                done.lines.extend(one.lines);
            }
            None => done.lines.push(format!(
                "kept {named}: {why}, but it left the line or its lease lapsed since it was looked at"
            )),
        }
    }
    if done.lines.is_empty() {
        done.lines.push(format!(
            "no lock of pool {pool} is claimed by a build, and nobody waits in its line"
        ));
    }
    Ok(done)
}

/// The ticket of the line that `waiter` names: its ticket id, else the
/// build (`team/pipeline/job #name`) or build id of exactly one ticket,
/// live or expired. Errors name the pool and list who waits, or the
/// matches when several do.
pub fn find_waiter<'a>(
    line: &'a Line,
    waiter: &str,
    pool: &PoolPath,
    now: i64,
) -> Result<&'a Ticket> {
    let wanted = waiter.trim();
    if let Some(t) = line.find(wanted) {
        return Ok(t);
    }
    let matches: Vec<&Ticket> = line
        .tickets
        .iter()
        .filter(|t| t.build == wanted || t.build_id.as_deref() == Some(wanted))
        .collect();
    let list = |tickets: &[&Ticket]| {
        tickets
            .iter()
            .map(|t| {
                let state = match line.position(&t.id, now) {
                    Some((n, _)) => format!("position {n}"),
                    None => "expired".into(),
                };
                format!(
                    "ticket {} ({}, {}, {state})",
                    t.id,
                    t.build,
                    t.wants.describe()
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    match matches.as_slice() {
        [one] => Ok(one),
        [] => {
            let all: Vec<&Ticket> = line.tickets.iter().collect();
            let waiting = if all.is_empty() {
                match &line.unreadable {
                    Some(why) => format!("nobody ({why})"),
                    None => "nobody".into(),
                }
            } else {
                list(&all)
            };
            Err(Error::bad_request(format!(
                "no waiter {wanted:?} in the line of pool {pool} (a ticket id, build name or build id); waiting: {waiting}"
            )))
        }
        several => Err(Error::bad_request(format!(
            "{wanted:?} matches {} waiters in the line of pool {pool}: {}; name one by its ticket id",
            several.len(),
            list(several)
        ))),
    }
}

/// `dequeue WAITER`: removes the ticket `waiter` names ([`find_waiter`])
/// from the line of `pool`, in one commit of the line file alone, with the
/// operator and reason as trailers. Expired tickets go with it, as with
/// every write of the line. Nothing is committed when no ticket or several
/// match. The put whose ticket it was stops waiting and fails.
pub fn dequeue(
    store: &mut dyn LockStore,
    pool: &PoolPath,
    waiter: &str,
    who: &Operator,
) -> Result<Done> {
    let doing = format!("dequeuing {waiter} from pool {pool}");
    let mut pick =
        |line: &Line, now: i64| find_waiter(line, waiter, pool, now).map(|t| Some(t.clone()));
    remove_ticket(store, pool, &doing, who, &mut pick)?.ok_or_else(|| {
        Error::bad_request(format!("no waiter {waiter:?} in the line of pool {pool}"))
    })
}

/// Chooses, in the line as read at a time, the ticket to remove (`None`:
/// none any more); an error stops the removal.
type PickFn<'a> = &'a mut dyn FnMut(&Line, i64) -> Result<Option<Ticket>>;

/// Removes from the line of `pool` the ticket `pick` chooses, in one commit
/// of the line file alone with `who`'s trailers, in the one read–plan–commit
/// loop (the choice made again on each look). `None`, nothing committed,
/// when `pick` chooses none.
fn remove_ticket(
    store: &mut dyn LockStore,
    pool: &PoolPath,
    doing: &str,
    who: &Operator,
    pick: PickFn<'_>,
) -> Result<Option<Done>> {
    rounds(doing, |tries| {
        let snap = store.snapshot()?;
        tries.check_rejected(&snap.tip)?;
        let now = now_unix();
        let Some(ticket) = pick(&snap.line, now)? else {
            return Ok(Round::Done(None));
        };
        let what = format!(
            "removed ticket {} ({}, {}) from the line of pool {pool}",
            ticket.id,
            ticket.build,
            ticket.wants.describe()
        );
        let subject = dequeue_subject(pool, &ticket.build);
        let edits = [FileEdit {
            path: Line::path(pool),
            content: snap.line.without(&ticket.id, now).to_bytes(),
        }];
        let outcome = store.commit_files(Some(&snap.tip), &edits, &who.message(&subject))?;
        Ok(match made(tries, outcome, &snap.tip, &subject) {
            Some(mut done) => {
                done.lines.push(what);
                Round::Done(Some(done))
            }
            None => Round::Again,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line file as the put loop writes it: (id, build, build id, wants,
    /// priority, arrived = seq, lease).
    fn line(tickets: &[(&str, &str, &str, &str, i64, i64, u64)]) -> Line {
        let tickets: Vec<serde_json::Value> = tickets
            .iter()
            .map(|(id, build, build_id, wants, priority, arrived, lease)| {
                serde_json::json!({
                    "id": id, "build": build, "build_id": build_id,
                    "url": format!("https://ci/builds/{build_id}"),
                    "wants": serde_json::from_str::<serde_json::Value>(wants).unwrap(),
                    "priority": priority, "arrived": arrived, "seq": arrived,
                    "renewed": arrived, "lease": lease,
                })
            })
            .collect();
        let l = Line::parse(
            serde_json::json!({ "tickets": tickets })
                .to_string()
                .as_bytes(),
        );
        assert_eq!(l.unreadable, None);
        l
    }

    fn sample() -> Line {
        line(&[
            (
                "t-c",
                "main/app/deploy #3",
                "103",
                r#"{"acquire": 1}"#,
                0,
                30,
                1000,
            ),
            (
                "t-a",
                "main/app/deploy #1",
                "101",
                r#"{"acquire": 2}"#,
                0,
                10,
                1000,
            ),
            (
                "t-b",
                "main/app/test #9",
                "109",
                r#"{"claim": ["qa"]}"#,
                5,
                20,
                1000,
            ),
            (
                "t-x",
                "main/app/deploy #1",
                "100",
                r#"{"acquire": 1}"#,
                0,
                5,
                10,
            ),
        ])
    }

    fn pool_status(l: Line, now: i64) -> PoolStatus {
        PoolStatus {
            pool: "envs".into(),
            hold: None,
            locks: Vec::new(),
            line: waiters(&l, now),
            line_unreadable: l.unreadable.clone(),
            line_file: l,
        }
    }

    #[test]
    fn waiters_are_listed_in_serving_order_and_expired_ones_last_without_a_place() {
        let w = waiters(&sample(), 100);
        let got: Vec<(&str, Option<usize>, bool)> = w
            .iter()
            .map(|w| (w.id.as_str(), w.position, w.expired))
            .collect();
        assert_eq!(
            got,
            [
                ("t-b", Some(1), false),
                ("t-a", Some(2), false),
                ("t-c", Some(3), false),
                ("t-x", None, true),
            ]
        );
        assert_eq!(w[1].waiting_seconds, 90);
        let json = serde_json::to_value(&w[0]).unwrap();
        assert_eq!(json["wants"], serde_json::json!({"claim": ["qa"]}));
        assert_eq!(json["url"], "https://ci/builds/109");
        let p = pool_status(sample(), 100);
        assert_eq!(p.waiting(100), (3, Some(10)));
        assert_eq!(p.waiting(5000), (0, None), "every lease lapsed by then");
    }

    #[test]
    fn a_status_brought_to_a_later_time_expires_the_tickets_whose_lease_lapsed() {
        let st = Status {
            branch: "main".into(),
            tip: "c".into(),
            now: 100,
            looked_back: 1,
            pools: vec![pool_status(sample(), 100)],
        };
        let later = st.at(1015);
        assert_eq!(later.now, 1015);
        let live: Vec<&str> = later.pools[0]
            .line
            .iter()
            .filter(|w| !w.expired)
            .map(|w| w.id.as_str())
            .collect();
        assert_eq!(live, ["t-b", "t-c"], "t-a's lease ran out at 1010");
        assert_eq!(later.pools[0].line[0].waiting_seconds, 995);
    }

    #[test]
    fn the_text_lists_the_line_under_the_locks_and_nothing_when_nobody_waits() {
        let st = Status {
            branch: "main".into(),
            tip: "c".into(),
            now: 100,
            looked_back: 1,
            pools: vec![pool_status(sample(), 100)],
        };
        let text = st.render();
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows[0], "pool envs");
        assert_eq!(rows[2], "  line: 3 waiting");
        assert!(rows[3].starts_with("    1.  main/app/test #9  claim: qa, priority 5, waiting 1m20s (since 1970-01-01T00:00:20Z)  ticket t-b  https://ci/builds/109"), "{text}");
        assert!(
            rows[4].contains("main/app/deploy #1  acquire: 2, priority 0"),
            "{text}"
        );
        assert!(
            rows[6]
                .starts_with("    -   main/app/deploy #1  acquire, priority 0, expired 1m25s ago"),
            "{text}"
        );
        let empty = Status {
            pools: vec![pool_status(Line::default(), 100)],
            ..st
        };
        assert_eq!(empty.render(), "pool envs\n  (no locks)\n");
        let broken = Line::parse(b"{");
        assert!(pool_status(broken, 100).line_unreadable.is_some());
    }

    #[test]
    fn a_waiter_is_named_by_ticket_build_or_build_id_and_an_ambiguous_name_lists_the_matches() {
        let l = sample();
        let pool = PoolPath::new("envs").unwrap();
        let id = |w: &str| find_waiter(&l, w, &pool, 100).map(|t| t.id.clone());
        assert_eq!(id("t-c").unwrap(), "t-c");
        assert_eq!(id("main/app/test #9").unwrap(), "t-b");
        assert_eq!(id(" 103 ").unwrap(), "t-c");
        assert_eq!(
            id("100").unwrap(),
            "t-x",
            "an expired ticket can be named too"
        );
        let err = id("main/app/deploy #1").unwrap_err().to_string();
        assert!(
            err.contains("matches 2 waiters in the line of pool envs"),
            "{err}"
        );
        assert!(
            err.contains("ticket t-a (main/app/deploy #1, acquire: 2, position 2)"),
            "{err}"
        );
        assert!(
            err.contains("ticket t-x (main/app/deploy #1, acquire, expired)"),
            "{err}"
        );
        let err = id("main/app/nope #1").unwrap_err().to_string();
        assert!(
            err.contains("no waiter \"main/app/nope #1\" in the line of pool envs"),
            "{err}"
        );
        assert!(err.contains("ticket t-b"), "{err}");
        let err = find_waiter(&Line::default(), "x", &pool, 1)
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("waiting: nobody"), "{err}");
    }
}
