//! A lock repository in memory, for the unit tests of the loops above the
//! seam ([`crate::resource::put`], [`crate::store::retry`]).
//!
//! One branch, a list of commits whose tree is a map from path to bytes,
//! and faults a test programs ([`Fault`]) that come out the way the git
//! backend's do: a lost race is [`CommitOutcome::LostRace`] with another
//! writer's commit on the branch; a lost reply is a retryable
//! [`Error::Network`] with the attempt [`Unconfirmed`] (marked by its
//! commit id, built on the tip it was given), whether the commit landed or
//! not; a refused push is [`CommitOutcome::Rejected`]. The history
//! questions whose answer depends on the shape of the history go through
//! [`crate::model::history`], as the backends' do. Compiled for tests only.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use sha1::{Digest, Sha1};

use crate::error::{Cause, Error, Result};
use crate::model::commit::CommitMeta;
use crate::model::history::{self, Facts, Graph};
use crate::model::line::Line;
use crate::model::names::{is_lock_file_name, LockName, PoolPath};
use crate::model::pool::{Content, Edit, Hold, LockState, Snapshot};
use crate::model::shares::Shares;
use crate::store::seam::{
    Attempt, CommitOutcome, CommitWalk, FileEdit, FolderEntry, HistoryReader, Mark, PutStore, Step,
    TreeReader, Unconfirmed,
};

/// The URI a memory store's errors name.
pub const URI: &str = "memory://locks";
/// Its one branch.
pub const BRANCH: &str = "main";

/// One fault, taken by the next call it applies to, in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The next [`PutStore::commit`]: another writer's commit lands first
    /// (it changes a file outside the pool); the attempt is a lost race.
    LoseRace,
    /// The next commit lands, but its reply is lost: a network error, the
    /// attempt unconfirmed.
    LoseReplyLanded,
    /// The next commit does not land, and its reply is lost: a network
    /// error, the attempt unconfirmed (as far as the caller knows it may
    /// have landed).
    LoseReplyNotLanded,
    /// The next commit is refused by the server (a hook, a protected
    /// branch), with this detail; nothing lands.
    Refuse(String),
    /// The next [`PutStore::snapshot`] fails with a network error.
    SnapshotDown,
}

/// One commit of the branch's history.
#[derive(Clone, Debug)]
struct Commit {
    id: String,
    parent: Option<String>,
    time: i64,
    author: String,
    message: String,
    tree: BTreeMap<String, Vec<u8>>,
}

/// Another writer's commit, landing just before a given snapshot.
type Scheduled = (usize, String, Vec<FileEdit>);

/// A lock repository in memory: one branch, its commits, programmed faults.
#[derive(Debug)]
pub struct MemoryStore {
    pool: PoolPath,
    /// Every commit ever made, landed or not, by id.
    commits: BTreeMap<String, Commit>,
    tip: Option<String>,
    faults: VecDeque<Fault>,
    /// Faults of [`PutStore::commit_files`] (ticket writes, leaving the
    /// line), each for the next such commit whose subject starts so.
    file_faults: VecDeque<(String, Fault)>,
    scheduled: Vec<Scheduled>,
    snapshots: usize,
    made: u64,
}

impl MemoryStore {
    /// A branch with one commit: `pool` with these locks, each with `name`
    /// as content, claimed or not.
    pub fn new(pool: &str, unclaimed: &[&str], claimed: &[&str]) -> MemoryStore {
        let mut store = MemoryStore {
            pool: PoolPath::new(pool).unwrap_or_else(|e| panic!("pool {pool}: {e}")),
            commits: BTreeMap::new(),
            tip: None,
            faults: VecDeque::new(),
            file_faults: VecDeque::new(),
            scheduled: Vec::new(),
            snapshots: 0,
            made: 0,
        };
        let mut edits = Vec::new();
        for (state, locks) in [
            (LockState::Unclaimed, unclaimed),
            (LockState::Claimed, claimed),
        ] {
            edits.push(file(&format!("{pool}/{}/.gitkeep", state.dir()), b""));
            for lock in locks {
                edits.push(file(
                    &format!("{pool}/{}/{lock}", state.dir()),
                    lock.as_bytes(),
                ));
            }
        }
        store.land("init\n", &edits);
        store
    }

    /// Adds `fault`, after those already programmed.
    pub fn fault(&mut self, fault: Fault) -> &mut MemoryStore {
        self.faults.push_back(fault);
        self
    }

