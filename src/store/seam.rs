//! The seam every lock backend implements, in small traits.
//!
//! Like the Go resource's `LockHandler`, a put needs little of a backend
//! ([`PutStore`]): read the pool at the branch tip, commit on top of a given
//! tip (compare-and-swap), and read the tip. Everything else is a question
//! about the history: walking it back from a commit ([`CommitWalk`], all
//! that the recovery of a lost reply needs), reading what a commit holds
//! ([`TreeReader`]), and the rest ([`HistoryReader`]), each answer that
//! depends on the history's shape given through [`crate::model::history`]
//! so that both backends answer it the way `git log -- POOL` does. A store
//! implements them all ([`LockStore`]); a caller takes the narrowest it
//! needs, so a test fake implements only that.
//!
//! Which change to make, when to wait and when to retry is decided above
//! the backends ([`crate::store::retry`], [`crate::resource::put`],
//! [`crate::operator::ops`]); what became of a push whose reply was lost is
//! decided once for both in [`crate::store::recovery`].

use std::path::Path;

use crate::error::Result;
pub use crate::model::commit::CommitMeta;
use crate::model::names::PoolPath;
use crate::model::pool::{Change, CommitId, Snapshot};
use crate::model::shares::{Holder, ShareEdit, Shares};

/// How many commits a backend walks back from the tip at most to answer a
/// question about history ([`CommitWalk::walk_commits`], the
/// recovery of an unconfirmed push).
pub const HISTORY_WALK_LIMIT: usize = 2000;

/// What a caller needs of the local copy of the history, where a backend
/// keeps one (git over the network; a local repository and the CodeCommit
/// API read the repository itself and ignore it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cache {
    /// A throw-away copy of the tip alone, deepened only as a question
    /// needs, removed on drop: a put, `in`, the operator's commands.
    Fresh,
    /// A copy kept between runs under `$TMPDIR`, per URI and branch,
    /// fetched into and deepened as far as answers have needed: `check`,
    /// which Concourse runs every minute.
    Kept,
}

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

/// One entry of a folder at a commit ([`TreeReader::list_folder`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderEntry {
    /// Its name within the folder.
    pub name: String,
    /// Whether it is a folder (else a file).
    pub is_dir: bool,
    /// Its object id (blob or tree).
    pub id: String,
}

/// One file a commit writes or deletes, anywhere in the repository: the
/// files of [`PutStore::commit_files`], or those a [`Step`] changes beside
/// the pool's locks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEdit {
    /// Repository path.
    pub path: String,
    /// The new content; `None` deletes.
    pub content: Option<Vec<u8>>,
}

/// One commit of a put: the change to the pool's locks, any other files
/// changed in the same commit (a waiting room's ticket, say: written or
/// removed atomically with the claim), and the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// What happens to the locks.
    pub change: Change,
    /// Other files written or deleted by the same commit; usually none.
    pub files: Vec<FileEdit>,
    /// The whole commit message.
    pub message: String,
}

/// The edit of `pool`'s shares file that `change` makes, on the file as
/// `snap` read it; `holder` is who a join ([`Change::share`]) adds. `None`
/// when the file stays as it is.
///
/// A lock whose files the change moves (claimed afresh, freed, added,
/// removed) starts with no holders before [`Change::share`] applies:
/// holders left for it by a tool that does not know this file (the Go
/// resource releasing a lock held shared) never come back to life under
/// a new claim. An unreadable file is rewritten only by a change that
/// clears a lock's holders (an operator's `pool release L --force --all`,
/// which repairs it); every other change leaves it for the operator.
pub fn shares_edit(
    pool: &PoolPath,
    snap: &Snapshot,
    change: &Change,
    holder: Option<&Holder>,
) -> Option<FileEdit> {
    let clears = matches!(change.share, Some(ShareEdit::Clear { .. }));
    if snap.shares.unreadable.is_some() && !clears {
        return None;
    }
    let mut next = snap.shares.clone();
    // Holders of a lock that is not claimed are left over.
    next.locks.retain(|lock, _| snap.claimed.contains_key(lock));
    for (lock, edits) in change.parts() {
        if !edits.is_empty() {
            next.locks.remove(lock);
        }
    }
    if let Some(edit) = &change.share {
        next = next.after(edit, holder);
    }
    if next.locks == snap.shares.locks && snap.shares.unreadable.is_none() {
        return None;
    }
    Some(FileEdit {
        path: Shares::path(pool),
        content: next.to_bytes(),
    })
}

impl Step {
    /// A step that changes the locks only.
    pub fn new(change: Change, message: String) -> Step {
        Step {
            change,
            files: Vec::new(),
            message,
        }
    }
}

