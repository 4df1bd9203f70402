//! The one read–plan–commit loop, for the resource's put and the
//! operator's changes alike.
//!
//! Each round reads the pool, decides, and commits at most once with
//! compare-and-swap; this loop only counts what the rounds came to and
//! decides when to stop, as cargo's `util/network/retry.rs` does. A lost
//! race (the branch moved under us) is retried after a few milliseconds of
//! jitter; a push the server refused is looked at again and is final if
//! the branch has not moved since; a network fault is retried with capped
//! back-off (when the caller asks for it); everything else fails at once.
//! No round starts after a SIGINT/SIGTERM. What a commit attempt means is
//! decided here once ([`Tries::outcome`]), and an attempt without a clear
//! answer is kept for the next round's [`Tries::recovery`].
//!
//! The cleanups after a put's own work (leaving the line, giving back a
//! claim a signal caught in flight) have their loop here too,
//! [`until_deadline`]: the same rules for lost races, refused pushes
//! ([`refused_again`]) and faults, but it goes on after a signal and ends
//! at a deadline.

use std::time::Instant;

use crate::error::{Error, Result};
use crate::model::duration::human;
use crate::model::pool::{CommitId, Snapshot};
use crate::process::log::Log;
use crate::process::retry::{race_jitter, Backoff};
use crate::process::signal::Interrupt;
use crate::store::recovery::Recovery;
use crate::store::seam::{CommitOutcome, PutStore, Step};

/// How a loop retries.
pub struct Policy<'a> {
    /// Where a retried fault and a refused push are told.
    pub log: &'a Log,
    /// Stops the loop between rounds and during a back-off.
    pub interrupt: &'a Interrupt,
    /// Network faults: retried with this back-off, or (`None`) failed at once.
    pub backoff: Option<Backoff>,
    /// Consecutive lost races tolerated before giving up.
    pub max_races: u32,
    /// What is being done, for an interruption and a give-up.
    pub doing: &'a str,
    /// The repository, as a refused push names it.
    pub uri: &'a str,
}

/// What one round came to.
#[derive(Debug)]
pub enum Round<T> {
    /// Done: this is the answer.
    Done(T),
    /// The round waited (for a lock, a held pool) and wants another look.
    Waited,
    /// Look again at once: a commit attempt said so ([`Tries::outcome`]),
    /// or the round made a commit and has more to do.
    Again,
}

/// A push the server refused, and the tip it was built on.
#[derive(Debug)]
pub struct Rejection {
    /// The tip the refused push was built on.
    pub tip: String,
    /// What the server said.
    pub detail: String,
}

impl Rejection {
    /// The rule for a push refused on a tip, kept in `slot` until the next
    /// look: final (its detail) when that look finds the branch still at
    /// `tip` (a hook or a protection said no), else forgotten (the
    /// server's ref update lost a race after the negotiation: go on).
    fn again(slot: &mut Option<Rejection>, tip: &str) -> Option<String> {
        slot.take().filter(|r| r.tip == tip).map(|r| r.detail)
    }
}

/// What the rounds of one loop share: the counts, a refused push to check
/// against the next tip, the attempts without an answer.
pub struct Tries {
    /// Commit attempts that got no clear answer.
    pub recovery: Recovery,
    log: Log,
    uri: String,
    started: Instant,
    rejected: Option<Rejection>,
    lost_race: bool,
}

impl Tries {
    /// When the loop started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// A push an earlier round saw refused on `tip`, the tip still there:
    /// final. Call once the round has read the tip, before planning.
    pub fn check_rejected(&mut self, tip: &str) -> Result<()> {
        match Rejection::again(&mut self.rejected, tip) {
            Some(detail) => Err(Error::PushRejected {
                uri: self.uri.clone(),
                detail,
            }),
            None => Ok(()),
        }
    }

    /// Commits `steps` on `base`, keeping an attempt without a clear
    /// answer; what it came to as [`Tries::outcome`] says.
    pub fn commit(
        &mut self,
        store: &mut dyn PutStore,
        base: &Snapshot,
        steps: &[Step],
    ) -> Result<Option<CommitId>> {
        let outcome = self.recovery.commit(store, base, steps)?;
        Ok(self.outcome(outcome, &base.tip))
    }

    /// What a commit attempt built on `tip` means: the commit made, or
    /// `None` to look again (the round returns [`Round::Again`]): after a
    /// lost race (counted, with jitter), or after a refused push (final if
    /// the next look finds the same tip, [`Tries::check_rejected`]).
    pub fn outcome(&mut self, outcome: CommitOutcome, tip: &str) -> Option<CommitId> {
        match outcome {
            CommitOutcome::Committed(id) => Some(id),
            CommitOutcome::LostRace => {
                self.lost_race = true;
                None
            }
            CommitOutcome::Rejected(detail) => {
                self.log
                    .line(format_args!("push rejected ({detail}); looking again"));
                self.rejected = Some(Rejection {
                    tip: tip.to_string(),
                    detail,
                });
                None
            }
        }
    }
}