    /// Adds `fault` for the next [`PutStore::commit_files`] whose subject
    /// starts with `subject` (e.g. `leaving the line`), after those already
    /// programmed; [`Fault::SnapshotDown`] does not apply there.
    pub fn fault_files(&mut self, subject: &str, fault: Fault) -> &mut MemoryStore {
        self.file_faults.push_back((subject.to_string(), fault));
        self
    }

    /// Another writer's commit of `edits`, landing just before the `n`th
    /// snapshot (counted from 1): something that happens while a put waits.
    pub fn before_snapshot(&mut self, n: usize, message: &str, edits: Vec<FileEdit>) {
        self.scheduled.push((n, message.to_string(), edits));
    }

    /// Another writer's commit of `edits` on the tip, now.
    pub fn land(&mut self, message: &str, edits: &[FileEdit]) -> String {
        let tree = self.tree_at_tip();
        let id = self.make(self.tip.clone(), tree, message, edits);
        self.tip = Some(id.clone());
        id
    }

    /// [`Fault::LoseRace`]: another writer's commit lands first, changing
    /// a file outside the pool.
    fn another_writer(&mut self) {
        let n = self.made;
        self.land(
            "another writer\n",
            &[file("elsewhere", n.to_string().as_bytes())],
        );
    }

    /// The snapshots taken so far.
    pub fn snapshots(&self) -> usize {
        self.snapshots
    }

    /// The faults programmed and not yet taken.
    pub fn faults_left(&self) -> usize {
        self.faults.len() + self.file_faults.len()
    }

    /// The branch tip.
    pub fn tip(&self) -> &str {
        self.tip.as_deref().unwrap_or("")
    }

    /// The branch's commits, newest first: (id, message).
    pub fn log(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut next = self.tip.clone();
        while let Some(c) = next.and_then(|id| self.commits.get(&id)) {
            out.push((c.id.clone(), c.message.clone()));
            next = c.parent.clone();
        }
        out
    }

    /// The file at `path` in `commit`, if both are there.
    pub fn file_at(&self, commit: &str, path: &str) -> Option<Vec<u8>> {
        self.commits.get(commit)?.tree.get(path).cloned()
    }

    /// The locks in `state` at the tip.
    pub fn locks(&self, state: LockState) -> Vec<String> {
        let prefix = format!("{}/{}/", self.pool, state.dir());
        self.tree_at_tip()
            .keys()
            .filter_map(|p| p.strip_prefix(&prefix))
            .filter(|n| is_lock_file_name(n))
            .map(String::from)
            .collect()
    }

    fn tree_at_tip(&self) -> BTreeMap<String, Vec<u8>> {
        self.tip
            .as_ref()
            .and_then(|t| self.commits.get(t))
            .map(|c| c.tree.clone())
            .unwrap_or_default()
    }

    /// Makes a commit (not moving the branch) and returns its id.
    fn make(
        &mut self,
        parent: Option<String>,
        mut tree: BTreeMap<String, Vec<u8>>,
        message: &str,
        edits: &[FileEdit],
    ) -> String {
        for e in edits {
            match &e.content {
                Some(bytes) => tree.insert(e.path.clone(), bytes.clone()),
                None => tree.remove(&e.path),
            };
        }
        self.made += 1;
        let mut h = Sha1::new();
        h.update(self.made.to_be_bytes());
        h.update(parent.as_deref().unwrap_or("").as_bytes());
        h.update(message.as_bytes());
        let id = hex::encode(h.finalize());
        let time = crate::process::clock::now_unix();
        let commit = Commit {
            id: id.clone(),
            parent,
            time,
            author: "git <git@localhost>".into(),
            message: message.to_string(),
            tree,
        };
        self.commits.insert(id.clone(), commit);
        id
    }

    fn find(&self, version: &str) -> Result<&Commit> {
        self.commits
            .get(version)
            .ok_or_else(|| Error::VersionNotFound {
                version: version.to_string(),
                branch: BRANCH.into(),
                uri: URI.into(),
            })
    }

    /// Whether `version` is on the branch (first parents from the tip: the
    /// memory branch only moves by fast-forwards of one line).
    fn on_branch(&self, version: &str) -> bool {
        self.log().iter().any(|(id, _)| id == version)
    }

