//! The small trait every lock backend implements.
//!
//! Like the Go resource's `LockHandler`, a backend only knows how to read the
//! pool at the branch tip, commit one change on top of a given tip
//! (compare-and-swap), and answer the questions `check` and `in` ask of the
//! history — each through [`crate::history`], so that both answer them the
//! way `git log -- POOL` does. Which change to make, when to wait and when to
//! retry is decided once, above the backends, in [`crate::put`],
//! [`crate::get`] and [`crate::check`].

use std::path::Path;

use crate::error::Result;
use crate::pool::{Change, Snapshot};

/// How many commits a backend walks back from the tip at most to answer a
/// question about history ([`LockStore::walk_messages`]).
pub const HISTORY_WALK_LIMIT: usize = 2000;

/// The commit author and committer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Name (`git` in the official image).
    pub name: String,
    /// Email (`git@localhost` in the official image).
    pub email: String,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            name: "git".into(),
            email: "git@localhost".into(),
        }
    }
}

/// What became of a commit attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// The branch now points at this commit.
    Committed(String),
    /// The branch moved since the snapshot: someone else was first.
    LostRace,
    /// The server refused the update; the caller decides whether it was a race.
    Rejected(String),
}

/// A lock repository reached one way or another.
pub trait LockStore {
    /// Reads the branch tip and the pool at it.
    fn snapshot(&mut self) -> Result<Snapshot>;

    /// Commits `change` with `message` on top of `base.tip`, only if the branch
    /// still points there.
    fn commit(&mut self, base: &Snapshot, change: &Change, message: &str) -> Result<CommitOutcome>;

    /// After a commit attempt that failed without a clear answer (a push
    /// whose reply was lost), whether that commit reached the branch after all:
    /// its id and the lock it changed if so. Attempts that can no longer land
    /// are forgotten.
    fn recover_unconfirmed(&mut self) -> Result<Option<(String, String)>>;

    /// The changes, one line each, whose push got no answer and that may
    /// still have landed: what a put that gives up must tell its user.
    fn unconfirmed_changes(&self) -> Vec<String>;

    /// Hands `visit` the id and message of each commit from `tip` back along
    /// first parents, newest first, until it returns `true` or the history
    /// ends or [`HISTORY_WALK_LIMIT`] commits were seen. A shallow copy of the
    /// history is deepened as the walk goes.
    fn walk_messages(&mut self, tip: &str, visit: &mut dyn FnMut(&str, &str) -> bool)
        -> Result<()>;

    /// `check`: commits touching the pool from `since` (inclusive) to the tip,
    /// oldest first, as [`crate::history::versions`] lists them; without
    /// `since`, or if it is not on the branch, only the latest such commit.
    fn versions(&mut self, since: Option<&str>) -> Result<Vec<String>>;

    /// `in`: makes `version` and the history from it to the tip available.
    /// Fails with [`crate::Error::VersionNotFound`] if it is not on the branch
    /// (reachable from the tip through any parent).
    fn load_version(&mut self, version: &str, depth: Option<u32>) -> Result<()>;

    /// `in`: the most recent commit at or before `at` that touched the pool
    /// ([`crate::history::last_change`]); `None` if none did.
    fn last_pool_change(&mut self, at: &str) -> Result<Option<String>>;

    /// Paths under the pool that `version` changed, compared with its first
    /// parent, sorted as git sorts them.
    fn changed_pool_paths(&mut self, version: &str) -> Result<Vec<String>>;

    /// The first line of `version`'s message.
    fn subject(&mut self, version: &str) -> Result<String>;

    /// A file's content at `version`.
    fn read_file(&mut self, version: &str, path: &str) -> Result<Option<Vec<u8>>>;

    /// Whether any commit after `version`, up to the tip, changed `path`
    /// ([`crate::history::changed_since`]).
    fn changed_since(&mut self, version: &str, path: &str) -> Result<bool>;

    /// Writes the repository's files at `version` into `dest`.
    fn export_tree(&mut self, version: &str, dest: &Path) -> Result<()>;
}
