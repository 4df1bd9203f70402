//! Pushes whose reply was lost: kept until the history says what became
//! of them, once for both backends.
//!
//! A commit attempt that got no clear answer (a push whose reply was lost,
//! a CodeCommit call the SDK retried) may be on the branch, or land there
//! later. A backend says so in its [`Attempt`], marking the commit the way
//! it can recognise it ([`Mark`]: git knows the id before pushing; the
//! CodeCommit API makes the commit itself, so there it is the
//! `Pool-Resource-Nonce` trailer). [`Recovery`] keeps those attempts and,
//! before the next plan, walks the history ([`CommitWalk::walk_commits`])
//! to decide each one's [`Fate`]: a put whose earlier push did land must
//! report it rather than take a second lock.

use crate::error::{Error, Result};
use crate::model::message::{Parsed, Trailer};
use crate::model::pool::{CommitId, Snapshot};
use crate::store::seam::{
    Attempt, CommitOutcome, CommitWalk, LockStore, Mark, PutStore, Step, Unconfirmed,
    HISTORY_WALK_LIMIT,
};

/// An unconfirmed change found on the branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// Its commit id.
    pub commit: CommitId,
    /// The lock it changed.
    pub lock: String,
}

/// What the history says of one [`Unconfirmed`] change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Its commit is on the branch, with this id.
    Landed(CommitId),
    /// The branch is still at its parent: it may yet land, and a new commit
    /// on the same tip excludes it (compare-and-swap), so keep watching.
    MayLand,
    /// The branch moved past its parent without it: it can never land.
    CannotLand,
    /// Neither it nor its parent is within the history the walk may read.
    Unknown,
}

/// The commit attempts of one put (or one operator command) that got no
/// clear answer.
#[derive(Clone, Debug, Default)]
pub struct Recovery {
    pending: Vec<Unconfirmed>,
}

impl Recovery {
    /// Commits `steps` on `base` through `store`, keeping the attempt if
    /// it got no clear answer.
    pub fn commit(
        &mut self,
        store: &mut dyn PutStore,
        base: &Snapshot,
        steps: &[Step],
    ) -> Result<CommitOutcome> {
        self.keep(store.commit(base, steps))
    }

    /// Keeps `attempt` if it got no clear answer; its outcome.
    pub fn keep(&mut self, attempt: Attempt) -> Result<CommitOutcome> {
        if let Some(change) = attempt.unconfirmed {
            self.pending.push(change);
        }
        attempt.outcome
    }

    /// Whether an earlier attempt reached the branch after all. An attempt
    /// is forgotten only once the history shows it can never land; when
    /// the look fails, every attempt is kept for the next round
    /// ([`settle`]). Fails, not retryable, when the history within reach
    /// cannot tell, since planning a new change then could take a second
    /// lock.
    pub fn recover(&mut self, store: &mut dyn LockStore) -> Result<Option<Recovered>> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        let tip = store.branch_tip()?.ok_or_else(|| Error::Repository {
            what: "could not look for a push whose reply was lost".into(),
            detail: "the branch no longer exists".into(),
        })?;
        // Decided on a copy: a walk that fails (its deepening fetch cut, a
        // GetCommit throttled) leaves every pending change for the next round.
        let (found, keep) = settle(&self.pending, |change| fate(store, &tip, change))?;
        self.pending = keep;
        Ok(found)
    }

    /// Whether no attempt is left without an answer.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The changes whose push got no answer and that may still have
    /// landed, one line each: what a put that gives up must tell its user.
    pub fn describe(&self) -> Vec<String> {
        self.pending.iter().map(Unconfirmed::describe).collect()
    }
}

/// What the branch at `tip` says of `change`. The branch only moves by
/// fast-forwards, so walking first parents down from the tip meets the
/// change's commit before its parent if it landed, and the parent alone if
/// it did not, however many commits came since (a shallow history is
/// deepened as the walk goes).
pub fn fate(store: &mut dyn CommitWalk, tip: &str, change: &Unconfirmed) -> Result<Fate> {
    let mut fate = Fate::Unknown;
    store.walk_commits(tip, HISTORY_WALK_LIMIT, &mut |c| {
        let mine = match &change.mark {
            Mark::Commit(id) => c.id == id.as_str(),
            Mark::Nonce(nonce) => {
                Parsed::new(&c.message).trailer(Trailer::Nonce) == Some(nonce.as_str())
            }
        };
        if mine {
            fate = Fate::Landed(c.id.as_str().into());
        } else if change.parent == *c.id {
            fate = if c.id == tip {
                Fate::MayLand
            } else {
                Fate::CannotLand
            };
        }
        fate != Fate::Unknown
    })?;
    Ok(fate)
}

