//! A put run again by the same build (`idempotent: true`, src/resource/rerun.rs):
//! Concourse re-runs a put it could not re-attach to, and a put whose push
//! reply was lost fails although its lock is claimed. With `idempotent: true`
//! the re-run gets back what the first run did; without it (the default, as
//! in the Go resource) every put does its work, so one build can take two
//! locks from one pool.

use serde_json::{json, Value};

use crate::support::{run_bin, GitDaemon, LockRepo};
use crate::{lock_name, put, source, version, Inputs};

const BUILD: [(&str, &str); 3] = [
    ("BUILD_ID", "4242"),
    ("BUILD_NAME", "9"),
    ("ATC_EXTERNAL_URL", "https://ci.example.com"),
];
const OTHER_BUILD: [(&str, &str); 3] = [
    ("BUILD_ID", "5151"),
    ("BUILD_NAME", "10"),
    ("ATC_EXTERNAL_URL", "https://ci.example.com"),
];

fn pool_repo() -> LockRepo {
    let repo = LockRepo::new("main");
    for lock in ["a", "b", "c"] {
        repo.add_lock("envs", lock, false, lock.as_bytes());
    }
    repo
}

fn local(repo: &LockRepo) -> Value {
    source(&repo.path().display().to_string(), "main", "envs")
}

#[test]
fn an_idempotent_acquire_run_again_by_the_same_build_gets_its_lock_back() {
    let repo = pool_repo();
    let src = local(&repo);
    let params = json!({"acquire": true, "idempotent": true});
    let first = put(&src, params.clone(), &Inputs::new(), &BUILD);
    let commits = repo.log().len();
    let again = put(&src, params, &Inputs::new(), &BUILD);
    assert_eq!(again, first, "the re-run reports the first run's claim");
    assert_eq!(repo.log().len(), commits, "and commits nothing");
    assert_eq!(repo.claimed("envs"), vec![lock_name(&first)]);
}

#[test]
fn two_acquires_by_one_build_without_idempotent_take_two_locks() {
    let repo = pool_repo();
    let src = local(&repo);
    let first = put(&src, json!({"acquire": true}), &Inputs::new(), &BUILD);
    let second = put(&src, json!({"acquire": true}), &Inputs::new(), &BUILD);
    assert_ne!(lock_name(&first), lock_name(&second));
    assert_eq!(repo.claimed("envs").len(), 2);
}

#[test]
fn an_idempotent_acquire_does_not_take_another_builds_lock() {
    let repo = pool_repo();
    let src = local(&repo);
    let params = json!({"acquire": true, "idempotent": true});
    let theirs = put(&src, params.clone(), &Inputs::new(), &OTHER_BUILD);
    let mine = put(&src, params, &Inputs::new(), &BUILD);
    assert_ne!(lock_name(&theirs), lock_name(&mine));
    // The same build id on another Concourse is another build.
    let elsewhere = [
        ("BUILD_ID", "4242"),
        ("BUILD_NAME", "9"),
        ("ATC_EXTERNAL_URL", "https://other-ci.example.com"),
    ];
    let third = put(
        &src,
        json!({"acquire": true, "idempotent": true}),
        &Inputs::new(),
        &elsewhere,
    );
    assert_ne!(lock_name(&third), lock_name(&mine));
    assert_ne!(lock_name(&third), lock_name(&theirs));
}

#[test]
fn an_idempotent_acquire_after_a_release_takes_a_lock_again() {
    let repo = pool_repo();
    let src = local(&repo);
    let params = json!({"acquire": true, "idempotent": true});
    let first = put(&src, params.clone(), &Inputs::new(), &BUILD);
    let inputs = Inputs::new();
    inputs.lock("held", &lock_name(&first), b"");
    put(&src, json!({"release": "held"}), &inputs, &BUILD);
    let second = put(&src, params, &Inputs::new(), &BUILD);
    assert_ne!(version(&second), version(&first), "a new claim");
    assert_eq!(repo.claimed("envs"), vec![lock_name(&second)]);
}

