//! The put loop: read the pool, decide, commit with compare-and-swap, wait.
//!
//! This is the one place that waits and retries. A lost race (the branch moved
//! under us) is retried at once after a few milliseconds of jitter; a lock
//! that is not free is waited for, `retry_delay` at a time, saying in the log
//! what is awaited and for how long; a network fault is retried with capped
//! backoff; everything else fails at once. No new commit is started after a
//! SIGINT/SIGTERM, so an aborted build never claims a lock later.

use std::time::Instant;

use crate::backend::{CommitOutcome, LockStore, Unconfirmed};
use crate::config::Source;
use crate::duration::human;
use crate::error::{Error, Result};
use crate::log::Log;
use crate::message::{build_trailers, commit_message, lock_trailers};
use crate::pool::{plan, CommitId, Operation, Plan};
use crate::protocol::{BuildInfo, Response};
use crate::rerun;
use crate::retry::{race_jitter, Backoff};
use crate::signal::Interrupt;

/// Consecutive lost races tolerated before giving up (each one means another
/// process made progress, so this is only reached under pathological load).
pub const MAX_LOST_RACES: u32 = 1000;

/// Everything a put needs besides the store.
pub struct PutContext<'a> {
    /// The validated source.
    pub source: &'a Source,
    /// Who is putting (recorded in every commit).
    pub build: &'a BuildInfo,
    /// The build log.
    pub log: &'a Log,
    /// Signal flag.
    pub interrupt: &'a Interrupt,
    /// Network backoff policy.
    pub backoff: Backoff,
    /// `idempotent: true`: first look for this build's earlier run of the
    /// same put ([`crate::rerun`]).
    pub idempotent: bool,
}

/// What one round of the put loop came to.
#[derive(Debug)]
enum Round {
    /// The put is done: print this.
    Done(Response),
    /// The lock was not free; the round slept `retry_delay`.
    Waited,
    /// Someone else moved the branch first: look again at once.
    LostRace,
    /// The server refused the push for a reason of its own: look again,
    /// and fail if the branch has not moved since.
    Rejected(Rejection),
}

/// A push the server refused, and the tip it was built on.
#[derive(Debug)]
struct Rejection {
    tip: CommitId,
    detail: String,
}

/// Runs `op` against `store` until it is done, fails, or is interrupted.
/// Each [`round`] reads the pool and does one thing; this loop only counts
/// what the rounds came to and decides when to stop, as cargo's
/// `util/network/retry.rs` does.
pub fn run(store: &mut dyn LockStore, op: &Operation, ctx: &PutContext<'_>) -> Result<Response> {
    let started = Instant::now();
    let doing = format!("running {} on pool {}", op.param(), ctx.source.pool);
    let (mut races, mut faults, mut waits) = (0u32, 0u32, 0u32);
    let mut rejected: Option<Rejection> = None;
    loop {
        ctx.interrupt.check(&doing)?;
        match round(store, op, ctx, started, &doing, &mut rejected) {
            Ok(Round::Done(response)) => {
                if races > 0 || waits > 0 {
                    ctx.log.line(format_args!(
                        "done after {} ({races} lost races, {waits} waits)",
                        human(started.elapsed())
                    ));
                }
                return Ok(response);
            }
            Ok(Round::Waited) => {
                waits += 1;
                faults = 0;
            }
            Ok(Round::LostRace) => {
                races += 1;
                faults = 0;
                if races >= MAX_LOST_RACES {
                    return Err(Error::GaveUp {
                        attempts: races,
                        last: "the branch kept moving under every attempt".into(),
                        unconfirmed: unconfirmed(store),
                    });
                }
                std::thread::sleep(race_jitter(races));
            }
            Ok(Round::Rejected(rejection)) => {
                faults = 0;
                rejected = Some(rejection);
            }
            Err(e) if e.is_retryable() => {
                faults += 1;
                if faults >= ctx.backoff.max_failures {
                    return Err(Error::GaveUp {
                        attempts: faults,
                        last: e.chain(),
                        unconfirmed: unconfirmed(store),
                    });
                }
                let delay = ctx.backoff.delay(faults);
                ctx.log
                    .warn(format_args!("{}; retrying in {}", e.chain(), human(delay)));
                ctx.interrupt.sleep(delay, &doing)?;
            }
            Err(e) => return Err(e),
        }
    }
}

