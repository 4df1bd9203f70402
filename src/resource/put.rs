//! The put: read the pool, decide, commit with compare-and-swap, wait.
//!
//! Each round of the put runs in the one read–plan–commit loop
//! ([`crate::store::retry`]): a lost race (the branch moved under us) is
//! retried at once after a few milliseconds of jitter; a network fault is
//! retried with capped backoff; everything else fails at once. No new
//! commit is started after a SIGINT/SIGTERM, so an aborted build never
//! claims a lock later. What this module adds: a lock that is not free is
//! waited for, `retry_delay` at a time, saying in the log what is awaited
//! and for how long; a push whose reply was lost is looked for before
//! planning again ([`crate::store::recovery`]).
//!
//! A waiting round names who holds the locks awaited ([`crate::resource::holder`]);
//! with `source.expire_after`, it takes over a claim older than that
//! instead ([`crate::model::pool::plan_takeover`], a two-step
//! [`crate::store::seam::PutStore::commit`]); a `release` fenced by the `claim` file `in` wrote
//! is checked first.
//!
//! An `acquire` or `claim` that must wait takes a place in the pool's line
//! ([`crate::resource::waiting`]): it leaves alone the free locks kept for
//! waiters ahead of it, renews its ticket while it waits, removes it in the
//! commit of its claim, and leaves the line when it gives up (a signal,
//! `wait_timeout`, an error). The first in line reads the branch tip about
//! once a second instead of sleeping `retry_delay`, so a released lock is
//! handed over at once.

use crate::config::Source;
use crate::error::{Error, Result};
use crate::model::duration::human;
use crate::model::message::{build_trailers, commit_message, lock_trailers, Trailer};
use crate::model::pool::{
    plan, plan_takeover, CommitId, Multi, Operation, Plan, Single, Snapshot, Takeover, Wait,
};
use crate::model::shares::{describe_holders, Holder, ShareEdit};
use crate::process::clock::now_unix;
use crate::process::log::Log;
use crate::process::retry::Backoff;
use crate::process::signal::{Interrupt, CLEANUP_WINDOW};
use crate::protocol::{BuildInfo, Response};
use crate::resource::holder::{self, HolderCache};
use crate::resource::rerun;
use crate::resource::waiting::Waiter;
use crate::store::recovery::{Recovered, Recovery};
use crate::store::retry::{self, Policy, Rejection, Round, Tries};
use crate::store::seam::{
    shares_edit, CommitOutcome, FileEdit, HistoryReader, LockStore, Step, HISTORY_WALK_LIMIT,
};

/// How long a put that fails without a signal after a push without an
/// answer may go on finding out whether that push landed. After a signal
/// it has what is left of [`crate::process::signal::CLEANUP_WINDOW`] (9 s
/// from the signal) to find out and give back what it claimed: a claim
/// nobody holds stops the pool until it is reaped, so it goes before the
/// leave, which gets the rest (a ticket left behind is dropped by the puts
/// behind it within seconds). Line soaks through 1 s network timeouts ran
/// out of 4 s, and once (in CI, loaded) perhaps of 6 s, between finding
/// the claim and pushing its give-back.
pub const GIVE_BACK_BUDGET: std::time::Duration = std::time::Duration::from_secs(6);

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
    /// same put ([`crate::resource::rerun`]).
    pub idempotent: bool,
    /// A `release` whose directory holds the claim commit `in` wrote:
    /// refused unless that claim still holds ([`holder::check_fence`]).
    pub fence: Option<&'a str>,
    /// `priority` and `wait_timeout`: how the put waits in line.
    pub line: &'a crate::config::line::LineParams,
}

