//! The waiting room: the line of puts waiting for a pool's locks.
//!
//! No I/O here. A put that cannot go ahead at once records a [`Ticket`] in
//! the pool's line file ([`Line::path`], outside every pool directory, as
//! holds are), renews it while it waits, and removes it in the commit that
//! ends its wait. One JSON file per pool holds every ticket, keyed by
//! [`Ticket::id`]: both backends read it with the snapshot at no extra round
//! trip worth counting, every change to it is a compare-and-swap commit of
//! the whole branch, and a retried write of the same ticket replaces it
//! instead of adding a second one.
//!
//! Who goes first: live tickets ([`Ticket::is_live`]) ordered by priority
//! (higher first), then by the order they joined ([`Ticket::seq`], one more
//! than any ticket in the line when it joined: the order of the join
//! commits, whatever the workers' clocks say, and never a tie within the
//! second), then id ([`Ticket::place`]). A ticket not
//! renewed within its lease counts for no one and is dropped by the next
//! commit that writes the line ([`Line::pruned`]).
//!
//! Which locks a put may take: [`reserve`] walks the live tickets ahead of
//! it, each reserving from the free locks what it could use; the put may
//! take only free locks nobody ahead reserved ([`Line::reserved_for`]). The
//! first in line therefore never waits on the line, so the line always
//! moves while its first waiter lives.
//!
//! This module is the public API for everything that shows the line
//! (status, serve, metrics, dequeue): [`Line::parse`], [`Line::live`],
//! [`Line::position`], [`Ticket::describe`], [`Line::without`].

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::names::{LockName, PoolPath};

/// What a waiting put wants: `acquire: N` (N ≥ 1) or `claim: [L, ..]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Wants {
    /// Any N locks of the pool.
    Acquire(usize),
    /// These locks, all at once.
    Claim(#[serde(serialize_with = "names_out", deserialize_with = "names_in")] Vec<LockName>),
}

fn names_out<S: Serializer>(names: &[LockName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(names.iter().map(LockName::as_str))
}

fn names_in<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<LockName>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|n| LockName::new(n).map_err(serde::de::Error::custom))
        .collect()
}

