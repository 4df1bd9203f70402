//! `pool init`, `add`, `remove`, `claim` and `release`: an operator's
//! change to the pool's locks, one commit made as the resource makes it,
//! refused (nothing committed) when the pool says no.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::model::commit::CommitMeta;
use crate::model::duration::{ago, utc};
use crate::model::message::Verb;
use crate::model::names::{LockName, PoolPath};
use crate::model::pool::{
    plan, plan_release_all, LockState, Operation, Plan, Single, Snapshot, Wait,
};
use crate::model::shares::Holder;
use crate::operator::ops::{made, one, rounds, Actor, Done, Operator, STATUS_LOOKBACK};
use crate::process::clock::now_unix;
use crate::store::explain::explain;
use crate::store::reads::{claim_of, lock_verbs};
use crate::store::retry::Round;
use crate::store::seam::{shares_edit, FileEdit, LockStore, Step};

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
pub struct Guard<'a> {
    /// `--force`: release a build's claim, remove a claimed lock.
    pub force: bool,
    /// `release --force --holder ID`: give back only this holder's share
    /// of a lock held shared.
    pub holder: Option<&'a str>,
    /// `release --force --all`: free a lock held shared for every holder
    /// at once (on a lock held by one build, a plain forced release).
    pub all: bool,
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
        let mut shares = Vec::new();
        let mut planned = None;
        match op {
            Operation::Single(Single::Release(lock))
                if guard.holder.is_some()
                    || guard.all
                    || (snap.claimed.contains_key(lock) && snap.shares.is_shared(lock)) =>
            {
                let (p, ids) = release_shared(&snap, pool, lock, who, guard)?;
                planned = Some(Ok(p));
                shares = ids;
            }
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
        let planned =
            planned.unwrap_or_else(|| plan(op, &snap, pool, &mut |n| fastrand::usize(..n)));
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
        let step = operator_step(pool, &snap, change, who, &shares);
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

/// An operator's commit of `change`: the operator and reason trailers, a
/// `Pool-Resource-Share` trailer for each share in `shares` it gives back,
/// and the shares file as the change leaves it (a removed lock's holders
/// go with it).
fn operator_step(
    pool: &PoolPath,
    snap: &Snapshot,
    change: crate::model::pool::Change,
    who: &Operator,
    shares: &[String],
) -> Step {
    let message = who.message_giving_back(&change.subject, shares);
    Step {
        files: shares_edit(pool, snap, &change, None).into_iter().collect(),
        ..Step::new(change, message)
    }
}

/// `pool release L` of a lock held shared, or with `--holder`/`--all`:
/// the plan, and the holder ids the commit gives back. Without
/// `--holder ID` or `--all` a forced release is a usage error naming the
/// holders (it cannot tell which to release); `--holder` naming no holder
/// of the lock, or given for a lock held by one build, is refused.
fn release_shared(
    snap: &Snapshot,
    pool: &PoolPath,
    lock: &LockName,
    who: &Operator,
    guard: Guard<'_>,
) -> Result<(Plan, Vec<String>)> {
    let holders = snap.shares.holders(lock);
    let named = || {
        format!(
            "lock {lock} of pool {pool} is held shared by {}",
            crate::model::shares::describe_holders(holders, |h| format!("as {}", h.id))
        )
    };
    if !(guard.force && who.reason.is_some()) {
        let what = if holders.is_empty() {
            format!("releasing lock {lock} of pool {pool} for its holders")
        } else {
            named()
        };
        return Err(Error::bad_request(format!(
            "{what}; giving back a build's share needs --force --reason TEXT with --holder ID (one share) or --all (every share)"
        )));
    }
    if guard.all {
        let ids = holders.iter().map(|h| h.id.clone()).collect();
        return Ok((plan_release_all(lock, snap, pool)?, ids));
    }
    let Some(id) = guard.holder else {
        return Err(Error::Usage(format!(
            "{}: say which to release, --holder ID (that one share) or --all (every share, freeing the lock)",
            named()
        )));
    };
    if let Some(why) = &snap.shares.unreadable {
        return Err(Error::Shared {
            pool: pool.to_string(),
            lock: lock.to_string(),
            detail: format!(
                "the pool's shares file cannot be read ({why}), so holder {id} cannot be found in it; pool release {lock} --force --all frees the lock and clears the file"
            ),
        });
    }
    if !snap.claimed.contains_key(lock) {
        // Not found, or not claimed: as a plain release says it.
        return Ok((
            plan(
                &Single::Release(lock.clone()).into(),
                snap,
                pool,
                &mut |_| 0,
            )?,
            Vec::new(),
        ));
    }
    if holders.is_empty() {
        return Err(Error::bad_request(format!(
            "lock {lock} of pool {pool} is held by one build, not shared, so it has no holder {id}; release it with --force alone"
        )));
    }
    if snap.shares.find(lock, id).is_none() {
        return Err(Error::bad_request(format!(
            "{}, none of them {id}; nothing was committed",
            named()
        )));
    }
    let op: Operation = Single::Unshare {
        lock: lock.clone(),
        id: id.to_string(),
    }
    .into();
    Ok((plan(&op, snap, pool, &mut |_| 0)?, vec![id.to_string()]))
}

/// Gives back `holder`'s share of `lock` (`unsharing: L`, or `unclaiming:
/// L` when it is the last) only while that holder still holds it as it
/// was looked at (same id, same since): one commit with `who`'s trailers
/// and the share's; `None` (nothing committed) when it was given back
/// since. What `pool reap` does for each holder it reaps.
pub fn release_share(
    store: &mut dyn LockStore,
    pool: &PoolPath,
    lock: &LockName,
    holder: &Holder,
    who: &Operator,
) -> Result<Option<Done>> {
    let doing = format!(
        "giving back share {} of lock {lock} of pool {pool}",
        holder.id
    );
    rounds(&doing, |tries| {
        let snap = store.snapshot().map_err(|e| explain(store, e))?;
        if let Some(found) = tries.recovery.recover(store)? {
            return Ok(Round::Done(Some(Done {
                lines: vec![format!(
                    "an earlier push whose reply was lost did reach the branch: {} ({})",
                    found.commit, found.lock
                )],
                commits: vec![found.commit.to_string()],
            })));
        }
        tries.check_rejected(&snap.tip)?;
        let still = snap.shares.find(lock, &holder.id);
        if !snap.claimed.contains_key(lock) || still.is_none_or(|h| h.since != holder.since) {
            return Ok(Round::Done(None));
        }
        let op: Operation = Single::Unshare {
            lock: lock.clone(),
            id: holder.id.clone(),
        }
        .into();
        let change = match plan(&op, &snap, pool, &mut |_| 0)? {
            Plan::Commit(change) => change,
            Plan::Satisfied(_) | Plan::Wait(_) => return Ok(Round::Done(None)),
        };
        let subject = change.subject.clone();
        let step = operator_step(pool, &snap, change, who, std::slice::from_ref(&holder.id));
        Ok(match tries.commit(store, &snap, &[step])? {
            Some(id) => Round::Done(Some(one(&subject, id.to_string()))),
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
