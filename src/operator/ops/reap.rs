//! `pool reap`: releases the claims older than a duration, or (`--dead`)
//! those whose Concourse build is over, and removes from the line the
//! tickets of builds that ended; every decision said in a line.

use std::collections::BTreeMap;

use crate::error::Result;
use crate::model::duration::ago;
use crate::model::line::{Line, Ticket};
use crate::model::names::{LockName, PoolPath};
use crate::model::pool::{plan, LockState, Operation, Plan, Single};
use crate::model::shares::{Holder, Shares};
use crate::operator::concourse::build::{
    holding, judge, judge_ticket, BuildRef, DeadPolicy, Lookup, Target, Verdict,
};
use crate::operator::ops::change::release_share;
use crate::operator::ops::line::remove_ticket;
use crate::operator::ops::status::{status, Since, Status};
use crate::operator::ops::{one, rounds, Actor, Done, Operator};
use crate::store::reads::claim_of;
use crate::store::retry::Round;
use crate::store::seam::{LockStore, Step};

/// What a reap works on, and how.
#[derive(Clone, Copy, Debug)]
pub struct Reaping<'a> {
    /// The branch.
    pub branch: &'a str,
    /// The pool whose claims (and line) are reaped.
    pub pool: &'a PoolPath,
    /// Who reaps; the reason recorded says why too.
    pub who: &'a Operator,
    /// Only say what would be released or removed.
    pub dry_run: bool,
}

/// `reap`: releases the claims of the pool older than `older_than` seconds
/// (by the claim commit's committer time; a claim beyond the look-back is
/// older than the oldest commit seen), recording why. A lock held shared
/// is judged holder by holder, by the time each took its share: each
/// holder reaped is one commit giving back its share (`unsharing: L`, the
/// last `unclaiming: L`). With `dry_run`, only says which.
pub fn reap(store: &mut dyn LockStore, job: &Reaping<'_>, older_than: i64) -> Result<Done> {
    let Reaping {
        branch,
        pool,
        who,
        dry_run,
    } = *job;
    let st = status(store, branch, Some(pool))?;
    let mut done = Done {
        commits: Vec::new(),
        lines: Vec::new(),
    };
    let limit = st.now - older_than;
    for p in &st.pools {
        // Who holds what shared as the status read it, at the same commit.
        let shares = &p.shares;
        for l in &p.locks {
            if l.state == LockState::Claimed && shares.is_shared(&l.name) {
                for h in shares.holders(&l.name).iter().filter(|h| h.since <= limit) {
                    let held = ago(h.since, st.now);
                    let why = format!(
                        "{}'s share held for {held}, longer than {}",
                        h.build,
                        ago(0, older_than)
                    );
                    reap_share(store, job, &l.name, h, &why, &mut done)?;
                }
                continue;
            }
            if l.state != LockState::Claimed || l.since.time() > limit {
                continue;
            }
            let held = ago(l.since.time(), st.now);
            if dry_run {
                done.lines
                    .push(format!("would release {} (claimed for {held})", l.name));
                continue;
            }
            let lock = l.name.clone();
            let reason = match &who.reason {
                Some(r) => format!("{r} (reaped: claimed for {held})"),
                None => format!(
                    "reaped: claimed for {held}, longer than {}",
                    ago(0, older_than)
                ),
            };
            let reaper = Operator {
                name: who.name.clone(),
                reason: Some(reason),
            };
            // Fenced on the claim judged: if the lock was released and
            // claimed again (or taken shared) since the status, the new
            // holder keeps it. A claim older than the look-back is still
            // the one judged while no claim of the lock is within it.
            let (claim, judged) = match &l.since {
                Since::Commit { commit, .. } => {
                    (Some(commit.as_str()), format!("its claim {commit}"))
                }
                Since::Before { utc, .. } => (None, format!("its claim from before {utc}")),
            };
            let Some(one) = release_claim(store, pool, &lock, claim, &reaper)? else {
                done.lines
                    .push(format!("kept {lock}: {judged} ended since it was judged"));
                continue;
            };
            done.commits.extend(one.commits);
            done.lines.extend(one.lines);
        }
    }
    if done.lines.is_empty() {
        done.lines.push(format!(
            "no claim in pool {pool} is older than {}",
            ago(0, older_than)
        ));
    }
    Ok(done)
}

