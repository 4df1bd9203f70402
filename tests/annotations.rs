//! `/annotations.json` of the real `pool serve`, over a history made by the
//! real `out` and `pool` executables (and, for claims older than the
//! look-back, commits dated days ago): claims and releases, a claim of two
//! locks in one commit, a forced release, a reap, a hold, a dequeue, and
//! names from git that must stay text.

use std::path::Path;

use serde_json::{json, Value};

use crate::serve::Server;
use crate::support::grafana::Grafana;
use crate::support::{run_bin_raw, GitDaemon, LockRepo, Run};
use crate::{put, source, Inputs};

const POOL: &str = "envs";
/// A lock name that is HTML.
const HOSTILE: &str = "<img src=x onerror=alert(1)>";
const DAY: i64 = 86_400;

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

fn build(n: &str) -> Vec<(&'static str, String)> {
    vec![
        ("BUILD_ID", format!("42{n}")),
        ("BUILD_NAME", n.to_string()),
        ("BUILD_JOB_NAME", "deploy".into()),
        ("BUILD_PIPELINE_NAME", "app".into()),
        ("BUILD_TEAM_NAME", "main".into()),
        ("ATC_EXTERNAL_URL", "https://ci.example.com".into()),
    ]
}

fn refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A repository whose history has every kind of hold, served by `pool serve`.
pub(crate) struct History {
    pub(crate) repo: LockRepo,
    pub(crate) daemon: GitDaemon,
}

impl History {
    /// Pool `envs` (qa, staging, prod, old, the hostile lock) and pool
    /// `legacy` (ancient): `ancient` claimed 9 days ago and `old` 8 days ago
    /// (before the 7 days `pool serve` reads), then build 7 claims and
    /// releases qa, build 8 claims staging and the hostile lock in one
    /// commit, build 9's claim of prod is forced off, a reap releases
    /// `old`, ops holds the pool and dequeues a waiter.
    pub(crate) fn new() -> History {
        let repo = LockRepo::new("main");
        let local = source(&repo.path().display().to_string(), "main", POOL);
        pool(
            &local,
            &["--as", "ops", "init", "qa", "staging", "prod", "old"],
        )
        .assert_success();
        let legacy = source(&repo.path().display().to_string(), "main", "legacy");
        pool(&legacy, &["--as", "ops", "init", "ancient"]).assert_success();
        let now = pool_resource::process::clock::now_unix();
        let go = |job: &str, n: u32| {
            format!("Build URL: https://ci.example.com/teams/main/pipelines/app/jobs/{job}/builds/{n}\n")
        };
        repo.move_lock_at("legacy", "ancient", true, now - 9 * DAY, &go("nightly", 1));
        repo.move_lock_at(POOL, "old", true, now - 8 * DAY, &go("nightly", 2));
        let daemon = GitDaemon::start(repo.root());
        let h = History { repo, daemon };
        let src = h.src();
        let inputs = Inputs::new();
        inputs.lock("hostile", HOSTILE, b"");
        put(&src, json!({"add": "hostile"}), &inputs, &[]);
        let b7 = build("7");
        put(&src, json!({"claim": "qa"}), &Inputs::new(), &refs(&b7));
        let released = Inputs::new();
        released.lock("qa", "qa", b"");
        put(&src, json!({"release": "qa"}), &released, &refs(&b7));
        let b8 = vec![
            ("BUILD_ID", "428".to_string()),
            ("BUILD_NAME", "8".into()),
            ("BUILD_JOB_NAME", "\"><svg onload=alert(3)>".into()),
            ("BUILD_PIPELINE_NAME", "app".into()),
            ("BUILD_TEAM_NAME", "main".into()),
            ("ATC_EXTERNAL_URL", "javascript:alert(5)//".into()),
        ];
        put(
            &src,
            json!({"claim": ["staging", HOSTILE]}),
            &Inputs::new(),
            &refs(&b8),
        );
        put(
            &src,
            json!({"claim": "prod"}),
            &Inputs::new(),
            &refs(&build("9")),
        );
        pool(
            &src,
            &[
                "release",
                "prod",
                "--force",
                "--as",
                "ops",
                "--reason",
                "stuck deploy",
            ],
        )
        .assert_success();
        pool(&src, &["reap", "--older-than", "24h", "--as", "reaper"]).assert_success();
        h.repo.commit_file(
            ".pool-resource/line/envs.json",
            json!({"tickets": [
                {"id": "t-old", "build": "main/app/deploy #50", "build_id": "4250",
                 "wants": {"acquire": 1}, "priority": 0, "arrived": now - 600, "seq": 1,
                 "renewed": now, "lease": 3600}
            ]})
            .to_string()
            .as_bytes(),
            "joining the line: envs",
        );
        pool(
            &src,
            &["dequeue", "t-old", "--as", "ops", "--reason", "gone"],
        )
        .assert_success();
        pool(
            &src,
            &["hold", "--as", "ops", "--reason", "upgrade <b>now</b>"],
        )
        .assert_success();
        h
    }

