//! A bare lock repository driven by the git CLI, so that the fixtures and the
//! assertions about what the resource pushed never go through the code under
//! test. Commits are made with plumbing directly in the bare repository
//! (no work tree), which keeps fixtures fast.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

const ZERO_OID: &str = "0000000000000000000000000000000000000000";

/// A `git` command in `cwd` that ignores the machine's system and global
/// configuration and CA/proxy environment, with a fixed identity
/// (`test <test@localhost>`) and no interactive prompts.
pub fn git(cwd: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(cwd)
        .args(["-c", "user.name=test", "-c", "user.email=test@localhost"])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@localhost")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@localhost");
    for var in super::AMBIENT_ENV {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs `git args...` in `cwd` (see [`git`]) and returns its stdout; panics
/// with the command, status and stderr if it fails.
pub fn git_ok<S: AsRef<OsStr>>(cwd: &Path, args: &[S]) -> String {
    let mut cmd = git(cwd);
    cmd.args(args);
    String::from_utf8(output(&mut cmd, None).stdout).expect("git printed UTF-8")
}

/// Runs `cmd`, feeding it `stdin`, and panics with everything it printed if it
/// fails.
fn output(cmd: &mut Command, stdin: Option<&[u8]>) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let writer = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().expect("child stdin");
        let bytes = bytes.to_vec();
        // A separate thread so a child that writes a lot before reading all
        // of its input cannot deadlock us.
        std::thread::spawn(move || pipe.write_all(&bytes))
    });
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {cmd:?}: {e}"));
    if let Some(writer) = writer {
        writer
            .join()
            .expect("stdin writer thread")
            .unwrap_or_else(|e| panic!("writing stdin of {cmd:?}: {e}"));
    }
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn trimmed(out: Output) -> String {
    String::from_utf8(out.stdout)
        .expect("git printed UTF-8")
        .trim()
        .to_owned()
}

/// One commit of [`LockRepo::log`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    /// Full 40-hex commit id.
    pub sha: String,
    /// Parent ids, first parent first.
    pub parents: Vec<String>,
    /// The subject line (`%s`).
    pub subject: String,
    /// The full message (`%B`) without trailing newlines.
    pub body: String,
    /// Committer timestamp, seconds since the epoch.
    pub committer_time: i64,
    /// Files changed relative to the first parent (everything for the root
    /// commit) as `(status letter, path)`, e.g. `('A', "pool/claimed/a")`.
    pub changed: Vec<(char, String)>,
}

/// A bare repository at `root()/locks.git` with one branch, in its own temp
/// dir.
pub struct LockRepo {
    dir: TempDir,
    path: PathBuf,
    home: PathBuf,
    branch: String,
}

impl LockRepo {
    /// Creates the bare repository with `branch` holding one commit (a
    /// README), configured to accept pushes over smart HTTP and to refuse
    /// non-fast-forward pushes.
    pub fn new(branch: &str) -> LockRepo {
        let dir = TempDir::new().expect("creating the lock repo temp dir");
        let home = dir.path().join("home");
        std::fs::create_dir(&home).expect("creating the lock repo HOME");
        let path = dir.path().join("locks.git");
        git_ok(
            dir.path(),
            &["init", "-q", "--bare", "-b", branch, "locks.git"],
        );
        let repo = LockRepo {
            dir,
            path,
            home,
            branch: branch.to_owned(),
        };
        repo.set_config("http.receivepack", "true");
        repo.set_config("receive.denyNonFastForwards", "true");
        repo.commit_changes(&[("README.md", b"lock pool for tests\n")], &[], "initial");
        repo
    }

    /// The bare repository directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory holding `locks.git`, for servers that export a tree.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The branch the pool lives on.
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// The repository as a `file://` URL.
    pub fn file_url(&self) -> String {
        format!("file://{}", self.path.display())
    }

    /// Sets `key = value` in the bare repository's config.
    pub fn set_config(&self, key: &str, value: &str) {
        output(self.git().args(["config", key, value]), None);
    }

