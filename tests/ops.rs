//! The `pool` operator executable, driven together with the real `out`
//! against real repositories: a local one and `git daemon`.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::run::spawn_raw;
use crate::support::{run_bin_raw, spawn_bin, Bg, GitDaemon, LockRepo, Run};
use crate::{lock_name, put, source, version, Inputs};

const POOL: &str = "envs";

const BUILD: [(&str, &str); 6] = [
    ("BUILD_ID", "4242"),
    ("BUILD_NAME", "7"),
    ("BUILD_JOB_NAME", "deploy"),
    ("BUILD_PIPELINE_NAME", "app"),
    ("BUILD_TEAM_NAME", "main"),
    ("ATC_EXTERNAL_URL", "https://ci.example.com"),
];

/// The test hook that moves the resource's clock (`now_unix`) an hour on:
/// a claim made a moment ago is then an hour old, without waiting.
const AN_HOUR_LATER: (&str, &str) = (pool_resource::process::clock::NOW_OFFSET_ENV, "3600");

/// Longer than any wait here should take.
const DEADLINE: Duration = Duration::from_secs(30);

/// `child` in the background ([`Bg`]).
fn background(child: std::process::Child) -> Bg {
    Bg::new(child, "the waiting process", DEADLINE)
}

/// The first line `bg` logs.
fn first_line(bg: &mut Bg) -> String {
    bg.until_logged(1, "");
    bg.stderr().lines().next().unwrap_or_default().to_string()
}

/// Seconds since the Unix epoch, for back-dated commits.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}

/// Runs `pool` with `args`, the source in `POOL_SOURCE`.
fn pool(source: &Value, args: &[&str]) -> Run {
    let paths: Vec<&Path> = args.iter().map(Path::new).collect();
    let json = source.to_string();
    run_bin_raw(
        "pool",
        &paths,
        b"",
        &[("POOL_SOURCE", json.as_str()), ("USER", "tester")],
    )
}

fn initialised(locks: &[&str]) -> (LockRepo, Value) {
    let repo = LockRepo::new("main");
    let src = source(&repo.path().display().to_string(), "main", POOL);
    let mut args = vec!["--as", "ops", "init"];
    args.extend(locks);
    pool(&src, &args).assert_success();
    (repo, src)
}

#[test]
fn init_twice_makes_one_commit_and_creates_the_pool() {
    let (repo, src) = initialised(&["a"]);
    let before = repo.log().len();
    let again = pool(&src, &["init", "a"]);
    again.assert_success();
    assert_eq!(repo.log().len(), before, "{}", again.stderr);
    assert!(again.stderr.contains("no commit"), "{}", again.stderr);
    let last = repo.log().pop().unwrap();
    assert_eq!(last.subject, "adding unclaimed: a");
    assert!(
        last.body.contains("Pool-Resource-Operator: ops"),
        "{}",
        last.body
    );
    assert_eq!(repo.unclaimed(POOL), ["a"]);
    assert!(repo
        .file_at("main", &format!("{POOL}/claimed/.gitkeep"))
        .is_some());
}

#[test]
fn status_json_names_the_build_that_a_real_out_recorded_over_git_daemon() {
    let (repo, _) = initialised(&["a", "b"]);
    let daemon = GitDaemon::start(repo.root());
    let src = source(&daemon.url("locks.git"), "main", POOL);
    let out = put(
        &src,
        serde_json::json!({"claim": "a"}),
        &Inputs::new(),
        &BUILD,
    );
    assert_eq!(lock_name(&out), "a");
    let run = pool(&src, &["status", "--json"]);
    run.assert_success();
    let st = run.json();
    let locks = &st["pools"][0]["locks"];
    assert_eq!(st["pools"][0]["pool"], POOL);
    assert_eq!(locks[0]["name"], "a");
    assert_eq!(locks[0]["state"], "claimed");
    let by = &locks[0]["since"]["by"];
    assert_eq!(by["build"], "main/app/deploy #7");
    assert_eq!(by["build_id"], "4242");
    assert_eq!(
        by["build_url"],
        "https://ci.example.com/teams/main/pipelines/app/jobs/deploy/builds/7"
    );
    assert_eq!(locks[1]["state"], "unclaimed");
    assert_eq!(locks[1]["since"]["by"]["operator"], "ops");
}

