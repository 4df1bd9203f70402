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
//! alone (join, renew, leave, drop), except the claim that ends the wait,
//! which removes the ticket in the claim's own commit
//! ([`Waiter::leave_edits`]). Dead tickets are dropped by whichever of these
//! commits comes next.
//!
//! No waiter stalls the line for long ([`HANDOVER_GRACE`]):
//! - A ticket that keeps a free lock it cannot take yet (an `acquire: 2`
//!   beside one free lock) renews every [`HOLDING_RENEW`], however long its
//!   lease. Any put behind it that could use that lock watches it; one that
//!   saw it keep the lock without renewing for [`HANDOVER_GRACE`] takes it
//!   out of the line (`dropping a waiter: POOL`, [`Waiter::drop_stale`]). A
//!   live head of the line takes a freed lock within a second, so only a
//!   dead (or unreachable) one is dropped; one that was only slow finds the
//!   note ([`crate::model::line::Dropped`]) and joins again in its place.
//! - Leaving is a commit like any other ([`Waiter::leave`]): a lost race is
//!   planned again at once, a network fault retried with back-off; after a
//!   signal, for at most [`SIGNAL_LEAVE_BUDGET`].
//! - The lease grows with the line ([`stretched_lease`]), so renewals stay
//!   at a few commits a minute however many wait, and waiters deep in the
//!   line look less often ([`Waiter::sleep_budget`]).
//! - A ticket of this build's earlier attempt (Concourse's `attempts:`, a
//!   lost worker) is this put's place: it stands in it and replaces it.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::line::{LineParams, LineSource};
use crate::error::{Error, Result};
use crate::model::duration::human;
use crate::model::line::{Asker, Line, Ticket, Wants};
use crate::model::message::{build_trailers, commit_message, Trailer};
use crate::model::names::{LockName, PoolPath};
use crate::model::pool::{Multi, Operation, Single, Snapshot};
use crate::process::clock::now_unix;
use crate::process::log::Log;
use crate::process::retry::{race_jitter, Backoff};
use crate::process::signal::{Interrupt, CLEANUP_WINDOW};
use crate::protocol::BuildInfo;
use crate::store::retry::{self, Rejection};
use crate::store::seam::{CommitOutcome, FileEdit, LockStore};

/// How often the first in line reads the branch tip while it waits.
pub const PEEK_INTERVAL: Duration = Duration::from_secs(1);

/// How long leaving the line after a signal may take, at most, and never
/// past [`crate::process::signal::CLEANUP_WINDOW`] from the signal (giving
/// back a claim in flight goes first and may need the rest).
pub const SIGNAL_LEAVE_BUDGET: Duration = Duration::from_secs(3);

/// How long leaving the line may take without a signal (after
/// `wait_timeout` or an error): as long as any commit's retries.
pub const LEAVE_BUDGET: Duration = Duration::from_secs(60);

/// Why a ticket of this build's earlier attempt left the line.
const EARLIER_ATTEMPT: &str = "replaced by a later attempt of the same build";

/// How long a ticket may keep a free lock that a put behind it could use
/// without claiming it or renewing, before that put drops it from the line.
pub const HANDOVER_GRACE: Duration = Duration::from_secs(20);

/// How often a ticket that keeps a free lock it cannot take yet renews
/// (well within [`HANDOVER_GRACE`]).
pub const HOLDING_RENEW: i64 = 8;

/// How often a put looks again while it watches a ticket ahead that keeps
/// a free lock it could use, at most.
pub const WATCH_EVERY: Duration = Duration::from_secs(5);

/// Waiters per lease: with more in line, each ticket's lease (and so the
/// time between its renewals) grows in proportion ([`stretched_lease`]).
pub const WAITERS_PER_LEASE: u64 = 4;

/// The lease of a ticket joining or renewing in a line of `waiters` live
/// tickets (its own included): `lease` for up to [`WAITERS_PER_LEASE`],
/// then that many times more, so that the line's renewals stay at about
/// `3 * WAITERS_PER_LEASE` per lease (2.4 a minute at the default 5m)
/// however many wait. A dead ticket's longer lease stalls no one: it is
/// dropped as soon as it keeps a free lock ([`HANDOVER_GRACE`]).
pub fn stretched_lease(lease: u64, waiters: usize) -> u64 {
    let factor = (waiters as u64).div_ceil(WAITERS_PER_LEASE).max(1);
    lease.saturating_mul(factor)
}

