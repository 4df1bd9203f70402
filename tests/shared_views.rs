//! Seeing shared holds: `pool status` (text and JSON), the page and
//! `/metrics` of `pool serve` and its annotations show every holder of a
//! lock held shared, made by real `out`/`in` runs, and the line says which
//! waiters want a share and which the lock alone.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::serve::Server;
use crate::support::{run_bin, run_bin_raw, Bg, GitDaemon, LockRepo, Run};
use crate::{put, source, Inputs};

const POOL: &str = "envs";

fn pool(src: &Value, args: &[&str]) -> Run {
    let paths: Vec<&Path> = args.iter().map(Path::new).collect();
    let json = src.to_string();
    run_bin_raw(
        "pool",
        &paths,
        b"",
        &[("POOL_SOURCE", json.as_str()), ("USER", "tester")],
    )
}

fn build(job: &str, n: &str) -> Vec<(&'static str, String)> {
    vec![
        ("BUILD_ID", format!("42{n}")),
        ("BUILD_NAME", n.to_string()),
        ("BUILD_JOB_NAME", job.to_string()),
        ("BUILD_PIPELINE_NAME", "app".into()),
        ("BUILD_TEAM_NAME", "main".into()),
        ("ATC_EXTERNAL_URL", "https://ci.example.com".into()),
    ]
}

fn refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Build `n` of job `smoke` takes a share of `env` and `in` fetches it into
/// `inputs/<dir>`; returns its share id (`DIR/share`).
fn share(src: &Value, inputs: &Inputs, n: &str, dir: &str) -> String {
    crate::take_share(src, inputs, "env", &refs(&build("smoke", n)), dir).1
}

fn release(src: &Value, inputs: &Inputs, n: &str, dir: &str) {
    let env = build("smoke", n);
    run_bin(
        "out",
        &[inputs.path()],
        &json!({"source": src, "params": {"release": dir}}),
        &refs(&env),
    )
    .assert_success();
}

/// A put of `params` by build `n` of `job` that waits in the line.
fn waiting(src: &Value, params: Value, job: &str, n: &str, inputs: &Inputs) -> Bg {
    let mut bg = crate::start_out(
        src,
        params,
        inputs,
        &refs(&build(job, n)),
        format!("the waiting {job} #{n}"),
        Duration::from_secs(60),
    );
    bg.until_logged(1, "");
    bg
}

