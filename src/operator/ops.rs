//! The operator's view of pools: who holds what since when, who waits in
//! line, the claim history, and the operator's changes (`pool status`,
//! `history`, `init`, `add`, `remove`, `claim`, `release`, `hold`,
//! `unhold`, `reap`, `dequeue`).
//!
//! The read side is a library model ([`Status`], [`Interval`]) that
//! serialises to the JSON `pool status --json` and `pool history --json`
//! print (documented in the README), built from any [`LockStore`] with a
//! bounded look at the history: at most [`STATUS_LOOKBACK`] commits, so its
//! cost does not grow with the repository; a state older than that is
//! reported as "since before" the oldest commit seen. The write side makes
//! the same Go-compatible commits the resource makes, with the operator and
//! reason as trailers ([`crate::model::message`]).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::duration::{ago, now_unix, utc};
use crate::model::line::{Line, Ticket, Wants};
use crate::model::message::{
    commit_message, dequeue_subject, operator_trailers, Parsed, Trailer, Verb,
};
use crate::model::names::{is_lock_file_name, LockName, PoolPath};
use crate::model::pool::{plan, Hold, LockState, Operation, Plan};
use crate::store::seam::{CommitMeta, CommitOutcome, FileEdit, LockStore};

/// How many commits `status` looks back at most.
pub const STATUS_LOOKBACK: usize = 1000;
/// How deep under the root `status` looks for pools when none is named.
pub const POOL_SEARCH_DEPTH: usize = 4;
/// Lost races tolerated by one operator command.
const MAX_RACES: u32 = 20;

/// Who made a commit, as its message and author say.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Actor {
    /// `team/pipeline/job #name` (trailer `Pool-Resource-Build`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    /// `BUILD_ID` (trailer `Pool-Resource-Build-Id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    /// The `Build URL:` line (ours and the Go resource's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_url: Option<String>,
    /// An operator (trailer `Pool-Resource-Operator`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// Why (trailer `Pool-Resource-Reason`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The commit author, `Name <email>`.
    pub author: String,
}

impl Actor {
    /// Reads who made `commit`.
    pub fn of(commit: &CommitMeta) -> Actor {
        let m = Parsed::new(&commit.message);
        let own = |t| m.trailer(t).map(String::from);
        Actor {
            build: own(Trailer::Build),
            build_id: own(Trailer::BuildId),
            build_url: m.build_url().map(String::from),
            operator: own(Trailer::Operator),
            reason: own(Trailer::Reason),
            author: commit.author.clone(),
        }
    }

    /// Whether a build (ours or the Go resource's) made the commit.
    pub fn is_build(&self) -> bool {
        self.operator.is_none()
            && (self.build.is_some() || self.build_id.is_some() || self.build_url.is_some())
    }

    /// One line for people: the build and its URL, else the operator and
    /// reason, else the author.
    pub fn describe(&self) -> String {
        if let Some(op) = &self.operator {
            return match &self.reason {
                Some(r) => format!("{op} ({r})"),
                None => op.clone(),
            };
        }
        match (&self.build, &self.build_url) {
            (Some(b), Some(u)) => format!("{b} {u}"),
            (Some(b), None) => b.clone(),
            (None, Some(u)) => u.clone(),
            (None, None) => match &self.build_id {
                Some(id) => format!("build {id}"),
                None => self.author.clone(),
            },
        }
    }
}

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
    pub name: String,
    /// `claimed` or `unclaimed`.
    pub state: &'static str,
    /// Since when, and by whom.
    pub since: Since,
    /// Seconds from `since` to the time of the status.
    pub for_seconds: i64,
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

/// One claim of a lock in [`history`]: from the claim to its release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Interval {
    /// The pool.
    pub pool: String,
    /// The lock.
    pub lock: String,
    /// The claiming commit.
    pub claimed_commit: String,
    /// Its committer time, Unix seconds.
    pub claimed_at: i64,
    /// Who claimed it.
    pub claimed_by: Actor,
    /// The commit that released (or removed) it; `None` while claimed.
    pub released_commit: Option<String>,
    /// Its committer time.
    pub released_at: Option<i64>,
    /// Who released it.
    pub released_by: Option<Actor>,
    /// Seconds held (until now while still claimed).
    pub seconds: i64,
}

