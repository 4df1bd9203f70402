//! Every transport a pipeline uses today, each against a real server on
//! 127.0.0.1: a full acquire → get → release → check cycle whose branch
//! history is checked with the git CLI, plus the ways each transport fails
//! (wrong credentials, untrusted certificates, unknown host keys, a proxy that
//! refuses us), which must fail at once, clearly, and without printing a
//! secret.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use tempfile::TempDir;

use pool_resource::config::Source;
use pool_resource::process::log::Log;
use pool_resource::process::signal::Interrupt;
use pool_resource::protocol::RawRequest;
use pool_resource::store::git::GitStore;
use pool_resource::store::seam::{Cache, Identity, PutStore};

use crate::support::{
    run_bin, ssh_keygen, ConnectProxy, GitDaemon, HttpGitServer, HttpOptions, LockRepo, Run,
    SshKey, Sshd, TestCa,
};
use crate::{lock_name, source, version, Inputs};

const POOL: &str = "envs";

/// How long a failure that must not be retried may take at most.
const FAIL_FAST: Duration = Duration::from_secs(10);

/// A lock repository on `branch` with unclaimed locks `a` and `b` in [`POOL`].
fn pool_repo(branch: &str) -> LockRepo {
    let repo = LockRepo::new(branch);
    repo.add_lock(POOL, "a", false, b"a-meta\n");
    repo.add_lock(POOL, "b", false, b"b-meta\n");
    repo
}

/// Runs `name` with `request`, with `TMPDIR` pointed at a private directory so
/// `check`'s cache does not outlive the test.
fn run(name: &str, dir: &Path, request: &Value, env: &[(&str, &str)], tmp: &Path) -> Run {
    let tmp = tmp.display().to_string();
    let mut env = env.to_vec();
    env.push(("TMPDIR", &tmp));
    let args: &[&Path] = if name == "check" { &[] } else { &[dir] };
    run_bin(name, args, request, &env)
}

/// acquire → in → release → check through `src`, asserting each response and
/// the branch history (two new fast-forward commits, the claim and the
/// release, and no lock left claimed). Returns everything the four runs
/// printed, for secret checks.
fn cycle(src: &Value, repo: &LockRepo, env: &[(&str, &str)]) -> String {
    let tmp = TempDir::new().expect("creating TMPDIR");
    let before = repo.log().len();
    let base = repo.tip();
    let inputs = Inputs::new();
    let mut printed = String::new();

    let acquire = run(
        "out",
        inputs.path(),
        &json!({"source": src, "params": {"acquire": true}}),
        env,
        tmp.path(),
    );
    acquire.assert_success();
    printed += &(acquire.stdout.clone() + &acquire.stderr);
    let claimed = acquire.json();
    let lock = lock_name(&claimed);
    assert!(lock == "a" || lock == "b", "{claimed}");
    assert_eq!(version(&claimed), repo.tip(), "acquire reports the new tip");
    assert_eq!(repo.claimed(POOL), std::slice::from_ref(&lock));

    let dest = TempDir::new().expect("creating the get destination");
    let get = run(
        "in",
        dest.path(),
        &json!({"source": src, "version": {"ref": version(&claimed)}}),
        env,
        tmp.path(),
    );
    get.assert_success();
    printed += &(get.stdout.clone() + &get.stderr);
    assert_eq!(get.json(), claimed, "in reports what out reported");
    assert_eq!(
        std::fs::read(dest.path().join("name")).expect("in writes name"),
        format!("{lock}\n").as_bytes()
    );
    assert_eq!(
        std::fs::read(dest.path().join("metadata")).expect("in writes metadata"),
        format!("{lock}-meta\n").as_bytes()
    );

    inputs.lock("held", &lock, b"");
    let release = run(
        "out",
        inputs.path(),
        &json!({"source": src, "params": {"release": "held"}}),
        env,
        tmp.path(),
    );
    release.assert_success();
    printed += &(release.stdout.clone() + &release.stderr);
    let released = release.json();
    assert_eq!(lock_name(&released), lock);
    assert_eq!(version(&released), repo.tip());

    let log = repo.log();
    let new: Vec<(&str, &[String], &str)> = log[before..]
        .iter()
        .map(|c| (c.sha.as_str(), c.parents.as_slice(), c.subject.as_str()))
        .collect();
    assert_eq!(
        new,
        [
            (
                version(&claimed).as_str(),
                std::slice::from_ref(&base),
                format!("claiming: {lock}").as_str()
            ),
            (
                version(&released).as_str(),
                std::slice::from_ref(&version(&claimed)),
                format!("unclaiming: {lock}").as_str()
            ),
        ],
        "one fast-forward commit per change"
    );
    assert!(repo.claimed(POOL).is_empty());
    assert_eq!(repo.unclaimed(POOL), ["a", "b"]);

    let check = run(
        "check",
        Path::new(""),
        &json!({"source": src, "version": {"ref": version(&claimed)}}),
        env,
        tmp.path(),
    );
    check.assert_success();
    printed += &(check.stdout.clone() + &check.stderr);
    assert_eq!(
        check.json(),
        json!([{"ref": version(&claimed)}, {"ref": version(&released)}]),
        "check lists the claim and the release, oldest first"
    );
    printed
}