/// Runs `op` against `store` until it is done, fails, or is interrupted:
/// [`round`] after round in the one retry loop ([`retry::run`]).
pub fn run(store: &mut dyn LockStore, op: &Operation, ctx: &PutContext<'_>) -> Result<Response> {
    let doing = format!("running {} on pool {}", op.param(), ctx.source.pool);
    let uri = ctx.source.uri.to_string();
    let policy = Policy {
        log: ctx.log,
        interrupt: ctx.interrupt,
        backoff: Some(ctx.backoff),
        max_races: MAX_LOST_RACES,
        doing: &doing,
        uri: &uri,
    };
    let mut holders = HolderCache::default();
    let mut waiter = Waiter::new(op, &ctx.source.line, ctx.line, &ctx.source.pool, ctx.build)
        .map(|w| w.looking_every(ctx.source.retry_delay));
    // The attempts without an answer as the last round left them: what
    // the put must settle before it may fail.
    let mut unanswered = Recovery::default();
    let result = retry::run(&policy, |tries| {
        let r = round(store, op, ctx, tries, &doing, &mut holders, waiter.as_mut());
        unanswered = tries.recovery.clone();
        r
    });
    let result = match result {
        Err(e) if !unanswered.is_empty() => {
            settle_before_failing(store, ctx, op.share_id(), unanswered, e)
        }
        done => done,
    };
    if let (Err(_), Some(w)) = (&result, waiter.as_mut()) {
        // Whatever ended the put (a signal, wait_timeout, an error, even
        // network faults that had their retries), its ticket must not hold
        // up the builds behind it: leaving is a commit like any other.
        w.leave(store, ctx.build, ctx.log, ctx.interrupt, ctx.backoff);
    }
    result
}

