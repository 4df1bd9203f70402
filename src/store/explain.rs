//! What to do about a name that does not exist: the nearest existing name
//! and the list of what exists, looked up in the store once an error says
//! a branch, pool or lock is missing.
//!
//! The errors are raised where the store or the pool model finds the name
//! missing, often far from a store that could list the alternatives (the
//! pool model has no I/O); [`explain`] is called where a command still
//! holds its store, and adds the hint ([`Error::Hinted`]). Looking costs a
//! request or two, on the error path only; if looking fails, the error
//! stays as it was.

use crate::error::{name_hint, Error, Result};
use crate::model::names::is_lock_file_name;
use crate::store::reads::find_pools;
use crate::store::seam::LockStore;

/// The locks of `pool` at `tip`, claimed or not, by name.
fn locks_of(store: &mut dyn LockStore, tip: &str, pool: &str) -> Result<Vec<String>> {
    let mut locks = Vec::new();
    for dir in ["claimed", "unclaimed"] {
        for e in store
            .list_folder(tip, &format!("{pool}/{dir}"))?
            .unwrap_or_default()
        {
            if !e.is_dir && is_lock_file_name(&e.name) {
                locks.push(e.name);
            }
        }
    }
    locks.sort();
    locks.dedup();
    Ok(locks)
}

/// `error` with what to do next, when it says a branch, pool or lock does
/// not exist: the nearest name (`did you mean "staging"?`) and what does
/// exist, or how to create the first. Any other error, or one the store
/// cannot explain, is returned as it is.
pub fn explain(store: &mut dyn LockStore, error: Error) -> Error {
    let hint = match error {
        Error::BranchNotFound { ref branch, .. } => store.branches().map(|known| {
            name_hint(
                branch,
                &known,
                "branches",
                "the repository has no branch yet: `pool --pool POOL init LOCK...` creates it with a pool",
            )
        }),
        Error::PoolNotFound { ref pool, .. } => tip(store).and_then(|tip| {
            let known = find_pools(store, &tip)?;
            Ok(name_hint(
                pool,
                &known,
                "pools on the branch",
                "there is no pool on the branch yet: `pool --pool POOL init LOCK...` creates one",
            ))
        }),
        Error::LockNotFound {
            ref pool, ref lock, ..
        } => tip(store).and_then(|tip| {
            let known = locks_of(store, &tip, pool)?;
            Ok(name_hint(
                lock,
                &known,
                "its locks",
                "the pool has no locks: `pool add LOCK` adds one",
            ))
        }),
        _ => return error,
    };
    match hint {
        Ok(hint) => error.hinted(hint),
        Err(_) => error,
    }
}

fn tip(store: &mut dyn LockStore) -> Result<String> {
    store.branch_tip()?.ok_or_else(|| Error::Repository {
        what: "could not read the branch".into(),
        detail: "it does not exist".into(),
    })
}
