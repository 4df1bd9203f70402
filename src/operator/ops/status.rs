//! `pool status`: who holds what since when, and who waits in line.
//!
//! [`Status`] is a library model that serialises to the JSON `pool status
//! --json` prints (documented in the README), read from any [`LockStore`]
//! at the branch tip with a bounded look at the history
//! ([`super::STATUS_LOOKBACK`] commits); a state older than that is
//! reported as "since before" the oldest commit seen. Holders are named as
//! on every screen ([`Actor::name`]). [`exec`] prints it as a table or
//! JSON, with the holders' build status when Concourse access is
//! configured, and with `--html` writes the page of `pool serve` too.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::commit::CommitMeta;
use crate::model::duration::{ago, utc};
use crate::model::line::{Line, Ticket, Wants};
use crate::model::message::Verb;
use crate::model::names::{LockName, PoolPath};
use crate::model::pool::{Hold, LockState};
use crate::model::shares::{Holder, Shares};
use crate::operator::concourse::build::BuildState;
use crate::operator::ops::{find_pools, tip_of, Actor, STATUS_LOOKBACK};
use crate::process::clock::now_unix;
use crate::store::explain::explain;
use crate::store::reads::{changed, lock_dirs, lock_verbs};
use crate::store::seam::LockStore;

/// When a lock got into its state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Since {
    /// The commit that put it there: its id, committer time and maker.
    Commit {
        /// The commit id.
        commit: String,
        /// Committer time, Unix seconds.
        time: i64,
        /// The same, RFC 3339 UTC.
        utc: String,
        /// Who made it.
        by: Actor,
        /// What it did to the lock (claimed, released, added, updated it):
        /// for the page's words, not in the JSON.
        #[serde(skip)]
        verb: Verb,
    },
    /// Beyond the look-back: before the oldest commit seen.
    Before {
        /// The oldest commit seen, Unix seconds.
        time: i64,
        /// The same, RFC 3339 UTC.
        utc: String,
    },
}

impl Since {
    /// The time it gives (exact or a bound).
    pub fn time(&self) -> i64 {
        match self {
            Since::Commit { time, .. } | Since::Before { time, .. } => *time,
        }
    }
}

/// One lock in [`Status`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LockStatus {
    /// The lock's name.
    pub name: LockName,
    /// `claimed` or `unclaimed` in JSON.
    pub state: LockState,
    /// Since when, and by whom.
    pub since: Since,
    /// Seconds from `since` to the time of the status.
    pub for_seconds: i64,
    /// What Concourse says of the holder's build, when Concourse access
    /// is configured and a build holds the lock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_status: Option<BuildState>,
    /// Whether it is held shared (`shared: true` puts); absent in JSON
    /// when it is not, so an exclusive lock reads as before.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
    /// Who holds it shared, in the order they took their share (from the
    /// pool's shares file); absent in JSON when it is not held shared.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<Holder>,
}

impl LockStatus {
    /// Since when its longest-standing holder holds it, Unix seconds: the
    /// oldest share of a lock held shared (the first reader may be gone),
    /// else [`Since::time`].
    pub fn held_since(&self) -> i64 {
        self.holders
            .iter()
            .map(|h| h.since)
            .min()
            .unwrap_or_else(|| self.since.time())
    }
}

/// One pool in [`Status`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PoolStatus {
    /// The pool's directory.
    pub pool: String,
    /// The operator's hold, if any.
    pub hold: Option<Hold>,
    /// Its locks, by name.
    pub locks: Vec<LockStatus>,
    /// Who waits for its locks ([`waiters`]): the live tickets in the
    /// order they are served, then the expired ones (marked, no position).
    pub line: Vec<Waiter>,
    /// Why the line file could not be read, when it could not (the line
    /// then counts as empty until the next write replaces the file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line_unreadable: Option<String>,
    /// Why the shares file could not be read, when it could not (every
    /// claimed lock then counts as held by one build).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shares_unreadable: Option<String>,
    /// The shares file as read: who holds which lock shared.
    #[serde(skip)]
    pub shares: Shares,
    /// The line file as read, so that [`Status::at`] can tell again which
    /// tickets are live later on (a lease lapses without any commit).
    #[serde(skip)]
    pub line_file: Line,
}

