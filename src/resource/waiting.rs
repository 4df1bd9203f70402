//! A put's place in the line ([`crate::model::line`]) while the put loop
//! ([`crate::resource::put`]) waits.
//!
//! A [`Waiter`] keeps the put's ticket id (one random nonce for the whole
//! put) and the ticket as last seen or committed. Each round it reconciles
//! that with the line at the tip ([`Waiter::observe`]): a ticket whose
//! commit got no answer is simply looked for by id, so a lost reply never
//! leaves two tickets (the file holds at most one per id); a ticket that
//! vanished while its renewals were current was removed by an operator,
//! and one whose lease lapsed re-joins at the back.
//!
//! Every write to the line is one compare-and-swap commit of the line file
//! alone (join, renew, leave), except the claim that ends the wait, which
//! removes the ticket in the claim's own commit ([`Waiter::leave_edits`]).
//! Dead tickets are dropped by whichever of these commits comes next.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::line::{LineParams, LineSource};
use crate::error::{Error, Result};
use crate::model::duration::{human, now_unix};
use crate::model::line::{Asker, Line, Ticket, Wants};
use crate::model::message::{build_trailers, commit_message};
use crate::model::names::PoolPath;
use crate::model::pool::{Multi, Operation, Single, Snapshot};
use crate::process::log::Log;
use crate::process::signal::Interrupt;
use crate::protocol::BuildInfo;
use crate::store::seam::{CommitOutcome, FileEdit, LockStore};

/// How often the first in line reads the branch tip while it waits.
pub const PEEK_INTERVAL: Duration = Duration::from_secs(1);

/// How long leaving the line after a signal may take, at most.
pub const LEAVE_BUDGET: Duration = Duration::from_secs(1);

/// A put that may wait in line (`acquire`, `claim`).
#[derive(Debug)]
pub struct Waiter {
    id: String,
    wants: Wants,
    priority: i64,
    lease: u64,
    queue: bool,
    wait_timeout: Option<Duration>,
    pool: PoolPath,
    /// The ticket as last seen in the line or committed; `None` while the
    /// put is not in line (or does not know it is: a write without reply).
    mine: Option<Ticket>,
    /// Whether a ticket was ever written (or tried): what leaving must undo.
    wrote: bool,
    /// The tip and line last seen or made by this put: leaving tries to
    /// commit on it first, saving a fetch after a signal.
    last_seen: Option<(String, Line)>,
    build: String,
    build_id: Option<String>,
    url: Option<String>,
}

impl Waiter {
    /// The waiter of `op`, `None` for a put that never waits in line.
    pub fn new(
        op: &Operation,
        source: &LineSource,
        params: &LineParams,
        pool: &PoolPath,
        build: &BuildInfo,
    ) -> Option<Waiter> {
        let wants = match op {
            Operation::Single(Single::Acquire) => Wants::Acquire(1),
            Operation::Multi(Multi::Acquire(n)) => Wants::Acquire(*n),
            Operation::Single(Single::Claim(lock)) => Wants::Claim(vec![lock.clone()]),
            Operation::Multi(Multi::Claim(locks)) => Wants::Claim(locks.clone()),
            _ => return None,
        };
        Some(Waiter {
            id: format!("{:016x}", fastrand::u64(..)),
            wants,
            priority: params.priority,
            lease: source.lease_secs(),
            queue: source.queue,
            wait_timeout: params.wait_timeout,
            pool: pool.clone(),
            mine: None,
            wrote: false,
            last_seen: None,
            build: build
                .describe()
                .unwrap_or_else(|| "a build without BUILD_* variables".into()),
            build_id: build.get("BUILD_ID").map(String::from),
            url: build.url(),
        })
    }

    /// The ticket id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The ticket as last seen or committed, while the put is in line.
    pub fn ticket(&self) -> Option<&Ticket> {
        self.mine.as_ref()
    }

