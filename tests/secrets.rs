//! Secrets stay secret. Succeeding and failing steps run with a known SSH
//! key (with a passphrase), an HTTP password, and AWS keys with a session
//! token; none of them, in any form a message could carry (as is, URL-encoded,
//! in a Basic header, one line of a key), may appear on stdout or stderr, in
//! the lock repository's history (`git log --all -p`), in the destination
//! directory, or in any file left under the step's private `TMPDIR` (git
//! objects included). A key written to disk would have to be 0600 in a 0700
//! directory and be gone once the step ends, also when it is aborted with
//! SIGTERM while it waits.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::hostile::{error_report, run_bounded, DEADLINE};
use crate::support::run::spawn_raw;
use crate::support::{
    git, ssh_keygen, Bg, CodeCommitServer, GitSignatureCheck, HttpGitServer, HttpOptions,
    IssuedKey, Keyring, LockRepo, Run, SshKey, Sshd,
};
use crate::{source, version, Inputs};

const POOL: &str = "envs";

/// A lock repository: `a` unclaimed, `b` claimed.
fn pool_repo() -> LockRepo {
    let repo = LockRepo::new("main");
    repo.add_lock(POOL, "a", false, b"a-meta\n");
    repo.add_lock(POOL, "b", true, b"b-meta\n");
    repo
}

/// Every form of a secret worth looking for.
#[derive(Default)]
struct Secrets(Vec<String>);

impl Secrets {
    /// `secret` as is and URL-encoded.
    fn add(&mut self, secret: &str) {
        self.0.push(secret.to_string());
        let encoded = pool_resource::config::uri::percent_encode_userinfo(secret);
        if encoded != secret {
            self.0.push(encoded);
        }
    }

    /// Each line of a key long enough to be recognisable.
    fn add_key(&mut self, key: &str) {
        for line in key.lines().map(str::trim).filter(|l| l.len() >= 16) {
            if !line.starts_with("-----") {
                self.0.push(line.to_string());
            }
        }
    }

    /// The Basic credentials `user:password`, as a header carries them.
    fn add_basic(&mut self, user: &str, password: &str) {
        self.0
            .push(base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")));
    }

    /// The first secret `text` contains.
    fn found_in(&self, text: &[u8]) -> Option<&str> {
        self.0
            .iter()
            .find(|s| text.windows(s.len()).any(|w| w == s.as_bytes()))
            .map(String::as_str)
    }
}

/// One step's private directories: HOME and TMPDIR, and the `in`
/// destination and `out` inputs.
struct Step {
    tmp: TempDir,
    home: TempDir,
    dest: TempDir,
    inputs: Inputs,
}

impl Step {
    fn new() -> Step {
        Step {
            tmp: TempDir::new().expect("creating TMPDIR"),
            home: TempDir::new().expect("creating HOME"),
            dest: TempDir::new().expect("creating DEST"),
            inputs: Inputs::new(),
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("TMPDIR".into(), self.tmp.path().display().to_string()),
            ("HOME".into(), self.home.path().display().to_string()),
            ("POOL_RESOURCE_BACKOFF_BASE_MS".into(), "5".into()),
        ]
    }

    /// Runs `bin` with `request` and `extra` variables.
    fn run(&self, bin: &str, request: &Value, extra: &[(&str, &str)]) -> Run {
        let args: Vec<&Path> = match bin {
            "check" => vec![],
            "in" => vec![self.dest.path()],
            _ => vec![self.inputs.path()],
        };
        let env = self.env();
        let mut env: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.extend_from_slice(extra);
        run_bounded(bin, &args, request.to_string().as_bytes(), &env)
    }
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => out.extend(files_under(&path)),
            Ok(t) if t.is_file() => out.push(path),
            _ => {}
        }
    }
    out
}

/// The content of every object of each git repository under `dir`
/// (compressed on disk, so a byte search of the files would miss them).
fn git_objects_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for file in files_under(dir) {
        if file.file_name().is_some_and(|n| n == "HEAD") {
            let repo = file.parent().expect("HEAD has a parent").to_owned();
            if !repo.join("objects").is_dir() {
                continue;
            }
            let dump = git(&repo)
                .env("GIT_DIR", &repo)
                .args(["cat-file", "--batch-all-objects", "--batch"])
                .output()
                .expect("running git cat-file");
            out.push((repo, dump.stdout));
        }
    }
    out
}