/// What a commit attempt came to, and whether it may have landed although
/// the outcome does not say so ([`crate::store::recovery`] keeps those).
#[derive(Debug)]
pub struct Attempt {
    /// The outcome, or why there is none.
    pub outcome: Result<CommitOutcome>,
    /// Set when the attempt got no clear answer: it may be on the branch.
    pub unconfirmed: Option<Unconfirmed>,
}

impl Attempt {
    /// An attempt whose outcome is all there is to know.
    pub fn clear(outcome: Result<CommitOutcome>) -> Attempt {
        Attempt {
            outcome,
            unconfirmed: None,
        }
    }
}

/// What a put needs of a lock repository, and the operator's writes: read
/// the pool at the tip, commit with compare-and-swap, read the tip.
pub trait PutStore {
    /// Reads the branch tip and the pool at it.
    fn snapshot(&mut self) -> Result<Snapshot>;

    /// Commits `steps` one on top of the other on top of `base.tip`, only
    /// if the branch still points there: one step for most puts, the
    /// expiry takeover's `unclaiming:` then `claiming:` for two. Git pushes
    /// them in one compare-and-swap; the CodeCommit API makes one commit
    /// per call, so there each is its own compare-and-swap and a race lost
    /// after the first leaves that one in place (see its implementation).
    /// The id returned is the last commit's; an attempt without a clear
    /// answer is marked by the last step (the top commit, whose parents
    /// hold the others).
    fn commit(&mut self, base: &Snapshot, steps: &[Step]) -> Attempt;

    /// An operator's commit of plain files (`pool init`, `hold`):
    /// `edits` (any paths, the pool's or not) with `message` on `parent`,
    /// only if the branch still points there; with no parent, creates the
    /// branch, only if it does not exist.
    fn commit_files(
        &mut self,
        parent: Option<&str>,
        edits: &[FileEdit],
        message: &str,
    ) -> Result<CommitOutcome>;

    /// The branch tip, `None` when the branch does not exist (an empty
    /// repository, for `pool init`). Brings what a history walk from it needs.
    fn branch_tip(&mut self) -> Result<Option<String>>;

    /// The branch tip as the server has it now, read as cheaply as the
    /// backend can (git: the ref advertisement alone, no objects fetched;
    /// CodeCommit: one `GetBranch`), for a watcher that reads the rest only
    /// when the tip moved. `None` when the branch does not exist.
    fn peek_tip(&mut self) -> Result<Option<String>>;
}

/// Walking the branch's history back from a commit: all that the recovery
/// of a lost reply ([`crate::store::recovery::fate`]) and a claim's look-up
/// need, so a fake for one is one method.
pub trait CommitWalk {
    /// Hands `visit` each commit from `tip` back along first parents, newest
    /// first, until it returns `true`, the history ends, or `limit` commits
    /// were seen. A shallow copy of the history is deepened as the walk
    /// goes. Returns whether the limit cut the walk short.
    fn walk_commits(
        &mut self,
        tip: &str,
        limit: usize,
        visit: &mut dyn FnMut(&CommitMeta) -> bool,
    ) -> Result<bool>;
}

/// What a commit holds: a file, an entry's id, a folder's entries.
pub trait TreeReader {
    /// A file's content at `version`.
    fn read_file(&mut self, version: &str, path: &str) -> Result<Option<Vec<u8>>>;

    /// The entries of folder `path` (`""`: the root) at `version`, `None`
    /// when there is no such folder.
    fn list_folder(&mut self, version: &str, path: &str) -> Result<Option<Vec<FolderEntry>>>;

    /// The object id of the file at `path` at `version`, if there is one.
    fn entry_id(&mut self, version: &str, path: &str) -> Result<Option<String>>;
}

/// The rest of what `check`, `in`, the holder look-ups and the operator's
/// screens ask of the history: its versions, what a version changed, the
/// version made available or written out. Each answer that depends on the
/// shape of the history goes through [`crate::model::history`].
pub trait HistoryReader: CommitWalk + TreeReader {
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

    /// Whether any commit after `version`, up to the tip, changed `path`
    /// ([`crate::model::history::changed_since`]).
    fn changed_since(&mut self, version: &str, path: &str) -> Result<bool>;

    /// Writes the repository's files at `version` into `dest`.
    fn export_tree(&mut self, version: &str, dest: &Path) -> Result<()>;

    /// The repository's branches, by name, for the hint of a branch that
    /// does not exist. Asked only on that error path; a backend that
    /// cannot list them says none.
    fn branches(&mut self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}

/// A lock repository reached one way or another: every trait of the seam.
/// Every type that implements them all is one, so a store can be handed to
/// a caller that needs any of them.
pub trait LockStore: PutStore + HistoryReader {}

impl<T: PutStore + HistoryReader + ?Sized> LockStore for T {}