fn unconfirmed(store: &dyn LockStore) -> Vec<String> {
    store
        .unconfirmed()
        .iter()
        .map(Unconfirmed::describe)
        .collect()
}

/// One round: read the pool; settle a push whose reply was lost; with
/// `idempotent`, look for this build's earlier run; then plan and either
/// wait, report, or commit once. `rejected` is an earlier round's refused
/// push, kept until a round gets as far as comparing tips: refused on the
/// tip that is still there, it is final.
fn round(
    store: &mut dyn LockStore,
    op: &Operation,
    ctx: &PutContext<'_>,
    started: Instant,
    doing: &str,
    rejected: &mut Option<Rejection>,
) -> Result<Round> {
    let PutContext {
        source,
        build,
        log,
        interrupt,
        idempotent,
        ..
    } = ctx;
    let pool = &source.pool;
    let snap = store.snapshot()?;
    if let Some(found) = store.recover_unconfirmed()? {
        log.line(format_args!(
            "an earlier push whose reply was lost did reach the branch: {} ({})",
            found.commit, found.lock
        ));
        return Ok(Round::Done(Response::new(
            &found.commit,
            &found.lock,
            pool.as_str(),
        )));
    }
    if *idempotent {
        if let Some(earlier) = rerun::find(store, &snap, op, build)? {
            log.line(format_args!(
                "{}: this build already did it in {} (lock {} of pool {pool}); with idempotent: true that is the answer",
                op.param(),
                earlier.commit,
                earlier.lock_list()
            ));
            return Ok(Round::Done(Response::new(
                &earlier.commit,
                &earlier.lock_list(),
                pool.as_str(),
            )));
        }
    }
    if let Some(rejection) = rejected.take() {
        if rejection.tip == snap.tip {
            return Err(Error::PushRejected {
                uri: source.uri.to_string(),
                detail: rejection.detail,
            });
        }
    }
    let change = match plan(op, &snap, pool, &mut |n| fastrand::usize(..n))? {
        Plan::Satisfied(lock) => {
            log.line(format_args!(
                "{}: lock {lock} of pool {pool} is as required",
                op.param()
            ));
            return Ok(Round::Done(Response::new(
                &snap.tip,
                lock.as_str(),
                pool.as_str(),
            )));
        }
        Plan::Wait(why) => {
            log.line(format_args!(
                "waiting: {} (waited {}, next look in {})",
                why.describe(pool),
                human(started.elapsed()),
                human(source.retry_delay)
            ));
            interrupt.sleep(source.retry_delay, doing)?;
            return Ok(Round::Waited);
        }
        Plan::Commit(change) => change,
    };
    interrupt.check(doing)?;
    let mut trailers = lock_trailers(change.locks());
    trailers.extend(build_trailers(build));
    let message = commit_message(&change.subject, build.url().as_deref(), &trailers);
    Ok(match store.commit(&snap, &change, &message)? {
        CommitOutcome::Committed(id) => {
            log.line(format_args!("{} ({id})", change.subject));
            if let Some(signal) = interrupt.received() {
                log.warn(format_args!(
                    "{signal} arrived while this commit was being pushed; it went through: {} is now in effect",
                    change.subject
                ));
            }
            Round::Done(Response::new(&id, &change.lock_list(), pool.as_str()))
        }
        CommitOutcome::LostRace => Round::LostRace,
        CommitOutcome::Rejected(detail) => {
            log.line(format_args!("push rejected ({detail}); looking again"));
            Round::Rejected(Rejection {
                tip: snap.tip,
                detail,
            })
        }
    })
}