    /// The edits a step makes to the tree at its parent.
    fn step_edits(&self, tree: &BTreeMap<String, Vec<u8>>, step: &Step) -> Result<Vec<FileEdit>> {
        let mut edits = Vec::new();
        for (lock, lock_edits) in step.change.parts() {
            for edit in lock_edits {
                let (state, content) = match edit {
                    Edit::Delete(state) => (*state, None),
                    Edit::Write(state, Content::Bytes(bytes)) => (*state, Some(bytes.clone())),
                    Edit::Write(state, Content::Keep(blob)) => {
                        let kept = tree
                            .values()
                            .find(|bytes| blob_id(bytes) == *blob)
                            .ok_or_else(|| Error::Repository {
                                what: format!("could not keep the content of lock {lock}"),
                                detail: format!("no blob {blob}"),
                            })?;
                        (*state, Some(kept.clone()))
                    }
                };
                edits.push(FileEdit {
                    path: self.pool.lock_path(state, lock),
                    content,
                });
            }
        }
        edits.extend(step.files.iter().cloned());
        Ok(edits)
    }

    fn lock_dir(
        &self,
        tree: &BTreeMap<String, Vec<u8>>,
        state: LockState,
    ) -> Option<BTreeMap<LockName, String>> {
        let prefix = format!("{}/{}/", self.pool, state.dir());
        let mut found = false;
        let mut locks = BTreeMap::new();
        for (path, bytes) in tree.range(prefix.clone()..) {
            let Some(name) = path.strip_prefix(&prefix) else {
                break;
            };
            found = true;
            if name.contains('/') || !is_lock_file_name(name) {
                continue;
            }
            if let Ok(lock) = LockName::new(name) {
                locks.insert(lock, blob_id(bytes));
            }
        }
        found.then_some(locks)
    }

    fn history<T>(
        &mut self,
        what: &str,
        question: impl FnOnce(&mut dyn Graph) -> Result<history::Walk<T>>,
    ) -> Result<T> {
        question(self)?.map_err(|stop| Error::Repository {
            what: format!("could not tell {what}"),
            detail: format!("{stop:?}"),
        })
    }
}

/// A file edit writing `bytes` at `path`.
pub fn file(path: &str, bytes: &[u8]) -> FileEdit {
    FileEdit {
        path: path.to_string(),
        content: Some(bytes.to_vec()),
    }
}

/// A file edit deleting `path`.
pub fn delete(path: &str) -> FileEdit {
    FileEdit {
        path: path.to_string(),
        content: None,
    }
}

/// The id git would give a blob of `bytes`.
pub fn blob_id(bytes: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    hex::encode(h.finalize())
}

/// The fault a lost reply comes out as.
fn reply_lost() -> Error {
    Error::Network {
        what: "pushing".into(),
        uri: URI.into(),
        source: Cause::msg("the connection was reset before the reply"),
    }
}

impl PutStore for MemoryStore {
    fn snapshot(&mut self) -> Result<Snapshot> {
        self.snapshots += 1;
        let n = self.snapshots;
        let due: Vec<Scheduled> = self
            .scheduled
            .iter()
            .filter(|s| s.0 == n)
            .cloned()
            .collect();
        self.scheduled.retain(|s| s.0 != n);
        for (_, message, edits) in due {
            self.land(&message, &edits);
        }
        if self.faults.front() == Some(&Fault::SnapshotDown) {
            self.faults.pop_front();
            return Err(Error::Network {
                what: "fetching".into(),
                uri: URI.into(),
                source: Cause::msg("connection refused"),
            });
        }
        let tree = self.tree_at_tip();
        let (Some(claimed), Some(unclaimed)) = (
            self.lock_dir(&tree, LockState::Claimed),
            self.lock_dir(&tree, LockState::Unclaimed),
        ) else {
            return Err(Error::PoolNotFound {
                pool: self.pool.to_string(),
                branch: BRANCH.into(),
                uri: URI.into(),
            });
        };
        Ok(Snapshot {
            tip: self.tip().into(),
            claimed,
            unclaimed,
            hold: tree.get(&Hold::path(&self.pool)).map(|b| Hold::parse(b)),
            line: tree
                .get(&Line::path(&self.pool))
                .map(|b| Line::parse(b))
                .unwrap_or_default(),
            shares: tree
                .get(&Shares::path(&self.pool))
                .map(|b| Shares::parse(b))
                .unwrap_or_default(),
            ..Snapshot::default()
        })
    }