/// With one lock, claimed by the tip commit, `status` stops its walk at the
/// tip, then compares the claim with its parent, which a depth-1 fetch has
/// not brought: the git backend must deepen for it (it once failed with
/// "version ... is not on branch"; the image test found it).
#[test]
fn status_over_git_daemon_of_a_lone_lock_claimed_by_the_tip_names_its_claim() {
    let (repo, _) = initialised(&["a"]);
    let daemon = GitDaemon::start(repo.root());
    let src = source(&daemon.url("locks.git"), "main", POOL);
    let out = put(
        &src,
        serde_json::json!({"acquire": true}),
        &Inputs::new(),
        &BUILD,
    );
    let st = pool(&src, &["status", "--json"]).assert_success().json();
    let lock = &st["pools"][0]["locks"][0];
    assert_eq!(
        (&lock["name"], &lock["state"]),
        (&serde_json::json!("a"), &serde_json::json!("claimed"))
    );
    assert_eq!(lock["since"]["commit"], serde_json::json!(version(&out)));
    assert_eq!(lock["since"]["by"]["build"], "main/app/deploy #7");
}

#[test]
fn status_and_history_show_every_lock_of_a_multi_lock_commit() {
    let (repo, src) = initialised(&["a", "b", "c"]);
    let inputs = Inputs::new();
    let out = put(
        &src,
        serde_json::json!({"claim": ["a", "b"]}),
        &inputs,
        &BUILD,
    );
    assert_eq!(lock_name(&out), "a, b");
    let st = pool(&src, &["status", "--json"]).assert_success().json();
    let locks = &st["pools"][0]["locks"];
    for (i, name) in ["a", "b"].iter().enumerate() {
        assert_eq!(locks[i]["name"], *name);
        assert_eq!(locks[i]["state"], "claimed");
        assert_eq!(locks[i]["since"]["commit"], out["version"]["ref"], "{name}");
        assert_eq!(locks[i]["since"]["by"]["build_id"], "4242");
    }
    assert_eq!(locks[2]["state"], "unclaimed");
    let held = inputs.path().join("held");
    std::fs::create_dir_all(&held).unwrap();
    std::fs::write(held.join("name"), "a\nb\n").unwrap();
    let released = put(
        &src,
        serde_json::json!({"release": "held"}),
        &inputs,
        &BUILD,
    );
    let h = pool(&src, &["history", "--json"]).assert_success().json();
    let intervals = h.as_array().expect("a list of intervals");
    for name in ["a", "b"] {
        let i = intervals
            .iter()
            .find(|i| i["lock"] == name)
            .unwrap_or_else(|| panic!("no interval of {name}: {h}"));
        assert_eq!(i["claimed_commit"], out["version"]["ref"]);
        assert_eq!(i["released_commit"], released["version"]["ref"]);
    }
    assert!(!intervals.iter().any(|i| i["lock"] == "c"), "{h}");
    assert!(repo.claimed(POOL).is_empty());
}

#[test]
fn a_hold_makes_a_waiting_acquire_wait_and_an_unhold_lets_it_through() {
    let (repo, src) = initialised(&["a"]);
    pool(
        &src,
        &["hold", "--as", "ops", "--reason", "platform upgrade"],
    )
    .assert_success();
    let inputs = Inputs::new();
    let request = serde_json::json!({"source": src, "params": {"acquire": true}});
    let mut put = background(spawn_bin("out", &[inputs.path()], &request, &BUILD));
    let waiting = first_line(&mut put);
    assert!(
        waiting.contains("pool envs is held by ops since")
            && waiting.contains(": platform upgrade (waited"),
        "{waiting}"
    );
    assert!(repo.claimed(POOL).is_empty());
    pool(&src, &["unhold", "--as", "ops"]).assert_success();
    put.finish().assert_success();
    assert_eq!(repo.claimed(POOL), ["a"]);
    // The hold never was a version: check sees only pool commits.
    let subjects: Vec<String> = repo.log().into_iter().map(|c| c.subject).collect();
    assert!(subjects.contains(&"holding pool: envs".to_string()));
}

#[test]
fn a_forced_release_is_refused_without_force_and_leaves_the_pool_untouched() {
    let (repo, src) = initialised(&["a"]);
    put(
        &src,
        serde_json::json!({"acquire": true}),
        &Inputs::new(),
        &BUILD,
    );
    let tip = repo.tip();
    let refused = pool(&src, &["release", "a", "--as", "ops"]);
    refused.assert_failure();
    assert!(
        refused.stderr.contains("claimed by main/app/deploy #7")
            && refused.stderr.contains("--force --reason"),
        "{}",
        refused.stderr
    );
    assert_eq!(repo.tip(), tip);
    pool(&src, &["release", "a", "--force", "--as", "ops"]).assert_failure();
    assert_eq!(repo.tip(), tip);
    pool(
        &src,
        &[
            "release",
            "a",
            "--force",
            "--reason",
            "stuck build",
            "--as",
            "ops",
        ],
    )
    .assert_success();
    let last = repo.log().pop().unwrap();
    assert_eq!(last.subject, "unclaiming: a");
    assert!(
        last.body.contains("Pool-Resource-Reason: stuck build"),
        "{}",
        last.body
    );
}