/// Panics if any secret shows in what `run` printed, in the history of
/// `repo`, or in any file (or git object) under `dirs`.
fn assert_clean(what: &str, secrets: &Secrets, run: &Run, repo: &LockRepo, dirs: &[&Path]) {
    assert!(!secrets.0.is_empty(), "there are secrets to look for");
    for (stream, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        if let Some(s) = secrets.found_in(text.as_bytes()) {
            panic!(
                "{what}: {stream} shows {s:?}\ncommand: {}\n{text}",
                run.command
            );
        }
    }
    let history = git(repo.path())
        .args(["log", "--all", "-p", "--format=fuller"])
        .output()
        .expect("running git log");
    if let Some(s) = secrets.found_in(&history.stdout) {
        panic!("{what}: the lock repository's history shows {s:?}");
    }
    for dir in dirs {
        for file in files_under(dir) {
            let bytes = std::fs::read(&file).unwrap_or_default();
            if let Some(s) = secrets.found_in(&bytes) {
                panic!("{what}: {} shows {s:?}", file.display());
            }
        }
        for (repo, objects) in git_objects_under(dir) {
            if let Some(s) = secrets.found_in(&objects) {
                panic!("{what}: an object in {} shows {s:?}", repo.display());
            }
        }
    }
}

/// Files under `dir` holding any line of `key`.
fn key_files(dir: &Path, key: &SshKey) -> Vec<PathBuf> {
    let mut lines = Secrets::default();
    lines.add_key(&key.private);
    files_under(dir)
        .into_iter()
        .filter(|f| {
            let bytes = std::fs::read(f).unwrap_or_default();
            lines.found_in(&bytes).is_some() || bytes.windows(11).any(|w| w == b"PRIVATE KEY")
        })
        .collect()
}

/// The permission bits of `path`.
fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Runs one step and checks it leaked nothing; returns the run.
fn step(
    what: &str,
    secrets: &Secrets,
    repo: &LockRepo,
    bin: &str,
    request: Value,
    extra: &[(&str, &str)],
) -> Run {
    let s = Step::new();
    let run = s.run(bin, &request, extra);
    assert!(!run.stderr.contains("panicked"), "{what}: {}", run.stderr);
    assert_clean(
        what,
        secrets,
        &run,
        repo,
        &[s.tmp.path(), s.home.path(), s.dest.path(), s.inputs.path()],
    );
    run
}

const PASSPHRASE: &str = "correct horse battery staple 42";

fn ssh_source(sshd: &Sshd, repo: &LockRepo, key: &SshKey, passphrase: &str) -> Value {
    let mut src = source(&sshd.url(repo.path()), "main", POOL);
    src["private_key"] = json!(key.private);
    src["private_key_passphrase"] = json!(passphrase);
    src["known_hosts"] = json!(sshd.host_key_line());
    src
}

#[test]
fn an_ssh_key_and_its_passphrase_never_show() {
    let repo = pool_repo();
    let key = ssh_keygen("ed25519", Some(PASSPHRASE), false);
    let stranger = ssh_keygen("ed25519", None, false);
    let sshd = Sshd::start(std::slice::from_ref(&key.public));
    let mut secrets = Secrets::default();
    secrets.add_key(&key.private);
    secrets.add_key(&stranger.private);
    secrets.add(PASSPHRASE);
    let src = ssh_source(&sshd, &repo, &key, PASSPHRASE);

    let claim = step(
        "ssh claim",
        &secrets,
        &repo,
        "out",
        json!({"source": src, "params": {"claim": "a"}}),
        &[],
    );
    let claimed = claim.assert_success().json();
    step(
        "ssh check",
        &secrets,
        &repo,
        "check",
        json!({ "source": src }),
        &[],
    )
    .assert_success();
    step(
        "ssh in",
        &secrets,
        &repo,
        "in",
        json!({"source": src, "version": {"ref": version(&claimed)}}),
        &[],
    )
    .assert_success();

    let wrong = ssh_source(&sshd, &repo, &key, "not the passphrase at all");
    let run = step(
        "wrong passphrase",
        &secrets,
        &repo,
        "check",
        json!({ "source": wrong }),
        &[],
    );
    run.assert_failure();
    let report = error_report(&run.stderr).unwrap_or_default();
    assert!(
        report.contains("authentication failed for ssh://"),
        "{report}"
    );

    let mut unknown = ssh_source(&sshd, &repo, &stranger, "");
    unknown
        .as_object_mut()
        .unwrap()
        .remove("private_key_passphrase");
    let run = step(
        "key not authorized",
        &secrets,
        &repo,
        "out",
        json!({"source": unknown, "params": {"claim": "a"}}),
        &[],
    );
    run.assert_failure();
    assert!(
        error_report(&run.stderr)
            .unwrap_or_default()
            .contains("rejected source.private_key"),
        "{}\nsshd:\n{}",
        run.stderr,
        sshd.log()
    );

    let mut invalid = src.clone();
    invalid["retry_delay"] = json!("soon");
    step(
        "invalid request",
        &secrets,
        &repo,
        "out",
        json!({"source": invalid, "params": {"acquire": true}}),
        &[],
    )
    .assert_failure();
    let mut bad_key = src.clone();
    bad_key["private_key"] = json!(key.private.replace('A', "B"));
    step(
        "a damaged key",
        &secrets,
        &repo,
        "check",
        json!({ "source": bad_key }),
        &[],
    )
    .assert_failure();
}

