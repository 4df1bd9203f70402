//! The small trait every lock backend implements.
//!
//! Like the Go resource's `LockHandler`, a backend only knows how to read the
//! pool at the branch tip, commit one change on top of a given tip
//! (compare-and-swap), and answer the questions `check` and `in` ask of the
//! history — each through [`crate::model::history`], so that both answer them the
//! way `git log -- POOL` does. Which change to make, when to wait and when to
//! retry is decided once, above the backends, in [`crate::resource::put`],
//! [`crate::resource::get`] and [`crate::resource::check`].

use std::path::Path;

use crate::error::{Error, Result};
use crate::model::pool::{Change, CommitId, Snapshot};

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
    Committed(CommitId),
    /// The branch moved since the snapshot: someone else was first.
    LostRace,
    /// The server refused the update; the caller decides whether it was a race.
    Rejected(String),
}

/// A change whose commit attempt got no clear answer: it may be on the
/// branch, or land there later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unconfirmed {
    /// What identifies its commit on the branch.
    pub mark: Mark,
    /// The tip it was built on: the only tip it can land on.
    pub parent: CommitId,
    /// The lock it changed.
    pub lock: String,
}

/// How an [`Unconfirmed`] change's commit is recognised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mark {
    /// Its id: git makes the commit before pushing it.
    Commit(CommitId),
    /// Its `Pool-Resource-Nonce` trailer: CodeCommit's API makes the commit
    /// itself, so the id is known only from the reply.
    Nonce(String),
}

/// An unconfirmed change found on the branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// Its commit id.
    pub commit: CommitId,
    /// The lock it changed.
    pub lock: String,
}

/// What the history says of one [`Unconfirmed`] change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Its commit is on the branch, with this id.
    Landed(CommitId),
    /// The branch is still at its parent: it may yet land, and a new commit
    /// on the same tip excludes it (compare-and-swap), so keep watching.
    MayLand,
    /// The branch moved past its parent without it: it can never land.
    CannotLand,
    /// Neither it nor its parent is within the history the walk may read.
    Unknown,
}

/// Decides every change in `pending` with `fate`, then says what to do:
/// the change that landed (at most one can: every change after the first
/// unconfirmed one was built on the same parent or on a tip that excludes
/// it) and what is still pending. Nothing is decided unless every look
/// answered: when `fate` fails the caller keeps `pending` whole, which is
/// why this takes a slice and returns the changes to keep rather than
/// taking them out first.
pub fn settle(
    pending: &[Unconfirmed],
    mut fate: impl FnMut(&Unconfirmed) -> Result<Fate>,
) -> Result<(Option<Recovered>, Vec<Unconfirmed>)> {
    let mut keep = Vec::new();
    let mut unknown = Vec::new();
    for change in pending {
        match fate(change)? {
            Fate::Landed(commit) => {
                let lock = change.lock.clone();
                return Ok((Some(Recovered { commit, lock }), Vec::new()));
            }
            Fate::MayLand => keep.push(change.clone()),
            Fate::CannotLand => {}
            Fate::Unknown => unknown.push(change.clone()),
        }
    }
    if !unknown.is_empty() {
        return Err(Error::Unsettled {
            limit: HISTORY_WALK_LIMIT,
            unconfirmed: unknown.iter().map(Unconfirmed::describe).collect(),
        });
    }
    Ok((None, keep))
}

impl Unconfirmed {
    /// One line for a user: the lock and how to find the commit.
    pub fn describe(&self) -> String {
        match &self.mark {
            Mark::Commit(id) => format!("lock {} (commit {id})", self.lock),
            Mark::Nonce(nonce) => format!(
                "lock {} (commit with Pool-Resource-Nonce {nonce})",
                self.lock
            ),
        }
    }
}

/// One commit as a reader of the history sees it ([`LockStore::walk_commits`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitMeta {
    /// Its id.
    pub id: String,
    /// Its first parent, if any.
    pub parent: Option<String>,
    /// Committer time, seconds since the Unix epoch (what Pool Boy dates claims by).
    pub time: i64,
    /// The author, `Name <email>`.
    pub author: String,
    /// The whole message.
    pub message: String,
}