#[test]
fn a_reap_releases_only_the_old_claims() {
    let (repo, src) = initialised(&["old", "new"]);
    // A claim committed an hour ago, and one made now.
    repo.move_lock_at(POOL, "old", true, unix_now() - 3600, "");
    put(
        &src,
        serde_json::json!({"claim": "new"}),
        &Inputs::new(),
        &BUILD,
    );
    let dry = pool(&src, &["reap", "--older-than", "2s", "--dry-run"]);
    dry.assert_success();
    assert!(dry.stderr.contains("would release old"), "{}", dry.stderr);
    assert_eq!(repo.claimed(POOL), ["new", "old"]);
    pool(&src, &["reap", "--older-than", "2s", "--as", "reaper"]).assert_success();
    assert_eq!(repo.claimed(POOL), ["new"]);
    let last = repo.log().pop().unwrap();
    assert_eq!(last.subject, "unclaiming: old");
    assert!(
        last.body.contains("Pool-Resource-Reason: reaped"),
        "{}",
        last.body
    );
}

#[test]
fn usage_errors_exit_2_and_nothing_is_committed() {
    let (repo, src) = initialised(&["a"]);
    let tip = repo.tip();
    for args in [
        &["frobnicate"][..],
        &["status", "--older-than", "1h"],
        &["claim", "a"],
        &["hold"],
        &["reap"],
        &["status", "--bogus"],
        &[],
    ] {
        let run = pool(&src, args);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains("usage:"), "{}", run.stderr);
    }
    let no_pool = source(&repo.path().display().to_string(), "main", "");
    let run = pool(&no_pool, &["hold", "--reason", "x"]);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert_eq!(repo.tip(), tip);
}

#[test]
fn secrets_in_the_source_are_never_printed() {
    let (repo, _) = initialised(&["a"]);
    let secret = "hunter2-very-secret";
    let mut src = source(
        &format!("https://user:{secret}@127.0.0.1:9/locks.git"),
        "main",
        POOL,
    );
    src["private_key"] = Value::String(format!("-----BEGIN KEY-----\n{secret}\n"));
    let run = pool(&src, &["status"]);
    run.assert_failure();
    assert!(
        !run.stderr.contains(secret) && !run.stdout.contains(secret),
        "{}",
        run.stderr
    );
    // And from a YAML file, with a status that works.
    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("source.yml");
    std::fs::write(
        &file,
        format!(
            "uri: {}\nbranch: main\npool: {POOL}\npassword: {secret}\n",
            repo.path().display()
        ),
    )
    .unwrap();
    let file = file.display().to_string();
    let run = run_bin_raw(
        "pool",
        &[Path::new("--source"), Path::new(&file), Path::new("status")],
        b"",
        &[],
    );
    run.assert_success();
    assert!(run.stdout.contains("a "), "{}", run.stdout);
    assert!(!run.stderr.contains(secret) && !run.stdout.contains(secret));
}

const OTHER_BUILD: [(&str, &str); 6] = [
    ("BUILD_ID", "5151"),
    ("BUILD_NAME", "8"),
    ("BUILD_JOB_NAME", "deploy"),
    ("BUILD_PIPELINE_NAME", "app"),
    ("BUILD_TEAM_NAME", "main"),
    ("ATC_EXTERNAL_URL", "https://ci.example.com"),
];

/// Runs `in` of `version` into `inputs/<sub>`, as the implicit get after a
/// put does, and returns its JSON.
fn get_into(src: &Value, version: &str, inputs: &Inputs, sub: &str) -> Value {
    let dest = inputs.path().join(sub);
    crate::support::run_bin(
        "in",
        &[dest.as_path()],
        &serde_json::json!({"source": src, "version": {"ref": version}}),
        &BUILD,
    )
    .assert_success()
    .json()
}

