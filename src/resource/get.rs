//! `in`: fetch a version and write the lock's `name` and `metadata`.
//!
//! The lock is the first lock file changed by the most recent commit at or
//! before the version that touched the pool, as the Go resource finds it
//! with `git log -1 --name-only -- POOL` at the version: several pools often
//! share a branch, so a version may be a commit about another pool, and it
//! still stands for this pool's last lock. (A merge's change is the one
//! against its first parent.) If that lock is claimed at the version but its
//! claim file changed on the branch since, the claim this version stands for
//! is gone and `in` fails with `lock instance is no longer acquired`, the
//! message pipelines grep for. A version whose lock no longer exists prints
//! the version and writes no files.
//!
//! For a lock claimed at the version, `in` also writes `claim`, the claim
//! commit's id, next to `name` and `metadata` (the fence a later `release`
//! of the directory checks), and adds who claimed it and since when to the
//! metadata, as `out` did ([`crate::resource::holder`]).
//!
//! For a version that took a share of a lock (`shared: true`: its commit
//! carries a `Pool-Resource-Share` trailer), `in` writes `share`, the
//! holder id, instead of `claim`: a `release` of the directory gives back
//! that one share, never the others' ([`crate::model::shares`]).

use std::path::Path;

use crate::config::{GetParams, Source, FENCE_FILE, SHARE_FILE};
use crate::error::{Error, Result};
use crate::model::duration::utc;
use crate::model::message::{parse_subject, Parsed, Trailer};
use crate::model::names::LockName;
use crate::model::pool::LockState;
use crate::process::log::Log;
use crate::protocol::{Response, Version};
use crate::resource::holder::Claim;
use crate::store::reads::{changed, claim_of};
use crate::store::seam::HistoryReader;

/// The lock a commit that touched the pool is about: from the paths it
/// changed, else from its subject (`claiming: NAME` and friends).
fn lock_of_commit(
    store: &mut dyn HistoryReader,
    source: &Source,
    commit: &str,
) -> Result<Option<LockName>> {
    let prefix = format!("{}/", source.pool);
    for path in store.changed_pool_paths(commit)? {
        let Some(rest) = path.strip_prefix(&prefix) else {
            continue;
        };
        let Some((dir, name)) = rest.split_once('/') else {
            continue;
        };
        if dir != "claimed" && dir != "unclaimed" {
            continue;
        }
        if let Ok(lock) = LockName::new(name) {
            return Ok(Some(lock));
        }
    }
    let subject = store.subject(commit)?;
    Ok(parse_subject(&subject).and_then(|(_, name)| LockName::new(name).ok()))
}

/// Every lock of a commit that moved several at once (its
/// `Pool-Resource-Lock` trailers, see [`crate::model::message::Trailer::Lock`]);
/// empty for any other commit.
fn locks_of_multi_commit(store: &mut dyn HistoryReader, commit: &str) -> Result<Vec<LockName>> {
    let mut message = String::new();
    store.walk_commits(commit, 1, &mut |c| {
        message = c.message.clone();
        true
    })?;
    let names = match Parsed::new(&message).locks() {
        Some((_, names)) if names.len() > 1 => names,
        _ => return Ok(Vec::new()),
    };
    Ok(names
        .into_iter()
        .filter_map(|n| LockName::new(n).ok())
        .collect())
}

