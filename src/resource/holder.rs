//! Who holds a lock, for the resource itself: the `in`/`out` metadata, a
//! waiting put's log, the expiry of old claims (`source.expire_after`) and
//! the fence of a release.
//!
//! A claim is the newest commit that put the lock into `claimed/`; its
//! trailers ([`crate::model::message`]) name the build or operator and its
//! committer time says since when, as Pool Boy reads it. Finding it costs a
//! look back through the history, so it is bounded ([`HOLDER_LOOKBACK`]
//! commits, stopping once every claimed lock has its claim) and a put looks
//! again only when the branch tip moved ([`HolderCache`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::model::commit::{Actor, CommitMeta, Detail};
use crate::model::duration::{ago, human, utc};
use crate::model::message::{Parsed, Trailer};
use crate::model::names::{LockName, PoolPath};
use crate::model::pool::{Expired, LockState, Snapshot, Wait};
use crate::protocol::Metadata;
use crate::store::reads::{changed, lock_verbs, STATUS_LOOKBACK};
use crate::store::seam::{CommitWalk, HistoryReader};

/// How many commits a put looks back at most to find who holds its locks.
pub const HOLDER_LOOKBACK: usize = STATUS_LOOKBACK;

/// One claim of a lock: its commit, since when, by whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The claim commit's id.
    pub commit: String,
    /// Its committer time, Unix seconds.
    pub time: i64,
    /// Who made it.
    pub by: Actor,
    /// The claim an expiry takeover replaced (trailer `Pool-Resource-Replaces`).
    pub replaces: Option<String>,
}

impl Claim {
    /// The claim `commit` records.
    pub fn of(commit: &CommitMeta) -> Claim {
        Claim {
            commit: commit.id.clone(),
            time: commit.time,
            by: Actor::of(commit),
            replaces: Parsed::new(&commit.message)
                .trailer(Trailer::Replaces)
                .map(String::from),
        }
    }

    /// Who, briefly: the holder's name as every screen gives it
    /// ([`Actor::name`]), with an operator's reason; a build's URL is not
    /// repeated (it is its own `build_url` metadata).
    pub fn who(&self) -> String {
        self.by.name(Detail::Reason)
    }

    /// `main/app/deploy #7 for 3m12s`.
    pub fn describe(&self, now: i64) -> String {
        format!("{} for {}", self.who(), ago(self.time, now))
    }

    /// The metadata `in` and `out` add after `lock_name` and `pool_name`
    /// for a claimed lock: `claimed_by`, `claimed_since` (RFC 3339 UTC),
    /// `build_url` when the claim has one, `replaced_claim` for a takeover.
    pub fn metadata(&self) -> Vec<Metadata> {
        let item = |name: &str, value: String| Metadata {
            name: name.into(),
            value,
        };
        let mut m = vec![
            item("claimed_by", self.who()),
            item("claimed_since", utc(self.time)),
        ];
        if let Some(url) = &self.by.build_url {
            m.push(item("build_url", url.clone()));
        }
        if let Some(old) = &self.replaces {
            m.push(item("replaced_claim", old.clone()));
        }
        m
    }
}

/// The claim `commit` makes, if its subject says it claims a lock
/// (`claiming:`, `adding claimed:`). Reads that one commit.
pub fn claim_at(store: &mut dyn CommitWalk, commit: &str) -> Result<Option<Claim>> {
    let mut found = None;
    store.walk_commits(commit, 1, &mut |c| {
        if Parsed::new(&c.message)
            .verb()
            .is_some_and(|(v, _)| v.leaves_claimed())
        {
            found = Some(Claim::of(c));
        }
        true
    })?;
    Ok(found)
}

/// The claims of the locks claimed at a snapshot's tip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holders {
    /// The tip they were read at.
    pub tip: crate::model::pool::CommitId,
    /// The claims found, by lock.
    pub claims: BTreeMap<LockName, Claim>,
    /// When the look went all the way back without finding some claims:
    /// the oldest commit's time, which those claims are older than.
    pub before: Option<i64>,
}

impl Holders {
    /// Looks back from `snap.tip` for the claim of each claimed lock.
    pub fn look(
        store: &mut dyn HistoryReader,
        snap: &Snapshot,
        pool: &PoolPath,
    ) -> Result<Holders> {
        // A shallow fetch deepens as a walk needs; fetching the look-back's
        // depth at once keeps that to one fetch of what is missing.
        store.load_version(&snap.tip, Some(HOLDER_LOOKBACK as u32 + 1))?;
        let mut need: BTreeSet<&str> = snap.claimed.keys().map(LockName::as_str).collect();
        // One commit may claim several locks (`claiming: a, b`): each of
        // them is a candidate of that commit.
        let mut candidates: Vec<(CommitMeta, String)> = Vec::new();
        let mut oldest = None;
        let cut = store.walk_commits(&snap.tip, HOLDER_LOOKBACK, &mut |c| {
            oldest = Some(c.time);
            for (verb, lock) in lock_verbs(c) {
                if verb.leaves_claimed() && need.remove(lock) {
                    candidates.push((c.clone(), lock.to_string()));
                }
            }
            need.is_empty()
        })?;
        let walked_all = !need.is_empty() || cut;
        let mut claims = BTreeMap::new();
        for (c, lock) in &candidates {
            let Ok(lock) = LockName::new(lock) else {
                continue;
            };
            // A same-named lock of another pool has the same subject.
            let path = pool.lock_path(LockState::Claimed, &lock);
            if changed(store, c, &path)? && store.entry_id(&c.id, &path)?.is_some() {
                claims.insert(lock, Claim::of(c));
            }
        }
        Ok(Holders {
            tip: snap.tip.clone(),
            claims,
            before: if walked_all { oldest } else { None },
        })
    }

