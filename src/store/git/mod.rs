//! The git backend: the lock repository reached through libgit2, in-process.
//!
//! A put fetches only the branch tip (depth 1) into a throw-away bare
//! repository, builds the new tree and commit in memory and pushes it as a
//! fast-forward that must replace exactly the tip it was built on. A local
//! repository (a path or `file://`) is used directly, with the branch moved
//! by an atomic compare-and-swap of the ref, because libgit2's local
//! transport cannot fetch shallow. Either way the cost of a put does not grow
//! with the repository's history. `check` asks for a kept cache
//! ([`Cache::Kept`]): a shallow copy under `$TMPDIR` that is deepened only
//! as far as the answers need. A commit may carry files outside the pool
//! ([`Step::files`]); they are written into the same tree. What became of a
//! push whose reply was lost is decided above, in
//! [`crate::store::recovery`]: this store only marks it by its commit id.

pub mod known_hosts;
pub mod sign;
pub mod transport;
pub mod tree;
pub mod tunnel;
mod user;

pub use user::default_user_name;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use git2::{FileMode, Oid, Repository, Signature};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::config::Source;
use crate::error::{Error, Result};
use crate::model::history::{self, Facts, Graph, Stop, Walk};
use crate::model::line::Line;
use crate::model::pool::{Content, Edit, Hold, LockState, Snapshot};
use crate::model::shares::Shares;
use crate::process::log::Log;
use crate::process::signal::Interrupt;
use crate::store::seam::{
    Attempt, Cache, CommitMeta, CommitOutcome, CommitWalk, FileEdit, FolderEntry, HistoryReader,
    Identity, Mark, PutStore, Step, TreeReader, Unconfirmed,
};
use transport::Remote;
use tree::TreeEdit;

/// How much history to fetch at each step when an answer needs more.
const DEEPEN_STEPS: [i32; 4] = [100, 1000, 10_000, i32::MAX];
/// The local ref a put pushes from.
const PUSH_REF: &str = "refs/pool-resource/push";

fn git_error(what: impl Into<String>) -> impl FnOnce(git2::Error) -> Error {
    let what = what.into();
    move |source| Error::Git { what, source }
}

enum Access {
    /// The user's repository itself, on this machine.
    Local,
    /// A bare repository we fetch into.
    Remote {
        remote: Box<Remote>,
        /// Removed on drop; `None` for the persistent `check` cache.
        _temp: Option<TempDir>,
        /// Index into [`DEEPEN_STEPS`] of the history fetched so far.
        deepened: usize,
    },
}

/// A lock repository reached with git.
pub struct GitStore {
    repo: Repository,
    access: Access,
    source: Source,
    identity: Identity,
}

impl GitStore {
    /// Opens the repository of `source`, keeping a remote's objects where
    /// `cache` says.
    pub fn open(
        source: &Source,
        identity: Identity,
        cache: Cache,
        log: Log,
        interrupt: Interrupt,
    ) -> Result<GitStore> {
        transport::configure_process(source)?;
        let (repo, access) = match source.uri.local_path() {
            Some(path) => (open_local(path, &source.branch)?, Access::Local),
            None => {
                let remote = Box::new(Remote::new(source, log.clone(), interrupt)?);
                let (repo, temp) = match cache {
                    Cache::Kept => (open_cache(source)?, None),
                    Cache::Fresh => {
                        let dir = tempfile::Builder::new()
                            .prefix("pool-resource-")
                            .tempdir()
                            .map_err(|e| Error::io("could not create a temporary directory", e))?;
                        let repo = Repository::init_bare(dir.path())
                            .map_err(git_error("could not create a temporary repository"))?;
                        (repo, Some(dir))
                    }
                };
                (
                    repo,
                    Access::Remote {
                        remote,
                        _temp: temp,
                        deepened: 0,
                    },
                )
            }
        };
        Ok(GitStore {
            repo,
            access,
            source: source.clone(),
            identity,
        })
    }