/// One round: read the pool; settle a push whose reply was lost; with
/// `idempotent`, look for this build's earlier run; then plan and either
/// wait, report, or commit once. An earlier round's refused push is final
/// if the tip it was refused on is still there ([`Tries::check_rejected`]).
fn round(
    store: &mut dyn LockStore,
    op: &Operation,
    ctx: &PutContext<'_>,
    tries: &mut Tries,
    doing: &str,
    holders: &mut HolderCache,
    mut waiter: Option<&mut Waiter>,
) -> Result<Round<Response>> {
    let PutContext {
        source,
        build,
        log,
        interrupt,
        idempotent,
        ..
    } = ctx;
    let pool = &source.pool;
    let mut snap = store.snapshot()?;
    if let Some(found) = tries.recovery.recover(store)? {
        log.line(format_args!(
            "an earlier push whose reply was lost did reach the branch: {} ({})",
            found.commit, found.lock
        ));
        let response = Response::new(&found.commit, &found.lock, pool.as_str());
        return Ok(Round::Done(with_claim(store, log, response, &found.commit)));
    }
    if *idempotent {
        if let Some(earlier) = rerun::find(store, &snap, op, build)? {
            log.line(format_args!(
                "{}: this build already did it in {} (lock {} of pool {pool}); with idempotent: true that is the answer",
                op.param(),
                earlier.commit,
                earlier.lock_list()
            ));
            let response = Response::new(&earlier.commit, &earlier.lock_list(), pool.as_str());
            return Ok(Round::Done(with_claim(
                store,
                log,
                response,
                &earlier.commit,
            )));
        }
    }
    tries.check_rejected(&snap.tip)?;
    if let Some(claim) = ctx.fence {
        holder::check_fences(store, &snap, pool, op.released(), claim)?;
    }
    let now = now_unix();
    if let Some(w) = waiter.as_deref_mut() {
        w.observe(&mut snap, log, now)?;
    }
    let change = match plan(op, &snap, pool, &mut |n| fastrand::usize(..n))? {
        Plan::Satisfied(lock) if op.is_shared() => {
            // This put's share is there already (a join whose reply was
            // lost and not recognised): its answer is the commit that took
            // it, so that `in` writes this put's holder id.
            let id = op.share_id().unwrap_or_default();
            let commit = share_commit(store, &snap.tip, id)?.ok_or_else(|| Error::Repository {
                what: format!("share {id} of lock {lock} of pool {pool} is held, but the commit that took it is not within the last {HISTORY_WALK_LIMIT} commits"),
                detail: "release it with pool release LOCK --force --holder ID".into(),
            })?;
            log.line(format_args!(
                "{}: this put already holds share {id} of lock {lock} of pool {pool} ({commit})",
                op.param()
            ));
            let response = Response::new(&commit, lock.as_str(), pool.as_str());
            let response =
                with_claim(store, log, response, &commit).with(vec![crate::protocol::Metadata {
                    name: "share".into(),
                    value: id.to_string(),
                }]);
            return Ok(Round::Done(response));
        }
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
            if let Some(expired) = expired_share(op, ctx, &snap, &why, waiter.as_deref(), now) {
                interrupt.check(doing)?;
                return drop_expired_share(store, ctx, tries, &snap, expired, now);
            }
            if let Some(takeover) =
                expired_claim(store, op, ctx, &snap, &why, holders, waiter.as_deref())?
            {
                interrupt.check(doing)?;
                let leave = leave_edits(waiter.as_deref(), &snap, now);
                let round = take_over(store, ctx, tries, snap, &takeover, leave)?;
                if let (Round::Done(_), Some(w)) = (&round, waiter) {
                    w.left();
                }
                return Ok(round);
            }
            let started = tries.started();
            let Some(w) = waiter else {
                log.line(format_args!(
                    "waiting: {} (waited {}, next look in {})",
                    describe_wait(store, &snap, &why, pool, holders, log),
                    human(started.elapsed()),
                    human(source.retry_delay)
                ));
                interrupt.sleep(source.retry_delay, doing)?;
                return Ok(Round::Waited);
            };
            if w.timed_out(started) {
                let why = describe_wait(store, &snap, &why, pool, holders, log);
                return Err(w.timeout_error(&snap.line, &why, now));
            }
            interrupt.check(doing)?;
            w.note_wait(&snap);
            // A ticket ahead that kept a free lock this put could use, past
            // the grace, without claiming or renewing: out of the line, then
            // plan again on the new tip.
            if let Some(outcome) = w.drop_stale(store, &snap, build, log, now)? {
                tries.outcome(outcome, &snap.tip);
                return Ok(Round::Again);
            }
            // One reading of a commit outcome (Tries::outcome): a lost race
            // is counted with jitter, a refused push is final on the same tip.
            let tip = match w.join_or_renew(store, &snap, build, now)? {
                None => snap.tip.to_string(),
                Some(outcome) => match tries.outcome(outcome, &snap.tip) {
                    Some(id) => id.to_string(),
                    None => return Ok(Round::Again),
                },
            };
            // The line as this round left it, for the log and the watch.
            let line = w.line_seen().unwrap_or(&snap.line).clone();
            let first = w.is_first(&line, now);
            let budget = w.sleep_budget(source.retry_delay, started);
            // The first in line reads the tip every PEEK_INTERVAL and looks
            // again as soon as it moves: say so, not the whole budget.
            let next = if w.watches_tip(first) && budget > crate::resource::waiting::PEEK_INTERVAL {
                format!(
                    "watching the branch every {} for up to {}",
                    human(crate::resource::waiting::PEEK_INTERVAL),
                    human(budget)
                )
            } else {
                format!("next look in {}", human(budget))
            };
            log.line(format_args!(
                "waiting: {} (waited {}, {next}){}",
                describe_wait(store, &snap, &why, pool, holders, log),
                human(started.elapsed()),
                w.describe_place(&line, now)
            ));
            w.sleep(store, first, &tip, budget, interrupt, doing)?;
            return Ok(Round::Waited);
        }
        Plan::Commit(change) => change,
    };
    interrupt.check(doing)?;
    let joining = op.share_id().map(|id| share_holder(id, build, now));
    let step = put_step(
        ctx,
        &snap,
        change,
        None,
        op.share_id(),
        joining.as_ref(),
        leave_edits(waiter.as_deref(), &snap, now),
    );
    let Some(id) = tries.commit(store, &snap, std::slice::from_ref(&step))? else {
        return Ok(Round::Again);
    };
    if let Some(w) = waiter {
        w.left();
    }
    let change = &step.change;
    log.line(format_args!("{} ({id})", change.subject));
    if let Some(signal) = interrupt.received() {
        log.warn(format_args!(
            "{signal} arrived while this commit was being pushed; it went through: {} is now in effect",
            change.subject
        ));
    }
    let response = Response::new(&id, &change.lock_list(), pool.as_str());
    let mut response = with_claim(store, log, response, &id);
    // A share's holder id, as `in` writes it to `DIR/share`.
    if let (Some(share), Some(ShareEdit::Join { .. })) = (op.share_id(), &change.share) {
        response = response.with(vec![crate::protocol::Metadata {
            name: "share".into(),
            value: share.to_string(),
        }]);
    }
    Ok(Round::Done(response))
}