    fn commit(&mut self, base: &Snapshot, steps: &[Step]) -> Attempt {
        let Some(last) = steps.last() else {
            return Attempt::clear(Ok(CommitOutcome::Committed(base.tip.clone())));
        };
        let fault = match self.faults.front() {
            Some(Fault::SnapshotDown) | None => None,
            Some(_) => self.faults.pop_front(),
        };
        if fault == Some(Fault::LoseRace) {
            self.another_writer();
        }
        let Some(parent) = self.commits.get(base.tip.as_str()).cloned() else {
            return Attempt::clear(Err(Error::Repository {
                what: "could not read the branch tip".into(),
                detail: format!("no commit {}", base.tip),
            }));
        };
        let mut top = parent.id.clone();
        let mut tree = parent.tree.clone();
        for step in steps {
            let edits = match self.step_edits(&tree, step) {
                Ok(e) => e,
                Err(e) => return Attempt::clear(Err(e)),
            };
            top = self.make(Some(top), tree, &step.message, &edits);
            tree = self.commits[&top].tree.clone();
        }
        let unconfirmed = Unconfirmed {
            mark: Mark::Commit(top.as_str().into()),
            parent: parent.id.as_str().into(),
            lock: last.change.lock_list(),
        };
        // Compare-and-swap, as a push of top with the tip as the old value.
        let moved = self.tip.as_deref() != Some(parent.id.as_str());
        match fault {
            Some(Fault::Refuse(detail)) => Attempt::clear(Ok(CommitOutcome::Rejected(detail))),
            Some(Fault::LoseReplyNotLanded) => Attempt {
                outcome: Err(reply_lost()),
                unconfirmed: Some(unconfirmed),
            },
            _ if moved => Attempt::clear(Ok(CommitOutcome::LostRace)),
            Some(Fault::LoseReplyLanded) => {
                self.tip = Some(top);
                Attempt {
                    outcome: Err(reply_lost()),
                    unconfirmed: Some(unconfirmed),
                }
            }
            _ => {
                self.tip = Some(top.clone());
                Attempt::clear(Ok(CommitOutcome::Committed(top.into())))
            }
        }
    }

    fn commit_files(
        &mut self,
        parent: Option<&str>,
        edits: &[FileEdit],
        message: &str,
    ) -> Result<CommitOutcome> {
        let fault = match self.file_faults.front() {
            Some((subject, _)) if message.starts_with(subject.as_str()) => {
                self.file_faults.pop_front().map(|(_, f)| f)
            }
            _ => None,
        };
        match &fault {
            Some(Fault::LoseRace) => self.another_writer(),
            Some(Fault::Refuse(detail)) => return Ok(CommitOutcome::Rejected(detail.clone())),
            Some(Fault::LoseReplyNotLanded) => return Err(reply_lost()),
            _ => {}
        }
        if parent != self.tip.as_deref() {
            return Ok(CommitOutcome::LostRace);
        }
        let tree = self.tree_at_tip();
        let id = self.make(self.tip.clone(), tree, message, edits);
        self.tip = Some(id.clone());
        if fault == Some(Fault::LoseReplyLanded) {
            return Err(reply_lost());
        }
        Ok(CommitOutcome::Committed(id.into()))
    }

    fn branch_tip(&mut self) -> Result<Option<String>> {
        Ok(self.tip.clone())
    }

    fn peek_tip(&mut self) -> Result<Option<String>> {
        Ok(self.tip.clone())
    }
}

impl CommitWalk for MemoryStore {
    fn walk_commits(
        &mut self,
        tip: &str,
        limit: usize,
        visit: &mut dyn FnMut(&CommitMeta) -> bool,
    ) -> Result<bool> {
        let mut next = Some(self.find(tip)?.id.clone());
        let mut seen = 0;
        while let Some(c) = next.and_then(|id| self.commits.get(&id)) {
            if seen >= limit {
                return Ok(true);
            }
            seen += 1;
            let meta = CommitMeta {
                id: c.id.clone(),
                parent: c.parent.clone(),
                time: c.time,
                author: c.author.clone(),
                message: c.message.clone(),
            };
            if visit(&meta) {
                break;
            }
            next = c.parent.clone();
        }
        Ok(false)
    }
}