impl PoolStatus {
    /// The live tickets at `now`: how many wait, and since when the one
    /// that has waited longest waits (Unix seconds).
    pub fn waiting(&self, now: i64) -> (usize, Option<i64>) {
        let live = self.line_file.live(now);
        (live.len(), live.iter().map(|t| t.arrived).min())
    }
}

/// One ticket of a pool's line in [`PoolStatus::line`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Waiter {
    /// 1-based place among the live tickets, in the order they are served
    /// (priority, then the order they joined); `None` when expired.
    pub position: Option<usize>,
    /// The ticket id (what `pool dequeue` takes).
    pub id: String,
    /// Who waits: `team/pipeline/job #name`, or `build ID`.
    pub build: String,
    /// Concourse's `BUILD_ID`, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    /// The build's URL, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// What it waits for: `{"acquire": N}` or `{"claim": [L, ..]}`, as in
    /// the line file.
    pub wants: Wants,
    /// Whether it waits for a shared hold (`shared: true`); absent in JSON
    /// for an exclusive one, as in the line file.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
    /// Its priority (higher goes first).
    pub priority: i64,
    /// When it joined the line, Unix seconds.
    pub arrived: i64,
    /// The same, RFC 3339 UTC.
    pub arrived_utc: String,
    /// Seconds from `arrived` to the time of the status.
    pub waiting_seconds: i64,
    /// When its put last renewed it, Unix seconds.
    pub renewed: i64,
    /// Seconds after `renewed` that it still counts (`source.waiter_lease`).
    pub lease_seconds: u64,
    /// Whether its lease lapsed: it counts for no one, and the next commit
    /// that writes the line drops it.
    pub expired: bool,
}

/// The tickets of `line` at `now`: the live ones in the order they are
/// served, then the expired ones by arrival.
pub fn waiters(line: &Line, now: i64) -> Vec<Waiter> {
    let waiter = |t: &Ticket, position: Option<usize>| Waiter {
        position,
        id: t.id.clone(),
        build: t.build.clone(),
        build_id: t.build_id.clone(),
        url: t.url.clone(),
        wants: t.wants.clone(),
        shared: t.shared,
        priority: t.priority,
        arrived: t.arrived,
        arrived_utc: utc(t.arrived),
        waiting_seconds: (now - t.arrived).max(0),
        renewed: t.renewed,
        lease_seconds: t.lease,
        expired: position.is_none(),
    };
    let mut out: Vec<Waiter> = line
        .live(now)
        .into_iter()
        .enumerate()
        .map(|(i, t)| waiter(t, Some(i + 1)))
        .collect();
    let mut expired: Vec<&Ticket> = line.tickets.iter().filter(|t| !t.is_live(now)).collect();
    expired.sort_by_key(|t| (t.arrived, t.id.clone()));
    out.extend(expired.into_iter().map(|t| waiter(t, None)));
    out
}

/// `pool status`: every pool asked for at the branch tip.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The branch.
    pub branch: String,
    /// The commit the status was read at.
    pub tip: String,
    /// When it was read, Unix seconds.
    pub now: i64,
    /// How many commits were looked at.
    pub looked_back: usize,
    /// The pools.
    pub pools: Vec<PoolStatus>,
}

/// Reads the status of `pool` (or of every pool on the branch).
pub fn status(store: &mut dyn LockStore, branch: &str, pool: Option<&PoolPath>) -> Result<Status> {
    let tip = tip_of(store, branch)?;
    let now = now_unix();
    let names = match pool {
        Some(p) => vec![p.to_string()],
        None => find_pools(store, &tip)?,
    };
    let mut pools = Vec::new();
    // Each pool's locks, as read once at the tip.
    let mut locks_of: Vec<BTreeMap<LockName, LockState>> = Vec::new();
    // (pool, lock) → state, for the locks whose "since" is still unknown.
    let mut open: BTreeMap<(String, LockName), LockState> = BTreeMap::new();
    for name in &names {
        let (pool, locks) = read_pool(store, &tip, branch, name, now)?;
        for (lock, state) in &locks {
            open.insert((name.clone(), lock.clone()), *state);
        }
        pools.push(pool);
        locks_of.push(locks);
    }
    let mut seen = since_of(store, &tip, open, now)?;
    for (p, locks) in pools.iter_mut().zip(locks_of) {
        for (name, state) in locks {
            let since = seen
                .found
                .remove(&(p.pool.clone(), name.clone()))
                .unwrap_or(Since::Before {
                    time: seen.oldest,
                    utc: utc(seen.oldest),
                });
            // A lock held shared is in `claimed/`; unclaimed, any holder
            // left in the file is stale and not shown.
            let holders = match state {
                LockState::Claimed => p.shares.holders(&name).to_vec(),
                LockState::Unclaimed => Vec::new(),
            };
            p.locks.push(LockStatus {
                name,
                state,
                for_seconds: (now - since.time()).max(0),
                since,
                build_status: None,
                shared: !holders.is_empty(),
                holders,
            });
        }
    }
    Ok(Status {
        branch: branch.to_string(),
        tip,
        now,
        looked_back: seen.looked_back,
        pools,
    })
}

