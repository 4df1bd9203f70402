//! The operator on locks held shared (`shared: true`): `pool release
//! --force` of one holder or of all, and `pool reap` judging each holder
//! by its own time and build; the real `out` and `pool` against a local
//! repository and a Concourse API stand-in.

use std::path::Path;

use serde_json::{json, Value};

use crate::support::concourse::Build;
use crate::support::{run_bin_raw, Concourse, LockRepo, Run};
use crate::{put, source, Inputs};

const POOL: &str = "envs";
const SHARES: &str = ".pool-resource/shares/envs.json";
const TOKEN: &str = "tok-5a4b3c2d1e0f99887766";

/// Runs `pool` with `args`, the source in `POOL_SOURCE`, and `env`.
fn pool(src: &Value, args: &[&str], env: &[(&str, &str)]) -> Run {
    let paths: Vec<&Path> = args.iter().map(Path::new).collect();
    let json = src.to_string();
    let mut all = vec![
        ("POOL_SOURCE", json.as_str()),
        ("USER", "tester"),
        ("POOL_RESOURCE_BACKOFF_BASE_MS", "1"),
    ];
    all.extend_from_slice(env);
    run_bin_raw("pool", &paths, b"", &all)
}

fn initialised(locks: &[&str]) -> (LockRepo, Value) {
    let repo = LockRepo::new("main");
    let src = source(&repo.path().display().to_string(), "main", POOL);
    let mut args = vec!["--as", "ops", "init"];
    args.extend(locks);
    pool(&src, &args, &[]).assert_success();
    (repo, src)
}

/// `put` of `params` by build `id` of main/app/deploy on the Concourse at
/// `url`, with `extra` in the environment.
fn put_by(src: &Value, params: Value, id: i64, url: &str, extra: &[(&str, &str)]) {
    let id = id.to_string();
    let mut env = vec![
        ("BUILD_ID", id.as_str()),
        ("BUILD_NAME", id.as_str()),
        ("BUILD_JOB_NAME", "deploy"),
        ("BUILD_PIPELINE_NAME", "app"),
        ("BUILD_TEAM_NAME", "main"),
        ("ATC_EXTERNAL_URL", url),
    ];
    env.extend_from_slice(extra);
    put(src, params, &Inputs::new(), &env);
}

/// Build `id` takes a share of `lock`.
fn share_by(src: &Value, lock: &str, id: i64, url: &str, extra: &[(&str, &str)]) {
    put_by(src, json!({"claim": lock, "shared": true}), id, url, extra);
}