/// Runs `round` until it is done, fails, or is interrupted.
pub fn run<T>(
    policy: &Policy<'_>,
    mut round: impl FnMut(&mut Tries) -> Result<Round<T>>,
) -> Result<T> {
    let mut tries = Tries {
        recovery: Recovery::default(),
        log: policy.log.clone(),
        uri: policy.uri.to_string(),
        started: Instant::now(),
        rejected: None,
        lost_race: false,
    };
    let (mut races, mut faults, mut waits) = (0u32, 0u32, 0u32);
    loop {
        policy.interrupt.check(policy.doing)?;
        tries.lost_race = false;
        match round(&mut tries) {
            Ok(Round::Done(answer)) => {
                if races > 0 || waits > 0 {
                    policy.log.line(format_args!(
                        "done after {} ({races} lost races, {waits} waits)",
                        human(tries.started.elapsed())
                    ));
                }
                return Ok(answer);
            }
            Ok(Round::Waited) => {
                waits += 1;
                faults = 0;
            }
            Ok(Round::Again) if tries.lost_race => {
                races += 1;
                faults = 0;
                if races >= policy.max_races {
                    return Err(Error::GaveUp {
                        attempts: races,
                        last: "the branch kept moving under every attempt".into(),
                        unconfirmed: tries.recovery.describe(),
                    });
                }
                std::thread::sleep(race_jitter(races));
            }
            Ok(Round::Again) => faults = 0,
            Err(e) if e.is_retryable() => {
                let Some(backoff) = policy.backoff else {
                    return Err(e);
                };
                faults += 1;
                if faults >= backoff.max_failures {
                    return Err(Error::GaveUp {
                        attempts: faults,
                        last: e.chain(),
                        unconfirmed: tries.recovery.describe(),
                    });
                }
                let delay = backoff.delay(faults);
                policy
                    .log
                    .warn(format_args!("{}; retrying in {}", e.chain(), human(delay)));
                policy.interrupt.sleep(delay, policy.doing)?;
            }
            Err(e) => return Err(e),
        }
    }
}

/// [`Tries::check_rejected`] for a cleanup's loop ([`until_deadline`]):
/// the push kept in `refused` is final when the next look finds the branch
/// still at its tip.
pub fn refused_again(refused: &mut Option<Rejection>, tip: &str) -> Result<()> {
    match Rejection::again(refused, tip) {
        Some(detail) => Err(Error::Repository {
            what: "the push was rejected".into(),
            detail,
        }),
        None => Ok(()),
    }
}

