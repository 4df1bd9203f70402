//! Unit tests of the put loop ([`run`]) over a repository in memory
//! ([`crate::store::memory`]) whose faults are those the git backend
//! produces: lost races, lost replies (landed or not), refused pushes, a
//! fetch that fails. Kept out of `put.rs` so that its logic and its tests
//! change apart.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::config::line::LineParams;
use crate::model::line::Line;
use crate::model::names::{LockName, PoolPath};
use crate::model::pool::LockState;
use crate::protocol::{Fields, RawRequest};
use crate::store::memory::{delete, file, Fault, MemoryStore};

/// What a put writes to its log, kept for the test to read.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log lock")).into_owned()
    }
}

/// One put's surroundings: source (`extra` added to it), params, log.
struct Put {
    source: Source,
    build: BuildInfo,
    log: Log,
    captured: Captured,
    interrupt: Interrupt,
    line: LineParams,
}

impl Put {
    fn new(extra: serde_json::Value, params: serde_json::Value) -> Put {
        let mut s =
            json!({"uri": "/tmp/locks", "branch": "main", "pool": "pool", "retry_delay": "20ms"});
        let s_obj = s.as_object_mut().expect("object");
        s_obj.extend(extra.as_object().expect("object").clone());
        let req =
            RawRequest::parse(json!({ "source": s }).to_string().as_bytes()).expect("request");
        let source = Source::from_request(&req).expect("source");
        let mut fields = Fields::new("params", params.as_object().expect("object").clone());
        let line = crate::config::line::parse_params(&mut fields).expect("params");
        let build = BuildInfo::from_env(|k| match k {
            "BUILD_ID" => Some("42".into()),
            "BUILD_JOB_NAME" => Some("deploy".into()),
            _ => None,
        });
        let captured = Captured::default();
        Put {
            source,
            build,
            log: Log::new(Box::new(captured.clone())),
            captured,
            interrupt: Interrupt::default(),
            line,
        }
    }

    fn plain() -> Put {
        Put::new(json!({}), json!({}))
    }

    fn run(&self, store: &mut MemoryStore, op: impl Into<Operation>) -> Result<Response> {
        let ctx = PutContext {
            source: &self.source,
            build: &self.build,
            log: &self.log,
            interrupt: &self.interrupt,
            backoff: Backoff {
                base: Duration::from_millis(1),
                cap: Duration::from_millis(2),
                max_failures: 5,
            },
            idempotent: false,
            fence: None,
            line: &self.line,
        };
        run(store, &op.into(), &ctx)
    }
}

fn lock(name: &str) -> LockName {
    LockName::new(name).expect("lock name")
}

/// The subjects of the branch's commits that claim, newest first.
fn claims(store: &MemoryStore) -> Vec<String> {
    store
        .log()
        .into_iter()
        .filter(|(_, m)| m.starts_with("claiming: "))
        .map(|(id, m)| format!("{id} {}", m.lines().next().unwrap_or("")))
        .collect()
}

/// Whether this build (`BUILD_ID` 42) has a ticket in the pool's line at `commit`.
fn in_line(store: &MemoryStore, commit: &str) -> bool {
    let path = Line::path(&PoolPath::new("pool").expect("pool"));
    store.file_at(commit, &path).is_some_and(|bytes| {
        Line::parse(&bytes)
            .tickets
            .iter()
            .any(|t| t.build_id.as_deref() == Some("42"))
    })
}

/// Another writer's release of `name`: the edits of `unclaiming: name`.
fn released(name: &str) -> Vec<FileEdit> {
    vec![
        delete(&format!("pool/claimed/{name}")),
        file(&format!("pool/unclaimed/{name}"), name.as_bytes()),
    ]
}

#[test]
fn lost_races_are_retried_and_the_acquire_lands_on_the_tip_that_beat_it() {
    let mut store = MemoryStore::new("pool", &["a"], &[]);
    store.fault(Fault::LoseRace).fault(Fault::LoseRace);
    let put = Put::plain();
    let response = put.run(&mut store, Single::Acquire).expect("acquired");
    assert_eq!(store.faults_left(), 0);
    assert_eq!(response.version.reference, store.tip());
    assert_eq!(store.locks(LockState::Claimed), ["a"]);
    let log = store.log();
    assert_eq!(log.len(), 4, "{log:?}");
    assert!(log[0].1.starts_with("claiming: a"), "{log:?}");
    assert!(
        log[1..3].iter().all(|(_, m)| m == "another writer\n"),
        "{log:?}"
    );
    assert!(
        put.captured.text().contains("2 lost races"),
        "{}",
        put.captured.text()
    );
}