    pub(crate) fn src(&self) -> Value {
        source(&self.daemon.url("locks.git"), "main", POOL)
    }

    /// `pool serve` of every pool, once it shows the hold.
    pub(crate) fn serve(&self, env: &[(&str, &str)], args: &[&str]) -> Server {
        let server = Server::start_args(
            &json!({"uri": self.daemon.url("locks.git"), "branch": "main"}),
            "1s",
            env,
            args,
        );
        server.wait_for_status("the hold", |s| {
            s["pools"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| !p["hold"].is_null()))
        });
        server
    }
}

fn annotations(server: &Server, query: &str) -> Vec<Value> {
    let r = server.get(&format!("/annotations.json?{query}"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: Value = serde_json::from_str(&r.body).expect("annotations.json is JSON");
    v.as_array().expect("an array").clone()
}

fn tags(a: &Value) -> Vec<&str> {
    a["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|t| t.as_str())
        .collect()
}

fn find<'a>(all: &'a [Value], kind: &str, lock: Option<&str>) -> Vec<&'a Value> {
    all.iter()
        .filter(|a| a["kind"] == kind && lock.is_none_or(|l| a["lock"] == l))
        .collect()
}

#[test]
fn annotations_are_the_holds_of_the_history_named_tagged_and_escaped() {
    let h = History::new();
    let server = h.serve(&[], &[]);
    let now = pool_resource::process::clock::now_unix();
    let range = format!("from={}&to={}", (now - 10 * DAY) * 1000, (now + 60) * 1000);
    let all = annotations(&server, &range);
    eprintln!("{}", serde_json::to_string_pretty(&all).expect("json"));

    // The range reaches before the look-back: the first object says so.
    let look = &all[0];
    assert_eq!(look["kind"], "look_back", "{look}");
    let read_from = look["timeEnd"].as_i64().expect("timeEnd");
    assert!((read_from / 1000 - (now - 7 * DAY)).abs() < 120, "{look}");
    assert!(tags(look).contains(&"kind:look-back"));

    // Build 7's claim of qa, released by itself.
    let qa = find(&all, "claim", Some("qa"));
    assert_eq!(qa.len(), 1, "{all:?}");
    let qa = qa[0];
    assert_eq!(qa["ongoing"], false);
    assert!(qa["timeEnd"].as_i64() >= qa["time"].as_i64());
    for t in [
        "pool-resource",
        "pool:envs",
        "lock:qa",
        "kind:claim",
        "team:main",
        "pipeline:app",
        "job:deploy",
    ] {
        assert!(tags(qa).contains(&t), "{t} in {qa}");
    }
    assert!(tags(qa).iter().any(|t| t.starts_with("claim:")));
    assert_eq!(qa["tags_csv"], tags(qa).join(","));
    assert_eq!(qa["title"], "envs/qa: main/app/deploy #7");
    assert!(
        qa["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("<a href=\"https://ci.example.com/")
                && t.contains(">main/app/deploy #7</a> held lock <b>qa</b> of pool <b>envs</b>")),
        "{qa}"
    );

    // One commit claimed staging and the hostile lock: two annotations, one
    // claim, both still held; the names are text in HTML and exact in JSON.
    let staging = find(&all, "claim", Some("staging"));
    let hostile = find(&all, "claim", Some(HOSTILE));
    assert_eq!((staging.len(), hostile.len()), (1, 1), "{all:?}");
    assert_eq!(staging[0]["commit"], hostile[0]["commit"]);
    assert_eq!(hostile[0]["ongoing"], true);
    assert!(hostile[0]["timeEnd"].as_i64() >= Some((now - 5) * 1000));
    assert!(tags(hostile[0]).contains(&format!("lock:{HOSTILE}").as_str()));
    let text = hostile[0]["text"].as_str().expect("text");
    assert!(
        text.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{text}"
    );
    assert!(!text.contains("<img") && !text.contains("<svg"), "{text}");
    assert!(
        !text.contains("href"),
        "a javascript: URL is no link: {text}"
    );
    assert!(text.contains("(still held)"), "{text}");

    // Build 9's claim, forced off by ops.
    let prod = find(&all, "claim", Some("prod"));
    assert_eq!(prod.len(), 1, "{all:?}");
    assert!(tags(prod[0]).contains(&"forced-release"), "{}", prod[0]);
    assert!(prod[0]["text"]
        .as_str()
        .is_some_and(|t| t.contains("stuck deploy")));

    // `old`, claimed 8 days ago and reaped: from the look-back to the reap.
    let old = find(&all, "claim", Some("old"));
    assert_eq!(old.len(), 1, "{all:?}");
    assert!(tags(old[0]).contains(&"reap"), "{}", old[0]);
    assert_eq!(old[0]["started_before_look_back"], true);
    assert_eq!(old[0]["time"].as_i64(), Some(read_from));

    // `ancient`, claimed 9 days ago and still held: from its claim.
    let ancient = find(&all, "claim", Some("ancient"));
    assert_eq!(ancient.len(), 1, "{all:?}");
    assert_eq!(ancient[0]["started_before_look_back"], true);
    assert_eq!(ancient[0]["ongoing"], true);
    assert!((ancient[0]["time"].as_i64().expect("time") / 1000 - (now - 9 * DAY)).abs() < 120);
    assert!(tags(ancient[0]).contains(&"job:nightly"));

    // The operator's hold and dequeue.
    let hold = find(&all, "hold", None);
    assert_eq!(hold.len(), 1, "{all:?}");
    assert!(tags(hold[0]).contains(&"operator:ops"));
    assert!(hold[0]["text"]
        .as_str()
        .is_some_and(|t| t.contains("upgrade &lt;b&gt;now&lt;/b&gt;")));
    let dq = find(&all, "dequeue", None);
    assert_eq!(dq.len(), 1, "{all:?}");
    assert!(dq[0]["title"]
        .as_str()
        .is_some_and(|t| t.contains("main/app/deploy #50")));

    // Filters: a pool, a lock; a range inside the look-back has no look-back object.
    let legacy = annotations(&server, &format!("{range}&pool=legacy"));
    assert!(
        legacy[1..].iter().all(|a| a["pool"] == "legacy"),
        "{legacy:?}"
    );
    assert_eq!(legacy.len(), 2, "{legacy:?}");
    let recent = format!("from={}&to={}", (now - 3600) * 1000, (now + 60) * 1000);
    let only_qa = annotations(&server, &format!("{recent}&lock=qa"));
    assert_eq!(only_qa.len(), 1, "{only_qa:?}");
    assert_eq!(only_qa[0]["lock"], "qa");
    let long_ago = format!(
        "from={}&to={}",
        (now - 9 * DAY) * 1000,
        (now - 8 * DAY) * 1000
    );
    let before = annotations(&server, &format!("{long_ago}&pool=envs"));
    assert_eq!(before.len(), 1, "only the look-back: {before:?}");
    assert_eq!(before[0]["kind"], "look_back");

    // Grafana's ${__from}/${__to} are epoch milliseconds; anything else is a 400.
    let r = server.get("/annotations.json?from=now-6h&to=now");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("epoch milliseconds"), "{}", r.body);
    let r = server.get("/annotations.json?from=2&to=1");
    assert_eq!(r.status, 400, "{}", r.body);
    let r = server.get("/annotations.json?window=1");
    assert_eq!(r.status, 400, "{}", r.body);
}