/// Gives back `holder`'s share of `lock` for `why` (fenced on the holder
/// as looked at), or with `dry_run` says it would.
fn reap_share(
    store: &mut dyn LockStore,
    job: &Reaping<'_>,
    lock: &LockName,
    holder: &Holder,
    why: &str,
    done: &mut Done,
) -> Result<()> {
    let named = format!("share {} of {lock}", holder.id);
    if job.dry_run {
        done.lines.push(format!("would give back {named}: {why}"));
        return Ok(());
    }
    match release_share(store, job.pool, lock, holder, &reaper(job.who, why))? {
        Some(one) => {
            done.commits.extend(one.commits);
            done.lines.extend(
                one.lines
                    .into_iter()
                    .map(|l| format!("{l}: gave back {named}: {why}")),
            );
        }
        None => done.lines.push(format!(
            "kept {named}: given back since it was looked at ({why})"
        )),
    }
    Ok(())
}

/// Releases `lock` of `pool` only while its claim is still commit `claim`
/// (`None`: a claim older than the look-back, still so while no commit
/// within it claims the lock): one commit, `None` (nothing committed) when
/// the lock was released, or released and claimed again, since that claim
/// was looked at.
pub fn release_claim(
    store: &mut dyn LockStore,
    pool: &PoolPath,
    lock: &LockName,
    claim: Option<&str>,
    who: &Operator,
) -> Result<Option<Done>> {
    rounds(&format!("reaping lock {lock} of pool {pool}"), |tries| {
        let snap = store.snapshot()?;
        if let Some(found) = tries.recovery.recover(store)? {
            return Ok(Round::Done(Some(one(
                &format!("unclaiming: {}", found.lock),
                found.commit.to_string(),
            ))));
        }
        tries.check_rejected(&snap.tip)?;
        if !snap.claimed.contains_key(lock) {
            return Ok(Round::Done(None));
        }
        if claim_of(store, &snap.tip, pool, lock)?
            .map(|c| c.id)
            .as_deref()
            != claim
        {
            return Ok(Round::Done(None));
        }
        let op = Operation::from(Single::Release(lock.clone()));
        let change = match plan(&op, &snap, pool, &mut |n| fastrand::usize(..n))? {
            Plan::Commit(change) => change,
            Plan::Satisfied(_) | Plan::Wait(_) => return Ok(Round::Done(None)),
        };
        let subject = change.subject.clone();
        let step = Step::new(change, who.message(&subject));
        Ok(match tries.commit(store, &snap, &[step])? {
            Some(id) => Round::Done(Some(one(&subject, id.to_string()))),
            None => Round::Again,
        })
    })
}

/// What to do with a claim or ticket whose build Concourse answered about:
/// keep it when the answer is about another build than the one recorded
/// (a reused id), else what `judged` says.
fn verdict(
    answer: &Lookup,
    recorded: crate::operator::concourse::build::Recorded<'_>,
    judged: impl FnOnce() -> Verdict,
) -> Verdict {
    if let Lookup::Found(b) = answer {
        if let Some(why) = crate::operator::concourse::build::mismatch(recorded, b) {
            return Verdict::Keep(why);
        }
    }
    judged()
}

/// The operator `who` reaping for `why`: the reason recorded in the commit.
fn reaper(who: &Operator, why: &str) -> Operator {
    let reason = match &who.reason {
        Some(r) => format!("{r} (reaped: {why})"),
        None => format!("reaped: {why}"),
    };
    Operator {
        name: who.name.clone(),
        reason: Some(reason),
    }
}

/// Asks Concourse about all the builds given at once (see
/// [`crate::operator::concourse::Builds::lookup_all`]): every answer, or
/// an error.
pub type BuildLookupFn<'a> = &'a mut dyn FnMut(&[BuildRef]) -> Result<BTreeMap<BuildRef, Lookup>>;

/// What `reap --dead` counts as dead, and which Concourse it asks.
#[derive(Clone, Copy, Debug)]
pub struct Dead<'a> {
    /// Which builds are over ([`judge`]).
    pub policy: DeadPolicy,
    /// `--concourse-url` (or a fly target's URL): asked instead of the
    /// Concourse each claim or ticket recorded.
    pub concourse: Option<&'a str>,
}

/// A claim held by a build, to ask Concourse about.
struct HeldClaim {
    /// The lock.
    lock: String,
    /// The claiming commit.
    commit: String,
    /// Who claimed it.
    by: Actor,
    /// Its build.
    build: BuildRef,
    /// The build in words.
    what: String,
}

/// A live ticket of the line, to ask Concourse about.
struct WaitingTicket {
    ticket: Ticket,
    /// Its build.
    build: BuildRef,
    /// The build in words.
    what: String,
}

