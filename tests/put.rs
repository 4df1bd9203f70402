//! `out`: every put param against a real (local, bare) lock repository.

use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{run_bin, spawn_bin, Bg, LockRepo, Run};
use crate::{lock_name, put, source, version, Inputs};

fn pool_repo(branch: &str) -> LockRepo {
    let repo = LockRepo::new(branch);
    repo.add_lock("envs", "a", false, b"a-meta\n");
    repo.add_lock("envs", "b", false, b"b-meta\n");
    repo
}

/// Longer than any wait here should take.
const DEADLINE: Duration = Duration::from_secs(30);

/// The put `child` in the background, once it said that it waits
/// (`waiting: {why}`): proof that it looked at the pool and found it must
/// wait, where a fixed delay would only hope it had got that far.
fn waiting(child: Child, why: &str) -> Bg {
    let mut put = Bg::new(child, "out", DEADLINE);
    put.until_logged(1, &format!("waiting: {why}"));
    put
}

/// Fails with `what` if the put `bg` has ended.
fn assert_still_running(bg: &mut Bg, what: &str) {
    assert!(bg.running(), "{what}:\n{}", bg.stderr());
}

#[test]
fn acquire_claims_a_free_lock_and_reports_it() {
    let repo = pool_repo("master");
    let src = source(&repo.file_url(), "master", "envs");
    let out = put(&src, json!({"acquire": true}), &Inputs::new(), &[]);
    let lock = lock_name(&out);
    assert!(lock == "a" || lock == "b", "{out}");
    assert_eq!(
        out["metadata"][1],
        json!({"name": "pool_name", "value": "envs"})
    );
    assert_eq!(version(&out), repo.tip());
    assert_eq!(repo.claimed("envs"), std::slice::from_ref(&lock));
    let last = repo.log().pop().unwrap();
    assert_eq!(last.subject, format!("claiming: {lock}"));
    assert_eq!(
        repo.file_at(&repo.tip(), &format!("envs/claimed/{lock}"))
            .unwrap(),
        format!("{lock}-meta\n").as_bytes(),
        "the lock keeps its content when it moves"
    );
}

#[test]
fn commits_record_the_build_and_use_the_official_author() {
    let repo = pool_repo("main");
    let src = source(&repo.path().display().to_string(), "main", "envs");
    let env = [
        ("BUILD_ID", "1234"),
        ("BUILD_NAME", "42"),
        ("BUILD_JOB_NAME", "deploy"),
        ("BUILD_PIPELINE_NAME", "prod"),
        ("BUILD_TEAM_NAME", "main"),
        ("ATC_EXTERNAL_URL", "https://ci.example"),
    ];
    put(&src, json!({"claim": "a"}), &Inputs::new(), &env);
    let c = repo.log().pop().unwrap();
    assert_eq!(c.subject, "claiming: a");
    assert!(
        c.body.contains(
            "Build URL: https://ci.example/teams/main/pipelines/prod/jobs/deploy/builds/42"
        ),
        "{}",
        c.body
    );
    assert!(
        c.body.contains("Pool-Resource-Build: main/prod/deploy #42"),
        "{}",
        c.body
    );
    assert!(
        c.body.contains("Pool-Resource-Build-Id: 1234"),
        "{}",
        c.body
    );
    assert!(c.body.contains("Pool-Resource-Nonce: "), "{}", c.body);
    let author =
        crate::support::git_ok(repo.path(), &["log", "-1", "--format=%an <%ae>|%cn <%ce>"]);
    assert_eq!(author.trim(), "git <git@localhost>|git <git@localhost>");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - c.committer_time).abs() < 60, "real committer time");
}

#[test]
fn git_config_sets_the_commit_identity() {
    let repo = pool_repo("main");
    let mut src = source(&repo.file_url(), "main", "envs");
    src["git_config"] = json!([
        {"name": "user.name", "value": "Pool Bot"},
        {"name": "user.email", "value": "bot@example.com"}
    ]);
    put(&src, json!({"claim": "b"}), &Inputs::new(), &[]);
    let author = crate::support::git_ok(repo.path(), &["log", "-1", "--format=%an <%ae>"]);
    assert_eq!(author.trim(), "Pool Bot <bot@example.com>");
}