    fn branch_ref(&self) -> String {
        format!("refs/heads/{}", self.source.branch)
    }

    fn branch_not_found(&self) -> Error {
        Error::BranchNotFound {
            branch: self.source.branch.clone(),
            uri: self.source.uri.to_string(),
        }
    }

    /// Brings the branch tip into the repository, fetching `depth` commits of
    /// history (0: as much as is already there) for a remote.
    fn refresh(&mut self, depth: i32) -> Result<Oid> {
        let tip = match &self.access {
            Access::Local => match self.repo.refname_to_id(&self.branch_ref()) {
                Ok(oid) => Some(oid),
                Err(e) if e.code() == git2::ErrorCode::NotFound => None,
                Err(e) => return Err(git_error("could not read the branch")(e)),
            },
            Access::Remote {
                remote, deepened, ..
            } => {
                let spec = format!(
                    "+refs/heads/{b}:refs/remotes/origin/{b}",
                    b = self.source.branch
                );
                // libgit2 fetching a moved tip into a shallow copy without
                // a depth writes the new tip as its shallow boundary, so
                // every history question would start over from one commit:
                // keep the depth this copy was deepened to.
                let depth = match (depth, self.repo.is_shallow()) {
                    (0, true) => {
                        DEEPEN_STEPS[deepened.saturating_sub(1).min(DEEPEN_STEPS.len() - 1)]
                    }
                    _ => depth,
                };
                remote.fetch(
                    &self.repo,
                    &[spec.as_str()],
                    depth,
                    "fetching the lock repository",
                )?
            }
        };
        tip.ok_or_else(|| self.branch_not_found())
    }

    /// Fetches more history; false when there is no more to fetch.
    /// A step counts once its fetch succeeded: a deepening fetch cut by a
    /// network fault is tried again by the next call, never taken for the
    /// end of the history (which would read as "not on the branch").
    fn deepen(&mut self) -> Result<bool> {
        Ok(self.deepen_to()?.is_some())
    }

    /// [`GitStore::deepen`], with the tip the deepening fetch brought.
    fn deepen_to(&mut self) -> Result<Option<Oid>> {
        let step = match &self.access {
            Access::Local => return Ok(None),
            Access::Remote { deepened, .. } => *deepened,
        };
        if !self.repo.is_shallow() || step >= DEEPEN_STEPS.len() {
            return Ok(None);
        }
        let tip = self.refresh(DEEPEN_STEPS[step])?;
        if let Access::Remote { deepened, .. } = &mut self.access {
            *deepened = step + 1;
        }
        Ok(Some(tip))
    }

    /// The first parent written in `id`'s commit object. Read from the raw
    /// object: libgit2 caches a shallow commit parsed without its parents,
    /// and keeps that after a deepening fetch.
    fn first_parent(&self, id: Oid) -> Result<Option<Oid>> {
        let odb = self
            .repo
            .odb()
            .map_err(git_error("could not open the object database"))?;
        let raw = odb.read(id).map_err(git_error("could not read a commit"))?;
        let header = raw
            .data()
            .split(|b| *b == b'\n')
            .take_while(|l| !l.is_empty());
        for line in header {
            if let Some(hex) = line.strip_prefix(b"parent ") {
                return Ok(std::str::from_utf8(hex)
                    .ok()
                    .and_then(|h| Oid::from_str(h).ok()));
            }
        }
        Ok(None)
    }

    fn has_object(&self, id: Oid) -> bool {
        self.repo.odb().is_ok_and(|odb| odb.exists(id))
    }

