//! The `pool` operator executable, driven together with the real `out`
//! against real repositories: a local one and `git daemon`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::support::{run_bin_raw, spawn_bin, GitDaemon, LockRepo, Run};
use crate::{lock_name, put, source, Inputs};

const POOL: &str = "envs";

const BUILD: [(&str, &str); 6] = [
    ("BUILD_ID", "4242"),
    ("BUILD_NAME", "7"),
    ("BUILD_JOB_NAME", "deploy"),
    ("BUILD_PIPELINE_NAME", "app"),
    ("BUILD_TEAM_NAME", "main"),
    ("ATC_EXTERNAL_URL", "https://ci.example.com"),
];

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
    let mut child = spawn_bin("out", &[inputs.path()], &request, &BUILD);
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let waiting = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the put logs that it waits");
    assert!(
        waiting.contains("pool envs is held by ops since")
            && waiting.contains(": platform upgrade (waited"),
        "{waiting}"
    );
    assert!(repo.claimed(POOL).is_empty());
    pool(&src, &["unhold", "--as", "ops"]).assert_success();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
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
    repo.move_lock(POOL, "old", true);
    // Setup, not an assertion: the claims must be seconds apart.
    std::thread::sleep(Duration::from_secs(3));
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