impl TreeReader for MemoryStore {
    fn read_file(&mut self, version: &str, path: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.find(version)?.tree.get(path).cloned())
    }

    fn list_folder(&mut self, version: &str, path: &str) -> Result<Option<Vec<FolderEntry>>> {
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        let mut entries: BTreeMap<String, FolderEntry> = BTreeMap::new();
        for (p, bytes) in &self.find(version)?.tree {
            let Some(rest) = p.strip_prefix(&prefix) else {
                continue;
            };
            let (name, is_dir) = match rest.split_once('/') {
                Some((dir, _)) => (dir, true),
                None => (rest, false),
            };
            let id = if is_dir {
                String::new()
            } else {
                blob_id(bytes)
            };
            entries.entry(name.to_string()).or_insert(FolderEntry {
                name: name.to_string(),
                is_dir,
                id,
            });
        }
        Ok((!entries.is_empty()).then(|| entries.into_values().collect()))
    }

    fn entry_id(&mut self, version: &str, path: &str) -> Result<Option<String>> {
        Ok(self.find(version)?.tree.get(path).map(|b| blob_id(b)))
    }
}

impl Graph for MemoryStore {
    fn facts(&mut self, commit: &str) -> Result<Option<Facts>> {
        Ok(self.commits.get(commit).map(|c| Facts {
            time: c.time,
            parents: Some(c.parent.iter().cloned().collect()),
        }))
    }

    fn at_path(&mut self, commit: &str, path: &str) -> Result<Option<String>> {
        let tree = &self.find(commit)?.tree;
        if let Some(bytes) = tree.get(path) {
            return Ok(Some(blob_id(bytes)));
        }
        let prefix = format!("{path}/");
        let mut h = Sha1::new();
        let mut any = false;
        for (p, bytes) in tree.range(prefix.clone()..) {
            if !p.starts_with(&prefix) {
                break;
            }
            any = true;
            h.update(p.as_bytes());
            h.update(blob_id(bytes).as_bytes());
        }
        Ok(any.then(|| hex::encode(h.finalize())))
    }
}

impl HistoryReader for MemoryStore {
    fn versions(&mut self, since: Option<&str>) -> Result<Vec<String>> {
        let (tip, pool) = (self.tip().to_string(), self.pool.to_string());
        self.history("the versions of the pool", |g| {
            history::versions(g, &tip, since, &pool, usize::MAX)
        })
    }

    fn load_version(&mut self, version: &str, _depth: Option<u32>) -> Result<()> {
        if self.on_branch(version) {
            return Ok(());
        }
        Err(Error::VersionNotFound {
            version: version.to_string(),
            branch: BRANCH.into(),
            uri: URI.into(),
        })
    }

    fn last_pool_change(&mut self, at: &str) -> Result<Option<String>> {
        let pool = self.pool.to_string();
        self.history("which commit last changed the pool", |g| {
            history::last_change(g, at, &pool, usize::MAX)
        })
    }

    fn changed_pool_paths(&mut self, version: &str) -> Result<Vec<String>> {
        let commit = self.find(version)?;
        let empty = BTreeMap::new();
        let before = match &commit.parent {
            Some(p) => &self.find(p)?.tree,
            None => &empty,
        };
        let prefix = format!("{}/", self.pool);
        let mut paths: Vec<String> = commit
            .tree
            .keys()
            .chain(before.keys())
            .filter(|p| p.starts_with(&prefix) && commit.tree.get(*p) != before.get(*p))
            .cloned()
            .collect();
        paths.sort();
        paths.dedup();
        Ok(paths)
    }

    fn subject(&mut self, version: &str) -> Result<String> {
        Ok(self
            .find(version)?
            .message
            .lines()
            .next()
            .unwrap_or("")
            .to_string())
    }

    fn changed_since(&mut self, version: &str, path: &str) -> Result<bool> {
        let v = self.find(version)?.id.clone();
        let tip = self.tip().to_string();
        self.history("whether a path changed", |g| {
            history::changed_since(g, &tip, &v, path, usize::MAX)
        })
    }

    fn export_tree(&mut self, version: &str, dest: &Path) -> Result<()> {
        for (path, bytes) in &self.find(version)?.tree {
            let to = dest.join(path);
            if let Some(dir) = to.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::io(format!("could not create {}", dir.display()), e))?;
            }
            std::fs::write(&to, bytes)
                .map_err(|e| Error::io(format!("could not write {}", to.display()), e))?;
        }
        Ok(())
    }

    fn branches(&mut self) -> Result<Vec<String>> {
        Ok(vec![BRANCH.into()])
    }
}