/// A build claims `a` and gets it; `release` then names its directory.
fn claimed_and_fetched(src: &Value, inputs: &Inputs) -> String {
    let out = put(src, serde_json::json!({"claim": "a"}), inputs, &BUILD);
    get_into(src, &crate::version(&out), inputs, "held");
    let claim = std::fs::read_to_string(inputs.path().join("held/claim")).unwrap();
    assert_eq!(
        claim.trim(),
        crate::version(&out),
        "in wrote the claim commit"
    );
    crate::version(&out)
}

/// The first build's release, which must refuse at once naming pool, lock
/// and claim, and commit nothing.
fn assert_fenced_release_refuses(repo: &LockRepo, src: &Value, inputs: &Inputs, claim: &str) {
    let tip = repo.tip();
    let run = crate::support::run_bin(
        "out",
        &[inputs.path()],
        &serde_json::json!({"source": src, "params": {"release": "held"}}),
        &BUILD,
    );
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("refusing to release lock \"a\" of pool \"envs\"")
            && run.stderr.contains("released and claimed again since")
            && run.stderr.contains("main/app/deploy #8")
            && run.stderr.contains(claim)
            && run.stderr.contains("nothing was committed"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("waiting"), "{}", run.stderr);
    assert_eq!(repo.tip(), tip, "a refused release commits nothing");
    assert_eq!(repo.claimed(POOL), ["a"]);
}

#[test]
fn a_fenced_release_refuses_after_a_reap_and_a_new_claim_and_leaves_the_repo_untouched() {
    let (repo, src) = initialised(&["a"]);
    let inputs = Inputs::new();
    let claim = claimed_and_fetched(&src, &inputs);
    pool(&src, &["reap", "--older-than", "0s", "--as", "reaper"]).assert_success();
    put(
        &src,
        serde_json::json!({"claim": "a"}),
        &Inputs::new(),
        &OTHER_BUILD,
    );
    assert_fenced_release_refuses(&repo, &src, &inputs, &claim);
}

#[test]
fn a_fenced_release_refuses_after_a_forced_release_and_a_new_claim() {
    let (repo, src) = initialised(&["a"]);
    let inputs = Inputs::new();
    let claim = claimed_and_fetched(&src, &inputs);
    pool(
        &src,
        &[
            "release", "a", "--force", "--reason", "stuck", "--as", "ops",
        ],
    )
    .assert_success();
    put(
        &src,
        serde_json::json!({"claim": "a"}),
        &Inputs::new(),
        &OTHER_BUILD,
    );
    assert_fenced_release_refuses(&repo, &src, &inputs, &claim);
}

#[test]
fn a_fenced_release_of_the_claim_still_held_releases_and_a_hand_made_directory_behaves_as_before() {
    let (repo, src) = initialised(&["a", "b"]);
    let inputs = Inputs::new();
    claimed_and_fetched(&src, &inputs);
    put(
        &src,
        serde_json::json!({"release": "held"}),
        &inputs,
        &BUILD,
    );
    assert!(repo.claimed(POOL).is_empty());
    put(
        &src,
        serde_json::json!({"claim": "b"}),
        &Inputs::new(),
        &BUILD,
    );
    inputs.lock("by-hand", "b", b"");
    put(
        &src,
        serde_json::json!({"release": "by-hand"}),
        &inputs,
        &BUILD,
    );
    assert!(repo.claimed(POOL).is_empty());
}

#[test]
fn a_waiting_put_names_the_locks_holder_and_how_long_it_has_held_it() {
    let (repo, src) = initialised(&["a"]);
    put(
        &src,
        serde_json::json!({"claim": "a"}),
        &Inputs::new(),
        &BUILD,
    );
    let inputs = Inputs::new();
    let request = serde_json::json!({"source": src, "params": {"claim": "a"}});
    let mut put = background(spawn_bin("out", &[inputs.path()], &request, &OTHER_BUILD));
    let waiting = first_line(&mut put);
    assert!(
        waiting.starts_with("waiting: lock a of pool envs is claimed by main/app/deploy #7 for ")
            && waiting.contains("(waited"),
        "{waiting}"
    );
    pool(
        &src,
        &["release", "a", "--force", "--reason", "next", "--as", "ops"],
    )
    .assert_success();
    put.finish().assert_success();
    assert_eq!(repo.claimed(POOL), ["a"]);
}

