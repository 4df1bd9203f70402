//! `pool init`, `add`, `remove`, `claim` and `release`: an operator's
//! change to the pool's locks, one commit made as the resource makes it,
//! refused (nothing committed) when the pool says no.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::model::commit::CommitMeta;
use crate::model::duration::{ago, utc};
use crate::model::message::Verb;
use crate::model::names::{LockName, PoolPath};
use crate::model::pool::{plan, LockState, Operation, Plan, Single, Wait};
use crate::operator::ops::{made, one, rounds, Actor, Done, Operator, STATUS_LOOKBACK};
use crate::process::clock::now_unix;
use crate::store::explain::explain;
use crate::store::reads::{claim_of, lock_verbs};
use crate::store::retry::Round;
use crate::store::seam::{FileEdit, LockStore, Step};

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
