//! The CodeCommit API backend: every put without a clone.
//!
//! `GetBranch` reads the tip, `GetFolder` lists the pool, and `CreateCommit`
//! with `parentCommitId` set to the tip read is the compare-and-swap:
//! CodeCommit refuses it with `ParentCommitIdOutdatedException` when someone
//! moved the branch first. The repository layout, commit messages and output
//! are the git backend's, so a pool can be used through both at once.
//! There is no API listing the commits that touch a folder: `check` and `in`
//! walk `GetCommit` parents from the tip and compare what `GetFolder` says is
//! at the pool's path, answering through [`crate::model::history`] exactly as the git
//! backend does, merges included. Every commit, a put's or an operator's,
//! is one `CreateCommit` built in one place (`create_commit`);
//! one whose reply was lost is marked by its `Pool-Resource-Nonce` trailer
//! for [`crate::store::recovery`] to look for.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use aws_sdk_codecommit::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_codecommit::primitives::Blob;
use aws_sdk_codecommit::types::{
    DeleteFileEntry, FileModeTypeEnum, PutFileEntry, SourceFileSpecifier,
};
use aws_sdk_codecommit::Client;

use super::creds::Aws;
use crate::error::{Cause, Error, Result};
use crate::model::history::{self, Facts, Graph, Stop, Walk};
use crate::model::line::Line;
use crate::model::message::{Parsed, Trailer};
use crate::model::names::{is_lock_file_name, LockName, PoolPath};
use crate::model::pool::{BlobId, CommitId, Content, Edit, Hold, LockState, Snapshot};
use crate::model::shares::Shares;
use crate::store::seam::{
    Attempt, CommitMeta, CommitOutcome, CommitWalk, FileEdit, FolderEntry, HistoryReader, Identity,
    Mark, PutStore, Step, TreeReader, Unconfirmed,
};

/// How many commits `check`, `in` and an idempotent put walk back from the
/// tip at most (each one is a `GetCommit` call).
pub const WALK_LIMIT: usize = crate::store::seam::HISTORY_WALK_LIMIT;
/// How many files `in` copies out of a version at most.
const EXPORT_LIMIT: usize = 10_000;

/// What went wrong with one API call, read from the SDK's error: what we
/// act on, and the service's own words as the cause (the SDK's error
/// chain repeats them inside debug output).
#[derive(Debug)]
struct Failure {
    code: Option<String>,
    detail: String,
    /// A dispatch failure, timeout or unreadable response: no reply.
    no_reply: bool,
    /// Throttling or a server error: the service says try again.
    transient: bool,
    cause: Cause,
}

fn failure<E>(e: SdkError<E, aws_sdk_codecommit::config::http::HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let no_reply = matches!(
        e,
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_)
    );
    let server_error =
        matches!(&e, SdkError::ServiceError(s) if s.raw().status().is_server_error());
    let code = e.code().map(String::from);
    let detail = match e.message() {
        Some(m) => m.to_string(),
        None => DisplayErrorContext(&e).to_string(),
    };
    let transient = server_error || matches!(code.as_deref(), Some("ThrottlingException"));
    Failure {
        cause: Cause::msg(detail.clone()),
        code,
        detail,
        no_reply,
        transient,
    }
}

/// A folder at a commit.
#[derive(Clone)]
struct Folder {
    tree: Option<String>,
    /// Its files: name → blob id.
    files: BTreeMap<String, String>,
    /// Everything in it, as git compares entries: name → object id and mode.
    entries: BTreeMap<String, String>,
}

struct CommitInfo {
    /// The first parent.
    parent: Option<String>,
    /// Every parent, in order.
    parents: Vec<String>,
    /// Committer time, Unix seconds (CodeCommit's `date` is `SECONDS +HHMM`).
    time: i64,
    message: String,
    author: String,
}