#[test]
fn release_moves_the_lock_back_with_its_content() {
    let repo = pool_repo("main");
    let src = source(&repo.file_url(), "main", "envs");
    let inputs = Inputs::new();
    put(&src, json!({"claim": "a"}), &inputs, &[]);
    inputs.lock("held", "a", b"ignored");
    let out = put(&src, json!({"release": "held"}), &inputs, &[]);
    assert_eq!(lock_name(&out), "a");
    assert_eq!(repo.unclaimed("envs"), ["a", "b"]);
    assert_eq!(repo.log().pop().unwrap().subject, "unclaiming: a");
    assert_eq!(
        repo.file_at("HEAD", "envs/unclaimed/a").unwrap(),
        b"a-meta\n"
    );
}

#[test]
fn acquire_waits_until_a_lock_is_released() {
    let repo = LockRepo::new("main");
    repo.add_lock("envs", "only", true, b"x");
    let src = source(&repo.file_url(), "main", "envs");
    let inputs = Inputs::new();
    let waiter = spawn_bin(
        "out",
        &[inputs.path()],
        &json!({"source": src, "params": {"acquire": true}}),
        &[],
    );
    // The waiter must still be waiting, having claimed nothing, once it has
    // seen the lock claimed; its place in line is the one commit it makes.
    let mut waiter = waiting(waiter, "all 1 locks of pool envs are claimed: only");
    assert_still_running(&mut waiter, "acquire returned while the lock is claimed");
    let pool_commits = repo
        .log()
        .iter()
        .filter(|c| c.subject != "waiting in line: envs")
        .count();
    assert!(repo.claimed("envs") == ["only"] && pool_commits == 2);
    inputs.lock("held", "only", b"");
    put(&src, json!({"release": "held"}), &inputs, &[]);
    let Run {
        status,
        stdout,
        stderr,
        ..
    } = waiter.finish();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("waiting: all 1 locks of pool envs are claimed: only"),
        "{stderr}"
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(lock_name(&json), "only");
    let subjects: Vec<String> = repo.log().into_iter().map(|c| c.subject).collect();
    assert_eq!(
        subjects[subjects.len() - 2..],
        ["unclaiming: only", "claiming: only"]
    );
}

#[test]
fn claim_waits_for_a_claimed_lock() {
    let repo = LockRepo::new("main");
    repo.add_lock("envs", "a", true, b"");
    let src = source(&repo.file_url(), "main", "envs");
    let inputs = Inputs::new();
    let waiter = spawn_bin(
        "out",
        &[inputs.path()],
        &json!({"source": src, "params": {"claim": "a"}}),
        &[],
    );
    // The release comes once the claim has seen the lock claimed.
    let waiter = waiting(waiter, "lock a of pool envs is claimed");
    inputs.lock("held", "a", b"");
    put(&src, json!({"release": "held"}), &inputs, &[]);
    let Run { status, stderr, .. } = waiter.finish();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("lock a of pool envs is claimed"),
        "{stderr}"
    );
    assert_eq!(repo.claimed("envs"), ["a"]);
}

#[test]
fn add_and_add_claimed_create_locks_with_binary_metadata() {
    let repo = LockRepo::new("main");
    repo.add_empty_pool("envs");
    let src = source(&repo.file_url(), "main", "envs");
    let inputs = Inputs::new();
    let binary: Vec<u8> = (0..=255u8).chain([0, 0xff, 0xfe]).collect();
    inputs.lock("new", "fresh", &binary);
    inputs.lock("new2", "busy", b"busy-meta");
    assert_eq!(
        lock_name(&put(&src, json!({"add": "new"}), &inputs, &[])),
        "fresh"
    );
    put(&src, json!({"add_claimed": "new2"}), &inputs, &[]);
    assert_eq!(repo.unclaimed("envs"), ["fresh"]);
    assert_eq!(repo.claimed("envs"), ["busy"]);
    assert_eq!(
        repo.file_at("HEAD", "envs/unclaimed/fresh").unwrap(),
        binary
    );
    let subjects: Vec<String> = repo.log().into_iter().map(|c| c.subject).collect();
    assert!(subjects.ends_with(&[
        "adding unclaimed: fresh".into(),
        "adding claimed: busy".into()
    ]));
}

