//! Shared holds (`shared: true`): readers hold a lock together, a writer
//! alone, and a writer waiting stops new readers so that neither side
//! starves. Every test drives the real `out`, `in` and `check` binaries and
//! looks at the repository they leave; waits are on log lines and files,
//! never fixed sleeps.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{
    run_bin, AwsEnv, Bg, CodeCommitServer, GitDaemon, Imds, ImdsOptions, Keyring, LockRepo, Run,
};
use crate::{put, source, version, Inputs};

const POOL: &str = "envs";
const SHARES: &str = ".pool-resource/shares/envs.json";
const DEADLINE: Duration = Duration::from_secs(40);

/// The environment of build `name` of job `job`.
fn build(job: &str, name: &str) -> Vec<(String, String)> {
    [
        ("BUILD_ID", format!("{}{name}", job.len())),
        ("BUILD_NAME", name.to_string()),
        ("BUILD_JOB_NAME", job.to_string()),
        ("BUILD_PIPELINE_NAME", "app".into()),
        ("BUILD_TEAM_NAME", "main".into()),
        ("POOL_RESOURCE_BACKOFF_BASE_MS", "10".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn env_of(b: &[(String, String)]) -> Vec<(&str, &str)> {
    b.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn pool_of(locks: &[&str]) -> LockRepo {
    let repo = LockRepo::new("main");
    for l in locks {
        repo.add_lock(POOL, l, false, format!("{l}-meta\n").as_bytes());
    }
    repo
}

/// A put that ends: its response.
fn put_as(src: &Value, params: Value, inputs: &Inputs, job: &str, name: &str) -> Value {
    put(src, params, inputs, &env_of(&build(job, name)))
}

/// `in` of `response`'s version into `inputs/<dir>`, as the implicit get does.
fn get_into(src: &Value, response: &Value, inputs: &Inputs, dir: &str, job: &str, name: &str) {
    let dest = inputs.path().join(dir);
    run_bin(
        "in",
        &[dest.as_path()],
        &json!({"source": src, "version": {"ref": version(response)}}),
        &env_of(&build(job, name)),
    )
    .assert_success();
}

/// `out` with `params` as build `name` of `job`, however it ends.
fn out_as(src: &Value, params: Value, inputs: &Inputs, job: &str, name: &str) -> Run {
    run_bin(
        "out",
        &[inputs.path()],
        &json!({"source": src, "params": params}),
        &env_of(&build(job, name)),
    )
}

/// A shared `claim: lock` by build `name` of `job`, and the get of its
/// version into `inputs/<dir>`: a reader holding its share.
fn share(src: &Value, inputs: &Inputs, lock: &str, job: &str, name: &str, dir: &str) -> Value {
    crate::take_share(src, inputs, lock, &env_of(&build(job, name)), dir).0
}

fn release_dir(src: &Value, inputs: &Inputs, dir: &str, job: &str, name: &str) -> Value {
    put_as(src, json!({"release": dir}), inputs, job, name)
}

/// The holder ids of `lock` in the shares file at the tip.
fn holders(repo: &LockRepo, lock: &str) -> Vec<String> {
    let Some(bytes) = repo.file_at("HEAD", SHARES) else {
        return Vec::new();
    };
    let v: Value = serde_json::from_slice(&bytes).expect("the shares file is JSON");
    v["locks"][lock]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|h| h["build"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn subjects_since(repo: &LockRepo, n: usize) -> Vec<String> {
    let log = repo.log();
    log[n..].iter().map(|c| c.subject.clone()).collect()
}

fn start(src: &Value, params: Value, inputs: &Inputs, job: &str, name: &str) -> Bg {
    let b = build(job, name);
    crate::start_out(
        src,
        params,
        inputs,
        &env_of(&b),
        format!("{job} #{name}"),
        DEADLINE,
    )
}

fn finished(bg: Bg) -> Value {
    let name = bg.name().to_string();
    let (ok, stdout, stderr) = bg.finish().parts();
    assert!(ok, "{name} failed:\n{stderr}");
    serde_json::from_str(&stdout).expect("one JSON document")
}

fn check(src: &Value, from: &str) -> Vec<String> {
    let out = run_bin(
        "check",
        &[],
        &json!({"source": src, "version": {"ref": from}}),
        &[],
    )
    .assert_success()
    .json();
    out.as_array()
        .expect("a list")
        .iter()
        .map(|v| v["ref"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Two readers share `env`, then give it back one by one: the pool
/// directory changes only with the first share and the last release.
fn two_readers_share_and_the_last_release_frees_the_lock(src: &Value, repo: &LockRepo) {
    let inputs = Inputs::new();
    let before = repo.log().len();
    let first = put_as(
        src,
        json!({"acquire": true, "shared": true}),
        &inputs,
        "smoke",
        "1",
    );
    get_into(src, &first, &inputs, "r1", "smoke", "1");
    let second = put_as(
        src,
        json!({"claim": "env", "shared": true}),
        &inputs,
        "probe",
        "2",
    );
    get_into(src, &second, &inputs, "r2", "probe", "2");
    assert_eq!(
        repo.claimed(POOL),
        ["env"],
        "held shared is claimed/ for the Go resource"
    );
    assert_eq!(
        holders(repo, "env"),
        ["main/app/smoke #1", "main/app/probe #2"]
    );
    let share_file = |dir: &str| {
        std::fs::read_to_string(inputs.path().join(dir).join("share"))
            .expect("in writes the share file")
            .trim()
            .to_string()
    };
    assert_ne!(share_file("r1"), share_file("r2"), "one holder id each");
    assert!(
        !inputs.path().join("r2/claim").exists(),
        "a share is fenced by its id"
    );

    release_dir(src, &inputs, "r1", "smoke", "1");
    assert_eq!(
        repo.claimed(POOL),
        ["env"],
        "the other reader still holds it"
    );
    assert_eq!(holders(repo, "env"), ["main/app/probe #2"]);
    release_dir(src, &inputs, "r2", "probe", "2");
    assert_eq!(repo.unclaimed(POOL), ["env"]);
    assert!(
        repo.file_at("HEAD", SHARES).is_none(),
        "no holders, no file"
    );
    assert_eq!(
        subjects_since(repo, before),
        [
            "claiming: env",
            "sharing: env",
            "unsharing: env",
            "unclaiming: env"
        ]
    );
    for c in &repo.log()[before..] {
        assert!(
            c.body.contains("Pool-Resource-Share: "),
            "every share commit names its holder id:\n{}",
            c.body
        );
    }
}

#[test]
fn two_readers_share_a_lock_and_the_last_release_frees_it() {
    let repo = pool_of(&["env"]);
    let src = source(&repo.file_url(), "main", POOL);
    two_readers_share_and_the_last_release_frees_the_lock(&src, &repo);
}

#[test]
fn over_git_daemon_two_readers_share_a_lock_and_the_last_release_frees_it() {
    let repo = pool_of(&["env"]);
    let daemon = GitDaemon::start(repo.root());
    let src = source(&daemon.url("locks.git"), "main", POOL);
    two_readers_share_and_the_last_release_frees_the_lock(&src, &repo);
}

#[test]
fn over_the_codecommit_api_two_readers_share_a_lock_and_the_last_release_frees_it() {
    let repo = pool_of(&["env"]);
    let imds = Imds::start(ImdsOptions::default(), Keyring::new());
    let api = CodeCommitServer::start(repo.path(), "locks", "eu-west-2", imds.keyring());
    let src = json!({
        "uri": "https://git-codecommit.eu-west-2.amazonaws.com/v1/repos/locks",
        "branch": "main", "pool": POOL, "retry_delay": "100ms", "backend": "codecommit-api"
    });
    let inputs = Inputs::new();
    let before = repo.log().len();
    let mut dirs = Vec::new();
    for (name, params) in [
        ("1", json!({"acquire": true, "shared": true})),
        ("2", json!({"acquire": true, "shared": true})),
    ] {
        let env = AwsEnv::new()
            .with_imds(&imds)
            .set("AWS_ENDPOINT_URL_CODECOMMIT", &api.endpoint())
            .set("BUILD_NAME", name)
            .set("BUILD_JOB_NAME", "smoke")
            .set("BUILD_PIPELINE_NAME", "app")
            .set("BUILD_TEAM_NAME", "main");
        let request = json!({"source": src, "params": params});
        let out = env
            .run("out", &[inputs.path()], &request)
            .assert_success()
            .json();
        let dest = inputs.path().join(format!("r{name}"));
        let get = json!({"source": src, "version": {"ref": version(&out)}});
        env.run("in", &[dest.as_path()], &get).assert_success();
        dirs.push((env, format!("r{name}")));
    }
    assert_eq!(holders(&repo, "env").len(), 2);
    for (env, dir) in &dirs {
        let request = json!({"source": src, "params": {"release": dir}});
        env.run("out", &[inputs.path()], &request).assert_success();
    }
    assert_eq!(repo.unclaimed(POOL), ["env"]);
    assert_eq!(
        subjects_since(&repo, before),
        [
            "claiming: env",
            "sharing: env",
            "unsharing: env",
            "unclaiming: env"
        ]
    );
}

#[test]
fn check_emits_the_first_share_and_the_last_release_but_no_reader_in_between() {
    let repo = pool_of(&["env"]);
    let src = source(&repo.file_url(), "main", POOL);
    let start_at = repo.tip();
    let inputs = Inputs::new();
    let mut dirs = Vec::new();
    for n in ["1", "2", "3"] {
        share(&src, &inputs, "env", "smoke", n, &format!("r{n}"));
        dirs.push(format!("r{n}"));
    }
    for (n, d) in ["1", "2", "3"].iter().zip(&dirs) {
        release_dir(&src, &inputs, d, "smoke", n);
    }
    let log = repo.log();
    let versions = check(&src, &start_at);
    let subjects: Vec<&str> = versions
        .iter()
        .filter(|v| **v != start_at)
        .map(|v| {
            log.iter()
                .find(|c| &c.sha == v)
                .map(|c| c.subject.as_str())
                .unwrap_or("?")
        })
        .collect();
    assert_eq!(subjects, ["claiming: env", "unclaiming: env"]);
}

#[test]
fn a_share_released_twice_is_refused_the_second_time_and_frees_no_other_readers_share() {
    let repo = pool_of(&["env"]);
    let src = source(&repo.file_url(), "main", POOL);
    let inputs = Inputs::new();
    share(&src, &inputs, "env", "smoke", "1", "r1");
    share(&src, &inputs, "env", "smoke", "2", "r2");
    release_dir(&src, &inputs, "r1", "smoke", "1");
    let tip = repo.tip();
    let again = out_as(&src, json!({"release": "r1"}), &inputs, "smoke", "1");
    again.assert_failure();
    assert!(
        again.stderr.contains("given back already"),
        "{}",
        again.stderr
    );
    assert_eq!(repo.tip(), tip, "a refused release commits nothing");
    assert_eq!(holders(&repo, "env"), ["main/app/smoke #2"]);
}

#[test]
fn an_exclusive_release_of_a_lock_held_shared_is_refused_naming_its_holders() {
    let repo = pool_of(&["env"]);
    let src = source(&repo.file_url(), "main", POOL);
    let inputs = Inputs::new();
    put_as(
        &src,
        json!({"claim": "env", "shared": true}),
        &inputs,
        "smoke",
        "1",
    );
    inputs.lock("byhand", "env", b"");
    let tip = repo.tip();
    let run = out_as(&src, json!({"release": "byhand"}), &inputs, "deploy", "9");
    run.assert_failure();
    assert!(
        run.stderr.contains("held shared by 1 build") && run.stderr.contains("main/app/smoke #1"),
        "{}",
        run.stderr
    );
    assert_eq!(repo.tip(), tip);
}

#[test]
fn a_writer_behind_readers_waits_and_new_readers_wait_behind_the_writer() {
    let repo = pool_of(&["env"]);
    let daemon = GitDaemon::start(repo.root());
    let mut src = source(&daemon.url("locks.git"), "main", POOL);
    src["retry_delay"] = json!("200ms");
    let inputs = Inputs::new();
    let mut readers = Vec::new();
    for n in ["1", "2", "3"] {
        share(&src, &inputs, "env", "smoke", n, &format!("r{n}"));
        readers.push((n, format!("r{n}")));
    }
    let mut writer = start(&src, json!({"claim": "env"}), &inputs, "deploy", "7");
    writer.until_logged(1, "waiting: ");
    let mut late = start(
        &src,
        json!({"claim": "env", "shared": true}),
        &inputs,
        "smoke",
        "4",
    );
    late.until_logged(1, "waits to hold it alone");
    // The readers finish; the writer, first in line, takes the lock.
    for (n, dir) in &readers {
        assert!(writer.running() && late.running());
        release_dir(&src, &inputs, dir, "smoke", n);
    }
    let w = finished(writer);
    assert!(late.running(), "the late reader waits behind the writer");
    assert!(holders(&repo, "env").is_empty());
    get_into(&src, &w, &inputs, "w", "deploy", "7");
    assert!(inputs.path().join("w/claim").exists());
    assert!(!inputs.path().join("w/share").exists());
    release_dir(&src, &inputs, "w", "deploy", "7");
    finished(late);
    assert_eq!(holders(&repo, "env"), ["main/app/smoke #4"]);
    let order: Vec<String> = repo
        .log()
        .iter()
        .filter(|c| c.subject.ends_with(": env") && !c.subject.starts_with("adding"))
        .map(|c| {
            let who = c
                .body
                .lines()
                .find_map(|l| l.strip_prefix("Pool-Resource-Build: "))
                .unwrap_or("?");
            format!("{} {who}", c.subject)
        })
        .collect();
    assert_eq!(
        order,
        [
            "claiming: env main/app/smoke #1",
            "sharing: env main/app/smoke #2",
            "sharing: env main/app/smoke #3",
            "unsharing: env main/app/smoke #1",
            "unsharing: env main/app/smoke #2",
            "unclaiming: env main/app/smoke #3",
            "claiming: env main/app/deploy #7",
            "unclaiming: env main/app/deploy #7",
            "claiming: env main/app/smoke #4",
        ]
    );
}

#[test]
fn a_reader_takes_a_free_lock_beside_a_writers_while_a_writer_holds_the_other() {
    let repo = pool_of(&["a", "b"]);
    let src = source(&repo.file_url(), "main", POOL);
    let inputs = Inputs::new();
    let w = put_as(&src, json!({"acquire": true}), &inputs, "deploy", "1");
    let writers_lock = crate::lock_name(&w);
    let r = put_as(
        &src,
        json!({"acquire": true, "shared": true}),
        &inputs,
        "smoke",
        "2",
    );
    assert_ne!(crate::lock_name(&r), writers_lock);
    let r2 = put_as(
        &src,
        json!({"acquire": true, "shared": true}),
        &inputs,
        "smoke",
        "3",
    );
    assert_eq!(
        crate::lock_name(&r2),
        crate::lock_name(&r),
        "a shared acquire joins the lock readers hold rather than spreading"
    );
}

#[test]
fn shared_applies_to_one_lock_and_is_a_boolean_naming_the_field_otherwise() {
    let repo = pool_of(&["a", "b"]);
    let src = source(&repo.file_url(), "main", POOL);
    let inputs = Inputs::new();
    let tip = repo.tip();
    for (params, needle) in [
        (json!({"acquire": 2, "shared": true}), "params.shared"),
        (
            json!({"claim": ["a", "b"], "shared": true}),
            "params.shared",
        ),
        (json!({"acquire": true, "shared": "yes"}), "params.shared"),
        (
            json!({"acquire": true, "shared": true, "idempotent": true}),
            "params.idempotent",
        ),
    ] {
        let run = out_as(&src, params.clone(), &inputs, "smoke", "1");
        run.assert_failure();
        assert!(run.stderr.contains(needle), "{params}: {}", run.stderr);
    }
    assert_eq!(repo.tip(), tip);
}

#[test]
fn with_expire_after_a_waiting_writer_gives_back_shares_older_than_that_and_takes_the_lock() {
    let repo = pool_of(&["env"]);
    let mut src = source(&repo.file_url(), "main", POOL);
    src["expire_after"] = json!("2s");
    src["retry_delay"] = json!("200ms");
    let inputs = Inputs::new();
    put_as(
        &src,
        json!({"claim": "env", "shared": true}),
        &inputs,
        "smoke",
        "1",
    );
    put_as(
        &src,
        json!({"claim": "env", "shared": true}),
        &inputs,
        "smoke",
        "2",
    );
    // A reader never expires shares: it joins (no writer is waiting).
    put_as(
        &src,
        json!({"claim": "env", "shared": true}),
        &inputs,
        "smoke",
        "3",
    );
    let writer = start(&src, json!({"claim": "env"}), &inputs, "deploy", "7");
    let out = finished(writer);
    assert_eq!(crate::lock_name(&out), "env");
    assert!(holders(&repo, "env").is_empty());
    let expiries: Vec<String> = repo
        .log()
        .iter()
        .filter(|c| {
            c.body
                .contains("Pool-Resource-Reason: expired: a share held by")
        })
        .map(|c| c.subject.clone())
        .collect();
    assert_eq!(
        expiries,
        ["unsharing: env", "unsharing: env", "unclaiming: env"],
        "one commit per expired holder, the last frees the lock"
    );
}

#[test]
fn the_get_after_a_readers_release_names_that_lock_and_writes_no_fence() {
    let repo = pool_of(&["env", "db"]);
    let src = source(&repo.file_url(), "main", POOL);
    let inputs = Inputs::new();
    share(&src, &inputs, "env", "smoke", "1", "r1");
    put_as(
        &src,
        json!({"claim": "env", "shared": true}),
        &inputs,
        "smoke",
        "2",
    );
    // Another build claims db alone: the last change of the pool directory.
    put_as(&src, json!({"claim": "db"}), &inputs, "deploy", "9");
    let released = release_dir(&src, &inputs, "r1", "smoke", "1");
    assert_eq!(crate::lock_name(&released), "env");
    // The implicit get after the release, at its version.
    get_into(&src, &released, &inputs, "after", "smoke", "1");
    let after = inputs.path().join("after");
    assert_eq!(
        std::fs::read_to_string(after.join("name")).unwrap().trim(),
        "env",
        "the version names the lock whose share it gave back"
    );
    assert!(
        !after.join("claim").exists(),
        "no fence: the build holds nothing"
    );
    assert!(!after.join("share").exists());
    // A release of that directory again is refused, changing nothing.
    let tip = repo.tip();
    out_as(&src, json!({"release": "after"}), &inputs, "smoke", "1").assert_failure();
    assert_eq!(repo.tip(), tip);
    assert_eq!(repo.claimed(POOL), ["db", "env"]);
}

#[test]
fn the_get_after_a_readers_release_works_when_the_last_reader_left_first() {
    let repo = pool_of(&["env"]);
    let src = source(&repo.file_url(), "main", POOL);
    let inputs = Inputs::new();
    for n in ["1", "2"] {
        share(&src, &inputs, "env", "smoke", n, &format!("r{n}"));
    }
    let first = release_dir(&src, &inputs, "r1", "smoke", "1");
    // The other reader leaves, freeing the lock, before the first
    // release's implicit get runs: both smoke tests ended together.
    release_dir(&src, &inputs, "r2", "smoke", "2");
    assert_eq!(repo.unclaimed(POOL), ["env"]);
    get_into(&src, &first, &inputs, "after", "smoke", "1");
    let after = inputs.path().join("after");
    assert_eq!(
        std::fs::read_to_string(after.join("name")).unwrap().trim(),
        "env"
    );
    assert!(!after.join("claim").exists() && !after.join("share").exists());
}

#[test]
fn holders_left_by_a_tool_that_freed_a_shared_lock_are_dropped_by_the_next_claim() {
    let repo = pool_of(&["env"]);
    let src = source(&repo.file_url(), "main", POOL);
    let inputs = Inputs::new();
    put_as(
        &src,
        json!({"claim": "env", "shared": true}),
        &inputs,
        "smoke",
        "1",
    );
    // The Go resource releases it, knowing nothing of the shares file.
    repo.move_lock(POOL, "env", false);
    assert_eq!(holders(&repo, "env"), ["main/app/smoke #1"], "left behind");
    let w = put_as(&src, json!({"claim": "env"}), &inputs, "deploy", "7");
    assert!(
        holders(&repo, "env").is_empty(),
        "the claim alone drops them"
    );
    get_into(&src, &w, &inputs, "w", "deploy", "7");
    // A reader now waits (the lock is held alone) instead of joining.
    let run = out_as(
        &src,
        json!({"claim": "env", "shared": true, "wait_timeout": "0s"}),
        &inputs,
        "smoke",
        "2",
    );
    run.assert_failure();
    assert!(run.stderr.contains("is claimed"), "{}", run.stderr);
    release_dir(&src, &inputs, "w", "deploy", "7");
    assert_eq!(repo.unclaimed(POOL), ["env"]);
}

#[test]
fn an_idempotent_release_of_a_share_run_again_answers_with_its_first_release() {
    let repo = pool_of(&["env"]);
    let src = source(&repo.file_url(), "main", POOL);
    let inputs = Inputs::new();
    for n in ["1", "2"] {
        share(&src, &inputs, "env", "smoke", n, &format!("r{n}"));
    }
    let params = json!({"release": "r1", "idempotent": true});
    let first = put_as(&src, params.clone(), &inputs, "smoke", "1");
    let tip = repo.tip();
    let again = put_as(&src, params, &inputs, "smoke", "1");
    assert_eq!(version(&again), version(&first));
    assert_eq!(repo.tip(), tip, "nothing committed the second time");
    assert_eq!(holders(&repo, "env"), ["main/app/smoke #2"]);
}

#[test]
fn an_idempotent_exclusive_put_never_takes_its_builds_share_for_its_own_claim() {
    let repo = pool_of(&["env", "other"]);
    let src = source(&repo.file_url(), "main", POOL);
    let inputs = Inputs::new();
    put_as(
        &src,
        json!({"claim": "env", "shared": true}),
        &inputs,
        "deploy",
        "5",
    );
    let alone = put_as(
        &src,
        json!({"acquire": true, "idempotent": true}),
        &inputs,
        "deploy",
        "5",
    );
    assert_eq!(
        crate::lock_name(&alone),
        "other",
        "a share is not a claim alone"
    );
}

#[test]
fn a_share_of_a_pool_whose_shares_file_is_unreadable_fails_naming_it_and_changes_nothing() {
    // A free lock too: a broken guard would take it, not wait for ever.
    let repo = pool_of(&["env", "spare"]);
    let src = source(&repo.file_url(), "main", POOL);
    let inputs = Inputs::new();
    put_as(
        &src,
        json!({"claim": "env", "shared": true}),
        &inputs,
        "smoke",
        "1",
    );
    repo.commit_file(SHARES, b"{broken", "a broken hand edit");
    let tip = repo.tip();
    let run = out_as(
        &src,
        json!({"acquire": true, "shared": true, "wait_timeout": "0s"}),
        &inputs,
        "smoke",
        "2",
    );
    run.assert_failure();
    assert!(
        run.stderr.contains("shares file") && run.stderr.contains("--all"),
        "{}",
        run.stderr
    );
    assert_eq!(repo.tip(), tip);
}