/// The commit that took share `id` (`claiming:` or `sharing:` with that
/// `Pool-Resource-Share`), within the history walk's reach from `tip`.
fn share_commit(store: &mut dyn HistoryReader, tip: &str, id: &str) -> Result<Option<String>> {
    let mut found = None;
    store.walk_commits(tip, HISTORY_WALK_LIMIT, &mut |c| {
        let parsed = crate::model::message::Parsed::new(&c.message);
        if parsed.trailer(Trailer::Share) == Some(id)
            && parsed.verb().is_some_and(|(v, _)| v.leaves_claimed())
        {
            found = Some(c.id.to_string());
            return true;
        }
        false
    })?;
    Ok(found)
}

/// The holder a shared put with holder id `id` writes in the pool's
/// shares file.
fn share_holder(id: &str, build: &BuildInfo, now: i64) -> Holder {
    Holder {
        id: id.to_string(),
        build: build
            .describe()
            .unwrap_or_else(|| "a build without BUILD_* variables".into()),
        build_id: build.get("BUILD_ID").map(String::from),
        url: build.url(),
        since: now,
    }
}

/// Why the put waits, naming the holders; when they cannot be looked up
/// (a fault reading the history), the plain reason: a log line must not
/// stop the put.
fn describe_wait(
    store: &mut dyn HistoryReader,
    snap: &Snapshot,
    why: &Wait,
    pool: &crate::model::names::PoolPath,
    holders: &mut HolderCache,
    log: &Log,
) -> String {
    let now = now_unix();
    if let Wait::Claimed(lock) = why {
        let holders = snap.shares.holders(lock);
        if !holders.is_empty() && snap.claimed.contains_key(lock) {
            return format!(
                "lock {lock} of pool {pool} is held shared by {}",
                describe_holders(holders, |h| format!(
                    "for {}",
                    crate::model::duration::ago(h.since, now)
                ))
            );
        }
    }
    if !matches!(why, Wait::Claimed(_) | Wait::NoneFree { .. }) {
        return why.describe(pool, now);
    }
    match holders.get(store, snap, pool) {
        Ok(h) => holder::describe_wait(why, pool, h, now),
        Err(e) => {
            log.warn(format_args!(
                "could not tell who holds the locks: {}",
                e.chain()
            ));
            why.describe(pool, now)
        }
    }
}

/// Adds who holds the lock and since when to the response of a commit that
/// claimed it. After the commit, nothing may fail the put (a retried round
/// would take a second lock): a failed look only loses the metadata.
fn with_claim(
    store: &mut dyn HistoryReader,
    log: &Log,
    response: Response,
    commit: &str,
) -> Response {
    match holder::claim_at(store, commit) {
        Ok(Some(claim)) => response.with(claim.metadata()),
        Ok(None) => response,
        Err(e) => {
            log.warn(format_args!(
                "could not read back claim {commit} for the metadata: {}",
                e.chain()
            ));
            response
        }
    }
}