/// Pool `name` at `tip` (its hold and line; its locks left to fill) and
/// its locks with their state; an error naming it when it is not there.
fn read_pool(
    store: &mut dyn LockStore,
    tip: &str,
    branch: &str,
    name: &str,
    now: i64,
) -> Result<(PoolStatus, BTreeMap<LockName, LockState>)> {
    let Some(locks) = lock_dirs(store, tip, name)? else {
        let missing = Error::PoolNotFound {
            pool: name.to_string(),
            branch: branch.to_string(),
            uri: "the lock repository".into(),
        };
        return Err(explain(store, missing));
    };
    let hold_path = format!("{}/{name}.json", Hold::DIR);
    let hold = store.read_file(tip, &hold_path)?.map(|b| Hold::parse(&b));
    let line_path = format!("{}/{name}.json", Line::DIR);
    let line_file = store
        .read_file(tip, &line_path)?
        .map(|b| Line::parse(&b))
        .unwrap_or_default();
    let shares_path = format!("{}/{name}.json", Shares::DIR);
    let shares = store
        .read_file(tip, &shares_path)?
        .map(|b| Shares::parse(&b))
        .unwrap_or_default();
    let pool = PoolStatus {
        pool: name.to_string(),
        hold,
        locks: Vec::new(),
        line: waiters(&line_file, now),
        line_unreadable: line_file.unreadable.clone(),
        line_file,
        shares_unreadable: shares.unreadable.clone(),
        shares,
    };
    Ok((pool, locks))
}

/// What the bounded look at the history found.
struct Seen {
    /// (pool, lock) → the commit that put it in its present state.
    found: BTreeMap<(String, LockName), Since>,
    /// The oldest commit looked at (`now` when none), Unix seconds.
    oldest: i64,
    /// How many commits were looked at.
    looked_back: usize,
}

/// Since when each `open` (pool, lock) is in its state: at most
/// [`STATUS_LOOKBACK`] commits back from `tip`. First the walk (cheap),
/// then the path checks on the few candidates. The walk stops once each
/// open lock has a candidate that would leave it in its present state (a
/// same-named lock of another pool can take that place; the path check
/// then leaves it "since before").
fn since_of(
    store: &mut dyn LockStore,
    tip: &str,
    mut open: BTreeMap<(String, LockName), LockState>,
    now: i64,
) -> Result<Seen> {
    let mut seen = Seen {
        found: BTreeMap::new(),
        oldest: now,
        looked_back: 0,
    };
    let mut candidates: Vec<CommitMeta> = Vec::new();
    let mut need: BTreeMap<&str, Vec<LockState>> = BTreeMap::new();
    for ((_, lock), state) in &open {
        need.entry(lock.as_str()).or_default().push(*state);
    }
    store.walk_commits(tip, STATUS_LOOKBACK, &mut |c| {
        seen.looked_back += 1;
        seen.oldest = c.time;
        for (verb, lock) in lock_verbs(c) {
            // `sharing:`/`unsharing:` change only the shares file: the lock
            // got into its state at the first share's `claiming:`.
            if Verb::SHARES.contains(&verb) {
                continue;
            }
            if let Some(states) = need.get_mut(lock) {
                if candidates.last().map(|k| &k.id) != Some(&c.id) {
                    candidates.push(c.clone());
                }
                let resulting = state_after(verb);
                if verb != Verb::Removing {
                    if let Some(i) = states.iter().position(|s| *s == resulting) {
                        states.remove(i);
                    }
                }
                if states.is_empty() {
                    need.remove(lock);
                }
            }
        }
        need.is_empty()
    })?;
    for c in &candidates {
        for (verb, lock) in lock_verbs(c) {
            if Verb::SHARES.contains(&verb) {
                continue;
            }
            let keys: Vec<(String, LockName)> = open
                .keys()
                .filter(|(_, l)| l.as_str() == lock)
                .cloned()
                .collect();
            for key in keys {
                let state = open[&key];
                if state_after(verb) != state || verb == Verb::Removing {
                    continue;
                }
                let path = format!("{}/{}/{}", key.0, state.dir(), key.1);
                if changed(store, c, &path)? {
                    open.remove(&key);
                    seen.found.insert(
                        key,
                        Since::Commit {
                            commit: c.id.clone(),
                            time: c.time,
                            utc: utc(c.time),
                            by: Actor::of(c),
                            verb,
                        },
                    );
                }
            }
        }
        if open.is_empty() {
            break;
        }
    }
    Ok(seen)
}

