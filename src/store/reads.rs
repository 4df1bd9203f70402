//! History reads both faces share: which pools a branch has, which locks a
//! pool has, whether a commit changed a path, a lock's claim commit.
//!
//! The resource names holders with them (`in`, a waiting put, the expiry of
//! old claims) and the operator builds its status and history with them;
//! both sit above this module, so neither imports the other. Each read is
//! bounded ([`STATUS_LOOKBACK`] commits) so that its cost does not grow
//! with the repository.

use std::collections::BTreeMap;

use crate::error::Result;
use crate::model::commit::CommitMeta;
use crate::model::message::{Parsed, Verb};
use crate::model::names::{is_lock_file_name, LockName, PoolPath};
use crate::model::pool::LockState;
use crate::store::seam::{HistoryReader, TreeReader};

/// How many commits a look for who holds a lock (`pool status`, a put
/// naming holders, `in`) goes back at most.
pub const STATUS_LOOKBACK: usize = 1000;
/// How deep under the root `status` looks for pools when none is named.
pub const POOL_SEARCH_DEPTH: usize = 4;

/// The lock files of `pool` at `tip` with their state, `None` when the
/// pool has neither folder. A lock in both (an old Go bug) counts as
/// claimed.
pub fn lock_dirs(
    store: &mut dyn TreeReader,
    tip: &str,
    pool: &str,
) -> Result<Option<BTreeMap<LockName, LockState>>> {
    let mut locks = BTreeMap::new();
    let mut found = false;
    // Unclaimed first, so that claimed overwrites it (a lock in both, an
    // old Go bug, counts as claimed).
    for state in [LockState::Unclaimed, LockState::Claimed] {
        if let Some(entries) = store.list_folder(tip, &format!("{pool}/{}", state.dir()))? {
            found = true;
            for e in entries {
                if e.is_dir || !is_lock_file_name(&e.name) {
                    continue;
                }
                if let Ok(name) = LockName::new(&e.name) {
                    locks.insert(name, state);
                }
            }
        }
    }
    Ok(found.then_some(locks))
}

/// The pools on the branch at `tip`: directories with a `claimed` or an
/// `unclaimed` folder, outside dot-directories, at most
/// [`POOL_SEARCH_DEPTH`] deep.
pub fn find_pools(store: &mut dyn TreeReader, tip: &str) -> Result<Vec<String>> {
    let mut pools = Vec::new();
    let mut queue = vec![(String::new(), 0)];
    while let Some((dir, depth)) = queue.pop() {
        let Some(entries) = store.list_folder(tip, &dir)? else {
            continue;
        };
        let sub: Vec<&str> = entries
            .iter()
            .filter(|e| e.is_dir && !e.name.starts_with('.'))
            .map(|e| e.name.as_str())
            .collect();
        if !dir.is_empty() && sub.iter().any(|s| *s == "claimed" || *s == "unclaimed") {
            pools.push(dir);
            continue;
        }
        if depth < POOL_SEARCH_DEPTH {
            for s in sub {
                let path = if dir.is_empty() {
                    s.to_string()
                } else {
                    format!("{dir}/{s}")
                };
                queue.push((path, depth + 1));
            }
        }
    }
    pools.sort();
    Ok(pools)
}

/// Whether `commit` changed the file at `path` (compared with its parent).
pub fn changed(store: &mut dyn TreeReader, commit: &CommitMeta, path: &str) -> Result<bool> {
    let now = store.entry_id(&commit.id, path)?;
    let before = match &commit.parent {
        Some(p) => store.entry_id(p, path)?,
        None => None,
    };
    Ok(now != before)
}

/// The verb and each lock of commit `c`: one pair for a commit about one
/// lock, one per lock for a commit that moved several (`claiming: A, B`).
pub fn lock_verbs(c: &CommitMeta) -> Vec<(Verb, &str)> {
    match Parsed::new(&c.message).locks() {
        Some((verb, locks)) => locks.into_iter().map(|l| (verb, l)).collect(),
        None => Vec::new(),
    }
}

/// The claim commit of `lock` (the newest commit that put it into
/// `claimed/`), if within the look-back.
pub fn claim_of(
    store: &mut dyn HistoryReader,
    tip: &str,
    pool: &PoolPath,
    lock: &LockName,
) -> Result<Option<CommitMeta>> {
    let path = pool.lock_path(LockState::Claimed, lock);
    let mut candidates = Vec::new();
    store.walk_commits(tip, STATUS_LOOKBACK, &mut |c| {
        if lock_verbs(c)
            .iter()
            .any(|(verb, l)| *l == lock.as_str() && verb.leaves_claimed())
        {
            candidates.push(c.clone());
        }
        false
    })?;
    for c in candidates {
        if changed(store, &c, &path)? && store.entry_id(&c.id, &path)?.is_some() {
            return Ok(Some(c));
        }
    }
    Ok(None)
}
