//! `check`: the versions of the pool, oldest first.
//!
//! A version is a commit that changed the pool directory. Given a version,
//! the answer is that version and every later one; without one, or if the
//! given one is no longer on the branch (a force-push), only the latest.

use crate::backend::LockStore;
use crate::error::Result;
use crate::protocol::Version;

/// Runs `check` from `since`.
pub fn run(store: &mut dyn LockStore, since: Option<Version>) -> Result<Vec<Version>> {
    let since = since.map(|v| v.reference);
    Ok(store
        .versions(since.as_deref())?
        .into_iter()
        .map(|reference| Version { reference })
        .collect())
}