/// A repository with pool `envs` (qa, staging) behind `git daemon`.
fn small() -> (LockRepo, GitDaemon) {
    let repo = LockRepo::new("main");
    let local = source(&repo.path().display().to_string(), "main", POOL);
    pool(&local, &["--as", "ops", "init", "qa", "staging"]).assert_success();
    let daemon = GitDaemon::start(repo.root());
    (repo, daemon)
}

const TOKEN: &str = "glsa_pool_test_token";

fn push_server(daemon: &GitDaemon, grafana: &Grafana, token: &str) -> Server {
    let url = grafana.url();
    Server::start_args(
        &json!({"uri": daemon.url("locks.git"), "branch": "main"}),
        "1s",
        &[("GRAFANA_TOKEN", token)],
        &[
            "--grafana-url",
            &url,
            "--grafana-tags",
            "deployment,concourse",
        ],
    )
}

fn with_lock<'a>(all: &'a [Value], lock: &str) -> Vec<&'a Value> {
    let tag = format!("lock:{lock}");
    all.iter()
        .filter(|a| {
            a["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| *t == *tag))
        })
        .collect()
}

#[test]
fn a_claim_and_its_release_are_one_grafana_annotation_through_a_restart_and_an_outage() {
    let (_repo, daemon) = small();
    let src = source(&daemon.url("locks.git"), "main", POOL);
    let grafana = Grafana::start(TOKEN);
    let mut server = push_server(&daemon, &grafana, TOKEN);

    // A claim: found nowhere, then created with its tags.
    put(
        &src,
        json!({"claim": "qa"}),
        &Inputs::new(),
        &refs(&build("7")),
    );
    let made = grafana.wait_for("qa's claim", |a| with_lock(a, "qa").len() == 1);
    let qa = with_lock(&made, "qa")[0].clone();
    let tags: Vec<&str> = qa["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    for t in [
        "pool-resource",
        "pool:envs",
        "lock:qa",
        "job:deploy",
        "deployment",
        "concourse",
    ] {
        assert!(tags.contains(&t), "{t} in {qa}");
    }
    assert!(tags.iter().any(|t| t.starts_with("claim:")));
    assert_eq!(qa["time"], qa["timeEnd"], "a point until the release: {qa}");
    // The release ends that same annotation.
    let released = Inputs::new();
    released.lock("qa", "qa", b"");
    put(
        &src,
        json!({"release": "qa"}),
        &released,
        &refs(&build("7")),
    );
    grafana.wait_for("qa's release", |a| {
        with_lock(a, "qa")
            .iter()
            .any(|q| q["timeEnd"].as_i64() > q["time"].as_i64())
    });
    let first: Vec<_> = grafana.seen();
    eprintln!(
        "claim and release:\n{}",
        first
            .iter()
            .map(|s| s.line())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let methods: Vec<&str> = first.iter().map(|s| s.method.as_str()).collect();
    assert_eq!(methods, ["GET", "POST", "PATCH"], "{first:#?}");
    for s in &first {
        assert_eq!(
            s.authorization.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert!(!s.target.contains(TOKEN), "{}", s.target);
    }
    assert!(
        first[0].target.starts_with("/api/annotations?")
            && first[0].target.contains("tags=claim%3A")
    );
    assert_eq!(first[1].target, "/api/annotations");
    let post: Value = serde_json::from_str(&first[1].body).expect("POST body");
    assert!(post["time"].is_i64() && post["timeEnd"].is_null(), "{post}");
    assert_eq!(first[2].target, format!("/api/annotations/{}", qa["id"]));
    let patch: Value = serde_json::from_str(&first[2].body).expect("PATCH body");
    assert!(
        patch["timeEnd"].as_i64() > patch["time"].as_i64(),
        "{patch}"
    );

    // A restart finds the annotation and makes none.
    assert!(server.stop().success());
    let mut server = push_server(&daemon, &grafana, TOKEN);
    grafana.wait_for_request("the restart's look", |s| {
        s.method == "GET"
            && s.status == 200
            && s.target.contains("lock%3Aqa")
            && grafana.seen().len() > 3
    });
    let restart: Vec<_> = grafana.seen()[first.len()..].to_vec();
    eprintln!(
        "restart:\n{}",
        restart
            .iter()
            .map(|s| s.line())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(restart.iter().all(|s| s.method == "GET"), "{restart:#?}");
    assert_eq!(with_lock(&grafana.annotations(), "qa").len(), 1);

    // Grafana never answers: the page, JSON and metrics do; the claim made
    // meanwhile is backfilled once it answers again.
    grafana.hang(true);
    put(
        &src,
        json!({"claim": "staging"}),
        &Inputs::new(),
        &refs(&build("8")),
    );
    server.wait_for_line("got no answer");
    assert_eq!(server.get("/status.json").status, 200);
    assert_eq!(server.get("/annotations.json").status, 200);
    assert!(server.metric("pool_resource_grafana_failures_total{reason=\"unreachable\"}") >= 1.0);
    assert_eq!(server.metric("pool_resource_grafana_up"), 0.0);
    let before = grafana.seen().len();
    grafana.hang(false);
    grafana.fail_next(1);
    server.wait_for_line("pushed to");
    grafana.wait_for("staging's claim", |a| with_lock(a, "staging").len() == 1);
    assert!(server.metric("pool_resource_grafana_failures_total{reason=\"server_error\"}") >= 1.0);
    let outage: Vec<_> = grafana.seen()[restart.len() + first.len()..].to_vec();
    eprintln!(
        "outage:\n{}",
        outage
            .iter()
            .map(|s| s.line())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(grafana.seen()[before..].iter().any(|s| s.status == 503));
    assert_eq!(with_lock(&grafana.annotations(), "qa").len(), 1);
}

#[test]
fn a_refused_token_is_counted_and_logged_with_what_to_do_never_shown() {
    let (_repo, daemon) = small();
    let grafana = Grafana::start(TOKEN);
    let src = source(&daemon.url("locks.git"), "main", POOL);
    put(
        &src,
        json!({"claim": "qa"}),
        &Inputs::new(),
        &refs(&build("7")),
    );
    let wrong = "glsa_wrong_token_123";
    let mut server = push_server(&daemon, &grafana, wrong);
    let line = server.wait_for_line("Grafana refused");
    assert!(
        line.contains("GRAFANA_TOKEN") && line.contains("annotations:write"),
        "{line}"
    );
    assert!(!line.contains(wrong));
    assert!(server.metric("pool_resource_grafana_failures_total{reason=\"unauthorized\"}") >= 1.0);
    let metrics = server.get("/metrics").body;
    assert!(!metrics.contains(wrong));
    if Path::new("/usr/bin/promtool").exists() {
        use std::io::Write;
        let mut check = std::process::Command::new("/usr/bin/promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("starting promtool");
        check
            .stdin
            .take()
            .expect("stdin")
            .write_all(metrics.as_bytes())
            .expect("feeding promtool");
        let out = check.wait_with_output().expect("promtool");
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "promtool: {}{}\n{metrics}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        crate::support::skip(
            "annotations::a_refused_token_is_counted_and_logged_with_what_to_do_never_shown (promtool part)",
            "promtool is not installed",
        );
    }
    assert!(grafana.annotations().is_empty());
    assert!(grafana.seen().iter().all(|s| s.status == 401));
}

#[test]
fn the_example_dashboard_parses_asks_for_the_annotations_and_uses_only_served_metrics() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/grafana-dashboard.json"),
    )
    .expect("reading the dashboard");
    let d: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let query = d["annotations"]["list"]
        .as_array()
        .expect("annotations")
        .iter()
        .find(|a| a["datasource"]["type"] == "yesoreyeram-infinity-datasource")
        .expect("an Infinity annotation query");
    let target = &query["target"];
    assert!(target["url"]
        .as_str()
        .is_some_and(|u| u.ends_with("/annotations.json")));
    let params = target["url_options"]["params"].to_string();
    assert!(
        params.contains("${__from}") && params.contains("${__to}"),
        "{params}"
    );
    let columns = target["columns"].to_string();
    for c in ["\"time\"", "\"timeEnd\"", "\"tags_csv\"", "timestamp_epoch"] {
        assert!(columns.contains(c), "{c} in {columns}");
    }

    // Every metric a panel asks for is one /metrics serves (with Concourse
    // configured, for the reaper's gauges).
    let (_repo, daemon) = small();
    let concourse = crate::support::Concourse::start("7.11.0", &[]);
    let server = Server::start_args(
        &json!({"uri": daemon.url("locks.git"), "branch": "main"}),
        "1s",
        &[],
        &["--concourse-url", &concourse.url()],
    );
    server.wait_for_status("the pool", |s| s["pools"].is_array());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let served = loop {
        let m = server.get("/metrics").body;
        if m.contains("pool_resource_build_status_up") || std::time::Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let names: Vec<&str> = served
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut asked = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default();
            for (i, _) in expr.match_indices("pool_resource_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                asked.push(name);
            }
        }
    }
    for want in [
        "pool_resource_waiters",
        "pool_resource_oldest_wait_seconds",
        "pool_resource_dead_build_claims",
        "pool_resource_build_status_up",
    ] {
        assert!(asked.iter().any(|a| a == want), "a panel for {want}");
    }
    for a in &asked {
        assert!(names.contains(&a.as_str()), "{a} is not served:\n{served}");
    }
}

/// Every hold of the history, pushed: one Grafana annotation each, stored
/// with the tags `/annotations.json` shows (Grafana keeps a tag as
/// `key:value`, so a tag with a second colon would be stored, and found,
/// cut short), its times, and the point of a hold still going on.
#[test]
fn every_hold_of_the_history_is_one_grafana_annotation_tagged_as_the_json_shows() {
    let h = History::new();
    let grafana = Grafana::start(TOKEN);
    let url = grafana.url();
    let server = h.serve(
        &[("GRAFANA_TOKEN", TOKEN)],
        &[
            "--grafana-url",
            &url,
            "--grafana-tags",
            "deployment, env: prod ",
        ],
    );
    let now = pool_resource::process::clock::now_unix();
    let range = format!("from={}&to={}", (now - 30 * DAY) * 1000, (now + 60) * 1000);
    let shown: Vec<Value> = annotations(&server, &range)
        .into_iter()
        .filter(|a| a["kind"] != "look_back")
        .collect();
    assert!(shown.len() >= 8, "{shown:#?}");
    let stored = grafana.wait_for("every hold", |a| a.len() >= shown.len());
    let sorted = |a: &Value| {
        let mut t: Vec<String> = a["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .filter_map(|t| t.as_str().map(String::from))
            .collect();
        t.sort();
        t
    };
    assert_eq!(stored.len(), shown.len(), "{stored:#?}");
    for s in &shown {
        // --grafana-tags are for Grafana only, as Grafana keeps them.
        let mut tags = sorted(s);
        tags.extend(["deployment".to_string(), "env:prod".to_string()]);
        tags.sort();
        let same: Vec<&Value> = stored.iter().filter(|g| sorted(g) == tags).collect();
        assert_eq!(same.len(), 1, "Grafana has {tags:?} once: {stored:#?}");
        let g = same[0];
        assert_eq!(g["time"], s["time"], "{g} for {s}");
        if s["ongoing"] == true {
            assert_eq!(g["timeEnd"], g["time"], "a point while held: {g}");
        } else {
            assert_eq!(g["timeEnd"], s["timeEnd"], "{g} for {s}");
        }
    }
}