#[test]
fn an_http_password_never_shows() {
    let repo = pool_repo();
    let (user, password) = ("pool-bot", "Sup3r:S3cret/HTTP@password");
    let server = HttpGitServer::start(
        repo.root(),
        HttpOptions {
            basic_auth: Some((user.into(), password.into())),
            ..HttpOptions::default()
        },
    );
    let wrong = "Wr0ng:Passw0rd/for-the-bot";
    let mut secrets = Secrets::default();
    for p in [password, wrong] {
        secrets.add(p);
        secrets.add_basic(user, p);
    }
    let mut src = source(&server.url("locks.git"), "main", POOL);
    src["username"] = json!(user);
    src["password"] = json!(password);

    let acquire = step(
        "http acquire",
        &secrets,
        &repo,
        "out",
        json!({"source": src, "params": {"acquire": true}}),
        &[],
    );
    let acquired = acquire.assert_success().json();
    step(
        "http check",
        &secrets,
        &repo,
        "check",
        json!({ "source": src }),
        &[],
    )
    .assert_success();
    step(
        "http in",
        &secrets,
        &repo,
        "in",
        json!({"source": src, "version": {"ref": version(&acquired)}}),
        &[],
    )
    .assert_success();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    assert!(server.auth_headers().contains(&format!("Basic {basic}")));

    let mut bad = src.clone();
    bad["password"] = json!(wrong);
    let run = step(
        "wrong password",
        &secrets,
        &repo,
        "out",
        json!({"source": bad, "params": {"acquire": true}}),
        &[],
    );
    run.assert_failure();
    assert!(
        error_report(&run.stderr)
            .unwrap_or_default()
            .contains(&format!(
                "authentication failed for {}",
                server.url("locks.git")
            )),
        "{}",
        run.stderr
    );
    let mut no_branch = src.clone();
    no_branch["branch"] = json!("nope");
    let run = step(
        "missing branch",
        &secrets,
        &repo,
        "out",
        json!({"source": no_branch, "params": {"acquire": true}}),
        &[],
    );
    run.assert_failure();
    assert!(
        run.stderr.contains("branch \"nope\" does not exist"),
        "{}",
        run.stderr
    );
}

const REGION: &str = "eu-west-2";
const CC_HOST: &str = "git-codecommit.eu-west-2.amazonaws.com";
const CC_URI: &str = "https://git-codecommit.eu-west-2.amazonaws.com/v1/repos/locks";
const AKID: &str = "ASIATESTSECRETS0001";
const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY01";
const AWS_TOKEN: &str = "IQoJb3JpZ2luX2VjEJr//////////SESSIONTOKEN+secret/value==";

/// A session key for [`AKID`] that IAM would accept, with `secret`.
fn issued(secret: &str) -> IssuedKey {
    IssuedKey {
        access_key_id: AKID.into(),
        secret_access_key: secret.into(),
        token: Some(AWS_TOKEN.into()),
        expires: SystemTime::now() + Duration::from_secs(3600),
        generation: 0,
    }
}