#[test]
fn a_lost_reply_whose_commit_landed_is_the_answer_and_claims_nothing_more() {
    let mut store = MemoryStore::new("pool", &["a", "b"], &[]);
    store.fault(Fault::LoseReplyLanded);
    let put = Put::plain();
    let response = put.run(&mut store, Single::Acquire).expect("acquired");
    let claims = claims(&store);
    assert_eq!(claims.len(), 1, "{claims:?}");
    assert_eq!(response.version.reference, store.tip());
    assert_eq!(store.locks(LockState::Claimed).len(), 1);
    assert_eq!(store.locks(LockState::Unclaimed).len(), 1);
    let text = put.captured.text();
    assert_eq!(
        text.matches("an earlier push whose reply was lost did reach the branch")
            .count(),
        1,
        "{text}"
    );
}

#[test]
fn a_lost_reply_whose_commit_did_not_land_is_retried_and_claims_once() {
    let mut store = MemoryStore::new("pool", &["a", "b"], &[]);
    store.fault(Fault::LoseReplyNotLanded);
    let put = Put::plain();
    let response = put.run(&mut store, Single::Acquire).expect("acquired");
    assert_eq!(claims(&store).len(), 1, "{:?}", store.log());
    assert_eq!(store.log().len(), 2, "{:?}", store.log());
    assert_eq!(response.version.reference, store.tip());
    assert_eq!(store.locks(LockState::Claimed).len(), 1);
    assert!(!put.captured.text().contains("did reach the branch"));
}

#[test]
fn a_lost_reply_seen_again_after_other_commits_landed_on_it_is_still_the_answer() {
    let mut store = MemoryStore::new("pool", &["a", "b"], &[]);
    store
        .fault(Fault::LoseReplyLanded)
        .fault(Fault::SnapshotDown);
    // The put's second look fails; by its third, another writer's
    // commit lies on top of the one whose reply was lost.
    store.before_snapshot(3, "another writer\n", vec![file("elsewhere", b"1")]);
    let put = Put::plain();
    let response = put.run(&mut store, Single::Acquire).expect("acquired");
    let claims = claims(&store);
    assert_eq!(claims.len(), 1, "{claims:?}");
    assert!(
        claims[0].starts_with(&response.version.reference),
        "{claims:?}"
    );
    assert_ne!(response.version.reference, store.tip());
    assert_eq!(store.snapshots(), 3);
    assert_eq!(store.locks(LockState::Claimed).len(), 1);
}

#[test]
fn two_lost_replies_in_a_row_settle_on_the_one_that_landed_and_claim_once() {
    let mut store = MemoryStore::new("pool", &["a", "b"], &[]);
    store
        .fault(Fault::LoseReplyNotLanded)
        .fault(Fault::LoseReplyLanded);
    let put = Put::plain();
    let response = put.run(&mut store, Single::Acquire).expect("acquired");
    let claims = claims(&store);
    assert_eq!(claims.len(), 1, "{claims:?}");
    assert_eq!(response.version.reference, store.tip());
    assert_eq!(store.locks(LockState::Claimed).len(), 1);
    assert_eq!(store.locks(LockState::Unclaimed).len(), 1);
}

#[test]
fn a_refused_push_is_final_when_the_next_look_finds_the_same_tip() {
    let mut store = MemoryStore::new("pool", &["a"], &[]);
    store.fault(Fault::Refuse("pre-receive hook declined".into()));
    let before = store.tip().to_string();
    let err = Put::plain()
        .run(&mut store, Single::Acquire)
        .expect_err("refused");
    assert!(matches!(err, Error::PushRejected { .. }), "{err}");
    assert!(
        err.chain().contains("pre-receive hook declined"),
        "{}",
        err.chain()
    );
    assert_eq!(store.tip(), before);
    assert_eq!(store.locks(LockState::Unclaimed), ["a"]);
}