    /// Commits lock `name` into `pool` (claimed or not), creating the pool's
    /// `.gitkeep` files, with the message `adding (un)claimed: name`.
    pub fn add_lock(&self, pool: &str, name: &str, claimed: bool, content: &[u8]) -> String {
        let state = if claimed { "claimed" } else { "unclaimed" };
        let lock = format!("{pool}/{state}/{name}");
        let claimed_keep = format!("{pool}/claimed/.gitkeep");
        let unclaimed_keep = format!("{pool}/unclaimed/.gitkeep");
        self.commit_changes(
            &[
                (&claimed_keep, b""),
                (&unclaimed_keep, b""),
                (&lock, content),
            ],
            &[],
            &format!("adding {state}: {name}"),
        )
    }

    /// Commits an empty pool: only `pool/claimed/.gitkeep` and
    /// `pool/unclaimed/.gitkeep`.
    pub fn add_empty_pool(&self, pool: &str) -> String {
        self.commit_changes(
            &[
                (&format!("{pool}/claimed/.gitkeep"), b""),
                (&format!("{pool}/unclaimed/.gitkeep"), b""),
            ],
            &[],
            &format!("adding pool: {pool}"),
        )
    }

    /// Commits one file with any content and message.
    pub fn commit_file(&self, path: &str, content: &[u8], message: &str) -> String {
        self.commit_changes(&[(path, content)], &[], message)
    }

    /// Moves lock `name` between `pool/unclaimed` and `pool/claimed`, as
    /// another pipeline would (`claiming: name` / `unclaiming: name`).
    pub fn move_lock(&self, pool: &str, name: &str, to_claimed: bool) -> String {
        let (from, to, verb) = if to_claimed {
            ("unclaimed", "claimed", "claiming")
        } else {
            ("claimed", "unclaimed", "unclaiming")
        };
        let from = format!("{pool}/{from}/{name}");
        let to = format!("{pool}/{to}/{name}");
        let content = self
            .file_at(&self.branch, &from)
            .unwrap_or_else(|| panic!("{from} does not exist on {}", self.branch));
        self.commit_changes(&[(&to, &content)], &[&from], &format!("{verb}: {name}"))
    }

    /// [`Self::move_lock`] at time `at`, with `body` after the subject (the
    /// Go resource's `Build URL:` line, say).
    pub fn move_lock_at(
        &self,
        pool: &str,
        name: &str,
        to_claimed: bool,
        at: i64,
        body: &str,
    ) -> String {
        let (from, to, verb) = if to_claimed {
            ("unclaimed", "claimed", "claiming")
        } else {
            ("claimed", "unclaimed", "unclaiming")
        };
        let from = format!("{pool}/{from}/{name}");
        let to = format!("{pool}/{to}/{name}");
        let content = self
            .file_at(&self.branch, &from)
            .unwrap_or_else(|| panic!("{from} does not exist on {}", self.branch));
        let message = format!("{verb}: {name}\n\n{body}");
        self.commit_changes_at(&[(&to, &content)], &[&from], &message, Some(at))
    }

    /// Commits on top of the branch tip: writes each `(path, content)`,
    /// deletes each path in `deletes`, and returns the new commit id. Panics
    /// if the branch moved meanwhile.
    pub fn commit_changes(
        &self,
        writes: &[(&str, &[u8])],
        deletes: &[&str],
        message: &str,
    ) -> String {
        self.commit_changes_at(writes, deletes, message, None)
    }

    /// [`Self::commit_changes`] with author and committer time `at` (Unix
    /// seconds), for a history that looks hours or days old.
    pub fn commit_changes_at(
        &self,
        writes: &[(&str, &[u8])],
        deletes: &[&str],
        message: &str,
        at: Option<i64>,
    ) -> String {
        let parent = self.try_tip();
        let parents: Vec<&str> = parent.iter().map(String::as_str).collect();
        let commit = self.commit_on_at(&parents, writes, deletes, message, at);
        self.move_branch(parent.as_deref(), &commit);
        commit
    }

    /// Makes a commit with `parents` (a merge if several, a root if none)
    /// whose tree is the first parent's with `writes` and `deletes` applied,
    /// without moving any branch; returns its id.
    pub fn commit_on(
        &self,
        parents: &[&str],
        writes: &[(&str, &[u8])],
        deletes: &[&str],
        message: &str,
    ) -> String {
        self.commit_on_at(parents, writes, deletes, message, None)
    }