/// With `source.expire_after`, an `acquire` or `claim` that would wait on
/// a claim older than that takes it over instead.
fn expired_claim(
    store: &mut dyn HistoryReader,
    op: &Operation,
    ctx: &PutContext<'_>,
    snap: &Snapshot,
    why: &Wait,
    holders: &mut HolderCache,
    waiter: Option<&Waiter>,
) -> Result<Option<Takeover>> {
    let Some(limit) = ctx.source.expire_after else {
        return Ok(None);
    };
    let Operation::Single(op @ (Single::Acquire | Single::Claim(_))) = op else {
        return Ok(None);
    };
    if !matches!(why, Wait::Claimed(_) | Wait::NoneFree { .. }) {
        return Ok(None);
    }
    let h = holders.get(store, snap, &ctx.source.pool)?;
    let now = now_unix();
    let mut expired = h.expired(snap, limit, now);
    // Only the first in line for a lock may take it over.
    if let Some(w) = waiter {
        expired.retain(|e| !w.wanted_ahead(&snap.line, &e.lock, now));
    }
    Ok(plan_takeover(op, snap, &expired))
}

/// With `source.expire_after`, a put that waits on a lock held shared
/// gives back a share older than that, as an expiry takeover ends an old
/// claim: one holder at a time, the oldest first, and only by the first in
/// line for the lock. A shared put waits on a lock held shared only behind
/// a writer, whose turn it is; it never expires shares.
fn expired_share(
    op: &Operation,
    ctx: &PutContext<'_>,
    snap: &Snapshot,
    why: &Wait,
    waiter: Option<&Waiter>,
    now: i64,
) -> Option<(crate::model::names::LockName, Holder)> {
    let limit = ctx.source.expire_after?.as_secs() as i64;
    if op.is_shared() || !matches!(why, Wait::Claimed(_) | Wait::NoneFree { .. }) {
        return None;
    }
    let wanted = |lock: &crate::model::names::LockName| match op {
        Operation::Single(Single::Acquire) => true,
        Operation::Single(Single::Claim(l)) => l == lock,
        _ => false,
    };
    snap.shared()
        .into_iter()
        .filter(|l| wanted(l) && !waiter.is_some_and(|w| w.wanted_ahead(&snap.line, l, now)))
        .flat_map(|l| {
            snap.shares
                .holders(&l)
                .iter()
                .filter(|h| now - h.since > limit)
                .map(|h| (l.clone(), h.clone()))
                .collect::<Vec<_>>()
        })
        .min_by_key(|(_, h)| h.since)
}

/// Gives back the expired share `expired` (`unsharing: L`, or
/// `unclaiming: L` for the last), its reason trailer naming the holder and
/// how long it held; then the put plans again.
fn drop_expired_share(
    store: &mut dyn LockStore,
    ctx: &PutContext<'_>,
    tries: &mut Tries,
    snap: &Snapshot,
    (lock, holder): (crate::model::names::LockName, Holder),
    now: i64,
) -> Result<Round<Response>> {
    let pool = &ctx.source.pool;
    let op: Operation = Single::Unshare {
        lock: lock.clone(),
        id: holder.id.clone(),
    }
    .into();
    let Plan::Commit(change) = plan(&op, snap, pool, &mut |_| 0)? else {
        return Ok(Round::Again);
    };
    let reason = format!(
        "expired: a share held by {} for {}, longer than expire_after {}",
        holder.build,
        human(std::time::Duration::from_secs(
            (now - holder.since).max(0) as u64
        )),
        human(ctx.source.expire_after.unwrap_or_default())
    );
    let step = put_step(
        ctx,
        snap,
        change,
        Some(reason.clone()),
        Some(&holder.id),
        None,
        Vec::new(),
    );
    ctx.log.warn(format_args!(
        "lock {lock} of pool {pool}: {reason}; giving that share back"
    ));
    // Not the put's own change: a reply lost here is not looked for as
    // its answer; the next look sees whether the share is gone.
    let outcome = store.commit(snap, std::slice::from_ref(&step)).outcome?;
    if let Some(id) = tries.outcome(outcome, &snap.tip) {
        ctx.log.line(format_args!("{} ({id})", step.change.subject));
    }
    Ok(Round::Again)
}