/// The state a commit with `verb` leaves its lock in (a removal leaves
/// none; its callers skip it).
fn state_after(verb: Verb) -> LockState {
    if verb.leaves_claimed() {
        LockState::Claimed
    } else {
        LockState::Unclaimed
    }
}

impl Status {
    /// This status as read at `now` instead: the times brought up to it,
    /// and the line's positions and expiries again (`pool serve` reads only
    /// when the tip moves, and a ticket's lease lapses without a commit).
    pub fn at(&self, now: i64) -> Status {
        let mut st = self.clone();
        st.now = now;
        for p in &mut st.pools {
            for l in &mut p.locks {
                l.for_seconds = (now - l.since.time()).max(0);
            }
            p.line = waiters(&p.line_file, now);
        }
        st
    }

    /// The status for people, one line per pool and lock, then the pool's
    /// line (only when someone waits or waited).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for p in &self.pools {
            out.push_str(&format!("pool {}", p.pool));
            if let Some(h) = &p.hold {
                out.push_str(&format!(" — {}", h.describe(self.now)));
            }
            out.push('\n');
            if p.locks.is_empty() {
                out.push_str("  (no locks)\n");
            }
            if let Some(why) = &p.shares_unreadable {
                out.push_str(&format!(
                    "  shares: {why} (every claimed lock counts as held by one build)\n"
                ));
            }
            for l in &p.locks {
                if l.shared {
                    out.push_str(&render_shared(l, self.now));
                    continue;
                }
                let when = match &l.since {
                    Since::Commit { utc, by, .. } => {
                        format!(
                            "since {utc} (for {}) by {}",
                            ago(l.since.time(), self.now),
                            by.describe()
                        )
                    }
                    Since::Before { utc, .. } => format!("since before {utc}"),
                };
                let build = match &l.build_status {
                    Some(b) => format!(" — build {}", b.describe(self.now)),
                    None => String::new(),
                };
                out.push_str(&format!("  {:<24} {:<9} {when}{build}\n", l.name, l.state));
            }
            out.push_str(&render_line(p, self.now));
        }
        out
    }
}

/// A lock held shared for people: how many hold it since when, then one
/// row per holder (its build, since when, its share id, its URL).
fn render_shared(l: &LockStatus, now: i64) -> String {
    let when = match &l.since {
        Since::Commit { utc, .. } => format!("since {utc} (for {})", ago(l.since.time(), now)),
        Since::Before { utc, .. } => format!("since before {utc}"),
    };
    let mut out = format!(
        "  {:<24} {:<9} held shared by {}, {when}\n",
        l.name,
        l.state,
        l.holders.len()
    );
    for h in &l.holders {
        out.push_str(&format!(
            "      {}  since {} (for {})  share {}",
            h.build,
            utc(h.since),
            ago(h.since, now),
            h.id
        ));
        if let Some(url) = &h.url {
            out.push_str(&format!("  {url}"));
        }
        out.push('\n');
    }
    out
}

/// Whether a waiter wants a shared hold or an exclusive one, in a word.
pub fn kind_of(shared: bool) -> &'static str {
    if shared {
        "shared"
    } else {
        "exclusive"
    }
}