#[test]
fn expire_after_takes_over_an_old_claim_over_git_daemon_and_check_sees_it() {
    let (repo, _) = initialised(&["a"]);
    let daemon = GitDaemon::start(repo.root());
    let mut src = source(&daemon.url("locks.git"), "main", POOL);
    let inputs = Inputs::new();
    let old = claimed_and_fetched(&src, &inputs);
    src["expire_after"] = "1s".into();
    // The next put runs an hour later by its clock, so the claim just made
    // is older than expire_after.
    let mut env = OTHER_BUILD.to_vec();
    env.push(AN_HOUR_LATER);
    let run = crate::support::run_bin(
        "out",
        &[Inputs::new().path()],
        &serde_json::json!({"source": src, "params": {"acquire": true}}),
        &env,
    );
    let out = run.assert_success().json();
    assert!(
        run.stderr
            .contains("lock a of pool envs was claimed by main/app/deploy #7 for")
            && run
                .stderr
                .contains("longer than expire_after 1.0s: taking it over"),
        "{}",
        run.stderr
    );
    assert_eq!(lock_name(&out), "a");
    let log = repo.log();
    let (unclaim, claim) = (&log[log.len() - 2], &log[log.len() - 1]);
    assert_eq!(unclaim.subject, "unclaiming: a");
    assert_eq!(claim.subject, "claiming: a");
    for body in [&unclaim.body, &claim.body] {
        assert!(
            body.contains(&format!("Pool-Resource-Replaces: {old}")),
            "{body}"
        );
    }
    assert!(
        unclaim
            .body
            .contains("Pool-Resource-Reason: expired: claimed by main/app/deploy #7"),
        "{}",
        unclaim.body
    );
    assert_eq!(claim.sha, crate::version(&out));
    let meta = &out["metadata"];
    assert_eq!(
        meta[2],
        serde_json::json!({"name": "claimed_by", "value": "main/app/deploy #8"})
    );
    assert!(meta
        .as_array()
        .unwrap()
        .contains(&serde_json::json!({"name": "replaced_claim", "value": old})));
    // check lists the takeover as two versions after the old claim.
    let check = crate::support::run_bin(
        "check",
        &[],
        &serde_json::json!({"source": src, "version": {"ref": old}}),
        &[],
    )
    .assert_success()
    .json();
    assert_eq!(
        check,
        serde_json::json!([{"ref": old}, {"ref": unclaim.sha}, {"ref": claim.sha}])
    );
    assert_fenced_release_refuses(&repo, &src, &inputs, &old);
}

#[test]
fn a_claim_younger_than_expire_after_is_waited_for() {
    let (repo, mut src) = initialised(&["a"]);
    put(
        &src,
        serde_json::json!({"claim": "a"}),
        &Inputs::new(),
        &BUILD,
    );
    src["expire_after"] = "1h".into();
    let request = serde_json::json!({"source": src, "params": {"acquire": true}});
    let inputs = Inputs::new();
    let mut put = background(spawn_bin("out", &[inputs.path()], &request, &OTHER_BUILD));
    let first = first_line(&mut put);
    assert!(
        first
            .contains("all 1 locks of pool envs are claimed: a (claimed by main/app/deploy #7 for"),
        "{first}"
    );
    put.kill();
    // No takeover: the last change to the pool is still the claim (the
    // waiter's place in line is a commit outside the pool).
    let last = repo
        .log()
        .into_iter()
        .rev()
        .find(|c| !c.subject.contains("in line") && !c.subject.starts_with("leaving the line"))
        .unwrap();
    assert_eq!(last.subject, "claiming: a");
}