/// `in` of a version that moved several locks: fails if any of its claims
/// is gone, then writes `name` (one name a line) and `locks/NAME` with each
/// lock's content. No `metadata`: no one lock's content stands for them all.
/// The claim metadata (who claimed them, since when) is that of `commit`,
/// the one commit that claimed them all, and so is the fence: `claim`
/// holds that one id, as for one lock.
fn write_many(
    store: &mut dyn HistoryReader,
    source: &Source,
    version: &str,
    commit: &str,
    locks: &[LockName],
    dest: &Path,
    log: &Log,
) -> Result<Response> {
    let pool = &source.pool;
    for lock in locks {
        let path = pool.lock_path(LockState::Claimed, lock);
        if store.read_file(version, &path)?.is_some() && store.changed_since(version, &path)? {
            return Err(Error::NoLongerAcquired);
        }
    }
    let dir = dest.join("locks");
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("could not create {}", dir.display()), e))?;
    store.export_tree(version, dest)?;
    let write = |path: &Path, data: &[u8]| {
        std::fs::write(path, data)
            .map_err(|e| Error::io(format!("could not write {}", path.display()), e))
    };
    let mut names = String::new();
    let mut all_claimed = true;
    for lock in locks {
        let mut content = None;
        for state in [LockState::Claimed, LockState::Unclaimed] {
            if let Some(bytes) = store.read_file(version, &pool.lock_path(state, lock))? {
                content = Some((state, bytes));
                break;
            }
        }
        match content {
            None => {
                all_claimed = false;
                log.line(format_args!("lock {lock} does not exist at {version}"))
            }
            Some((state, bytes)) => {
                all_claimed &= state == LockState::Claimed;
                write(&dir.join(lock.as_str()), &bytes)?;
                names.push_str(&format!("{lock}\n"));
            }
        }
    }
    write(&dest.join("name"), names.as_bytes())?;
    let list = crate::model::pool::join_names(locks);
    let claim = crate::resource::holder::claim_at(store, commit)?;
    // The one commit that claimed them all fences the release of them
    // all: `claim` holds its id, as for one lock.
    if let (Some(claim), true) = (&claim, all_claimed) {
        write(
            &dest.join(FENCE_FILE),
            format!("{}\n", claim.commit).as_bytes(),
        )?;
        log.line(format_args!(
            "locks {list} are claimed by {} since {}; their claim {} is in {FENCE_FILE}, which fences a release of this directory",
            claim.who(),
            utc(claim.time),
            claim.commit
        ));
    }
    log.line(format_args!(
        "fetched locks {list} of pool {pool} at {version}"
    ));
    let response = Response::new(version, &list, pool.as_str());
    Ok(match claim {
        Some(claim) => response.with(claim.metadata()),
        None => response,
    })
}

/// A version that took or gave back a share (its commit carries a
/// `Pool-Resource-Share` trailer).
struct ShareCommit {
    /// The holder id.
    id: String,
    /// The lock its subject names.
    lock: LockName,
    /// Whether it took the share (`claiming:`, `sharing:`) rather than
    /// gave it back (`unsharing:`, `unclaiming:`).
    takes: bool,
}

/// The share `version` took or gave back, if its commit is one.
fn share_at(store: &mut dyn HistoryReader, version: &str) -> Result<Option<ShareCommit>> {
    let mut found = None;
    store.walk_commits(version, 1, &mut |c| {
        let parsed = Parsed::new(&c.message);
        if let (Some((verb, lock)), Some(id)) = (parsed.verb(), parsed.trailer(Trailer::Share)) {
            found = LockName::new(lock).ok().map(|lock| ShareCommit {
                id: id.to_string(),
                lock,
                takes: verb.leaves_claimed(),
            });
        }
        true
    })?;
    Ok(found)
}

/// The claim of `lock`, claimed at `version`: the commit that last changed
/// the pool at or before it, when that put the lock into `claimed/` (the
/// usual case: the version is the claim); else the newest claim within the
/// look-back.
fn claim_of_version(
    store: &mut dyn HistoryReader,
    source: &Source,
    version: &str,
    last_change: Option<String>,
    lock: &LockName,
) -> Result<Option<Claim>> {
    let path = source.pool.lock_path(LockState::Claimed, lock);
    if let Some(commit) = last_change {
        let mut meta = None;
        store.walk_commits(&commit, 1, &mut |c| {
            meta = Some(c.clone());
            true
        })?;
        if let Some(meta) = meta {
            if changed(store, &meta, &path)? {
                return Ok(Some(Claim::of(&meta)));
            }
        }
    }
    Ok(claim_of(store, version, &source.pool, lock)?.map(|c| Claim::of(&c)))
}