impl Wants {
    /// `acquire`, `acquire: 2`, `claim: a`, `claim: [a, b]`: for people.
    pub fn describe(&self) -> String {
        match self {
            Wants::Acquire(1) => "acquire".into(),
            Wants::Acquire(n) => format!("acquire: {n}"),
            Wants::Claim(locks) if locks.len() == 1 => format!("claim: {}", locks[0]),
            Wants::Claim(locks) => format!(
                "claim: [{}]",
                locks
                    .iter()
                    .map(LockName::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Whether a put wanting this could take `lock`.
    pub fn could_use(&self, lock: &LockName) -> bool {
        match self {
            Wants::Acquire(_) => true,
            Wants::Claim(locks) => locks.contains(lock),
        }
    }
}

/// One waiting put.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// A random nonce, the same for the whole put: how the put finds its
    /// ticket again, and why a retried write cannot add a second one.
    pub id: String,
    /// Who waits: `team/pipeline/job #name`, or `build ID`.
    pub build: String,
    /// Concourse's `BUILD_ID`, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    /// The build's URL, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// What it waits for.
    pub wants: Wants,
    /// `shared: true`: it waits to share a lock with other readers, so it
    /// waits only behind the exclusive tickets ahead of it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
    /// `params.priority`: higher goes first.
    #[serde(default)]
    pub priority: i64,
    /// When it joined the line, Unix seconds (for people: how long it waits).
    pub arrived: i64,
    /// Its turn among those of its priority: one more than every ticket
    /// in the line it joined ([`Line::next_seq`]).
    #[serde(default)]
    pub seq: u64,
    /// When it was last renewed, Unix seconds.
    pub renewed: i64,
    /// Seconds after [`Ticket::renewed`] that it still counts (`source.waiter_lease`).
    pub lease: u64,
}

/// Where a put stands in the order of the line: priority (higher first),
/// then the order of joining (earlier first), then id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    /// Priority.
    pub priority: i64,
    /// [`Ticket::seq`].
    pub seq: u64,
    /// The ticket id.
    pub id: String,
}

impl Ord for Place {
    fn cmp(&self, other: &Place) -> Ordering {
        other
            .priority
            .cmp(&self.priority)
            .then(self.seq.cmp(&other.seq))
            .then(self.id.cmp(&other.id))
    }
}

impl PartialOrd for Place {
    fn partial_cmp(&self, other: &Place) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ticket {
    /// Its place in the order.
    pub fn place(&self) -> Place {
        Place {
            priority: self.priority,
            seq: self.seq,
            id: self.id.clone(),
        }
    }

    /// Whether it still counts at `now`: renewed within its lease.
    pub fn is_live(&self, now: i64) -> bool {
        self.renewed
            .saturating_add(self.lease.min(i64::MAX as u64) as i64)
            >= now
    }

    /// `main/app/deploy #41, waiting 6m0s`, for the waiting log and status.
    pub fn describe(&self, now: i64) -> String {
        format!(
            "{}, waiting {}",
            self.build,
            crate::model::duration::ago(self.arrived, now)
        )
    }
}

/// Who asks which locks it may take ([`Line::reserved_for`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asker<'a> {
    /// A put with a ticket in the line: everyone before its ticket is ahead.
    Ticket(&'a str),
    /// A put without a ticket (not waiting yet, `queue: false`, or whose
    /// ticket is gone): every live ticket of its priority or higher is ahead,
    /// since they were there first.
    Newcomer {
        /// The put's priority.
        priority: i64,
    },
}

/// A pool's line: its tickets, as the line file holds them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// Every ticket in the file, live or not, in the file's order.
    pub tickets: Vec<Ticket>,
    /// Tickets taken out of the line by someone other than their put, and
    /// why ([`Dropped`]): a put that finds its ticket here joins again in
    /// its place instead of failing as after `pool dequeue`. Kept for
    /// [`Dropped::MEMORY`] seconds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<Dropped>,
    /// Why the file could not be read, when it could not: the line then
    /// counts as empty (a broken file must not block the pool forever) and
    /// the next commit that writes the line replaces it.
    #[serde(skip)]
    pub unreadable: Option<String>,
}

/// A ticket another put took out of the line: one that kept a free lock
/// without claiming it or renewing its ticket (a waiter presumed dead), or
/// one this build's later attempt took the place of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    /// The ticket's id.
    pub id: String,
    /// Its place in the order when it was dropped ([`Ticket::seq`]): a
    /// put that was only slow joins again there.
    #[serde(default)]
    pub seq: u64,
    /// When, Unix seconds.
    #[serde(default)]
    pub at: i64,
    /// Why, for people.
    #[serde(default)]
    pub why: String,
}

impl Dropped {
    /// How long a note of a dropped ticket is kept, in seconds: longer
    /// than any put takes to look at the line again.
    pub const MEMORY: i64 = 3600;
}

impl Line {
    /// The directory of every pool's line file (beside [`crate::model::pool::Hold::DIR`]).
    pub const DIR: &'static str = ".pool-resource/line";

    /// The repository path of `pool`'s line file.
    pub fn path(pool: &PoolPath) -> String {
        format!("{}/{pool}.json", Line::DIR)
    }

    /// Reads a line file. One that cannot be read counts as an empty line,
    /// with [`Line::unreadable`] saying why: a ticket only orders waiters,
    /// so ignoring a broken file costs fairness for a while, never a lock,
    /// while honouring it could block the pool for good.
    pub fn parse(bytes: &[u8]) -> Line {
        serde_json::from_slice(bytes).unwrap_or_else(|e| Line {
            unreadable: Some(format!("unreadable line file: {e}")),
            ..Line::default()
        })
    }

    /// The file's content, or `None` when no ticket (nor note of a
    /// dropped one) is left (the file is then deleted, as a hold's is).
    pub fn to_bytes(&self) -> Option<Vec<u8>> {
        if self.tickets.is_empty() && self.dropped.is_empty() {
            return None;
        }
        let mut bytes = serde_json::to_vec_pretty(self).ok()?;
        bytes.push(b'\n');
        Some(bytes)
    }

    /// The [`Ticket::seq`] of a ticket joining this line now: after every
    /// ticket in it.
    pub fn next_seq(&self) -> u64 {
        self.tickets.iter().map(|t| t.seq).max().unwrap_or(0) + 1
    }

    /// The ticket with this id, live or not.
    pub fn find(&self, id: &str) -> Option<&Ticket> {
        self.tickets.iter().find(|t| t.id == id)
    }

