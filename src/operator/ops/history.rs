//! `pool history`: the claims of the pools' locks in a window, newest
//! first, each with its release ([`Interval`]), as a table or the JSON
//! `pool history --json` prints (documented in the README).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::names::LockName;
use crate::model::pool::LockState;
use crate::operator::concourse::build::BuildState;
use crate::operator::ops::{tip_of, Actor};
use crate::process::clock::now_unix;
use crate::store::reads::{changed, lock_verbs};
use crate::store::seam::{LockStore, HISTORY_WALK_LIMIT};

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