    fn shallow_roots(&self) -> HashSet<Oid> {
        std::fs::read_to_string(self.repo.path().join("shallow"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| Oid::from_str(l.trim()).ok())
            .collect()
    }

    /// Asks `question` of the history fetched so far, fetching more while
    /// the answer needs it.
    fn with_history<T>(
        &mut self,
        what: &str,
        mut question: impl FnMut(&mut dyn Graph) -> Result<Walk<T>>,
    ) -> Result<T> {
        loop {
            let mut graph = Fetched {
                repo: &self.repo,
                shallow: self.shallow_roots(),
            };
            match question(&mut graph)? {
                Ok(answer) => return Ok(answer),
                Err(Stop::NeedsHistory) if self.deepen()? => {}
                Err(stop) => {
                    return Err(Error::Repository {
                        what: format!(
                            "could not tell {what} from the history of branch {} of {}",
                            self.source.branch, self.source.uri
                        ),
                        detail: match stop {
                            Stop::NeedsHistory => "the history is incomplete".into(),
                            Stop::TooLong => "the history is too long".into(),
                        },
                    })
                }
            }
        }
    }

    fn find_commit(&self, version: &str) -> Result<git2::Commit<'_>> {
        Oid::from_str(version)
            .and_then(|oid| self.repo.find_commit(oid))
            .map_err(|_| Error::VersionNotFound {
                version: version.to_string(),
                branch: self.source.branch.clone(),
                uri: self.source.uri.to_string(),
            })
    }

    /// Builds (without publishing) the commit of `step` on `parent_id`.
    fn build_commit(&self, parent_id: Oid, step: &Step) -> Result<Oid> {
        let change = &step.change;
        let parent = self
            .repo
            .find_commit(parent_id)
            .map_err(git_error("could not read the branch tip"))?;
        let root = parent
            .tree()
            .map_err(git_error("could not read the tip's tree"))?;
        let pool = &self.source.pool;
        let mut edits = Vec::new();
        for (lock, lock_edits) in change.parts() {
            for edit in lock_edits {
                let (state, entry) = match edit {
                    Edit::Delete(state) => (*state, None),
                    Edit::Write(state, Content::Keep(blob)) => {
                        let blob = Oid::from_str(blob).map_err(git_error("bad blob id"))?;
                        // Keep the mode the lock file had wherever it was.
                        let mode = [LockState::Claimed, LockState::Unclaimed]
                            .iter()
                            .filter_map(|s| tree::entry_at(&root, &pool.lock_path(*s, lock)))
                            .find(|(id, _)| *id == blob)
                            .map(|(_, mode)| mode)
                            .unwrap_or(FileMode::Blob.into());
                        (*state, Some((blob, mode)))
                    }
                    Edit::Write(state, Content::Bytes(bytes)) => {
                        let blob = self
                            .repo
                            .blob(bytes)
                            .map_err(git_error("could not store the lock's content"))?;
                        (*state, Some((blob, FileMode::Blob.into())))
                    }
                };
                let mut path = pool.components().to_vec();
                path.push(state.dir().to_string());
                path.push(lock.to_string());
                edits.push(TreeEdit { path, entry });
            }
        }
        edits.extend(self.file_edits(&step.files)?);
        self.write_commit(Some(&root), &edits, &[&parent], &step.message)
    }

    /// The tree edits that write or delete `files`.
    fn file_edits(&self, files: &[FileEdit]) -> Result<Vec<TreeEdit>> {
        let mut edits = Vec::new();
        for file in files {
            let entry = match &file.content {
                Some(bytes) => Some((
                    self.repo
                        .blob(bytes)
                        .map_err(git_error(format!("could not store {}", file.path)))?,
                    FileMode::Blob.into(),
                )),
                None => None,
            };
            edits.push(TreeEdit {
                path: file.path.split('/').map(String::from).collect(),
                entry,
            });
        }
        Ok(edits)
    }