    /// The claimed locks of `snap` claimed longer than `limit` at `now`. A
    /// claim not found within the look-back counts only when the look went
    /// all the way back, as at least as old as the oldest commit seen.
    pub fn expired(&self, snap: &Snapshot, limit: Duration, now: i64) -> Vec<Expired> {
        let limit = limit.as_secs() as i64;
        snap.claimed
            .keys()
            .filter_map(|lock| {
                let (claim, since, holder) = match self.claims.get(lock) {
                    Some(c) => (Some(c.commit.clone()), c.time, c.who()),
                    None => (
                        None,
                        self.before?,
                        format!("a claim older than the last {HOLDER_LOOKBACK} commits"),
                    ),
                };
                let age = now - since;
                (age > limit).then(|| Expired {
                    lock: lock.clone(),
                    claim,
                    age,
                    holder,
                })
            })
            .collect()
    }

    /// `claimed by X for 3m12s`, or what is known of a claim not found.
    fn held(&self, lock: &LockName, now: i64) -> String {
        match (self.claims.get(lock), self.before) {
            (Some(c), _) => format!("claimed by {}", c.describe(now)),
            (None, Some(t)) => format!("claimed since before {}", utc(t)),
            (None, None) => "claimed".into(),
        }
    }
}

/// A put's [`Holders`], looked up again only when the tip moved.
#[derive(Debug, Default)]
pub struct HolderCache {
    last: Option<Holders>,
}

impl HolderCache {
    /// The holders at `snap`'s tip.
    pub fn get(
        &mut self,
        store: &mut dyn HistoryReader,
        snap: &Snapshot,
        pool: &PoolPath,
    ) -> Result<&Holders> {
        let stale = self.last.as_ref().is_none_or(|h| h.tip != snap.tip);
        if stale {
            self.last = Some(Holders::look(store, snap, pool)?);
        }
        Ok(self.last.get_or_insert_with(|| Holders {
            tip: snap.tip.clone(),
            claims: BTreeMap::new(),
            before: None,
        }))
    }
}

/// Why a put waits, naming who holds the locks awaited and for how long.
pub fn describe_wait(why: &Wait, pool: &PoolPath, holders: &Holders, now: i64) -> String {
    match why {
        Wait::Claimed(lock) => format!("lock {lock} of pool {pool} is {}", holders.held(lock, now)),
        Wait::NoneFree { claimed } if !claimed.is_empty() => {
            let each: Vec<String> = claimed
                .iter()
                .map(|name| match LockName::new(name) {
                    Ok(lock) => format!("{name} ({})", holders.held(&lock, now)),
                    Err(_) => name.clone(),
                })
                .collect();
            format!(
                "all {} locks of pool {pool} are claimed: {}",
                claimed.len(),
                each.join(", ")
            )
        }
        other => other.describe(pool, now),
    }
}

/// The line a takeover writes in the build log.
pub fn describe_takeover(e: &Expired, pool: &PoolPath, limit: Duration) -> String {
    format!(
        "lock {} of pool {pool} was claimed by {} for {}, longer than expire_after {}: taking it over{}",
        e.lock,
        e.holder,
        human(Duration::from_secs(e.age.max(0) as u64)),
        human(limit),
        e.claim
            .as_ref()
            .map(|c| format!(" (its claim {c} is released first)"))
            .unwrap_or_default()
    )
}

/// A fenced `release`: refuses, naming the claim, unless `lock` is still
/// claimed by commit `claim` (the claimed file unchanged since it). A lock
/// not claimed at all is left to the plan (`not claimed`).
pub fn check_fence(
    store: &mut dyn HistoryReader,
    snap: &Snapshot,
    pool: &PoolPath,
    lock: &LockName,
    claim: &str,
) -> Result<()> {
    if !snap.claimed.contains_key(lock) {
        return Ok(());
    }
    let refuse = |detail: String| Error::Fenced {
        pool: pool.to_string(),
        lock: lock.to_string(),
        claim: claim.to_string(),
        detail,
    };
    match store.load_version(claim, None) {
        Ok(()) => {}
        Err(Error::VersionNotFound { .. }) => {
            return Err(refuse("that claim commit is not on the branch".into()))
        }
        Err(e) => return Err(e),
    }
    let path = pool.lock_path(LockState::Claimed, lock);
    if store.read_file(claim, &path)?.is_none() {
        return Err(refuse("that commit did not leave it claimed".into()));
    }
    if store.changed_since(claim, &path)? {
        let now = crate::process::clock::now_unix();
        let holders = Holders::look(store, snap, pool)?;
        return Err(refuse(format!(
            "it was released and claimed again since (it is now {})",
            holders.held(lock, now)
        )));
    }
    Ok(())
}

/// A fenced `release` of one lock or of a set claimed in one commit
/// (`claim` holds that commit, which claimed them all): refuses, naming
/// the first lock no longer held by that claim and its holder now, unless
/// every one is ([`check_fence`]). Checked before anything is planned, so
/// a refusal commits nothing.
pub fn check_fences(
    store: &mut dyn HistoryReader,
    snap: &Snapshot,
    pool: &PoolPath,
    locks: &[LockName],
    claim: &str,
) -> Result<()> {
    for lock in locks {
        check_fence(store, snap, pool, lock, claim)?;
    }
    Ok(())
}