/// A pool's line for people: nothing when nobody waits.
fn render_line(p: &PoolStatus, now: i64) -> String {
    let mut out = String::new();
    if let Some(why) = &p.line_unreadable {
        out.push_str(&format!(
            "  line: {why} (counts as empty; the next commit to the line replaces it)\n"
        ));
    }
    if p.line.is_empty() {
        return out;
    }
    let live = p.line.iter().filter(|w| !w.expired).count();
    out.push_str(&format!("  line: {live} waiting\n"));
    for w in &p.line {
        let place = match w.position {
            Some(n) => format!("{n}."),
            None => "-".into(),
        };
        let mut row = format!(
            "    {place:<3} {}  {}, {}, priority {}, ",
            w.build,
            w.wants.describe(),
            kind_of(w.shared),
            w.priority
        );
        if w.expired {
            row.push_str(&format!(
                "expired {} ago (lease lapsed; counts for no one)",
                ago(w.renewed.saturating_add(w.lease_seconds as i64), now)
            ));
        } else {
            row.push_str(&format!(
                "waiting {} (since {})",
                ago(w.arrived, now),
                w.arrived_utc
            ));
        }
        row.push_str(&format!("  ticket {}", w.id));
        if let Some(url) = &w.url {
            row.push_str(&format!("  {url}"));
        }
        out.push_str(&row);
        out.push('\n');
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A line file as the put loop writes it: (id, build, build id, wants,
    /// priority, arrived = seq, lease).
    fn line(tickets: &[(&str, &str, &str, &str, i64, i64, u64)]) -> Line {
        let tickets: Vec<serde_json::Value> = tickets
            .iter()
            .map(|(id, build, build_id, wants, priority, arrived, lease)| {
                serde_json::json!({
                    "id": id, "build": build, "build_id": build_id,
                    "url": format!("https://ci/builds/{build_id}"),
                    "wants": serde_json::from_str::<serde_json::Value>(wants).unwrap(),
                    "priority": priority, "arrived": arrived, "seq": arrived,
                    "renewed": arrived, "lease": lease,
                })
            })
            .collect();
        let l = Line::parse(
            serde_json::json!({ "tickets": tickets })
                .to_string()
                .as_bytes(),
        );
        assert_eq!(l.unreadable, None);
        l
    }

    pub(crate) fn sample() -> Line {
        line(&[
            (
                "t-c",
                "main/app/deploy #3",
                "103",
                r#"{"acquire": 1}"#,
                0,
                30,
                1000,
            ),
            (
                "t-a",
                "main/app/deploy #1",
                "101",
                r#"{"acquire": 2}"#,
                0,
                10,
                1000,
            ),
            (
                "t-b",
                "main/app/test #9",
                "109",
                r#"{"claim": ["qa"]}"#,
                5,
                20,
                1000,
            ),
            (
                "t-x",
                "main/app/deploy #1",
                "100",
                r#"{"acquire": 1}"#,
                0,
                5,
                10,
            ),
        ])
    }

    fn pool_status(l: Line, now: i64) -> PoolStatus {
        PoolStatus {
            pool: "envs".into(),
            hold: None,
            locks: Vec::new(),
            line: waiters(&l, now),
            line_unreadable: l.unreadable.clone(),
            line_file: l,
            shares_unreadable: None,
            shares: Default::default(),
        }
    }

    #[test]
    fn waiters_are_listed_in_serving_order_and_expired_ones_last_without_a_place() {
        let w = waiters(&sample(), 100);
        let got: Vec<(&str, Option<usize>, bool)> = w
            .iter()
            .map(|w| (w.id.as_str(), w.position, w.expired))
            .collect();
        assert_eq!(
            got,
            [
                ("t-b", Some(1), false),
                ("t-a", Some(2), false),
                ("t-c", Some(3), false),
                ("t-x", None, true),
            ]
        );
        assert_eq!(w[1].waiting_seconds, 90);
        let json = serde_json::to_value(&w[0]).unwrap();
        assert_eq!(json["wants"], serde_json::json!({"claim": ["qa"]}));
        assert_eq!(json["url"], "https://ci/builds/109");
        let p = pool_status(sample(), 100);
        assert_eq!(p.waiting(100), (3, Some(10)));
        assert_eq!(p.waiting(5000), (0, None), "every lease lapsed by then");
    }

    /// A status at time 100 of one pool with [`sample`]'s line.
    fn sample_status() -> Status {
        Status {
            branch: "main".into(),
            tip: "c".into(),
            now: 100,
            looked_back: 1,
            pools: vec![pool_status(sample(), 100)],
        }
    }

    #[test]
    fn a_status_brought_to_a_later_time_expires_the_tickets_whose_lease_lapsed() {
        let st = sample_status();
        let later = st.at(1015);
        assert_eq!(later.now, 1015);
        let live: Vec<&str> = later.pools[0]
            .line
            .iter()
            .filter(|w| !w.expired)
            .map(|w| w.id.as_str())
            .collect();
        assert_eq!(live, ["t-b", "t-c"], "t-a's lease ran out at 1010");
        assert_eq!(later.pools[0].line[0].waiting_seconds, 995);
    }

    #[test]
    fn the_text_lists_the_line_under_the_locks_and_nothing_when_nobody_waits() {
        let st = sample_status();
        let text = st.render();
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows[0], "pool envs");
        assert_eq!(rows[2], "  line: 3 waiting");
        assert!(rows[3].starts_with("    1.  main/app/test #9  claim: qa, exclusive, priority 5, waiting 1m20s (since 1970-01-01T00:00:20Z)  ticket t-b  https://ci/builds/109"), "{text}");
        assert!(
            rows[4].contains("main/app/deploy #1  acquire: 2, exclusive, priority 0"),
            "{text}"
        );
        assert!(
            rows[6].starts_with(
                "    -   main/app/deploy #1  acquire, exclusive, priority 0, expired 1m25s ago"
            ),
            "{text}"
        );
        let empty = Status {
            pools: vec![pool_status(Line::default(), 100)],
            ..st
        };
        assert_eq!(empty.render(), "pool envs\n  (no locks)\n");
        let broken = Line::parse(b"{");
        assert!(pool_status(broken, 100).line_unreadable.is_some());
    }

    #[test]
    fn a_lock_held_shared_lists_each_holder_and_the_line_says_which_waiters_want_a_share() {
        let holder = |id: &str, since: i64| Holder {
            id: id.into(),
            build: format!("main/app/smoke #{id}"),
            build_id: None,
            url: Some(format!("https://ci/builds/{id}")),
            since,
        };
        let shared = LockStatus {
            name: LockName::new("env").unwrap(),
            state: LockState::Claimed,
            since: Since::Commit {
                commit: "c1".into(),
                time: 10,
                utc: utc(10),
                by: Actor::default(),
                verb: Verb::Claiming,
            },
            for_seconds: 90,
            build_status: None,
            shared: true,
            holders: vec![holder("r2", 40), holder("r3", 70)],
        };
        let exclusive = LockStatus {
            name: LockName::new("qa").unwrap(),
            shared: false,
            holders: Vec::new(),
            ..shared.clone()
        };
        let mut st = sample_status();
        st.pools[0].locks = vec![shared, exclusive];
        let mut line = sample();
        line.tickets[0].shared = true;
        st.pools[0].line = waiters(&line, 100);
        let text = st.render();
        let rows: Vec<&str> = text.lines().collect();
        assert!(
            rows[1].contains("env")
                && rows[1].ends_with(
                    "claimed   held shared by 2, since 1970-01-01T00:00:10Z (for 1m30s)"
                ),
            "{text}"
        );
        assert_eq!(
            rows[2],
            "      main/app/smoke #r2  since 1970-01-01T00:00:40Z (for 1m0s)  share r2  https://ci/builds/r2",
            "{text}"
        );
        assert!(
            rows[3].contains("smoke #r3") && rows[3].contains("share r3"),
            "{text}"
        );
        assert!(
            rows[4].contains("qa") && rows[4].contains(" by "),
            "an exclusive lock as before: {text}"
        );
        assert!(
            text.contains("main/app/deploy #3  acquire, shared, priority 0"),
            "{text}"
        );
        assert!(text.contains("claim: qa, exclusive, priority 5"), "{text}");
        let json = serde_json::to_value(&st).unwrap();
        let locks = &json["pools"][0]["locks"];
        assert_eq!(locks[0]["shared"], true);
        assert_eq!(locks[0]["holders"][1]["id"], "r3");
        assert_eq!(locks[0]["holders"][1]["since"], 70);
        assert_eq!(locks[0]["holders"][1]["url"], "https://ci/builds/r3");
        assert!(
            locks[1].get("shared").is_none() && locks[1].get("holders").is_none(),
            "{json}"
        );
        let line = &json["pools"][0]["line"];
        assert_eq!(line[2]["id"], "t-c");
        assert_eq!(line[2]["shared"], true);
        assert!(
            line[0].get("shared").is_none(),
            "exclusive as in the line file: {json}"
        );
        assert_eq!(
            st.pools[0].locks[0].held_since(),
            40,
            "the longest-standing holder"
        );
    }
}
