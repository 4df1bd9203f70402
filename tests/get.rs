//! `in`: the lock's files, the repository tree, and the "no longer acquired" rule.

use serde_json::json;
use tempfile::TempDir;

use crate::support::{run_bin, LockRepo};
use crate::{lock_name, put, source, version, Inputs};

fn get(
    src: &serde_json::Value,
    version: &str,
    params: serde_json::Value,
) -> (crate::support::Run, TempDir) {
    let dest = TempDir::new().unwrap();
    let run = run_bin(
        "in",
        &[dest.path()],
        &json!({"source": src, "version": {"ref": version}, "params": params}),
        &[],
    );
    (run, dest)
}

#[test]
fn in_writes_name_metadata_and_the_tree_of_a_claim() {
    let repo = LockRepo::new("main");
    repo.add_lock("envs", "a", false, b"host=a\n");
    repo.commit_file("scripts/deploy.sh", b"#!/bin/sh\n", "a file tasks read");
    let src = source(&repo.file_url(), "main", "envs");
    let out = put(&src, json!({"acquire": true}), &Inputs::new(), &[]);
    let (run, dest) = get(&src, &version(&out), json!({}));
    run.assert_success();
    assert_eq!(run.json(), out, "in reports what out reported");
    assert_eq!(std::fs::read(dest.path().join("name")).unwrap(), b"a\n");
    assert_eq!(
        std::fs::read(dest.path().join("metadata")).unwrap(),
        b"host=a\n"
    );
    assert!(
        dest.path().join("scripts/deploy.sh").is_file(),
        "the tree is there"
    );
    assert!(dest.path().join("envs/claimed/a").is_file());
}

#[test]
fn in_fails_once_the_claim_was_released_since() {
    let repo = LockRepo::new("main");
    repo.add_lock("envs", "a", false, b"");
    let src = source(&repo.file_url(), "main", "envs");
    let inputs = Inputs::new();
    let claim = put(&src, json!({"claim": "a"}), &inputs, &[]);
    inputs.lock("held", "a", b"");
    let release = put(&src, json!({"release": "held"}), &inputs, &[]);
    let (run, _dest) = get(&src, &version(&claim), json!({}));
    run.assert_failure();
    assert!(
        run.stderr.contains("error:") && run.stderr.contains("lock instance is no longer acquired"),
        "{}",
        run.stderr
    );
    // Claimed again by someone else: still not ours.
    put(&src, json!({"claim": "a"}), &inputs, &[]);
    get(&src, &version(&claim), json!({})).0.assert_failure();
    // The release version itself is fine to get.
    let (run, dest) = get(&src, &version(&release), json!({}));
    run.assert_success();
    assert_eq!(lock_name(&run.json()), "a");
    assert_eq!(std::fs::read(dest.path().join("name")).unwrap(), b"a\n");
}

#[test]
fn in_of_a_removed_lock_prints_the_version_without_files() {
    let repo = LockRepo::new("main");
    repo.add_lock("envs", "a", false, b"");
    let src = source(&repo.file_url(), "main", "envs");
    let inputs = Inputs::new();
    inputs.lock("gone", "a", b"");
    let removal = put(&src, json!({"remove": "gone"}), &inputs, &[]);
    let (run, dest) = get(&src, &version(&removal), json!({}));
    run.assert_success();
    assert_eq!(lock_name(&run.json()), "a");
    assert!(!dest.path().join("name").exists());
    assert!(run.stderr.contains("does not exist"), "{}", run.stderr);
}

#[test]
fn in_of_an_unknown_version_fails() {
    let repo = LockRepo::new("main");
    repo.add_lock("envs", "a", false, b"");
    let src = source(&repo.file_url(), "main", "envs");
    let (run, _d) = get(&src, "0123456789012345678901234567890123456789", json!({}));
    run.assert_failure();
    assert!(
        run.stderr.contains("is not on branch \"main\""),
        "{}",
        run.stderr
    );
    let (run, _d) = get(&src, "not-a-sha", json!({}));
    run.assert_failure();
}

#[test]
fn in_accepts_depth_and_rejects_unknown_get_params() {
    let repo = LockRepo::new("main");
    let v = repo.add_lock("envs", "a", false, b"m");
    let src = source(&repo.file_url(), "main", "envs");
    get(&src, &v, json!({"depth": 1})).0.assert_success();
    let (run, _d) = get(&src, &v, json!({"detph": 1}));
    run.assert_failure();
    assert!(
        run.stderr.contains("params.detph (did you mean depth?)"),
        "{}",
        run.stderr
    );
}
