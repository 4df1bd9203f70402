//! The waiting room: puts that wait take a place in the pool's line
//! (`.pool-resource/line/POOL.json`) and are served in its order. Every
//! test waits on what it can observe (a waiting log line, the line file at
//! the tip, a process ending), never on a fixed sleep.

use std::time::{Duration, Instant};

use pool_resource::model::line::Line;
use serde_json::{json, Value};

use crate::support::faults::{Fault, FaultProxy, Rates, Service};
use crate::support::{
    spawn_bin, AwsEnv, Bg, CodeCommitServer, CommitInfo, GitDaemon, Imds, ImdsOptions, Keyring,
    LockRepo,
};
use crate::{lock_name, put, source, version, Inputs};

const POOL: &str = "envs";
const LINE: &str = ".pool-resource/line/envs.json";
/// Longer than any wait here should take.
const DEADLINE: Duration = Duration::from_secs(40);

/// A pool whose locks `names` are all claimed.
fn claimed_pool(names: &[&str]) -> LockRepo {
    let repo = LockRepo::new("main");
    for n in names {
        repo.add_lock(POOL, n, true, format!("{n}-meta\n").as_bytes());
    }
    repo
}

/// The environment of build `name` of job `deploy`.
fn build(name: &str) -> Vec<(String, String)> {
    [
        ("BUILD_ID", format!("10{name}")),
        ("BUILD_NAME", name.to_string()),
        ("BUILD_JOB_NAME", "deploy".into()),
        ("BUILD_PIPELINE_NAME", "app".into()),
        ("BUILD_TEAM_NAME", "main".into()),
        ("POOL_RESOURCE_BACKOFF_BASE_MS", "10".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The tickets in the line file at the tip: (build, wants) in file order.
fn tickets(repo: &LockRepo) -> Vec<Value> {
    match repo.file_at("HEAD", LINE) {
        Some(bytes) => {
            let line: Value = serde_json::from_slice(&bytes).expect("the line file is JSON");
            line["tickets"].as_array().cloned().unwrap_or_default()
        }
        None => Vec::new(),
    }
}

fn builds_in_line(repo: &LockRepo) -> Vec<String> {
    tickets(repo)
        .iter()
        .map(|t| t["build"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Waits until `cond` holds, panicking with `what` after [`DEADLINE`].
fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A put of build `name` running in the background.
fn start(src: &Value, params: Value, name: &str, inputs: &Inputs) -> Bg {
    start_with(src, params, name, inputs, &[])
}

fn start_with(
    src: &Value,
    params: Value,
    name: &str,
    inputs: &Inputs,
    extra: &[(&str, &str)],
) -> Bg {
    let env = build(name);
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend_from_slice(extra);
    let request = json!({"source": src, "params": params});
    put_of(spawn_bin("out", &[inputs.path()], &request, &env), name)
}

/// The put `child` of build `name`, in the background.
fn put_of(child: std::process::Child, name: &str) -> Bg {
    Bg::new(child, format!("build {name}"), DEADLINE)
}

/// The name of the build whose put `bg` is.
fn build_name(bg: &Bg) -> String {
    bg.name().trim_start_matches("build ").to_string()
}

/// Releases `lock` with a put of its own.
fn release(src: &Value, lock: &str) {
    let inputs = Inputs::new();
    inputs.lock("held", lock, b"");
    put(
        src,
        json!({"release": "held"}),
        &inputs,
        &build("releaser")
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
    );
}

/// Starts builds `names` one after another, each once the one before it
/// is in line, and returns them.
fn join_in_turn(
    repo: &LockRepo,
    src: &Value,
    params: &[(&str, Value)],
    inputs: &Inputs,
) -> Vec<Bg> {
    let mut started = Vec::new();
    for (i, (name, p)) in params.iter().enumerate() {
        let mut bg = start(src, p.clone(), name, inputs);
        until(&format!("build {name} in line"), || {
            tickets(repo).len() == i + 1
        });
        bg.until_logged(1, "waiting: ");
        started.push(bg);
    }
    started
}

/// Releases the lock `rounds` times, each time once one of `waiting`
/// ended with it; returns the builds in the order they were served.
fn serve_one_lock(src: &Value, mut waiting: Vec<Bg>, lock: &str) -> Vec<String> {
    let mut served = Vec::new();
    while !waiting.is_empty() {
        release(src, lock);
        let mut done = None;
        until("a waiter to be served", || {
            done = waiting.iter_mut().position(|b| !b.running());
            done.is_some()
        });
        let bg = waiting.remove(done.unwrap_or_default());
        let name = build_name(&bg);
        let (ok, stdout, stderr) = bg.finish().parts();
        assert!(ok, "build {name} failed:\n{stderr}");
        let out: Value = serde_json::from_str(&stdout).expect("one JSON document");
        assert_eq!(lock_name(&out), lock);
        served.push(name);
    }
    served
}

fn four_builds_are_served_in_the_order_they_joined(uri: String, repo: &LockRepo) {
    let mut src = source(&uri, "main", POOL);
    src["retry_delay"] = json!("300ms");
    let inputs = Inputs::new();
    let waiting = join_in_turn(
        repo,
        &src,
        &[
            ("1", json!({"acquire": true})),
            ("2", json!({"claim": "only"})),
            ("3", json!({"acquire": true})),
            ("4", json!({"acquire": true})),
        ],
        &inputs,
    );
    assert_eq!(
        builds_in_line(repo),
        [
            "main/app/deploy #1",
            "main/app/deploy #2",
            "main/app/deploy #3",
            "main/app/deploy #4"
        ]
    );
    assert_eq!(serve_one_lock(&src, waiting, "only"), ["1", "2", "3", "4"]);
    assert!(tickets(repo).is_empty(), "each claim took its ticket out");
    assert!(
        repo.file_at("HEAD", LINE).is_none(),
        "an empty line is no file"
    );
}

#[test]
fn four_builds_that_join_the_line_one_after_another_get_the_lock_in_that_order() {
    let repo = claimed_pool(&["only"]);
    four_builds_are_served_in_the_order_they_joined(repo.file_url(), &repo);
}

#[test]
fn over_git_daemon_four_builds_get_the_lock_in_the_order_they_joined() {
    let repo = claimed_pool(&["only"]);
    let daemon = GitDaemon::start(repo.root());
    four_builds_are_served_in_the_order_they_joined(daemon.url("locks.git"), &repo);
}

#[test]
fn a_higher_priority_goes_first_whenever_it_came() {
    let repo = claimed_pool(&["only"]);
    let src = source(&repo.file_url(), "main", POOL);
    let inputs = Inputs::new();
    let waiting = join_in_turn(
        &repo,
        &src,
        &[
            ("1", json!({"acquire": true})),
            ("2", json!({"acquire": true, "priority": -1})),
            ("3", json!({"acquire": true})),
            ("4", json!({"acquire": true, "priority": 10})),
        ],
        &inputs,
    );
    assert_eq!(serve_one_lock(&src, waiting, "only"), ["4", "1", "3", "2"]);
}

#[test]
fn an_acquire_of_two_is_not_starved_by_later_single_acquires() {
    let repo = claimed_pool(&["a", "b"]);
    let src = source(&repo.file_url(), "main", POOL);
    let inputs = Inputs::new();
    let mut waiting = join_in_turn(
        &repo,
        &src,
        &[
            ("pair", json!({"acquire": 2})),
            ("single", json!({"acquire": true})),
        ],
        &inputs,
    );
    release(&src, "a");
    // The single acquire sees the free lock and leaves it to the pair.
    waiting[1].until_logged(
        1,
        "waiting: free lock a of pool envs kept for builds ahead in line",
    );
    assert_eq!(repo.unclaimed(POOL), ["a"]);
    release(&src, "b");
    let single = waiting.pop().expect("single");
    let pair = waiting.pop().expect("pair");
    let (ok, stdout, stderr) = pair.finish().parts();
    assert!(ok, "{stderr}");
    let out: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(lock_name(&out), "a, b");
    assert_eq!(builds_in_line(&repo), ["main/app/deploy #single"]);
    drop(single);
}

#[test]
fn a_claim_waiter_does_not_hold_up_an_acquire_that_can_take_another_lock() {
    let repo = claimed_pool(&["a", "b"]);
    let src = source(&repo.file_url(), "main", POOL);
    let inputs = Inputs::new();
    let mut waiting = join_in_turn(
        &repo,
        &src,
        &[
            ("claimer", json!({"claim": "a"})),
            ("acquirer", json!({"acquire": true})),
        ],
        &inputs,
    );
    release(&src, "b");
    let acquirer = waiting.pop().expect("acquirer");
    let (ok, stdout, stderr) = acquirer.finish().parts();
    assert!(ok, "{stderr}");
    assert_eq!(
        lock_name(&serde_json::from_str(&stdout).expect("JSON")),
        "b"
    );
    assert_eq!(builds_in_line(&repo), ["main/app/deploy #claimer"]);
    assert!(waiting[0].running(), "the claim of a still waits");
}

#[test]
fn wait_timeout_gives_up_claims_nothing_and_leaves_nobody_blocked() {
    let repo = claimed_pool(&["only"]);
    let src = source(&repo.file_url(), "main", POOL);
    let inputs = Inputs::new();
    let mut waiting = join_in_turn(
        &repo,
        &src,
        &[
            ("impatient", json!({"acquire": true, "wait_timeout": "1s"})),
            ("patient", json!({"acquire": true})),
        ],
        &inputs,
    );
    let patient = waiting.pop().expect("patient");
    let impatient = waiting.pop().expect("impatient");
    let (ok, stdout, stderr) = impatient.finish().parts();
    assert!(!ok, "a timed-out put fails:\n{stderr}");
    assert_eq!(stdout, "");
    let last = stderr.lines().last().unwrap_or_default().to_string();
    for part in [
        "no lock of pool \"envs\" was claimed",
        "gave up after wait_timeout 1.0s (position 1 of 2 in line)",
        "all 1 locks of pool envs are claimed: only",
    ] {
        assert!(stderr.contains(part), "{part:?} not in:\n{stderr}");
    }
    assert!(last.starts_with("error: "), "{stderr}");
    assert_eq!(
        builds_in_line(&repo),
        ["main/app/deploy #patient"],
        "it left the line"
    );
    assert_eq!(repo.claimed(POOL), ["only"], "it claimed nothing");
    release(&src, "only");
    let (ok, _, stderr) = patient.finish().parts();
    assert!(ok, "the build behind it is served:\n{stderr}");
    assert!(tickets(&repo).is_empty());
}

#[test]
fn sigterm_takes_the_waiter_out_of_the_line_before_it_exits() {
    let repo = claimed_pool(&["only"]);
    let mut src = source(&repo.file_url(), "main", POOL);
    src["retry_delay"] = json!("10s");
    let inputs = Inputs::new();
    let mut waiting = join_in_turn(&repo, &src, &[("1", json!({"claim": "only"}))], &inputs);
    let bg = waiting.pop().expect("waiter");
    bg.signal("TERM");
    let start = Instant::now();
    let (ok, _, stderr) = bg.finish().parts();
    assert!(start.elapsed() < Duration::from_secs(2), "{stderr}");
    assert!(!ok);
    assert!(stderr.contains("interrupted by SIGTERM"), "{stderr}");
    assert!(stderr.contains("leaving the line: envs"), "{stderr}");
    assert!(tickets(&repo).is_empty(), "the ticket is gone at once");
    let last = repo.log().pop().expect("a commit");
    assert_eq!(last.subject, "leaving the line: envs");
    assert_eq!(repo.claimed(POOL), ["only"]);
}

#[test]
fn a_killed_waiter_stops_blocking_after_its_lease() {
    let repo = claimed_pool(&["only"]);
    let mut src = source(&repo.file_url(), "main", POOL);
    src["waiter_lease"] = json!("1s");
    let inputs = Inputs::new();
    let mut waiting = join_in_turn(
        &repo,
        &src,
        &[
            ("killed", json!({"acquire": true})),
            ("next", json!({"acquire": true})),
        ],
        &inputs,
    );
    let mut killed = waiting.remove(0);
    killed.kill();
    release(&src, "only");
    let next = waiting.pop().expect("next");
    let (ok, stdout, stderr) = next.finish().parts();
    assert!(ok, "{stderr}");
    assert_eq!(
        lock_name(&serde_json::from_str(&stdout).expect("JSON")),
        "only"
    );
    assert!(
        tickets(&repo).is_empty(),
        "the dead ticket went with the claim"
    );
}

#[test]
fn with_queue_false_a_waiting_put_writes_nothing() {
    let repo = claimed_pool(&["only"]);
    let mut src = source(&repo.file_url(), "main", POOL);
    src["queue"] = json!(false);
    let inputs = Inputs::new();
    let tip = repo.tip();
    let mut bg = start(&src, json!({"acquire": true}), "1", &inputs);
    bg.until_logged(3, "waiting: all 1 locks of pool envs are claimed");
    assert_eq!(repo.tip(), tip, "nothing committed while waiting");
    release(&src, "only");
    let (ok, _, stderr) = bg.finish().parts();
    assert!(ok, "{stderr}");
    assert!(repo.log().iter().all(|c| !c.subject.contains("line")));
}

#[test]
fn check_emits_no_version_for_the_lines_commits() {
    let repo = claimed_pool(&["only"]);
    let src = source(&repo.file_url(), "main", POOL);
    let before = repo.tip();
    let inputs = Inputs::new();
    let waiting = join_in_turn(&repo, &src, &[("1", json!({"acquire": true}))], &inputs);
    assert_ne!(repo.tip(), before, "the ticket was committed");
    let run = crate::support::run_bin(
        "check",
        &[],
        &json!({"source": src, "version": {"ref": before}}),
        &[],
    );
    let versions = run.assert_success().json();
    assert_eq!(versions, json!([{"ref": before}]), "{}", run.stderr);
    drop(waiting);
}

#[test]
fn bad_line_params_fail_before_any_traffic_naming_the_field() {
    let repo = claimed_pool(&["only"]);
    let tip = repo.tip();
    for (params, src_extra, want) in [
        (
            json!({"acquire": true, "priority": "high"}),
            json!({}),
            "params.priority",
        ),
        (
            json!({"acquire": true, "wait_timeout": "soon"}),
            json!({}),
            "params.wait_timeout",
        ),
        (
            json!({"release": "x", "priority": 1}),
            json!({}),
            "params.priority applies to acquire and claim",
        ),
        (
            json!({"acquire": true}),
            json!({"waiter_lease": "10ms"}),
            "source.waiter_lease must be at least 1s",
        ),
        (
            json!({"acquire": true}),
            json!({"queue": "no"}),
            "source.queue",
        ),
    ] {
        let mut src = source(&repo.file_url(), "main", POOL);
        src.as_object_mut()
            .expect("object")
            .extend(src_extra.as_object().expect("object").clone());
        let inputs = Inputs::new();
        inputs.lock("x", "only", b"");
        let run = crate::support::run_bin(
            "out",
            &[inputs.path()],
            &json!({"source": src, "params": params}),
            &[],
        );
        run.assert_failure();
        assert!(
            run.stderr.contains(want),
            "{want:?} not in:\n{}",
            run.stderr
        );
    }
    assert_eq!(repo.tip(), tip);
}

#[test]
fn on_the_api_backend_waiters_are_served_in_order_and_leave_no_ticket() {
    let repo = claimed_pool(&["only"]);
    let imds = Imds::start(ImdsOptions::default(), Keyring::new());
    let api = CodeCommitServer::start(repo.path(), "locks", "eu-west-2", imds.keyring());
    let src = json!({
        "uri": "https://git-codecommit.eu-west-2.amazonaws.com/v1/repos/locks",
        "branch": "main", "pool": POOL, "retry_delay": "200ms", "backend": "codecommit-api"
    });
    let inputs = Inputs::new();
    let mut waiting = Vec::new();
    let mut envs = Vec::new();
    for (i, name) in ["1", "2"].iter().enumerate() {
        let request = json!({"source": src, "params": {"acquire": true}});
        let env = AwsEnv::new()
            .with_imds(&imds)
            .set("AWS_ENDPOINT_URL_CODECOMMIT", &api.endpoint())
            .set("BUILD_NAME", name)
            .set("BUILD_JOB_NAME", "deploy")
            .set("BUILD_PIPELINE_NAME", "app")
            .set("BUILD_TEAM_NAME", "main");
        let mut bg = put_of(env.spawn("out", &[inputs.path()], &request), name);
        envs.push(env);
        until("the ticket", || tickets(&repo).len() == i + 1);
        bg.until_logged(1, "waiting: ");
        waiting.push(bg);
    }
    let mut served = Vec::new();
    while !waiting.is_empty() {
        repo.move_lock(POOL, "only", false);
        let mut done = None;
        until("a waiter to be served", || {
            done = waiting.iter_mut().position(|b| !b.running());
            done.is_some()
        });
        let bg = waiting.remove(done.unwrap_or_default());
        let name = build_name(&bg);
        let (ok, _, stderr) = bg.finish().parts();
        assert!(ok, "{stderr}");
        served.push(name);
    }
    assert_eq!(served, ["1", "2"]);
    assert!(tickets(&repo).is_empty());
}

/// A put through a fault proxy in front of `git daemon` (the test's own
/// puts go to the daemon directly), waiting for the claimed lock `only`.
struct Faulty {
    repo: LockRepo,
    proxy: FaultProxy,
    /// Through the proxy.
    src: Value,
    /// Straight to the daemon.
    direct: Value,
    /// The tip before the put.
    base: String,
    _daemon: GitDaemon,
}

impl Faulty {
    fn new() -> Faulty {
        let repo = claimed_pool(&["only"]);
        let daemon = GitDaemon::start(repo.root());
        let proxy = FaultProxy::start(daemon.port(), Rates::none());
        let mut src = source(&proxy.url("locks.git"), "main", POOL);
        src["retry_delay"] = json!("200ms");
        let direct = source(&daemon.url("locks.git"), "main", POOL);
        Faulty {
            base: repo.tip(),
            repo,
            proxy,
            src,
            direct,
            _daemon: daemon,
        }
    }

    /// The tickets of build id `build` in the line file at the tip.
    fn tickets_of(&self, build: &str) -> usize {
        tickets(&self.repo)
            .iter()
            .filter(|t| t["build_id"] == build)
            .count()
    }

    /// The commits since the put started, oldest first, each with the
    /// number of tickets of `build` in the line at it; checks that no
    /// commit ever holds more than one.
    fn history_of(&self, build: &str) -> Vec<(CommitInfo, usize)> {
        let log = self.repo.log();
        let start = log
            .iter()
            .position(|c| c.sha == self.base)
            .expect("the base is on the branch");
        let history: Vec<(CommitInfo, usize)> = log[start + 1..]
            .iter()
            .map(|c| {
                let n = match self.repo.file_at(&c.sha, LINE) {
                    Some(bytes) => Line::parse(&bytes)
                        .tickets
                        .iter()
                        .filter(|t| t.build_id.as_deref() == Some(build))
                        .count(),
                    None => 0,
                };
                (c.clone(), n)
            })
            .collect();
        for (c, n) in &history {
            assert!(
                *n <= 1,
                "{} ({}) holds {n} tickets of build {build}",
                c.sha,
                c.subject
            );
        }
        history
    }
}

/// The subjects of `history`, each with its number of tickets of the put.
fn shape(history: &[(CommitInfo, usize)]) -> Vec<(String, usize)> {
    history
        .iter()
        .map(|(c, n)| (c.subject.clone(), *n))
        .collect()
}

/// The push of a waiter's ticket lands and its reply is lost: the put sees
/// a network error and retries. It finds its ticket by id in the line and
/// keeps that place: the line holds exactly one ticket of the put at every
/// commit, and the claim that ends the wait takes it out.
#[test]
fn a_lost_reply_to_a_ticket_commit_leaves_one_ticket_which_the_claim_takes_out() {
    let f = Faulty::new();
    f.proxy
        .inject_on(Service::ReceivePack, Fault::LosePushReply);
    let inputs = Inputs::new();
    let mut bg = start(&f.src, json!({"claim": "only"}), "lost", &inputs);
    bg.until_logged(
        1,
        "an earlier ticket write whose reply was lost did reach the branch: this put joined the line in pool envs",
    );
    // Two more looks at the line after it found its ticket: no second one.
    let looked = bg
        .stderr()
        .lines()
        .filter(|l| l.starts_with("waiting: "))
        .count();
    bg.until_logged(looked + 2, "waiting: ");
    assert_eq!(f.tickets_of("10lost"), 1, "{}", bg.stderr());
    let counts = f.proxy.counts();
    assert_eq!(
        (counts.lost_push_replies, counts.unreported_updates),
        (1, 1),
        "{counts:?}"
    );
    release(&f.direct, "only");
    let (ok, stdout, stderr) = bg.finish().parts();
    assert!(ok, "{stderr}");
    assert!(stderr.contains("retrying in"), "{stderr}");
    let out: Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(lock_name(&out), "only");
    let history = f.history_of("10lost");
    assert_eq!(
        shape(&history),
        [
            ("waiting in line: envs".to_string(), 1),
            ("unclaiming: only".to_string(), 1),
            ("claiming: only".to_string(), 0),
        ],
        "one ticket, written once, taken out by the claim:\n{stderr}"
    );
    assert_eq!(history[2].0.sha, version(&out), "the put printed its claim");
    assert!(f.repo.file_at("HEAD", LINE).is_none(), "no line is left");
}

/// The put waited in line; the push of its claim (which takes its ticket
/// out) lands and its reply is lost. The next round recognises the claim
/// on the branch and reports it: no second claim, no ticket written again
/// or left behind.
#[test]
fn a_lost_reply_to_the_claim_that_ends_a_wait_is_recognised_and_leaves_no_ticket() {
    let f = Faulty::new();
    // The ticket's push goes through; the claim's reply is lost.
    f.proxy.inject_on(Service::ReceivePack, Fault::Pass);
    f.proxy
        .inject_on(Service::ReceivePack, Fault::LosePushReply);
    let inputs = Inputs::new();
    let mut bg = start(&f.src, json!({"claim": "only"}), "lost", &inputs);
    until("the put in line", || f.tickets_of("10lost") == 1);
    bg.until_logged(1, "waiting: ");
    release(&f.direct, "only");
    let (ok, stdout, stderr) = bg.finish().parts();
    assert!(ok, "{stderr}");
    let out: Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(lock_name(&out), "only");
    assert!(
        stderr.contains(&format!(
            "an earlier push whose reply was lost did reach the branch: {} (only)",
            version(&out)
        )),
        "{stderr}"
    );
    let counts = f.proxy.counts();
    assert_eq!(
        (counts.lost_push_replies, counts.unreported_updates),
        (1, 1),
        "{counts:?}"
    );
    let history = f.history_of("10lost");
    assert_eq!(
        shape(&history),
        [
            ("waiting in line: envs".to_string(), 1),
            ("unclaiming: only".to_string(), 1),
            ("claiming: only".to_string(), 0),
        ],
        "one claim, which took the ticket out; nothing after it:\n{stderr}"
    );
    assert_eq!(history[2].0.sha, version(&out), "the put printed its claim");
    assert!(f.repo.file_at("HEAD", LINE).is_none(), "no line is left");
    assert_eq!(f.repo.claimed(POOL), ["only"]);
}

/// Installs a pre-receive hook in `repo` that, the first time a push of a
/// commit whose subject starts with `subject` arrives, moves the branch
/// itself first (an unrelated commit), so that the push loses the race on
/// the server as two real pushes do: `failed to update ref`.
fn race_the_first_push_of(repo: &LockRepo, subject: &str) {
    let hook = repo.path().join("hooks/pre-receive");
    let script = format!(
        r#"#!/bin/sh
while read old new ref; do
  subject=$(git log -1 --format=%s "$new")
  case "$subject" in
    "{subject}"*)
      if [ ! -e "$GIT_DIR/raced" ]; then
        touch "$GIT_DIR/raced"
        unset GIT_QUARANTINE_PATH GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES
        export GIT_AUTHOR_NAME=racer GIT_AUTHOR_EMAIL=racer@example.com
        export GIT_COMMITTER_NAME=racer GIT_COMMITTER_EMAIL=racer@example.com
        c=$(git commit-tree "$old^{{tree}}" -p "$old" -m "racing: another commit")
        git update-ref "$ref" "$c" "$old"
      fi;;
  esac
done
exit 0
"#
    );
    std::fs::write(&hook, script).expect("writing the hook");
    let status = std::process::Command::new("chmod")
        .args(["+x", &hook.display().to_string()])
        .status()
        .expect("chmod");
    assert!(status.success());
}

fn leaving_after(abort: &str) {
    let repo = claimed_pool(&["only"]);
    let daemon = GitDaemon::start(repo.root());
    let mut src = source(&daemon.url("locks.git"), "main", POOL);
    src["retry_delay"] = json!("10s");
    let inputs = Inputs::new();
    let params = match abort {
        "wait_timeout" => json!({"claim": "only", "wait_timeout": "2s"}),
        _ => json!({"claim": "only"}),
    };
    let mut waiting = join_in_turn(&repo, &src, &[("1", params)], &inputs);
    let bg = waiting.pop().expect("waiter");
    race_the_first_push_of(&repo, "leaving the line");
    if abort == "TERM" {
        bg.signal("TERM");
    }
    let (ok, _, stderr) = bg.finish().parts();
    assert!(!ok, "{stderr}");
    assert!(
        repo.path().join("raced").exists(),
        "the hook raced the leave:\n{stderr}"
    );
    assert!(stderr.contains("leaving the line: envs"), "{stderr}");
    assert!(!stderr.contains("could not leave"), "{stderr}");
    assert!(tickets(&repo).is_empty(), "the ticket is gone:\n{stderr}");
    let subjects: Vec<String> = repo.log().into_iter().map(|c| c.subject).collect();
    let n = subjects.len();
    assert_eq!(
        subjects[n - 2..],
        ["racing: another commit", "leaving the line: envs"],
        "the leave was planned again on the moved branch"
    );
    assert_eq!(repo.claimed(POOL), ["only"], "leaving claims nothing");
}

#[test]
fn a_leave_after_sigterm_that_loses_a_race_is_planned_again_and_lands() {
    leaving_after("TERM");
}

#[test]
fn a_leave_after_wait_timeout_that_loses_a_race_is_planned_again_and_lands() {
    leaving_after("wait_timeout");
}

#[test]
fn a_killed_head_of_the_line_is_dropped_within_seconds_at_the_default_lease() {
    let repo = claimed_pool(&["only"]);
    let mut src = source(&repo.file_url(), "main", POOL);
    // The default waiter_lease (5m); a shorter retry_delay only to keep
    // the test short (the watch looks every 5s at most anyway).
    src["retry_delay"] = json!("1s");
    let inputs = Inputs::new();
    let mut waiting = join_in_turn(
        &repo,
        &src,
        &[
            ("killed", json!({"acquire": true})),
            ("next", json!({"acquire": true})),
        ],
        &inputs,
    );
    let mut killed = waiting.remove(0);
    killed.kill();
    release(&src, "only");
    let freed = Instant::now();
    let next = waiting.pop().expect("next");
    let (ok, stdout, stderr) = next.finish().parts();
    let took = freed.elapsed();
    assert!(ok, "{stderr}");
    assert_eq!(
        lock_name(&serde_json::from_str(&stdout).expect("JSON")),
        "only"
    );
    assert!(
        took < Duration::from_secs(35),
        "a dead head of the line must cost the pool seconds, not the 5m lease: {took:?}\n{stderr}"
    );
    assert!(
        stderr.contains("dropping a waiter: envs") && stderr.contains("main/app/deploy #killed"),
        "{stderr}"
    );
    let log = repo.log();
    let drop = log
        .iter()
        .position(|c| c.subject == "dropping a waiter: envs")
        .expect("a commit dropping the dead waiter");
    assert!(
        log[drop]
            .body
            .contains("Pool-Resource-Reason: main/app/deploy #killed"),
        "{}",
        log[drop].body
    );
    assert_eq!(log.last().expect("a commit").subject, "claiming: only");
    let line = Line::parse(&repo.file_at("HEAD", LINE).unwrap_or_default());
    assert!(line.tickets.is_empty(), "no ticket left");
    assert_eq!(line.dropped.len(), 1, "the drop is noted: {line:?}");
}

#[test]
fn a_later_attempt_of_the_same_build_takes_its_earlier_attempts_place() {
    let repo = claimed_pool(&["only"]);
    let mut src = source(&repo.file_url(), "main", POOL);
    src["retry_delay"] = json!("300ms");
    let inputs = Inputs::new();
    let mut waiting = join_in_turn(
        &repo,
        &src,
        &[
            ("7", json!({"acquire": true})),
            ("8", json!({"acquire": true})),
        ],
        &inputs,
    );
    // Build 7's put dies (a lost worker); the step's next attempt runs.
    let mut first = waiting.remove(0);
    first.kill();
    let mut again = start(&src, json!({"acquire": true}), "7", &inputs);
    again.until_logged(1, "this build's earlier attempt left ticket");
    again.until_logged(1, "first of 2 in line");
    assert!(
        !again.stderr().contains("ahead: main/app/deploy #7"),
        "a put never waits behind its own earlier attempt:\n{}",
        again.stderr()
    );
    assert_eq!(
        builds_in_line(&repo),
        ["main/app/deploy #8", "main/app/deploy #7"],
        "one ticket for build 7, in its old place (the file order is not the line's order)"
    );
    let served = serve_one_lock(&src, vec![again, waiting.remove(0)], "only");
    assert_eq!(served, ["7", "8"]);
}
