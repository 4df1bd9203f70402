//! `pool reap --dead` and the holders' build status, the real `pool` and
//! `out` against real repositories and a Concourse API stand-in
//! ([`Concourse`]) that answers as the ATC does.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::concourse::{refusing_url, Build, Hung};
use crate::support::{run_bin_raw, skip, Concourse, LockRepo, Run, TestCa};
use crate::{put, source, Inputs};

const POOL: &str = "envs";
const TOKEN: &str = "tok-9f8e7d6c5b4a39281706";
const PASSWORD: &str = "pa55-w0rd-very-secret";

fn now() -> i64 {
    pool_resource::process::clock::now_unix()
}

/// Runs `pool` with `args`, the source in `POOL_SOURCE`, and `env`;
/// back-off is shortened to a millisecond.
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

/// `put` of `params` by build `id` (named `name`) of main/app/deploy on
/// the Concourse at `url`, as Concourse runs `out`.
fn put_by(src: &Value, params: Value, id: i64, name: &str, url: &str) -> Value {
    let id = id.to_string();
    put(
        src,
        params,
        &Inputs::new(),
        &[
            ("BUILD_ID", id.as_str()),
            ("BUILD_NAME", name),
            ("BUILD_JOB_NAME", "deploy"),
            ("BUILD_PIPELINE_NAME", "app"),
            ("BUILD_TEAM_NAME", "main"),
            ("ATC_EXTERNAL_URL", url),
        ],
    )
}

/// Lock `lock` claimed by build `id`.
fn claim_by(src: &Value, lock: &str, id: i64, url: &str) {
    put_by(src, json!({"claim": lock}), id, &id.to_string(), url);
}

/// A Concourse with build 101 aborted an hour ago and 102 running; lock
/// `a` claimed by 101, `b` by 102, `c` free.
fn aborted_and_running() -> (LockRepo, Value, Concourse) {
    let ci = Concourse::start("7.14.3", &[]);
    ci.add_token(TOKEN);
    ci.put_build(Build::new(101, "101", "aborted", Some(now() - 3600)));
    ci.put_build(Build::new(102, "102", "started", None));
    let (repo, src) = initialised(&["a", "b", "c"]);
    claim_by(&src, "a", 101, &ci.url());
    claim_by(&src, "b", 102, &ci.url());
    (repo, src, ci)
}

fn assert_no_secret(run: &Run, secrets: &[String]) {
    for s in secrets {
        assert!(
            !run.stdout.contains(s.as_str()) && !run.stderr.contains(s.as_str()),
            "secret {s:?} printed:\n{}\n{}",
            run.stdout,
            run.stderr
        );
    }
}

#[test]
fn an_aborted_builds_lock_is_reaped_and_a_running_builds_is_not() {
    let (repo, src, ci) = aborted_and_running();
    let run = pool(
        &src,
        &["reap", "--dead", "--as", "reaper"],
        &[("CONCOURSE_TOKEN", TOKEN)],
    );
    run.assert_success();
    assert_eq!(repo.claimed(POOL), ["b"], "{}", run.stderr);
    let last = repo.log().pop().unwrap();
    assert_eq!(last.subject, "unclaiming: a");
    assert!(
        last.body.contains("Pool-Resource-Operator: reaper"),
        "{}",
        last.body
    );
    let reason = reason_of(&last.body);
    assert!(
        reason.contains("main/app/deploy #101 (build 101) aborted at ") && reason.contains("(1h0m"),
        "{reason}"
    );
    assert!(
        run.stderr
            .contains("kept b: main/app/deploy #102 (build 102) is still running (started)"),
        "{}",
        run.stderr
    );
    // By id, with the token checked once and sent as fly sends it.
    let mut asked = ci.build_requests();
    asked.sort();
    assert_eq!(asked, ["/api/v1/builds/101", "/api/v1/builds/102"]);
    let seen = ci.seen();
    assert_eq!(seen[0].target, "/api/v1/user");
    assert!(seen
        .iter()
        .all(|s| s.authorization.as_deref() == Some(&format!("Bearer {TOKEN}")[..])));
    assert_no_secret(&run, &[TOKEN.into()]);
}

#[test]
fn a_dry_run_says_what_it_would_release_and_commits_nothing() {
    let (repo, src, _ci) = aborted_and_running();
    let tip = repo.tip();
    let run = pool(
        &src,
        &["reap", "--dead", "--dry-run"],
        &[("CONCOURSE_TOKEN", TOKEN)],
    );
    run.assert_success();
    assert!(
        run.stderr.contains("would release a: ") && run.stderr.contains("aborted"),
        "{}",
        run.stderr
    );
    assert_eq!(repo.tip(), tip);
    assert_eq!(repo.claimed(POOL), ["a", "b"]);
}