/// `reap --dead`: releases the claims of the pool whose build is over as
/// `policy` counts it (ended `failed`, `errored` or `aborted` longer than
/// the grace ago; `succeeded` too with `finished`; unknown to Concourse
/// with `missing`), then removes from the pool's line the live tickets
/// whose build ended in any status longer than the grace ago
/// ([`judge_ticket`]; expired tickets are left to the next write of the
/// line, unasked). Operators' claims and running builds are never
/// released. Every build is asked about before anything is released or
/// removed, so an API failure changes nothing. Each release is its own
/// commit, fenced on the claim looked at, and each removal a commit of the
/// line file alone, as `dequeue` makes it, of the ticket looked at; both
/// with the build, its status and end time as the reason. `dead.concourse`
/// (`--concourse-url`, a fly target's URL) is asked instead of the
/// Concourse each claim or ticket recorded. With `dry_run`, only says what
/// it would do.
pub fn reap_dead(
    store: &mut dyn LockStore,
    job: &Reaping<'_>,
    dead: &Dead<'_>,
    lookup: BuildLookupFn<'_>,
) -> Result<Done> {
    let st = status(store, job.branch, Some(job.pool))?;
    let mut done = Done {
        commits: Vec::new(),
        lines: Vec::new(),
    };
    // Who holds what shared as the status read it, at the same commit.
    let shares = st
        .pools
        .first()
        .map(|p| p.shares.clone())
        .unwrap_or_default();
    let claims = held_claims(&st, &shares, dead.concourse, &mut done.lines);
    let held = held_shares(&st, &shares, dead.concourse, &mut done.lines);
    let tickets = waiting_tickets(&st, job.pool, dead.concourse, &mut done.lines);
    // No API, no reaping: every answer first.
    // In the order of the claims, then the tickets: the first names the
    // Concourse credentials go to when no URL was given.
    let mut refs: Vec<BuildRef> = Vec::new();
    for r in claims
        .iter()
        .map(|c| &c.build)
        .chain(held.iter().map(|h| &h.build))
        .chain(tickets.iter().map(|t| &t.build))
    {
        if !refs.contains(r) {
            refs.push(r.clone());
        }
    }
    let answers = if refs.is_empty() {
        BTreeMap::new()
    } else {
        lookup(&refs)?
    };
    let judged = Judged {
        answers: &answers,
        now: st.now,
        policy: dead.policy,
    };
    for claim in &claims {
        reap_claim(store, job, &judged, claim, &mut done)?;
    }
    for share in &held {
        reap_dead_share(store, job, &judged, share, &mut done)?;
    }
    for ticket in &tickets {
        reap_ticket(store, job, &judged, ticket, &mut done)?;
    }
    if done.lines.is_empty() {
        done.lines.push(format!(
            "no lock of pool {} is claimed by a build, and nobody waits in its line",
            job.pool
        ));
    }
    Ok(done)
}

/// Concourse's answers, and how to judge them.
struct Judged<'a> {
    answers: &'a BTreeMap<BuildRef, Lookup>,
    now: i64,
    policy: DeadPolicy,
}

/// The claims of `st` held by one build whose Concourse is known; a line
/// in `lines` for each claim kept unasked. Locks held shared are left to
/// [`held_shares`].
fn held_claims(
    st: &Status,
    shares: &Shares,
    concourse: Option<&str>,
    lines: &mut Vec<String>,
) -> Vec<HeldClaim> {
    let mut claims = Vec::new();
    for p in &st.pools {
        for l in p
            .locks
            .iter()
            .filter(|l| l.state == LockState::Claimed && !shares.is_shared(&l.name))
        {
            let (commit, by) = match &l.since {
                Since::Commit { commit, by, .. } => (commit, by),
                Since::Before { utc, .. } => {
                    lines.push(format!(
                        "kept {}: claimed before {utc}, beyond the look-back, so its build is unknown",
                        l.name
                    ));
                    continue;
                }
            };
            if let Some(op) = &by.operator {
                lines.push(format!("kept {}: claimed by operator {op}", l.name));
                continue;
            }
            match crate::operator::concourse::build::find(
                crate::operator::concourse::build::recorded(by),
                concourse,
            ) {
                Ok(r) => {
                    let what = match (&by.build, &r.target) {
                        (Some(b), Target::Id(id)) => format!("{b} (build {id})"),
                        (Some(b), Target::Job { .. }) => b.clone(),
                        (None, _) => r.describe(),
                    };
                    claims.push(HeldClaim {
                        lock: l.name.to_string(),
                        commit: commit.clone(),
                        by: by.clone(),
                        build: r,
                        what,
                    });
                }
                Err(why) => lines.push(format!(
                    "kept {}: claimed by {}: {why}",
                    l.name,
                    by.describe()
                )),
            }
        }
    }
    claims
}