/// The environment that hands the resource [`AKID`], [`AWS_SECRET`] and
/// [`AWS_TOKEN`], with nothing else of AWS's reachable.
fn aws_env(home: &Path) -> Vec<(String, String)> {
    let missing = |name: &str| home.join(name).display().to_string();
    vec![
        ("AWS_ACCESS_KEY_ID".into(), AKID.into()),
        ("AWS_SECRET_ACCESS_KEY".into(), AWS_SECRET.into()),
        ("AWS_SESSION_TOKEN".into(), AWS_TOKEN.into()),
        ("AWS_CONFIG_FILE".into(), missing("no-config")),
        (
            "AWS_SHARED_CREDENTIALS_FILE".into(),
            missing("no-credentials"),
        ),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
    ]
}

fn aws_secrets() -> Secrets {
    let mut secrets = Secrets::default();
    secrets.add(AWS_SECRET);
    secrets.add(AWS_TOKEN);
    secrets
}

#[test]
fn aws_keys_for_signed_codecommit_git_never_show() {
    let repo = pool_repo();
    let keyring = Keyring::new();
    keyring.add(issued(AWS_SECRET));
    let check = GitSignatureCheck::new(keyring, CC_HOST, REGION);
    let server = HttpGitServer::start(
        repo.root(),
        HttpOptions {
            auth_check: Some(check.auth_check()),
            url_prefix: "/v1/repos".into(),
            ..HttpOptions::default()
        },
    );
    let home = TempDir::new().unwrap();
    let endpoint = format!("http://127.0.0.1:{}", server.port());
    let mut env = aws_env(home.path());
    env.push(("POOL_RESOURCE_CODECOMMIT_GIT_ENDPOINT".into(), endpoint));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let src = source(CC_URI, "main", POOL);
    let mut runs = Vec::new();
    let secrets = aws_secrets();
    let claim = step(
        "signed claim",
        &secrets,
        &repo,
        "out",
        json!({"source": src, "params": {"claim": "a"}}),
        &env,
    );
    let claimed = claim.assert_success().json();
    runs.push(claim);
    runs.push(step(
        "signed check",
        &secrets,
        &repo,
        "check",
        json!({ "source": src }),
        &env,
    ));
    runs.push(step(
        "signed in",
        &secrets,
        &repo,
        "in",
        json!({"source": src, "version": {"ref": version(&claimed)}}),
        &env,
    ));
    for run in &runs {
        run.assert_success();
    }
    // The server now holds a different secret for the same key id.
    let wrong_keyring = Keyring::new();
    wrong_keyring.add(issued("aDifferentSecretTheServerExpects000000001"));
    let wrong = GitSignatureCheck::new(wrong_keyring, CC_HOST, REGION);
    let strict = HttpGitServer::start(
        repo.root(),
        HttpOptions {
            auth_check: Some(wrong.auth_check()),
            url_prefix: "/v1/repos".into(),
            ..HttpOptions::default()
        },
    );
    let endpoint = format!("http://127.0.0.1:{}", strict.port());
    let mut env = aws_env(home.path());
    env.push(("POOL_RESOURCE_CODECOMMIT_GIT_ENDPOINT".into(), endpoint));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let refused = step(
        "refused signature",
        &secrets,
        &repo,
        "out",
        json!({"source": src, "params": {"acquire": true}}),
        &env,
    );
    refused.assert_failure();
    assert!(
        refused.stderr.contains("authentication failed")
            && refused.stderr.contains("codecommit:GitPull"),
        "{}",
        refused.stderr
    );
    // The signed passwords and the user names (AKID%TOKEN) are secrets too.
    let mut signed = Secrets::default();
    for v in check.verdicts().iter().chain(wrong.verdicts().iter()) {
        signed.add(&v.password);
        signed.add(&v.user);
        signed.add_basic(&v.user, &v.password);
    }
    assert!(!signed.0.is_empty(), "the resource signed its requests");
    for run in runs.iter().chain([&refused]) {
        assert_clean("signed passwords", &signed, run, &repo, &[]);
    }
}