fn lock_dirs(
    store: &mut dyn LockStore,
    tip: &str,
    pool: &str,
) -> Result<Option<BTreeMap<String, LockState>>> {
    let mut locks = BTreeMap::new();
    let mut found = false;
    // Unclaimed first: a lock in both (an old Go bug) counts as claimed.
    for state in [LockState::Unclaimed, LockState::Claimed] {
        if let Some(entries) = store.list_folder(tip, &format!("{pool}/{}", state.dir()))? {
            found = true;
            for e in entries {
                if !e.is_dir && is_lock_file_name(&e.name) {
                    locks.insert(e.name, state);
                }
            }
        }
    }
    Ok(found.then_some(locks))
}

/// The pools on the branch at `tip`: directories with a `claimed` or an
/// `unclaimed` folder, outside dot-directories, at most
/// [`POOL_SEARCH_DEPTH`] deep.
pub fn find_pools(store: &mut dyn LockStore, tip: &str) -> Result<Vec<String>> {
    let mut pools = Vec::new();
    let mut queue = vec![(String::new(), 0)];
    while let Some((dir, depth)) = queue.pop() {
        let Some(entries) = store.list_folder(tip, &dir)? else {
            continue;
        };
        let sub: Vec<&str> = entries
            .iter()
            .filter(|e| e.is_dir && !e.name.starts_with('.'))
            .map(|e| e.name.as_str())
            .collect();
        if !dir.is_empty() && sub.iter().any(|s| *s == "claimed" || *s == "unclaimed") {
            pools.push(dir);
            continue;
        }
        if depth < POOL_SEARCH_DEPTH {
            for s in sub {
                let path = if dir.is_empty() {
                    s.to_string()
                } else {
                    format!("{dir}/{s}")
                };
                queue.push((path, depth + 1));
            }
        }
    }
    pools.sort();
    Ok(pools)
}

fn tip_of(store: &mut dyn LockStore, branch: &str) -> Result<String> {
    store.branch_tip()?.ok_or_else(|| Error::BranchNotFound {
        branch: branch.to_string(),
        uri: "the lock repository".into(),
    })
}

