//! Aborting a waiting `out`, as Concourse does: SIGTERM or SIGINT, then
//! SIGKILL about ten seconds later. The process must end within a second,
//! say which signal stopped it, leave no process behind holding stdout (the
//! Go resource's orphaned ssh-agent hung aborted builds), and never claim the
//! lock it was waiting for afterwards (the Go resource's "ghost claim").

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{spawn_bin, ssh_keygen, Bg, GitDaemon, LockRepo, Sshd};
use crate::{lock_name, source, version, Inputs};

const POOL: &str = "envs";

/// What the issue promises: the step ends within a second of the signal.
const PROMPT: Duration = Duration::from_secs(1);
/// How long the history is watched for a late claim.
const WATCH: Duration = Duration::from_millis(500);
/// Generous limit for things that only have to happen eventually.
const EVENTUALLY: Duration = Duration::from_secs(30);

/// A running `out`, its stderr read line by line as it comes.
fn start(src: &Value, params: Value, inputs: &Inputs) -> Bg {
    let request = json!({"source": src, "params": params});
    Bg::new(
        spawn_bin("out", &[inputs.path()], &request, &[]),
        "out",
        EVENTUALLY,
    )
}

/// Waits for `out` to exit and returns its status; fails if that took
/// `within` or longer.
fn exit_within(out: &mut Bg, within: Duration) -> ExitStatus {
    let (status, took) = out.wait_exit();
    assert!(
        took < within,
        "out took {took:?} to end (allowed: {within:?}); stderr:\n{}",
        out.stderr()
    );
    status
}

/// Processes whose parent is `pid`, from `/proc/*/stat`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("reading /proc").flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name may contain spaces; fields after it are fixed.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            children.push(child);
        }
    }
    children
}

fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// A repository whose only lock, `a`, is claimed.
fn held_repo() -> LockRepo {
    let repo = LockRepo::new("master");
    repo.add_lock(POOL, "a", true, b"a-meta");
    repo
}