/// A lock repository in CodeCommit, reached through its API.
pub struct CodeCommitStore {
    aws: Aws,
    client: Client,
    repo: String,
    region: String,
    branch: String,
    pool: PoolPath,
    uri: String,
    identity: Identity,
    commits: HashMap<String, CommitInfo>,
    folders: HashMap<(String, String), Option<Folder>>,
    /// Whether the credential chain has been asked once (see [`Self::tip`]).
    credentials_checked: bool,
}

impl CodeCommitStore {
    /// Connects to repository `repo` in `region`.
    pub fn new(
        aws: Aws,
        repo: &str,
        branch: &str,
        pool: &PoolPath,
        uri: &str,
        identity: Identity,
    ) -> CodeCommitStore {
        let client = Client::new(aws.sdk_config());
        let region = aws.region().unwrap_or_default();
        CodeCommitStore {
            aws,
            client,
            repo: repo.to_string(),
            region,
            branch: branch.to_string(),
            pool: pool.clone(),
            uri: uri.to_string(),
            identity,
            commits: HashMap::new(),
            folders: HashMap::new(),
            credentials_checked: false,
        }
    }

    fn arn(&self) -> String {
        format!(
            "arn:aws:codecommit:{}:<account-id>:{}",
            self.region, self.repo
        )
    }

    /// Turns an API failure into the library's error, naming the IAM action.
    fn error(&self, action: &str, f: Failure) -> Error {
        let uri = self.uri.clone();
        if f.no_reply {
            return Error::Network {
                what: format!("calling codecommit:{action}"),
                uri,
                source: f.cause,
            };
        }
        if f.transient {
            return Error::Api {
                action: action.to_string(),
                code: f.code.unwrap_or_else(|| "server error".into()),
                uri,
                retryable: true,
                source: f.cause,
            };
        }
        match f.code.as_deref() {
            Some(
                "AccessDeniedException"
                | "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "ExpiredTokenException"
                | "InvalidClientTokenId"
                | "MissingAuthenticationToken",
            ) => Error::Auth {
                uri,
                detail: format!(
                    "{} (the credentials need codecommit:{action} on {})",
                    f.detail,
                    self.arn()
                ),
            },
            Some("RepositoryDoesNotExistException") => Error::Repository {
                what: format!("repository {:?} not found in {}", self.repo, self.region),
                detail: format!(
                    "{}; create it with `aws codecommit create-repository --repository-name {} --region {}`, then `pool --pool POOL init LOCK...` makes the branch and a pool in it",
                    f.detail, self.repo, self.region
                ),
            },
            Some("BranchDoesNotExistException") => Error::BranchNotFound {
                branch: self.branch.clone(),
                uri,
            },
            code => Error::Api {
                action: action.to_string(),
                code: code.unwrap_or("no error code").to_string(),
                uri,
                retryable: false,
                source: f.cause,
            },
        }
    }

    fn tip(&mut self) -> Result<String> {
        // Every operation starts here. Asking the chain once up front turns
        // "no credentials" into the same actionable, non-retried error the
        // git backend gives (sources tried, hop limit); inside the SDK it
        // would surface as a dispatch failure and be retried as a network
        // fault.
        if !self.credentials_checked {
            self.aws.credentials(&self.uri)?;
            self.credentials_checked = true;
        }
        let out = self
            .aws
            .block_on(
                self.client
                    .get_branch()
                    .repository_name(&self.repo)
                    .branch_name(&self.branch)
                    .send(),
            )
            .map_err(|e| self.error("GetBranch", failure(e)))?;
        out.branch()
            .and_then(|b| b.commit_id())
            .map(String::from)
            .ok_or_else(|| Error::BranchNotFound {
                branch: self.branch.clone(),
                uri: self.uri.clone(),
            })
    }