    /// The live tickets in the order they are served.
    pub fn live(&self, now: i64) -> Vec<&Ticket> {
        let mut live: Vec<&Ticket> = self.tickets.iter().filter(|t| t.is_live(now)).collect();
        live.sort_by_key(|t| t.place());
        live
    }

    /// The live tickets ahead of `asker`, in order.
    pub fn ahead_of(&self, asker: Asker<'_>, now: i64) -> Vec<&Ticket> {
        let live = self.live(now);
        match asker {
            Asker::Ticket(id) => match live.iter().position(|t| t.id == id) {
                Some(at) => live[..at].to_vec(),
                None => self.ahead_of(
                    Asker::Newcomer {
                        priority: self.find(id).map_or(0, |t| t.priority),
                    },
                    now,
                ),
            },
            Asker::Newcomer { priority } => live
                .into_iter()
                .filter(|t| t.priority >= priority)
                .collect(),
        }
    }

    /// The 1-based position of ticket `id` among the live tickets, and
    /// how many there are; `None` when it is not live.
    pub fn position(&self, id: &str, now: i64) -> Option<(usize, usize)> {
        let live = self.live(now);
        let at = live.iter().position(|t| t.id == id)?;
        Some((at + 1, live.len()))
    }

    /// Which of the `free` locks are reserved for live tickets ahead of
    /// `asker` ([`reserve`]): the locks it must leave alone.
    pub fn reserved_for(
        &self,
        asker: Asker<'_>,
        free: &BTreeSet<LockName>,
        now: i64,
    ) -> BTreeSet<LockName> {
        reserve(
            &self.ahead_of(asker, now),
            free,
            &self.claimed_by_waiters(now),
        )
    }

    /// Which live ticket ahead of `asker` keeps which of the `free` locks
    /// ([`reserve_owners`]).
    pub fn reserved_owners(
        &self,
        asker: Asker<'_>,
        free: &BTreeSet<LockName>,
        now: i64,
    ) -> BTreeMap<LockName, &Ticket> {
        reserve_owners(
            &self.ahead_of(asker, now),
            free,
            &self.claimed_by_waiters(now),
        )
    }

    /// What a put (`shared` or not) must leave alone ([`Kept`]): the free
    /// locks live tickets ahead of it keep ([`reserve_owners`]), and, for
    /// a shared put, the locks held shared (`held_shared`) that an
    /// exclusive ticket ahead could use: a writer waiting stops new
    /// readers from joining, so the readers holding it finish and it gets
    /// its turn. A shared put waits only behind exclusive tickets; an
    /// exclusive one behind every ticket, except a shared ticket that can
    /// join a lock held shared instead (it keeps no free lock).
    pub fn kept_from(
        &self,
        asker: Asker<'_>,
        shared: bool,
        free: &BTreeSet<LockName>,
        held_shared: &BTreeSet<LockName>,
        now: i64,
    ) -> Kept<'_> {
        let ahead = self.ahead_of(asker, now);
        let named = self.claimed_by_waiters(now);
        // The locks held shared a reader at index i of `ahead` could join:
        // those no exclusive ticket before it wants.
        let joinable = |i: usize, t: &Ticket| {
            held_shared.iter().any(|l| {
                t.wants.could_use(l)
                    && !ahead[..i].iter().any(|x| !x.shared && x.wants.could_use(l))
            })
        };
        if shared {
            let writers: Vec<&Ticket> = ahead.iter().copied().filter(|t| !t.shared).collect();
            let closed = held_shared
                .iter()
                .filter_map(|l| {
                    writers
                        .iter()
                        .find(|t| t.wants.could_use(l))
                        .map(|t| (l.clone(), *t))
                })
                .collect();
            Kept {
                owners: reserve_owners(&writers, free, &named),
                closed,
            }
        } else {
            let keeping: Vec<&Ticket> = ahead
                .iter()
                .enumerate()
                .filter(|(i, t)| !(t.shared && joinable(*i, t)))
                .map(|(_, t)| *t)
                .collect();
            Kept {
                owners: reserve_owners(&keeping, free, &named),
                closed: BTreeMap::new(),
            }
        }
    }

    /// Every lock a live `claim` ticket names.
    pub fn claimed_by_waiters(&self, now: i64) -> BTreeSet<LockName> {
        self.live(now)
            .into_iter()
            .filter_map(|t| match &t.wants {
                Wants::Claim(locks) => Some(locks.iter().cloned()),
                Wants::Acquire(_) => None,
            })
            .flatten()
            .collect()
    }