    /// Reconciles what the put believes of its ticket with `snap`'s line,
    /// then fills in [`Snapshot::reserved`]. Fails when an operator
    /// removed the ticket.
    pub fn observe(&mut self, snap: &mut Snapshot, log: &Log, now: i64) -> Result<()> {
        if let Some(reason) = &snap.line.unreadable {
            log.warn(format_args!(
                "the line of pool {} is ignored until the next ticket replaces it: {reason}",
                self.pool
            ));
        }
        match (snap.line.find(&self.id), &self.mine) {
            (Some(seen), mine) if seen.is_live(now) => {
                // A write of the ticket whose reply was lost landed after
                // all: it is this put's place (the same id, so one ticket).
                let unheard = match mine {
                    None => self.wrote.then_some("joined the line"),
                    Some(m) if m.renewed < seen.renewed => Some("renewed its place"),
                    Some(_) => None,
                };
                if let Some(what) = unheard {
                    log.line(format_args!(
                        "an earlier ticket write whose reply was lost did reach the branch: this put {what} in pool {} (ticket {})",
                        self.pool, self.id
                    ));
                }
                self.mine = Some(seen.clone());
            }
            (Some(_), _) => {
                log.warn(format_args!(
                    "this put's ticket in the line of pool {} was not renewed within waiter_lease; joining again at the back",
                    self.pool
                ));
                self.mine = None;
            }
            (None, Some(mine)) if mine.is_live(now) => {
                return Err(Error::NotServed {
                    pool: self.pool.to_string(),
                    what: format!(
                        "this build's place in line ({}) was removed by someone else, an operator (pool dequeue) or a worker whose clock is more than waiter_lease ({}s) ahead",
                        self.id, self.lease
                    ),
                });
            }
            (None, Some(_)) => {
                log.warn(format_args!(
                    "this put's ticket in the line of pool {} lapsed and was dropped; joining again at the back",
                    self.pool
                ));
                self.mine = None;
            }
            (None, None) => {}
        }
        snap.reserved = snap.line.reserved_for(self.asker(), &snap.free(), now);
        self.last_seen = Some((snap.tip.to_string(), snap.line.clone()));
        Ok(())
    }