/// Runs an acquire that must fail with exit 1 well within [`FAIL_FAST`],
/// leaving the branch untouched.
fn failing_acquire(src: &Value, repo: &LockRepo, env: &[(&str, &str)]) -> Run {
    let tip = repo.tip();
    let start = Instant::now();
    let run = run_bin(
        "out",
        &[Inputs::new().path()],
        &json!({"source": src, "params": {"acquire": true}}),
        env,
    );
    let took = start.elapsed();
    run.assert_failure();
    assert!(
        took < FAIL_FAST,
        "took {took:?}, so it was retried:\n{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("retrying"),
        "a failure that cannot go away was retried:\n{}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "no JSON on failure: {}", run.stdout);
    assert_eq!(repo.tip(), tip, "a failed put changes nothing");
    run
}

fn assert_contains(text: &str, wanted: &str) {
    assert!(text.contains(wanted), "expected {wanted:?} in:\n{text}");
}

fn assert_hides(text: &str, secret: &str) {
    assert!(
        !text.contains(secret),
        "the secret {secret:?} leaked:\n{text}"
    );
}

// --- local ---------------------------------------------------------------

#[test]
fn a_local_bare_repository_path_works() {
    let repo = pool_repo("master");
    let src = source(&repo.path().display().to_string(), "master", POOL);
    cycle(&src, &repo, &[]);
}

#[test]
fn a_file_url_works() {
    let repo = pool_repo("master");
    let src = source(&repo.file_url(), "master", POOL);
    cycle(&src, &repo, &[]);
}

// --- git:// ----------------------------------------------------------------

#[test]
fn git_daemon_works() {
    let repo = pool_repo("master");
    let daemon = GitDaemon::start(repo.root());
    let src = source(&daemon.url("locks.git"), "master", POOL);
    cycle(&src, &repo, &[]);
}

#[test]
fn a_branch_other_than_master_works_over_a_remote_transport() {
    let repo = pool_repo("locks/v2");
    // Another branch with the same pool must stay untouched.
    crate::support::git_ok(repo.path(), &["branch", "master", "locks/v2"]);
    let master = crate::support::git_ok(repo.path(), &["rev-parse", "master"]);
    let daemon = GitDaemon::start(repo.root());
    let src = source(&daemon.url("locks.git"), "locks/v2", POOL);
    cycle(&src, &repo, &[]);
    assert_eq!(
        crate::support::git_ok(repo.path(), &["rev-parse", "master"]),
        master
    );
}

// --- http:// with Basic auth --------------------------------------------------

const HTTP_USER: &str = "pipeline";
const HTTP_PASSWORD: &str = "s3cr3t-Pa55word";

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

fn http_server(repo: &LockRepo) -> HttpGitServer {
    HttpGitServer::start(
        repo.root(),
        HttpOptions {
            basic_auth: Some((HTTP_USER.into(), HTTP_PASSWORD.into())),
            ..HttpOptions::default()
        },
    )
}

#[test]
fn http_with_username_and_password_sends_exactly_those_credentials() {
    let repo = pool_repo("master");
    let server = http_server(&repo);
    let mut src = source(&server.url("locks.git"), "master", POOL);
    src["username"] = json!(HTTP_USER);
    src["password"] = json!(HTTP_PASSWORD);
    let printed = cycle(&src, &repo, &[]);
    assert_hides(&printed, HTTP_PASSWORD);
    let headers = server.auth_headers();
    assert!(!headers.is_empty(), "the server never saw credentials");
    let expected = basic(HTTP_USER, HTTP_PASSWORD);
    assert!(
        headers.iter().all(|h| *h == expected),
        "expected only {expected:?}, got {headers:?}"
    );
}

#[test]
fn a_wrong_http_password_fails_at_once_naming_the_uri_without_the_password() {
    let repo = pool_repo("master");
    let server = http_server(&repo);
    let url = server.url("locks.git");
    let mut src = source(&url, "master", POOL);
    src["username"] = json!(HTTP_USER);
    src["password"] = json!("not-the-Pa55word");
    let run = failing_acquire(&src, &repo, &[]);
    assert_contains(&run.stderr, "error: authentication failed");
    assert_contains(&run.stderr, &format!("authentication failed for {url}"));
    assert_hides(&run.stderr, "not-the-Pa55word");
    assert!(
        server.request_count() <= 4,
        "the wrong password was tried again and again: {:?}",
        server.requests()
    );
}

#[test]
fn http_without_credentials_says_which_fields_to_set() {
    let repo = pool_repo("master");
    let server = http_server(&repo);
    let src = source(&server.url("locks.git"), "master", POOL);
    let run = failing_acquire(&src, &repo, &[]);
    assert_contains(&run.stderr, "source.username and source.password");
}

#[test]
fn a_password_embedded_in_the_uri_works_and_is_never_printed() {
    let repo = pool_repo("master");
    let server = http_server(&repo);
    let plain = server.url("locks.git");
    let embedded = plain.replacen(
        "http://",
        &format!("http://{HTTP_USER}:{HTTP_PASSWORD}@"),
        1,
    );
    let src = source(&embedded, "master", POOL);
    let printed = cycle(&src, &repo, &[]);
    assert_hides(&printed, HTTP_PASSWORD);
    assert!(server
        .auth_headers()
        .iter()
        .all(|h| *h == basic(HTTP_USER, HTTP_PASSWORD)));

    let wrong = plain.replacen("http://", &format!("http://{HTTP_USER}:Wr0ng-Pa55@"), 1);
    let run = failing_acquire(&source(&wrong, "master", POOL), &repo, &[]);
    assert_contains(&run.stderr, &format!("authentication failed for {plain}"));
    assert_hides(&run.stderr, "Wr0ng-Pa55");
}

// --- https:// ----------------------------------------------------------------

fn https_server(repo: &LockRepo, ca: &Arc<TestCa>) -> HttpGitServer {
    HttpGitServer::start(
        repo.root(),
        HttpOptions {
            tls: Some(Arc::clone(ca)),
            ..HttpOptions::default()
        },
    )
}

#[test]
fn https_trusts_a_ca_given_by_ssl_cert_file() {
    let repo = pool_repo("master");
    let ca = Arc::new(TestCa::new());
    let server = https_server(&repo, &ca);
    let src = source(&server.url("locks.git"), "master", POOL);
    let ca_file = ca.ca_pem_path().display().to_string();
    cycle(&src, &repo, &[("SSL_CERT_FILE", &ca_file)]);
}

#[test]
fn https_trusts_a_ca_given_by_git_ssl_cainfo() {
    let repo = pool_repo("master");
    let ca = Arc::new(TestCa::new());
    let server = https_server(&repo, &ca);
    let src = source(&server.url("locks.git"), "master", POOL);
    let ca_file = ca.ca_pem_path().display().to_string();
    cycle(&src, &repo, &[("GIT_SSL_CAINFO", &ca_file)]);
}

#[test]
fn https_trusts_a_ca_given_by_git_config_http_sslcainfo() {
    let repo = pool_repo("master");
    let ca = Arc::new(TestCa::new());
    let server = https_server(&repo, &ca);
    let mut src = source(&server.url("locks.git"), "master", POOL);
    src["git_config"] = json!([{"name": "http.sslCAInfo", "value": ca.ca_pem_path()}]);
    cycle(&src, &repo, &[]);
}

/// Opens `server`'s repository in this process, trusting `ca` by
/// `git_config http.sslCAInfo`, and reads the pool at the tip.
fn snapshot_in_process(
    server: &HttpGitServer,
    ca: &TestCa,
) -> pool_resource::Result<pool_resource::model::pool::Snapshot> {
    let mut src = source(&server.url("locks.git"), "master", POOL);
    src["git_config"] = json!([{"name": "http.sslCAInfo", "value": ca.ca_pem_path()}]);
    let request = json!({ "source": src }).to_string();
    let request = RawRequest::parse(request.as_bytes())?;
    let source = Source::from_request(&request)?;
    let mut store = GitStore::open(
        &source,
        Identity::default(),
        Cache::Fresh,
        Log::new(Box::new(std::io::sink())),
        Interrupt::default(),
    )?;
    store.snapshot()
}

/// `pool serve` and `pool status` open the stores of several sources in one
/// process, and again after a failure: the CA locations libgit2 keeps are
/// process-wide, so opening one source must not take away another's CA.
#[test]
fn two_https_sources_with_different_cas_work_alternately_in_one_process() {
    let (repo_a, repo_b) = (pool_repo("master"), pool_repo("master"));
    let (ca_a, ca_b) = (Arc::new(TestCa::new()), Arc::new(TestCa::new()));
    let (server_a, server_b) = (https_server(&repo_a, &ca_a), https_server(&repo_b, &ca_b));
    for round in 1..=2 {
        for (name, server, ca) in [("a", &server_a, &ca_a), ("b", &server_b, &ca_b)] {
            let snap = snapshot_in_process(server, ca)
                .unwrap_or_else(|e| panic!("round {round}, source {name}: {}", e.chain()));
            assert_eq!(snap.unclaimed.len(), 2, "round {round}, source {name}");
        }
    }
    assert!(server_a.request_count() > 0 && server_b.request_count() > 0);
}

#[test]
fn https_with_username_and_password_works() {
    let repo = pool_repo("master");
    let ca = Arc::new(TestCa::new());
    let server = HttpGitServer::start(
        repo.root(),
        HttpOptions {
            tls: Some(Arc::clone(&ca)),
            basic_auth: Some((HTTP_USER.into(), HTTP_PASSWORD.into())),
            ..HttpOptions::default()
        },
    );
    let mut src = source(&server.url("locks.git"), "master", POOL);
    src["username"] = json!(HTTP_USER);
    src["password"] = json!(HTTP_PASSWORD);
    let ca_file = ca.ca_pem_path().display().to_string();
    let printed = cycle(&src, &repo, &[("SSL_CERT_FILE", &ca_file)]);
    assert_hides(&printed, HTTP_PASSWORD);
    assert!(server
        .auth_headers()
        .iter()
        .all(|h| *h == basic(HTTP_USER, HTTP_PASSWORD)));
}

#[test]
fn an_untrusted_https_certificate_fails_at_once_mentioning_the_certificate() {
    let repo = pool_repo("master");
    let ca = Arc::new(TestCa::new());
    let server = https_server(&repo, &ca);
    let url = server.url("locks.git");
    let src = source(&url, "master", POOL);
    // Trust a different CA only.
    let other = TestCa::new();
    let other_file = other.ca_pem_path().display().to_string();
    let run = failing_acquire(&src, &repo, &[("SSL_CERT_FILE", &other_file)]);
    assert_contains(
        &run.stderr,
        &format!("could not verify the identity of {url}"),
    );
    assert_contains(&run.stderr.to_ascii_lowercase(), "certificate");
}

#[test]
fn skip_ssl_verification_accepts_an_untrusted_certificate() {
    let repo = pool_repo("master");
    let ca = Arc::new(TestCa::new());
    let server = https_server(&repo, &ca);
    let mut src = source(&server.url("locks.git"), "master", POOL);
    src["skip_ssl_verification"] = json!(true);
    let other = TestCa::new();
    let other_file = other.ca_pem_path().display().to_string();
    cycle(&src, &repo, &[("SSL_CERT_FILE", &other_file)]);
}

#[test]
fn git_config_http_proxy_sends_https_through_the_proxy() {
    let repo = pool_repo("master");
    let ca = Arc::new(TestCa::new());
    let server = https_server(&repo, &ca);
    let proxy = ConnectProxy::start(None);
    let mut src = source(&server.url("locks.git"), "master", POOL);
    src["git_config"] = json!([{"name": "http.proxy", "value": proxy.url()}]);
    let ca_file = ca.ca_pem_path().display().to_string();
    cycle(&src, &repo, &[("SSL_CERT_FILE", &ca_file)]);
    assert!(
        proxy.connections() > 0,
        "nothing went through the proxy ({} requests reached the server directly)",
        server.request_count()
    );
}

#[test]
fn git_config_http_proxy_with_an_http_remote_is_warned_about_as_unused() {
    // libgit2 sends plain http:// requests to the server itself: say so
    // rather than let an operator believe the proxy is in the path.
    let repo = pool_repo("master");
    let server = HttpGitServer::start(repo.root(), HttpOptions::default());
    let proxy = ConnectProxy::start(None);
    let mut src = source(&server.url("locks.git"), "master", POOL);
    src["git_config"] = json!([{"name": "http.proxy", "value": proxy.url()}]);
    let printed = cycle(&src, &repo, &[]);
    assert_contains(
        &printed,
        "http.proxy is only used for https:// remotes; libgit2 connects to an http:// remote directly",
    );
}

// --- ssh:// ------------------------------------------------------------------

/// An ssh `source` for `repo` on `sshd` with `key`, verifying the host key.
fn ssh_source(sshd: &Sshd, repo: &LockRepo, key: &SshKey) -> Value {
    let mut src = source(&sshd.url(repo.path()), repo.branch(), POOL);
    src["private_key"] = json!(key.private);
    src["known_hosts"] = json!(sshd.host_key_line());
    src
}

/// The cycle over ssh with `key`, checking no line of it is printed.
fn ssh_cycle_with(key: &SshKey, passphrase: Option<&str>) {
    let repo = pool_repo("master");
    let sshd = Sshd::start(std::slice::from_ref(&key.public));
    let mut src = ssh_source(&sshd, &repo, key);
    if let Some(p) = passphrase {
        src["private_key_passphrase"] = json!(p);
    }
    let printed = cycle(&src, &repo, &[]);
    for line in key.private.lines().filter(|l| l.len() >= 16) {
        assert_hides(&printed, line);
    }
    if let Some(p) = passphrase {
        assert_hides(&printed, p);
    }
}

#[test]
fn ssh_works_with_an_ed25519_key_in_openssh_format() {
    ssh_cycle_with(&ssh_keygen("ed25519", None, false), None);
}

#[test]
fn ssh_works_with_an_rsa_key_in_pem_format() {
    let key = ssh_keygen("rsa", None, true);
    assert!(key.private.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    ssh_cycle_with(&key, None);
}

#[test]
fn ssh_works_with_an_ecdsa_key() {
    ssh_cycle_with(&ssh_keygen("ecdsa", None, false), None);
}

#[test]
fn ssh_works_with_a_passphrase_protected_openssh_key() {
    let passphrase = "correct horse battery";
    ssh_cycle_with(
        &ssh_keygen("ed25519", Some(passphrase), false),
        Some(passphrase),
    );
}

#[test]
fn ssh_works_with_a_passphrase_protected_pem_key() {
    let passphrase = "correct horse battery";
    let key = ssh_keygen("rsa", Some(passphrase), true);
    assert!(key.private.contains("ENCRYPTED"));
    ssh_cycle_with(&key, Some(passphrase));
}

#[test]
fn a_wrong_key_passphrase_fails_at_once_saying_so() {
    let repo = pool_repo("master");
    let key = ssh_keygen("ed25519", Some("correct horse battery"), false);
    let sshd = Sshd::start(std::slice::from_ref(&key.public));
    let mut src = ssh_source(&sshd, &repo, &key);
    src["private_key_passphrase"] = json!("wrong horse battery");
    let run = failing_acquire(&src, &repo, &[]);
    assert_contains(&run.stderr, "authentication failed for ssh://");
    assert_contains(&run.stderr, "private_key_passphrase");
    assert_hides(&run.stderr, "wrong horse battery");
}

#[test]
fn an_unauthorized_key_fails_at_once_naming_the_user() {
    let repo = pool_repo("master");
    let key = ssh_keygen("ed25519", None, false);
    let sshd = Sshd::start(std::slice::from_ref(&key.public));
    let stranger = ssh_keygen("ed25519", None, false);
    let src = ssh_source(&sshd, &repo, &stranger);
    let run = failing_acquire(&src, &repo, &[]);
    assert_contains(&run.stderr, "authentication failed for ssh://");
    assert_contains(
        &run.stderr,
        &format!("rejected source.private_key for user {:?}", sshd.user()),
    );
}

#[test]
fn private_key_user_names_the_ssh_user() {
    let repo = pool_repo("master");
    let key = ssh_keygen("ed25519", None, false);
    let sshd = Sshd::start(std::slice::from_ref(&key.public));
    let url = format!("ssh://127.0.0.1:{}{}", sshd.port(), repo.path().display());
    let mut src = source(&url, "master", POOL);
    src["private_key"] = json!(key.private);
    src["private_key_user"] = json!(sshd.user());
    src["known_hosts"] = json!(sshd.host_key_line());
    cycle(&src, &repo, &[]);
}

#[test]
fn private_key_user_overrides_the_user_in_the_uri() {
    let repo = pool_repo("master");
    let key = ssh_keygen("ed25519", None, false);
    let sshd = Sshd::start(std::slice::from_ref(&key.public));
    let url = format!(
        "ssh://nobody-here@127.0.0.1:{}{}",
        sshd.port(),
        repo.path().display()
    );
    let mut src = source(&url, "master", POOL);
    src["private_key"] = json!(key.private);
    src["private_key_user"] = json!(sshd.user());
    src["known_hosts"] = json!(sshd.host_key_line());
    cycle(&src, &repo, &[]);
}

#[test]
fn a_known_hosts_line_for_the_server_is_accepted_silently() {
    let repo = pool_repo("master");
    let key = ssh_keygen("ed25519", None, false);
    let sshd = Sshd::start(std::slice::from_ref(&key.public));
    let printed = cycle(&ssh_source(&sshd, &repo, &key), &repo, &[]);
    assert!(!printed.contains("not verified"), "{printed}");
}

#[test]
fn a_wrong_known_hosts_key_is_rejected_naming_the_host() {
    let repo = pool_repo("master");
    let key = ssh_keygen("ed25519", None, false);
    let sshd = Sshd::start(std::slice::from_ref(&key.public));
    let impostor = ssh_keygen("ed25519", None, false);
    let impostor_key = impostor.public.split_whitespace().nth(1).unwrap();
    let mut src = ssh_source(&sshd, &repo, &key);
    src["known_hosts"] = json!(format!(
        "[127.0.0.1]:{} ssh-ed25519 {impostor_key}",
        sshd.port()
    ));
    let run = failing_acquire(&src, &repo, &[]);
    assert_contains(&run.stderr, "could not verify the identity of ssh://");
    assert_contains(&run.stderr, "127.0.0.1");
    assert_contains(&run.stderr, "known_hosts");
}

#[test]
fn a_known_hosts_without_the_server_is_rejected_with_the_line_to_add() {
    let repo = pool_repo("master");
    let key = ssh_keygen("ed25519", None, false);
    let sshd = Sshd::start(std::slice::from_ref(&key.public));
    let mut src = ssh_source(&sshd, &repo, &key);
    let line = sshd.host_key_line();
    let other_host = line.replacen("[127.0.0.1]", "[git.example.com]", 1);
    src["known_hosts"] = json!(other_host);
    let run = failing_acquire(&src, &repo, &[]);
    assert_contains(&run.stderr, "127.0.0.1 is not in source.known_hosts");
    assert_contains(&run.stderr, &line);
}

#[test]
fn without_known_hosts_ssh_works_with_a_one_line_warning() {
    let repo = pool_repo("master");
    let key = ssh_keygen("ed25519", None, false);
    let sshd = Sshd::start(std::slice::from_ref(&key.public));
    let mut src = ssh_source(&sshd, &repo, &key);
    src.as_object_mut().unwrap().remove("known_hosts");
    let inputs = Inputs::new();
    let run = run_bin(
        "out",
        &[inputs.path()],
        &json!({"source": src, "params": {"claim": "a"}}),
        &[],
    );
    run.assert_success();
    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("not verified"))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning per run, however many connections:\n{}",
        run.stderr
    );
    assert_contains(warnings[0], "warning:");
    assert_contains(warnings[0], "SSH host key of 127.0.0.1");
    assert_contains(warnings[0], "known_hosts");
    assert_eq!(repo.claimed(POOL), ["a"]);
}