/// Whether `commit` changed the file at `path` (compared with its parent).
pub(crate) fn changed(store: &mut dyn LockStore, commit: &CommitMeta, path: &str) -> Result<bool> {
    let now = store.entry_id(&commit.id, path)?;
    let before = match &commit.parent {
        Some(p) => store.entry_id(p, path)?,
        None => None,
    };
    Ok(now != before)
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
    // (pool, lock) → state, for the locks whose "since" is still unknown.
    let mut open: BTreeMap<(String, String), LockState> = BTreeMap::new();
    for name in &names {
        let Some(locks) = lock_dirs(store, &tip, name)? else {
            return Err(Error::PoolNotFound {
                pool: name.clone(),
                branch: branch.to_string(),
                uri: "the lock repository".into(),
            });
        };
        for (lock, state) in locks {
            open.insert((name.clone(), lock), state);
        }
        let hold_path = format!("{}/{name}.json", Hold::DIR);
        let hold = store.read_file(&tip, &hold_path)?.map(|b| Hold::parse(&b));
        let line_path = format!("{}/{name}.json", Line::DIR);
        let line_file = store
            .read_file(&tip, &line_path)?
            .map(|b| Line::parse(&b))
            .unwrap_or_default();
        pools.push(PoolStatus {
            pool: name.clone(),
            hold,
            locks: Vec::new(),
            line: waiters(&line_file, now),
            line_unreadable: line_file.unreadable.clone(),
            line_file,
        });
    }
    let mut found: BTreeMap<(String, String), Since> = BTreeMap::new();
    let mut oldest = now;
    let mut looked_back = 0;
    let mut candidates: Vec<CommitMeta> = Vec::new();
    // First the walk (cheap), then the path checks on the few candidates.
    // The walk stops once each open lock has a candidate that would leave
    // it in its present state (a same-named lock of another pool can take
    // that place; the path check then leaves it "since before").
    let mut need: BTreeMap<String, Vec<LockState>> = BTreeMap::new();
    for ((_, lock), state) in &open {
        need.entry(lock.clone()).or_default().push(*state);
    }
    store.walk_commits(&tip, STATUS_LOOKBACK, &mut |c| {
        looked_back += 1;
        oldest = c.time;
        for (verb, lock) in lock_verbs(c) {
            if let Some(states) = need.get_mut(lock) {
                if candidates.last().map(|k| &k.id) != Some(&c.id) {
                    candidates.push(c.clone());
                }
                let resulting = if verb.leaves_claimed() {
                    LockState::Claimed
                } else {
                    LockState::Unclaimed
                };
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
            let keys: Vec<(String, String)> =
                open.keys().filter(|(_, l)| l == lock).cloned().collect();
            for key in keys {
                let state = open[&key];
                let resulting = if verb.leaves_claimed() {
                    LockState::Claimed
                } else {
                    LockState::Unclaimed
                };
                if resulting != state || verb == Verb::Removing {
                    continue;
                }
                let path = format!("{}/{}/{}", key.0, state.dir(), key.1);
                if changed(store, c, &path)? {
                    open.remove(&key);
                    found.insert(
                        key,
                        Since::Commit {
                            commit: c.id.clone(),
                            time: c.time,
                            utc: utc(c.time),
                            by: Actor::of(c),
                        },
                    );
                }
            }
        }
        if open.is_empty() {
            break;
        }
    }
    for p in &mut pools {
        let locks = lock_dirs(store, &tip, &p.pool)?.unwrap_or_default();
        for (name, state) in locks {
            let since = found
                .remove(&(p.pool.clone(), name.clone()))
                .unwrap_or(Since::Before {
                    time: oldest,
                    utc: utc(oldest),
                });
            p.locks.push(LockStatus {
                name,
                state: state.dir(),
                for_seconds: (now - since.time()).max(0),
                since,
            });
        }
    }
    Ok(Status {
        branch: branch.to_string(),
        tip,
        now,
        looked_back,
        pools,
    })
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
            for l in &p.locks {
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
                out.push_str(&format!("  {:<24} {:<9} {when}\n", l.name, l.state));
            }
            out.push_str(&render_line(p, self.now));
        }
        out
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
            "    {place:<3} {}  {}, priority {}, ",
            w.build,
            w.wants.describe(),
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

/// `pool history`: claims of the pools' locks (of `lock` only, if given)
/// made since `since` (Unix seconds), newest first, with their releases.
pub fn history(
    store: &mut dyn LockStore,
    branch: &str,
    pools: &[String],
    lock: Option<&str>,
    since: i64,
) -> Result<Vec<Interval>> {
    let tip = tip_of(store, branch)?;
    let now = now_unix();
    let mut commits = Vec::new();
    store.walk_commits(&tip, crate::store::seam::HISTORY_WALK_LIMIT, &mut |c| {
        if c.time < since {
            return true;
        }
        if lock_verbs(c)
            .iter()
            .any(|(_, l)| lock.is_none_or(|want| want == *l))
        {
            commits.push(c.clone());
        }
        false
    })?;
    let mut releases: BTreeMap<(String, String), (String, i64, Actor)> = BTreeMap::new();
    let mut out = Vec::new();
    for c in &commits {
        for (verb, l) in lock_verbs(c) {
            for pool in pools {
                let path = format!("{pool}/claimed/{l}");
                if !changed(store, c, &path)? {
                    continue;
                }
                let key = (pool.clone(), l.to_string());
                if verb.leaves_claimed() {
                    let release = releases.remove(&key);
                    let end = release.as_ref().map(|r| r.1).unwrap_or(now);
                    out.push(Interval {
                        pool: pool.clone(),
                        lock: l.to_string(),
                        claimed_commit: c.id.clone(),
                        claimed_at: c.time,
                        claimed_by: Actor::of(c),
                        released_commit: release.as_ref().map(|r| r.0.clone()),
                        released_at: release.as_ref().map(|r| r.1),
                        released_by: release.map(|r| r.2),
                        seconds: (end - c.time).max(0),
                    });
                } else {
                    releases.insert(key, (c.id.clone(), c.time, Actor::of(c)));
                }
            }
        }
    }
    Ok(out)
}

/// Who is acting and why, for the trailers of an operator's commit.
#[derive(Clone, Debug)]
pub struct Operator {
    /// `--as`, else git's user, else `$USER@hostname`.
    pub name: String,
    /// `--reason`.
    pub reason: Option<String>,
}

impl Operator {
    fn message(&self, subject: &str) -> String {
        commit_message(
            subject,
            None,
            &operator_trailers(&self.name, self.reason.as_deref()),
        )
    }
}

/// What an operator's change came to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Done {
    /// The commits made, oldest first (none when there was nothing to do).
    pub commits: Vec<String>,
    /// One line per commit or decision, for people.
    pub lines: Vec<String>,
}

/// `pool init LOCK...`: the pool's `claimed/.gitkeep` and
/// `unclaimed/.gitkeep` and the missing locks (unclaimed), one lock per
/// commit; the branch is created in an empty repository. Nothing to do, no
/// commit.
pub fn init(
    store: &mut dyn LockStore,
    pool: &PoolPath,
    locks: &[LockName],
    who: &Operator,
) -> Result<Done> {
    let mut done = Done {
        commits: Vec::new(),
        lines: Vec::new(),
    };
    let mut races = 0;
    loop {
        let tip = store.branch_tip()?;
        let mut edits = Vec::new();
        let mut existing = BTreeMap::new();
        for dir in ["claimed", "unclaimed"] {
            let keep = format!("{pool}/{dir}/.gitkeep");
            let has = match &tip {
                Some(t) => store.entry_id(t, &keep)?.is_some(),
                None => false,
            };
            if !has {
                edits.push(FileEdit {
                    path: keep,
                    content: Some(Vec::new()),
                });
            }
            if let Some(t) = &tip {
                if let Some(entries) = store.list_folder(t, &format!("{pool}/{dir}"))? {
                    for e in entries {
                        existing.insert(e.name, dir);
                    }
                }
            }
        }
        let missing = locks.iter().find(|l| !existing.contains_key(l.as_str()));
        let subject = match missing {
            Some(lock) => {
                edits.push(FileEdit {
                    path: pool.lock_path(LockState::Unclaimed, lock),
                    content: Some(format!("{lock}\n").into_bytes()),
                });
                Verb::AddingUnclaimed.subject(lock)
            }
            None if edits.is_empty() => return Ok(done),
            None => format!("initialising pool: {pool}"),
        };
        let outcome = store.commit_files(tip.as_deref(), &edits, &who.message(&subject))?;
        if let Some(made) = settled(outcome, &subject, &mut races)? {
            done.lines.extend(made.lines);
            done.commits.extend(made.commits);
        }
    }
}

fn lost(races: u32) -> Error {
    Error::GaveUp {
        attempts: races,
        last: "the branch kept moving under every attempt".into(),
        unconfirmed: Vec::new(),
    }
}

/// The verb and each lock of commit `c`: one pair for a commit about one
/// lock, one per lock for a commit that moved several (`claiming: A, B`).
fn lock_verbs(c: &CommitMeta) -> Vec<(Verb, &str)> {
    match Parsed::new(&c.message).locks() {
        Some((verb, locks)) => locks.into_iter().map(|l| (verb, l)).collect(),
        None => Vec::new(),
    }
}

/// The claim commit of `lock` (the newest commit that put it into
/// `claimed/`), if within the look-back.
pub fn claim_of(
    store: &mut dyn LockStore,
    tip: &str,
    pool: &PoolPath,
    lock: &LockName,
) -> Result<Option<CommitMeta>> {
    let path = pool.lock_path(LockState::Claimed, lock);
    let mut candidates = Vec::new();
    store.walk_commits(tip, STATUS_LOOKBACK, &mut |c| {
        if lock_verbs(c)
            .iter()
            .any(|(verb, l)| *l == lock.as_str() && verb.leaves_claimed())
        {
            candidates.push(c.clone());
        }
        false
    })?;
    for c in candidates {
        if changed(store, &c, &path)? && store.entry_id(&c.id, &path)?.is_some() {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// Called between looks by a waiting `claim --wait` with why it waits;
/// an error (a signal) stops the wait.
pub type WaitFn<'a> = &'a mut dyn FnMut(&str) -> Result<()>;

/// What an operator's change to one lock needs besides the operation.
#[derive(Clone, Copy, Debug, Default)]
pub struct Guard {
    /// `--force`: release a build's claim, remove a claimed lock.
    pub force: bool,
}

/// `add`, `remove`, `claim`, `release` by an operator: one commit made as
/// the resource makes it, refused (nothing committed) when the pool says
/// no. `claim` of a claimed lock (or of a held pool) fails unless `wait`
/// is given, which is called between looks and may fail to stop.
pub fn change_lock(
    store: &mut dyn LockStore,
    pool: &PoolPath,
    op: &Operation,
    who: &Operator,
    guard: Guard,
    wait: Option<WaitFn<'_>>,
) -> Result<Done> {
    let mut wait = wait;
    let mut races = 0;
    loop {
        let snap = store.snapshot()?;
        match op {
            Operation::Release(lock) if snap.claimed.contains_key(lock) => {
                let claim = claim_of(store, &snap.tip, pool, lock)?;
                let by_build = claim.as_ref().is_none_or(|c| Actor::of(c).is_build());
                if by_build && !(guard.force && who.reason.is_some()) {
                    let holder = claim
                        .as_ref()
                        .map(|c| Actor::of(c).describe())
                        .unwrap_or_else(|| "a claim older than the look-back".into());
                    return Err(Error::bad_request(format!(
                        "lock {lock} of pool {pool} is claimed by {holder}; releasing a build's claim needs --force --reason TEXT"
                    )));
                }
            }
            Operation::Remove(lock) if snap.claimed.contains_key(lock) && !guard.force => {
                return Err(Error::bad_request(format!(
                    "lock {lock} of pool {pool} is claimed; removing a claimed lock needs --force"
                )));
            }
            _ => {}
        }
        let change = match plan(op, &snap, pool, &mut |n| fastrand::usize(..n))? {
            Plan::Commit(change) => change,
            Plan::Satisfied(_) => {
                return Ok(Done {
                    commits: Vec::new(),
                    lines: vec!["nothing to do".into()],
                })
            }
            Plan::Wait(why) => {
                let why = why.describe(pool);
                match wait.as_mut() {
                    Some(w) => {
                        w(&why)?;
                        continue;
                    }
                    None => return Err(Error::bad_request(format!("{}: {why}", op.param()))),
                }
            }
        };
        if let Some(done) = settled(
            store.commit(&snap, &change, &who.message(&change.subject))?,
            &change.subject,
            &mut races,
        )? {
            return Ok(done);
        }
    }
}

/// What an operator's commit attempt came to: done, or `None` to look
/// again after a lost race (at most [`MAX_RACES`] of them).
fn settled(outcome: CommitOutcome, subject: &str, races: &mut u32) -> Result<Option<Done>> {
    match outcome {
        CommitOutcome::Committed(id) => Ok(Some(Done {
            lines: vec![format!("{subject} ({id})")],
            commits: vec![id.into()],
        })),
        CommitOutcome::LostRace => {
            *races += 1;
            if *races >= MAX_RACES {
                return Err(lost(*races));
            }
            Ok(None)
        }
        CommitOutcome::Rejected(detail) => Err(Error::PushRejected {
            uri: "the lock repository".into(),
            detail,
        }),
    }
}

/// `hold` (with `Some(reason)`) or `unhold` (`None`) of `pool`.
pub fn set_hold(
    store: &mut dyn LockStore,
    pool: &PoolPath,
    who: &Operator,
    hold: bool,
) -> Result<Done> {
    let mut races = 0;
    loop {
        let snap = store.snapshot()?;
        let path = Hold::path(pool);
        let (subject, content) = match (&snap.hold, hold) {
            (Some(h), true) => {
                return Err(Error::bad_request(format!(
                    "pool {pool} is already {}",
                    h.describe(now_unix())
                )))
            }
            (None, false) => {
                return Err(Error::bad_request(format!("pool {pool} is not held")));
            }
            (None, true) => {
                let h = Hold {
                    by: who.name.clone(),
                    reason: who.reason.clone().unwrap_or_default(),
                    since: now_unix(),
                };
                let json = serde_json::to_vec_pretty(&h).unwrap_or_default();
                (crate::model::message::hold_subject(pool), Some(json))
            }
            (Some(_), false) => (crate::model::message::unhold_subject(pool), None),
        };
        let edits = [FileEdit { path, content }];
        if let Some(done) = settled(
            store.commit_files(Some(&snap.tip), &edits, &who.message(&subject))?,
            &subject,
            &mut races,
        )? {
            return Ok(done);
        }
    }
}

/// `reap`: releases the claims of `pool` older than `older_than` seconds
/// (by the claim commit's committer time; a claim beyond the look-back is
/// older than the oldest commit seen), recording why. With `dry_run`, only
/// says which.
pub fn reap(
    store: &mut dyn LockStore,
    branch: &str,
    pool: &PoolPath,
    older_than: i64,
    dry_run: bool,
    who: &Operator,
) -> Result<Done> {
    let st = status(store, branch, Some(pool))?;
    let mut done = Done {
        commits: Vec::new(),
        lines: Vec::new(),
    };
    let limit = st.now - older_than;
    for p in &st.pools {
        for l in &p.locks {
            if l.state != "claimed" || l.since.time() > limit {
                continue;
            }
            let held = ago(l.since.time(), st.now);
            if dry_run {
                done.lines
                    .push(format!("would release {} (claimed for {held})", l.name));
                continue;
            }
            let Ok(lock) = LockName::new(&l.name) else {
                continue;
            };
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
            let one = change_lock(
                store,
                pool,
                &Operation::Release(lock),
                &reaper,
                Guard { force: true },
                None,
            )?;
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

/// The ticket of the line that `waiter` names: its ticket id, else the
/// build (`team/pipeline/job #name`) or build id of exactly one ticket,
/// live or expired. Errors name the pool and list who waits, or the
/// matches when several do.
pub fn find_waiter<'a>(
    line: &'a Line,
    waiter: &str,
    pool: &PoolPath,
    now: i64,
) -> Result<&'a Ticket> {
    let wanted = waiter.trim();
    if let Some(t) = line.find(wanted) {
        return Ok(t);
    }
    let matches: Vec<&Ticket> = line
        .tickets
        .iter()
        .filter(|t| t.build == wanted || t.build_id.as_deref() == Some(wanted))
        .collect();
    let list = |tickets: &[&Ticket]| {
        tickets
            .iter()
            .map(|t| {
                let state = match line.position(&t.id, now) {
                    Some((n, _)) => format!("position {n}"),
                    None => "expired".into(),
                };
                format!(
                    "ticket {} ({}, {}, {state})",
                    t.id,
                    t.build,
                    t.wants.describe()
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    match matches.as_slice() {
        [one] => Ok(one),
        [] => {
            let all: Vec<&Ticket> = line.tickets.iter().collect();
            let waiting = if all.is_empty() {
                match &line.unreadable {
                    Some(why) => format!("nobody ({why})"),
                    None => "nobody".into(),
                }
            } else {
                list(&all)
            };
            Err(Error::bad_request(format!(
                "no waiter {wanted:?} in the line of pool {pool} (a ticket id, build name or build id); waiting: {waiting}"
            )))
        }
        several => Err(Error::bad_request(format!(
            "{wanted:?} matches {} waiters in the line of pool {pool}: {}; name one by its ticket id",
            several.len(),
            list(several)
        ))),
    }
}

/// `dequeue WAITER`: removes the ticket `waiter` names ([`find_waiter`])
/// from the line of `pool`, in one commit of the line file alone, with the
/// operator and reason as trailers. Expired tickets go with it, as with
/// every write of the line. Nothing is committed when no ticket or several
/// match. The put whose ticket it was stops waiting and fails.
pub fn dequeue(
    store: &mut dyn LockStore,
    pool: &PoolPath,
    waiter: &str,
    who: &Operator,
) -> Result<Done> {
    let mut races = 0;
    loop {
        let snap = store.snapshot()?;
        let now = now_unix();
        let ticket = find_waiter(&snap.line, waiter, pool, now)?;
        let what = format!(
            "removed ticket {} ({}, {}) from the line of pool {pool}",
            ticket.id,
            ticket.build,
            ticket.wants.describe()
        );
        let subject = dequeue_subject(pool, &ticket.build);
        let edits = [FileEdit {
            path: Line::path(pool),
            content: snap.line.without(&ticket.id, now).to_bytes(),
        }];
        if let Some(mut done) = settled(
            store.commit_files(Some(&snap.tip), &edits, &who.message(&subject))?,
            &subject,
            &mut races,
        )? {
            done.lines.push(what);
            return Ok(done);
        }
    }
}

#[cfg(test)]
mod tests {
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

    fn sample() -> Line {
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

    #[test]
    fn a_status_brought_to_a_later_time_expires_the_tickets_whose_lease_lapsed() {
        let st = Status {
            branch: "main".into(),
            tip: "c".into(),
            now: 100,
            looked_back: 1,
            pools: vec![pool_status(sample(), 100)],
        };
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
        let st = Status {
            branch: "main".into(),
            tip: "c".into(),
            now: 100,
            looked_back: 1,
            pools: vec![pool_status(sample(), 100)],
        };
        let text = st.render();
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows[0], "pool envs");
        assert_eq!(rows[2], "  line: 3 waiting");
        assert!(rows[3].starts_with("    1.  main/app/test #9  claim: qa, priority 5, waiting 1m20s (since 1970-01-01T00:00:20Z)  ticket t-b  https://ci/builds/109"), "{text}");
        assert!(
            rows[4].contains("main/app/deploy #1  acquire: 2, priority 0"),
            "{text}"
        );
        assert!(
            rows[6]
                .starts_with("    -   main/app/deploy #1  acquire, priority 0, expired 1m25s ago"),
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
    fn a_waiter_is_named_by_ticket_build_or_build_id_and_an_ambiguous_name_lists_the_matches() {
        let l = sample();
        let pool = PoolPath::new("envs").unwrap();
        let id = |w: &str| find_waiter(&l, w, &pool, 100).map(|t| t.id.clone());
        assert_eq!(id("t-c").unwrap(), "t-c");
        assert_eq!(id("main/app/test #9").unwrap(), "t-b");
        assert_eq!(id(" 103 ").unwrap(), "t-c");
        assert_eq!(
            id("100").unwrap(),
            "t-x",
            "an expired ticket can be named too"
        );
        let err = id("main/app/deploy #1").unwrap_err().to_string();
        assert!(
            err.contains("matches 2 waiters in the line of pool envs"),
            "{err}"
        );
        assert!(
            err.contains("ticket t-a (main/app/deploy #1, acquire: 2, position 2)"),
            "{err}"
        );
        assert!(
            err.contains("ticket t-x (main/app/deploy #1, acquire, expired)"),
            "{err}"
        );
        let err = id("main/app/nope #1").unwrap_err().to_string();
        assert!(
            err.contains("no waiter \"main/app/nope #1\" in the line of pool envs"),
            "{err}"
        );
        assert!(err.contains("ticket t-b"), "{err}");
        let err = find_waiter(&Line::default(), "x", &pool, 1)
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("waiting: nobody"), "{err}");
    }
}