    /// [`Self::commit_on`] with author and committer time `at`.
    pub fn commit_on_at(
        &self,
        parents: &[&str],
        writes: &[(&str, &[u8])],
        deletes: &[&str],
        message: &str,
        at: Option<i64>,
    ) -> String {
        let scratch = tempfile::tempdir_in(self.root()).expect("creating a scratch index dir");
        let index = scratch.path().join("index");
        let with_index = |args: &[&str]| {
            let mut cmd = self.git();
            cmd.env("GIT_INDEX_FILE", &index).args(args);
            cmd
        };
        match parents.first() {
            Some(first) => output(&mut with_index(&["read-tree", first]), None),
            None => output(&mut with_index(&["read-tree", "--empty"]), None),
        };
        let mut info = Vec::new();
        for (path, content) in writes {
            let blob = trimmed(output(
                self.git().args(["hash-object", "-w", "--stdin"]),
                Some(content),
            ));
            info.extend_from_slice(format!("100644 {blob}\t{path}\0").as_bytes());
        }
        for path in deletes {
            info.extend_from_slice(format!("0 {ZERO_OID}\t{path}\0").as_bytes());
        }
        output(
            &mut with_index(&["update-index", "-z", "--index-info"]),
            Some(&info),
        );
        let tree = trimmed(output(&mut with_index(&["write-tree"]), None));
        let mut commit_tree = self.git();
        commit_tree.args(["commit-tree", &tree, "-F", "-"]);
        if let Some(t) = at {
            let date = format!("@{t} +0000");
            commit_tree
                .env("GIT_AUTHOR_DATE", &date)
                .env("GIT_COMMITTER_DATE", &date);
        }
        for parent in parents {
            commit_tree.args(["-p", parent]);
        }
        trimmed(output(&mut commit_tree, Some(message.as_bytes())))
    }

    /// Moves the branch from `old` (`None`: it does not exist yet) to
    /// `commit`; panics if it is not at `old`.
    pub fn move_branch(&self, old: Option<&str>, commit: &str) {
        output(
            self.git().args([
                "update-ref",
                &self.branch_ref(),
                commit,
                old.unwrap_or(ZERO_OID),
            ]),
            None,
        );
    }