    /// Applies `edits` to `root` and writes the commit of the result with
    /// `parents` and `message`, by the configured identity; publishes nothing.
    fn write_commit(
        &self,
        root: Option<&git2::Tree<'_>>,
        edits: &[TreeEdit],
        parents: &[&git2::Commit<'_>],
        message: &str,
    ) -> Result<Oid> {
        let tree_id = tree::apply(&self.repo, root, edits)
            .map_err(git_error("could not build the new tree"))?
            .ok_or_else(|| Error::Repository {
                what: "the change would leave the repository empty".into(),
                detail: message.lines().next().unwrap_or("").to_string(),
            })?;
        let tree = self
            .repo
            .find_tree(tree_id)
            .map_err(git_error("could not read the new tree"))?;
        let sig = Signature::now(&self.identity.name, &self.identity.email).map_err(git_error(
            "invalid commit identity (git_config user.name/user.email)",
        ))?;
        self.repo
            .commit(None, &sig, &sig, message, &tree, parents)
            .map_err(git_error("could not create the commit"))
    }

    /// Deepens the shallow history until `version` is there, or there is
    /// no more to fetch (then [`Self::find_commit`] says it is not found).
    fn fetch_commit(&mut self, version: &str) -> Result<()> {
        let Ok(id) = Oid::from_str(version) else {
            return Ok(());
        };
        while !self.has_object(id) {
            if !self.deepen()? {
                break;
            }
        }
        Ok(())
    }

    fn publish(&self, commit: Oid, parent: Oid, subject: &str) -> Result<CommitOutcome> {
        match &self.access {
            Access::Local => {
                let result = self.repo.reference_matching(
                    &self.branch_ref(),
                    commit,
                    true,
                    parent,
                    &format!("pool-resource: {subject}"),
                );
                match result {
                    Ok(_) => Ok(CommitOutcome::Committed(commit.into())),
                    Err(e)
                        if matches!(
                            e.code(),
                            git2::ErrorCode::Modified | git2::ErrorCode::Locked
                        ) =>
                    {
                        Ok(CommitOutcome::LostRace)
                    }
                    Err(e) => Err(git_error(format!(
                        "could not update branch {} of {}",
                        self.source.branch, self.source.uri
                    ))(e)),
                }
            }
            Access::Remote { remote, .. } => {
                self.repo
                    .reference(PUSH_REF, commit, true, "pool-resource")
                    .map_err(git_error("could not record the new commit"))?;
                remote.push(&self.repo, PUSH_REF, commit, parent)
            }
        }
    }
}

fn open_local(path: &Path, branch: &str) -> Result<Repository> {
    let repo = Repository::open(path).map_err(|source| {
        let shown = crate::error::shortened(&path.display().to_string());
        let hint = if source.code() != git2::ErrorCode::NotFound {
            String::new()
        } else if path.exists() {
            format!(": {shown} is not a git repository; a lock repository is made with `git init --bare`, then `pool --pool POOL init LOCK...`")
        } else {
            format!(
                ": there is nothing at {shown}; create it with `git init --bare {shown}`, then `pool --pool POOL init LOCK...` makes branch {branch:?} and a pool in it"
            )
        };
        Error::Git {
            what: format!("could not open the lock repository {shown}{hint}"),
            source,
        }
    })?;
    if !repo.is_bare() {
        let head = repo
            .head()
            .ok()
            .and_then(|h| h.name().ok().map(String::from));
        if head.as_deref() == Some(&format!("refs/heads/{branch}")) {
            return Err(Error::bad_request(format!(
                "invalid payload: {} has branch {branch:?} checked out; use a bare repository (git init --bare) so pushes do not desynchronise its working tree",
                path.display()
            )));
        }
    }
    Ok(repo)
}

/// The persistent `check` cache for this URI and branch.
fn cache_path(source: &Source) -> PathBuf {
    let key = Sha256::digest(format!("{}\n{}", source.uri, source.branch).as_bytes());
    let hex = hex::encode(&key[..12]);
    std::env::temp_dir().join(format!("pool-resource-check-{hex}"))
}

fn open_cache(source: &Source) -> Result<Repository> {
    let path = cache_path(source);
    if let Ok(repo) = Repository::open_bare(&path) {
        return Ok(repo);
    }
    // Missing or damaged: start again.
    let _ = std::fs::remove_dir_all(&path);
    Repository::init_bare(&path).map_err(git_error(format!(
        "could not create the check cache {}",
        path.display()
    )))
}

impl PutStore for GitStore {
    fn snapshot(&mut self) -> Result<Snapshot> {
        let tip = self.refresh(1)?;
        let commit = self
            .repo
            .find_commit(tip)
            .map_err(git_error("could not read the branch tip"))?;
        let root = commit
            .tree()
            .map_err(git_error("could not read the tip's tree"))?;
        let mut dirs = [LockState::Claimed, LockState::Unclaimed].map(|state| {
            tree::read_pool_dir(&self.repo, &root, &self.source.pool, state.dir())
                .map_err(git_error("could not read the pool"))
        });
        let [claimed, unclaimed] = &mut dirs;
        let (Some(claimed), Some(unclaimed)) = (
            std::mem::replace(claimed, Ok(None))?,
            std::mem::replace(unclaimed, Ok(None))?,
        ) else {
            return Err(Error::PoolNotFound {
                pool: self.source.pool.to_string(),
                branch: self.source.branch.clone(),
                uri: self.source.uri.to_string(),
            });
        };
        let hold = match tree::entry_at(&root, &Hold::path(&self.source.pool)) {
            Some((id, _)) => Some(Hold::parse(
                self.repo
                    .find_blob(id)
                    .map_err(git_error("could not read the pool's hold"))?
                    .content(),
            )),
            None => None,
        };
        let line = match tree::entry_at(&root, &Line::path(&self.source.pool)) {
            Some((id, _)) => Line::parse(
                self.repo
                    .find_blob(id)
                    .map_err(git_error("could not read the pool's line"))?
                    .content(),
            ),
            None => Line::default(),
        };
        // Read even with nothing claimed: holders a tool that does not
        // know the file left behind go with the next change of the file.
        let shares = match tree::entry_at(&root, &Shares::path(&self.source.pool)) {
            Some((id, _)) => Shares::parse(
                self.repo
                    .find_blob(id)
                    .map_err(git_error("could not read the pool's shares"))?
                    .content(),
            ),
            None => Shares::default(),
        };
        Ok(Snapshot {
            tip: tip.into(),
            claimed,
            unclaimed,
            hold,
            line,
            shares,
            ..Snapshot::default()
        })
    }

