//! `in`: fetch a version and write the lock's `name` and `metadata`.
//!
//! The lock is the first pool path the version's commit changed (as the Go
//! resource finds it). If that lock is claimed at the version but its claim
//! file changed on the branch since, the claim this version stands for is
//! gone and `in` fails with `lock instance is no longer acquired`, the message
//! pipelines grep for. A version whose lock no longer exists prints the
//! version and writes no files.

use std::path::Path;

use crate::backend::LockStore;
use crate::config::{GetParams, Source};
use crate::error::{Error, Result};
use crate::log::Log;
use crate::message::parse_subject;
use crate::names::LockName;
use crate::pool::LockState;
use crate::protocol::{Response, Version};

/// The lock a version is about: from the paths it changed, else from the
/// commit subject (`claiming: NAME` and friends).
fn lock_of_version(
    store: &mut dyn LockStore,
    source: &Source,
    version: &str,
) -> Result<Option<LockName>> {
    let prefix = format!("{}/", source.pool);
    for path in store.changed_pool_paths(version)? {
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
    let subject = store.subject(version)?;
    Ok(parse_subject(&subject).and_then(|(_, name)| LockName::new(name).ok()))
}

/// Runs `in` for `version` into `dest`.
pub fn run(
    store: &mut dyn LockStore,
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
    let lock = lock_of_version(store, source, &version)?;
    let claimed_path = lock.as_ref().map(|l| pool.lock_path(LockState::Claimed, l));
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
            "version {version} changed no lock of pool {pool}"
        ));
        return Ok(Response::new(&version, "", pool.as_str()));
    };
    let mut content = None;
    for state in [LockState::Claimed, LockState::Unclaimed] {
        if let Some(bytes) = store.read_file(&version, &pool.lock_path(state, &lock))? {
            content = Some(bytes);
            break;
        }
    }
    match content {
        None => log.line(format_args!("lock {lock} does not exist at {version}")),
        Some(bytes) => {
            let write = |file: &str, data: &[u8]| {
                let path = dest.join(file);
                std::fs::write(&path, data)
                    .map_err(|e| Error::io(format!("could not write {}", path.display()), e))
            };
            write("metadata", &bytes)?;
            write("name", format!("{lock}\n").as_bytes())?;
            log.line(format_args!(
                "fetched lock {lock} of pool {pool} at {version}"
            ));
        }
    }
    Ok(Response::new(&version, lock.as_str(), pool.as_str()))
}