/// One holder of a lock held shared, to ask Concourse about.
struct HeldShare {
    /// The lock.
    lock: LockName,
    /// The holder, as the shares file has it.
    holder: Holder,
    /// Its build.
    build: BuildRef,
    /// The build in words.
    what: String,
}

/// The holders of the locks `st` shows claimed and `shares` held shared,
/// each with its own build; a line in `lines` for each kept unasked.
fn held_shares(
    st: &Status,
    shares: &Shares,
    concourse: Option<&str>,
    lines: &mut Vec<String>,
) -> Vec<HeldShare> {
    let mut held = Vec::new();
    for p in &st.pools {
        for l in p.locks.iter().filter(|l| l.state == LockState::Claimed) {
            for h in shares.holders(&l.name) {
                match crate::operator::concourse::build::find(holding(h), concourse) {
                    Ok(r) => {
                        let what = match &r.target {
                            Target::Id(id) if h.build != r.describe() => {
                                format!("{} (build {id})", h.build)
                            }
                            _ => h.build.clone(),
                        };
                        held.push(HeldShare {
                            lock: l.name.clone(),
                            holder: h.clone(),
                            build: r,
                            what,
                        });
                    }
                    Err(why) => lines.push(format!(
                        "kept share {} of {} ({}): {why}",
                        h.id, l.name, h.build
                    )),
                }
            }
        }
    }
    held
}

/// Gives back `held`'s share if its build is dead, while that holder
/// still holds it as looked at.
fn reap_dead_share(
    store: &mut dyn LockStore,
    job: &Reaping<'_>,
    judged: &Judged<'_>,
    held: &HeldShare,
    done: &mut Done,
) -> Result<()> {
    let Some(answer) = judged.answers.get(&held.build) else {
        return Ok(());
    };
    match verdict(answer, holding(&held.holder), || {
        judge(&held.what, answer, judged.now, judged.policy)
    }) {
        Verdict::Keep(why) => {
            done.lines.push(format!(
                "kept share {} of {}: {why}",
                held.holder.id, held.lock
            ));
            Ok(())
        }
        Verdict::Reap(why) => reap_share(store, job, &held.lock, &held.holder, &why, done),
    }
}

/// The live tickets of `st`'s line whose Concourse is known; a line in
/// `lines` for each ticket left unasked.
fn waiting_tickets(
    st: &Status,
    pool: &PoolPath,
    concourse: Option<&str>,
    lines: &mut Vec<String>,
) -> Vec<WaitingTicket> {
    let mut tickets = Vec::new();
    for p in &st.pools {
        if let Some(why) = &p.line_unreadable {
            lines.push(format!(
                "line of pool {pool}: {why} (counts as empty; the next commit to the line replaces it)"
            ));
        }
        for t in &p.line_file.tickets {
            if !t.is_live(st.now) {
                // It counts for no one already: no question to ask.
                lines.push(format!(
                    "left ticket {} ({}): its lease lapsed, so it counts for no one and the next write of the line drops it",
                    t.id, t.build
                ));
                continue;
            }
            match crate::operator::concourse::build::find(
                crate::operator::concourse::build::waiting(t),
                concourse,
            ) {
                Ok(r) => {
                    let what = match &r.target {
                        Target::Id(id) if t.build != r.describe() => {
                            format!("{} (build {id})", t.build)
                        }
                        _ => t.build.clone(),
                    };
                    tickets.push(WaitingTicket {
                        ticket: t.clone(),
                        build: r,
                        what,
                    });
                }
                Err(why) => lines.push(format!("kept ticket {} ({}): {why}", t.id, t.build)),
            }
        }
    }
    tickets
}

/// Releases `claim` if its build is dead, fenced on the claim looked at.
fn reap_claim(
    store: &mut dyn LockStore,
    job: &Reaping<'_>,
    judged: &Judged<'_>,
    claim: &HeldClaim,
    done: &mut Done,
) -> Result<()> {
    let name = &claim.lock;
    let Some(answer) = judged.answers.get(&claim.build) else {
        return Ok(());
    };
    let recorded = crate::operator::concourse::build::recorded(&claim.by);
    let why = match verdict(answer, recorded, || {
        judge(&claim.what, answer, judged.now, judged.policy)
    }) {
        Verdict::Keep(why) => {
            done.lines.push(format!("kept {name}: {why}"));
            return Ok(());
        }
        Verdict::Reap(why) => why,
    };
    if job.dry_run {
        done.lines.push(format!("would release {name}: {why}"));
        return Ok(());
    }
    let Ok(lock) = LockName::new(name) else {
        return Ok(());
    };
    match release_claim(
        store,
        job.pool,
        &lock,
        Some(&claim.commit),
        &reaper(job.who, &why),
    )? {
        Some(one) => {
            done.commits.extend(one.commits);
            done.lines
                .extend(one.lines.into_iter().map(|l| format!("{l}: {why}")));
        }
        None => done.lines.push(format!(
            "kept {name}: released or claimed again since {why}"
        )),
    }
    Ok(())
}

