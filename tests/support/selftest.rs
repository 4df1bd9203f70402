//! Checks the test support itself: each fixture and server works with the
//! stock git CLI, so a failing integration test points at the resource.

use std::path::Path;
use std::sync::Arc;

use super::*;
use base64::Engine;
use tempfile::TempDir;

/// Clones `url` into `parent/work` and returns the work tree path.
fn clone(parent: &Path, url: &str, config: &[&str]) -> std::path::PathBuf {
    let mut args: Vec<&str> = Vec::new();
    for c in config {
        args.extend(["-c", c]);
    }
    args.extend(["clone", "-q", url, "work"]);
    git_ok(parent, &args);
    parent.join("work")
}

/// Commits a file in a work tree and pushes it to `branch`.
fn commit_and_push(work: &Path, branch: &str, config: &[&str]) {
    std::fs::write(work.join("pushed.txt"), "pushed\n").unwrap();
    git_ok(work, &["add", "pushed.txt"]);
    git_ok(work, &["commit", "-q", "-m", "pushed"]);
    let mut args: Vec<&str> = Vec::new();
    for c in config {
        args.extend(["-c", c]);
    }
    let refspec = format!("HEAD:{branch}");
    args.extend(["push", "-q", "origin", &refspec]);
    git_ok(work, &args);
}

fn head(work: &Path) -> String {
    git_ok(work, &["rev-parse", "HEAD"]).trim().to_owned()
}

#[test]
fn lock_repo_records_locks_and_their_history() {
    let repo = LockRepo::new("main");
    repo.add_lock("team/pool", "one", false, b"\xff\x00binary");
    repo.add_lock("team/pool", "two", true, b"two\n");
    repo.add_empty_pool("empty");
    repo.commit_file("notes.txt", b"n", "a note");
    repo.move_lock("team/pool", "one", true);

    assert_eq!(repo.claimed("team/pool"), ["one", "two"]);
    assert!(repo.unclaimed("team/pool").is_empty());
    assert!(repo.claimed("empty").is_empty());
    assert!(repo.unclaimed("missing").is_empty());
    assert_eq!(
        repo.file_at("main", "team/pool/claimed/one").unwrap(),
        b"\xff\x00binary"
    );
    assert_eq!(repo.file_at("main", "team/pool/unclaimed/one"), None);

    let log = repo.log();
    let subjects: Vec<&str> = log.iter().map(|c| c.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "initial",
            "adding unclaimed: one",
            "adding claimed: two",
            "adding pool: empty",
            "a note",
            "claiming: one"
        ]
    );
    assert_eq!(log[0].changed, [('A', "README.md".to_owned())]);
    assert!(log[0].parents.is_empty());
    assert_eq!(log[1].parents, [log[0].sha.clone()]);
    assert_eq!(
        log[5].changed,
        [
            ('A', "team/pool/claimed/one".to_owned()),
            ('D', "team/pool/unclaimed/one".to_owned())
        ]
    );
    assert_eq!(log.last().unwrap().sha, repo.tip());
    assert!(log[0].committer_time > 1_600_000_000);
    assert!(repo.is_ancestor_or_on_branch(&log[2].sha));
    assert!(!repo.is_ancestor_or_on_branch(&"1".repeat(40)));
}

#[test]
fn lock_repo_appends_many_commits_quickly() {
    let repo = LockRepo::new("master");
    let started = std::time::Instant::now();
    repo.add_commits(20_000);
    let log = repo.log();
    assert_eq!(log.len(), 20_001);
    assert_eq!(log[20_000].changed, [('M', "filler.txt".to_owned())]);
    assert!(started.elapsed().as_secs() < 60);
}

#[test]
fn git_daemon_serves_clone_and_push_and_restarts_on_the_same_port() {
    let repo = LockRepo::new("main");
    let mut daemon = GitDaemon::start(repo.root());
    let work_dir = TempDir::new().unwrap();
    let work = clone(work_dir.path(), &daemon.url("locks.git"), &[]);
    assert_eq!(head(&work), repo.tip());
    commit_and_push(&work, "main", &[]);
    assert_eq!(repo.tip(), head(&work));

    let port = daemon.port();
    daemon.stop();
    let refused = git(work_dir.path())
        .args(["ls-remote", &daemon.url("locks.git")])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    daemon.restart();
    assert_eq!(daemon.port(), port);
    git_ok(work_dir.path(), &["ls-remote", &daemon.url("locks.git")]);
}