/// One entry of a folder at a commit ([`LockStore::list_folder`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderEntry {
    /// Its name within the folder.
    pub name: String,
    /// Whether it is a folder (else a file).
    pub is_dir: bool,
    /// Its object id (blob or tree).
    pub id: String,
}

/// One file of a [`LockStore::commit_files`] commit: write `content`, or
/// delete the file when it is `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEdit {
    /// Repository path.
    pub path: String,
    /// The new content; `None` deletes.
    pub content: Option<Vec<u8>>,
}

/// A lock repository reached one way or another.
pub trait LockStore {
    /// Reads the branch tip and the pool at it.
    fn snapshot(&mut self) -> Result<Snapshot>;

    /// Commits `change` with `message` on top of `base.tip`, only if the branch
    /// still points there.
    fn commit(&mut self, base: &Snapshot, change: &Change, message: &str) -> Result<CommitOutcome>;

    /// Commits `changes` (each with its message) one on top of the other,
    /// on top of `base.tip`, only if the branch still points there: the
    /// expiry takeover's `unclaiming:` then `claiming:`. Git pushes them in
    /// one compare-and-swap; the CodeCommit API makes one commit per call,
    /// so there each is its own compare-and-swap and a race lost after the
    /// first leaves that one in place (see its implementation). The id
    /// returned is the last commit's; an unconfirmed push is remembered by
    /// it (the mark is the top commit, whose parents hold the others).
    fn commit_chain(
        &mut self,
        base: &Snapshot,
        changes: &[(Change, String)],
    ) -> Result<CommitOutcome>;

    /// [`LockStore::commit_chain`] with `files` (paths outside the pool:
    /// the line file) edited in the last commit too, so that the claim
    /// ending a wait removes the waiter's ticket in the same commit.
    /// With no `files`, exactly [`LockStore::commit_chain`].
    fn commit_chain_with(
        &mut self,
        base: &Snapshot,
        changes: &[(Change, String)],
        files: &[FileEdit],
    ) -> Result<CommitOutcome>;

    /// After a commit attempt that failed without a clear answer (a push
    /// whose reply was lost), whether that commit reached the branch after
    /// all. An attempt is forgotten only once the history shows it can never
    /// land; when the look fails, every attempt is kept for the next round
    /// ([`settle`]). Fails, not retryable, when the history within reach
    /// cannot tell, since planning a new change then could take a second lock.
    fn recover_unconfirmed(&mut self) -> Result<Option<Recovered>>;

    /// The changes whose push got no answer and that may still have
    /// landed: what a put that gives up must tell its user.
    fn unconfirmed(&self) -> &[Unconfirmed];

    /// Hands `visit` the id and message of each commit from `tip` back along
    /// first parents, newest first, until it returns `true` or the history
    /// ends or [`HISTORY_WALK_LIMIT`] commits were seen. A shallow copy of the
    /// history is deepened as the walk goes.
    fn walk_messages(&mut self, tip: &str, visit: &mut dyn FnMut(&str, &str) -> bool)
        -> Result<()>;

    /// `check`: commits touching the pool from `since` (inclusive) to the tip,
    /// oldest first, as [`crate::model::history::versions`] lists them; without
    /// `since`, or if it is not on the branch, only the latest such commit.
    fn versions(&mut self, since: Option<&str>) -> Result<Vec<String>>;

    /// `in`: makes `version` and the history from it to the tip available.
    /// Fails with [`crate::Error::VersionNotFound`] if it is not on the branch
    /// (reachable from the tip through any parent).
    fn load_version(&mut self, version: &str, depth: Option<u32>) -> Result<()>;

    /// `in`: the most recent commit at or before `at` that touched the pool
    /// ([`crate::model::history::last_change`]); `None` if none did.
    fn last_pool_change(&mut self, at: &str) -> Result<Option<String>>;

    /// Paths under the pool that `version` changed, compared with its first
    /// parent, sorted as git sorts them.
    fn changed_pool_paths(&mut self, version: &str) -> Result<Vec<String>>;

    /// The first line of `version`'s message.
    fn subject(&mut self, version: &str) -> Result<String>;

    /// A file's content at `version`.
    fn read_file(&mut self, version: &str, path: &str) -> Result<Option<Vec<u8>>>;

    /// Whether any commit after `version`, up to the tip, changed `path`
    /// ([`crate::model::history::changed_since`]).
    fn changed_since(&mut self, version: &str, path: &str) -> Result<bool>;