/// Removes `waiting`'s ticket from the line if its build ended, while it
/// is still the ticket looked at.
fn reap_ticket(
    store: &mut dyn LockStore,
    job: &Reaping<'_>,
    judged: &Judged<'_>,
    waiting: &WaitingTicket,
    done: &mut Done,
) -> Result<()> {
    let (ticket, pool) = (&waiting.ticket, job.pool);
    let Some(answer) = judged.answers.get(&waiting.build) else {
        return Ok(());
    };
    let named = format!("ticket {} ({})", ticket.id, ticket.build);
    let recorded = crate::operator::concourse::build::waiting(ticket);
    let why = match verdict(answer, recorded, || {
        judge_ticket(&waiting.what, answer, judged.now, judged.policy)
    }) {
        Verdict::Keep(why) => {
            done.lines.push(format!("kept {named}: {why}"));
            return Ok(());
        }
        Verdict::Reap(why) => why,
    };
    if job.dry_run {
        done.lines.push(format!(
            "would remove {named} from the line of pool {pool}: {why}"
        ));
        return Ok(());
    }
    let reaper = reaper(job.who, &why);
    // The ticket looked at, while it still counts: one that left the
    // line (its put gave up or got its locks) or lapsed is not touched.
    let doing = format!("removing {named} from the line of pool {pool}");
    let mut pick =
        |line: &Line, now: i64| Ok(line.find(&ticket.id).filter(|t| t.is_live(now)).cloned());
    match remove_ticket(store, pool, &doing, &reaper, &mut pick)? {
        Some(mut one) => {
            if let Some(last) = one.lines.last_mut() {
                last.push_str(&format!(": {why}"));
            }
            done.commits.extend(one.commits);
            done.lines.extend(one.lines);
        }
        None => done.lines.push(format!(
            "kept {named}: {why}, but it left the line or its lease lapsed since it was looked at"
        )),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::{delete, file, MemoryStore, BRANCH};

    fn reap_all(store: &mut MemoryStore) -> Done {
        let pool = PoolPath::new("pool").expect("pool");
        let who = Operator {
            name: "ops".into(),
            reason: None,
        };
        let job = Reaping {
            branch: BRANCH,
            pool: &pool,
            who: &who,
            dry_run: false,
        };
        reap(store, &job, 0).expect("reaped")
    }

    /// A claim older than the look-back (here: made before the first commit
    /// the status reads) is reaped, with one commit.
    #[test]
    fn a_claim_older_than_the_look_back_is_reaped() {
        let mut store = MemoryStore::new("pool", &[], &["a"]);
        let done = reap_all(&mut store);
        assert_eq!(done.commits.len(), 1, "{:?}", done.lines);
        assert_eq!(store.locks(LockState::Unclaimed), ["a"]);
        let log = store.log();
        assert!(log[0].1.starts_with("unclaiming: a"), "{log:?}");
    }

    /// The lock judged for its claim older than the look-back is released
    /// and claimed again before the reap commits: the new holder keeps it,
    /// and the reap commits nothing (it once released any claim of a lock
    /// whose claim it had judged beyond the look-back).
    #[test]
    fn a_claim_older_than_the_look_back_claimed_again_since_it_was_judged_is_kept() {
        let mut store = MemoryStore::new("pool", &[], &["a"]);
        // The status reads the pool without a snapshot; the reap's first
        // snapshot is the one that plans its commit.
        store.before_snapshot(
            1,
            "unclaiming: a\n",
            vec![delete("pool/claimed/a"), file("pool/unclaimed/a", b"a")],
        );
        store.before_snapshot(
            1,
            "claiming: a\n\nPool-Resource-Build-Id: 7\n",
            vec![delete("pool/unclaimed/a"), file("pool/claimed/a", b"a")],
        );
        let done = reap_all(&mut store);
        assert!(done.commits.is_empty(), "{:?}", done.lines);
        assert!(
            done.lines
                .iter()
                .any(|l| l.starts_with("kept a: its claim from before ")),
            "{:?}",
            done.lines
        );
        let log = store.log();
        assert_eq!(log.len(), 3, "{log:?}");
        assert!(log[0].1.starts_with("claiming: a"), "{log:?}");
        assert_eq!(store.locks(LockState::Claimed), ["a"]);
    }
}
