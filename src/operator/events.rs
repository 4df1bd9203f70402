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

#[cfg(test)]
mod tests {
    //! The pairing of each share's start with its end, over commits made
    //! as the resource and the operator make them (in the memory store).

    use super::*;
    use crate::model::message::commit_message;
    use crate::model::names::{LockName, LockState, PoolPath};
    use crate::model::shares::{Holder, ShareEdit};
    use crate::operator::watch::Read;
    use crate::store::memory::{delete, file, MemoryStore};
    use crate::store::seam::FileEdit;

    const POOL: &str = "envs";

    /// A pool whose locks are shared and given back commit by commit, with
    /// the shares file each commit leaves.
    struct Repo {
        store: MemoryStore,
        shares: Shares,
    }

    impl Repo {
        fn new() -> Repo {
            Repo {
                store: MemoryStore::new(POOL, &["env", "other"], &[]),
                shares: Shares::default(),
            }
        }

        fn lock(name: &str) -> LockName {
            LockName::new(name).unwrap()
        }

        fn lock_file(state: LockState, lock: &str) -> String {
            format!("{POOL}/{}/{lock}", state.dir())
        }

        /// The edits moving `lock` into `to`.
        fn moved(lock: &str, to: LockState) -> Vec<FileEdit> {
            let from = match to {
                LockState::Claimed => LockState::Unclaimed,
                LockState::Unclaimed => LockState::Claimed,
            };
            vec![
                delete(&Repo::lock_file(from, lock)),
                file(&Repo::lock_file(to, lock), lock.as_bytes()),
            ]
        }

        /// Lands a commit of `edits` and the shares file after `edit`.
        fn land(
            &mut self,
            subject: String,
            trailers: &[(Trailer, String)],
            edit: ShareEdit,
            holder: Option<&Holder>,
            mut edits: Vec<FileEdit>,
        ) -> String {
            self.shares = self.shares.after(&edit, holder);
            let path = Shares::path(&PoolPath::new(POOL).unwrap());
            edits.push(match self.shares.to_bytes() {
                Some(bytes) => file(&path, &bytes),
                None => delete(&path),
            });
            let message = commit_message(&subject, None, trailers);
            self.store.land(&message, &edits)
        }

        /// Build `id` takes a share of `lock`: `claiming:` when it is the
        /// first, `sharing:` otherwise.
        fn share(&mut self, lock: &str, id: &str) -> String {
            let first = !self.shares.is_shared(&Repo::lock(lock));
            let holder = Holder {
                id: id.into(),
                build: format!("main/app/smoke #{id}"),
                build_id: None,
                url: None,
                since: 1,
            };
            let (verb, edits) = match first {
                true => (Verb::Claiming, Repo::moved(lock, LockState::Claimed)),
                false => (Verb::Sharing, Vec::new()),
            };
            self.land(
                verb.subject(lock),
                &[
                    (Trailer::Build, holder.build.clone()),
                    (Trailer::Share, id.into()),
                ],
                ShareEdit::Join {
                    lock: Repo::lock(lock),
                    id: id.into(),
                },
                Some(&holder),
                edits,
            )
        }

        /// Build `id` gives its share back through its `get` directory:
        /// `unsharing:`, or `unclaiming:` when it is the last.
        fn give_back(&mut self, lock: &str, id: &str) -> String {
            let last = self.shares.holders(&Repo::lock(lock)).len() == 1;
            let (verb, edits) = match last {
                true => (Verb::Unclaiming, Repo::moved(lock, LockState::Unclaimed)),
                false => (Verb::Unsharing, Vec::new()),
            };
            self.land(
                verb.subject(lock),
                &[
                    (Trailer::Build, format!("main/app/smoke #{id}")),
                    (Trailer::Share, id.into()),
                ],
                ShareEdit::Leave {
                    lock: Repo::lock(lock),
                    id: id.into(),
                },
                None,
                edits,
            )
        }

