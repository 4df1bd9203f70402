//! The operator's view of pools: who holds what since when, the claim
//! history, and the operator's changes (`pool status`, `history`, `init`,
//! `add`, `remove`, `claim`, `release`, `hold`, `unhold`, `reap`).
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
use crate::model::duration::{ago, now_unix, utc};
use crate::model::message::{commit_message, operator_trailers, Verb};
use crate::model::names::{LockName, PoolPath};
use crate::model::pool::{plan, Hold, LockState, Operation, Plan};
use crate::process::log::Log;
use crate::process::signal::Interrupt;
use crate::store::reads::{changed, claim_of, lock_dirs, lock_verbs};
use crate::store::retry::{self, Policy, Round, Tries};
use crate::store::seam::{FileEdit, LockStore, Step, HISTORY_WALK_LIMIT};

pub use crate::model::commit::Actor;
pub use crate::store::reads::{find_pools, POOL_SEARCH_DEPTH, STATUS_LOOKBACK};

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
    pub name: String,
    /// `claimed` or `unclaimed`.
    pub state: &'static str,
    /// Since when, and by whom.
    pub since: Since,
    /// Seconds from `since` to the time of the status.
    pub for_seconds: i64,
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
    pub lock: String,
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
}

fn tip_of(store: &mut dyn LockStore, branch: &str) -> Result<String> {
    store.branch_tip()?.ok_or_else(|| Error::BranchNotFound {
        branch: branch.to_string(),
        uri: "the lock repository".into(),
    })
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
    let mut open: BTreeMap<(String, String), LockState> = BTreeMap::new();
    for name in &names {
        let Some(locks) = lock_dirs(store, &tip, name)? else {
            return Err(Error::PoolNotFound {
                pool: name.clone(),
                branch: branch.to_string(),
                uri: "the lock repository".into(),
            });
        };
        for (lock, state) in locks {
            open.insert((name.clone(), lock), state);
        }
        let hold_path = format!("{}/{name}.json", Hold::DIR);
        let hold = store.read_file(&tip, &hold_path)?.map(|b| Hold::parse(&b));
        pools.push(PoolStatus {
            pool: name.clone(),
            hold,
            locks: Vec::new(),
        });
    }
    let mut found: BTreeMap<(String, String), Since> = BTreeMap::new();
    let mut oldest = now;
    let mut looked_back = 0;
    let mut candidates: Vec<CommitMeta> = Vec::new();
    // First the walk (cheap), then the path checks on the few candidates.
    // The walk stops once each open lock has a candidate that would leave
    // it in its present state (a same-named lock of another pool can take
    // that place; the path check then leaves it "since before").
    let mut need: BTreeMap<String, Vec<LockState>> = BTreeMap::new();
    for ((_, lock), state) in &open {
        need.entry(lock.clone()).or_default().push(*state);
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
            let keys: Vec<(String, String)> =
                open.keys().filter(|(_, l)| l == lock).cloned().collect();
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
                state: state.dir(),
                for_seconds: (now - since.time()).max(0),
                since,
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
    /// The status for people, one line per pool and lock.
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
                out.push_str(&format!("  {:<24} {:<9} {when}\n", l.name, l.state));
            }
        }
        out
    }
}

/// `pool history`: claims of the pools' locks (of `lock` only, if given)
/// made since `since` (Unix seconds), newest first, with their releases.
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
    let mut releases: BTreeMap<(String, String), (String, i64, Actor)> = BTreeMap::new();
    let mut out = Vec::new();
    for c in &commits {
        for (verb, l) in lock_verbs(c) {
            for pool in pools {
                let path = format!("{pool}/claimed/{l}");
                if !changed(store, c, &path)? {
                    continue;
                }
                let key = (pool.clone(), l.to_string());
                if verb.leaves_claimed() {
                    let release = releases.remove(&key);
                    let end = release.as_ref().map(|r| r.1).unwrap_or(now);
                    out.push(Interval {
                        pool: pool.clone(),
                        lock: l.to_string(),
                        claimed_commit: c.id.clone(),
                        claimed_at: c.time,
                        claimed_by: Actor::of(c),
                        released_commit: release.as_ref().map(|r| r.0.clone()),
                        released_at: release.as_ref().map(|r| r.1),
                        released_by: release.map(|r| r.2),
                        seconds: (end - c.time).max(0),
                    });
                } else {
                    releases.insert(key, (c.id.clone(), c.time, Actor::of(c)));
                }
            }
        }
    }
    Ok(out)
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
        let snap = store.snapshot()?;
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
        match op {
            Operation::Release(lock) if snap.claimed.contains_key(lock) => {
                let claim = claim_of(store, &snap.tip, pool, lock)?;
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
            Operation::Remove(lock) if snap.claimed.contains_key(lock) && !guard.force => {
                return Err(Error::bad_request(format!(
                    "lock {lock} of pool {pool} is claimed; removing a claimed lock needs --force"
                )));
            }
            _ => {}
        }
        let change = match plan(op, &snap, pool, &mut |n| fastrand::usize(..n))? {
            Plan::Commit(change) => change,
            Plan::Satisfied(_) => {
                return Ok(Round::Done(Done {
                    commits: Vec::new(),
                    lines: vec!["nothing to do".into()],
                }))
            }
            Plan::Wait(why) => {
                let why = why.describe(pool);
                match wait.as_mut() {
                    Some(w) => {
                        w(&why)?;
                        return Ok(Round::Waited);
                    }
                    None => return Err(Error::bad_request(format!("{}: {why}", op.param()))),
                }
            }
        };
        let subject = change.subject.clone();
        let step = Step::new(change, who.message(&subject));
        Ok(match tries.commit(store, &snap, &[step])? {
            Some(id) => Round::Done(one(&subject, id.to_string())),
            None => Round::Again,
        })
    })
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
        let snap = store.snapshot()?;
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
            if l.state != "claimed" || l.since.time() > limit {
                continue;
            }
            let held = ago(l.since.time(), st.now);
            if dry_run {
                done.lines
                    .push(format!("would release {} (claimed for {held})", l.name));
                continue;
            }
            let Ok(lock) = LockName::new(&l.name) else {
                continue;
            };
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
                &Operation::Release(lock),
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