/// Runs `in` for `version` into `dest`.
pub fn run(
    store: &mut dyn HistoryReader,
    source: &Source,
    version: Option<Version>,
    params: &GetParams,
    dest: &Path,
    log: &Log,
) -> Result<Response> {
    let version = version
        .ok_or_else(|| Error::bad_request("invalid payload: version.ref is required for in"))?
        .reference;
    let pool = &source.pool;
    store.load_version(&version, params.depth)?;
    let last_change = store.last_pool_change(&version)?;
    // A share's version names its lock itself: a `sharing:` or
    // `unsharing:` commit changes no pool directory, so the last change
    // may be another lock's.
    let share = share_at(store, &version)?;
    let lock = match (&last_change, &share) {
        (_, Some(s)) => Some(s.lock.clone()),
        (Some(commit), None) => {
            if *commit != version {
                log.line(format_args!(
                    "version {version} did not change pool {pool}; its lock is the one {commit} changed"
                ));
            }
            let several = locks_of_multi_commit(store, commit)?;
            if several.len() > 1 {
                return write_many(store, source, &version, commit, &several, dest, log);
            }
            lock_of_commit(store, source, commit)?
        }
        (None, None) => None,
    };
    // A version that gave a share back holds nothing, as an `unclaiming:`
    // does: the lock moving since (the last reader leaving) is no loss.
    let gave_back = share.as_ref().is_some_and(|s| !s.takes);
    let claimed_path = lock
        .as_ref()
        .filter(|_| !gave_back)
        .map(|l| pool.lock_path(LockState::Claimed, l));
    if let Some(path) = &claimed_path {
        if store.read_file(&version, path)?.is_some() && store.changed_since(&version, path)? {
            return Err(Error::NoLongerAcquired);
        }
    }
    std::fs::create_dir_all(dest)
        .map_err(|e| Error::io(format!("could not create {}", dest.display()), e))?;
    store.export_tree(&version, dest)?;
    let Some(lock) = lock else {
        log.warn(format_args!(
            "no commit at or before version {version} changed a lock of pool {pool}"
        ));
        return Ok(Response::new(&version, "", pool.as_str()));
    };
    let mut content = None;
    for state in [LockState::Claimed, LockState::Unclaimed] {
        if let Some(bytes) = store.read_file(&version, &pool.lock_path(state, &lock))? {
            content = Some((state, bytes));
            break;
        }
    }
    let mut extra = Vec::new();
    match content {
        None => log.line(format_args!("lock {lock} does not exist at {version}")),
        Some((state, bytes)) => {
            let write = |file: &str, data: &[u8]| {
                let path = dest.join(file);
                std::fs::write(&path, data)
                    .map_err(|e| Error::io(format!("could not write {}", path.display()), e))
            };
            write("metadata", &bytes)?;
            write("name", format!("{lock}\n").as_bytes())?;
            // The version took a share (a release of a share writes no
            // fence: the directory names a lock its build no longer holds).
            let took = match (&share, state) {
                (Some(s), LockState::Claimed) if s.takes => Some(s.id.clone()),
                _ => None,
            };
            if let Some(id) = took {
                write(SHARE_FILE, format!("{id}\n").as_bytes())?;
                let claim = crate::resource::holder::claim_at(store, &version)?;
                log.line(format_args!(
                    "lock {lock} is held shared; this build's share {id}{} is in {SHARE_FILE}: a release of this directory gives back that share alone",
                    claim
                        .as_ref()
                        .map(|c| format!(" (taken by {} at {})", c.who(), utc(c.time)))
                        .unwrap_or_default()
                ));
                extra = claim.map(|c| c.metadata()).unwrap_or_default();
                extra.push(crate::protocol::Metadata {
                    name: "share".into(),
                    value: id,
                });
            } else if state == LockState::Claimed && share.is_none() {
                if let Some(claim) = claim_of_version(store, source, &version, last_change, &lock)?
                {
                    write(FENCE_FILE, format!("{}\n", claim.commit).as_bytes())?;
                    log.line(format_args!(
                        "lock {lock} is claimed by {} since {}; its claim {} is in {FENCE_FILE}, which fences a release of this directory",
                        claim.who(),
                        utc(claim.time),
                        claim.commit
                    ));
                    extra = claim.metadata();
                }
            }
            log.line(format_args!(
                "fetched lock {lock} of pool {pool} at {version}"
            ));
        }
    }
    Ok(Response::new(&version, lock.as_str(), pool.as_str()).with(extra))
}