    /// Whether a live ticket ahead of `asker` could use `lock`: an expiry
    /// takeover of `lock` is for the first in line for it only.
    pub fn wanted_ahead(&self, asker: Asker<'_>, lock: &LockName, now: i64) -> bool {
        self.ahead_of(asker, now)
            .iter()
            .any(|t| t.wants.could_use(lock))
    }

    /// This line without dead tickets, with `ticket` added or (same id)
    /// replaced.
    pub fn with(&self, ticket: Ticket, now: i64) -> Line {
        let mut line = self.without(&ticket.id, now);
        line.tickets.push(ticket);
        line
    }

    /// This line without dead tickets and without ticket `id`.
    pub fn without(&self, id: &str, now: i64) -> Line {
        let mut line = self.pruned(now);
        line.tickets.retain(|t| t.id != id);
        line
    }

    /// This line without dead tickets (and forgetting that it was
    /// unreadable: what is written is this).
    pub fn pruned(&self, now: i64) -> Line {
        Line {
            tickets: self
                .tickets
                .iter()
                .filter(|t| t.is_live(now))
                .cloned()
                .collect(),
            dropped: self
                .dropped
                .iter()
                .filter(|d| d.at.saturating_add(Dropped::MEMORY) >= now)
                .cloned()
                .collect(),
            unreadable: None,
        }
    }

    /// This line without dead tickets and without the tickets `gone`, each
    /// noted as dropped for `why` ([`Line::dropped`]).
    pub fn dropping(&self, gone: &[&Ticket], why: &str, now: i64) -> Line {
        let mut line = self.pruned(now);
        line.tickets.retain(|t| gone.iter().all(|g| g.id != t.id));
        line.dropped.retain(|d| gone.iter().all(|g| g.id != d.id));
        line.dropped.extend(gone.iter().map(|t| Dropped {
            id: t.id.clone(),
            seq: t.seq,
            at: now,
            why: why.to_string(),
        }));
        line
    }

    /// The note of ticket `id`'s drop, if another put dropped it.
    pub fn was_dropped(&self, id: &str) -> Option<&Dropped> {
        self.dropped.iter().find(|d| d.id == id)
    }
}

/// What a put must leave alone ([`Line::kept_from`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kept<'t> {
    /// Which ticket ahead keeps which free lock.
    pub owners: BTreeMap<LockName, &'t Ticket>,
    /// For a shared put: which exclusive ticket ahead waits for which lock
    /// held shared, which the put then must not join.
    pub closed: BTreeMap<LockName, &'t Ticket>,
}

/// The locks of `free` that the tickets `ahead` (in the order they are
/// served) reserve ([`reserve_owners`] without who reserved them).
pub fn reserve(
    ahead: &[&Ticket],
    free: &BTreeSet<LockName>,
    named_by_claims: &BTreeSet<LockName>,
) -> BTreeSet<LockName> {
    reserve_owners(ahead, free, named_by_claims)
        .into_keys()
        .collect()
}

