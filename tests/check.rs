//! `check`: the versions of the pool, oldest first.

use serde_json::{json, Value};

use crate::support::{run_bin, LockRepo};
use crate::{put, source, Inputs};

fn check(src: &Value, version: Option<&str>) -> Vec<String> {
    let mut req = json!({"source": src});
    if let Some(v) = version {
        req["version"] = json!({"ref": v});
    }
    let out = run_bin("check", &[], &req, &[]).assert_success().json();
    out.as_array()
        .expect("check prints a list")
        .iter()
        .map(|v| v["ref"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn first_check_returns_the_latest_pool_commit_only() {
    let repo = LockRepo::new("main");
    repo.add_lock("envs", "a", false, b"");
    let latest = repo.add_lock("envs", "b", false, b"");
    repo.commit_file("unrelated.txt", b"x", "not the pool");
    repo.add_lock("other", "z", false, b"");
    let src = source(&repo.file_url(), "main", "envs");
    assert_eq!(check(&src, None), [latest]);
}

#[test]
fn check_from_a_version_lists_it_and_every_later_pool_commit() {
    let repo = LockRepo::new("main");
    let first = repo.add_lock("envs", "a", false, b"");
    repo.commit_file("unrelated.txt", b"x", "not the pool");
    let src = source(&repo.file_url(), "main", "envs");
    let claim = crate::version(&put(&src, json!({"claim": "a"}), &Inputs::new(), &[]));
    repo.add_lock("other", "z", false, b"");
    assert_eq!(check(&src, Some(&first)), [first.clone(), claim.clone()]);
    assert_eq!(check(&src, Some(&claim)), std::slice::from_ref(&claim));
}

#[test]
fn check_with_an_unknown_version_returns_the_latest() {
    let repo = LockRepo::new("main");
    let latest = repo.add_lock("envs", "a", false, b"");
    let src = source(&repo.file_url(), "main", "envs");
    assert_eq!(
        check(&src, Some("0123456789012345678901234567890123456789")),
        [latest]
    );
}

#[test]
fn check_handles_a_pool_created_by_the_root_commit() {
    let dir = tempfile::TempDir::new().unwrap();
    let repo = dir.path().join("root.git");
    crate::support::git_ok(
        dir.path(),
        &["init", "-q", "--bare", "-b", "main", "root.git"],
    );
    let work = dir.path().join("w");
    crate::support::git_ok(dir.path(), &["init", "-q", "-b", "main", "w"]);
    std::fs::create_dir_all(work.join("envs/unclaimed")).unwrap();
    std::fs::write(work.join("envs/unclaimed/a"), b"").unwrap();
    crate::support::git_ok(&work, &["add", "-A"]);
    crate::support::git_ok(
        &work,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "root",
        ],
    );
    crate::support::git_ok(&work, &["push", "-q", repo.to_str().unwrap(), "main"]);
    let root = crate::support::git_ok(&work, &["rev-parse", "HEAD"])
        .trim()
        .to_string();
    let src = source(repo.to_str().unwrap(), "main", "envs");
    assert_eq!(check(&src, None), std::slice::from_ref(&root));
    assert_eq!(check(&src, Some(&root)), [root]);
}

#[test]
fn check_of_an_empty_history_is_an_empty_list() {
    let repo = LockRepo::new("main");
    let src = source(&repo.file_url(), "main", "envs");
    assert!(check(&src, None).is_empty());
}