    fn commit_info(&mut self, id: &str) -> Result<&CommitInfo> {
        if !self.commits.contains_key(id) {
            let out = self.aws.block_on(
                self.client
                    .get_commit()
                    .repository_name(&self.repo)
                    .commit_id(id)
                    .send(),
            );
            let out = match out {
                Ok(o) => o,
                Err(e) => {
                    let f = failure(e);
                    if matches!(
                        f.code.as_deref(),
                        Some("CommitIdDoesNotExistException" | "InvalidCommitIdException")
                    ) {
                        return Err(self.version_not_found(id));
                    }
                    return Err(self.error("GetCommit", f));
                }
            };
            let commit = out.commit();
            let author = commit.and_then(|c| c.author());
            let parents = commit.map(|c| c.parents().to_vec()).unwrap_or_default();
            // CodeCommit dates are "SECONDS +HHMM".
            let time = commit
                .and_then(|c| c.committer())
                .and_then(|u| u.date())
                .and_then(|d| d.split_whitespace().next())
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            let info = CommitInfo {
                parent: parents.first().cloned(),
                parents,
                time,
                message: commit.and_then(|c| c.message()).unwrap_or("").to_string(),
                author: format!(
                    "{} <{}>",
                    author.and_then(|a| a.name()).unwrap_or(""),
                    author.and_then(|a| a.email()).unwrap_or("")
                ),
            };
            self.commits.insert(id.to_string(), info);
        }
        Ok(&self.commits[id])
    }

    fn version_not_found(&self, version: &str) -> Error {
        Error::VersionNotFound {
            version: version.to_string(),
            branch: self.branch.clone(),
            uri: self.uri.clone(),
        }
    }

    /// The files of folder `path` at `commit` (name → blob id) and its tree id;
    /// `None` when the folder does not exist.
    fn folder(&mut self, commit: &str, path: &str) -> Result<Option<Folder>> {
        let key = (commit.to_string(), path.to_string());
        if let Some(hit) = self.folders.get(&key) {
            return Ok(hit.clone());
        }
        let out = self.aws.block_on(
            self.client
                .get_folder()
                .repository_name(&self.repo)
                .commit_specifier(commit)
                .folder_path(path)
                .send(),
        );
        let result = match out {
            Ok(o) => {
                let files = o
                    .files()
                    .iter()
                    .filter_map(|f| {
                        Some((f.relative_path()?.to_string(), f.blob_id()?.to_string()))
                    })
                    .collect();
                let mut entries = BTreeMap::new();
                for f in o.files() {
                    if let (Some(name), Some(blob)) = (f.relative_path(), f.blob_id()) {
                        let mode = f.file_mode().map(|m| m.as_str()).unwrap_or("");
                        entries.insert(name.to_string(), format!("{blob} {mode}"));
                    }
                }
                for l in o.symbolic_links() {
                    if let (Some(name), Some(blob)) = (l.relative_path(), l.blob_id()) {
                        entries.insert(name.to_string(), format!("{blob} SYMLINK"));
                    }
                }
                for d in o.sub_folders() {
                    if let (Some(name), Some(tree)) = (d.relative_path(), d.tree_id()) {
                        entries.insert(name.to_string(), format!("{tree} TREE"));
                    }
                }
                for m in o.sub_modules() {
                    if let (Some(name), Some(commit)) = (m.relative_path(), m.commit_id()) {
                        entries.insert(name.to_string(), format!("{commit} COMMIT"));
                    }
                }
                Some(Folder {
                    tree: o.tree_id().map(String::from),
                    files,
                    entries,
                })
            }
            Err(e) => {
                let f = failure(e);
                if f.code.as_deref() == Some("FolderDoesNotExistException") {
                    None
                } else {
                    return Err(self.error("GetFolder", f));
                }
            }
        };
        self.folders.insert(key, result.clone());
        Ok(result)
    }

    fn locks_in(
        &mut self,
        commit: &str,
        state: LockState,
    ) -> Result<Option<BTreeMap<LockName, BlobId>>> {
        let path = format!("{}/{}", self.pool, state.dir());
        Ok(self.folder(commit, &path)?.map(|folder| {
            folder
                .files
                .into_iter()
                .filter(|(name, _)| is_lock_file_name(name))
                .filter_map(|(name, blob)| Some((LockName::new(&name).ok()?, blob)))
                .collect()
        }))
    }