#[test]
fn a_refused_push_is_tried_again_when_the_branch_moved_since() {
    let mut store = MemoryStore::new("pool", &["a"], &[]);
    store.fault(Fault::Refuse("stale info".into()));
    store.before_snapshot(2, "another writer\n", vec![file("elsewhere", b"1")]);
    let put = Put::plain();
    let response = put.run(&mut store, Single::Acquire).expect("acquired");
    assert_eq!(response.version.reference, store.tip());
    assert_eq!(store.locks(LockState::Claimed), ["a"]);
    assert!(put
        .captured
        .text()
        .contains("push rejected (stale info); looking again"));
}

#[test]
fn a_release_unclaims_the_lock_in_one_commit() {
    let mut store = MemoryStore::new("pool", &["b"], &["a"]);
    let response = Put::plain()
        .run(&mut store, Single::Release(lock("a")))
        .expect("released");
    assert_eq!(response.version.reference, store.tip());
    assert_eq!(store.locks(LockState::Claimed), Vec::<String>::new());
    assert_eq!(store.locks(LockState::Unclaimed), ["a", "b"]);
    let log = store.log();
    assert_eq!(log.len(), 2);
    assert!(log[0].1.starts_with("unclaiming: a\n"), "{log:?}");
}

#[test]
fn an_acquire_with_every_lock_taken_and_queue_false_polls_until_one_is_released() {
    let mut store = MemoryStore::new("pool", &[], &["a"]);
    store.before_snapshot(3, "unclaiming: a\n", released("a"));
    let put = Put::new(json!({"queue": false}), json!({}));
    let response = put.run(&mut store, Single::Acquire).expect("acquired");
    assert_eq!(response.version.reference, store.tip());
    assert_eq!(store.locks(LockState::Claimed), ["a"]);
    assert_eq!(store.snapshots(), 3);
    // Polling writes nothing while it waits: no ticket, no line file.
    let log = store.log();
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(
        put.captured.text().contains("waiting: "),
        "{}",
        put.captured.text()
    );
}

#[test]
fn an_acquire_with_every_lock_taken_waits_in_line_then_claims_and_leaves_it() {
    let mut store = MemoryStore::new("pool", &[], &["a"]);
    store.before_snapshot(3, "unclaiming: a\n", released("a"));
    let put = Put::plain();
    let response = put.run(&mut store, Single::Acquire).expect("acquired");
    assert_eq!(response.version.reference, store.tip());
    assert_eq!(store.locks(LockState::Claimed), ["a"]);
    // It joined the line while it waited, and its claim took it out.
    let joined = store.log().iter().any(|(id, _)| in_line(&store, id));
    assert!(joined, "{:?}", store.log());
    assert!(!in_line(&store, store.tip()));
}

#[test]
fn an_acquire_with_every_lock_taken_gives_up_at_wait_timeout_and_leaves_the_line() {
    let mut store = MemoryStore::new("pool", &[], &["a"]);
    let put = Put::new(json!({}), json!({"wait_timeout": "100ms"}));
    let err = put.run(&mut store, Single::Acquire).expect_err("timed out");
    assert!(matches!(err, Error::NotServed { .. }), "{err}");
    assert_eq!(store.locks(LockState::Claimed), ["a"]);
    let joined = store.log().iter().any(|(id, _)| in_line(&store, id));
    assert!(joined, "{:?}", store.log());
    assert!(!in_line(&store, store.tip()));
}

/// The subjects of the branch's commits, oldest first.
fn subjects(store: &MemoryStore) -> Vec<String> {
    let mut log: Vec<String> = store
        .log()
        .into_iter()
        .map(|(_, m)| m.lines().next().unwrap_or_default().to_string())
        .collect();
    log.reverse();
    log
}