#[test]
fn an_idempotent_claim_of_a_lock_this_build_holds_returns_at_once() {
    let repo = pool_repo();
    let src = local(&repo);
    let first = put(&src, json!({"claim": "b"}), &Inputs::new(), &BUILD);
    let again = put(
        &src,
        json!({"claim": "b", "idempotent": true}),
        &Inputs::new(),
        &BUILD,
    );
    assert_eq!(version(&again), version(&first));
    assert_eq!(repo.claimed("envs"), vec!["b".to_string()]);
}

#[test]
fn an_idempotent_release_run_again_reports_the_first_release() {
    let repo = pool_repo();
    let src = local(&repo);
    put(&src, json!({"claim": "c"}), &Inputs::new(), &BUILD);
    let inputs = Inputs::new();
    inputs.lock("held", "c", b"");
    let params = json!({"release": "held", "idempotent": true});
    let first = put(&src, params.clone(), &inputs, &BUILD);
    let again = put(&src, params, &inputs, &BUILD);
    assert_eq!(again, first);
    // Without idempotent a second release is an error, as before.
    let plain = run_bin(
        "out",
        &[inputs.path()],
        &json!({"source": src, "params": {"release": "held"}}),
        &BUILD,
    );
    plain.assert_failure();
    assert!(plain.stderr.contains("\"c\""), "{}", plain.stderr);
    // Another build's idempotent release of it is an error too.
    let other = run_bin(
        "out",
        &[inputs.path()],
        &json!({"source": src, "params": {"release": "held", "idempotent": true}}),
        &OTHER_BUILD,
    );
    other.assert_failure();
}

#[test]
fn an_idempotent_acquire_over_git_daemon_finds_its_claim_below_later_commits() {
    // A put fetches one commit; finding the claim needs the history deepened.
    let repo = pool_repo();
    let daemon = GitDaemon::start(repo.root());
    let src = source(&daemon.url("locks.git"), "main", "envs");
    let params = json!({"acquire": true, "idempotent": true});
    let first = put(&src, params.clone(), &Inputs::new(), &BUILD);
    put(
        &src,
        json!({"claim": lock_other_than(&first)}),
        &Inputs::new(),
        &OTHER_BUILD,
    );
    repo.add_commits(150);
    let again = put(&src, params, &Inputs::new(), &BUILD);
    assert_eq!(version(&again), version(&first));
    assert_eq!(repo.claimed("envs").len(), 2);
}

fn lock_other_than(response: &Value) -> &'static str {
    if lock_name(response) == "a" {
        "b"
    } else {
        "a"
    }
}

#[test]
fn idempotent_is_refused_where_it_means_nothing_or_cannot_work() {
    let repo = pool_repo();
    let src = local(&repo);
    let inputs = Inputs::new();
    inputs.lock("new", "d", b"d");
    let add = run_bin(
        "out",
        &[inputs.path()],
        &json!({"source": src, "params": {"add": "new", "idempotent": true}}),
        &BUILD,
    );
    add.assert_failure();
    assert!(
        add.stderr
            .contains("params.idempotent applies to acquire, claim and release, not add"),
        "{}",
        add.stderr
    );
    let no_build = run_bin(
        "out",
        &[inputs.path()],
        &json!({"source": src, "params": {"acquire": true, "idempotent": true}}),
        &[],
    );
    no_build.assert_failure();
    assert!(
        no_build.stderr.contains("params.idempotent needs BUILD_ID"),
        "{}",
        no_build.stderr
    );
    let not_bool = run_bin(
        "out",
        &[inputs.path()],
        &json!({"source": src, "params": {"acquire": true, "idempotent": "yes"}}),
        &BUILD,
    );
    not_bool.assert_failure();
    assert!(
        not_bool.stderr.contains("params.idempotent"),
        "{}",
        not_bool.stderr
    );
    assert!(repo.claimed("envs").is_empty(), "nothing was claimed");
}