    /// The blob id at `path` (a file) at `commit`.
    fn entry_at(&mut self, commit: &str, path: &str) -> Result<Option<String>> {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        Ok(self
            .folder(commit, dir)?
            .and_then(|folder| folder.files.get(name).cloned()))
    }

    fn pool_tree(&mut self, commit: &str) -> Result<Option<String>> {
        let pool = self.pool.to_string();
        Ok(self.folder(commit, &pool)?.and_then(|folder| folder.tree))
    }

    /// A history answer; the API has the whole history, so only the walk
    /// limit can stop one.
    fn answer<T>(&self, what: &str, walk: Walk<T>) -> Result<T> {
        walk.map_err(|stop| Error::Repository {
            what: format!(
                "could not tell {what} from the history of branch {} of {}",
                self.branch, self.uri
            ),
            detail: match stop {
                Stop::TooLong => format!(
                    "the answer lies more than {WALK_LIMIT} commits back (each one a GetCommit call); use backend: git"
                ),
                Stop::NeedsHistory => "GetCommit did not return a commit's parents".into(),
            },
        })
    }

    /// Whether `id` is a commit of the repository at all.
    fn exists(&mut self, id: &str) -> Result<bool> {
        match self.commit_info(id) {
            Ok(_) => Ok(true),
            Err(Error::VersionNotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One step of a put as one CreateCommit on `parent`: every lock's
    /// files and the step's other files in one compare-and-swap.
    fn commit_step(&mut self, parent: &CommitId, step: &Step) -> Attempt {
        let entries = match self.step_entries(step) {
            Ok(entries) => entries,
            Err(e) => return Attempt::clear(Err(e)),
        };
        // Without a clear answer the commit is known by its nonce: the
        // service makes it, so its id comes only with the reply.
        let mark = || {
            nonce_of(&step.message).map(|nonce| Unconfirmed {
                mark: Mark::Nonce(nonce),
                parent: parent.clone(),
                lock: step.change.lock_list(),
            })
        };
        match self.create_commit(Some(parent), &step.message, entries) {
            Ok(id) => Attempt::clear(Ok(CommitOutcome::Committed(id))),
            Err(f) => match f.code.as_deref() {
                // The SDK retries a request whose reply was lost, and the
                // retry of a commit that did land finds the branch moved,
                // by that very commit: look for it before treating this as
                // someone else's win.
                Some("ParentCommitIdOutdatedException") => Attempt {
                    outcome: Ok(CommitOutcome::LostRace),
                    unconfirmed: mark(),
                },
                // An update with the content the lock already has.
                Some("NoChangeException") => {
                    Attempt::clear(Ok(CommitOutcome::Committed(parent.clone())))
                }
                _ => {
                    let err = self.error("CreateCommit", f);
                    let unconfirmed = if err.may_have_landed() { mark() } else { None };
                    Attempt {
                        outcome: Err(err),
                        unconfirmed,
                    }
                }
            },
        }
    }

    /// The CreateCommit entries of `step`: its locks' files (a move where
    /// a lock changes folders with its content kept), then its other files.
    fn step_entries(&mut self, step: &Step) -> Result<Entries> {
        let pool = self.pool.clone();
        let mut entries = Entries::default();
        for (lock, edits) in step.change.parts() {
            let path = |state: LockState| pool.lock_path(state, lock);
            let moved_from = edits.iter().find_map(|e| match e {
                Edit::Delete(s) => Some(*s),
                _ => None,
            });
            let mut is_move = false;
            for edit in edits {
                if let Edit::Write(state, content) = edit {
                    let mut entry = PutFileEntry::builder()
                        .file_path(path(*state))
                        .file_mode(FileModeTypeEnum::Normal);
                    entry = match (content, moved_from) {
                        (Content::Keep(_), Some(from)) => {
                            is_move = true;
                            entry.source_file(
                                SourceFileSpecifier::builder()
                                    .file_path(path(from))
                                    .is_move(true)
                                    .build()
                                    .map_err(|e| build_error("CreateCommit", e))?,
                            )
                        }
                        (Content::Keep(blob), None) => {
                            let bytes = self.blob(blob)?;
                            entry.file_content(Blob::new(bytes))
                        }
                        (Content::Bytes(bytes), _) => entry.file_content(Blob::new(bytes.clone())),
                    };
                    entries
                        .puts
                        .push(entry.build().map_err(|e| build_error("CreateCommit", e))?);
                }
            }
            for edit in edits {
                if let Edit::Delete(state) = edit {
                    if !is_move {
                        entries.delete(&path(*state))?;
                    }
                }
            }
        }
        entries.files(&step.files)?;
        Ok(entries)
    }

    /// The one CreateCommit: `entries` with `message` on `parent` (none:
    /// create the branch), by the configured identity. The new commit's
    /// id, or what the API said; a reply without an id is a failure that
    /// names the call (it may have committed: retryable, so a put looks
    /// for it by its nonce).
    fn create_commit(
        &mut self,
        parent: Option<&CommitId>,
        message: &str,
        entries: Entries,
    ) -> std::result::Result<CommitId, Failure> {
        let mut req = self
            .client
            .create_commit()
            .repository_name(&self.repo)
            .branch_name(&self.branch)
            .author_name(&self.identity.name)
            .email(&self.identity.email)
            .commit_message(message)
            .keep_empty_folders(true);
        if !entries.puts.is_empty() {
            req = req.set_put_files(Some(entries.puts));
        }
        if !entries.deletes.is_empty() {
            req = req.set_delete_files(Some(entries.deletes));
        }
        if let Some(p) = parent {
            req = req.parent_commit_id(p.as_str());
        }
        let out = self.aws.block_on(req.send()).map_err(failure)?;
        match out.commit_id() {
            Some(id) if !id.is_empty() => Ok(id.into()),
            _ => {
                let detail = "the reply to CreateCommit has no commitId".to_string();
                Err(Failure {
                    code: Some("no commit id in the reply".into()),
                    cause: Cause::msg(detail.clone()),
                    detail,
                    no_reply: false,
                    transient: true,
                })
            }
        }
    }

    /// The content of the file at `path` at `commit` (one `GetFile`);
    /// `None` when there is no such file.
    fn file(&mut self, commit: &str, path: &str) -> Result<Option<Vec<u8>>> {
        let out = self.aws.block_on(
            self.client
                .get_file()
                .repository_name(&self.repo)
                .commit_specifier(commit)
                .file_path(path)
                .send(),
        );
        match out {
            Ok(o) => Ok(Some(o.file_content().as_ref().to_vec())),
            Err(e) => {
                let f = failure(e);
                if f.code.as_deref() == Some("FileDoesNotExistException") {
                    Ok(None)
                } else {
                    Err(self.error("GetFile", f))
                }
            }
        }
    }

    fn blob(&mut self, blob_id: &str) -> Result<Vec<u8>> {
        let out = self
            .aws
            .block_on(
                self.client
                    .get_blob()
                    .repository_name(&self.repo)
                    .blob_id(blob_id)
                    .send(),
            )
            .map_err(|e| self.error("GetBlob", failure(e)))?;
        Ok(out.content().as_ref().to_vec())
    }
}

fn nonce_of(message: &str) -> Option<String> {
    Parsed::new(message)
        .trailer(Trailer::Nonce)
        .map(String::from)
}

/// The files of one CreateCommit: those written and those deleted.
#[derive(Default)]
struct Entries {
    puts: Vec<PutFileEntry>,
    deletes: Vec<DeleteFileEntry>,
}

impl Entries {
    fn delete(&mut self, path: &str) -> Result<()> {
        self.deletes.push(
            DeleteFileEntry::builder()
                .file_path(path)
                .build()
                .map_err(|e| build_error("CreateCommit", e))?,
        );
        Ok(())
    }

    /// Writes or deletes each of `files`, as plain files.
    fn files(&mut self, files: &[FileEdit]) -> Result<()> {
        for file in files {
            match &file.content {
                Some(bytes) => self.puts.push(
                    PutFileEntry::builder()
                        .file_path(&file.path)
                        .file_mode(FileModeTypeEnum::Normal)
                        .file_content(Blob::new(bytes.clone()))
                        .build()
                        .map_err(|e| build_error("CreateCommit", e))?,
                ),
                None => self.delete(&file.path)?,
            }
        }
        Ok(())
    }
}

fn build_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Repository {
        what: format!("could not build the {what} request"),
        detail: e.to_string(),
    }
}

impl PutStore for CodeCommitStore {
    fn snapshot(&mut self) -> Result<Snapshot> {
        let tip = self.tip()?;
        let claimed = self.locks_in(&tip, LockState::Claimed)?;
        let unclaimed = self.locks_in(&tip, LockState::Unclaimed)?;
        if claimed.is_none() && unclaimed.is_none() && self.pool_tree(&tip)?.is_none() {
            return Err(Error::PoolNotFound {
                pool: self.pool.to_string(),
                branch: self.branch.clone(),
                uri: self.uri.clone(),
            });
        }
        // Asked of the root first, which always exists: a missing hold
        // folder would otherwise cost a failed call on every look.
        let top = Hold::DIR.split('/').next().unwrap_or_default();
        let root = self.list_folder(&tip, "")?.unwrap_or_default();
        let claimed = claimed.unwrap_or_default();
        let (hold, line, shares) = if root.iter().any(|e| e.is_dir && e.name == top) {
            let hold = match self.entry_at(&tip, &Hold::path(&self.pool))? {
                Some(blob) => Some(Hold::parse(&self.blob(&blob)?)),
                None => None,
            };
            // One GetFile: the line changes often, a folder listing would
            // cost a second call on every look.
            let line = match self.file(&tip, &Line::path(&self.pool))? {
                Some(bytes) => Line::parse(&bytes),
                None => Line::default(),
            };
            // Read even with nothing claimed (one GetFile, as the line):
            // holders a tool that does not know the file left behind go
            // with the next change of the file.
            let shares = match self.file(&tip, &Shares::path(&self.pool))? {
                Some(bytes) => Shares::parse(&bytes),
                None => Shares::default(),
            };
            (hold, line, shares)
        } else {
            (None, Line::default(), Shares::default())
        };
        Ok(Snapshot {
            tip: tip.into(),
            claimed,
            shares,
            unclaimed: unclaimed.unwrap_or_default(),
            hold,
            line,
            ..Snapshot::default()
        })
    }

    /// CreateCommit makes one commit per call, so each step is its own
    /// compare-and-swap on the commit before it. When a later one loses
    /// (another put took the lock the first one freed), the earlier ones
    /// stay on the branch and this reports a lost race: the takeover simply
    /// lost, which is safe, and the next look plans afresh. Only the last
    /// step's attempt is marked unconfirmed when its reply is lost; an
    /// earlier step's is forgotten, since finding it later must not pass
    /// for the put's own commit (the next look sees what it did to the pool).
    fn commit(&mut self, base: &Snapshot, steps: &[Step]) -> Attempt {
        let mut on = base.tip.clone();
        for (i, step) in steps.iter().enumerate() {
            let attempt = self.commit_step(&on, step);
            if i + 1 == steps.len() {
                return attempt;
            }
            match attempt.outcome {
                Ok(CommitOutcome::Committed(id)) => on = id,
                other => return Attempt::clear(other),
            }
        }
        Attempt::clear(Ok(CommitOutcome::Committed(on)))
    }

    fn commit_files(
        &mut self,
        parent: Option<&str>,
        edits: &[FileEdit],
        message: &str,
    ) -> Result<CommitOutcome> {
        let mut entries = Entries::default();
        entries.files(edits)?;
        let parent = parent.map(CommitId::from);
        match self.create_commit(parent.as_ref(), message, entries) {
            Ok(id) => Ok(CommitOutcome::Committed(id)),
            Err(f) => match f.code.as_deref() {
                Some(
                    "ParentCommitIdOutdatedException"
                    | "ParentCommitIdRequiredException"
                    | "BranchNameExistsException",
                ) => Ok(CommitOutcome::LostRace),
                _ => Err(self.error("CreateCommit", f)),
            },
        }
    }

    fn branch_tip(&mut self) -> Result<Option<String>> {
        match self.tip() {
            Ok(tip) => Ok(Some(tip)),
            Err(Error::BranchNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn peek_tip(&mut self) -> Result<Option<String>> {
        // GetBranch is already the cheapest call: one request of the quota.
        self.branch_tip()
    }
}

impl CommitWalk for CodeCommitStore {
    fn walk_commits(
        &mut self,
        tip: &str,
        limit: usize,
        visit: &mut dyn FnMut(&CommitMeta) -> bool,
    ) -> Result<bool> {
        let mut next = Some(tip.to_string());
        let mut seen = 0;
        while let Some(id) = next.take() {
            if seen >= limit {
                return Ok(true);
            }
            seen += 1;
            let info = self.commit_info(&id)?;
            let meta = CommitMeta {
                id: id.clone(),
                parent: info.parent.clone(),
                time: info.time,
                author: info.author.clone(),
                message: info.message.clone(),
            };
            if visit(&meta) {
                break;
            }
            next = meta.parent;
        }
        Ok(false)
    }
}

impl TreeReader for CodeCommitStore {
    fn read_file(&mut self, version: &str, path: &str) -> Result<Option<Vec<u8>>> {
        match self.entry_at(version, path)? {
            Some(blob) => Ok(Some(self.blob(&blob)?)),
            None => Ok(None),
        }
    }

    fn entry_id(&mut self, version: &str, path: &str) -> Result<Option<String>> {
        self.entry_at(version, path)
    }

    fn list_folder(&mut self, version: &str, path: &str) -> Result<Option<Vec<FolderEntry>>> {
        let out = self.aws.block_on(
            self.client
                .get_folder()
                .repository_name(&self.repo)
                .commit_specifier(version)
                .folder_path(if path.is_empty() { "/" } else { path })
                .send(),
        );
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                let f = failure(e);
                if f.code.as_deref() == Some("FolderDoesNotExistException") {
                    return Ok(None);
                }
                return Err(self.error("GetFolder", f));
            }
        };
        let mut entries: Vec<FolderEntry> = out
            .sub_folders()
            .iter()
            .filter_map(|d| {
                Some(FolderEntry {
                    name: d.relative_path()?.to_string(),
                    is_dir: true,
                    id: d.tree_id().unwrap_or_default().to_string(),
                })
            })
            .collect();
        entries.extend(out.files().iter().filter_map(|f| {
            Some(FolderEntry {
                name: f.relative_path()?.to_string(),
                is_dir: false,
                id: f.blob_id()?.to_string(),
            })
        }));
        Ok(Some(entries))
    }
}

impl HistoryReader for CodeCommitStore {
    fn versions(&mut self, since: Option<&str>) -> Result<Vec<String>> {
        let tip = self.tip()?;
        // A commit that does not exist needs no walk to be unknown.
        let since = match since {
            Some(s) if self.exists(s)? => Some(s),
            _ => None,
        };
        let pool = self.pool.to_string();
        let walk = history::versions(self, &tip, since, &pool, WALK_LIMIT)?;
        self.answer("the versions of the pool", walk)
    }

    fn load_version(&mut self, version: &str, _depth: Option<u32>) -> Result<()> {
        let tip = self.tip()?;
        if !self.exists(version)? {
            return Err(self.version_not_found(version));
        }
        match history::is_reachable(self, &tip, version, WALK_LIMIT)? {
            Ok(true) => Ok(()),
            _ => Err(self.version_not_found(version)),
        }
    }

    fn last_pool_change(&mut self, at: &str) -> Result<Option<String>> {
        let pool = self.pool.to_string();
        let walk = history::last_change(self, at, &pool, WALK_LIMIT)?;
        self.answer("which commit last changed the pool", walk)
    }

    fn changed_pool_paths(&mut self, version: &str) -> Result<Vec<String>> {
        let parent = self.commit_info(version)?.parent.clone();
        let pool = self.pool.to_string();
        let mut paths = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = self
                .client
                .get_differences()
                .repository_name(&self.repo)
                .after_commit_specifier(version)
                .before_path(&pool)
                .after_path(&pool);
            if let Some(p) = &parent {
                req = req.before_commit_specifier(p);
            }
            if let Some(t) = &token {
                req = req.next_token(t);
            }
            let out = self
                .aws
                .block_on(req.send())
                .map_err(|e| self.error("GetDifferences", failure(e)))?;
            for d in out.differences() {
                for blob in [d.before_blob(), d.after_blob()].into_iter().flatten() {
                    if let Some(p) = blob.path() {
                        paths.push(p.to_string());
                    }
                }
            }
            token = out.next_token().map(String::from);
            if token.is_none() {
                break;
            }
        }
        paths.sort();
        paths.dedup();
        Ok(paths)
    }

    fn subject(&mut self, version: &str) -> Result<String> {
        Ok(self
            .commit_info(version)?
            .message
            .lines()
            .next()
            .unwrap_or("")
            .to_string())
    }

    fn changed_since(&mut self, version: &str, path: &str) -> Result<bool> {
        let tip = self.tip()?;
        let walk = history::changed_since(self, &tip, version, path, WALK_LIMIT)?;
        self.answer(&format!("whether {path} changed since {version}"), walk)
    }

    fn export_tree(&mut self, version: &str, dest: &Path) -> Result<()> {
        let mut dirs = vec![String::new()];
        let mut written = 0;
        while let Some(dir) = dirs.pop() {
            let out = self
                .aws
                .block_on(
                    self.client
                        .get_folder()
                        .repository_name(&self.repo)
                        .commit_specifier(version)
                        .folder_path(if dir.is_empty() { "/" } else { dir.as_str() })
                        .send(),
                )
                .map_err(|e| self.error("GetFolder", failure(e)))?;
            for sub in out.sub_folders() {
                if let Some(p) = sub.absolute_path() {
                    dirs.push(p.trim_start_matches('/').to_string());
                }
            }
            for file in out.files() {
                let (Some(p), Some(blob)) = (file.absolute_path(), file.blob_id()) else {
                    continue;
                };
                written += 1;
                if written > EXPORT_LIMIT {
                    return Err(Error::Repository {
                        what: format!("version {version} has more than {EXPORT_LIMIT} files"),
                        detail: "use the git backend to fetch large repositories".into(),
                    });
                }
                let target = dest.join(p.trim_start_matches('/'));
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        Error::io(format!("could not create {}", parent.display()), e)
                    })?;
                }
                let bytes = self.blob(blob)?;
                std::fs::write(&target, bytes)
                    .map_err(|e| Error::io(format!("could not write {}", target.display()), e))?;
            }
        }
        Ok(())
    }

    fn branches(&mut self) -> Result<Vec<String>> {
        // One page (up to 100 names) is plenty for a hint.
        let out = self
            .aws
            .block_on(
                self.client
                    .list_branches()
                    .repository_name(&self.repo)
                    .send(),
            )
            .map_err(|e| self.error("ListBranches", failure(e)))?;
        let mut names = out.branches().to_vec();
        names.sort();
        Ok(names)
    }
}

impl Graph for CodeCommitStore {
    fn facts(&mut self, commit: &str) -> Result<Option<Facts>> {
        match self.commit_info(commit) {
            Ok(info) => Ok(Some(Facts {
                time: info.time,
                parents: Some(info.parents.clone()),
            })),
            Err(Error::VersionNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn at_path(&mut self, commit: &str, path: &str) -> Result<Option<String>> {
        // From the listing of the folder above: one GetFolder answers for a
        // folder (its tree id) and for a file (its blob id and mode) alike.
        let (dir, name) = path.rsplit_once('/').unwrap_or(("/", path));
        Ok(self
            .folder(commit, dir)?
            .and_then(|folder| folder.entries.get(name).cloned()))
    }
}
