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
struct Rejection {
    tip: String,
    detail: String,
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
        match self.rejected.take() {
            Some(r) if r.tip == tip => Err(Error::PushRejected {
                uri: self.uri.clone(),
                detail: r.detail,
            }),
            _ => Ok(()),
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

#[cfg(test)]
#[path = "retry_memory_tests.rs"]
mod memory_tests;

#[cfg(test)]
mod tests {
    use super::*;

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