#[test]
fn leaving_the_line_after_a_lost_race_and_a_landed_lost_reply_leaves_once() {
    let mut store = MemoryStore::new("pool", &[], &["a"]);
    store
        .fault_files("leaving the line", Fault::LoseRace)
        .fault_files("leaving the line", Fault::LoseReplyLanded);
    let put = Put::new(json!({}), json!({"wait_timeout": "100ms"}));
    let err = put.run(&mut store, Single::Acquire).expect_err("timed out");
    assert!(matches!(err, Error::NotServed { .. }), "{err}");
    assert_eq!(store.faults_left(), 0);
    assert!(!in_line(&store, store.tip()));
    let log = subjects(&store);
    let leaves = log
        .iter()
        .filter(|s| s.starts_with("leaving the line"))
        .count();
    assert_eq!(leaves, 1, "{log:?}");
    assert_eq!(
        log.last().map(String::as_str),
        Some("leaving the line: pool")
    );
    // The landed leave's lost reply is no warning: its next look found the
    // ticket gone.
    assert!(
        !put.captured.text().contains("could not leave"),
        "{}",
        put.captured.text()
    );
}

#[test]
fn leaving_the_line_through_network_faults_retries_them_and_leaves() {
    let mut store = MemoryStore::new("pool", &[], &["a"]);
    store
        .fault_files("leaving the line", Fault::LoseReplyNotLanded)
        .fault_files("leaving the line", Fault::LoseReplyNotLanded);
    let put = Put::new(json!({}), json!({"wait_timeout": "100ms"}));
    put.run(&mut store, Single::Acquire).expect_err("timed out");
    assert_eq!(store.faults_left(), 0);
    assert!(!in_line(&store, store.tip()));
    let text = put.captured.text();
    assert_eq!(
        text.matches("leaving the line of pool pool: ").count(),
        2,
        "{text}"
    );
    assert_eq!(
        subjects(&store).last().map(String::as_str),
        Some("leaving the line: pool")
    );
}

#[test]
fn a_leave_refused_twice_on_the_same_tip_gives_up_and_says_the_ticket_will_be_dropped() {
    let mut store = MemoryStore::new("pool", &[], &["a"]);
    store
        .fault_files("leaving the line", Fault::Refuse("protected branch".into()))
        .fault_files("leaving the line", Fault::Refuse("protected branch".into()));
    let put = Put::new(json!({}), json!({"wait_timeout": "100ms"}));
    put.run(&mut store, Single::Acquire).expect_err("timed out");
    assert!(in_line(&store, store.tip()), "{:?}", subjects(&store));
    let text = put.captured.text();
    assert!(
        text.contains("could not leave the line of pool pool"),
        "{text}"
    );
    assert!(text.contains("protected branch"), "{text}");
    assert!(text.contains("drop the ticket"), "{text}");
}

/// The holder ids of `lock` in the pool's shares file at the tip.
fn share_holders(store: &MemoryStore, lock: &str) -> Vec<String> {
    let path = crate::model::shares::Shares::path(&PoolPath::new("pool").expect("pool"));
    store
        .file_at(store.tip(), &path)
        .map(|b| crate::model::shares::Shares::parse(&b))
        .unwrap_or_default()
        .holders(&LockName::new(lock).expect("lock"))
        .iter()
        .map(|h| h.id.clone())
        .collect()
}

#[test]
fn a_shared_put_whose_lost_reply_landed_holds_one_share_and_reports_it_once() {
    let mut store = MemoryStore::new("pool", &["a"], &[]);
    let put = Put::plain();
    let first = Single::Share {
        lock: None,
        id: "r1".into(),
    };
    put.run(&mut store, first).expect("first share");
    store.fault(Fault::LoseReplyLanded).fault(Fault::LoseRace);
    let second = Single::Share {
        lock: Some(lock("a")),
        id: "r2".into(),
    };
    let response = put.run(&mut store, second).expect("second share");
    assert_eq!(share_holders(&store, "a"), ["r1", "r2"]);
    let shares: Vec<String> = store
        .log()
        .into_iter()
        .filter(|(_, m)| m.starts_with("sharing: a"))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(shares.len(), 1, "{:?}", store.log());
    assert_eq!(response.version.reference, shares[0]);
    // Each holder gives back its own share; the last frees the lock.
    for id in ["r2", "r1"] {
        put.run(
            &mut store,
            Single::Unshare {
                lock: lock("a"),
                id: id.into(),
            },
        )
        .expect("unshare");
    }
    assert_eq!(store.locks(LockState::Unclaimed), ["a"]);
    assert!(share_holders(&store, "a").is_empty());
    let again = put.run(
        &mut store,
        Single::Unshare {
            lock: lock("a"),
            id: "r1".into(),
        },
    );
    assert!(again.is_err(), "a share given back twice is refused");
}