/// One commit of a put's making: `change` with the lock and build
/// trailers, then `reason` and the share's holder id when given; `files`
/// (the line's edit) and the shares file as the change leaves it
/// (`joining`: the holder a join adds).
fn put_step(
    ctx: &PutContext<'_>,
    snap: &Snapshot,
    change: crate::model::pool::Change,
    reason: Option<String>,
    share: Option<&str>,
    joining: Option<&Holder>,
    mut files: Vec<FileEdit>,
) -> Step {
    let build = ctx.build;
    let mut trailers = lock_trailers(change.locks());
    trailers.extend(build_trailers(build));
    // Before the nonce, which build_trailers puts last.
    let at = trailers.len() - 1;
    let extra = reason
        .map(|r| (Trailer::Reason, r))
        .into_iter()
        .chain(share.map(|id| (Trailer::Share, id.to_string())));
    trailers.splice(at..at, extra);
    let message = commit_message(&change.subject, build.url().as_deref(), &trailers);
    files.extend(shares_edit(&ctx.source.pool, snap, &change, joining));
    Step {
        files,
        ..Step::new(change, message)
    }
}

/// The edit removing this put's ticket from the line, for the commit that
/// ends its wait; none when it has no ticket there.
fn leave_edits(waiter: Option<&Waiter>, snap: &Snapshot, now: i64) -> Vec<FileEdit> {
    waiter.map(|w| w.leave_edits(snap, now)).unwrap_or_default()
}

/// Commits a takeover: `unclaiming: L` with the expiry as reason, then
/// `claiming: L`, both naming the claim replaced, in one update.
fn take_over(
    store: &mut dyn LockStore,
    ctx: &PutContext<'_>,
    tries: &mut Tries,
    snap: Snapshot,
    t: &Takeover,
    leave: Vec<FileEdit>,
) -> Result<Round<Response>> {
    let (pool, log, build) = (&ctx.source.pool, ctx.log, ctx.build);
    let limit = ctx.source.expire_after.unwrap_or_default();
    let replaced = t
        .replaced
        .claim
        .clone()
        .unwrap_or_else(|| "unknown (older than the look-back)".into());
    let reason = format!(
        "expired: claimed by {} for {}, longer than expire_after {}",
        t.replaced.holder,
        human(std::time::Duration::from_secs(t.replaced.age.max(0) as u64)),
        human(limit)
    );
    let mut first = build_trailers(build);
    first.insert(first.len() - 1, (Trailer::Reason, reason));
    first.insert(first.len() - 1, (Trailer::Replaces, replaced.clone()));
    let mut second = build_trailers(build);
    second.insert(second.len() - 1, (Trailer::Replaces, replaced));
    let url = build.url();
    let chain = [
        Step::new(
            t.unclaim.clone(),
            commit_message(&t.unclaim.subject, url.as_deref(), &first),
        ),
        Step {
            files: leave,
            ..Step::new(
                t.claim.clone(),
                commit_message(&t.claim.subject, url.as_deref(), &second),
            )
        },
    ];
    log.warn(holder::describe_takeover(&t.replaced, pool, limit));
    let Some(id) = tries.commit(store, &snap, &chain)? else {
        return Ok(Round::Again);
    };
    log.line(format_args!("{} ({id})", t.claim.subject));
    let response = Response::new(&id, t.claim.lock.as_str(), pool.as_str());
    Ok(Round::Done(with_claim(store, log, response, &id)))
}

