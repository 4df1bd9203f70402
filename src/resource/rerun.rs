//! A put run again by the same build.
//!
//! When Concourse cannot re-attach to a running put (after a web node
//! restart, say) it runs the put again, and when the reply of an accepted
//! push is lost the put fails although its lock is claimed. Either way the
//! build may already hold the lock its put asks for. Every commit records
//! the build that made it (`Pool-Resource-Build-Id`, and the `Build URL`
//! line), so with `idempotent: true` an `acquire`, `claim` or `release` first
//! looks at who made the commit that put each lock in its current state and,
//! if that was this build doing the same thing, answers with that commit
//! instead of doing it a second time.
//!
//! It is opt-in because one build may legitimately take two locks from one
//! pool with two puts of identical params: with `idempotent: true` the
//! second would get the first one's lock back.

use std::collections::HashMap;

use crate::error::Result;
use crate::model::message::{Parsed, Trailer, Verb};
use crate::model::names::LockName;
use crate::model::pool::{Multi, Operation, Single, Snapshot};
use crate::protocol::BuildInfo;
use crate::store::seam::{CommitWalk, HISTORY_WALK_LIMIT};

/// What an earlier run of the same put by this build did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Earlier {
    /// The commit it made: the version this put reports.
    pub commit: String,
    /// The lock it changed.
    pub lock: LockName,
    /// The other locks it changed, if it moved several.
    pub also: Vec<LockName>,
}

impl Earlier {
    /// Its locks, `, `-separated, as `lock_name` lists them.
    pub fn lock_list(&self) -> String {
        crate::model::pool::join_names(std::iter::once(&self.lock).chain(&self.also))
    }
}

/// Commit subjects that leave a lock in the state `op` wants.
fn verbs(op: &Single) -> &'static [Verb] {
    match op {
        Single::Acquire | Single::Claim(_) => &[Verb::Claiming],
        Single::Release(_) => &[Verb::Unclaiming],
        Single::Add { .. }
        | Single::Remove(_)
        | Single::Update { .. }
        | Single::WaitUntilUnclaimed(_)
        | Single::WaitUntilClaimed(_)
        // A shared hold is found again by its holder id, not by this.
        | Single::Share { .. }
        | Single::Unshare { .. } => &[],
    }
}

/// [`verbs`] for an operation on several locks.
fn verbs_many(op: &Multi) -> &'static [Verb] {
    match op {
        Multi::Acquire(_) | Multi::Claim(_) => &[Verb::Claiming],
        Multi::Release(_) => &[Verb::Unclaiming],
    }
}

/// Whether `message` is a commit made by `build`: its build-id trailer is
/// this build's and it ran on the same Concourse.
pub fn made_by(message: &str, build: &BuildInfo) -> bool {
    let Some(id) = build.get("BUILD_ID") else {
        return false;
    };
    let message = Parsed::new(message);
    let site = |url: Option<&str>| url.map(|u| u.trim_end_matches('/').to_string());
    message.trailer(Trailer::BuildId) == Some(id)
        && site(message.trailer(Trailer::Concourse)) == site(build.get("ATC_EXTERNAL_URL"))
}

/// The earlier run of `op` by `build` that the pool in `snap` still shows,
/// if any: for `acquire`, the newest claim by this build of a lock that is
/// still claimed; for `claim: L`, the claim of `L` if this build made it;
/// for `release`, the release of the lock if this build made it and the lock
/// has stayed unclaimed since.
pub fn find(
    store: &mut dyn CommitWalk,
    snap: &Snapshot,
    op: &Operation,
    build: &BuildInfo,
) -> Result<Option<Earlier>> {
    let one = match op {
        Operation::Multi(many) => return find_many(store, snap, many, build),
        Operation::Single(Single::Unshare { lock, id }) => {
            return find_unshare(store, snap, lock, id, build)
        }
        Operation::Single(one) => one,
    };
    let wanted: Vec<&LockName> = match one {
        Single::Acquire => snap.claimed.keys().collect(),
        Single::Claim(lock) if snap.claimed.contains_key(lock) => vec![lock],
        Single::Release(lock)
            if snap.unclaimed.contains_key(lock) && !snap.claimed.contains_key(lock) =>
        {
            vec![lock]
        }
        _ => Vec::new(),
    };
    if wanted.is_empty() {
        return Ok(None);
    }
    let verbs = verbs(one);
    // Each wanted lock is decided by the newest commit that moved it into
    // its current state; once it is seen, older commits no longer matter.
    let mut open: HashMap<&str, &LockName> = wanted.iter().map(|l| (l.as_str(), *l)).collect();
    let mut found = None;
    store.walk_commits(&snap.tip, HISTORY_WALK_LIMIT, &mut |c| {
        let (id, message) = (&c.id, &c.message);
        let parsed = Parsed::new(message);
        let Some((verb, names)) = parsed.locks() else {
            return false;
        };
        if !verbs.contains(&verb) {
            return false;
        }
        // A share's commit (the first reader's `claiming:`, the last's
        // `unclaiming:`) is never an exclusive put's: it decides its lock.
        let share = parsed.trailer(Trailer::Share).is_some();
        for name in names {
            if share {
                open.remove(name);
                continue;
            }
            if let Some(lock) = open.remove(name) {
                if made_by(message, build) {
                    found = Some(Earlier {
                        commit: id.to_string(),
                        lock: lock.clone(),
                        also: Vec::new(),
                    });
                    return true;
                }
            }
        }
        open.is_empty()
    })?;
    Ok(found)
}