/// A put that may wait in line (`acquire`, `claim`).
#[derive(Debug)]
pub struct Waiter {
    id: String,
    wants: Wants,
    /// `shared: true`: waits only behind exclusive tickets.
    shared: bool,
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
    /// When the put started, Unix seconds: a ticket of its build written
    /// before is an earlier attempt's.
    started: i64,
    /// The ticket of this build's earlier attempt, while this put stands
    /// in its place (until its own ticket replaces it).
    stand_in: Option<Ticket>,
    /// The place to join again at after another put dropped this one's
    /// ticket ([`crate::model::line::Dropped::seq`]).
    rejoin_seq: Option<u64>,
    /// Tickets ahead keeping a free lock this put could use: when this put
    /// first saw each so, and its renewal then.
    watched: HashMap<String, (Instant, i64)>,
    /// Those watched for [`HANDOVER_GRACE`] without a renewal, with the
    /// locks they kept: to drop from the line.
    stale: Vec<(Ticket, Vec<LockName>)>,
    /// Whether this put keeps a free lock it cannot take yet (it then
    /// renews every [`HOLDING_RENEW`]).
    holding: bool,
    /// How many live tickets are ahead.
    depth: usize,
    /// [`HANDOVER_GRACE`], or twice `retry_delay` if longer: a live put
    /// that is not first in line looks only every `retry_delay`.
    grace: Duration,
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
            Operation::Single(Single::Share { lock: None, .. }) => Wants::Acquire(1),
            Operation::Single(Single::Share {
                lock: Some(lock), ..
            }) => Wants::Claim(vec![lock.clone()]),
            _ => return None,
        };
        Some(Waiter {
            id: format!("{:016x}", fastrand::u64(..)),
            wants,
            shared: op.is_shared(),
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
            started: now_unix(),
            stand_in: None,
            rejoin_seq: None,
            watched: HashMap::new(),
            stale: Vec::new(),
            holding: false,
            depth: 0,
            grace: HANDOVER_GRACE,
        })
    }

    /// With `retry_delay`: a ticket ahead is dropped only after twice
    /// that, if longer than [`HANDOVER_GRACE`].
    pub fn looking_every(mut self, retry_delay: Duration) -> Waiter {
        self.grace = HANDOVER_GRACE.max(retry_delay.saturating_mul(2));
        self
    }

    /// The ticket id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The ticket as last seen or committed, while the put is in line.
    pub fn ticket(&self) -> Option<&Ticket> {
        self.mine.as_ref()
    }

    /// The line as this put last saw or wrote it.
    pub fn line_seen(&self) -> Option<&Line> {
        self.last_seen.as_ref().map(|(_, line)| line)
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
            (None, _) if self.wrote && snap.line.was_dropped(&self.id).is_some() => {
                if let Some(d) = snap.line.was_dropped(&self.id) {
                    log.warn(format_args!(
                        "this put's ticket in the line of pool {} was dropped by another put ({}); joining again in its place",
                        self.pool, d.why
                    ));
                    self.rejoin_seq = Some(d.seq);
                }
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
        self.find_earlier_attempt(&snap.line, log, now);
        let kept =
            snap.line
                .kept_from(self.asker(), self.shared, &snap.free(), &snap.shared(), now);
        self.watch(&kept.owners);
        snap.reserved = kept
            .owners
            .into_keys()
            .chain(kept.closed.into_keys())
            .collect();
        self.depth = snap.line.ahead_of(self.asker(), now).len();
        self.last_seen = Some((snap.tip.to_string(), snap.line.clone()));
        Ok(())
    }

    /// While not in line: a live ticket of this build, wanting the same,
    /// written before this put started, is this build's earlier attempt
    /// (Concourse runs a step's attempts one after another, and a lost
    /// worker's put is gone): this put stands in its place, and replaces
    /// it when it joins or claims.
    fn find_earlier_attempt(&mut self, line: &Line, log: &Log, now: i64) {
        if self.mine.is_some() || self.build_id.is_none() {
            self.stand_in = None;
            return;
        }
        let earlier = line
            .live(now)
            .into_iter()
            .filter(|t| {
                t.id != self.id
                    && t.build_id == self.build_id
                    && t.wants == self.wants
                    && t.shared == self.shared
                    && t.arrived <= self.started
            })
            .min_by_key(|t| t.place())
            .cloned();
        if let Some(t) = &earlier {
            if self.stand_in.as_ref().map(|s| &s.id) != Some(&t.id) {
                log.line(format_args!(
                    "this build's earlier attempt left ticket {} in the line of pool {} ({}): this put takes its place",
                    t.id,
                    self.pool,
                    t.describe(now)
                ));
            }
        }
        self.stand_in = earlier;
    }

    /// Notes which tickets ahead keep a free lock this put could use
    /// (`owners`: who keeps which), and which of them this put has seen
    /// keep it for [`HANDOVER_GRACE`] without renewing.
    fn watch(&mut self, owners: &std::collections::BTreeMap<LockName, &Ticket>) {
        let mut kept: HashMap<&str, (&Ticket, Vec<LockName>)> = HashMap::new();
        for (lock, t) in owners {
            if self.wants.could_use(lock) {
                kept.entry(t.id.as_str())
                    .or_insert_with(|| (*t, Vec::new()))
                    .1
                    .push(lock.clone());
            }
        }
        let mut watched = HashMap::new();
        self.stale.clear();
        for (id, (t, locks)) in kept {
            let since = match self.watched.get(id) {
                Some((at, renewed)) if *renewed == t.renewed => *at,
                _ => Instant::now(),
            };
            if since.elapsed() >= self.grace {
                self.stale.push((t.clone(), locks));
            }
            watched.insert(id.to_string(), (since, t.renewed));
        }
        self.watched = watched;
    }

    fn asker(&self) -> Asker<'_> {
        match (&self.mine, &self.stand_in) {
            (Some(t), _) | (None, Some(t)) => Asker::Ticket(&t.id),
            (None, None) => Asker::Newcomer {
                priority: self.priority,
            },
        }
    }

    /// After a plan that waits on `snap`: whether this put keeps a free
    /// lock it could use but cannot take yet (the others ahead of it keep
    /// nothing it needs, and it waits for more): it then renews often, to
    /// show the puts behind that it lives.
    pub fn note_wait(&mut self, snap: &Snapshot) {
        self.holding = snap
            .free()
            .difference(&snap.reserved)
            .any(|l| self.wants.could_use(l));
    }

    /// Takes out of the line the tickets ahead that kept a free lock this
    /// put could use for [`HANDOVER_GRACE`] without claiming it or
    /// renewing (a waiter killed outright, a lost worker): one commit of the
    /// line file, each noted as dropped so that one only slow joins again
    /// in its place. `None` when there is none.
    pub fn drop_stale(
        &mut self,
        store: &mut dyn LockStore,
        snap: &Snapshot,
        build: &BuildInfo,
        log: &Log,
        now: i64,
    ) -> Result<Option<CommitOutcome>> {
        if self.stale.is_empty() {
            return Ok(None);
        }
        let gone: Vec<&Ticket> = self.stale.iter().map(|(t, _)| t).collect();
        let why = self
            .stale
            .iter()
            .map(|(t, locks)| {
                format!(
                    "{} (ticket {}) kept {} free for {} without claiming or renewing",
                    t.build,
                    t.id,
                    locks
                        .iter()
                        .map(LockName::as_str)
                        .collect::<Vec<_>>()
                        .join(", "),
                    human(self.grace)
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let line = snap.line.dropping(&gone, &why, now);
        let subject = format!("dropping a waiter: {}", self.pool);
        let mut trailers = build_trailers(build);
        trailers.insert(trailers.len() - 1, (Trailer::Reason, why.clone()));
        let message = commit_message(&subject, build.url().as_deref(), &trailers);
        let edit = FileEdit {
            path: Line::path(&self.pool),
            content: line.to_bytes(),
        };
        let outcome = store.commit_files(Some(&snap.tip), &[edit], &message)?;
        if let CommitOutcome::Committed(id) = &outcome {
            log.warn(format_args!("{subject} ({id}): {why}"));
            for (t, _) in self.stale.drain(..) {
                self.watched.remove(&t.id);
            }
        }
        Ok(Some(outcome))
    }

    /// Whether nobody live in line ahead of this put could use what it
    /// wants: then it watches the tip closely, and may take over an
    /// expired claim.
    pub fn is_first(&self, line: &Line, now: i64) -> bool {
        line.ahead_of(self.asker(), now)
            .iter()
            .filter(|t| !(self.shared && t.shared))
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

    /// The edit taking this put's ticket out of `line`, and the ticket of
    /// this build's earlier attempt it stands in for; none when neither
    /// is there.
    fn leave_edits_of(&self, line: &Line, now: i64) -> Vec<FileEdit> {
        let earlier = self
            .stand_in
            .as_ref()
            .filter(|t| line.find(&t.id).is_some());
        if line.find(&self.id).is_none() && earlier.is_none() {
            return Vec::new();
        }
        let mut left = line.without(&self.id, now);
        if let Some(t) = earlier {
            left = left.dropping(&[t], EARLIER_ATTEMPT, now);
        }
        vec![FileEdit {
            path: Line::path(&self.pool),
            content: left.to_bytes(),
        }]
    }

    /// After a commit that removed the ticket: the put is out of line.
    pub fn left(&mut self) {
        self.mine = None;
        self.stand_in = None;
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
                "; position {at} of {of} in line (ahead: {}{}{})",
                first.describe(now),
                if self.build_id.is_some() && first.build_id == self.build_id {
                    ", this same build: an earlier attempt of this step or another put of it"
                } else {
                    ""
                },
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
        let waiters = snap.line.live(now).len() + usize::from(self.mine.is_none());
        let lease = stretched_lease(self.lease, waiters);
        let (ticket, verb) = match &self.mine {
            None => {
                // In this build's earlier attempt's place, or in its own
                // after another put dropped it, or at the back.
                let (seq, arrived) = match (&self.stand_in, self.rejoin_seq) {
                    (Some(t), _) => (t.seq, t.arrived),
                    (None, Some(seq)) => (seq, now),
                    (None, None) => (snap.line.next_seq(), now),
                };
                (
                    Ticket {
                        id: self.id.clone(),
                        build: self.build.clone(),
                        build_id: self.build_id.clone(),
                        url: self.url.clone(),
                        wants: self.wants.clone(),
                        shared: self.shared,
                        priority: self.priority,
                        arrived,
                        seq,
                        renewed: now,
                        lease,
                    },
                    "waiting in line",
                )
            }
            Some(t) if now >= t.renewed + self.renew_every(t) => (
                Ticket {
                    renewed: now,
                    lease,
                    ..t.clone()
                },
                "renewing place in line",
            ),
            Some(_) => return Ok(None),
        };
        let subject = format!("{verb}: {}", self.pool);
        let mut line = snap.line.with(ticket.clone(), now);
        if let Some(earlier) = self.stand_in.as_ref().filter(|_| self.mine.is_none()) {
            line = line.dropping(&[earlier], EARLIER_ATTEMPT, now);
        }
        let edit = FileEdit {
            path: Line::path(&self.pool),
            content: line.to_bytes(),
        };
        let message = commit_message(&subject, build.url().as_deref(), &build_trailers(build));
        self.wrote = true;
        let outcome = store.commit_files(Some(&snap.tip), &[edit], &message)?;
        if let CommitOutcome::Committed(id) = &outcome {
            self.last_seen = Some((id.to_string(), line));
            self.mine = Some(ticket);
            self.stand_in = None;
            self.rejoin_seq = None;
        }
        Ok(Some(outcome))
    }

    /// Seconds between renewals of `ticket`: a third of its lease, and at
    /// most [`HOLDING_RENEW`] while this put keeps a free lock.
    fn renew_every(&self, ticket: &Ticket) -> i64 {
        let every = (ticket.lease / 3).max(1) as i64;
        if self.holding {
            every.min(HOLDING_RENEW)
        } else {
            every
        }
    }

    /// How long the put may sleep before its next look, at most `cap`
    /// (`retry_delay`): three times that deep in the line (two or more
    /// ahead, nothing free to watch: the first in line takes what is
    /// freed, the next notices within `retry_delay` once it is next); at
    /// most [`WATCH_EVERY`] while a ticket ahead keeps a free lock it
    /// could use; never past the ticket's renewal or `wait_timeout`.
    pub fn sleep_budget(&self, cap: Duration, started: Instant) -> Duration {
        let mut budget = cap;
        if self.queue && self.depth >= 2 && self.watched.is_empty() {
            budget = cap.saturating_mul(3);
        }
        if !self.watched.is_empty() {
            budget = budget.min(WATCH_EVERY);
        }
        if let (true, Some(t)) = (self.queue, &self.mine) {
            let due = (t.renewed + self.renew_every(t)) as f64;
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

    /// Takes the ticket out of the line, if the put ever wrote one: a
    /// commit like any other, only of this put's own ticket (and of the
    /// earlier attempt's it stands in for). A lost race is planned again at
    /// once on the new tip; a network fault is retried with `backoff`; all
    /// within [`LEAVE_BUDGET`], or [`SIGNAL_LEAVE_BUDGET`] after a signal
    /// (the only commits a put makes after one). A failure is logged: the
    /// ticket is then dropped by the puts behind it once it keeps a free
    /// lock ([`HANDOVER_GRACE`]), or lapses after its lease.
    pub fn leave(
        &mut self,
        store: &mut dyn LockStore,
        build: &BuildInfo,
        log: &Log,
        interrupt: &Interrupt,
        backoff: Backoff,
    ) {
        if !self.wrote && self.stand_in.is_none() {
            return;
        }
        let now = Instant::now();
        let deadline = match interrupt.window_end(CLEANUP_WINDOW) {
            Some(end) => end.min(now + SIGNAL_LEAVE_BUDGET),
            None => now + LEAVE_BUDGET,
        };
        interrupt.allow_cleanup(deadline);
        let budget = deadline.saturating_duration_since(now);
        let subject = format!("leaving the line: {}", self.pool);
        let message = commit_message(&subject, build.url().as_deref(), &build_trailers(build));
        // First on the tip last seen: one push when nothing moved since.
        let mut known = self.last_seen.take();
        let mut races = 0u32;
        // A push refused on a tip (a server whose ref update lost the race
        // after the negotiation says "failed to update ref"): final only if
        // the next look finds that tip still there.
        let mut refused: Option<Rejection> = None;
        let pool = &self.pool;
        let on_fault = |e: &Error, delay| {
            log.warn(format_args!(
                "leaving the line of pool {pool}: {}; retrying in {}",
                e.chain(),
                human(delay)
            ));
        };
        let outcome = retry::until_deadline(deadline, &backoff, on_fault, || {
            let (tip, line, fresh) = match known.take() {
                Some((tip, line)) => (tip, line, false),
                None => store
                    .snapshot()
                    .map(|s| (s.tip.to_string(), s.line, true))?,
            };
            retry::refused_again(&mut refused, &tip)?;
            let edits = self.leave_edits_of(&line, now_unix());
            match (edits.is_empty(), fresh) {
                (true, true) => Ok(Some(None)),
                // Not in the line last seen: a write without an answer
                // may have landed since; look.
                (true, false) => Ok(None),
                (false, _) => match store.commit_files(Some(&tip), &edits, &message)? {
                    CommitOutcome::Committed(id) => Ok(Some(Some(id))),
                    CommitOutcome::LostRace => {
                        races += 1;
                        std::thread::sleep(race_jitter(races));
                        Ok(None)
                    }
                    CommitOutcome::Rejected(detail) => {
                        refused = Some(Rejection { tip, detail });
                        Ok(None)
                    }
                },
            }
        });
        self.wrote = false;
        self.mine = None;
        self.stand_in = None;
        match outcome {
            Ok(Some(id)) => log.line(format_args!("{subject} ({id})")),
            Ok(None) => {}
            Err(e) => log.warn(format_args!(
                "could not leave the line of pool {} within {} ({races} lost races): {}; the puts behind drop the ticket once it keeps a free lock for {}",
                self.pool,
                human(budget),
                e.chain(),
                human(HANDOVER_GRACE)
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
    fn the_lease_grows_with_the_line_so_renewals_per_minute_stay_flat() {
        assert_eq!(stretched_lease(300, 1), 300);
        assert_eq!(stretched_lease(300, 4), 300);
        assert_eq!(stretched_lease(300, 5), 600);
        assert_eq!(stretched_lease(300, 8), 600);
        assert_eq!(stretched_lease(1, 9), 3);
        for waiters in 1..200usize {
            let lease = stretched_lease(300, waiters) as f64;
            let per_minute = waiters as f64 * 60.0 / (lease / 3.0);
            assert!(per_minute <= 2.41, "{waiters} waiters: {per_minute}");
        }
    }

    #[test]
    fn only_the_first_in_line_watches_the_tip_and_queue_false_never_does() {
        assert!(waiter(true).watches_tip(true));
        assert!(!waiter(true).watches_tip(false));
        assert!(!waiter(false).watches_tip(true));
        assert!(!waiter(false).watches_tip(false));
    }
}