/// A put about to fail (`err`: a signal, a give-up, any error) after a
/// push whose reply never came: no claim may outlive it. Looks, within
/// [`GIVE_BACK_BUDGET`], for what became of that push
/// ([`Recovery::recover`]). Landed without a signal: the put did what it
/// was asked, and reports it (exit 0 with that version). Landed after a
/// signal: a claim is given back (one `unclaiming:` commit naming the
/// reason, fenced on that claim) before the put fails, saying so in one
/// line; a landed release or update is in effect and reported as done, as
/// when the reply comes after a signal. Cannot land: `err` as it was.
fn settle_before_failing(
    store: &mut dyn LockStore,
    ctx: &PutContext<'_>,
    share: Option<&str>,
    mut pending: Recovery,
    err: Error,
) -> Result<Response> {
    let (log, pool) = (ctx.log, &ctx.source.pool);
    let started = std::time::Instant::now();
    let signal = ctx.interrupt.received();
    let deadline = match ctx.interrupt.window_end(CLEANUP_WINDOW) {
        Some(end) => {
            ctx.interrupt.allow_cleanup(end);
            end
        }
        None => started + GIVE_BACK_BUDGET,
    };
    let found = loop {
        let looked = pending.recover(store);
        match looked {
            Ok(Some(found)) => break found,
            Ok(None) if pending.is_empty() => return Err(err),
            // Still at its parent: it may land yet; look again.
            Ok(None) | Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            _ => {
                log.warn(format_args!(
                    "could not tell within {} whether this push reached the branch: {}; if it did, release what it claimed (pool release LOCK --force --reason TEXT)",
                    human(started.elapsed()),
                    pending.describe().join(", ")
                ));
                return Err(err);
            }
        }
    };
    let claimed = claimed_by(store, &found.commit);
    let (Some(signal), Some(locks)) = (signal, claimed) else {
        log.line(format_args!(
            "an earlier push whose reply was lost did reach the branch: {} ({}); that is this put's answer, not: {}",
            found.commit,
            found.lock,
            err.chain()
        ));
        let response = Response::new(&found.commit, &found.lock, pool.as_str());
        return Ok(with_claim(store, log, response, &found.commit));
    };
    match give_back(store, ctx, &found, &locks, share, signal, deadline) {
        Ok(Some((subject, id))) => log.line(format_args!(
            "{signal} came while claim {} ({}) was being pushed; it had landed, so this put gave it back: {subject} ({id})",
            found.commit, found.lock
        )),
        Ok(None) => log.line(format_args!(
            "{signal} came while claim {} ({}) was being pushed; it had landed, and none of its locks is held by it any more",
            found.commit, found.lock
        )),
        Err(e) => log.warn(format_args!(
            "{signal} came while claim {} ({}) was being pushed; it had landed and could not be given back: {}; release it (pool release LOCK --force --reason TEXT)",
            found.commit,
            found.lock,
            e.chain()
        )),
    }
    Err(err)
}

/// The locks `commit` claimed, when it is a claim (`claiming:`, also the
/// top of a takeover); `None` for any other change, or when it cannot be read.
fn claimed_by(
    store: &mut dyn HistoryReader,
    commit: &str,
) -> Option<Vec<crate::model::names::LockName>> {
    let mut locks = None;
    let walked = store.walk_commits(commit, 1, &mut |c| {
        locks = crate::store::reads::lock_verbs(c)
            .into_iter()
            .filter(|(verb, _)| verb.leaves_claimed())
            .map(|(_, l)| crate::model::names::LockName::new(l).ok())
            .collect::<Option<Vec<_>>>()
            .filter(|l| !l.is_empty());
        true
    });
    walked.ok().and(locks)
}