        /// An operator frees `lock` for every holder at once: with a
        /// `Pool-Resource-Share` trailer per holder (`pool release --force
        /// --all`), or without any (a tool that knows nothing of shares).
        fn release_all(&mut self, lock: &str, with_trailers: bool) -> String {
            let mut trailers = vec![(Trailer::Operator, "ops".to_string())];
            if with_trailers {
                for h in self.shares.holders(&Repo::lock(lock)) {
                    trailers.push((Trailer::Share, h.id.clone()));
                }
            }
            trailers.push((Trailer::Reason, "stuck".into()));
            self.land(
                Verb::Unclaiming.subject(lock),
                &trailers,
                ShareEdit::Clear {
                    lock: Repo::lock(lock),
                },
                None,
                Repo::moved(lock, LockState::Unclaimed),
            )
        }

        /// `pool remove L --force` of a claimed lock: its holders go with it.
        fn remove(&mut self, lock: &str) -> String {
            self.land(
                Verb::Removing.subject(lock),
                &[(Trailer::Operator, "ops".into())],
                ShareEdit::Clear {
                    lock: Repo::lock(lock),
                },
                None,
                vec![delete(&Repo::lock_file(LockState::Claimed, lock))],
            )
        }

        /// A commit outside the pool (another pool's, a hold's).
        fn elsewhere(&mut self, n: usize) {
            self.store
                .land("another writer\n", &[file("elsewhere", &n.to_be_bytes())]);
        }

        /// The events of the whole history.
        fn events(&mut self, since: i64) -> History {
            let tip = self.store.tip().to_string();
            operator_events(&mut self.store, &tip, &[POOL.to_string()], since).unwrap()
        }
    }

    /// Each share seen: (holder id, its start commit, its end commit),
    /// sorted by holder id.
    type Seen = (String, Option<String>, Option<String>);