#[test]
fn http_server_requires_basic_auth_and_records_the_header() {
    let repo = LockRepo::new("main");
    let server = HttpGitServer::start(
        repo.root(),
        HttpOptions {
            basic_auth: Some(("alice".into(), "s3cret".into())),
            url_prefix: "/v1/repos".into(),
            ..HttpOptions::default()
        },
    );
    let url = server.url("locks.git");
    assert!(url.starts_with("http://127.0.0.1:") && url.ends_with("/v1/repos/locks.git"));

    let work_dir = TempDir::new().unwrap();
    let denied = git(work_dir.path())
        .args(["ls-remote", &url])
        .output()
        .unwrap();
    assert!(!denied.status.success());
    assert!(server.auth_headers().is_empty());

    let with_creds = url.replace("http://", "http://alice:s3cret@");
    let work = clone(work_dir.path(), &with_creds, &[]);
    commit_and_push(&work, "main", &[]);
    assert_eq!(repo.tip(), head(&work));

    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
    );
    assert!(!server.auth_headers().is_empty());
    assert!(server.auth_headers().iter().all(|h| *h == expected));
    assert!(server.request_count() >= 4);
    assert!(server
        .requests()
        .iter()
        .any(|r| r == "POST /v1/repos/locks.git/git-receive-pack"));
}

#[test]
fn http_server_passes_the_path_to_an_auth_check_and_accepts_chunked_gzip_pushes() {
    let repo = LockRepo::new("main");
    let check: super::http::AuthCheck = Arc::new(|user, password, path| {
        user == "bot" && password == "tok" && path.starts_with("/locks.git/")
    });
    let server = HttpGitServer::start(
        repo.root(),
        HttpOptions {
            auth_check: Some(check),
            ..HttpOptions::default()
        },
    );
    let work_dir = TempDir::new().unwrap();
    let url = server
        .url("locks.git")
        .replace("http://", "http://bot:tok@");
    let work = clone(work_dir.path(), &url, &[]);
    // A tiny postBuffer forces chunked request bodies, and pushes are gzipped.
    commit_and_push(&work, "main", &["http.postBuffer=1024"]);
    assert_eq!(repo.tip(), head(&work));
    let wrong = server
        .url("other.git")
        .replace("http://", "http://bot:tok@");
    let denied = git(work_dir.path())
        .args(["ls-remote", &wrong])
        .output()
        .unwrap();
    assert!(!denied.status.success());
}