#[test]
fn history_claim_wait_add_and_remove_work_through_pool() {
    let (repo, src) = initialised(&["a"]);
    let meta = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(meta.path(), b"b-meta\n").unwrap();
    let meta_path = meta.path().display().to_string();
    pool(&src, &["add", "b", "--metadata", &meta_path, "--as", "ops"]).assert_success();
    assert_eq!(repo.unclaimed(POOL), ["a", "b"]);
    assert_eq!(
        repo.file_at("main", &format!("{POOL}/unclaimed/b")),
        Some(b"b-meta\n".to_vec())
    );
    pool(&src, &["add", "c", "--claimed", "--as", "ops"]).assert_success();
    assert_eq!(repo.claimed(POOL), ["c"]);
    let refused = pool(&src, &["remove", "c", "--as", "ops"]);
    refused.assert_failure();
    assert!(
        refused.stderr.contains("needs --force"),
        "{}",
        refused.stderr
    );
    pool(&src, &["remove", "c", "--force", "--as", "ops"]).assert_success();
    pool(&src, &["remove", "b", "--as", "ops"]).assert_success();
    assert_eq!(repo.unclaimed(POOL), ["a"]);
    assert!(repo.claimed(POOL).is_empty());

    // claim --wait waits for a build's claim, then takes the lock.
    put(
        &src,
        serde_json::json!({"claim": "a"}),
        &Inputs::new(),
        &BUILD,
    );
    let json = src.to_string();
    let args = [
        "claim",
        "a",
        "--wait",
        "--reason",
        "maintenance",
        "--as",
        "ops",
    ]
    .map(Path::new);
    let mut waiter = background(spawn_raw("pool", &args, b"", &[("POOL_SOURCE", &json)]).0);
    let line = first_line(&mut waiter);
    assert!(line.contains("lock a of pool envs is claimed"), "{line}");
    pool(
        &src,
        &[
            "release", "a", "--force", "--reason", "handover", "--as", "ops",
        ],
    )
    .assert_success();
    waiter.finish().assert_success();
    let last = repo.log().pop().unwrap();
    assert_eq!(last.subject, "claiming: a");
    assert!(
        last.body.contains("Pool-Resource-Reason: maintenance"),
        "{}",
        last.body
    );

    // history: newest first, the operator's claim still open, the build's closed.
    let run = pool(&src, &["history", "a", "--json"]);
    run.assert_success();
    let h = run.json();
    let intervals = h.as_array().expect("history --json prints a list");
    assert_eq!(intervals[0]["claimed_by"]["operator"], "ops");
    assert!(intervals[0]["released_commit"].is_null());
    assert_eq!(intervals[1]["claimed_by"]["build"], "main/app/deploy #7");
    assert_eq!(intervals[1]["released_by"]["reason"], "handover");
}

#[test]
fn init_and_status_work_over_the_codecommit_api_from_an_empty_repository() {
    use crate::support::{git_ok, AwsEnv, CodeCommitServer, Imds, ImdsOptions, Keyring};
    let dir = tempfile::TempDir::new().unwrap();
    git_ok(
        dir.path(),
        &["init", "-q", "--bare", "-b", "main", "locks.git"],
    );
    let bare = dir.path().join("locks.git");
    let imds = Imds::start(ImdsOptions::default(), Keyring::new());
    let api = CodeCommitServer::start(&bare, "locks", "eu-west-2", imds.keyring());
    let src = serde_json::json!({
        "uri": "https://git-codecommit.eu-west-2.amazonaws.com/v1/repos/locks",
        "branch": "main",
        "pool": POOL,
        "backend": "codecommit-api",
        "retry_delay": "50ms",
    });
    let env = AwsEnv::new()
        .with_imds(&imds)
        .set("AWS_ENDPOINT_URL_CODECOMMIT", &api.endpoint())
        .set("POOL_SOURCE", &src.to_string())
        .set("USER", "tester");
    let pool_cc = |args: &[&str]| {
        let paths: Vec<&Path> = args.iter().map(Path::new).collect();
        env.run("pool", &paths, &Value::Null)
    };
    let count = || {
        git_ok(&bare, &["rev-list", "--count", "main"])
            .trim()
            .parse::<usize>()
            .unwrap()
    };
    pool_cc(&["--as", "ops", "init", "a", "b"]).assert_success();
    let made = count();
    assert_eq!(
        made, 2,
        "one commit per lock, the first with the pool's .gitkeeps"
    );
    let again = pool_cc(&["init", "a", "b"]);
    again.assert_success();
    assert_eq!(count(), made, "{}", again.stderr);
    let ls = git_ok(&bare, &["ls-tree", "-r", "--name-only", "main"]);
    for path in [
        "envs/claimed/.gitkeep",
        "envs/unclaimed/.gitkeep",
        "envs/unclaimed/a",
        "envs/unclaimed/b",
    ] {
        assert!(ls.lines().any(|l| l == path), "{path} in\n{ls}");
    }
    let out = env.run(
        "out",
        &[Inputs::new().path()],
        &serde_json::json!({"source": src, "params": {"claim": "a"}}),
    );
    out.assert_success();
    let run = pool_cc(&["status", "--json"]);
    run.assert_success();
    let st = run.json();
    let locks = &st["pools"][0]["locks"];
    assert_eq!(locks[0]["name"], "a");
    assert_eq!(locks[0]["state"], "claimed");
    assert_eq!(locks[1]["name"], "b");
    assert_eq!(locks[1]["since"]["by"]["operator"], "ops");
}

/// The line file of pool `envs`.
const LINE: &str = ".pool-resource/line/envs.json";