/// The holders of `lock` in the shares file: (id, build), in order.
fn holders(repo: &LockRepo, lock: &str) -> Vec<(String, String)> {
    let Some(bytes) = repo.file_at("main", SHARES) else {
        return Vec::new();
    };
    let file: Value = serde_json::from_slice(&bytes).expect("the shares file is JSON");
    file["locks"][lock]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            (
                h["id"].as_str().unwrap_or_default().to_string(),
                h["build"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The value of trailer `key` in a commit message (the first).
fn trailer(body: &str, key: &str) -> Option<String> {
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .map(String::from)
}

/// Lock `env` held shared by builds 1 and 2; their holder ids.
fn two_readers() -> (LockRepo, Value, String, String) {
    let (repo, src) = initialised(&["env"]);
    share_by(&src, "env", 1, "https://ci.example.com", &[]);
    share_by(&src, "env", 2, "https://ci.example.com", &[]);
    let h = holders(&repo, "env");
    assert_eq!(h.len(), 2, "{h:?}");
    (repo, src, h[0].0.clone(), h[1].0.clone())
}

#[test]
fn an_operator_releases_one_reader_of_a_shared_lock_and_the_others_keep_it() {
    let (repo, src, first, second) = two_readers();
    let run = pool(
        &src,
        &[
            "release",
            "env",
            "--force",
            "--holder",
            &first,
            "--reason",
            "stuck smoke test",
            "--as",
            "ops",
        ],
        &[],
    );
    run.assert_success();
    let last = repo.log().pop().unwrap();
    assert_eq!(last.subject, "unsharing: env", "{}", run.stderr);
    assert_eq!(
        trailer(&last.body, "Pool-Resource-Operator").as_deref(),
        Some("ops")
    );
    assert_eq!(
        trailer(&last.body, "Pool-Resource-Reason").as_deref(),
        Some("stuck smoke test")
    );
    assert_eq!(
        trailer(&last.body, "Pool-Resource-Share"),
        Some(first.clone())
    );
    assert!(
        last.changed.iter().all(|(_, p)| p == SHARES),
        "only the shares file changes: {:?}",
        last.changed
    );
    assert_eq!(repo.claimed(POOL), ["env"]);
    let left: Vec<String> = holders(&repo, "env").into_iter().map(|h| h.0).collect();
    assert_eq!(left, std::slice::from_ref(&second));

    // The last holder's: the lock is free and the shares file gone.
    pool(
        &src,
        &[
            "release", "env", "--force", "--holder", &second, "--reason", "done", "--as", "ops",
        ],
        &[],
    )
    .assert_success();
    let last = repo.log().pop().unwrap();
    assert_eq!(last.subject, "unclaiming: env");
    assert_eq!(trailer(&last.body, "Pool-Resource-Share"), Some(second));
    assert_eq!(repo.unclaimed(POOL), ["env"]);
    assert_eq!(repo.file_at("main", SHARES), None);
}

#[test]
fn a_forced_release_of_a_shared_lock_without_holder_or_all_is_a_usage_error_naming_the_holders() {
    let (repo, src, first, second) = two_readers();
    let tip = repo.tip();
    let run = pool(&src, &["release", "env", "--force", "--reason", "x"], &[]);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    for needle in [
        "main/app/deploy #1",
        "main/app/deploy #2",
        first.as_str(),
        second.as_str(),
        "--holder ID",
        "--all",
    ] {
        assert!(
            run.stderr.contains(needle),
            "{needle:?} in:\n{}",
            run.stderr
        );
    }
    // Without --force: refused, saying what it takes.
    let run = pool(&src, &["release", "env"], &[]);
    run.assert_failure();
    assert!(
        run.stderr.contains("held shared by 2 builds") && run.stderr.contains("--force --reason"),
        "{}",
        run.stderr
    );
    assert_eq!(repo.tip(), tip);
}

#[test]
fn a_holder_the_shared_lock_does_not_have_is_refused_and_nothing_is_committed() {
    let (repo, src, first, _) = two_readers();
    let tip = repo.tip();
    let run = pool(
        &src,
        &[
            "release",
            "env",
            "--force",
            "--holder",
            "nobody-1234",
            "--reason",
            "x",
        ],
        &[],
    );
    run.assert_failure();
    assert!(
        run.stderr.contains("none of them nobody-1234") && run.stderr.contains(&first),
        "{}",
        run.stderr
    );
    assert_eq!(repo.tip(), tip);
    assert_eq!(holders(&repo, "env").len(), 2);
}

#[test]
fn release_all_frees_a_shared_lock_and_clears_its_holders_in_one_commit() {
    let (repo, src, first, second) = two_readers();
    let before = repo.log().len();
    let run = pool(
        &src,
        &[
            "release",
            "env",
            "--force",
            "--all",
            "--reason",
            "environment rebuilt",
            "--as",
            "ops",
        ],
        &[],
    );
    run.assert_success();
    let log = repo.log();
    assert_eq!(log.len(), before + 1, "{}", run.stderr);
    let last = log.last().unwrap();
    assert_eq!(last.subject, "unclaiming: env");
    let shares: Vec<&str> = last
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("Pool-Resource-Share: "))
        .collect();
    assert_eq!(shares, [first.as_str(), second.as_str()]);
    assert_eq!(repo.unclaimed(POOL), ["env"]);
    assert_eq!(repo.file_at("main", SHARES), None);
}

#[test]
fn holder_is_refused_on_a_lock_held_by_one_build_and_all_is_a_plain_forced_release() {
    let (repo, src) = initialised(&["env"]);
    put_by(
        &src,
        json!({"claim": "env"}),
        9,
        "https://ci.example.com",
        &[],
    );
    let tip = repo.tip();
    let run = pool(
        &src,
        &[
            "release", "env", "--force", "--holder", "abc", "--reason", "x",
        ],
        &[],
    );
    run.assert_failure();
    assert!(run.stderr.contains("not shared"), "{}", run.stderr);
    assert_eq!(repo.tip(), tip);
    // --holder and --all take --force.
    let run = pool(&src, &["release", "env", "--all"], &[]);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    pool(
        &src,
        &["release", "env", "--force", "--all", "--reason", "x"],
        &[],
    )
    .assert_success();
    let last = repo.log().pop().unwrap();
    assert_eq!(last.subject, "unclaiming: env");
    assert_eq!(trailer(&last.body, "Pool-Resource-Share"), None);
    assert_eq!(repo.unclaimed(POOL), ["env"]);
}

#[test]
fn release_all_repairs_an_unreadable_shares_file() {
    let (repo, src) = initialised(&["env"]);
    share_by(&src, "env", 1, "https://ci.example.com", &[]);
    repo.commit_file(SHARES, b"{not json", "a broken shares file");
    let tip = repo.tip();
    let run = pool(
        &src,
        &[
            "release", "env", "--force", "--holder", "whoever", "--reason", "x",
        ],
        &[],
    );
    run.assert_failure();
    assert!(
        run.stderr.contains("cannot be read") && run.stderr.contains("--force --all"),
        "{}",
        run.stderr
    );
    assert_eq!(repo.tip(), tip);
    pool(
        &src,
        &["release", "env", "--force", "--all", "--reason", "repair"],
        &[],
    )
    .assert_success();
    assert_eq!(repo.log().pop().unwrap().subject, "unclaiming: env");
    assert_eq!(repo.file_at("main", SHARES), None);
    assert_eq!(repo.unclaimed(POOL), ["env"]);
}

#[test]
fn removing_a_shared_lock_takes_its_holders_out_of_the_shares_file() {
    let (repo, src, _, _) = two_readers();
    pool(&src, &["remove", "env", "--force"], &[]).assert_success();
    assert_eq!(repo.log().pop().unwrap().subject, "removing: env");
    assert_eq!(repo.file_at("main", SHARES), None);
}

#[test]
fn reap_older_than_gives_back_only_the_readers_that_held_longer_one_commit_each() {
    let (repo, src) = initialised(&["env"]);
    let two_hours_ago = (pool_resource::process::clock::NOW_OFFSET_ENV, "-7200");
    share_by(&src, "env", 1, "https://ci.example.com", &[two_hours_ago]);
    share_by(&src, "env", 2, "https://ci.example.com", &[]);
    let h = holders(&repo, "env");
    let dry = pool(&src, &["reap", "--older-than", "1h", "--dry-run"], &[]);
    dry.assert_success();
    assert!(
        dry.stderr
            .contains(&format!("would give back share {} of env", h[0].0)),
        "{}",
        dry.stderr
    );
    let run = pool(&src, &["reap", "--older-than", "1h", "--as", "reaper"], &[]);
    run.assert_success();
    let last = repo.log().pop().unwrap();
    assert_eq!(last.subject, "unsharing: env", "{}", run.stderr);
    assert_eq!(
        trailer(&last.body, "Pool-Resource-Share"),
        Some(h[0].0.clone())
    );
    let reason = trailer(&last.body, "Pool-Resource-Reason").unwrap_or_default();
    assert!(
        reason.starts_with("reaped: main/app/deploy #1's share held for 2h"),
        "{reason}"
    );
    assert_eq!(holders(&repo, "env"), [h[1].clone()]);
    assert_eq!(repo.claimed(POOL), ["env"]);

    // The last reader reaped frees the lock.
    pool(&src, &["reap", "--older-than", "0s", "--as", "reaper"], &[]).assert_success();
    assert_eq!(repo.log().pop().unwrap().subject, "unclaiming: env");
    assert_eq!(repo.unclaimed(POOL), ["env"]);
    assert_eq!(repo.file_at("main", SHARES), None);
}

#[test]
fn reap_dead_judges_each_reader_of_a_shared_lock_by_its_own_build() {
    let ci = Concourse::start("7.14.3", &[]);
    ci.add_token(TOKEN);
    let now = pool_resource::process::clock::now_unix();
    ci.put_build(Build::new(101, "101", "aborted", Some(now - 3600)));
    ci.put_build(Build::new(102, "102", "started", None));
    let (repo, src) = initialised(&["env"]);
    share_by(&src, "env", 101, &ci.url(), &[]);
    share_by(&src, "env", 102, &ci.url(), &[]);
    let h = holders(&repo, "env");
    let run = pool(
        &src,
        &["reap", "--dead", "--as", "reaper"],
        &[("CONCOURSE_TOKEN", TOKEN)],
    );
    run.assert_success();
    let last = repo.log().pop().unwrap();
    assert_eq!(last.subject, "unsharing: env", "{}", run.stderr);
    assert_eq!(
        trailer(&last.body, "Pool-Resource-Share"),
        Some(h[0].0.clone())
    );
    let reason = trailer(&last.body, "Pool-Resource-Reason").unwrap_or_default();
    assert!(reason.contains("(build 101) aborted at "), "{reason}");
    assert!(
        run.stderr
            .contains(&format!("kept share {} of env: ", h[1].0))
            && run.stderr.contains("still running"),
        "{}",
        run.stderr
    );
    assert_eq!(holders(&repo, "env"), [h[1].clone()]);
    let mut asked = ci.build_requests();
    asked.sort();
    assert_eq!(asked, ["/api/v1/builds/101", "/api/v1/builds/102"]);
}

#[test]
fn two_reapers_racing_give_back_each_reader_once_and_the_last_frees_the_lock() {
    let (repo, src) = initialised(&["env"]);
    for id in 1..=4 {
        share_by(&src, "env", id, "https://ci.example.com", &[]);
    }
    let before = repo.log().len();
    let json = src.to_string();
    let env = [
        ("POOL_SOURCE", json.as_str()),
        ("USER", "tester"),
        ("POOL_RESOURCE_BACKOFF_BASE_MS", "1"),
    ];
    let args: Vec<&Path> = ["reap", "--older-than", "0s", "--as", "reaper"]
        .iter()
        .map(Path::new)
        .collect();
    let reapers: Vec<_> = (0..2)
        .map(|_| crate::support::run::spawn_raw("pool", &args, b"", &env).0)
        .collect();
    for (n, child) in reapers.into_iter().enumerate() {
        crate::support::run::finish_within(
            child,
            &format!("reaper {n}"),
            std::time::Duration::from_secs(60),
        )
        .assert_success();
    }
    let made: Vec<String> = repo.log()[before..]
        .iter()
        .map(|c| c.subject.clone())
        .collect();
    assert_eq!(
        made,
        [
            "unsharing: env",
            "unsharing: env",
            "unsharing: env",
            "unclaiming: env"
        ],
        "one commit per reader, whichever reaper made it"
    );
    assert_eq!(repo.unclaimed(POOL), ["env"]);
    assert_eq!(repo.file_at("main", SHARES), None);
}