/// [`find`] for the release of a share: this build's commit that gave
/// back share `id` of `lock` (`unsharing:`, or the last one's
/// `unclaiming:`), within the history walk's reach.
fn find_unshare(
    store: &mut dyn CommitWalk,
    snap: &Snapshot,
    lock: &LockName,
    id: &str,
    build: &BuildInfo,
) -> Result<Option<Earlier>> {
    if snap.shares.find(lock, id).is_some() {
        return Ok(None);
    }
    let mut found = None;
    store.walk_commits(&snap.tip, HISTORY_WALK_LIMIT, &mut |c| {
        let parsed = Parsed::new(&c.message);
        let gave_back = matches!(
            parsed.verb(),
            Some((Verb::Unsharing | Verb::Unclaiming, name)) if name == lock.as_str()
        );
        if gave_back && parsed.trailer(Trailer::Share) == Some(id) {
            if made_by(&c.message, build) {
                found = Some(Earlier {
                    commit: c.id.to_string(),
                    lock: lock.clone(),
                    also: Vec::new(),
                });
            }
            return true;
        }
        false
    })?;
    Ok(found)
}

/// [`find`] for a put of several locks: the newest commit by this build
/// that moved exactly the locks wanted (`acquire: N`: N locks, all still
/// claimed) into the state wanted, none of them moved again since.
fn find_many(
    store: &mut dyn CommitWalk,
    snap: &Snapshot,
    op: &Multi,
    build: &BuildInfo,
) -> Result<Option<Earlier>> {
    let in_state = |l: &LockName| match op {
        Multi::Release(_) => snap.unclaimed.contains_key(l) && !snap.claimed.contains_key(l),
        Multi::Acquire(_) | Multi::Claim(_) => snap.claimed.contains_key(l),
    };
    let fits = |locks: &[LockName]| match op {
        Multi::Acquire(n) => locks.len() == *n,
        Multi::Claim(wanted) | Multi::Release(wanted) => {
            let mut a = wanted.clone();
            let mut b = locks.to_vec();
            a.sort();
            b.sort();
            a == b
        }
    };
    let watched: Vec<&LockName> = match op {
        Multi::Claim(wanted) | Multi::Release(wanted) => {
            if !wanted.iter().all(in_state) {
                return Ok(None);
            }
            wanted.iter().collect()
        }
        Multi::Acquire(_) => snap.claimed.keys().collect(),
    };
    if watched.is_empty() {
        return Ok(None);
    }
    let verbs = verbs_many(op);
    // Locks a newer commit moved: an older commit no longer decides them.
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut found = None;
    store.walk_commits(&snap.tip, HISTORY_WALK_LIMIT, &mut |c| {
        let (id, message) = (&c.id, &c.message);
        let Some((verb, names)) = Parsed::new(message).locks() else {
            return false;
        };
        let locks: Vec<LockName> = names.iter().filter_map(|n| LockName::new(n).ok()).collect();
        let fresh = names.iter().all(|n| !seen.contains(*n));
        let share = Parsed::new(message).trailer(Trailer::Share).is_some();
        if verbs.contains(&verb)
            && !share
            && fresh
            && fits(&locks)
            && locks.iter().all(in_state)
            && made_by(message, build)
        {
            let mut locks = locks.into_iter();
            if let Some(lock) = locks.next() {
                found = Some(Earlier {
                    commit: id.to_string(),
                    lock,
                    also: locks.collect(),
                });
                return true;
            }
        }
        seen.extend(names.iter().map(|n| n.to_string()));
        // Once the newest commit moving a watched lock did not match, no
        // older one can (`claim`/`release`); `acquire` looks until every
        // claimed lock's newest commit was seen.
        match op {
            Multi::Acquire(_) => watched.iter().all(|l| seen.contains(l.as_str())),
            Multi::Claim(_) | Multi::Release(_) => {
                watched.iter().any(|l| seen.contains(l.as_str()))
            }
        }
    })?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(vars: &[(&str, &str)]) -> BuildInfo {
        BuildInfo::from_env(|k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn a_commit_is_this_builds_when_its_id_and_site_match() {
        let me = build(&[
            ("BUILD_ID", "42"),
            ("ATC_EXTERNAL_URL", "https://ci.example.com"),
        ]);
        let msg = "claiming: a\n\nPool-Resource-Build-Id: 42\nPool-Resource-Concourse: https://ci.example.com/\n";
        assert!(made_by(msg, &me));
        assert!(!made_by(&msg.replace(": 42", ": 420"), &me));
        assert!(!made_by(
            &msg.replace("ci.example.com", "other.example.com"),
            &me
        ));
        let no_site = "claiming: a\n\nPool-Resource-Build-Id: 42\n";
        assert!(!made_by(no_site, &me));
        assert!(made_by(no_site, &build(&[("BUILD_ID", "42")])));
        assert!(!made_by("claiming: a\n", &me));
        // Without a build id nothing is this build's.
        assert!(!made_by(msg, &build(&[])));
    }
}