    fn commit(&mut self, base: &Snapshot, steps: &[Step]) -> Attempt {
        let Some(last) = steps.last() else {
            return Attempt::clear(Ok(CommitOutcome::Committed(base.tip.clone())));
        };
        let built = Oid::from_str(&base.tip)
            .map_err(git_error("bad snapshot tip"))
            .and_then(|parent_id| {
                let mut top = parent_id;
                for step in steps {
                    top = self.build_commit(top, step)?;
                }
                Ok((parent_id, top))
            });
        let (parent_id, top) = match built {
            Ok(ids) => ids,
            Err(e) => return Attempt::clear(Err(e)),
        };
        // One push (or one ref update) moves the branch from the tip to the
        // top commit: every commit of the chain lands, or none does.
        let outcome = self.publish(top, parent_id, &last.change.subject);
        let unconfirmed = matches!(&outcome, Err(e) if e.may_have_landed()).then(|| Unconfirmed {
            mark: Mark::Commit(top.into()),
            parent: parent_id.into(),
            lock: last.change.lock_list(),
        });
        Attempt {
            outcome,
            unconfirmed,
        }
    }

    fn commit_files(
        &mut self,
        parent: Option<&str>,
        edits: &[FileEdit],
        message: &str,
    ) -> Result<CommitOutcome> {
        let parent = match parent {
            Some(p) => {
                let id = Oid::from_str(p).map_err(git_error("bad commit id"))?;
                Some(
                    self.repo
                        .find_commit(id)
                        .map_err(git_error("could not read the branch tip"))?,
                )
            }
            None => None,
        };
        let root = match &parent {
            Some(c) => Some(
                c.tree()
                    .map_err(git_error("could not read the tip's tree"))?,
            ),
            None => None,
        };
        let tree_edits = self.file_edits(edits)?;
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        let commit = self.write_commit(root.as_ref(), &tree_edits, &parents, message)?;
        let subject = message.lines().next().unwrap_or("").to_string();
        match parent.as_ref().map(|p| p.id()) {
            Some(parent_id) => self.publish(commit, parent_id, &subject),
            None if matches!(self.access, Access::Local) => {
                match self.repo.reference(
                    &self.branch_ref(),
                    commit,
                    false,
                    &format!("pool-resource: {subject}"),
                ) {
                    Ok(_) => Ok(CommitOutcome::Committed(commit.into())),
                    Err(e) if e.code() == git2::ErrorCode::Exists => Ok(CommitOutcome::LostRace),
                    Err(e) => Err(git_error(format!(
                        "could not create branch {} of {}",
                        self.source.branch, self.source.uri
                    ))(e)),
                }
            }
            None => self.publish(commit, Oid::ZERO_SHA1, &subject),
        }
    }

