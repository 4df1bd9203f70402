//! The retry loop ([`run`]) over a repository in memory
//! ([`crate::store::memory`]): each round reads the pool, recovers an
//! attempt without an answer, plans an acquire and commits once, as the
//! put's rounds do, while the store loses races and replies.

use std::time::Duration;

use super::*;
use crate::model::pool::{plan, LockState, Operation, Plan, Single};
use crate::process::retry::Backoff;
use crate::store::memory::{Fault, MemoryStore};

fn policy<'a>(log: &'a Log, interrupt: &'a Interrupt, backoff: Option<Backoff>) -> Policy<'a> {
    Policy {
        log,
        interrupt,
        backoff,
        max_races: 3,
        doing: "testing",
        uri: crate::store::memory::URI,
    }
}

fn backoff(max_failures: u32) -> Option<Backoff> {
    Some(Backoff {
        base: Duration::from_millis(1),
        cap: Duration::from_millis(1),
        max_failures,
    })
}

/// One round of an acquire: the commit made (or the one an earlier
/// round's lost reply landed), as the answer.
fn acquire(store: &mut MemoryStore, tries: &mut Tries) -> Result<Round<String>> {
    let snap = store.snapshot()?;
    if let Some(found) = tries.recovery.recover(store)? {
        return Ok(Round::Done(found.commit.to_string()));
    }
    tries.check_rejected(&snap.tip)?;
    let pool = crate::model::names::PoolPath::new("pool").expect("pool");
    let op = Operation::Single(Single::Acquire);
    let Plan::Commit(change) = plan(&op, &snap, &pool, &mut |_| 0)? else {
        return Ok(Round::Waited);
    };
    let message = format!("{}\n", change.subject);
    let step = Step::new(change, message);
    match tries.commit(store, &snap, std::slice::from_ref(&step))? {
        Some(id) => Ok(Round::Done(id.to_string())),
        None => Ok(Round::Again),
    }
}

fn quiet() -> Log {
    Log::new(Box::new(std::io::sink()))
}

#[test]
fn lost_races_on_a_store_give_up_at_the_limit_and_leave_the_pool_as_it_was() {
    let (log, interrupt) = (quiet(), Interrupt::default());
    let mut store = MemoryStore::new("pool", &["a"], &[]);
    for _ in 0..3 {
        store.fault(Fault::LoseRace);
    }
    let err =
        run(&policy(&log, &interrupt, None), |t| acquire(&mut store, t)).expect_err("gave up");
    assert!(matches!(err, Error::GaveUp { attempts: 3, .. }), "{err}");
    assert_eq!(store.locks(LockState::Unclaimed), ["a"]);
    assert_eq!(store.log().len(), 4, "{:?}", store.log());
}

#[test]
fn a_lost_race_below_the_limit_is_retried_and_the_commit_lands() {
    let (log, interrupt) = (quiet(), Interrupt::default());
    let mut store = MemoryStore::new("pool", &["a"], &[]);
    store.fault(Fault::LoseRace).fault(Fault::LoseRace);
    let id = run(&policy(&log, &interrupt, None), |t| acquire(&mut store, t)).expect("acquired");
    assert_eq!(id, store.tip());
    assert_eq!(store.locks(LockState::Claimed), ["a"]);
}

#[test]
fn a_failed_snapshot_fails_at_once_without_a_backoff_and_is_retried_with_one() {
    let (log, interrupt) = (quiet(), Interrupt::default());
    let mut store = MemoryStore::new("pool", &["a"], &[]);
    store.fault(Fault::SnapshotDown);
    let err = run(&policy(&log, &interrupt, None), |t| acquire(&mut store, t));
    assert!(matches!(err, Err(Error::Network { .. })), "{err:?}");
    store.fault(Fault::SnapshotDown).fault(Fault::SnapshotDown);
    let id = run(&policy(&log, &interrupt, backoff(5)), |t| {
        acquire(&mut store, t)
    })
    .expect("acquired");
    assert_eq!(id, store.tip());
    assert_eq!(store.snapshots(), 4);
}

#[test]
fn a_lost_reply_that_landed_is_found_by_the_next_round_and_not_made_again() {
    let (log, interrupt) = (quiet(), Interrupt::default());
    let mut store = MemoryStore::new("pool", &["a", "b"], &[]);
    store.fault(Fault::LoseReplyLanded);
    let id = run(&policy(&log, &interrupt, backoff(5)), |t| {
        acquire(&mut store, t)
    })
    .expect("acquired");
    assert_eq!(id, store.tip());
    assert_eq!(store.log().len(), 2, "{:?}", store.log());
    assert_eq!(store.locks(LockState::Claimed).len(), 1);
}

#[test]
fn network_faults_give_up_at_the_limit_naming_the_pushes_that_may_have_landed() {
    let (log, interrupt) = (quiet(), Interrupt::default());
    let mut store = MemoryStore::new("pool", &["a"], &[]);
    for _ in 0..3 {
        store.fault(Fault::LoseReplyNotLanded);
    }
    let err = run(&policy(&log, &interrupt, backoff(3)), |t| {
        acquire(&mut store, t)
    })
    .expect_err("gave up");
    let Error::GaveUp {
        attempts,
        unconfirmed,
        ..
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!(*attempts, 3);
    // Each was built on the tip, still there: each may land yet.
    assert_eq!(unconfirmed.len(), 3, "{unconfirmed:?}");
    assert!(unconfirmed.iter().all(|u| u.starts_with("lock a (commit ")));
    assert_eq!(store.locks(LockState::Unclaimed), ["a"]);
}

#[test]
fn a_refused_push_is_final_when_the_next_round_finds_the_same_tip() {
    let (log, interrupt) = (quiet(), Interrupt::default());
    let mut store = MemoryStore::new("pool", &["a"], &[]);
    store.fault(Fault::Refuse("protected branch".into()));
    let err =
        run(&policy(&log, &interrupt, None), |t| acquire(&mut store, t)).expect_err("refused");
    assert!(matches!(err, Error::PushRejected { .. }), "{err}");
    assert_eq!(store.snapshots(), 2);
    assert_eq!(store.locks(LockState::Unclaimed), ["a"]);
}