    fn shares(h: &History) -> Vec<Seen> {
        let mut out: Vec<Seen> = h
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Share {
                    id, commit, ended, ..
                } => Some((
                    id.clone(),
                    commit.clone(),
                    ended.as_ref().map(|e| e.0.clone()),
                )),
                _ => None,
            })
            .collect();
        out.sort();
        out
    }

    fn seen(id: &str, start: &str, end: Option<&str>) -> Seen {
        (id.into(), Some(start.into()), end.map(String::from))
    }

    #[test]
    fn a_share_ends_at_its_own_unsharing_and_the_last_at_its_unclaiming() {
        let mut repo = Repo::new();
        let r1 = repo.share("env", "r1");
        let r2 = repo.share("env", "r2");
        let r3 = repo.share("env", "r3");
        let r2_out = repo.give_back("env", "r2");
        let r1_out = repo.give_back("env", "r1");
        let r3_out = repo.give_back("env", "r3");
        assert!(repo.store.log()[0].1.starts_with("unclaiming: env"));
        assert_eq!(
            shares(&repo.events(0)),
            [
                seen("r1", &r1, Some(&r1_out)),
                seen("r2", &r2, Some(&r2_out)),
                seen("r3", &r3, Some(&r3_out)),
            ]
        );
    }

    #[test]
    fn a_share_still_held_has_no_end_though_an_earlier_one_ended() {
        let mut repo = Repo::new();
        let r1 = repo.share("env", "r1");
        let r1_out = repo.give_back("env", "r1");
        let r2 = repo.share("env", "r2");
        let r3 = repo.share("env", "r3");
        let r2_out = repo.give_back("env", "r2");
        assert_eq!(
            shares(&repo.events(0)),
            [
                seen("r1", &r1, Some(&r1_out)),
                seen("r2", &r2, Some(&r2_out)),
                seen("r3", &r3, None),
            ]
        );
    }

    #[test]
    fn a_forced_release_of_every_holder_ends_every_share_of_the_lock() {
        for with_trailers in [true, false] {
            let mut repo = Repo::new();
            let o = repo.share("other", "o1");
            let r1 = repo.share("env", "r1");
            let r2 = repo.share("env", "r2");
            let r3 = repo.share("env", "r3");
            let r3_out = repo.give_back("env", "r3");
            let forced = repo.release_all("env", with_trailers);
            let count = repo.store.log()[0].1.matches("Pool-Resource-Share").count();
            assert_eq!(count, if with_trailers { 2 } else { 0 });
            assert_eq!(
                shares(&repo.events(0)),
                [
                    seen("o1", &o, None),
                    seen("r1", &r1, Some(&forced)),
                    seen("r2", &r2, Some(&forced)),
                    seen("r3", &r3, Some(&r3_out)),
                ],
                "trailers: {with_trailers}"
            );
        }
    }

    #[test]
    fn a_removal_of_a_lock_held_shared_ends_its_shares() {
        let mut repo = Repo::new();
        let o = repo.share("other", "o1");
        let r1 = repo.share("env", "r1");
        let r2 = repo.share("env", "r2");
        let removed = repo.remove("env");
        assert_eq!(
            shares(&repo.events(0)),
            [
                seen("o1", &o, None),
                seen("r1", &r1, Some(&removed)),
                seen("r2", &r2, Some(&removed)),
            ]
        );
    }

    #[test]
    fn a_share_given_back_after_the_history_read_began_starts_at_the_read() {
        let mut repo = Repo::new();
        repo.share("env", "r1");
        repo.share("env", "r2");
        // More commits than a walk reads: r1's and r2's starts lie beyond.
        for n in 0..HISTORY_WALK_LIMIT {
            repo.elsewhere(n);
        }
        let r1_out = repo.give_back("env", "r1");
        let history = repo.events(0);
        assert!(!history.complete);
        let r1: Vec<&Event> = history
            .events
            .iter()
            .filter(|e| matches!(e, Event::Share { id, .. } if id == "r1"))
            .collect();
        match r1.as_slice() {
            [Event::Share {
                commit: None,
                at,
                ended: Some(end),
                ..
            }] => {
                assert_eq!(end.0, r1_out);
                assert_eq!(*at, history.read_from.min(end.1));
            }
            other => panic!("r1 is shown as {other:?}"),
        }
        // r2 still holds: nothing in the history read says so.
        assert_eq!(shares(&history).len(), 1, "{:?}", history.events);
    }

    /// The annotations of a read of the store, with the history kept
    /// since `since`.
    fn annotations(repo: &mut Repo, since: i64) -> Vec<crate::operator::annotations::Annotation> {
        let pool = PoolPath::new(POOL).unwrap();
        let status = crate::operator::ops::status::status(&mut repo.store, "main", Some(&pool));
        let read = Read {
            status: status.unwrap(),
            history: Vec::new(),
            metadata: BTreeMap::new(),
            annotations: repo.events(since),
        };
        crate::operator::annotations::all(&read, crate::process::clock::now_unix(), &[])
    }

    #[test]
    fn a_share_held_since_before_the_history_read_is_shown_from_the_shares_file() {
        let mut repo = Repo::new();
        repo.share("env", "r1");
        repo.share("env", "r2");
        repo.give_back("env", "r2");
        let tagged = |all: &[crate::operator::annotations::Annotation], id: &str| {
            all.iter()
                .filter(|a| a.tags.contains(&format!("share:{id}")))
                .cloned()
                .collect::<Vec<_>>()
        };
        // Read from later than every commit: only the shares file knows r1.
        let later = crate::process::clock::now_unix() + 3600;
        let all = annotations(&mut repo, later);
        let r1 = tagged(&all, "r1");
        assert_eq!(r1.len(), 1, "{all:?}");
        assert!(r1[0].ongoing && r1[0].started_before_look_back, "{r1:?}");
        assert!(r1[0].title.contains("main/app/smoke #r1"), "{r1:?}");
        assert!(tagged(&all, "r2").is_empty(), "{all:?}");
        // Its start read: shown once, from its commit.
        let all = annotations(&mut repo, 0);
        let r1 = tagged(&all, "r1");
        assert_eq!(r1.len(), 1, "{all:?}");
        assert!(r1[0].commit.is_some() && !r1[0].started_before_look_back);
        assert_eq!(tagged(&all, "r2").len(), 1, "{all:?}");
    }
}