// --- https_tunnel ----------------------------------------------------------------

fn tunnel(proxy: &ConnectProxy, auth: Option<(&str, &str)>) -> Value {
    let mut t = json!({"proxy_host": "127.0.0.1", "proxy_port": proxy.port()});
    if let Some((user, password)) = auth {
        t["proxy_user"] = json!(user);
        t["proxy_password"] = json!(password);
    }
    t
}

#[test]
fn https_tunnel_carries_ssh_through_a_connect_proxy() {
    let repo = pool_repo("master");
    let key = ssh_keygen("ed25519", None, false);
    let sshd = Sshd::start(std::slice::from_ref(&key.public));
    let proxy = ConnectProxy::start(None);
    let mut src = ssh_source(&sshd, &repo, &key);
    src["https_tunnel"] = json!(tunnel(&proxy, None));
    cycle(&src, &repo, &[]);
    assert!(
        proxy.connections() >= 4,
        "each of the four runs tunnels: {}",
        proxy.connections()
    );
}

#[test]
fn https_tunnel_authenticates_to_the_proxy() {
    let repo = pool_repo("master");
    let key = ssh_keygen("ed25519", None, false);
    let sshd = Sshd::start(std::slice::from_ref(&key.public));
    let proxy = ConnectProxy::start(Some(("tunnel-user".into(), "Pr0xy-Pa55".into())));
    let mut src = ssh_source(&sshd, &repo, &key);
    src["https_tunnel"] = json!(tunnel(&proxy, Some(("tunnel-user", "Pr0xy-Pa55"))));
    let printed = cycle(&src, &repo, &[]);
    assert_hides(&printed, "Pr0xy-Pa55");
    assert!(proxy.connections() >= 4, "{}", proxy.connections());
    assert_eq!(proxy.rejected(), 0, "credentials were sent up front");
    let expected = basic("tunnel-user", "Pr0xy-Pa55");
    assert!(proxy.auth_headers().iter().all(|h| *h == expected));
}

#[test]
fn a_wrong_proxy_password_fails_at_once_saying_so() {
    let repo = pool_repo("master");
    let key = ssh_keygen("ed25519", None, false);
    let sshd = Sshd::start(std::slice::from_ref(&key.public));
    let proxy = ConnectProxy::start(Some(("tunnel-user".into(), "Pr0xy-Pa55".into())));
    let mut src = ssh_source(&sshd, &repo, &key);
    src["https_tunnel"] = json!(tunnel(&proxy, Some(("tunnel-user", "Wr0ng-Pa55"))));
    let run = failing_acquire(&src, &repo, &[]);
    assert_contains(&run.stderr, "authentication failed for ssh://");
    assert_contains(&run.stderr, &format!("proxy 127.0.0.1:{}", proxy.port()));
    assert_contains(&run.stderr, "proxy_password");
    assert_hides(&run.stderr, "Wr0ng-Pa55");
    assert_eq!(proxy.connections(), 0);
}