#[test]
fn a_build_that_ended_within_the_grace_keeps_its_lock_until_the_grace_is_over() {
    let ci = Concourse::start("7.14.3", &[]);
    ci.add_token(TOKEN);
    ci.put_build(Build::new(7, "7", "errored", Some(now() - 120)));
    let (repo, src) = initialised(&["a"]);
    claim_by(&src, "a", 7, &ci.url());
    let env = [("CONCOURSE_TOKEN", TOKEN)];
    let run = pool(&src, &["reap", "--dead"], &env);
    run.assert_success();
    assert!(
        run.stderr.contains("within the grace of 5m0s"),
        "{}",
        run.stderr
    );
    assert_eq!(repo.claimed(POOL), ["a"]);
    let run = pool(&src, &["reap", "--dead", "--grace", "10m"], &env);
    run.assert_success();
    assert_eq!(repo.claimed(POOL), ["a"]);
    pool(&src, &["reap", "--dead", "--grace", "1m"], &env).assert_success();
    assert!(repo.claimed(POOL).is_empty());
}

#[test]
fn a_succeeded_build_keeps_its_lock_unless_finished_is_given() {
    let ci = Concourse::start("7.14.3", &[]);
    ci.add_token(TOKEN);
    ci.put_build(Build::new(8, "8", "succeeded", Some(now() - 3600)));
    let (repo, src) = initialised(&["a"]);
    claim_by(&src, "a", 8, &ci.url());
    let env = [("CONCOURSE_TOKEN", TOKEN)];
    let run = pool(&src, &["reap", "--dead"], &env);
    run.assert_success();
    assert!(run.stderr.contains("--finished"), "{}", run.stderr);
    assert_eq!(repo.claimed(POOL), ["a"]);
    pool(&src, &["reap", "--dead", "--finished"], &env).assert_success();
    assert!(repo.claimed(POOL).is_empty());
    let last = repo.log().pop().unwrap();
    assert!(last.body.contains("succeeded at "), "{}", last.body);
}

#[test]
fn a_go_resource_claim_is_found_through_its_build_url_even_of_an_instanced_pipeline() {
    let ci = Concourse::start("7.14.3", &[]);
    ci.add_token(TOKEN);
    ci.put_build(Build::new(31, "7", "failed", Some(now() - 3600)));
    ci.put_build(Build {
        instance_vars: Some(json!({"branch": "feature/x", "n": 1})),
        ..Build::new(32, "3", "aborted", Some(now() - 3600))
    });
    // The same job of the pipeline without instance vars is running.
    ci.put_build(Build::new(33, "3", "started", None));
    let (repo, src) = initialised(&["plain", "instanced", "other"]);
    let base = ci.url();
    let at = now() - 7200;
    repo.move_lock_at(
        POOL,
        "plain",
        true,
        at,
        &format!("Build URL: {base}/teams/main/pipelines/app/jobs/deploy/builds/7\n"),
    );
    // As `BUILD_URL` and the web UI write it: `vars.K=<JSON>`, encoded.
    repo.move_lock_at(
        POOL,
        "instanced",
        true,
        at,
        &format!("Build URL: {base}/teams/main/pipelines/app/jobs/deploy/builds/3?vars.branch=%22feature%2Fx%22&vars.n=1\n"),
    );
    repo.move_lock_at(
        POOL,
        "other",
        true,
        at,
        &format!("Build URL: {base}/teams/main/pipelines/app/jobs/deploy/builds/3\n"),
    );
    let run = pool(&src, &["reap", "--dead"], &[("CONCOURSE_TOKEN", TOKEN)]);
    run.assert_success();
    assert_eq!(repo.claimed(POOL), ["other"], "{}", run.stderr);
    let mut asked = ci.build_requests();
    asked.sort();
    assert_eq!(
        asked,
        [
            "/api/v1/teams/main/pipelines/app/jobs/deploy/builds/3",
            "/api/v1/teams/main/pipelines/app/jobs/deploy/builds/3?vars.branch=%22feature%2Fx%22&vars.n=1",
            "/api/v1/teams/main/pipelines/app/jobs/deploy/builds/7",
        ]
    );
}

#[test]
fn operator_claims_are_never_reaped_nor_asked_about() {
    let ci = Concourse::start("7.14.3", &[]);
    ci.add_token(TOKEN);
    let (repo, src) = initialised(&["a"]);
    pool(
        &src,
        &["claim", "a", "--as", "ops", "--reason", "maintenance"],
        &[],
    )
    .assert_success();
    let tip = repo.tip();
    let run = pool(
        &src,
        &["reap", "--dead", "--concourse-url", &ci.url()],
        &[("CONCOURSE_TOKEN", TOKEN)],
    );
    run.assert_success();
    assert!(
        run.stderr.contains("kept a: claimed by operator ops"),
        "{}",
        run.stderr
    );
    assert_eq!(repo.tip(), tip);
    assert!(ci.seen().is_empty(), "{:?}", ci.seen());
}

#[test]
fn a_wrong_token_releases_nothing_and_prints_no_secret() {
    let (repo, src, ci) = aborted_and_running();
    let tip = repo.tip();
    let wrong = "wrong-token-0123456789abcdef";
    let run = pool(&src, &["reap", "--dead"], &[("CONCOURSE_TOKEN", wrong)]);
    run.assert_failure();
    assert!(
        run.stderr
            .contains("Concourse rejected the credentials from CONCOURSE_TOKEN (401 Unauthorized)"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!("{}/api/v1/user", ci.url())),
        "{}",
        run.stderr
    );
    assert_eq!(repo.tip(), tip);
    assert_no_secret(&run, &[wrong.into()]);
    // Nothing was asked about a build with it.
    assert!(ci.build_requests().is_empty(), "{:?}", ci.build_requests());
}