    fn asker(&self) -> Asker<'_> {
        match &self.mine {
            Some(t) => Asker::Ticket(&t.id),
            None => Asker::Newcomer {
                priority: self.priority,
            },
        }
    }

    /// Whether nobody live in line ahead of this put could use what it
    /// wants: then it watches the tip closely, and may take over an
    /// expired claim.
    pub fn is_first(&self, line: &Line, now: i64) -> bool {
        line.ahead_of(self.asker(), now)
            .iter()
            .all(|t| !overlaps(&t.wants, &self.wants))
    }

    /// Whether a waiter ahead could use `lock` (an expiry takeover of it
    /// is then theirs to make).
    pub fn wanted_ahead(
        &self,
        line: &Line,
        lock: &crate::model::names::LockName,
        now: i64,
    ) -> bool {
        line.wanted_ahead(self.asker(), lock, now)
    }

    /// The file edit that removes this put's ticket (and any dead ones)
    /// from `snap`'s line, if the ticket is there: for the claim that ends
    /// the wait.
    pub fn leave_edits(&self, snap: &Snapshot, now: i64) -> Vec<FileEdit> {
        self.leave_edits_of(&snap.line, now)
    }

    fn leave_edits_of(&self, line: &Line, now: i64) -> Vec<FileEdit> {
        if line.find(&self.id).is_none() {
            return Vec::new();
        }
        vec![FileEdit {
            path: Line::path(&self.pool),
            content: line.without(&self.id, now).to_bytes(),
        }]
    }

    /// After a commit that removed the ticket: the put is out of line.
    pub fn left(&mut self) {
        self.mine = None;
    }

    /// This put's place in `line`: `; position 2 of 4 in line (ahead:
    /// main/app/deploy #41, waiting 6m0s)`, or nothing when not in line.
    pub fn describe_place(&self, line: &Line, now: i64) -> String {
        let Some((at, of)) = line.position(&self.id, now) else {
            return String::new();
        };
        let ahead = line.ahead_of(Asker::Ticket(&self.id), now);
        match ahead.first() {
            None => format!("; first of {of} in line"),
            Some(first) => format!(
                "; position {at} of {of} in line (ahead: {}{})",
                first.describe(now),
                if ahead.len() > 1 {
                    format!(" and {} more", ahead.len() - 1)
                } else {
                    String::new()
                }
            ),
        }
    }

    /// Joins the line, or renews the ticket when a third of the lease has
    /// passed since the last renewal: the commit's outcome, or `None` when
    /// nothing was due (and always with `queue: false`).
    pub fn join_or_renew(
        &mut self,
        store: &mut dyn LockStore,
        snap: &Snapshot,
        build: &BuildInfo,
        now: i64,
    ) -> Result<Option<CommitOutcome>> {
        if !self.queue {
            return Ok(None);
        }
        let (ticket, verb) = match &self.mine {
            None => (
                Ticket {
                    id: self.id.clone(),
                    build: self.build.clone(),
                    build_id: self.build_id.clone(),
                    url: self.url.clone(),
                    wants: self.wants.clone(),
                    priority: self.priority,
                    arrived: now,
                    seq: snap.line.next_seq(),
                    renewed: now,
                    lease: self.lease,
                },
                "waiting in line",
            ),
            Some(t) if now >= t.renewed + self.renew_every() => (
                Ticket {
                    renewed: now,
                    ..t.clone()
                },
                "renewing place in line",
            ),
            Some(_) => return Ok(None),
        };
        let subject = format!("{verb}: {}", self.pool);
        let edit = FileEdit {
            path: Line::path(&self.pool),
            content: snap.line.with(ticket.clone(), now).to_bytes(),
        };
        let message = commit_message(&subject, build.url().as_deref(), &build_trailers(build));
        self.wrote = true;
        let outcome = store.commit_files(Some(&snap.tip), &[edit], &message)?;
        if let CommitOutcome::Committed(id) = &outcome {
            self.last_seen = Some((id.to_string(), snap.line.with(ticket.clone(), now)));
            self.mine = Some(ticket);
        }
        Ok(Some(outcome))
    }

    fn renew_every(&self) -> i64 {
        (self.lease / 3).max(1) as i64
    }

    /// How long the put may sleep before its ticket must be renewed or its
    /// wait times out, at most `cap`.
    pub fn sleep_budget(&self, cap: Duration, started: Instant) -> Duration {
        let mut budget = cap;
        if let (true, Some(t)) = (self.queue, &self.mine) {
            let due = (t.renewed + self.renew_every()) as f64;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            budget = budget.min(Duration::from_secs_f64((due - now).max(0.05)));
        }
        if let Some(limit) = self.wait_timeout {
            budget = budget.min(limit.saturating_sub(started.elapsed()));
        }
        budget
    }

    /// Whether the put has waited `wait_timeout`.
    pub fn timed_out(&self, started: Instant) -> bool {
        self.wait_timeout
            .is_some_and(|limit| started.elapsed() >= limit)
    }

    /// The error of a put that waited `wait_timeout`, naming its place
    /// and why it waited.
    pub fn timeout_error(&self, line: &Line, why: &str, now: i64) -> Error {
        let place = match line.position(&self.id, now) {
            Some((at, of)) => format!("position {at} of {of} in line"),
            None => format!(
                "not in line, {} waiting ahead",
                line.ahead_of(self.asker(), now).len()
            ),
        };
        Error::NotServed {
            pool: self.pool.to_string(),
            what: format!(
                "gave up after wait_timeout {} ({place}): {why}",
                human(self.wait_timeout.unwrap_or_default())
            ),
        }
    }

    /// Whether the put watches the branch tip while it waits: only the
    /// first in line; a `queue: false` put is not in line and looks every
    /// `retry_delay`, as before the line (else every such put, each
    /// finding nobody ahead of it, would read the tip once a second).
    pub fn watches_tip(&self, first: bool) -> bool {
        first && self.queue
    }

    /// Waits until the next look: the first in line reads the branch tip
    /// about once a second and returns as soon as it moved from `tip`; the
    /// others sleep. Never longer than `budget`.
    pub fn sleep(
        &self,
        store: &mut dyn LockStore,
        first: bool,
        tip: &str,
        budget: Duration,
        interrupt: &Interrupt,
        doing: &str,
    ) -> Result<()> {
        if !self.watches_tip(first) {
            return interrupt.sleep(budget, doing);
        }
        let end = Instant::now() + budget;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            interrupt.sleep(left.min(PEEK_INTERVAL), doing)?;
            interrupt.check(doing)?;
            if store.peek_tip()?.as_deref() != Some(tip) {
                return Ok(());
            }
        }
    }

    /// Takes the ticket out of the line, if the put ever wrote one: one
    /// attempt (looking again after a lost race) within [`LEAVE_BUDGET`].
    /// The only commit a put makes after a signal; a failure is only
    /// logged, since the ticket lapses after its lease anyway.
    pub fn leave(
        &mut self,
        store: &mut dyn LockStore,
        build: &BuildInfo,
        log: &Log,
        interrupt: &Interrupt,
    ) {
        if !self.wrote {
            return;
        }
        let deadline = Instant::now() + LEAVE_BUDGET;
        interrupt.allow_cleanup(deadline);
        let subject = format!("leaving the line: {}", self.pool);
        let message = commit_message(&subject, build.url().as_deref(), &build_trailers(build));
        // First on the tip last seen: one push when nothing moved since.
        let mut known = self.last_seen.take();
        let outcome = loop {
            let (tip, line, fresh) = match known.take() {
                Some((tip, line)) => (tip, line, false),
                None => match store.snapshot() {
                    Ok(s) => (s.tip.to_string(), s.line, true),
                    Err(e) => break Err(e),
                },
            };
            let edits = self.leave_edits_of(&line, now_unix());
            match (edits.is_empty(), fresh) {
                (true, true) => break Ok(None),
                // Not in the line last seen: a write without an answer
                // may have landed since; look.
                (true, false) => continue,
                (false, _) => {}
            }
            match store.commit_files(Some(&tip), &edits, &message) {
                Ok(CommitOutcome::Committed(id)) => break Ok(Some(id)),
                Ok(CommitOutcome::LostRace) if Instant::now() < deadline => continue,
                Ok(CommitOutcome::LostRace) => {
                    break Err(Error::Repository {
                        what: "the branch kept moving".into(),
                        detail: format!("for {}", human(LEAVE_BUDGET)),
                    })
                }
                Ok(CommitOutcome::Rejected(detail)) => {
                    break Err(Error::Repository {
                        what: "the push was rejected".into(),
                        detail,
                    })
                }
                Err(e) => break Err(e),
            }
        };
        self.wrote = false;
        self.mine = None;
        match outcome {
            Ok(Some(id)) => log.line(format_args!("{subject} ({id})")),
            Ok(None) => {}
            Err(e) => log.warn(format_args!(
                "could not leave the line of pool {}: {}; the ticket lapses after waiter_lease",
                self.pool,
                e.chain()
            )),
        }
    }
}

/// Whether a waiter ahead wanting `ahead` could hold up one wanting
/// `mine`: an `acquire` ahead holds up everyone, a `claim` ahead only
/// claims of the same locks (an `acquire` can take another lock).
fn overlaps(ahead: &Wants, mine: &Wants) -> bool {
    match (ahead, mine) {
        (Wants::Claim(x), Wants::Claim(y)) => x.iter().any(|l| y.contains(l)),
        (Wants::Claim(_), Wants::Acquire(_)) => false,
        (Wants::Acquire(_), _) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(queue: bool) -> Waiter {
        let source = LineSource {
            queue,
            ..LineSource::default()
        };
        let build = BuildInfo::from_env(|_| None);
        Waiter::new(
            &Single::Acquire.into(),
            &source,
            &LineParams::default(),
            &PoolPath::new("envs").unwrap(),
            &build,
        )
        .unwrap()
    }

    #[test]
    fn only_the_first_in_line_watches_the_tip_and_queue_false_never_does() {
        assert!(waiter(true).watches_tip(true));
        assert!(!waiter(true).watches_tip(false));
        assert!(!waiter(false).watches_tip(true));
        assert!(!waiter(false).watches_tip(false));
    }
}