/// Gives back the `locks` that claim `found` took and still holds, in one
/// `unclaiming:` commit whose reason trailer says why; before `deadline`,
/// looking again after a lost race or a refused push (final only on the
/// same tip), and retrying network faults with the put's back-off. `None`
/// when it holds none of them.
fn give_back(
    store: &mut dyn LockStore,
    ctx: &PutContext<'_>,
    found: &Recovered,
    locks: &[crate::model::names::LockName],
    share: Option<&str>,
    signal: &str,
    deadline: std::time::Instant,
) -> Result<Option<(String, CommitId)>> {
    let mut refused: Option<Rejection> = None;
    let on_fault = |e: &Error, delay| {
        ctx.log.warn(format_args!(
            "giving back claim {} ({}): {}; retrying in {}",
            found.commit,
            found.lock,
            e.chain(),
            human(delay)
        ));
    };
    retry::until_deadline(deadline, &ctx.backoff, on_fault, || {
        give_back_once(store, ctx, found, locks, share, signal, &mut refused)
    })
}

/// One look and, if the claim still holds some of `locks`, one commit
/// giving them back: `Some` when done, `None` to look again (a lost race,
/// or a push refused on a tip not yet seen twice).
fn give_back_once(
    store: &mut dyn LockStore,
    ctx: &PutContext<'_>,
    found: &Recovered,
    locks: &[crate::model::names::LockName],
    share: Option<&str>,
    signal: &str,
    refused: &mut Option<Rejection>,
) -> Result<Option<Option<(String, CommitId)>>> {
    let pool = &ctx.source.pool;
    let snap = store.snapshot()?;
    retry::refused_again(refused, &snap.tip)?;
    // A share is given back by its holder id, whoever else holds the lock.
    if let Some(id) = share {
        let Some(lock) = locks.iter().find(|l| snap.shares.find(l, id).is_some()) else {
            return Ok(Some(None));
        };
        let op: Operation = Single::Unshare {
            lock: lock.clone(),
            id: id.to_string(),
        }
        .into();
        return commit_give_back(store, ctx, &snap, &op, found, signal, refused);
    }
    let mut held = Vec::new();
    for lock in locks {
        let path = pool.lock_path(crate::model::pool::LockState::Claimed, lock);
        if snap.claimed.contains_key(lock) && !store.changed_since(&found.commit, &path)? {
            held.push(lock.clone());
        }
    }
    let op: Operation = match held.len() {
        0 => return Ok(Some(None)),
        1 => Single::Release(held.remove(0)).into(),
        _ => Multi::Release(held).into(),
    };
    commit_give_back(store, ctx, &snap, &op, found, signal, refused)
}

/// The one commit of a give-back: `op` (a release, or a share's) with the
/// signal as reason; as [`give_back_once`] answers.
fn commit_give_back(
    store: &mut dyn LockStore,
    ctx: &PutContext<'_>,
    snap: &Snapshot,
    op: &Operation,
    found: &Recovered,
    signal: &str,
    refused: &mut Option<Rejection>,
) -> Result<Option<Option<(String, CommitId)>>> {
    let pool = &ctx.source.pool;
    let Plan::Commit(change) = plan(op, snap, pool, &mut |_| 0)? else {
        return Ok(Some(None));
    };
    let reason = format!(
        "{signal} aborted the put that claimed it in {} before it could report it",
        found.commit
    );
    let subject = change.subject.clone();
    let step = put_step(
        ctx,
        snap,
        change,
        Some(reason),
        op.share_id(),
        None,
        Vec::new(),
    );
    let attempt = store.commit(snap, &[step]);
    match attempt.outcome? {
        CommitOutcome::Committed(id) => Ok(Some(Some((subject, id)))),
        CommitOutcome::LostRace => Ok(None),
        CommitOutcome::Rejected(detail) => {
            *refused = Some(Rejection {
                tip: snap.tip.to_string(),
                detail,
            });
            Ok(None)
        }
    }
}

#[cfg(test)]
#[path = "put_tests.rs"]
mod tests;