#[test]
fn a_stopped_api_releases_nothing_and_names_the_url() {
    let (repo, src, ci) = aborted_and_running();
    let url = ci.url();
    drop(ci);
    let tip = repo.tip();
    let run = pool(&src, &["reap", "--dead"], &[("CONCOURSE_TOKEN", TOKEN)]);
    run.assert_failure();
    assert!(
        run.stderr.contains("gave up after 6 attempts")
            && run.stderr.contains(&format!("{url}/api/v1/user")),
        "{}",
        run.stderr
    );
    assert_eq!(repo.tip(), tip);
    assert_no_secret(&run, &[TOKEN.into()]);
}

/// The line file of pool `envs`.
const LINE: &str = ".pool-resource/line/envs.json";

/// A live ticket (`seq`-th in line, renewed 5s ago, lease 1h) of build
/// `build_id` of main/app/deploy on the Concourse at `url`, as the put
/// loop writes it: its URL the build page under `ATC_EXTERNAL_URL`.
fn ticket(id: &str, build_id: i64, url: &str, seq: u64) -> Value {
    let now = now();
    json!({
        "id": id, "build": format!("main/app/deploy #{build_id}"),
        "build_id": build_id.to_string(),
        "url": format!("{url}/teams/main/pipelines/app/jobs/deploy/builds/{build_id}"),
        "wants": {"acquire": 1}, "priority": 0,
        "arrived": now - 600, "seq": seq, "renewed": now - 5, "lease": 3600,
    })
}