/// A ticket as the put loop writes it: joined `ago` seconds ago as the
/// `seq`-th, renewed `renewed_ago` seconds ago with a lease of `lease`.
fn ticket(
    id: &str,
    build: &str,
    build_id: &str,
    wants: Value,
    priority: i64,
    (ago, seq): (i64, u64),
    (renewed_ago, lease): (i64, u64),
) -> Value {
    let now = pool_resource::process::clock::now_unix();
    serde_json::json!({
        "id": id, "build": build, "build_id": build_id,
        "url": format!("https://ci.example.com/builds/{build_id}"),
        "wants": wants, "priority": priority,
        "arrived": now - ago, "seq": seq,
        "renewed": now - renewed_ago, "lease": lease,
    })
}

/// Pool `envs` (locks a, b) whose line, written directly in one commit,
/// holds four waiters: three live (a later one with a higher priority)
/// and one whose lease lapsed long ago.
fn with_line() -> (LockRepo, Value) {
    let (repo, src) = initialised(&["a", "b"]);
    let tickets = serde_json::json!({"tickets": [
        ticket("t-first", "main/app/deploy #41", "4101", serde_json::json!({"acquire": 1}), 0, (600, 1), (5, 3600)),
        ticket("t-second", "main/app/test #9", "909", serde_json::json!({"claim": ["b"]}), 0, (300, 2), (5, 3600)),
        ticket("t-lapsed", "main/app/gone #2", "202", serde_json::json!({"acquire": 1}), 0, (5000, 0), (4000, 60)),
        ticket("t-vip", "main/app/hotfix #3", "303", serde_json::json!({"acquire": 2}), 10, (60, 3), (5, 3600)),
    ]});
    let bytes = serde_json::to_vec_pretty(&tickets).unwrap();
    repo.commit_file(LINE, &bytes, "joining the line: envs");
    (repo, src)
}