    /// Writes the repository's files at `version` into `dest`.
    fn export_tree(&mut self, version: &str, dest: &Path) -> Result<()>;

    /// The branch tip, `None` when the branch does not exist (an empty
    /// repository, for `pool init`).
    fn branch_tip(&mut self) -> Result<Option<String>>;

    /// The branch tip as the server has it now, read as cheaply as the
    /// backend can (git: the ref advertisement alone, no objects fetched;
    /// CodeCommit: one `GetBranch`), for a watcher that reads the rest only
    /// when the tip moved. `None` when the branch does not exist.
    fn peek_tip(&mut self) -> Result<Option<String>>;

    /// The entries of folder `path` (`""`: the root) at `version`, `None`
    /// when there is no such folder.
    fn list_folder(&mut self, version: &str, path: &str) -> Result<Option<Vec<FolderEntry>>>;

    /// The object id of the file at `path` at `version`, if there is one.
    fn entry_id(&mut self, version: &str, path: &str) -> Result<Option<String>>;

    /// Hands `visit` each commit from `tip` back along first parents, newest
    /// first, until it returns `true`, the history ends, or `limit` commits
    /// were seen. Returns whether the limit cut the walk short.
    fn walk_commits(
        &mut self,
        tip: &str,
        limit: usize,
        visit: &mut dyn FnMut(&CommitMeta) -> bool,
    ) -> Result<bool>;

    /// Commits `edits` (any paths, the pool's or not) with `message` on
    /// `parent`, only if the branch still points there; with no parent,
    /// creates the branch, only if it does not exist.
    fn commit_files(
        &mut self,
        parent: Option<&str>,
        edits: &[FileEdit],
        message: &str,
    ) -> Result<CommitOutcome>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(mark: &str, lock: &str) -> Unconfirmed {
        Unconfirmed {
            mark: Mark::Commit(mark.into()),
            parent: "p".into(),
            lock: lock.to_string(),
        }
    }

    fn network() -> Error {
        Error::Network {
            what: "fetching".into(),
            uri: "git://x".into(),
            source: crate::error::Cause::msg("cut"),
        }
    }

    #[test]
    fn a_failed_look_decides_nothing_so_the_caller_keeps_every_change() {
        let pending = [change("c1", "a"), change("c2", "a")];
        let mut looked = 0;
        let result = settle(&pending, |c| {
            looked += 1;
            match &c.mark {
                Mark::Commit(m) if m == "c1" => Ok(Fate::CannotLand),
                _ => Err(network()),
            }
        });
        assert!(matches!(result, Err(Error::Network { .. })));
        assert_eq!(looked, 2);
    }

    #[test]
    fn a_landed_change_is_the_answer_and_nothing_stays_pending() {
        let pending = [change("c1", "a"), change("c2", "b")];
        let (found, keep) = settle(&pending, |c| {
            Ok(match &c.mark {
                Mark::Commit(m) if m == "c2" => Fate::Landed("c2".into()),
                _ => Fate::CannotLand,
            })
        })
        .expect("settled");
        assert_eq!(
            found,
            Some(Recovered {
                commit: "c2".into(),
                lock: "b".into()
            })
        );
        assert!(keep.is_empty());
    }

    #[test]
    fn only_changes_that_may_still_land_are_kept() {
        let pending = [change("c1", "a"), change("c2", "a")];
        let (found, keep) = settle(&pending, |c| {
            Ok(match &c.mark {
                Mark::Commit(m) if m == "c1" => Fate::CannotLand,
                _ => Fate::MayLand,
            })
        })
        .expect("settled");
        assert_eq!(found, None);
        assert_eq!(keep, [change("c2", "a")]);
    }

    #[test]
    fn a_change_the_history_cannot_tell_about_stops_the_put_naming_its_lock() {
        let pending = [change("c1", "a")];
        let err = settle(&pending, |_| Ok(Fate::Unknown)).expect_err("unknown");
        assert!(!err.is_retryable());
        let text = err.to_string();
        assert!(text.contains("could not tell whether a push"), "{text}");
        assert!(text.contains("lock a (commit c1)"), "{text}");
        assert!(text.contains("idempotent: true"), "{text}");
    }
}