#[test]
fn adding_a_lock_that_exists_fails_at_once() {
    let repo = pool_repo("main");
    let src = source(&repo.file_url(), "main", "envs");
    let inputs = Inputs::new();
    inputs.lock("dup", "a", b"other");
    let tip = repo.tip();
    for param in ["add", "add_claimed"] {
        let run = run_bin(
            "out",
            &[inputs.path()],
            &json!({"source": src, "params": {param: "dup"}}),
            &[],
        );
        run.assert_failure();
        assert!(
            run.stderr
                .contains("lock \"a\" already exists in pool \"envs\" (it is unclaimed)"),
            "{}",
            run.stderr
        );
    }
    assert_eq!(repo.tip(), tip, "nothing was committed");
}

#[test]
fn remove_deletes_a_lock_in_either_state() {
    let repo = pool_repo("main");
    repo.add_lock("envs", "c", true, b"");
    let src = source(&repo.file_url(), "main", "envs");
    let inputs = Inputs::new();
    inputs.lock("x", "a", b"");
    inputs.lock("y", "c", b"");
    put(&src, json!({"remove": "x"}), &inputs, &[]);
    put(&src, json!({"remove": "y"}), &inputs, &[]);
    assert_eq!(repo.unclaimed("envs"), ["b"]);
    assert!(repo.claimed("envs").is_empty());
    assert_eq!(repo.log().pop().unwrap().subject, "removing: c");
}

#[test]
fn missing_locks_fail_at_once_naming_pool_and_lock() {
    let repo = pool_repo("main");
    let src = source(&repo.file_url(), "main", "envs");
    let inputs = Inputs::new();
    inputs.lock("ghost", "ghost", b"");
    for params in [
        json!({"release": "ghost"}),
        json!({"remove": "ghost"}),
        json!({"claim": "ghost"}),
        json!({"check": "ghost"}),
        json!({"check_unclaimed": "ghost"}),
    ] {
        let start = Instant::now();
        let run = run_bin(
            "out",
            &[inputs.path()],
            &json!({"source": src, "params": params}),
            &[],
        );
        run.assert_failure();
        assert!(
            run.stderr
                .contains("lock \"ghost\" does not exist in pool \"envs\""),
            "{params}: {}",
            run.stderr
        );
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{params} did not fail at once"
        );
    }
}

#[test]
fn releasing_an_unclaimed_lock_fails_at_once() {
    let repo = pool_repo("main");
    let src = source(&repo.file_url(), "main", "envs");
    let inputs = Inputs::new();
    inputs.lock("free", "a", b"");
    let run = run_bin(
        "out",
        &[inputs.path()],
        &json!({"source": src, "params": {"release": "free"}}),
        &[],
    );
    run.assert_failure();
    assert!(run.stderr.contains("is not claimed"), "{}", run.stderr);
}

#[test]
fn update_replaces_content_adds_when_missing_and_waits_while_claimed() {
    let repo = pool_repo("main");
    repo.add_lock("envs", "held", true, b"old");
    let src = source(&repo.file_url(), "main", "envs");
    let inputs = Inputs::new();
    inputs.lock("u1", "a", b"new-a");
    inputs.lock("u2", "brand-new", b"n");
    inputs.lock("u3", "held", b"new-held");
    put(&src, json!({"update": "u1"}), &inputs, &[]);
    assert_eq!(repo.file_at("HEAD", "envs/unclaimed/a").unwrap(), b"new-a");
    assert_eq!(repo.log().pop().unwrap().subject, "updating: a");
    put(&src, json!({"update": "u2"}), &inputs, &[]);
    assert!(repo.unclaimed("envs").contains(&"brand-new".to_string()));
    let waiter = spawn_bin(
        "out",
        &[inputs.path()],
        &json!({"source": src, "params": {"update": "u3"}}),
        &[],
    );
    // Having seen the lock claimed, the update waits and changes nothing.
    let mut waiter = waiting(waiter, "lock held of pool envs is claimed");
    assert_still_running(
        &mut waiter,
        "update of a claimed lock returned instead of waiting",
    );
    assert_eq!(repo.file_at("HEAD", "envs/claimed/held").unwrap(), b"old");
    inputs.lock("rel", "held", b"");
    put(&src, json!({"release": "rel"}), &inputs, &[]);
    let Run { status, stderr, .. } = waiter.finish();
    assert!(status.success(), "{stderr}");
    assert_eq!(
        repo.file_at("HEAD", "envs/unclaimed/held").unwrap(),
        b"new-held"
    );
}