/// A Concourse with build 201 aborted an hour ago and 202 running; pool
/// `envs` with lock `a` claimed by an operator, and a line, written
/// directly in one commit, holding a ticket of each build and one whose
/// lease lapsed long ago (of build 299, which Concourse does not know).
fn waiting_aborted_and_running() -> (LockRepo, Value, Concourse) {
    let ci = Concourse::start("7.14.3", &[]);
    ci.add_token(TOKEN);
    ci.put_build(Build::new(201, "201", "aborted", Some(now() - 3600)));
    ci.put_build(Build::new(202, "202", "started", None));
    let (repo, src) = initialised(&["a"]);
    pool(
        &src,
        &["claim", "a", "--as", "ops", "--reason", "maintenance"],
        &[],
    )
    .assert_success();
    let mut lapsed = ticket("t-lapsed", 299, &ci.url(), 1);
    lapsed["renewed"] = json!(now() - 4000);
    lapsed["lease"] = json!(60);
    let line = json!({"tickets": [
        lapsed,
        ticket("t-dead", 201, &ci.url(), 2),
        ticket("t-alive", 202, &ci.url(), 3),
    ]});
    let bytes = serde_json::to_vec_pretty(&line).unwrap();
    repo.commit_file(LINE, &bytes, "joining the line: envs");
    (repo, src, ci)
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
fn an_aborted_builds_ticket_is_removed_from_the_line_and_a_running_builds_is_kept() {
    let (repo, src, ci) = waiting_aborted_and_running();
    let before = repo.log().len();
    let run = pool(
        &src,
        &["reap", "--dead", "--as", "reaper"],
        &[("CONCOURSE_TOKEN", TOKEN)],
    );
    run.assert_success();
    // The lapsed ticket goes with it, as with every write of the line.
    assert_eq!(line_ids(&repo), ["t-alive"], "{}", run.stderr);
    let log = repo.log();
    assert_eq!(log.len(), before + 1, "one commit: {}", run.stderr);
    let last = log.last().unwrap();
    assert_eq!(
        last.subject,
        "dequeuing main/app/deploy #201 from the line: envs"
    );
    assert_eq!(
        last.changed,
        [('M', LINE.to_string())],
        "the line file alone"
    );
    assert!(
        last.body.contains("Pool-Resource-Operator: reaper"),
        "{}",
        last.body
    );
    let reason = reason_of(&last.body);
    assert!(
        reason.starts_with("reaped: main/app/deploy #201 (build 201) aborted at ")
            && reason.contains("(1h0m"),
        "{reason}"
    );
    assert!(
        run.stderr.contains(
            "removed ticket t-dead (main/app/deploy #201, acquire) from the line of pool envs: main/app/deploy #201 (build 201) aborted at "
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "kept ticket t-alive (main/app/deploy #202): main/app/deploy #202 (build 202) is still running (started)"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("left ticket t-lapsed (main/app/deploy #299): its lease lapsed"),
        "{}",
        run.stderr
    );
    // By id, on the Concourse of the tickets' URLs; a lapsed ticket is
    // not asked about, nor the operator's claim.
    let mut asked = ci.build_requests();
    asked.sort();
    assert_eq!(asked, ["/api/v1/builds/201", "/api/v1/builds/202"]);
    assert_eq!(repo.claimed(POOL), ["a"], "the pool is untouched");
    assert_no_secret(&run, &[TOKEN.into()]);
}

#[test]
fn a_ticket_of_a_build_that_succeeded_goes_too_but_not_within_the_grace() {
    let ci = Concourse::start("7.14.3", &[]);
    ci.add_token(TOKEN);
    ci.put_build(Build::new(301, "301", "succeeded", Some(now() - 3600)));
    ci.put_build(Build::new(302, "302", "failed", Some(now() - 60)));
    let (repo, src) = initialised(&["a"]);
    let line = json!({"tickets": [
        ticket("t-done", 301, &ci.url(), 1),
        ticket("t-recent", 302, &ci.url(), 2),
    ]});
    repo.commit_file(
        LINE,
        &serde_json::to_vec_pretty(&line).unwrap(),
        "joining the line: envs",
    );
    let run = pool(&src, &["reap", "--dead"], &[("CONCOURSE_TOKEN", TOKEN)]);
    run.assert_success();
    assert_eq!(line_ids(&repo), ["t-recent"], "{}", run.stderr);
    assert!(
        run.stderr.contains("within the grace of 5m0s"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_dry_run_says_which_tickets_it_would_remove_and_commits_nothing() {
    let (repo, src, _ci) = waiting_aborted_and_running();
    let tip = repo.tip();
    let run = pool(
        &src,
        &["reap", "--dead", "--dry-run"],
        &[("CONCOURSE_TOKEN", TOKEN)],
    );
    run.assert_success();
    assert!(
        run.stderr.contains(
            "would remove ticket t-dead (main/app/deploy #201) from the line of pool envs: main/app/deploy #201 (build 201) aborted at "
        ),
        "{}",
        run.stderr
    );
    assert_eq!(repo.tip(), tip);
    assert_eq!(line_ids(&repo), ["t-alive", "t-dead", "t-lapsed"]);
}

#[test]
fn a_stopped_api_removes_no_ticket() {
    let (repo, src, ci) = waiting_aborted_and_running();
    let url = ci.url();
    drop(ci);
    let tip = repo.tip();
    let run = pool(&src, &["reap", "--dead"], &[("CONCOURSE_TOKEN", TOKEN)]);
    run.assert_failure();
    assert!(
        run.stderr.contains("gave up after 6 attempts") && run.stderr.contains(&url),
        "{}",
        run.stderr
    );
    assert_eq!(repo.tip(), tip);
    assert_eq!(line_ids(&repo), ["t-alive", "t-dead", "t-lapsed"]);
    assert_no_secret(&run, &[TOKEN.into()]);
}

#[test]
fn an_answer_about_a_ticket_that_does_not_parse_releases_no_claim_and_removes_no_ticket() {
    // Every build is asked about, claims' and tickets', before any change.
    let ci = Concourse::start("7.14.3", &[]);
    ci.add_token(TOKEN);
    ci.put_build(Build::new(101, "101", "aborted", Some(now() - 3600)));
    ci.put_build(Build::new(201, "201", "aborted", Some(now() - 3600)));
    ci.put_build(Build::new(202, "202", "exploded", None));
    let (repo, src) = initialised(&["a"]);
    claim_by(&src, "a", 101, &ci.url());
    let line = json!({"tickets": [
        ticket("t-dead", 201, &ci.url(), 1),
        ticket("t-odd", 202, &ci.url(), 2),
    ]});
    repo.commit_file(
        LINE,
        &serde_json::to_vec_pretty(&line).unwrap(),
        "joining the line: envs",
    );
    let tip = repo.tip();
    let run = pool(&src, &["reap", "--dead"], &[("CONCOURSE_TOKEN", TOKEN)]);
    run.assert_failure();
    assert!(
        run.stderr.contains("the answer is not a Concourse build")
            && run.stderr.contains("nothing was released or removed"),
        "{}",
        run.stderr
    );
    assert_eq!(repo.tip(), tip);
    assert_eq!(repo.claimed(POOL), ["a"]);
    assert_eq!(line_ids(&repo), ["t-dead", "t-odd"]);
}

#[test]
fn a_busy_concourse_is_asked_again_and_answers() {
    let (repo, src, ci) = aborted_and_running();
    ci.unavailable_for(3);
    let run = pool(&src, &["reap", "--dead"], &[("CONCOURSE_TOKEN", TOKEN)]);
    run.assert_success();
    assert!(
        run.stderr.contains("503 Service Unavailable; trying again"),
        "{}",
        run.stderr
    );
    assert_eq!(repo.claimed(POOL), ["b"]);
}

#[test]
fn https_trusts_the_ca_of_ssl_cert_file_and_refuses_another_at_once() {
    let ca = TestCa::new();
    let ci = Concourse::start_tls("7.14.3", &[], &ca);
    ci.add_token(TOKEN);
    ci.put_build(Build::new(61, "61", "aborted", Some(now() - 3600)));
    let (repo, src) = initialised(&["a"]);
    claim_by(&src, "a", 61, &ci.url());
    let other = TestCa::new();
    let other_file = other.ca_pem_path().display().to_string();
    let run = pool(
        &src,
        &["reap", "--dead"],
        &[("CONCOURSE_TOKEN", TOKEN), ("SSL_CERT_FILE", &other_file)],
    );
    run.assert_failure();
    assert!(
        run.stderr.contains(&format!(
            "could not verify the identity of {}/api/v1/user",
            ci.url()
        )),
        "{}",
        run.stderr
    );
    // A certificate error is not a network fault: no retries.
    assert!(!run.stderr.contains("trying again"), "{}", run.stderr);
    assert_eq!(repo.claimed(POOL), ["a"]);
    let ca_file = ca.ca_pem_path().display().to_string();
    let run = pool(
        &src,
        &["reap", "--dead"],
        &[("CONCOURSE_TOKEN", TOKEN), ("SSL_CERT_FILE", &ca_file)],
    );
    run.assert_success();
    assert!(repo.claimed(POOL).is_empty(), "{}", run.stderr);
}

#[test]
fn a_local_user_is_exchanged_for_a_token_once_per_run_as_fly_login_does() {
    let ci = Concourse::start("7.14.3", &[("ops", PASSWORD)]);
    for id in [41, 42, 43] {
        ci.put_build(Build::new(
            id,
            &id.to_string(),
            "errored",
            Some(now() - 600),
        ));
    }
    let (repo, src) = initialised(&["a", "b", "c"]);
    for (lock, id) in [("a", 41), ("b", 42), ("c", 43)] {
        claim_by(&src, lock, id, &ci.url());
    }
    let env = [
        ("CONCOURSE_USERNAME", "ops"),
        ("CONCOURSE_PASSWORD", PASSWORD),
    ];
    let run = pool(&src, &["reap", "--dead"], &env);
    run.assert_success();
    assert!(repo.claimed(POOL).is_empty(), "{}", run.stderr);
    assert_eq!(ci.exchanges(), 1);
    let exchange = ci
        .seen()
        .into_iter()
        .find(|s| s.target == "/sky/issuer/token")
        .expect("a token exchange");
    // fly's client, in Basic auth, and the password grant's form.
    assert_eq!(exchange.method, "POST");
    assert_eq!(
        exchange.authorization.as_deref(),
        Some("Basic Zmx5OlpteDU=")
    );
    let form = crate::support::concourse::parse_form(&exchange.body);
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("grant_type"), Some("password"));
    assert_eq!(get("username"), Some("ops"));
    assert_eq!(
        get("scope"),
        Some("openid profile email federated:id groups")
    );
    let mut secrets = ci.tokens();
    secrets.push(PASSWORD.into());
    assert_no_secret(&run, &secrets);
    // A wrong password: rejected, nothing released, no secret.
    let (repo, src) = initialised(&["a"]);
    claim_by(&src, "a", 41, &ci.url());
    let run = pool(
        &src,
        &["reap", "--dead"],
        &[
            ("CONCOURSE_USERNAME", "ops"),
            ("CONCOURSE_PASSWORD", "nope-wrong-password"),
        ],
    );
    run.assert_failure();
    assert!(
        run.stderr.contains("Concourse rejected the local user")
            && run.stderr.contains("access_denied"),
        "{}",
        run.stderr
    );
    assert_eq!(repo.claimed(POOL), ["a"]);
    assert_no_secret(&run, &["nope-wrong-password".into()]);
}

#[test]
fn a_local_user_on_concourse_6_2_uses_the_id_token_as_fly_did() {
    let ci = Concourse::start("6.2.0", &[("ops", PASSWORD)]);
    ci.put_build(Build::new(5, "5", "aborted", Some(now() - 600)));
    let (repo, src) = initialised(&["a"]);
    claim_by(&src, "a", 5, &ci.url());
    let run = pool(
        &src,
        &["reap", "--dead"],
        &[
            ("CONCOURSE_USERNAME", "ops"),
            ("CONCOURSE_PASSWORD", PASSWORD),
        ],
    );
    run.assert_success();
    assert!(repo.claimed(POOL).is_empty(), "{}", run.stderr);
    let used = ci
        .seen()
        .into_iter()
        .find(|s| s.target == "/api/v1/builds/5")
        .and_then(|s| s.authorization)
        .unwrap_or_default();
    assert!(used.starts_with("Bearer eyJ"), "{used}");
}

#[test]
fn a_build_unknown_to_concourse_is_reported_and_reaped_only_with_missing() {
    let ci = Concourse::start("7.14.3", &[]);
    ci.add_token(TOKEN);
    let (repo, src) = initialised(&["a"]);
    claim_by(&src, "a", 404404, &ci.url());
    let env = [("CONCOURSE_TOKEN", TOKEN)];
    let run = pool(&src, &["reap", "--dead"], &env);
    run.assert_success();
    assert!(
        run.stderr
            .contains("not found in Concourse (404); --missing"),
        "{}",
        run.stderr
    );
    assert_eq!(repo.claimed(POOL), ["a"]);
    pool(&src, &["reap", "--dead", "--missing"], &env).assert_success();
    assert!(repo.claimed(POOL).is_empty());
}

#[test]
fn a_build_id_that_now_names_another_build_is_never_reaped() {
    // The database was reset: id 101 now belongs to another job's build.
    let ci = Concourse::start("7.14.3", &[]);
    ci.add_token(TOKEN);
    ci.put_build(Build {
        job: "nightly".into(),
        ..Build::new(101, "3", "aborted", Some(now() - 3600))
    });
    let (repo, src) = initialised(&["a"]);
    claim_by(&src, "a", 101, &ci.url());
    let env = [("CONCOURSE_TOKEN", TOKEN)];
    let run = pool(&src, &["reap", "--dead", "--missing"], &env);
    run.assert_success();
    assert!(
        run.stderr.contains(
            "kept a: Concourse's build 101 is main/app/nightly #3, not the claim's main/app/deploy #101"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(repo.claimed(POOL), ["a"]);
    let st = pool(&src, &["status", "--json"], &env)
        .assert_success()
        .json();
    assert_eq!(
        st["pools"][0]["locks"][0]["build_status"]["status"],
        "unknown"
    );
}

#[test]
fn credentials_go_to_one_concourse_only_unless_concourse_url_says_which() {
    let (ci, other) = (
        Concourse::start("7.14.3", &[]),
        Concourse::start("7.14.3", &[]),
    );
    ci.add_token(TOKEN);
    ci.put_build(Build::new(101, "101", "aborted", Some(now() - 3600)));
    let (repo, src) = initialised(&["a", "b"]);
    claim_by(&src, "a", 101, &ci.url());
    // A commit naming another Concourse, as anyone who can push could write.
    claim_by(&src, "b", 201, &other.url());
    let tip = repo.tip();
    let env = [("CONCOURSE_TOKEN", TOKEN)];
    let run = pool(&src, &["reap", "--dead"], &env);
    run.assert_failure();
    assert!(
        run.stderr
            .contains("the claims name more than one Concourse"),
        "{}",
        run.stderr
    );
    assert!(other.seen().is_empty(), "{:?}", other.seen());
    assert_eq!(repo.tip(), tip);
    let run = pool(
        &src,
        &["reap", "--dead", "--concourse-url", &ci.url()],
        &env,
    );
    run.assert_success();
    assert_eq!(repo.claimed(POOL), ["b"], "{}", run.stderr);
    assert!(other.seen().is_empty(), "{:?}", other.seen());
}

#[test]
fn a_several_lock_claim_of_a_dead_build_is_released_lock_by_lock() {
    let ci = Concourse::start("7.14.3", &[]);
    ci.add_token(TOKEN);
    ci.put_build(Build::new(55, "55", "aborted", Some(now() - 900)));
    let (repo, src) = initialised(&["a", "b", "c"]);
    put_by(&src, json!({"claim": ["a", "b"]}), 55, "55", &ci.url());
    let before = repo.log().len();
    pool(&src, &["reap", "--dead"], &[("CONCOURSE_TOKEN", TOKEN)]).assert_success();
    assert!(repo.claimed(POOL).is_empty());
    let log = repo.log();
    let subjects: Vec<&str> = log[before..].iter().map(|c| c.subject.as_str()).collect();
    assert_eq!(subjects, ["unclaiming: a", "unclaiming: b"]);
    // One question for the one build.
    assert_eq!(ci.build_requests(), ["/api/v1/builds/55"]);
}

#[test]
fn a_fly_targets_token_and_url_are_read_from_flyrc_in_home() {
    let ci = Concourse::start("7.14.3", &[]);
    ci.add_token(TOKEN);
    ci.put_build(Build::new(9, "9", "failed", Some(now() - 3600)));
    let (repo, src) = initialised(&["a"]);
    // The claim recorded a Concourse URL this machine cannot reach.
    claim_by(&src, "a", 9, "http://127.0.0.1:9");
    let home = tempfile::TempDir::new().unwrap();
    std::fs::write(
        home.path().join(".flyrc"),
        format!(
            "targets:\n  ci:\n    api: {}\n    team: main\n    token:\n      type: bearer\n      value: {TOKEN}\n",
            ci.url()
        ),
    )
    .unwrap();
    let home = home.path().display().to_string();
    let run = pool(
        &src,
        &["reap", "--dead", "--fly-target", "ci"],
        &[("HOME", home.as_str())],
    );
    run.assert_success();
    assert!(repo.claimed(POOL).is_empty(), "{}", run.stderr);
    assert_no_secret(&run, &[TOKEN.into()]);
    let run = pool(
        &src,
        &["status", "--fly-target", "nope"],
        &[("HOME", home.as_str())],
    );
    run.assert_failure();
    assert!(run.stderr.contains("no such target"), "{}", run.stderr);
}

#[test]
fn pool_status_and_history_show_each_holders_build_status() {
    let (_repo, src, ci) = aborted_and_running();
    let env = [("CONCOURSE_TOKEN", TOKEN)];
    let st = pool(&src, &["status", "--json"], &env)
        .assert_success()
        .json();
    let locks = &st["pools"][0]["locks"];
    let a = &locks[0]["build_status"];
    assert_eq!(
        (&a["status"], &a["dead"], &a["id"]),
        (&json!("aborted"), &json!(true), &json!(101))
    );
    assert!(a["end_time"].as_i64().is_some_and(|t| t < now() - 3000));
    let b = &locks[1]["build_status"];
    assert_eq!(
        (&b["status"], &b["dead"]),
        (&json!("started"), &json!(false))
    );
    assert!(b.get("end_time").is_none());
    assert!(locks[2].get("build_status").is_none(), "{}", locks[2]);
    let text = pool(&src, &["status"], &env)
        .assert_success()
        .stdout
        .clone();
    let line = |name: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .to_string()
    };
    assert!(line("a ").contains("— build aborted 1h0m"), "{text}");
    assert!(line("a ").ends_with("ago (dead)"), "{text}");
    assert!(line("b ").ends_with("— build running"), "{text}");
    let history = pool(&src, &["history"], &env)
        .assert_success()
        .stdout
        .clone();
    assert!(
        history.contains("still claimed, build running")
            && history.contains("still claimed, build aborted"),
        "{history}"
    );
    // Without Concourse access configured, nothing is asked.
    let asked = ci.seen().len();
    let plain = pool(&src, &["status", "--json"], &[])
        .assert_success()
        .json();
    assert!(plain["pools"][0]["locks"][0].get("build_status").is_none());
    assert_eq!(ci.seen().len(), asked);
    // Concourse down: the status still shows, saying why the builds' is unknown.
    drop(ci);
    let run = pool(&src, &["status", "--json"], &env);
    run.assert_success();
    let st = run.json();
    assert_eq!(
        st["pools"][0]["locks"][0]["build_status"]["status"],
        "unknown"
    );
    assert!(
        run.stderr.contains("build status unknown"),
        "{}",
        run.stderr
    );
}

#[test]
fn reap_takes_older_than_or_dead_and_dead_needs_concourse_access() {
    let (repo, src) = initialised(&["a"]);
    let tip = repo.tip();
    for args in [
        &["reap", "--dead", "--older-than", "1h"][..],
        &["reap", "--older-than", "1h", "--finished"],
        &["reap", "--dead", "--grace", "soon"],
        &["reap", "--dead"],
    ] {
        let run = pool(&src, args, &[]);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {}", run.stderr);
    }
    assert_eq!(repo.tip(), tip);
}

#[test]
fn pool_serve_shows_dead_holders_on_its_page_json_and_metrics_and_asks_once_per_build() {
    let (_repo, src, ci) = aborted_and_running();
    let server = crate::serve::Server::start_with(&src, "1s", &[("CONCOURSE_TOKEN", TOKEN)]);
    let st = server.wait_for_status("both builds' status", |s| {
        s["pools"][0]["locks"][1]["build_status"]["status"] == "started"
    });
    assert_eq!(st["pools"][0]["locks"][0]["build_status"]["dead"], true);
    // A later refresh: the running build is asked again, the aborted one not.
    let asked = |id: &str| {
        ci.build_requests()
            .iter()
            .filter(|p| p.ends_with(id))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while asked("/102") < 3 {
        assert!(Instant::now() < deadline, "{:?}", ci.build_requests());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(asked("/101"), 1, "{:?}", ci.build_requests());
    let r = server.get("/");
    let (status, page) = (r.status, r.body);
    assert_eq!(status, 200);
    assert!(page.contains("Build aborted 1h0m"), "{page}");
    assert!(page.contains(r#"class="buildstate dead""#), "{page}");
    let metrics = server.get("/metrics").body;
    assert!(
        metrics.contains(&format!(
            "pool_resource_dead_build_claims{{source=\"{}\",branch=\"main\",pool=\"envs\"}} 1",
            src["uri"].as_str().unwrap()
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("pool_resource_build_status_up{"),
        "{metrics}"
    );
    assert!(!metrics.contains(TOKEN) && !page.contains(TOKEN));
}

#[test]
#[ignore = "needs promtool: run by ci/test.sh with --include-ignored"]
fn the_dead_build_metrics_pass_promtool() {
    let promtool = "/usr/bin/promtool";
    if !Path::new(promtool).exists() {
        skip(
            "reap::the_dead_build_metrics_pass_promtool",
            "promtool is not installed (ci/test.sh installs prometheus)",
        );
        return;
    }
    let (_repo, src, _ci) = aborted_and_running();
    let server = crate::serve::Server::start_with(&src, "1s", &[("CONCOURSE_TOKEN", TOKEN)]);
    server.wait_for_status("both builds' status", |s| {
        s["pools"][0]["locks"][1]["build_status"]["status"] == "started"
    });
    let metrics = server.get("/metrics").body;
    assert!(
        metrics.contains("pool_resource_dead_build_claims{"),
        "{metrics}"
    );
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting promtool");
    check
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(metrics.as_bytes())
        .expect("feeding promtool");
    let out = check.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `Pool-Resource-Reason` trailer of a commit message, as the library
/// reads it.
fn reason_of(body: &str) -> String {
    pool_resource::model::message::Parsed::new(body)
        .trailer(pool_resource::model::message::Trailer::Reason)
        .unwrap_or_else(|| panic!("no reason in {body}"))
        .to_string()
}

/// Locks `a` and `b` claimed by builds 101 and 102 of the Concourse at
/// `url`, `c` free.
fn claimed_on(url: &str) -> (LockRepo, Value) {
    let (repo, src) = initialised(&["a", "b", "c"]);
    claim_by(&src, "a", 101, url);
    claim_by(&src, "b", 102, url);
    (repo, src)
}

/// `pool status` (text and `--json`) behind the Concourse at `url`: both
/// print within `bound`, the locks' state whole and each holder's build
/// `unknown` with a reason containing `why`.
fn status_does_not_wait_on(url: &str, why: &str) {
    let (_repo, src) = claimed_on(url);
    let env = [("CONCOURSE_TOKEN", TOKEN)];
    let bound = Duration::from_secs(15);
    let started = Instant::now();
    let run = pool(&src, &["status", "--json"], &env);
    let took = started.elapsed();
    run.assert_success();
    assert!(took < bound, "status --json took {took:?}:\n{}", run.stderr);
    eprintln!("status --json behind {url}: {took:?}");
    let st = run.json();
    let locks = &st["pools"][0]["locks"];
    for (i, name) in ["a", "b"].iter().enumerate() {
        assert_eq!(locks[i]["name"], *name, "{st}");
        assert_eq!(locks[i]["state"], "claimed", "{st}");
        let b = &locks[i]["build_status"];
        assert_eq!(b["status"], "unknown", "{st}");
        assert_eq!(b["dead"], false, "{st}");
        assert!(b["error"].as_str().is_some_and(|e| e.contains(why)), "{st}");
    }
    assert_eq!(locks[2]["state"], "unclaimed", "{st}");
    assert!(
        run.stderr.contains("build status unknown") && run.stderr.contains(url),
        "{}",
        run.stderr
    );
    let started = Instant::now();
    let run = pool(&src, &["status"], &env);
    let took = started.elapsed();
    run.assert_success();
    assert!(took < bound, "status took {took:?}:\n{}", run.stderr);
    let line = run
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("a "))
        .unwrap_or_else(|| panic!("no lock a in\n{}", run.stdout));
    assert!(
        line.contains("claimed") && line.contains(&format!("— build status unknown ({why}")),
        "{}",
        run.stdout
    );
    assert_no_secret(&run, &[TOKEN.into()]);
}

#[test]
fn pool_status_behind_a_concourse_that_never_answers_prints_the_locks_within_seconds() {
    let hung = Hung::start();
    status_does_not_wait_on(&hung.url(), "Concourse did not answer within 4s");
    assert!(hung.connections() > 0, "the stand-in was never asked");
}

#[test]
fn pool_status_behind_a_concourse_that_refuses_connections_prints_the_locks_at_once() {
    status_does_not_wait_on(&refusing_url(), "gave up after 2 attempts");
}

#[test]
fn reap_dead_behind_a_concourse_that_never_answers_gives_up_within_a_minute_releasing_nothing() {
    let hung = Hung::start();
    let (repo, src) = claimed_on(&hung.url());
    let tip = repo.tip();
    let started = Instant::now();
    let run = pool(&src, &["reap", "--dead"], &[("CONCOURSE_TOKEN", TOKEN)]);
    let took = started.elapsed();
    run.assert_failure();
    assert!(took < Duration::from_secs(70), "reap --dead took {took:?}");
    eprintln!("reap --dead behind a hung Concourse gave up after {took:?}");
    assert!(
        run.stderr.contains("Concourse did not answer within 45s")
            && run.stderr.contains(&format!("{}/api/v1/user", hung.url()))
            && run.stderr.contains("nothing was released or removed"),
        "{}",
        run.stderr
    );
    assert_eq!(repo.tip(), tip);
    assert_eq!(repo.claimed(POOL), ["a", "b"]);
    assert_no_secret(&run, &[TOKEN.into()]);
}

/// `pool serve` behind the Concourse at `url`: the holders' builds read
/// `unknown` (with `why`), `/metrics` says Concourse is not up, and a
/// release shows on `/status.json` within a refresh and a margin.
fn serve_does_not_wait_on(url: &str, why: &str) {
    let (_repo, src) = claimed_on(url);
    let server = crate::serve::Server::start_with(&src, "1s", &[("CONCOURSE_TOKEN", TOKEN)]);
    server.wait_for_status("the claims with their builds unknown", |s| {
        let a = &s["pools"][0]["locks"][0];
        a["state"] == "claimed" && a["build_status"]["status"] == "unknown"
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = server.get("/metrics").body;
        if m.lines()
            .any(|l| l.starts_with("pool_resource_build_status_up{") && l.ends_with(" 0"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "build_status_up never 0:\n{m}");
        std::thread::sleep(Duration::from_millis(100));
    }
    pool(
        &src,
        &["release", "a", "--force", "--reason", "done", "--as", "ops"],
        &[],
    )
    .assert_success();
    let released = Instant::now();
    let st = server.wait_for_status("lock a released", |s| {
        s["pools"][0]["locks"][0]["state"] == "unclaimed"
    });
    let stale = released.elapsed();
    // One refresh interval (1 s), and a margin for a loaded machine.
    assert!(
        stale < Duration::from_secs(8),
        "the release showed {stale:?} late"
    );
    let b = &st["pools"][0]["locks"][1]["build_status"];
    assert_eq!(b["status"], "unknown", "{st}");
    // Until the first round ends, "not answered yet"; then the reason.
    server.wait_for_status("the reason the build status is unknown", |s| {
        s["pools"][0]["locks"][1]["build_status"]["error"]
            .as_str()
            .is_some_and(|e| e.contains(why))
    });
    eprintln!("serve: a release showed after {stale:?}");
}

#[test]
fn pool_serve_behind_a_concourse_that_never_answers_shows_a_release_within_a_refresh() {
    let hung = Hung::start();
    serve_does_not_wait_on(&hung.url(), "Concourse did not answer within 10s");
}

#[test]
fn pool_serve_behind_a_concourse_that_refuses_connections_shows_a_release_within_a_refresh() {
    serve_does_not_wait_on(&refusing_url(), "gave up after 2 attempts");
}