    /// Runs git in the bare repository and returns its stdout, panicking if
    /// it fails.
    pub fn git_out(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&output(self.git().args(args), None).stdout).into_owned()
    }

    /// Appends `n` commits that each change `filler.txt` (outside any pool),
    /// using `git fast-import` so that 200 000 take seconds: the file
    /// alternates between two blobs and nothing is deltified.
    pub fn add_commits(&self, n: usize) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        self.add_commits_at(n, now);
    }

    /// [`Self::add_commits`] with committer time `now` (Unix seconds), for
    /// a history older than the look-back.
    pub fn add_commits_at(&self, n: usize, now: u64) {
        let tip = self.tip();
        let branch = self.branch_ref();
        let mut stream = Vec::with_capacity(n * 120);
        stream.extend_from_slice(b"blob\nmark :1\ndata 5\nping\n\nblob\nmark :2\ndata 5\npong\n\n");
        for i in 0..n {
            let message = format!("filler commit {i}\n");
            write!(
                stream,
                "commit {branch}\ncommitter test <test@localhost> {now} +0000\ndata {}\n{message}",
                message.len(),
            )
            .expect("writing to a Vec");
            if i == 0 {
                writeln!(stream, "from {tip}").expect("writing to a Vec");
            }
            writeln!(stream, "M 100644 :{} filler.txt\n", i % 2 + 1).expect("writing to a Vec");
        }
        stream.extend_from_slice(b"done\n");
        // Continuing a branch from an existing commit makes fast-import's
        // heap shrink and grow once per commit (measured: 200 000 `brk`
        // calls, twice the run time); a high trim threshold avoids that.
        output(
            self.git()
                .env("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1073741824")
                .args(["fast-import", "--quiet", "--done", "--depth=0"]),
            Some(&stream),
        );
    }

    /// The 40-hex id of the branch tip.
    pub fn tip(&self) -> String {
        self.try_tip()
            .unwrap_or_else(|| panic!("branch {} does not exist", self.branch))
    }

    /// Lock names in `pool/claimed` at the tip, sorted, dotfiles excluded.
    pub fn claimed(&self, pool: &str) -> Vec<String> {
        self.locks(pool, "claimed")
    }

    /// Lock names in `pool/unclaimed` at the tip, sorted, dotfiles excluded.
    pub fn unclaimed(&self, pool: &str) -> Vec<String> {
        self.locks(pool, "unclaimed")
    }

    /// The content of `path` at `rev`, or `None` if it does not exist.
    pub fn file_at(&self, rev: &str, path: &str) -> Option<Vec<u8>> {
        let out = self
            .git()
            .args(["cat-file", "blob", &format!("{rev}:{path}")])
            .stderr(Stdio::null())
            .output()
            .expect("running git cat-file");
        out.status.success().then_some(out.stdout)
    }

    /// The branch's first-parent history, oldest first.
    pub fn log(&self) -> Vec<CommitInfo> {
        let out = output(
            self.git().args([
                "log",
                "--first-parent",
                "--reverse",
                "--root",
                "--no-renames",
                "--diff-merges=first-parent",
                "-z",
                "--name-status",
                "--format=%x1e%H%x1f%P%x1f%ct%x1f%s%x1f%B%x1f",
                &self.branch_ref(),
            ]),
            None,
        );
        let text = String::from_utf8_lossy(&out.stdout);
        text.split('\x1e')
            .filter(|record| !record.is_empty())
            .map(parse_commit)
            .collect()
    }

    /// Whether `sha` names a commit reachable from the branch tip.
    pub fn is_ancestor_or_on_branch(&self, sha: &str) -> bool {
        self.git()
            .args(["merge-base", "--is-ancestor", sha, &self.branch_ref()])
            .stderr(Stdio::null())
            .status()
            .expect("running git merge-base")
            .success()
    }

    fn locks(&self, pool: &str, state: &str) -> Vec<String> {
        let prefix = format!("{pool}/{state}/");
        let out = output(
            self.git()
                .args(["ls-tree", "-z", "--name-only", &self.tip(), "--", &prefix]),
            None,
        );
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split('\0')
            .filter_map(|path| path.strip_prefix(&prefix))
            .filter(|name| !name.is_empty() && !name.starts_with('.'))
            .map(str::to_owned)
            .collect();
        names.sort();
        names
    }

    fn try_tip(&self) -> Option<String> {
        let out = self
            .git()
            .args(["rev-parse", "--verify", "-q", &self.branch_ref()])
            .output()
            .expect("running git rev-parse");
        out.status.success().then(|| trimmed(out))
    }

    fn branch_ref(&self) -> String {
        format!("refs/heads/{}", self.branch)
    }

    fn git(&self) -> Command {
        let mut cmd = git(&self.path);
        cmd.env("HOME", &self.home);
        cmd
    }
}

/// Parses one `\x1e`-separated record of [`LockRepo::log`]'s output.
fn parse_commit(record: &str) -> CommitInfo {
    let fields: Vec<&str> = record.splitn(6, '\x1f').collect();
    let [sha, parents, time, subject, body, changes] = fields[..] else {
        panic!("unexpected git log record {record:?}");
    };
    let changes: Vec<&str> = changes
        .trim_start_matches(['\0', '\n'])
        .split('\0')
        .filter(|s| !s.is_empty())
        .collect();
    CommitInfo {
        sha: sha.to_owned(),
        parents: parents.split_whitespace().map(str::to_owned).collect(),
        subject: subject.to_owned(),
        body: body.trim_end_matches('\n').to_owned(),
        committer_time: time.parse().expect("numeric committer time"),
        changed: changes
            .chunks(2)
            .map(|pair| {
                let status = pair[0].chars().next().expect("a status letter");
                (status, pair.get(1).copied().unwrap_or_default().to_owned())
            })
            .collect(),
    }
}
