//! The operator's commits that are not a lock's claim or release (holds of
//! a pool, dequeues) and the releases in the history `pool serve` keeps:
//! collected in its refresh ([`operator_events`]), within the same bounded
//! look-back as the history, for the annotations
//! ([`crate::operator::annotations`]).

use std::collections::BTreeMap;

use crate::error::Result;
use crate::model::commit::{Actor, CommitMeta};
use crate::model::message::{Parsed, Trailer, Verb};
use crate::model::shares::Shares;
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
    /// One build's share of a lock held shared (`shared: true`): from its
    /// `claiming:`/`sharing:` commit to the `unsharing:`/`unclaiming:`
    /// commit with the same `Pool-Resource-Share` id (or a release of the
    /// whole lock).
    Share {
        /// The pool.
        pool: String,
        /// The lock.
        lock: String,
        /// The holder id (the trailer's value).
        id: String,
        /// The commit that took it; `None` when it lies before the history
        /// read (only its end was seen).
        commit: Option<String>,
        /// Its committer time (the history's start when not seen).
        at: i64,
        /// Who took it (who gave it back, when the start was not seen).
        by: Actor,
        /// The commit that ended it, its time and maker; `None` while held
        /// (boxed: most events are not shares).
        ended: Option<Box<(String, i64, Actor)>>,
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
        let share = Parsed::new(&c.message).trailer(Trailer::Share).is_some();
        if release || share || operator_subject(&c.message).is_some() {
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
    let mut shares = ShareEnds::default();
    for c in &found {
        shares.see(store, c, pools, &mut events)?;
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
    shares.before_look_back(read_from, &mut events);
    Ok(History {
        events,
        read_from,
        complete: !cut && !stopped,
    })
}

/// The ends of shares seen walking newest first, waiting for their start.
#[derive(Default)]
struct ShareEnds {
    /// (pool, lock, holder id) → the commit that gave that share back.
    by_id: BTreeMap<(String, String, String), (String, i64, Actor)>,
    /// (pool, lock) → the oldest release of the whole lock seen so far:
    /// the nearest after a share whose own end was not seen (`pool
    /// release --force --all`).
    released: BTreeMap<(String, String), (String, i64, Actor)>,
}

impl ShareEnds {
    /// Takes in commit `c` (walking newest first): a share's end is kept,
    /// a share's start becomes an [`Event::Share`] with its end.
    fn see(
        &mut self,
        store: &mut dyn LockStore,
        c: &CommitMeta,
        pools: &[String],
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let id = Parsed::new(&c.message).trailer(Trailer::Share);
        for (verb, lock) in lock_verbs(c) {
            for pool in pools {
                let end = (c.id.clone(), c.time, Actor::of(c));
                let Some(id) = id else {
                    // A release of the whole lock, or its removal, ends
                    // every share of it whose own end was not seen.
                    if matches!(verb, Verb::Unclaiming | Verb::Removing)
                        && changed(store, c, &format!("{pool}/claimed/{lock}"))?
                    {
                        self.released.insert((pool.clone(), lock.to_string()), end);
                    }
                    continue;
                };
                // Every share commit writes the pool's shares file.
                if !changed(store, c, &format!("{}/{pool}.json", Shares::DIR))? {
                    continue;
                }
                let key = (pool.clone(), lock.to_string(), id.to_string());
                match verb {
                    Verb::Unsharing | Verb::Unclaiming => {
                        if verb == Verb::Unclaiming {
                            self.released
                                .insert((pool.clone(), lock.to_string()), end.clone());
                        }
                        self.by_id.insert(key, end);
                    }
                    Verb::Claiming | Verb::Sharing => {
                        let ended = self.by_id.remove(&key).or_else(|| {
                            self.released.get(&(key.0.clone(), key.1.clone())).cloned()
                        });
                        events.push(Event::Share {
                            pool: key.0,
                            lock: key.1,
                            id: key.2,
                            commit: Some(c.id.clone()),
                            at: c.time,
                            by: Actor::of(c),
                            ended: ended.map(Box::new),
                        });
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// The shares whose end was seen and whose start lies before the
    /// history read (`read_from`).
    fn before_look_back(self, read_from: i64, events: &mut Vec<Event>) {
        for ((pool, lock, id), (commit, at, by)) in self.by_id {
            events.push(Event::Share {
                pool,
                lock,
                id,
                commit: None,
                at: read_from.min(at),
                by: by.clone(),
                ended: Some(Box::new((commit, at, by))),
            });
        }
    }
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