fn line_ids(repo: &LockRepo) -> Vec<String> {
    let Some(bytes) = repo.file_at("main", LINE) else {
        return Vec::new();
    };
    let file: Value = serde_json::from_slice(&bytes).unwrap();
    let mut ids: Vec<String> = file["tickets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn status_lists_each_pools_waiters_in_order_with_priorities_and_marks_expired_ones() {
    let (_repo, src) = with_line();
    let st = pool(&src, &["status", "--json"]).assert_success().json();
    let p = &st["pools"][0];
    // The keys there were keep their meaning.
    assert_eq!(p["pool"], POOL);
    assert_eq!(p["locks"][0]["name"], "a");
    assert_eq!(p["locks"][0]["state"], "unclaimed");
    assert!(p["hold"].is_null());
    let line = p["line"].as_array().expect("a line");
    let order: Vec<(&str, &Value, &Value)> = line
        .iter()
        .map(|w| (w["id"].as_str().unwrap(), &w["position"], &w["expired"]))
        .collect();
    let (one, two, three, none) = (
        serde_json::json!(1),
        serde_json::json!(2),
        serde_json::json!(3),
        Value::Null,
    );
    let (t, f) = (serde_json::json!(true), serde_json::json!(false));
    assert_eq!(
        order,
        [
            ("t-vip", &one, &f),
            ("t-first", &two, &f),
            ("t-second", &three, &f),
            ("t-lapsed", &none, &t),
        ],
        "{st:#}"
    );
    let vip = &line[0];
    assert_eq!(vip["build"], "main/app/hotfix #3");
    assert_eq!(vip["build_id"], "303");
    assert_eq!(vip["url"], "https://ci.example.com/builds/303");
    assert_eq!(vip["priority"], 10);
    assert_eq!(vip["wants"], serde_json::json!({"acquire": 2}));
    assert_eq!(line[2]["wants"], serde_json::json!({"claim": ["b"]}));
    let waited = line[1]["waiting_seconds"].as_i64().unwrap();
    assert!((600..700).contains(&waited), "{waited}");
    assert!(line[1]["arrived_utc"].as_str().unwrap().ends_with('Z'));

    let text = pool(&src, &["status"]).assert_success().stdout.clone();
    let rows: Vec<&str> = text.lines().collect();
    let at = |needle: &str| {
        rows.iter()
            .position(|r| r.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in\n{text}"))
    };
    assert!(at("b ") < at("line: 3 waiting"), "under the locks: {text}");
    assert_eq!(at("line: 3 waiting") + 1, at("    1. "), "{text}");
    assert!(
        rows[at("    1. ")]
            .contains("main/app/hotfix #3  acquire: 2, exclusive, priority 10, waiting 1m"),
        "{text}"
    );
    assert!(
        rows[at("    2. ")]
            .contains("main/app/deploy #41  acquire, exclusive, priority 0, waiting 10m"),
        "{text}"
    );
    assert!(
        rows[at("    3. ")].contains("main/app/test #9  claim: b, exclusive, priority 0"),
        "{text}"
    );
    assert!(rows[at("t-lapsed")].contains("expired"), "{text}");
    assert!(at("    3. ") < at("t-lapsed"), "{text}");
}

#[test]
fn dequeue_by_ticket_build_and_build_id_removes_exactly_that_ticket_and_records_who_and_why() {
    let (repo, _) = with_line();
    let daemon = GitDaemon::start(repo.root());
    let src = source(&daemon.url("locks.git"), "main", POOL);
    let before = repo.log().len();
    let run = pool(
        &src,
        &[
            "--as",
            "ops",
            "dequeue",
            "t-first",
            "--reason",
            "its build was aborted",
        ],
    );
    run.assert_success();
    assert!(
        run.stderr
            .contains("removed ticket t-first (main/app/deploy #41, acquire)"),
        "{}",
        run.stderr
    );
    let log = repo.log();
    assert_eq!(log.len(), before + 1, "one commit");
    let last = log.last().unwrap();
    assert_eq!(
        last.subject,
        "dequeuing main/app/deploy #41 from the line: envs"
    );
    assert!(
        last.body.contains("Pool-Resource-Operator: ops"),
        "{}",
        last.body
    );
    assert!(
        last.body
            .contains("Pool-Resource-Reason: its build was aborted"),
        "{}",
        last.body
    );
    assert_eq!(
        last.changed,
        [('M', LINE.to_string())],
        "the line file alone"
    );
    // The expired ticket goes with it, as with every write of the line.
    assert_eq!(line_ids(&repo), ["t-second", "t-vip"]);

    pool(
        &src,
        &[
            "--as",
            "ops",
            "dequeue",
            "main/app/test #9",
            "--reason",
            "stuck",
        ],
    )
    .assert_success();
    assert_eq!(line_ids(&repo), ["t-vip"]);
    pool(
        &src,
        &["--as", "ops", "dequeue", "303", "--reason", "stuck"],
    )
    .assert_success();
    assert_eq!(repo.file_at("main", LINE), None, "no ticket left, no file");
    assert_eq!(
        repo.log().last().unwrap().changed,
        [('D', LINE.to_string())]
    );
    assert_eq!(repo.unclaimed(POOL), ["a", "b"], "the pool is untouched");
    let st = pool(&src, &["status", "--json"]).assert_success().json();
    assert_eq!(st["pools"][0]["line"], serde_json::json!([]));
}

#[test]
fn dequeue_of_an_unknown_or_ambiguous_waiter_fails_and_commits_nothing() {
    let (repo, src) = with_line();
    let tip = repo.tip();
    let run = pool(&src, &["dequeue", "main/app/nobody #1", "--reason", "x"]);
    run.assert_failure();
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("no waiter \"main/app/nobody #1\" in the line of pool envs"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("ticket t-vip (main/app/hotfix #3, acquire: 2, position 1)"),
        "{}",
        run.stderr
    );
    // Two puts of one build waiting: the build name alone is ambiguous.
    let mut file: Value = serde_json::from_slice(&repo.file_at("main", LINE).unwrap()).unwrap();
    let twin = ticket(
        "t-twin",
        "main/app/test #9",
        "909",
        serde_json::json!({"claim": ["a"]}),
        0,
        (200, 4),
        (5, 3600),
    );
    file["tickets"].as_array_mut().unwrap().push(twin);
    repo.commit_file(
        LINE,
        &serde_json::to_vec(&file).unwrap(),
        "joining the line: envs",
    );
    let tip = {
        assert_ne!(repo.tip(), tip);
        repo.tip()
    };
    let run = pool(&src, &["dequeue", "main/app/test #9", "--reason", "x"]);
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("\"main/app/test #9\" matches 2 waiters"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("ticket t-second") && run.stderr.contains("ticket t-twin"),
        "{}",
        run.stderr
    );
    let run = pool(&src, &["dequeue", "t-first"]);
    assert_eq!(
        run.status.code(),
        Some(2),
        "--reason is required: {}",
        run.stderr
    );
    assert_eq!(repo.tip(), tip, "nothing committed");
}