/// Aborts a waiting `out` with `signal` and checks everything promised:
/// it ends within [`PROMPT`] with a non-zero status, says which signal,
/// prints no JSON, leaves no process behind, and never claims the lock once
/// it is released.
fn abort_while_waiting(repo: &LockRepo, src: &Value, params: Value, signal: &str) {
    let inputs = Inputs::new();
    let mut waiter = start(src, params, &inputs);
    waiter.until_logged(1, "waiting: ");
    assert_eq!(
        children_of(waiter.pid()),
        Vec::<u32>::new(),
        "out runs no child process"
    );

    waiter.signal(signal);
    let status = exit_within(&mut waiter, PROMPT);
    let stderr = waiter.all_stderr();
    assert!(
        !status.success(),
        "an aborted put fails: {status}\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("interrupted by SIG{signal}")),
        "stderr names the signal ({status}):\n{stderr}"
    );
    assert_eq!(waiter.stdout(), "", "no JSON after an abort");
    assert!(!process_exists(waiter.pid()), "the process is gone");

    let released = repo.move_lock(POOL, "a", false);
    let start = Instant::now();
    while start.elapsed() < WATCH {
        assert_eq!(repo.tip(), released, "a lock was claimed after the abort");
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(repo.unclaimed(POOL), ["a"]);
}

#[test]
fn sigterm_ends_a_waiting_claim_within_a_second() {
    let repo = held_repo();
    let mut src = source(&repo.file_url(), "master", POOL);
    // Only the signal can end a ten-second sleep this early.
    src["retry_delay"] = json!("10s");
    abort_while_waiting(&repo, &src, json!({"claim": "a"}), "TERM");
}

#[test]
fn sigint_ends_a_waiting_acquire_within_a_second() {
    let repo = held_repo();
    let mut src = source(&repo.path().display().to_string(), "master", POOL);
    src["retry_delay"] = json!("10s");
    abort_while_waiting(&repo, &src, json!({"acquire": true}), "INT");
}

#[test]
fn sigterm_ends_an_acquire_polling_git_daemon_within_a_second() {
    let repo = held_repo();
    let daemon = GitDaemon::start(repo.root());
    let mut src = source(&daemon.url("locks.git"), "master", POOL);
    // Short waits: the signal is as likely to land during a fetch.
    src["retry_delay"] = json!("20ms");
    abort_while_waiting(&repo, &src, json!({"acquire": true}), "TERM");
}

#[test]
fn sigint_ends_a_claim_waiting_over_ssh_without_leaving_a_process_behind() {
    let repo = held_repo();
    let key = ssh_keygen("ed25519", None, false);
    let sshd = Sshd::start(std::slice::from_ref(&key.public));
    let mut src = source(&sshd.url(repo.path()), "master", POOL);
    src["private_key"] = json!(key.private);
    src["known_hosts"] = json!(sshd.host_key_line());
    src["retry_delay"] = json!("10s");
    abort_while_waiting(&repo, &src, json!({"claim": "a"}), "INT");
}

#[test]
fn a_signal_racing_a_release_either_claims_and_says_so_or_claims_nothing() {
    let repo = held_repo();
    let mut src = source(&repo.file_url(), "master", POOL);
    src["retry_delay"] = json!("20ms");
    let (mut claimed, mut aborted) = (0, 0);
    for round in 0..6 {
        let inputs = Inputs::new();
        let mut waiter = start(&src, json!({"claim": "a"}), &inputs);
        waiter.until_logged(1, "waiting: ");
        let released = repo.move_lock(POOL, "a", false);
        // Vary the gap so the signal lands before, during and after the claim.
        std::thread::sleep(Duration::from_millis(round * 3));
        waiter.signal("TERM");
        let status = exit_within(&mut waiter, EVENTUALLY);
        let stdout = waiter.stdout();
        let stderr = waiter.all_stderr();
        if status.success() {
            // It claimed: it must say so, and its claim is the one on the branch.
            claimed += 1;
            let out: Value = serde_json::from_str(&stdout).expect("one JSON document");
            assert_eq!(lock_name(&out), "a");
            let log = repo.log();
            let claim = log.last().expect("a commit");
            assert_eq!(claim.sha, version(&out), "{stderr}");
            assert_eq!(claim.subject, "claiming: a");
            assert_eq!(claim.parents, std::slice::from_ref(&released));
        } else {
            // It did not: the released lock stays free.
            aborted += 1;
            assert_eq!(stdout, "");
            assert!(stderr.contains("interrupted by SIGTERM"), "{stderr}");
            // Its one commit after the signal takes it out of the line.
            let left = repo.tip();
            if left != released {
                let last = repo.log().pop().expect("a commit");
                assert_eq!(last.subject, "leaving the line: envs", "{stderr}");
                assert_eq!(last.parents, std::slice::from_ref(&released));
            }
            let start = Instant::now();
            while start.elapsed() < WATCH {
                assert_eq!(repo.tip(), left, "claimed after the abort:\n{stderr}");
                std::thread::sleep(Duration::from_millis(25));
            }
            repo.move_lock(POOL, "a", true);
        }
        assert_eq!(repo.claimed(POOL), ["a"], "round {round}");
    }
    eprintln!("{claimed} rounds claimed before the signal, {aborted} aborted");
}

/// An `out` claiming lock `a` through a fault proxy holding back the reply
/// of its push, which the server has applied: the claim is on the branch,
/// the put does not know it yet.
struct StalledClaim {
    repo: LockRepo,
    _daemon: GitDaemon,
    proxy: crate::support::faults::FaultProxy,
    _inputs: Inputs,
    put: Bg,
    /// The claim commit on the branch.
    claim: String,
}

fn claim_with_its_reply_stalled() -> StalledClaim {
    use crate::support::faults::{Fault, FaultProxy, Rates, Service};
    let repo = LockRepo::new("master");
    repo.add_lock(POOL, "a", false, b"a-meta");
    let daemon = GitDaemon::start(repo.root());
    let proxy = FaultProxy::start(daemon.port(), Rates::none());
    proxy.inject_on(Service::ReceivePack, Fault::StallPushReply);
    let src = source(&proxy.url("locks.git"), "master", POOL);
    let inputs = Inputs::new();
    let before = repo.tip();
    let put = start(&src, json!({"claim": "a"}), &inputs);
    let deadline = Instant::now() + EVENTUALLY;
    while repo.claimed(POOL).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the claim never reached the server:\n{}",
            put.stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let claim = repo.tip();
    assert_ne!(claim, before);
    StalledClaim {
        repo,
        _daemon: daemon,
        proxy,
        _inputs: inputs,
        put,
        claim,
    }
}

/// The put that ended with `status` and `stderr` gave claim `claim` back:
/// `a` is free again by one `unclaiming: a` on the claim, saying why, and
/// the put said so.
fn assert_given_back(repo: &LockRepo, claim: &str, status: ExitStatus, stderr: &str) {
    assert!(
        repo.claimed(POOL).is_empty(),
        "the put failed ({status}) and left its claim on the branch:\n{stderr}"
    );
    let last = repo.log().pop().expect("a commit");
    assert_eq!(last.subject, "unclaiming: a", "{stderr}");
    assert_eq!(last.parents, [claim.to_string()], "{stderr}");
    assert!(
        last.body
            .contains("Pool-Resource-Reason: SIGTERM aborted the put"),
        "{}",
        last.body
    );
    assert!(
        stderr.contains("this put gave it back: unclaiming: a"),
        "{stderr}"
    );
}

/// The claim's push reached the server, whose reply the proxy holds back,
/// when SIGTERM comes: the put must find out and either report the claim
/// (exit 0 with it) or give the lock back before it fails. Never exit
/// non-zero with the claim left on the branch (the ghost claim).
#[test]
fn sigterm_while_a_claims_reply_is_stalled_leaves_no_claim_behind() {
    // Bound whole: a pattern with `..` would drop the daemon and proxy.
    let mut stalled = claim_with_its_reply_stalled();
    let (repo, put, claim) = (&stalled.repo, &mut stalled.put, &stalled.claim);
    put.signal("TERM");
    // Concourse sends SIGKILL about ten seconds after SIGTERM.
    let status = exit_within(put, Duration::from_secs(9));
    let stdout = put.stdout();
    let stderr = put.all_stderr();
    eprintln!("{status}:\n{stderr}");
    if status.success() {
        let out: Value = serde_json::from_str(&stdout).expect("one JSON document");
        assert_eq!(&version(&out), claim, "{stderr}");
        return;
    }
    assert_eq!(stdout, "", "{stderr}");
    assert_given_back(repo, claim, status, &stderr);
}

/// As above, and the server then stays out of reach for 7 s after the
/// SIGTERM: the put has 9 s from the signal for all its cleanup (Concourse
/// kills at 10), and the give-back of a claim goes first. It once had 6 s
/// of its own for it, and exited with the claim left on the branch.
#[test]
fn a_claim_caught_by_sigterm_is_given_back_after_an_outage_of_seven_seconds() {
    let mut stalled = claim_with_its_reply_stalled();
    let (repo, proxy, put, claim) = (
        &stalled.repo,
        &stalled.proxy,
        &mut stalled.put,
        &stalled.claim,
    );
    // Every connection from now on is refused, until the outage ends.
    for _ in 0..10_000 {
        proxy.inject(crate::support::faults::Fault::DropAtAccept);
    }
    put.signal("TERM");
    let signalled = Instant::now();
    std::thread::sleep(Duration::from_secs(7));
    assert!(proxy.clear_script() > 0, "the outage ran out of drops");
    let status = exit_within(put, Duration::from_secs(4));
    let took = signalled.elapsed();
    let stderr = put.all_stderr();
    eprintln!("{status} {took:?} after SIGTERM:\n{stderr}");
    assert!(took < Duration::from_secs(10), "{took:?}:\n{stderr}");
    assert!(!status.success(), "{stderr}");
    assert_given_back(repo, claim, status, &stderr);
}
