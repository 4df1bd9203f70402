//! The operator's commits that are not a lock's claim or release (holds of
//! a pool, dequeues) and the releases in the history `pool serve` keeps:
//! collected in its refresh ([`operator_events`]), within the same bounded
//! look-back as the history, for the annotations
//! ([`crate::operator::annotations`]).

use std::collections::BTreeMap;

use crate::error::Result;
use crate::model::commit::{Actor, CommitMeta};
use crate::model::message::Parsed;
use crate::store::reads::{changed, lock_verbs};
use crate::store::seam::{LockStore, HISTORY_WALK_LIMIT};

/// An operator's commit that is not a lock's claim or release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `pool hold`, until `pool unhold` (`ended` `None`: still held, or
    /// lifted beyond what was read).
    Hold {
        /// The pool.
        pool: String,
        /// The holding commit's id.
        commit: String,
        /// Its committer time, Unix seconds.
        at: i64,
        /// Who and why.
        by: Actor,
        /// The unholding commit's time, if it was lifted.
        ended: Option<i64>,
    },
    /// `pool dequeue`: a ticket taken out of the line.
    Dequeue {
        /// The pool.
        pool: String,
        /// The commit's id.
        commit: String,
        /// Its committer time.
        at: i64,
        /// Who and why.
        by: Actor,
        /// The build whose ticket was taken out, as the subject names it.
        build: String,
    },
    /// A release (or removal) of a claimed lock: those whose claim lies
    /// before the look-back stand for a hold that started there.
    Release {
        /// The pool.
        pool: String,
        /// The lock.
        lock: String,
        /// The releasing commit's id.
        commit: String,
        /// Its committer time.
        at: i64,
        /// Who released it.
        by: Actor,
    },
}

/// The operator's events of `pools` in the history kept since `since`
/// (Unix seconds), and how far back the history was read.
pub fn operator_events(
    store: &mut dyn LockStore,
    tip: &str,
    pools: &[String],
    since: i64,
) -> Result<History> {
    let mut found: Vec<CommitMeta> = Vec::new();
    let mut oldest = None;
    let mut stopped = false;
    let cut = store.walk_commits(tip, HISTORY_WALK_LIMIT, &mut |c| {
        if c.time < since {
            stopped = true;
            return true;
        }
        oldest = Some(c.time);
        let release = lock_verbs(c).iter().any(|(v, _)| !v.leaves_claimed());
        if release || operator_subject(&c.message).is_some() {
            found.push(c.clone());
        }
        false
    })?;
    let read_from = match (cut, oldest) {
        (true, Some(t)) => t.max(since),
        _ => since,
    };
    // Newest first: an unhold is seen before the hold it ends.
    let mut lifted: BTreeMap<String, i64> = BTreeMap::new();
    let mut events = Vec::new();
    for c in &found {
        for (verb, lock) in lock_verbs(c) {
            if verb.leaves_claimed() {
                continue;
            }
            for pool in pools {
                let path = format!("{pool}/claimed/{lock}");
                if store.entry_id(&c.id, &path)?.is_none() && changed(store, c, &path)? {
                    events.push(Event::Release {
                        pool: pool.clone(),
                        lock: lock.to_string(),
                        commit: c.id.clone(),
                        at: c.time,
                        by: Actor::of(c),
                    });
                }
            }
        }
        let Some((what, pool, build)) = operator_subject(&c.message) else {
            continue;
        };
        if !pools.contains(&pool) {
            continue;
        }
        match what {
            Op::Unhold => {
                lifted.insert(pool, c.time);
            }
            Op::Hold => events.push(Event::Hold {
                ended: lifted.remove(&pool),
                pool,
                commit: c.id.clone(),
                at: c.time,
                by: Actor::of(c),
            }),
            Op::Dequeue => events.push(Event::Dequeue {
                pool,
                commit: c.id.clone(),
                at: c.time,
                by: Actor::of(c),
                build,
            }),
        }
    }
    Ok(History {
        events,
        read_from,
        complete: !cut && !stopped,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Hold,
    Unhold,
    Dequeue,
}

/// What an operator's subject did, to which pool (and, for a dequeue, whose
/// ticket): the subjects [`crate::model::message`] writes.
pub(crate) fn operator_subject(message: &str) -> Option<(Op, String, String)> {
    let subject = Parsed::new(message).subject();
    if let Some(pool) = subject.strip_prefix("holding pool: ") {
        return Some((Op::Hold, pool.trim().to_string(), String::new()));
    }
    if let Some(pool) = subject.strip_prefix("unholding pool: ") {
        return Some((Op::Unhold, pool.trim().to_string(), String::new()));
    }
    let rest = subject.strip_prefix("dequeuing ")?;
    let (build, pool) = rest.rsplit_once(" from the line: ")?;
    Some((Op::Dequeue, pool.trim().to_string(), build.to_string()))
}

/// What a refresh adds to a [`Read`] for annotations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// The operator's holds and dequeues, newest first.
    pub events: Vec<Event>,
    /// From when the history was read, Unix seconds: the look-back's
    /// start, or the oldest commit seen when [`HISTORY_WALK_LIMIT`] cut
    /// the walk short.
    pub read_from: i64,
    /// Whether the walk reached the repository's first commit: nothing
    /// lies before it.
    pub complete: bool,
}