#[test]
fn https_server_is_trusted_only_with_its_own_ca() {
    let repo = LockRepo::new("main");
    let ca = Arc::new(TestCa::new());
    let server = HttpGitServer::start(
        repo.root(),
        HttpOptions {
            tls: Some(Arc::clone(&ca)),
            ..HttpOptions::default()
        },
    );
    let url = server.url("locks.git");
    assert!(url.starts_with("https://localhost:"));
    let work_dir = TempDir::new().unwrap();
    let trusted = format!("http.sslCAInfo={}", ca.ca_pem_path().display());
    let work = clone(work_dir.path(), &url, &[&trusted]);
    commit_and_push(&work, "main", &[&trusted]);
    assert_eq!(repo.tip(), head(&work));
    let by_ip = url.replace("localhost", "127.0.0.1");
    git_ok(work_dir.path(), &["-c", &trusted, "ls-remote", &by_ip]);

    let other = TestCa::new();
    let untrusted = format!("http.sslCAInfo={}", other.ca_pem_path().display());
    let denied = git(work_dir.path())
        .args(["-c", &untrusted, "ls-remote", &url])
        .output()
        .unwrap();
    assert!(!denied.status.success());
    assert!(ca.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
}

#[test]
fn connect_proxy_tunnels_only_with_its_credentials() {
    let repo = LockRepo::new("main");
    let ca = Arc::new(TestCa::new());
    let server = HttpGitServer::start(
        repo.root(),
        HttpOptions {
            tls: Some(Arc::clone(&ca)),
            ..HttpOptions::default()
        },
    );
    let proxy = ConnectProxy::start(Some(("proxyuser".into(), "proxypass".into())));
    let trusted = format!("http.sslCAInfo={}", ca.ca_pem_path().display());
    let good = format!(
        "http.proxy=http://proxyuser:proxypass@127.0.0.1:{}",
        proxy.port()
    );
    let work_dir = TempDir::new().unwrap();
    let work = clone(
        work_dir.path(),
        &server.url("locks.git"),
        &[&trusted, &good],
    );
    assert_eq!(head(&work), repo.tip());
    assert!(proxy.connections() >= 1);

    let tunnels = proxy.connections();
    let bad = format!(
        "http.proxy=http://proxyuser:wrong@127.0.0.1:{}",
        proxy.port()
    );
    let denied = git(work_dir.path())
        .args([
            "-c",
            &trusted,
            "-c",
            &bad,
            "ls-remote",
            &server.url("locks.git"),
        ])
        .output()
        .unwrap();
    assert!(!denied.status.success());
    assert!(proxy.rejected() >= 1);
    assert_eq!(proxy.connections(), tunnels);
}

#[test]
fn proxy_forwards_plain_http_requests() {
    let repo = LockRepo::new("main");
    let server = HttpGitServer::start(repo.root(), HttpOptions::default());
    let proxy = ConnectProxy::start(None);
    let work_dir = TempDir::new().unwrap();
    let via = format!("http.proxy={}", proxy.url());
    git_ok(
        work_dir.path(),
        &["-c", &via, "ls-remote", &server.url("locks.git")],
    );
    assert!(proxy.connections() >= 1);
}

#[test]
fn sshd_lets_an_authorized_key_clone_and_push() {
    let repo = LockRepo::new("main");
    let key = ssh_keygen("ed25519", None, false);
    let sshd = Sshd::start(std::slice::from_ref(&key.public));
    let keys = TempDir::new().unwrap();
    let key_path = keys.path().join("id");
    std::fs::write(&key_path, &key.private).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let known_hosts = keys.path().join("known_hosts");
    std::fs::write(&known_hosts, sshd.host_key_line() + "\n").unwrap();
    let ssh = format!(
        "core.sshCommand=ssh -i {} -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={} -o BatchMode=yes",
        key_path.display(),
        known_hosts.display()
    );
    let url = sshd.url(repo.path());
    assert!(url.starts_with(&format!("ssh://{}@127.0.0.1:", sshd.user())));
    let work_dir = TempDir::new().unwrap();
    let work = clone(work_dir.path(), &url, &[&ssh]);
    commit_and_push(&work, "main", &[&ssh]);
    assert_eq!(repo.tip(), head(&work), "sshd log:\n{}", sshd.log());

    let stranger = ssh_keygen("ed25519", None, false);
    std::fs::write(&key_path, &stranger.private).unwrap();
    let denied = git(work_dir.path())
        .args(["-c", &ssh, "ls-remote", &url])
        .output()
        .unwrap();
    assert!(!denied.status.success());
}

#[test]
fn ssh_keygen_makes_each_kind_of_key() {
    let rsa = ssh_keygen("rsa", None, true);
    assert!(rsa.private.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    assert!(rsa.public.starts_with("ssh-rsa "));
    let ed = ssh_keygen("ed25519", Some("pass phrase"), false);
    assert!(ed
        .private
        .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    assert!(ed.public.starts_with("ssh-ed25519 ") && ed.public.ends_with(" test"));
    let ec = ssh_keygen("ecdsa", Some("secret"), true);
    assert!(ec.private.contains("ENCRYPTED"));
    assert!(ec.public.starts_with("ecdsa-sha2-nistp256 "));
}

#[test]
fn run_bin_captures_the_outcome_of_an_executable() {
    let run = run_bin_raw(
        "check",
        &[],
        b"not json",
        &[("POOL_RESOURCE_SELFTEST", "1")],
    );
    assert!(run
        .command
        .contains("POOL_RESOURCE_SELFTEST=1 check <<< not json"));
    let child = spawn_bin("check", &[], &serde_json::json!({}), &[]);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.code().is_some());
}

#[test]
#[should_panic(expected = "--- stderr ---")]
fn run_json_panics_with_the_whole_story_when_stdout_is_not_json() {
    let run = Run {
        command: "check".into(),
        status: std::process::Command::new("true").status().unwrap(),
        stdout: "{} {}".into(),
        stderr: "log".into(),
    };
    run.json();
}

/// Reads one HTTP response head and returns (status line, headers, body) for
/// a chunked or Content-Length body.
fn read_response(reader: &mut impl std::io::BufRead) -> (String, String, Vec<u8>) {
    use std::io::Read;
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let status = head.lines().next().unwrap().to_owned();
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if lower.contains("transfer-encoding: chunked") {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).unwrap();
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        let length: usize = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        body.resize(length, 0);
        reader.read_exact(&mut body).unwrap();
    }
    (status, head, body)
}

#[test]
fn http_server_keeps_connections_alive_and_decodes_chunked_bodies() {
    use std::io::{BufReader, Read, Write};
    let repo = LockRepo::new("main");
    let server = HttpGitServer::start(repo.root(), HttpOptions::default());
    let stream = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);

    writer
        .write_all(b"GET /locks.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (status, head, body) = read_response(&mut reader);
    assert_eq!(status.trim(), "HTTP/1.1 200 OK");
    assert!(head.contains("application/x-git-upload-pack-advertisement"));
    assert!(String::from_utf8_lossy(&body).contains(&repo.tip()));

    let want = format!("0032want {}\n00000009done\n", repo.tip());
    let (first, second) = want.split_at(20);
    write!(
        writer,
        "POST /locks.git/git-upload-pack HTTP/1.1\r\nHost: x\r\n\
         Content-Type: application/x-git-upload-pack-request\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         {:x}\r\n{first}\r\n{:x}\r\n{second}\r\n0\r\n\r\n",
        first.len(),
        second.len()
    )
    .unwrap();
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{rest}");
    assert!(rest.contains("Connection: close\r\n"));
    assert!(rest.contains("NAK\n") && rest.contains("PACK"), "{rest}");
    assert_eq!(server.request_count(), 2);
}