fn tags(a: &Value) -> Vec<&str> {
    a["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|t| t.as_str())
        .collect()
}

#[test]
fn every_view_shows_each_holder_of_a_shared_lock_and_the_kind_of_each_waiter() {
    let repo = LockRepo::new("main");
    let local = source(&repo.path().display().to_string(), "main", POOL);
    pool(&local, &["--as", "ops", "init", "env", "spare"]).assert_success();
    let daemon = GitDaemon::start(repo.root());
    let src = source(&daemon.url("locks.git"), "main", POOL);
    let inputs = Inputs::new();
    // Three readers share env; the first leaves while the others stay.
    let s1 = share(&src, &inputs, "1", "r1");
    let s2 = share(&src, &inputs, "2", "r2");
    let s3 = share(&src, &inputs, "3", "r3");
    release(&src, &inputs, "1", "r1");
    // spare taken alone, then a writer waits for env and a reader behind it.
    let spare = Inputs::new();
    put(
        &src,
        json!({"claim": "spare"}),
        &spare,
        &refs(&build("deploy", "9")),
    );
    let w_in = Inputs::new();
    let mut writer = waiting(&src, json!({"claim": "env"}), "deploy", "10", &w_in);
    let r_in = Inputs::new();
    let mut reader = waiting(
        &src,
        json!({"claim": "env", "shared": true}),
        "smoke",
        "4",
        &r_in,
    );

    // pool status, text.
    let text = pool(&src, &["status"]).assert_success().stdout.clone();
    let row = |needle: &str| {
        text.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in\n{text}"))
            .to_string()
    };
    assert!(
        row("  env ").contains("claimed   held shared by 2, since "),
        "{text}"
    );
    assert!(
        row(&format!("share {s2}")).contains("main/app/smoke #2  since "),
        "{text}"
    );
    assert!(
        row(&format!("share {s3}")).contains("main/app/smoke #3"),
        "{text}"
    );
    assert!(
        !text.contains(&format!("share {s1}")),
        "the reader that left: {text}"
    );
    assert!(
        row("  spare ").contains(" by main/app/deploy #9"),
        "exclusive as before: {text}"
    );
    assert!(
        row("deploy #10").contains("claim: env, exclusive, priority 0"),
        "{text}"
    );
    assert!(
        row("smoke #4").contains("claim: env, shared, priority 0"),
        "{text}"
    );

    // pool status --json.
    let st = pool(&src, &["status", "--json"]).assert_success().json();
    let locks = st["pools"][0]["locks"].as_array().expect("locks").clone();
    let env = locks.iter().find(|l| l["name"] == "env").expect("env");
    assert_eq!(env["shared"], true, "{env}");
    let holders = env["holders"].as_array().expect("holders");
    let ids: Vec<&str> = holders.iter().filter_map(|h| h["id"].as_str()).collect();
    assert_eq!(ids, [s2.as_str(), s3.as_str()], "{env}");
    assert_eq!(holders[0]["build"], "main/app/smoke #2");
    assert_eq!(holders[0]["build_id"], "422");
    assert!(holders[0]["since"].as_i64().is_some() && holders[0]["url"].is_string());
    let spare = locks.iter().find(|l| l["name"] == "spare").expect("spare");
    assert!(
        spare.get("shared").is_none() && spare.get("holders").is_none(),
        "{spare}"
    );
    let line = st["pools"][0]["line"].as_array().expect("line");
    assert_eq!(line.len(), 2, "{st}");
    assert!(line[0].get("shared").is_none() && line[0]["build"] == "main/app/deploy #10");
    assert_eq!(line[1]["shared"], true, "{st}");

    // pool serve: the page, /metrics, the annotations.
    let server = Server::start_args(
        &json!({"uri": daemon.url("locks.git"), "branch": "main"}),
        "1s",
        &[],
        &[],
    );
    server.wait_for_status("both waiters", |s| {
        s["pools"][0]["line"]
            .as_array()
            .is_some_and(|l| l.len() == 2)
    });
    let page = server.get("/").body;
    assert!(page.contains("Held shared by 2"), "{page}");
    for id in [&s2, &s3] {
        assert!(page.contains(&format!("share {id}")), "{page}");
    }
    assert!(
        page.contains(
            r#"main/app/deploy #10</a> — claim: env, <span class="kind exclusive">exclusive</span>"#
        ),
        "{page}"
    );
    assert!(
        page.contains(
            r#"main/app/smoke #4</a> — claim: env, <span class="kind shared">shared</span>"#
        ),
        "{page}"
    );
    let labels = |lock: &str, kind: &str| {
        format!(
            "{{source=\"{}\",branch=\"main\",pool=\"envs\",lock=\"{lock}\",kind=\"{kind}\"}}",
            daemon.url("locks.git")
        )
    };
    let metrics = server.get("/metrics").body;
    for (lock, kind, n) in [
        ("env", "shared", 2),
        ("env", "exclusive", 0),
        ("spare", "shared", 0),
        ("spare", "exclusive", 1),
    ] {
        let sample = format!("pool_resource_lock_holders{} {n}\n", labels(lock, kind));
        assert!(metrics.contains(&sample), "no {sample} in\n{metrics}");
    }
    for (kind, n) in [("shared", 1), ("exclusive", 1)] {
        let sample = format!(
            "pool_resource_waiters_by_kind{{source=\"{}\",branch=\"main\",pool=\"envs\",kind=\"{kind}\"}} {n}\n",
            daemon.url("locks.git")
        );
        assert!(metrics.contains(&sample), "no {sample} in\n{metrics}");
    }

    let all: Vec<Value> =
        serde_json::from_str(&server.get("/annotations.json").body).expect("annotations.json");
    let shares: Vec<&Value> = all.iter().filter(|a| tags(a).contains(&"shared")).collect();
    assert_eq!(shares.len(), 3, "one per share: {all:#?}");
    let of = |id: &str| {
        shares
            .iter()
            .find(|a| tags(a).contains(&format!("share:{id}").as_str()))
            .unwrap_or_else(|| panic!("no annotation of share {id} in {all:#?}"))
    };
    let first = of(&s1);
    assert_eq!(first["ongoing"], false, "{first}");
    assert!(
        first["end_commit"].is_string() && first["title"] == "envs/env: main/app/smoke #1 (shared)"
    );
    for id in [&s2, &s3] {
        assert_eq!(of(id)["ongoing"], true);
    }
    assert!(tags(of(&s2)).contains(&format!("claim:share-{s2}").as_str()));
    let env_claims = all
        .iter()
        .filter(|a| a["lock"] == "env" && !tags(a).contains(&"shared"))
        .count();
    assert_eq!(
        env_claims, 0,
        "the shared period is no claim of its own: {all:#?}"
    );

    writer.kill();
    reader.kill();
}

#[test]
#[ignore = "needs promtool: run by ci/test.sh with --include-ignored"]
fn the_holder_and_waiter_metrics_by_kind_pass_promtool() {
    let repo = LockRepo::new("main");
    let local = source(&repo.path().display().to_string(), "main", POOL);
    pool(&local, &["--as", "ops", "init", "env"]).assert_success();
    let daemon = GitDaemon::start(repo.root());
    let src = source(&daemon.url("locks.git"), "main", POOL);
    let inputs = Inputs::new();
    share(&src, &inputs, "1", "r1");
    share(&src, &inputs, "2", "r2");
    let server = Server::start_args(
        &json!({"uri": daemon.url("locks.git"), "branch": "main"}),
        "1s",
        &[],
        &[],
    );
    server.wait_for_status("env held shared", |s| {
        s["pools"][0]["locks"][0]["shared"] == true
    });
    let metrics = server.get("/metrics").body;
    assert!(
        metrics.contains("# TYPE pool_resource_lock_holders gauge"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE pool_resource_waiters_by_kind gauge"),
        "{metrics}"
    );
    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting promtool");
    std::io::Write::write_all(&mut check.stdin.take().expect("stdin"), metrics.as_bytes())
        .expect("feeding promtool");
    let out = check.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