#[test]
fn aws_keys_for_the_codecommit_api_never_show() {
    let repo = pool_repo();
    let keyring = Keyring::new();
    keyring.add(issued(AWS_SECRET));
    let api = CodeCommitServer::start(repo.path(), "locks", REGION, keyring);
    let home = TempDir::new().unwrap();
    let mut env = aws_env(home.path());
    env.push(("AWS_ENDPOINT_URL_CODECOMMIT".into(), api.endpoint()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut src = source(CC_URI, "main", POOL);
    src["backend"] = json!("codecommit-api");
    let secrets = aws_secrets();
    let claim = step(
        "api claim",
        &secrets,
        &repo,
        "out",
        json!({"source": src, "params": {"claim": "a"}}),
        &env,
    );
    let claimed = claim.assert_success().json();
    step(
        "api check",
        &secrets,
        &repo,
        "check",
        json!({ "source": src }),
        &env,
    )
    .assert_success();
    step(
        "api in",
        &secrets,
        &repo,
        "in",
        json!({"source": src, "version": {"ref": version(&claimed)}}),
        &env,
    )
    .assert_success();

    let wrong_keyring = Keyring::new();
    wrong_keyring.add(issued("aDifferentSecretTheServerExpects000000001"));
    let strict = CodeCommitServer::start(repo.path(), "locks", REGION, wrong_keyring);
    let mut env = aws_env(home.path());
    env.push(("AWS_ENDPOINT_URL_CODECOMMIT".into(), strict.endpoint()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let refused = step(
        "api refused",
        &secrets,
        &repo,
        "out",
        json!({"source": src, "params": {"acquire": true}}),
        &env,
    );
    refused.assert_failure();
    assert!(
        refused.stderr.contains("authentication failed"),
        "{}",
        refused.stderr
    );
}

#[test]
fn sigterm_during_a_wait_leaves_no_key_material_behind() {
    let repo = pool_repo();
    let key = ssh_keygen("ed25519", Some(PASSPHRASE), false);
    let sshd = Sshd::start(std::slice::from_ref(&key.public));
    let mut src = ssh_source(&sshd, &repo, &key, PASSPHRASE);
    // Only the signal can end a ten-second wait this early.
    src["retry_delay"] = json!("10s");
    let s = Step::new();
    let env = s.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let request = json!({"source": src, "params": {"claim": "b"}});
    let (child, command) = spawn_raw(
        "out",
        &[s.inputs.path()],
        request.to_string().as_bytes(),
        &env,
    );
    let mut out = Bg::new(child, command.clone(), DEADLINE);
    out.until_logged(1, "waiting: ");

    // While it waits: a key on disk must be private to the step.
    let on_disk = key_files(s.tmp.path(), &key);
    for file in &on_disk {
        assert_eq!(mode(file), 0o600, "{}", file.display());
        let dir = file.parent().expect("a key file has a directory");
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
    }
    eprintln!("{} key files under TMPDIR while waiting", on_disk.len());
    // Nor is one open anywhere else (a library ignoring TMPDIR).
    let mut lines = Secrets::default();
    lines.add_key(&key.private);
    for fd in std::fs::read_dir(format!("/proc/{}/fd", out.pid()))
        .expect("reading the open files of out")
        .flatten()
    {
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue;
        };
        if target.is_file() {
            let bytes = std::fs::read(&target).unwrap_or_default();
            assert!(
                lines.found_in(&bytes).is_none(),
                "out has the key open in {}",
                target.display()
            );
        }
    }

    out.signal("TERM");
    let (status, took) = out.wait_exit();
    assert!(
        took < Duration::from_secs(5),
        "out still ran 5 s after SIGTERM"
    );
    let stderr = out.all_stderr();
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("interrupted by SIGTERM"), "{stderr}");
    assert_eq!(key_files(s.tmp.path(), &key), Vec::<PathBuf>::new());
    let leftovers = files_under(s.tmp.path());
    assert!(leftovers.is_empty(), "left under TMPDIR: {leftovers:?}");
    let mut secrets = Secrets::default();
    secrets.add_key(&key.private);
    secrets.add(PASSPHRASE);
    let run = Run {
        command,
        status,
        stdout: out.stdout(),
        stderr,
    };
    assert_clean(
        "aborted wait",
        &secrets,
        &run,
        &repo,
        &[s.tmp.path(), s.home.path(), s.inputs.path()],
    );
    assert_eq!(repo.claimed(POOL), ["b"]);
}
