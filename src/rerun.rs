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

use crate::backend::LockStore;
use crate::error::Result;
use crate::message::{Parsed, Trailer, Verb};
use crate::names::LockName;
use crate::pool::{Operation, Snapshot};
use crate::protocol::BuildInfo;

/// What an earlier run of the same put by this build did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Earlier {
    /// The commit it made: the version this put reports.
    pub commit: String,
    /// The lock it changed.
    pub lock: LockName,
}

/// Commit subjects that leave a lock in the state `op` wants.
fn verbs(op: &Operation) -> &'static [Verb] {
    match op {
        Operation::Acquire | Operation::Claim(_) => &[Verb::Claiming],
        Operation::Release(_) => &[Verb::Unclaiming],
        _ => &[],
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
    store: &mut dyn LockStore,
    snap: &Snapshot,
    op: &Operation,
    build: &BuildInfo,
) -> Result<Option<Earlier>> {
    let wanted: Vec<&LockName> = match op {
        Operation::Acquire => snap.claimed.keys().collect(),
        Operation::Claim(lock) if snap.claimed.contains_key(lock) => vec![lock],
        Operation::Release(lock)
            if snap.unclaimed.contains_key(lock) && !snap.claimed.contains_key(lock) =>
        {
            vec![lock]
        }
        _ => Vec::new(),
    };
    if wanted.is_empty() {
        return Ok(None);
    }
    let verbs = verbs(op);
    // Each wanted lock is decided by the newest commit that moved it into
    // its current state; once it is seen, older commits no longer matter.
    let mut open: HashMap<&str, &LockName> = wanted.iter().map(|l| (l.as_str(), *l)).collect();
    let mut found = None;
    store.walk_messages(&snap.tip, &mut |id, message| {
        let Some((verb, name)) = Parsed::new(message).verb() else {
            return false;
        };
        if !verbs.contains(&verb) {
            return false;
        }
        if let Some(lock) = open.remove(name) {
            if made_by(message, build) {
                found = Some(Earlier {
                    commit: id.to_string(),
                    lock: lock.clone(),
                });
                return true;
            }
        }
        open.is_empty()
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