    fn branch_tip(&mut self) -> Result<Option<String>> {
        match self.refresh(1) {
            Ok(tip) => Ok(Some(tip.to_string())),
            Err(Error::BranchNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn peek_tip(&mut self) -> Result<Option<String>> {
        let tip = match &self.access {
            Access::Local => match self.repo.refname_to_id(&self.branch_ref()) {
                Ok(oid) => Some(oid),
                Err(e) if e.code() == git2::ErrorCode::NotFound => None,
                Err(e) => return Err(git_error("could not read the branch")(e)),
            },
            Access::Remote { remote, .. } => {
                remote.list_tip(&self.repo, "looking at the lock repository's branch")?
            }
        };
        Ok(tip.map(|t| t.to_string()))
    }
}

impl CommitWalk for GitStore {
    fn walk_commits(
        &mut self,
        tip: &str,
        limit: usize,
        visit: &mut dyn FnMut(&CommitMeta) -> bool,
    ) -> Result<bool> {
        let mut next = Some(Oid::from_str(tip).map_err(git_error("bad commit id"))?);
        let mut seen = 0;
        while let Some(id) = next.take() {
            if seen >= limit {
                return Ok(true);
            }
            seen += 1;
            let parent = self.first_parent(id)?;
            let stop = {
                let commit = self
                    .repo
                    .find_commit(id)
                    .map_err(git_error("could not read a commit"))?;
                let author = commit.author();
                let meta = CommitMeta {
                    id: id.to_string(),
                    parent: parent.map(|p| p.to_string()),
                    time: commit.committer().when().seconds(),
                    author: format!(
                        "{} <{}>",
                        String::from_utf8_lossy(author.name_bytes()),
                        String::from_utf8_lossy(author.email_bytes())
                    ),
                    message: String::from_utf8_lossy(commit.message_raw_bytes()).into_owned(),
                };
                visit(&meta)
            };
            if stop {
                break;
            }
            let Some(parent) = parent else {
                break;
            };
            if !self.has_object(parent) && (!self.deepen()? || !self.has_object(parent)) {
                break;
            }
            next = Some(parent);
        }
        Ok(false)
    }
}

impl TreeReader for GitStore {
    fn read_file(&mut self, version: &str, path: &str) -> Result<Option<Vec<u8>>> {
        let commit = self.find_commit(version)?;
        let tree = commit.tree().map_err(git_error("could not read a tree"))?;
        let Some((oid, _)) = tree::entry_at(&tree, path) else {
            return Ok(None);
        };
        match self.repo.find_blob(oid) {
            Ok(blob) => Ok(Some(blob.content().to_vec())),
            Err(_) => Ok(None),
        }
    }

    fn entry_id(&mut self, version: &str, path: &str) -> Result<Option<String>> {
        // A walk may stop at a commit whose parent a shallow fetch has not
        // brought yet (`pool status` compares a claim with its parent).
        self.fetch_commit(version)?;
        let commit = self.find_commit(version)?;
        let tree = commit.tree().map_err(git_error("could not read a tree"))?;
        Ok(tree::entry_at(&tree, path).map(|(id, _)| id.to_string()))
    }

    fn list_folder(&mut self, version: &str, path: &str) -> Result<Option<Vec<FolderEntry>>> {
        let commit = self.find_commit(version)?;
        let root = commit.tree().map_err(git_error("could not read a tree"))?;
        let tree = if path.is_empty() {
            root
        } else {
            match root.get_path(Path::new(path)) {
                Ok(e) if e.kind() == Some(git2::ObjectType::Tree) => self
                    .repo
                    .find_tree(e.id())
                    .map_err(git_error("could not read a tree"))?,
                _ => return Ok(None),
            }
        };
        Ok(Some(
            tree.iter()
                .filter_map(|e| {
                    Some(FolderEntry {
                        name: e.name().ok()?.to_string(),
                        is_dir: e.kind() == Some(git2::ObjectType::Tree),
                        id: e.id().to_string(),
                    })
                })
                .collect(),
        ))
    }
}

impl HistoryReader for GitStore {
    fn versions(&mut self, since: Option<&str>) -> Result<Vec<String>> {
        let first_fetch = self.repo.is_empty().unwrap_or(true);
        let tip = self
            .refresh(if first_fetch { DEEPEN_STEPS[0] } else { 0 })?
            .to_string();
        let pool = self.source.pool.to_string();
        self.with_history("the versions of the pool", |g| {
            history::versions(g, &tip, since, &pool, usize::MAX)
        })
    }

    fn load_version(&mut self, version: &str, depth: Option<u32>) -> Result<()> {
        let depth = depth.map(|d| d as i32).unwrap_or(16).max(2);
        // A fetch with a depth also shortens: once this copy holds more
        // history (deepened, or complete), keep it, or a version deeper
        // than `depth` would read as not on the branch with the deepening
        // steps already spent.
        let keep = match &self.access {
            Access::Local => true,
            Access::Remote { deepened, .. } => *deepened > 0 || !self.repo.is_shallow(),
        };
        let mut tip = self.refresh(if keep { 0 } else { depth })?;
        loop {
            let oid = self.find_commit(version).ok().map(|c| c.id());
            let ready = match oid {
                Some(v) if !self.shallow_roots().contains(&v) => {
                    let mut graph = Fetched {
                        repo: &self.repo,
                        shallow: self.shallow_roots(),
                    };
                    history::is_reachable(&mut graph, &tip.to_string(), &v.to_string(), usize::MAX)?
                        == Ok(true)
                }
                _ => false,
            };
            if ready {
                return Ok(());
            }
            // Look again from the tip the deepening fetch brought, not from
            // a fetch of its own: on a busy branch that fetch would find a
            // newer tip and make it the shallow boundary, and the version
            // would read as not on the branch once the steps ran out.
            tip = match self.deepen_to()? {
                Some(deeper) => deeper,
                None => {
                    return Err(Error::VersionNotFound {
                        version: version.to_string(),
                        branch: self.source.branch.clone(),
                        uri: self.source.uri.to_string(),
                    })
                }
            };
        }
    }

    fn changed_pool_paths(&mut self, version: &str) -> Result<Vec<String>> {
        let commit = self.find_commit(version)?;
        let tree = commit.tree().map_err(git_error("could not read a tree"))?;
        let parent_tree = match commit.parent(0) {
            Ok(p) => Some(p.tree().map_err(git_error("could not read a tree"))?),
            Err(_) => None,
        };
        let mut opts = git2::DiffOptions::new();
        opts.pathspec(format!("{}/", self.source.pool));
        let diff = self
            .repo
            .diff_tree_to_tree(parent_tree.as_ref(), Some(&tree), Some(&mut opts))
            .map_err(git_error("could not compare the version with its parent"))?;
        let mut paths: Vec<String> = diff
            .deltas()
            .flat_map(|d| [d.old_file().path(), d.new_file().path()])
            .flatten()
            .filter_map(|p| p.to_str().map(String::from))
            .collect();
        paths.sort();
        paths.dedup();
        Ok(paths)
    }

    fn subject(&mut self, version: &str) -> Result<String> {
        let commit = self.find_commit(version)?;
        Ok(commit.summary().ok().flatten().unwrap_or("").to_string())
    }

    fn last_pool_change(&mut self, at: &str) -> Result<Option<String>> {
        let at = self.find_commit(at)?.id().to_string();
        let pool = self.source.pool.to_string();
        self.with_history("which commit last changed the pool", |g| {
            history::last_change(g, &at, &pool, usize::MAX)
        })
    }

    fn changed_since(&mut self, version: &str, path: &str) -> Result<bool> {
        let v = self.find_commit(version)?.id().to_string();
        let tip = self.refresh(0)?.to_string();
        self.with_history(&format!("whether {path} changed since {v}"), |g| {
            history::changed_since(g, &tip, &v, path, usize::MAX)
        })
    }

    fn export_tree(&mut self, version: &str, dest: &Path) -> Result<()> {
        let commit = self.find_commit(version)?;
        let mut co = git2::build::CheckoutBuilder::new();
        co.target_dir(dest).force().update_index(false);
        self.repo
            .checkout_tree(commit.as_object(), Some(&mut co))
            .map_err(git_error(format!(
                "could not write the repository's files into {}",
                dest.display()
            )))?;
        Ok(())
    }

    fn branches(&mut self) -> Result<Vec<String>> {
        let mut names = match &self.access {
            Access::Local => {
                let mut names = Vec::new();
                for branch in self
                    .repo
                    .branches(Some(git2::BranchType::Local))
                    .map_err(git_error("could not list the branches"))?
                {
                    let (branch, _) = branch.map_err(git_error("could not list the branches"))?;
                    if let Ok(Some(name)) = branch.name() {
                        names.push(name.to_string());
                    }
                }
                names
            }
            Access::Remote { remote, .. } => {
                remote.list_branches(&self.repo, "listing the lock repository's branches")?
            }
        };
        names.sort();
        Ok(names)
    }
}

/// The commit graph as far as it has been fetched.
struct Fetched<'r> {
    repo: &'r Repository,
    shallow: HashSet<Oid>,
}

impl Graph for Fetched<'_> {
    fn facts(&mut self, commit: &str) -> Result<Option<Facts>> {
        let Ok(id) = Oid::from_str(commit) else {
            return Ok(None);
        };
        let odb = self
            .repo
            .odb()
            .map_err(git_error("could not open the object database"))?;
        if !odb.exists(id) {
            return Ok(None);
        }
        // Parents from the raw object: libgit2 keeps a shallow commit parsed
        // without its parents after a deepening fetch.
        let raw = odb.read(id).map_err(git_error("could not read a commit"))?;
        let mut parents = Vec::new();
        let mut time = 0;
        for line in raw
            .data()
            .split(|b| *b == b'\n')
            .take_while(|l| !l.is_empty())
        {
            let line = String::from_utf8_lossy(line);
            if let Some(hex) = line.strip_prefix("parent ") {
                parents.push(hex.trim().to_string());
            } else if let Some(who) = line.strip_prefix("committer ") {
                time = who
                    .rsplit(' ')
                    .nth(1)
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
            }
        }
        let fetched = !self.shallow.contains(&id)
            && parents
                .iter()
                .all(|p| Oid::from_str(p).is_ok_and(|p| odb.exists(p)));
        Ok(Some(Facts {
            time,
            parents: fetched.then_some(parents),
        }))
    }

    fn at_path(&mut self, commit: &str, path: &str) -> Result<Option<String>> {
        let commit = Oid::from_str(commit)
            .and_then(|id| self.repo.find_commit(id))
            .map_err(git_error("could not read a commit"))?;
        let tree = commit.tree().map_err(git_error("could not read a tree"))?;
        Ok(tree::entry_at(&tree, path).map(|(id, mode)| format!("{id} {mode:o}")))
    }
}