#[test]
fn check_params_wait_without_committing() {
    let repo = pool_repo("main");
    repo.add_lock("envs", "held", true, b"");
    let src = source(&repo.file_url(), "main", "envs");
    let inputs = Inputs::new();
    inputs.lock("free", "a", b"");
    inputs.lock("held", "held", b"");
    let tip = repo.tip();
    let out = put(&src, json!({"check": "free"}), &inputs, &[]);
    assert_eq!(
        (lock_name(&out), version(&out)),
        ("a".to_string(), tip.clone())
    );
    put(&src, json!({"check_unclaimed": "held"}), &inputs, &[]);
    assert_eq!(repo.tip(), tip, "check params never commit");
    // `check` of a claimed lock waits, saying so, and is satisfied by the
    // release: its version is the release commit, and it made none itself.
    let waiter = spawn_bin(
        "out",
        &[inputs.path()],
        &json!({"source": src, "params": {"check": "held"}}),
        &[],
    );
    let mut waiter = waiting(waiter, "lock held of pool envs is claimed");
    assert_still_running(
        &mut waiter,
        "check of a claimed lock returned instead of waiting",
    );
    assert_eq!(repo.tip(), tip, "a waiting check commits nothing");
    let released = put(&src, json!({"release": "held"}), &inputs, &[]);
    let out = waiter.finish();
    assert!(out.status.success(), "{}", out.stderr);
    let out: serde_json::Value = serde_json::from_str(&out.stdout).expect("one JSON document");
    assert_eq!(
        version(&out),
        version(&released),
        "satisfied by the release"
    );
    assert_eq!(repo.tip(), version(&released), "check made no commit");
}

#[test]
fn nested_pools_and_other_branches_work() {
    let repo = LockRepo::new("locks/v2");
    repo.add_lock("teams/payments/envs", "eu", false, b"eu");
    repo.add_lock("teams/payments", "decoy", false, b"not in the nested pool");
    let src = source(&repo.file_url(), "locks/v2", "teams/payments/envs");
    let out = put(&src, json!({"acquire": true}), &Inputs::new(), &[]);
    assert_eq!(lock_name(&out), "eu");
    assert_eq!(repo.claimed("teams/payments/envs"), ["eu"]);
    assert_eq!(repo.unclaimed("teams/payments"), ["decoy"]);
}

#[test]
fn dotfiles_are_never_acquired() {
    let repo = LockRepo::new("main");
    repo.add_empty_pool("envs");
    repo.commit_file("envs/unclaimed/.pending-triggers", b"", "trigger");
    let src = source(&repo.file_url(), "main", "envs");
    let child = spawn_bin(
        "out",
        &[Inputs::new().path()],
        &json!({"source": src, "params": {"acquire": true}}),
        &[],
    );
    // It has read the pool, dotfile and all, and found nothing to take.
    let mut child = waiting(child, "pool envs has no locks");
    assert_still_running(&mut child, "acquire must wait: no real locks");
    child.kill();
    assert!(repo.claimed("envs").is_empty());
}

#[test]
fn a_missing_pool_or_branch_fails_clearly() {
    let repo = pool_repo("main");
    let inputs = Inputs::new();
    let run = run_bin(
        "out",
        &[inputs.path()],
        &json!({"source": source(&repo.file_url(), "main", "nope"), "params": {"acquire": true}}),
        &[],
    );
    run.assert_failure();
    assert!(
        run.stderr
            .contains("pool \"nope\" does not exist on branch \"main\""),
        "{}",
        run.stderr
    );
    let run = run_bin(
        "out",
        &[inputs.path()],
        &json!({"source": source(&repo.file_url(), "gone", "envs"), "params": {"acquire": true}}),
        &[],
    );
    run.assert_failure();
    assert!(
        run.stderr.contains("branch \"gone\" does not exist"),
        "{}",
        run.stderr
    );
}