/// The loop of a cleanup after the put's own work is over (leaving the
/// line, giving back a claim a signal caught in flight): unlike [`run`] it
/// goes on after a signal, and it ends at `deadline`. `attempt` answers
/// `Some` when done, `None` to look again at once (a lost race, a push
/// refused on a tip not yet seen twice); a network fault is retried after
/// `backoff`'s delay (cut to the time left), `on_fault` told of it and of
/// the delay first, up to `backoff.max_failures` in a row. The time up
/// ends it: "the branch kept moving" after a `None`, else the fault.
pub fn until_deadline<T>(
    deadline: Instant,
    backoff: &Backoff,
    mut on_fault: impl FnMut(&Error, std::time::Duration),
    mut attempt: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let started = Instant::now();
    let mut faults = 0u32;
    loop {
        let result = attempt();
        let left = deadline.saturating_duration_since(Instant::now());
        match result {
            Ok(Some(done)) => return Ok(done),
            Ok(None) if !left.is_zero() => faults = 0,
            Ok(None) => {
                return Err(Error::Repository {
                    what: "the branch kept moving".into(),
                    detail: format!("for {}", human(started.elapsed())),
                })
            }
            Err(e) if e.is_retryable() && !left.is_zero() && faults + 1 < backoff.max_failures => {
                faults += 1;
                let delay = backoff.delay(faults).min(left);
                on_fault(&e, delay);
                std::thread::sleep(delay);
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
#[path = "retry_memory_tests.rs"]
mod memory_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy<'a>(log: &'a Log, interrupt: &'a Interrupt, backoff: Option<Backoff>) -> Policy<'a> {
        Policy {
            log,
            interrupt,
            backoff,
            max_races: 3,
            doing: "testing",
            uri: "git://x",
        }
    }

    fn quiet() -> Log {
        Log::new(Box::new(std::io::sink()))
    }

    fn network() -> Error {
        Error::Network {
            what: "fetching".into(),
            uri: "git://x".into(),
            source: crate::error::Cause::msg("cut"),
        }
    }

    fn fast(max_failures: u32) -> Backoff {
        Backoff {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(2),
            max_failures,
        }
    }

    #[test]
    fn a_cleanup_looks_again_after_each_none_and_answers_the_first_some() {
        let mut tries = 0;
        let answer = until_deadline(
            Instant::now() + Duration::from_secs(5),
            &fast(3),
            |_, _| panic!("no fault"),
            || {
                tries += 1;
                Ok((tries == 4).then_some("done"))
            },
        );
        assert_eq!(answer.expect("answered"), "done");
        assert_eq!(tries, 4);
    }

    #[test]
    fn a_cleanup_retries_network_faults_up_to_the_backoffs_limit_in_a_row() {
        let (mut tries, mut told) = (0, 0);
        let err = until_deadline::<()>(
            Instant::now() + Duration::from_secs(5),
            &fast(3),
            |e, _| {
                assert!(e.is_retryable());
                told += 1;
            },
            || {
                tries += 1;
                Err(network())
            },
        )
        .expect_err("gave up");
        assert!(matches!(err, Error::Network { .. }), "{err}");
        assert_eq!((tries, told), (3, 2));
        // A look that answers resets the count: faults only in a row count.
        let mut tries = 0;
        let answer = until_deadline(
            Instant::now() + Duration::from_secs(5),
            &fast(3),
            |_, _| {},
            || {
                tries += 1;
                match tries % 3 {
                    0 if tries == 9 => Ok(Some(tries)),
                    0 => Ok(None),
                    _ => Err(network()),
                }
            },
        );
        assert_eq!(answer.expect("answered"), 9);
    }

    #[test]
    fn a_cleanup_ends_at_its_deadline_and_never_sleeps_past_it() {
        let start = Instant::now();
        let err = until_deadline::<()>(
            start + Duration::from_millis(200),
            &fast(1000),
            |_, _| {},
            || {
                std::thread::sleep(Duration::from_millis(5));
                Ok(None)
            },
        )
        .expect_err("time up");
        assert!(err.to_string().contains("the branch kept moving"), "{err}");
        assert!(start.elapsed() >= Duration::from_millis(200));
        // A back-off longer than the time left is cut to it.
        let slow = Backoff {
            base: Duration::from_secs(30),
            cap: Duration::from_secs(30),
            max_failures: 10,
        };
        let start = Instant::now();
        let err = until_deadline::<()>(
            start + Duration::from_millis(300),
            &slow,
            |_, delay| assert!(delay <= Duration::from_millis(300)),
            || Err(network()),
        )
        .expect_err("time up");
        assert!(matches!(err, Error::Network { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_cleanup_fails_at_once_on_an_error_that_is_not_a_fault() {
        let mut tries = 0;
        let err = until_deadline::<()>(
            Instant::now() + Duration::from_secs(5),
            &fast(3),
            |_, _| panic!("not a fault"),
            || {
                tries += 1;
                let mut refused = Some(Rejection {
                    tip: "tip".into(),
                    detail: "hook declined".into(),
                });
                refused_again(&mut refused, "tip")?;
                Ok(None)
            },
        )
        .expect_err("refused");
        assert_eq!(tries, 1);
        assert!(err.to_string().contains("hook declined"), "{err}");
        // Refused on another tip than the one looked at: look again.
        let mut refused = Some(Rejection {
            tip: "old".into(),
            detail: "failed to update ref".into(),
        });
        assert!(refused_again(&mut refused, "new").is_ok());
        assert!(refused.is_none());
    }

    #[test]
    fn lost_races_are_retried_until_the_limit_then_the_loop_gives_up() {
        let (log, interrupt) = (quiet(), Interrupt::default());
        let mut rounds = 0;
        let err = run::<()>(&policy(&log, &interrupt, None), |t| {
            rounds += 1;
            assert_eq!(t.outcome(CommitOutcome::LostRace, "tip"), None);
            Ok(Round::Again)
        })
        .expect_err("gave up");
        assert_eq!(rounds, 3);
        assert!(matches!(err, Error::GaveUp { attempts: 3, .. }), "{err}");
    }

    #[test]
    fn a_refused_push_is_final_only_when_the_next_look_finds_the_same_tip() {
        let (log, interrupt) = (quiet(), Interrupt::default());
        let tips = ["t1", "t2", "t2"];
        let mut round = 0;
        let err = run::<()>(&policy(&log, &interrupt, None), |t| {
            let tip = tips[round];
            round += 1;
            t.check_rejected(tip)?;
            let refused = CommitOutcome::Rejected("hook said no".into());
            assert_eq!(t.outcome(refused, tip), None);
            Ok(Round::Again)
        })
        .expect_err("refused");
        assert_eq!(round, 3);
        assert!(matches!(err, Error::PushRejected { .. }), "{err}");
    }

    #[test]
    fn a_network_fault_fails_at_once_without_a_backoff_and_is_retried_with_one() {
        let (log, interrupt) = (quiet(), Interrupt::default());
        let err = run::<()>(&policy(&log, &interrupt, None), |_| Err(network()));
        assert!(matches!(err, Err(Error::Network { .. })));
        let backoff = Backoff {
            base: std::time::Duration::from_millis(1),
            cap: std::time::Duration::from_millis(1),
            max_failures: 5,
        };
        let mut faults = 0;
        let done = run(&policy(&log, &interrupt, Some(backoff)), |_| {
            faults += 1;
            if faults < 3 {
                Err(network())
            } else {
                Ok(Round::Done(faults))
            }
        })
        .expect("retried");
        assert_eq!(done, 3);
    }
}