/// Decides every change in `pending` with `fate`, then says what to do:
/// the change that landed (at most one can: every change after the first
/// unconfirmed one was built on the same parent or on a tip that excludes
/// it) and what is still pending. Nothing is decided unless every look
/// answered: when `fate` fails the caller keeps `pending` whole, which is
/// why this takes a slice and returns the changes to keep rather than
/// taking them out first.
pub fn settle(
    pending: &[Unconfirmed],
    mut fate: impl FnMut(&Unconfirmed) -> Result<Fate>,
) -> Result<(Option<Recovered>, Vec<Unconfirmed>)> {
    let mut keep = Vec::new();
    let mut unknown = Vec::new();
    for change in pending {
        match fate(change)? {
            Fate::Landed(commit) => {
                let lock = change.lock.clone();
                return Ok((Some(Recovered { commit, lock }), Vec::new()));
            }
            Fate::MayLand => keep.push(change.clone()),
            Fate::CannotLand => {}
            Fate::Unknown => unknown.push(change.clone()),
        }
    }
    if !unknown.is_empty() {
        return Err(Error::Unsettled {
            limit: HISTORY_WALK_LIMIT,
            unconfirmed: unknown.iter().map(Unconfirmed::describe).collect(),
        });
    }
    Ok((None, keep))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::commit::CommitMeta;

    fn change(mark: &str, lock: &str) -> Unconfirmed {
        Unconfirmed {
            mark: Mark::Commit(mark.into()),
            parent: "p".into(),
            lock: lock.to_string(),
        }
    }

    fn network() -> Error {
        Error::Network {
            what: "fetching".into(),
            uri: "git://x".into(),
            source: crate::error::Cause::msg("cut"),
        }
    }

    #[test]
    fn a_failed_look_decides_nothing_so_the_caller_keeps_every_change() {
        let pending = [change("c1", "a"), change("c2", "a")];
        let mut looked = 0;
        let result = settle(&pending, |c| {
            looked += 1;
            match &c.mark {
                Mark::Commit(m) if m == "c1" => Ok(Fate::CannotLand),
                _ => Err(network()),
            }
        });
        assert!(matches!(result, Err(Error::Network { .. })));
        assert_eq!(looked, 2);
    }

    #[test]
    fn a_landed_change_is_the_answer_and_nothing_stays_pending() {
        let pending = [change("c1", "a"), change("c2", "b")];
        let (found, keep) = settle(&pending, |c| {
            Ok(match &c.mark {
                Mark::Commit(m) if m == "c2" => Fate::Landed("c2".into()),
                _ => Fate::CannotLand,
            })
        })
        .expect("settled");
        assert_eq!(
            found,
            Some(Recovered {
                commit: "c2".into(),
                lock: "b".into()
            })
        );
        assert!(keep.is_empty());
    }

    #[test]
    fn only_changes_that_may_still_land_are_kept() {
        let pending = [change("c1", "a"), change("c2", "a")];
        let (found, keep) = settle(&pending, |c| {
            Ok(match &c.mark {
                Mark::Commit(m) if m == "c1" => Fate::CannotLand,
                _ => Fate::MayLand,
            })
        })
        .expect("settled");
        assert_eq!(found, None);
        assert_eq!(keep, [change("c2", "a")]);
    }

    #[test]
    fn a_change_the_history_cannot_tell_about_stops_the_put_naming_its_lock() {
        let pending = [change("c1", "a")];
        let err = settle(&pending, |_| Ok(Fate::Unknown)).expect_err("unknown");
        assert!(!err.is_retryable());
        let text = err.to_string();
        assert!(text.contains("could not tell whether a push"), "{text}");
        assert!(text.contains("lock a (commit c1)"), "{text}");
        assert!(text.contains("idempotent: true"), "{text}");
    }

    /// A first-parent history, newest first: (id, message).
    struct Line(Vec<(&'static str, String)>);

    impl CommitWalk for Line {
        fn walk_commits(
            &mut self,
            tip: &str,
            limit: usize,
            visit: &mut dyn FnMut(&CommitMeta) -> bool,
        ) -> Result<bool> {
            let from = self.0.iter().position(|(id, _)| *id == tip).unwrap_or(0);
            for (n, (id, message)) in self.0[from..].iter().enumerate() {
                if n >= limit {
                    return Ok(true);
                }
                let meta = CommitMeta {
                    id: id.to_string(),
                    parent: None,
                    time: 0,
                    author: String::new(),
                    message: message.clone(),
                };
                if visit(&meta) {
                    break;
                }
            }
            Ok(false)
        }
    }

    fn by_nonce(nonce: &str) -> Unconfirmed {
        Unconfirmed {
            mark: Mark::Nonce(nonce.into()),
            parent: "p".into(),
            lock: "a".into(),
        }
    }

    #[test]
    fn a_commit_made_by_the_service_is_recognised_by_its_nonce_trailer() {
        let mut line = Line(vec![
            ("c3", "claiming: a\n\nPool-Resource-Nonce: other\n".into()),
            ("c2", "unclaiming: a\n\nPool-Resource-Nonce: n1\n".into()),
            ("p", "claiming: a\n".into()),
        ]);
        let fate = fate(&mut line, "c3", &by_nonce("n1")).expect("fate");
        assert_eq!(fate, Fate::Landed("c2".into()));
    }

    #[test]
    fn a_change_whose_parent_is_the_tip_may_land_and_one_passed_by_cannot() {
        let mut line = Line(vec![
            ("c3", "claiming: a\n\nPool-Resource-Nonce: other\n".into()),
            ("p", "claiming: a\n".into()),
        ]);
        assert_eq!(
            fate(&mut line, "p", &by_nonce("n1")).expect("fate"),
            Fate::MayLand
        );
        assert_eq!(
            fate(&mut line, "c3", &change("c9", "a")).expect("fate"),
            Fate::CannotLand
        );
        assert_eq!(
            fate(&mut line, "c3", &change("c3", "a")).expect("fate"),
            Fate::Landed("c3".into())
        );
    }
}