/// Which ticket of `ahead` (in the order they are served) reserves which
/// lock of `free`. Each, in turn, reserves from what the ones before it
/// left: a `claim` ticket its named locks that are free; an `acquire: N`
/// ticket up to N of the remaining free locks, by name within each tier:
/// first those no `claim` waiter names (`named_by_claims`), then those
/// named only by `claim` waiters behind everyone in `ahead`, last those a
/// `claim` waiter in `ahead` names (so that an `acquire: 2` ahead of a
/// `claim: [a]` keeps two other locks and leaves `a` to it). A ticket that
/// can take only part of what it wants still reserves that part, so that
/// it is not starved by later puts that want less (an `acquire: 2`
/// waiting beside a single free lock keeps it). A `claim: L` ticket
/// reserves nothing while L is claimed, so it holds up nobody who can use
/// another lock.
pub fn reserve_owners<'t>(
    ahead: &[&'t Ticket],
    free: &BTreeSet<LockName>,
    named_by_claims: &BTreeSet<LockName>,
) -> BTreeMap<LockName, &'t Ticket> {
    let named_ahead: BTreeSet<&LockName> = ahead
        .iter()
        .filter_map(|t| match &t.wants {
            Wants::Claim(locks) => Some(locks.iter()),
            Wants::Acquire(_) => None,
        })
        .flatten()
        .collect();
    let tier = |l: &LockName| match (named_by_claims.contains(l), named_ahead.contains(l)) {
        (false, _) => 0,
        (true, false) => 1,
        (true, true) => 2,
    };
    let mut left = free.clone();
    let mut reserved = BTreeMap::new();
    for ticket in ahead {
        match &ticket.wants {
            Wants::Claim(locks) => {
                for lock in locks {
                    if left.remove(lock) {
                        reserved.insert(lock.clone(), *ticket);
                    }
                }
            }
            Wants::Acquire(n) => {
                let mut order: Vec<LockName> = left.iter().cloned().collect();
                order.sort_by_key(|l| tier(l));
                for lock in order.into_iter().take(*n) {
                    left.remove(&lock);
                    reserved.insert(lock, *ticket);
                }
            }
        }
        if left.is_empty() {
            break;
        }
    }
    reserved
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> LockName {
        LockName::new(s).unwrap()
    }

    fn names(list: &[&str]) -> BTreeSet<LockName> {
        list.iter().map(|n| name(n)).collect()
    }

    fn acquire(id: &str, n: usize, priority: i64, arrived: i64) -> Ticket {
        Ticket {
            id: id.into(),
            build: format!("team/pipe/job #{id}"),
            build_id: None,
            url: None,
            wants: Wants::Acquire(n),
            shared: false,
            priority,
            arrived,
            seq: arrived as u64,
            renewed: arrived,
            lease: 100,
        }
    }

    fn claim(id: &str, locks: &[&str], priority: i64, arrived: i64) -> Ticket {
        Ticket {
            wants: Wants::Claim(locks.iter().map(|l| name(l)).collect()),
            ..acquire(id, 1, priority, arrived)
        }
    }

    fn line(tickets: Vec<Ticket>) -> Line {
        Line {
            tickets,
            ..Line::default()
        }
    }

    fn ids(tickets: &[&Ticket]) -> Vec<String> {
        tickets.iter().map(|t| t.id.clone()).collect()
    }

    #[test]
    fn the_order_of_joining_is_the_order_of_the_join_commits_not_of_clocks() {
        // Joined second, on a worker whose clock is behind.
        let mut late = acquire("b", 1, 0, 5);
        late.seq = 2;
        let early = Ticket {
            seq: 1,
            ..acquire("a", 1, 0, 10)
        };
        let l = line(vec![late, early]);
        assert_eq!(ids(&l.live(50)), ["a", "b"]);
        assert_eq!(l.next_seq(), 3);
        assert_eq!(Line::default().next_seq(), 1);
    }

    #[test]
    fn tickets_are_served_by_priority_then_arrival_then_id() {
        let cases: &[(&str, Vec<Ticket>, &[&str])] = &[
            (
                "arrival order",
                vec![
                    acquire("c", 1, 0, 30),
                    acquire("a", 1, 0, 10),
                    acquire("b", 1, 0, 20),
                ],
                &["a", "b", "c"],
            ),
            (
                "higher priority first, whenever it came",
                vec![
                    acquire("a", 1, 0, 10),
                    acquire("b", 1, 5, 50),
                    acquire("c", 1, 1, 40),
                ],
                &["b", "c", "a"],
            ),
            (
                "negative priority goes last",
                vec![acquire("a", 1, -1, 10), acquire("b", 1, 0, 20)],
                &["b", "a"],
            ),
            (
                "same second: by id",
                vec![acquire("z", 1, 0, 10), acquire("m", 1, 0, 10)],
                &["m", "z"],
            ),
        ];
        for (what, tickets, want) in cases {
            assert_eq!(ids(&line(tickets.clone()).live(100)), *want, "{what}");
        }
    }

    #[test]
    fn a_ticket_counts_until_its_lease_runs_out_and_then_for_no_one() {
        let mut t = acquire("a", 1, 0, 10);
        t.renewed = 50;
        t.lease = 10;
        assert!(t.is_live(60), "renewed + lease is still live");
        assert!(!t.is_live(61));
        let l = line(vec![t, acquire("b", 1, 0, 20)]);
        assert_eq!(ids(&l.live(61)), ["b"]);
        assert_eq!(l.position("b", 61), Some((1, 1)));
        assert_eq!(l.position("a", 61), None);
        assert_eq!(
            l.reserved_for(Asker::Newcomer { priority: 0 }, &names(&["x"]), 200),
            names(&[]),
            "no live ticket, nothing reserved"
        );
        assert!(l.pruned(61).find("a").is_none());
    }

    #[test]
    fn who_is_ahead_depends_on_the_ticket_or_the_newcomers_priority() {
        let l = line(vec![
            acquire("a", 1, 0, 10),
            acquire("b", 1, 2, 20),
            acquire("c", 1, 0, 30),
        ]);
        assert_eq!(
            ids(&l.ahead_of(Asker::Ticket("b"), 40)),
            Vec::<String>::new()
        );
        assert_eq!(ids(&l.ahead_of(Asker::Ticket("a"), 40)), ["b"]);
        assert_eq!(ids(&l.ahead_of(Asker::Ticket("c"), 40)), ["b", "a"]);
        assert_eq!(
            ids(&l.ahead_of(Asker::Newcomer { priority: 0 }, 40)),
            ["b", "a", "c"]
        );
        assert_eq!(ids(&l.ahead_of(Asker::Newcomer { priority: 1 }, 40)), ["b"]);
        assert_eq!(
            ids(&l.ahead_of(Asker::Newcomer { priority: 3 }, 40)),
            Vec::<String>::new()
        );
        // A ticket that lapsed: its put stands where a newcomer would.
        let mut lapsed = l.clone();
        lapsed.tickets[0].lease = 0;
        assert_eq!(ids(&lapsed.ahead_of(Asker::Ticket("a"), 40)), ["b", "c"]);
    }

    /// (what, line, asker, free, the locks the asker may take).
    type Case<'a> = (
        &'a str,
        Vec<Ticket>,
        Asker<'a>,
        &'a [&'a str],
        &'a [&'a str],
    );

    #[test]
    fn a_put_may_take_only_the_free_locks_nobody_ahead_could_use() {
        let new = Asker::Newcomer { priority: 0 };
        let cases: Vec<Case<'_>> = vec![
            (
                "empty line: everything",
                vec![],
                new,
                &["a", "b"],
                &["a", "b"],
            ),
            (
                "an acquire ahead takes one of two",
                vec![acquire("t1", 1, 0, 1)],
                new,
                &["a", "b"],
                &["b"],
            ),
            (
                "two acquires ahead take both",
                vec![acquire("t1", 1, 0, 1), acquire("t2", 1, 0, 2)],
                new,
                &["a", "b"],
                &[],
            ),
            (
                "acquire: 2 ahead keeps the single free lock",
                vec![acquire("t1", 2, 0, 1)],
                new,
                &["a"],
                &[],
            ),
            (
                "a claim waiter keeps only its lock",
                vec![claim("t1", &["a"], 0, 1)],
                new,
                &["a", "b"],
                &["b"],
            ),
            (
                "a claim waiter on a claimed lock keeps nothing",
                vec![claim("t1", &["z"], 0, 1)],
                new,
                &["a"],
                &["a"],
            ),
            (
                "an acquire ahead leaves the lock a claim waiter names",
                vec![acquire("t1", 1, 0, 1), claim("t2", &["a"], 0, 2)],
                Asker::Ticket("t2"),
                &["a", "b"],
                &["a"],
            ),
            (
                "an acquire ahead takes a named lock when nothing else is free",
                vec![acquire("t1", 1, 0, 1), claim("t2", &["a"], 0, 2)],
                Asker::Ticket("t2"),
                &["a"],
                &[],
            ),
            (
                "claim: [a, b] keeps the free one of its pair",
                vec![claim("t1", &["a", "b"], 0, 1)],
                new,
                &["a", "c"],
                &["c"],
            ),
            (
                "the first in line takes anything",
                vec![acquire("t1", 2, 0, 1), acquire("t2", 1, 0, 2)],
                Asker::Ticket("t1"),
                &["a"],
                &["a"],
            ),
            (
                "behind an acquire: 2 starving for a pair, nothing",
                vec![acquire("t1", 2, 0, 1), acquire("t2", 1, 0, 2)],
                Asker::Ticket("t2"),
                &["a"],
                &[],
            ),
            (
                "a higher-priority newcomer goes before",
                vec![acquire("t1", 1, 0, 1)],
                Asker::Newcomer { priority: 1 },
                &["a"],
                &["a"],
            ),
            (
                "a higher-priority ticket is ahead even if later",
                vec![acquire("t1", 1, 0, 1), acquire("t2", 1, 9, 5)],
                Asker::Ticket("t1"),
                &["a"],
                &[],
            ),
            (
                "a dead ticket keeps nothing",
                vec![Ticket {
                    lease: 0,
                    ..acquire("t1", 1, 0, 1)
                }],
                new,
                &["a"],
                &["a"],
            ),
            (
                "nothing free, nothing to take",
                vec![acquire("t1", 1, 0, 1)],
                new,
                &[],
                &[],
            ),
        ];
        for (what, tickets, asker, free, may) in cases {
            let free = names(free);
            let l = line(tickets);
            let reserved = l.reserved_for(asker, &free, 10);
            let left: BTreeSet<LockName> = free.difference(&reserved).cloned().collect();
            assert_eq!(left, names(may), "{what}");
        }
    }

    #[test]
    fn the_file_round_trips_and_a_broken_one_counts_as_empty() {
        let l = line(vec![acquire("a", 2, 3, 10), claim("b", &["x", "y"], 0, 11)]);
        let bytes = l.to_bytes().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains(r#""acquire": 2"#), "{text}");
        assert!(text.contains(r#""claim": ["#), "{text}");
        assert_eq!(Line::parse(&bytes), l);
        let broken = Line::parse(b"{not json");
        assert!(broken.tickets.is_empty());
        assert!(broken
            .unreadable
            .as_deref()
            .unwrap()
            .starts_with("unreadable line file"));
        let bad_name = Line::parse(
            br#"{"tickets":[{"id":"i","build":"b","wants":{"claim":["../x"]},"arrived":1,"renewed":1,"lease":1}]}"#,
        );
        assert!(bad_name.unreadable.is_some(), "a lock name is checked");
        assert_eq!(line(vec![]).to_bytes(), None, "an empty line is no file");
        assert_eq!(
            Line::path(&PoolPath::new("envs/aws").unwrap()),
            ".pool-resource/line/envs/aws.json"
        );
    }

    #[test]
    fn writing_replaces_a_ticket_by_id_and_drops_dead_ones() {
        let l = line(vec![
            acquire("a", 1, 0, 10),
            Ticket {
                lease: 1,
                ..acquire("dead", 1, 0, 1)
            },
        ]);
        let mut renewed = acquire("a", 1, 0, 10);
        renewed.renewed = 20;
        let after = l.with(renewed.clone(), 20);
        assert_eq!(
            after.tickets,
            vec![renewed],
            "one ticket per id, dead one gone"
        );
        assert!(after.without("a", 20).tickets.is_empty());
        let mut broken = Line::parse(b"x");
        broken = broken.with(acquire("n", 1, 0, 5), 5);
        assert_eq!(broken.unreadable, None);
    }

    #[test]
    fn descriptions_read_as_the_log_shows_them() {
        assert_eq!(
            acquire("a", 1, 0, 0).describe(360),
            "team/pipe/job #a, waiting 6m0s"
        );
        assert_eq!(Wants::Acquire(1).describe(), "acquire");
        assert_eq!(Wants::Acquire(3).describe(), "acquire: 3");
        assert_eq!(claim("c", &["x"], 0, 0).wants.describe(), "claim: x");
        assert_eq!(
            claim("c", &["x", "y"], 0, 0).wants.describe(),
            "claim: [x, y]"
        );
    }

    #[test]
    fn a_takeover_is_for_the_first_in_line_for_that_lock() {
        let l = line(vec![claim("c", &["x"], 0, 1), acquire("a", 1, 0, 2)]);
        assert!(!l.wanted_ahead(Asker::Ticket("a"), &name("y"), 5));
        assert!(l.wanted_ahead(Asker::Ticket("a"), &name("x"), 5));
        assert!(l.wanted_ahead(Asker::Newcomer { priority: 0 }, &name("y"), 5));
    }

    #[test]
    fn an_acquire_ahead_leaves_the_lock_a_claim_ahead_names_and_all_three_are_kept() {
        // The soak's case: acquire: 2 (seq 7), claim: [a] (seq 8), then the
        // asker's own acquire (seq 9), then claim: [b, c] (seq 10).
        let l = line(vec![
            acquire("t7", 2, 0, 7),
            claim("t8", &["a"], 0, 8),
            acquire("t9", 1, 0, 9),
            claim("t10", &["b", "c"], 0, 10),
        ]);
        let free = names(&["a", "b", "c"]);
        let owners = l.reserved_owners(Asker::Ticket("t9"), &free, 10);
        let who: Vec<(&str, &str)> = owners
            .iter()
            .map(|(lock, t)| (lock.as_str(), t.id.as_str()))
            .collect();
        assert_eq!(who, [("a", "t8"), ("b", "t7"), ("c", "t7")]);
        assert_eq!(l.reserved_for(Asker::Ticket("t9"), &free, 10), free);
    }

    #[test]
    fn a_dropped_ticket_is_noted_with_its_place_and_the_note_outlives_the_last_ticket() {
        let l = line(vec![acquire("dead", 1, 0, 3), acquire("next", 1, 0, 4)]);
        let dead = l.find("dead").cloned().expect("ticket");
        let after = l.dropping(&[&dead], "kept x free", 50);
        assert!(after.find("dead").is_none());
        let note = after.was_dropped("dead").expect("noted");
        assert_eq!(
            (note.seq, note.at, note.why.as_str()),
            (3, 50, "kept x free")
        );
        let empty = after.without("next", 50);
        let bytes = empty.to_bytes().expect("the note keeps the file");
        let back = Line::parse(&bytes);
        assert!(back.tickets.is_empty());
        assert_eq!(back.was_dropped("dead"), Some(note));
        let later = back.pruned(50 + Dropped::MEMORY + 1);
        assert!(later.dropped.is_empty() && later.to_bytes().is_none());
    }

    fn reader(id: &str, arrived: i64) -> Ticket {
        Ticket {
            shared: true,
            ..acquire(id, 1, 0, arrived)
        }
    }

    #[test]
    fn a_shared_put_waits_only_behind_exclusive_tickets_ahead() {
        // r1 (reader), w (writer), r2 (reader) wait, in that order; lock
        // "env" is held shared, "spare" is free.
        let l = line(vec![
            reader("r1", 1),
            acquire("w", 1, 0, 2),
            reader("r2", 3),
        ]);
        let held = names(&["env"]);
        let free = names(&["spare"]);
        // r1 has nobody exclusive ahead: nothing is kept from it.
        let k = l.kept_from(Asker::Ticket("r1"), true, &free, &held, 10);
        assert!(k.owners.is_empty() && k.closed.is_empty(), "{k:?}");
        // r2 is behind writer w: w keeps the free lock, and closes the
        // lock held shared to new readers.
        let k = l.kept_from(Asker::Ticket("r2"), true, &free, &held, 10);
        assert_eq!(k.owners.keys().cloned().collect::<BTreeSet<_>>(), free);
        assert_eq!(k.closed.keys().cloned().collect::<BTreeSet<_>>(), held);
        assert_eq!(k.closed[&name("env")].id, "w");
    }

    #[test]
    fn an_exclusive_put_waits_behind_everyone_except_readers_that_can_join_a_shared_lock() {
        let free = names(&["spare"]);
        // A reader ahead that can join the lock held shared keeps no free lock.
        let l = line(vec![reader("r1", 1), acquire("w", 1, 0, 2)]);
        let k = l.kept_from(Asker::Ticket("w"), false, &free, &names(&["env"]), 10);
        assert!(k.owners.is_empty(), "{k:?}");
        // Nothing held shared: the reader ahead keeps the free lock.
        let k = l.kept_from(Asker::Ticket("w"), false, &free, &BTreeSet::new(), 10);
        assert_eq!(k.owners[&name("spare")].id, "r1");
        // A reader behind a writer that wants the shared lock cannot join
        // it, so it keeps the free lock from an exclusive put behind both.
        let l = line(vec![
            acquire("w1", 1, 0, 1),
            reader("r1", 2),
            acquire("w2", 1, 0, 3),
        ]);
        let k = l.kept_from(
            Asker::Ticket("w2"),
            false,
            &names(&["a", "b"]),
            &names(&["env"]),
            10,
        );
        assert_eq!(k.owners.len(), 2, "{k:?}");
        assert!(k.closed.is_empty());
    }

    #[test]
    fn a_shared_ticket_says_so_in_the_file_and_an_exclusive_one_stays_as_before() {
        let bytes = line(vec![reader("r1", 1), acquire("w", 1, 0, 2)])
            .to_bytes()
            .unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(text.matches("\"shared\": true").count(), 1, "{text}");
        assert!(!text.contains("\"shared\": false"), "{text}");
        let back = Line::parse(&bytes);
        assert!(back.find("r1").unwrap().shared);
        assert!(!back.find("w").unwrap().shared);
    }
}
