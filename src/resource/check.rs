//! `check`: the versions of the pool, oldest first.
//!
//! A version is a commit that changed the pool directory. Given a version,
//! the answer is what `git log --reverse VERSION~1..HEAD -- POOL` lists: the
//! version if it changed the pool, and every later commit that did (see
//! [`crate::model::history`] for merges). Without a version, or with one that is
//! not a commit on the branch (a force-push, a hand-pinned or foreign
//! version, any string at all), only the latest.

use crate::error::Result;
use crate::process::log::Log;
use crate::protocol::{CheckFrom, Version};
use crate::store::seam::HistoryReader;

/// Runs `check` from `since`.
pub fn run(store: &mut dyn HistoryReader, since: CheckFrom, log: &Log) -> Result<Vec<Version>> {
    let since = match since {
        CheckFrom::Nothing => None,
        CheckFrom::Commit(id) => Some(id),
        CheckFrom::Unknown(shown) => {
            log.line(format_args!(
                "version.ref {shown} is not a commit id, so not a version of this pool; listing the latest version"
            ));
            None
        }
    };
    Ok(store
        .versions(since.as_deref())?
        .into_iter()
        .map(|reference| Version { reference })
        .collect())
}
