//! The pool model: what a pool looks like and which transition an operation makes.
//!
//! No I/O here. A backend reads a [`Snapshot`] of the pool at the branch tip;
//! [`plan`] decides, from the snapshot alone, whether the put can be done now
//! (a [`Change`] to commit), must wait, is already satisfied, or is an error.
//! Both backends (git and the CodeCommit API) share this logic, so a pool
//! behaves the same whichever way it is reached.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::Error;
use crate::model::line::Line;
use crate::model::message::Verb;
use crate::model::names::{LockName, PoolPath};
use crate::model::shares::{describe_holders, ShareEdit, Shares};

pub use crate::model::names::LockState;

/// A backend's handle on a lock file's content (a git blob id).
pub type BlobId = String;

/// An operator's hold on a pool (`pool hold`): while it is there, `acquire`
/// and `claim` wait; everything else goes on.
///
/// It lives outside the pool directory, in the file [`Hold::path`], so
/// `check` (which lists commits touching the pool) emits no version for it
/// and the Go resource, which only reads the pool directory, ignores it.
/// The file holds this struct as JSON.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hold {
    /// Who holds the pool (an operator's name).
    pub by: String,
    /// Why.
    pub reason: String,
    /// Since when, Unix seconds.
    pub since: i64,
}

impl Hold {
    /// The directory of every pool's hold file: a dot-directory is never a
    /// pool or a lock, and one place keeps this tool's state out of the way.
    pub const DIR: &'static str = ".pool-resource/holds";

    /// The repository path of `pool`'s hold file.
    pub fn path(pool: &PoolPath) -> String {
        format!("{}/{pool}.json", Hold::DIR)
    }

    /// Reads a hold file. One that cannot be read still holds the pool:
    /// someone meant to stop it.
    pub fn parse(bytes: &[u8]) -> Hold {
        serde_json::from_slice(bytes).unwrap_or_else(|e| Hold {
            by: "unknown".into(),
            reason: format!("unreadable hold file: {e}"),
            since: 0,
        })
    }

    /// `held by NAME since DATE (for 1h2m3s): REASON`.
    pub fn describe(&self, now: i64) -> String {
        format!(
            "held by {} since {} (for {}): {}",
            self.by,
            crate::model::duration::utc(self.since),
            crate::model::duration::ago(self.since, now),
            self.reason
        )
    }
}

/// A commit id as both backends produce it (a git object id as hex, or the
/// id CodeCommit's API returns): what a snapshot was read at, what a put
/// committed, what `check` and `in` print as `version.ref`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct CommitId(String);

impl CommitId {
    /// The id as hex text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for CommitId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CommitId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An id a backend read from its library or service.
impl From<String> for CommitId {
    fn from(id: String) -> CommitId {
        CommitId(id)
    }
}

impl From<&str> for CommitId {
    fn from(id: &str) -> CommitId {
        CommitId(id.to_string())
    }
}

impl PartialEq<str> for CommitId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for CommitId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<CommitId> for str {
    fn eq(&self, other: &CommitId) -> bool {
        self == other.0
    }
}

impl PartialEq<CommitId> for &str {
    fn eq(&self, other: &CommitId) -> bool {
        *self == other.0
    }
}

impl PartialEq<CommitId> for String {
    fn eq(&self, other: &CommitId) -> bool {
        *self == other.0
    }
}

impl From<CommitId> for String {
    fn from(id: CommitId) -> String {
        id.0
    }
}

impl From<&CommitId> for String {
    fn from(id: &CommitId) -> String {
        id.0.clone()
    }
}

/// What the pool holds at one commit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The commit the snapshot was read from (the branch tip).
    pub tip: CommitId,
    /// Lock files in `claimed/`, by name.
    pub claimed: BTreeMap<LockName, BlobId>,
    /// Lock files in `unclaimed/`, by name.
    pub unclaimed: BTreeMap<LockName, BlobId>,
    /// The pool's hold, if an operator holds it.
    pub hold: Option<Hold>,
    /// The pool's line of waiting puts ([`Line::path`]); empty when there
    /// is no line file.
    pub line: Line,
    /// Free locks this put must leave alone because a waiter ahead of it
    /// in the line could use them ([`Line::reserved_for`]). Not read from
    /// the repository: the put loop fills it in before [`plan`], for
    /// `acquire` and `claim` only; empty, nothing is reserved.
    pub reserved: BTreeSet<LockName>,
    /// Who holds which lock shared ([`Shares::path`]): a lock in
    /// `claimed/` with holders here is held shared.
    pub shares: Shares,
}

impl Snapshot {
    /// The state of `lock`, if it is in the pool. A lock left in both
    /// directories (by an old bug of the Go resource) counts as claimed.
    pub fn state_of(&self, lock: &LockName) -> Option<(LockState, &BlobId)> {
        if let Some(blob) = self.claimed.get(lock) {
            Some((LockState::Claimed, blob))
        } else {
            self.unclaimed
                .get(lock)
                .map(|blob| (LockState::Unclaimed, blob))
        }
    }

    /// The free locks: unclaimed and not also claimed, reserved or not.
    pub fn free(&self) -> BTreeSet<LockName> {
        self.unclaimed
            .keys()
            .filter(|name| !self.claimed.contains_key(*name))
            .cloned()
            .collect()
    }

    /// The locks held shared, open to another reader unless kept in
    /// [`Snapshot::reserved`] (a waiter ahead wants it alone).
    pub fn shared(&self) -> BTreeSet<LockName> {
        self.claimed
            .keys()
            .filter(|l| self.shares.is_shared(l))
            .cloned()
            .collect()
    }

    /// Names of the claimed locks, for progress messages.
    pub fn claimed_names(&self) -> Vec<&str> {
        self.claimed.keys().map(LockName::as_str).collect()
    }
}

/// The content a lock file gets in a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// The lock keeps the content it has (a move between directories).
    Keep(BlobId),
    /// New content (`add`, `add_claimed`, `update`).
    Bytes(Vec<u8>),
}

/// One edit to a lock file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    /// Delete `<pool>/<state>/<lock>`.
    Delete(LockState),
    /// Write `<pool>/<state>/<lock>`.
    Write(LockState, Content),
}

/// One commit's worth of change to one lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The lock changed.
    pub lock: LockName,
    /// The commit message's first line, as the Go resource writes it.
    pub subject: String,
    /// What happens to the lock's files.
    pub edits: Vec<Edit>,
    /// The other locks a multi-lock put (`acquire: N`, `claim: [A, B]`,
    /// `release` of several) moves in the same commit; empty otherwise.
    pub also: Vec<LockEdits>,
    /// What the commit does to the pool's shares file, for a shared hold.
    pub share: Option<ShareEdit>,
}

/// One more lock's edits in a [`Change`] that moves several locks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockEdits {
    /// The lock.
    pub lock: LockName,
    /// What happens to its files.
    pub edits: Vec<Edit>,
}

impl Change {
    /// Every lock the change touches with its edits, [`Change::lock`] first.
    pub fn parts(&self) -> Vec<(&LockName, &[Edit])> {
        std::iter::once((&self.lock, self.edits.as_slice()))
            .chain(self.also.iter().map(|p| (&p.lock, p.edits.as_slice())))
            .collect()
    }

    /// The names of the locks the change touches, [`Change::lock`] first.
    pub fn locks(&self) -> Vec<&LockName> {
        self.parts().into_iter().map(|(lock, _)| lock).collect()
    }

    /// The lock names, `, `-separated: the `lock_name` metadata of a put.
    pub fn lock_list(&self) -> String {
        join_names(self.locks())
    }
}

/// Lock names, `, `-separated, as subjects and `lock_name` list them.
pub fn join_names<'a>(locks: impl IntoIterator<Item = &'a LockName>) -> String {
    locks
        .into_iter()
        .map(LockName::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A put operation, validated: one lock or several, told apart by type so
/// that what is done to several locks in one commit is planned apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// An operation on one lock.
    Single(Single),
    /// An operation on several locks in one commit.
    Multi(Multi),
}

/// A put operation on one lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Single {
    /// `acquire: true`: claim any unclaimed lock.
    Acquire,
    /// `claim: NAME`: claim that lock.
    Claim(LockName),
    /// `release: DIR`: unclaim the lock named in `DIR/name`.
    Release(LockName),
    /// `add: DIR` / `add_claimed: DIR`: a new lock with `DIR/metadata` as content.
    Add {
        lock: LockName,
        content: Vec<u8>,
        claimed: bool,
    },
    /// `remove: DIR`: delete the lock.
    Remove(LockName),
    /// `update: DIR`: replace an unclaimed lock's content (add it if missing).
    Update { lock: LockName, content: Vec<u8> },
    /// `check: DIR`: wait until the lock is unclaimed.
    WaitUntilUnclaimed(LockName),
    /// `check_unclaimed: DIR`: wait until the lock is claimed.
    WaitUntilClaimed(LockName),
    /// `shared: true` with `acquire: true` (`lock: None`) or `claim: L`:
    /// take a share of a lock held shared, or of a free one.
    Share {
        /// `claim: L`; `None` for `acquire`.
        lock: Option<LockName>,
        /// The holder id this put takes its share under ([`crate::model::shares::Holder::id`]).
        id: String,
    },
    /// `release: DIR` whose `DIR/share` names a share: give back that one.
    Unshare {
        /// The lock.
        lock: LockName,
        /// The holder id from `DIR/share`.
        id: String,
    },
}

/// A put operation on several locks, all moved in one commit or none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Multi {
    /// `acquire: N`, N ≥ 2: claim N unclaimed locks.
    Acquire(usize),
    /// `claim: [A, B]`: claim these (two or more, distinct).
    Claim(Vec<LockName>),
    /// `release: DIR` whose `DIR/name` names two or more locks: unclaim
    /// them all.
    Release(Vec<LockName>),
}

impl From<Single> for Operation {
    fn from(op: Single) -> Operation {
        Operation::Single(op)
    }
}

impl From<Multi> for Operation {
    fn from(op: Multi) -> Operation {
        Operation::Multi(op)
    }
}

impl Operation {
    /// The param name this operation came from, for messages.
    pub fn param(&self) -> &'static str {
        match self {
            Operation::Single(op) => op.param(),
            Operation::Multi(op) => op.param(),
        }
    }

    /// Whether it claims locks (`acquire` or `claim`, of one or several):
    /// what an operator's hold makes wait.
    pub fn claims(&self) -> bool {
        matches!(
            self,
            Operation::Single(Single::Acquire | Single::Claim(_) | Single::Share { .. })
                | Operation::Multi(Multi::Acquire(_) | Multi::Claim(_))
        )
    }

    /// Whether it takes a share (`shared: true`).
    pub fn is_shared(&self) -> bool {
        matches!(self, Operation::Single(Single::Share { .. }))
    }

    /// The holder id of a share it takes or gives back: what the commit's
    /// `Pool-Resource-Share` trailer carries.
    pub fn share_id(&self) -> Option<&str> {
        match self {
            Operation::Single(Single::Share { id, .. } | Single::Unshare { id, .. }) => Some(id),
            _ => None,
        }
    }

    /// The locks a `release` gives back (one, or the set); none for any
    /// other operation. What a fenced release checks, lock by lock.
    pub fn released(&self) -> &[LockName] {
        match self {
            Operation::Single(Single::Release(lock)) => std::slice::from_ref(lock),
            Operation::Multi(Multi::Release(locks)) => locks,
            _ => &[],
        }
    }
}

impl Single {
    /// The param name this operation came from, for messages.
    pub fn param(&self) -> &'static str {
        match self {
            Single::Acquire => "acquire",
            Single::Claim(_) => "claim",
            Single::Release(_) => "release",
            Single::Add { claimed: false, .. } => "add",
            Single::Add { claimed: true, .. } => "add_claimed",
            Single::Remove(_) => "remove",
            Single::Update { .. } => "update",
            Single::WaitUntilUnclaimed(_) => "check",
            Single::WaitUntilClaimed(_) => "check_unclaimed",
            Single::Share { lock: None, .. } => "acquire",
            Single::Share { lock: Some(_), .. } => "claim",
            Single::Unshare { .. } => "release",
        }
    }
}

impl Multi {
    /// The param name this operation came from, for messages.
    pub fn param(&self) -> &'static str {
        match self {
            Multi::Acquire(_) => "acquire",
            Multi::Claim(_) => "claim",
            Multi::Release(_) => "release",
        }
    }
}

/// Why a put cannot proceed yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wait {
    /// `acquire`: every lock is claimed (or the pool is empty).
    NoneFree { claimed: Vec<String> },
    /// `claim`/`update`/`check`: the lock is claimed.
    Claimed(LockName),
    /// `check_unclaimed`: the lock is unclaimed.
    Unclaimed(LockName),
    /// `acquire`/`claim`: an operator holds the pool.
    Held(Hold),
    /// `acquire: N`: fewer than N locks are free.
    TooFewFree {
        wanted: usize,
        free: usize,
        claimed: Vec<String>,
    },
    /// `claim: [A, B]`: these of the wanted locks are claimed.
    SomeClaimed(Vec<LockName>),
    /// `acquire`/`claim`: these free locks, which the put could use, are
    /// kept for waiters ahead of it in the line ([`Snapshot::reserved`]).
    Reserved(Vec<LockName>),
    /// `shared: true`: these locks, held shared, are wanted alone by a
    /// waiter ahead in the line: no new reader joins them until it had
    /// its turn.
    WriterAhead(Vec<LockName>),
}

impl Wait {
    /// One line for the build log; `now` (Unix seconds) dates a hold.
    pub fn describe(&self, pool: &PoolPath, now: i64) -> String {
        match self {
            Wait::NoneFree { claimed } if claimed.is_empty() => {
                format!("pool {pool} has no locks")
            }
            Wait::NoneFree { claimed } => format!(
                "all {} locks of pool {pool} are claimed: {}",
                claimed.len(),
                claimed.join(", ")
            ),
            Wait::Claimed(lock) => format!("lock {lock} of pool {pool} is claimed"),
            Wait::Unclaimed(lock) => format!("lock {lock} of pool {pool} is unclaimed"),
            Wait::Held(hold) => format!("pool {pool} is {}", hold.describe(now)),
            Wait::TooFewFree {
                wanted,
                free,
                claimed,
            } => format!(
                "{wanted} locks wanted, {free} free in pool {pool} (claimed: {})",
                claimed.join(", ")
            ),
            Wait::SomeClaimed(locks) => format!(
                "{} of pool {pool} claimed: {}",
                if locks.len() == 1 { "lock" } else { "locks" },
                join_names(locks)
            ),
            Wait::WriterAhead(locks) => format!(
                "{} {} of pool {pool} held shared, but a build ahead in line waits to hold {} alone",
                if locks.len() == 1 { "lock" } else { "locks" },
                join_names(locks),
                if locks.len() == 1 { "it" } else { "them" }
            ),
            Wait::Reserved(locks) => format!(
                "free {} {} of pool {pool} kept for builds ahead in line",
                if locks.len() == 1 { "lock" } else { "locks" },
                join_names(locks)
            ),
        }
    }
}

/// What to do about an operation, given the pool's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Commit this change (compare-and-swap on the snapshot's tip).
    Commit(Change),
    /// Not possible yet: wait `retry_delay` and look again.
    Wait(Wait),
    /// Nothing to commit: the condition holds (`check`, `check_unclaimed`).
    Satisfied(LockName),
}

fn move_lock(lock: &LockName, blob: &BlobId, from: LockState, verb: Verb) -> Plan {
    let to = match from {
        LockState::Claimed => LockState::Unclaimed,
        LockState::Unclaimed => LockState::Claimed,
    };
    Plan::Commit(Change {
        lock: lock.clone(),
        subject: verb.subject(lock),
        edits: vec![
            Edit::Delete(from),
            Edit::Write(to, Content::Keep(blob.clone())),
        ],
        also: Vec::new(),
        share: None,
    })
}

/// Decides what `op` does to a pool in state `snap`. `pick` chooses among the
/// free locks for `acquire` (an index below the count it is given).
pub fn plan(
    op: &Operation,
    snap: &Snapshot,
    pool: &PoolPath,
    pick: &mut dyn FnMut(usize) -> usize,
) -> Result<Plan, Error> {
    let not_found = |lock: &LockName| Error::LockNotFound {
        pool: pool.to_string(),
        lock: lock.to_string(),
    };
    if let (true, Some(hold)) = (op.claims(), &snap.hold) {
        match op {
            Operation::Single(Single::Claim(lock)) if snap.state_of(lock).is_none() => {
                return Err(not_found(lock));
            }
            Operation::Single(_) => {}
            Operation::Multi(many) => check_possible(many, snap, pool)?,
        }
        return Ok(Plan::Wait(Wait::Held(hold.clone())));
    }
    match op {
        Operation::Single(one) => plan_single(one, snap, pool, pick),
        Operation::Multi(many) => plan_many(many, snap, pool, pick),
    }
}

/// [`plan`] for an operation on one lock.
fn plan_single(
    op: &Single,
    snap: &Snapshot,
    pool: &PoolPath,
    pick: &mut dyn FnMut(usize) -> usize,
) -> Result<Plan, Error> {
    let not_found = |lock: &LockName| Error::LockNotFound {
        pool: pool.to_string(),
        lock: lock.to_string(),
    };
    Ok(match op {
        Single::Acquire => {
            let all_free = snap.free();
            let free: Vec<(&LockName, &BlobId)> = snap
                .unclaimed
                .iter()
                .filter(|(name, _)| all_free.contains(*name) && !snap.reserved.contains(*name))
                .collect();
            if all_free.is_empty() {
                Plan::Wait(Wait::NoneFree {
                    claimed: snap.claimed_names().iter().map(|s| s.to_string()).collect(),
                })
            } else if free.is_empty() {
                Plan::Wait(Wait::Reserved(all_free.into_iter().collect()))
            } else {
                let (lock, blob) = free[pick(free.len()) % free.len()];
                move_lock(lock, blob, LockState::Unclaimed, Verb::Claiming)
            }
        }
        Single::Claim(lock) => match snap.state_of(lock) {
            None => return Err(not_found(lock)),
            Some((LockState::Claimed, _)) => Plan::Wait(Wait::Claimed(lock.clone())),
            Some((LockState::Unclaimed, _)) if snap.reserved.contains(lock) => {
                Plan::Wait(Wait::Reserved(vec![lock.clone()]))
            }
            Some((LockState::Unclaimed, blob)) => {
                move_lock(lock, blob, LockState::Unclaimed, Verb::Claiming)
            }
        },
        Single::Share { lock, id } => plan_share(lock.as_ref(), id, snap, pool)?,
        Single::Unshare { lock, id } => plan_unshare(lock, id, snap, pool)?,
        Single::Release(lock) => match snap.state_of(lock) {
            None => return Err(not_found(lock)),
            Some((LockState::Unclaimed, _)) => {
                return Err(Error::NotClaimed {
                    pool: pool.to_string(),
                    lock: lock.to_string(),
                })
            }
            Some((LockState::Claimed, _)) if snap.shares.is_shared(lock) => {
                return Err(shared_release(snap, pool, lock))
            }
            Some((LockState::Claimed, blob)) => {
                move_lock(lock, blob, LockState::Claimed, Verb::Unclaiming)
            }
        },
        Single::Add {
            lock,
            content,
            claimed,
        } => {
            if let Some((state, _)) = snap.state_of(lock) {
                return Err(Error::LockExists {
                    pool: pool.to_string(),
                    lock: lock.to_string(),
                    state: state.describe(),
                });
            }
            let (state, verb) = if *claimed {
                (LockState::Claimed, Verb::AddingClaimed)
            } else {
                (LockState::Unclaimed, Verb::AddingUnclaimed)
            };
            Plan::Commit(Change {
                lock: lock.clone(),
                subject: verb.subject(lock),
                edits: vec![Edit::Write(state, Content::Bytes(content.clone()))],
                also: Vec::new(),
                share: None,
            })
        }
        Single::Remove(lock) => {
            let mut edits = Vec::new();
            if snap.claimed.contains_key(lock) {
                edits.push(Edit::Delete(LockState::Claimed));
            }
            if snap.unclaimed.contains_key(lock) {
                edits.push(Edit::Delete(LockState::Unclaimed));
            }
            if edits.is_empty() {
                return Err(not_found(lock));
            }
            Plan::Commit(Change {
                lock: lock.clone(),
                subject: Verb::Removing.subject(lock),
                edits,
                also: Vec::new(),
                share: snap
                    .shares
                    .is_shared(lock)
                    .then(|| ShareEdit::Clear { lock: lock.clone() }),
            })
        }
        Single::Update { lock, content } => {
            // Tools that read the history key on the verb: `updating` only
            // when an unclaimed lock was replaced, as the Go resource writes.
            let verb = match snap.state_of(lock) {
                Some((LockState::Claimed, _)) => {
                    return Ok(Plan::Wait(Wait::Claimed(lock.clone())))
                }
                Some((LockState::Unclaimed, _)) => Verb::Updating,
                None => Verb::AddingUnclaimed,
            };
            Plan::Commit(Change {
                lock: lock.clone(),
                subject: verb.subject(lock),
                edits: vec![Edit::Write(
                    LockState::Unclaimed,
                    Content::Bytes(content.clone()),
                )],
                also: Vec::new(),
                share: None,
            })
        }
        Single::WaitUntilUnclaimed(lock) => match snap.state_of(lock) {
            None => return Err(not_found(lock)),
            Some((LockState::Claimed, _)) => Plan::Wait(Wait::Claimed(lock.clone())),
            Some((LockState::Unclaimed, _)) => Plan::Satisfied(lock.clone()),
        },
        Single::WaitUntilClaimed(lock) => match snap.state_of(lock) {
            None => return Err(not_found(lock)),
            Some((LockState::Unclaimed, _)) => Plan::Wait(Wait::Unclaimed(lock.clone())),
            Some((LockState::Claimed, _)) => Plan::Satisfied(lock.clone()),
        },
    })
}

/// The refusal of an exclusive `release` of a lock held shared: it would
/// free the lock from under every reader.
fn shared_release(snap: &Snapshot, pool: &PoolPath, lock: &LockName) -> Error {
    let holders = snap.shares.holders(lock);
    Error::Shared {
        pool: pool.to_string(),
        lock: lock.to_string(),
        detail: format!(
            "it is held shared by {}; a release of the directory a shared get wrote (with its share file) gives back that one share, and pool release {lock} --force --holder ID or --all frees it",
            describe_holders(holders, |h| format!("as {}", h.id))
        ),
    }
}

/// An operator's `pool release L --force --all`: frees `lock` for every
/// holder at once, one `unclaiming: L` that also clears its holders from
/// the shares file. On a lock held by one build it is a plain release;
/// when the shares file cannot be read, the commit clears the file too
/// (the repair [`Shares::unreadable`] names), since who holds what cannot
/// be known from it.
pub fn plan_release_all(lock: &LockName, snap: &Snapshot, pool: &PoolPath) -> Result<Plan, Error> {
    let blob = match snap.state_of(lock) {
        None => {
            return Err(Error::LockNotFound {
                pool: pool.to_string(),
                lock: lock.to_string(),
            })
        }
        Some((LockState::Unclaimed, _)) => {
            return Err(Error::NotClaimed {
                pool: pool.to_string(),
                lock: lock.to_string(),
            })
        }
        Some((LockState::Claimed, blob)) => blob,
    };
    let clear = snap.shares.is_shared(lock) || snap.shares.unreadable.is_some();
    Ok(
        match move_lock(lock, blob, LockState::Claimed, Verb::Unclaiming) {
            Plan::Commit(change) => Plan::Commit(Change {
                share: clear.then(|| ShareEdit::Clear { lock: lock.clone() }),
                ..change
            }),
            other => other,
        },
    )
}

/// `shared: true`: join a lock held shared that no waiter ahead wants
/// alone, else take a free lock nobody ahead keeps. `acquire` prefers a
/// lock already held shared, so that readers gather on few locks and the
/// others stay free for writers; among several, the one with the most
/// holders (then by name): it is the one writers wait for longest anyway.
fn plan_share(
    wanted: Option<&LockName>,
    id: &str,
    snap: &Snapshot,
    pool: &PoolPath,
) -> Result<Plan, Error> {
    let join = |lock: &LockName| {
        Plan::Commit(Change {
            lock: lock.clone(),
            subject: Verb::Sharing.subject(lock),
            edits: Vec::new(),
            also: Vec::new(),
            share: Some(ShareEdit::Join {
                lock: lock.clone(),
                id: id.to_string(),
            }),
        })
    };
    let take = |lock: &LockName, blob: &BlobId| {
        let Plan::Commit(change) = move_lock(lock, blob, LockState::Unclaimed, Verb::Claiming)
        else {
            return Plan::Wait(Wait::Claimed(lock.clone()));
        };
        Plan::Commit(Change {
            share: Some(ShareEdit::Join {
                lock: lock.clone(),
                id: id.to_string(),
            }),
            ..change
        })
    };
    // Who holds what is not known: joining could not be told from
    // taking, and writing the file would lose every other holder.
    if let Some(why) = &snap.shares.unreadable {
        return Err(Error::NotServed {
            pool: pool.to_string(),
            what: format!(
                "a share needs the pool's shares file, which cannot be read ({why}); an operator repairs it with pool release LOCK --force --all"
            ),
        });
    }
    // A retried put whose earlier join landed already holds its share.
    let mine = |lock: &LockName| snap.shares.find(lock, id).is_some();
    Ok(match wanted {
        Some(lock) => match snap.state_of(lock) {
            None => {
                return Err(Error::LockNotFound {
                    pool: pool.to_string(),
                    lock: lock.to_string(),
                })
            }
            Some((LockState::Claimed, _)) if mine(lock) => Plan::Satisfied(lock.clone()),
            Some((LockState::Claimed, _)) if !snap.shares.is_shared(lock) => {
                Plan::Wait(Wait::Claimed(lock.clone()))
            }
            Some((LockState::Claimed, _)) if snap.reserved.contains(lock) => {
                Plan::Wait(Wait::WriterAhead(vec![lock.clone()]))
            }
            Some((LockState::Claimed, _)) => join(lock),
            Some((LockState::Unclaimed, _)) if snap.reserved.contains(lock) => {
                Plan::Wait(Wait::Reserved(vec![lock.clone()]))
            }
            Some((LockState::Unclaimed, blob)) => take(lock, blob),
        },
        None => {
            if let Some(lock) = snap.shared().into_iter().find(|l| mine(l)) {
                return Ok(Plan::Satisfied(lock));
            }
            let shared = snap.shared();
            let open = shared
                .iter()
                .filter(|l| !snap.reserved.contains(*l))
                .max_by(|a, b| {
                    let (ha, hb) = (snap.shares.holders(a).len(), snap.shares.holders(b).len());
                    ha.cmp(&hb).then(b.cmp(a))
                });
            if let Some(lock) = open {
                return Ok(join(lock));
            }
            let all_free = snap.free();
            let free: Vec<(&LockName, &BlobId)> = snap
                .unclaimed
                .iter()
                .filter(|(name, _)| all_free.contains(*name) && !snap.reserved.contains(*name))
                .collect();
            match free.first() {
                Some((lock, blob)) => take(lock, blob),
                None if !shared.is_empty() => {
                    Plan::Wait(Wait::WriterAhead(shared.into_iter().collect()))
                }
                None if !all_free.is_empty() => {
                    Plan::Wait(Wait::Reserved(all_free.into_iter().collect()))
                }
                None => Plan::Wait(Wait::NoneFree {
                    claimed: snap.claimed_names().iter().map(|s| s.to_string()).collect(),
                }),
            }
        }
    })
}

/// `release` of a share: gives back holder `id`'s share of `lock`; the
/// last share moves the lock back to `unclaimed/`. Refused when that
/// holder no longer holds a share (given back already, or released by an
/// operator): the fence of a shared hold.
fn plan_unshare(
    lock: &LockName,
    id: &str,
    snap: &Snapshot,
    pool: &PoolPath,
) -> Result<Plan, Error> {
    let refuse = |detail: String| Error::Shared {
        pool: pool.to_string(),
        lock: lock.to_string(),
        detail,
    };
    let blob = match snap.state_of(lock) {
        None => {
            return Err(Error::LockNotFound {
                pool: pool.to_string(),
                lock: lock.to_string(),
            })
        }
        Some((LockState::Unclaimed, _)) => {
            return Err(refuse(format!(
                "the share {id} this build held was given back already (the lock is unclaimed)"
            )))
        }
        Some((LockState::Claimed, blob)) => blob,
    };
    if let Some(why) = &snap.shares.unreadable {
        return Err(refuse(format!(
            "the pool's shares file cannot be read ({why}); an operator must release it (pool release {lock} --force --all)"
        )));
    }
    if snap.shares.find(lock, id).is_none() {
        return Err(refuse(format!(
            "this build's share {id} was given back already ({})",
            match snap.shares.holders(lock).len() {
                0 => "the lock is now held by one build alone".to_string(),
                n => format!("{n} other shares hold it now"),
            }
        )));
    }
    let edit = ShareEdit::Leave {
        lock: lock.clone(),
        id: id.to_string(),
    };
    Ok(if snap.shares.holders(lock).len() > 1 {
        Plan::Commit(Change {
            lock: lock.clone(),
            subject: Verb::Unsharing.subject(lock),
            edits: Vec::new(),
            also: Vec::new(),
            share: Some(edit),
        })
    } else {
        let Plan::Commit(change) = move_lock(lock, blob, LockState::Claimed, Verb::Unclaiming)
        else {
            return Err(refuse("it cannot be moved".into()));
        };
        Plan::Commit(Change {
            share: Some(edit),
            ..change
        })
    })
}

/// Fails when a multi-lock operation could never be done on `snap`'s pool:
/// `acquire: N` with fewer than N locks, `claim`/`release` of a lock that is
/// not there. Checked before waiting for anything.
fn check_possible(op: &Multi, snap: &Snapshot, pool: &PoolPath) -> Result<(), Error> {
    match op {
        Multi::Acquire(wanted) => {
            let have = snap
                .claimed
                .keys()
                .chain(snap.unclaimed.keys())
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            if *wanted > have {
                return Err(Error::TooFewLocks {
                    pool: pool.to_string(),
                    wanted: *wanted,
                    have,
                });
            }
        }
        Multi::Claim(locks) | Multi::Release(locks) => {
            if let Some(lock) = locks.iter().find(|l| snap.state_of(l).is_none()) {
                return Err(Error::LockNotFound {
                    pool: pool.to_string(),
                    lock: lock.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// One commit moving every lock of `locks` out of `from`, content unchanged:
/// `claiming: A, B` or `unclaiming: A, B`, the locks in name order.
/// `None` when there is no lock to move.
fn move_locks(mut locks: Vec<(&LockName, &BlobId)>, from: LockState, verb: Verb) -> Option<Change> {
    let to = match from {
        LockState::Claimed => LockState::Unclaimed,
        LockState::Unclaimed => LockState::Claimed,
    };
    locks.sort();
    let mut parts = locks.into_iter().map(|(lock, blob)| LockEdits {
        lock: lock.clone(),
        edits: vec![
            Edit::Delete(from),
            Edit::Write(to, Content::Keep(blob.clone())),
        ],
    });
    let first = parts.next()?;
    let also: Vec<LockEdits> = parts.collect();
    let subject = verb.subject(join_names(
        std::iter::once(&first.lock).chain(also.iter().map(|p| &p.lock)),
    ));
    Some(Change {
        lock: first.lock,
        subject,
        edits: first.edits,
        also,
        share: None,
    })
}

/// [`plan`] for the operations on several locks at once: all in one commit
/// or, while that is not possible, wait holding none of them.
fn plan_many(
    op: &Multi,
    snap: &Snapshot,
    pool: &PoolPath,
    pick: &mut dyn FnMut(usize) -> usize,
) -> Result<Plan, Error> {
    check_possible(op, snap, pool)?;
    // Parsing never makes one of no locks; the type allows it.
    let none = || Error::bad_request(format!("{} of no locks in pool {pool}", op.param()));
    Ok(match op {
        Multi::Acquire(wanted) => {
            let all_free = snap.free();
            let mut free: Vec<(&LockName, &BlobId)> = snap
                .unclaimed
                .iter()
                .filter(|(name, _)| all_free.contains(*name) && !snap.reserved.contains(*name))
                .collect();
            if all_free.len() < *wanted {
                return Ok(Plan::Wait(Wait::TooFewFree {
                    wanted: *wanted,
                    free: all_free.len(),
                    claimed: snap.claimed_names().iter().map(|s| s.to_string()).collect(),
                }));
            }
            if free.len() < *wanted {
                let kept = all_free.intersection(&snap.reserved).cloned().collect();
                return Ok(Plan::Wait(Wait::Reserved(kept)));
            }
            let mut chosen = Vec::with_capacity(*wanted);
            while chosen.len() < *wanted {
                let i = pick(free.len()) % free.len();
                chosen.push(free.swap_remove(i));
            }
            Plan::Commit(move_locks(chosen, LockState::Unclaimed, Verb::Claiming).ok_or_else(none)?)
        }
        Multi::Claim(locks) => {
            let claimed: Vec<LockName> = locks
                .iter()
                .filter(|l| matches!(snap.state_of(l), Some((LockState::Claimed, _))))
                .cloned()
                .collect();
            if !claimed.is_empty() {
                return Ok(Plan::Wait(Wait::SomeClaimed(claimed)));
            }
            let kept: Vec<LockName> = locks
                .iter()
                .filter(|l| snap.reserved.contains(*l))
                .cloned()
                .collect();
            if !kept.is_empty() {
                return Ok(Plan::Wait(Wait::Reserved(kept)));
            }
            let moved = locks
                .iter()
                .filter_map(|l| snap.unclaimed.get(l).map(|blob| (l, blob)))
                .collect();
            Plan::Commit(move_locks(moved, LockState::Unclaimed, Verb::Claiming).ok_or_else(none)?)
        }
        Multi::Release(locks) => {
            if let Some(lock) = locks.iter().find(|l| !snap.claimed.contains_key(*l)) {
                return Err(Error::NotClaimed {
                    pool: pool.to_string(),
                    lock: lock.to_string(),
                });
            }
            if let Some(lock) = locks.iter().find(|l| snap.shares.is_shared(l)) {
                return Err(shared_release(snap, pool, lock));
            }
            let moved = locks
                .iter()
                .filter_map(|l| snap.claimed.get(l).map(|blob| (l, blob)))
                .collect();
            Plan::Commit(move_locks(moved, LockState::Claimed, Verb::Unclaiming).ok_or_else(none)?)
        }
    })
}

/// A claim old enough to be taken over (`source.expire_after`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expired {
    /// The lock claimed.
    pub lock: LockName,
    /// The claim commit, `None` when it lies beyond the look-back.
    pub claim: Option<String>,
    /// How long it has been claimed (at least), in seconds.
    pub age: i64,
    /// Who claimed it, for the log and the trailers.
    pub holder: String,
}

/// An expiry takeover: two commits in one update of the branch, first
/// releasing the expired claim, then claiming the lock for this put, so
/// that the pool's history (what `check` lists, what a fenced release
/// compares against) shows the claim ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Takeover {
    /// `unclaiming: L`.
    pub unclaim: Change,
    /// `claiming: L`, on top of it.
    pub claim: Change,
    /// The claim it replaces.
    pub replaced: Expired,
}

/// Decides whether `op`, which `plan` made wait, may take over one of the
/// `expired` claims instead: `claim: L` when `L` is among them, `acquire`
/// the oldest of them. A held pool is never taken over.
pub fn plan_takeover(op: &Single, snap: &Snapshot, expired: &[Expired]) -> Option<Takeover> {
    if snap.hold.is_some() {
        return None;
    }
    let pick = match op {
        // A lock held shared is not one claim: its holders give it back
        // one by one.
        Single::Acquire => expired
            .iter()
            .filter(|e| snap.claimed.contains_key(&e.lock) && !snap.shares.is_shared(&e.lock))
            .max_by_key(|e| e.age)?,
        Single::Claim(lock) => expired.iter().find(|e| {
            &e.lock == lock && snap.claimed.contains_key(lock) && !snap.shares.is_shared(lock)
        })?,
        _ => return None,
    };
    let blob = snap.claimed.get(&pick.lock)?;
    let lock = &pick.lock;
    let unclaim = Change {
        lock: lock.clone(),
        subject: Verb::Unclaiming.subject(lock),
        edits: vec![
            Edit::Delete(LockState::Claimed),
            Edit::Write(LockState::Unclaimed, Content::Keep(blob.clone())),
        ],
        also: Vec::new(),
        share: None,
    };
    let claim = Change {
        lock: lock.clone(),
        subject: Verb::Claiming.subject(lock),
        edits: vec![
            Edit::Delete(LockState::Unclaimed),
            Edit::Write(LockState::Claimed, Content::Keep(blob.clone())),
        ],
        also: Vec::new(),
        share: None,
    };
    Some(Takeover {
        unclaim,
        claim,
        replaced: pick.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> LockName {
        LockName::new(s).unwrap()
    }

    fn snap(claimed: &[&str], unclaimed: &[&str]) -> Snapshot {
        let blobs = |names: &[&str]| {
            names
                .iter()
                .map(|n| (name(n), format!("blob-{n}")))
                .collect()
        };
        Snapshot {
            tip: "tip".into(),
            claimed: blobs(claimed),
            unclaimed: blobs(unclaimed),
            hold: None,
            ..Snapshot::default()
        }
    }

    fn run(op: impl Into<Operation>, s: &Snapshot) -> Result<Plan, Error> {
        plan(&op.into(), s, &PoolPath::new("pool").unwrap(), &mut |_| 0)
    }

    #[test]
    fn acquire_moves_a_free_lock_keeping_its_content() {
        let plan = run(Single::Acquire, &snap(&["a"], &["b"])).unwrap();
        assert_eq!(
            plan,
            Plan::Commit(Change {
                lock: name("b"),
                subject: "claiming: b".into(),
                edits: vec![
                    Edit::Delete(LockState::Unclaimed),
                    Edit::Write(LockState::Claimed, Content::Keep("blob-b".into()))
                ],
                also: Vec::new(),
                share: None,
            })
        );
    }

    #[test]
    fn acquire_picks_among_free_locks_only() {
        let s = snap(&["a"], &["b", "c", "d"]);
        let mut seen = Vec::new();
        for i in 0..3 {
            let Plan::Commit(c) = plan(
                &Single::Acquire.into(),
                &s,
                &PoolPath::new("p").unwrap(),
                &mut |n| {
                    assert_eq!(n, 3);
                    i
                },
            )
            .unwrap() else {
                panic!("expected a commit")
            };
            seen.push(c.lock.to_string());
        }
        assert_eq!(seen, ["b", "c", "d"]);
    }

    #[test]
    fn acquire_waits_when_every_lock_is_claimed() {
        assert_eq!(
            run(Single::Acquire, &snap(&["a", "b"], &[])).unwrap(),
            Plan::Wait(Wait::NoneFree {
                claimed: vec!["a".into(), "b".into()]
            })
        );
    }

    #[test]
    fn claim_waits_for_a_claimed_lock_and_fails_for_a_missing_one() {
        let s = snap(&["a"], &["b"]);
        assert_eq!(
            run(Single::Claim(name("a")), &s).unwrap(),
            Plan::Wait(Wait::Claimed(name("a")))
        );
        assert!(matches!(
            run(Single::Claim(name("zz")), &s),
            Err(Error::LockNotFound { .. })
        ));
    }

    #[test]
    fn release_of_an_unclaimed_lock_fails_at_once() {
        let s = snap(&[], &["b"]);
        assert!(matches!(
            run(Single::Release(name("b")), &s),
            Err(Error::NotClaimed { .. })
        ));
        assert!(matches!(
            run(Single::Release(name("x")), &s),
            Err(Error::LockNotFound { .. })
        ));
    }

    #[test]
    fn adding_an_existing_lock_fails_whatever_its_state() {
        let s = snap(&["a"], &["b"]);
        for (lock, claimed) in [("a", false), ("b", true), ("b", false)] {
            let op = Single::Add {
                lock: name(lock),
                content: vec![],
                claimed,
            };
            assert!(matches!(run(op, &s), Err(Error::LockExists { .. })));
        }
    }

    #[test]
    fn remove_deletes_the_lock_in_either_state() {
        let s = snap(&["a"], &["b"]);
        let Plan::Commit(c) = run(Single::Remove(name("b")), &s).unwrap() else {
            panic!()
        };
        assert_eq!(c.edits, vec![Edit::Delete(LockState::Unclaimed)]);
        assert_eq!(c.subject, "removing: b");
    }

    #[test]
    fn update_waits_while_claimed_and_adds_when_missing() {
        let s = snap(&["a"], &[]);
        let op = |n: &str| Single::Update {
            lock: name(n),
            content: b"x".to_vec(),
        };
        assert_eq!(
            run(op("a"), &s).unwrap(),
            Plan::Wait(Wait::Claimed(name("a")))
        );
        let Plan::Commit(added) = run(op("new"), &s).unwrap() else {
            panic!("a missing lock is added")
        };
        assert_eq!(added.subject, "adding unclaimed: new");
        let Plan::Commit(updated) = run(op("b"), &snap(&[], &["b"])).unwrap() else {
            panic!("an unclaimed lock is updated")
        };
        assert_eq!(updated.subject, "updating: b");
        assert_eq!(
            updated.edits,
            vec![Edit::Write(
                LockState::Unclaimed,
                Content::Bytes(b"x".to_vec())
            )]
        );
    }

    #[test]
    fn a_held_pool_makes_acquire_and_claim_wait_and_lets_release_through() {
        let mut s = snap(&["a"], &["b"]);
        let hold = Hold {
            by: "ops".into(),
            reason: "upgrade".into(),
            since: 0,
        };
        s.hold = Some(hold.clone());
        for op in [Single::Acquire, Single::Claim(name("b"))] {
            assert_eq!(run(op, &s).unwrap(), Plan::Wait(Wait::Held(hold.clone())));
        }
        assert!(matches!(
            run(Single::Release(name("a")), &s).unwrap(),
            Plan::Commit(_)
        ));
        let why = Wait::Held(hold).describe(&PoolPath::new("p").unwrap(), 0);
        assert!(
            why.starts_with("pool p is held by ops since 1970-01-01T00:00:00Z"),
            "{why}"
        );
        assert!(why.ends_with(": upgrade"), "{why}");
    }

    fn expired(lock: &str, age: i64) -> Expired {
        Expired {
            lock: name(lock),
            claim: Some(format!("claim-{lock}")),
            age,
            holder: "someone".into(),
        }
    }

    #[test]
    fn a_takeover_releases_then_claims_the_oldest_expired_lock_keeping_its_content() {
        let s = snap(&["a", "b"], &[]);
        let t = plan_takeover(&Single::Acquire, &s, &[expired("a", 10), expired("b", 99)])
            .expect("acquire takes over");
        assert_eq!(t.replaced.lock, name("b"));
        assert_eq!(t.unclaim.subject, "unclaiming: b");
        assert_eq!(t.claim.subject, "claiming: b");
        assert_eq!(
            t.claim.edits,
            vec![
                Edit::Delete(LockState::Unclaimed),
                Edit::Write(LockState::Claimed, Content::Keep("blob-b".into()))
            ]
        );
        let t = plan_takeover(&Single::Claim(name("a")), &s, &[expired("a", 10)])
            .expect("claim takes over its lock");
        assert_eq!(t.replaced.lock, name("a"));
        assert_eq!(
            plan_takeover(&Single::Claim(name("b")), &s, &[expired("a", 10)]),
            None
        );
        assert_eq!(
            plan_takeover(&Single::Release(name("a")), &s, &[expired("a", 10)]),
            None
        );
        let mut held = s.clone();
        held.hold = Some(Hold {
            by: "ops".into(),
            reason: "x".into(),
            since: 0,
        });
        assert_eq!(
            plan_takeover(&Single::Acquire, &held, &[expired("a", 10)]),
            None
        );
    }

    #[test]
    fn check_params_wait_then_are_satisfied_without_a_commit() {
        let s = snap(&["a"], &["b"]);
        assert_eq!(
            run(Single::WaitUntilUnclaimed(name("b")), &s).unwrap(),
            Plan::Satisfied(name("b"))
        );
        assert_eq!(
            run(Single::WaitUntilUnclaimed(name("a")), &s).unwrap(),
            Plan::Wait(Wait::Claimed(name("a")))
        );
        assert_eq!(
            run(Single::WaitUntilClaimed(name("a")), &s).unwrap(),
            Plan::Satisfied(name("a"))
        );
        assert!(run(Single::WaitUntilClaimed(name("zz")), &s).is_err());
    }

    fn commit(plan: Plan) -> Change {
        match plan {
            Plan::Commit(c) => c,
            other => panic!("expected a commit, got {other:?}"),
        }
    }

    #[test]
    fn acquire_n_moves_n_free_locks_in_one_change_keeping_their_content() {
        let c = commit(run(Multi::Acquire(2), &snap(&["a"], &["b", "c", "d"])).unwrap());
        assert_eq!(c.locks().len(), 2);
        assert_eq!(c.subject, format!("claiming: {}", c.lock_list()));
        for (lock, edits) in c.parts() {
            assert!(lock.as_str() != "a", "a claimed lock is never taken");
            assert_eq!(
                edits,
                [
                    Edit::Delete(LockState::Unclaimed),
                    Edit::Write(LockState::Claimed, Content::Keep(format!("blob-{lock}")))
                ]
            );
        }
        let mut names: Vec<&str> = c.locks().iter().map(|l| l.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 2, "two different locks");
    }

    #[test]
    fn acquire_n_waits_holding_nothing_while_fewer_than_n_are_free() {
        let s = snap(&["a", "b"], &["c"]);
        let wait = run(Multi::Acquire(2), &s).unwrap();
        assert_eq!(
            wait,
            Plan::Wait(Wait::TooFewFree {
                wanted: 2,
                free: 1,
                claimed: vec!["a".into(), "b".into()]
            })
        );
        let Plan::Wait(why) = wait else { panic!() };
        assert_eq!(
            why.describe(&PoolPath::new("p").unwrap(), 0),
            "2 locks wanted, 1 free in pool p (claimed: a, b)"
        );
    }

    #[test]
    fn acquire_n_larger_than_the_pool_fails_at_once_even_when_held() {
        let mut s = snap(&["a"], &["b", "c"]);
        let err = run(Multi::Acquire(4), &s).unwrap_err();
        assert!(matches!(
            err,
            Error::TooFewLocks {
                wanted: 4,
                have: 3,
                ..
            }
        ));
        assert!(err.to_string().contains("(3)"), "{err}");
        s.hold = Some(Hold {
            by: "ops".into(),
            reason: "r".into(),
            since: 0,
        });
        assert!(run(Multi::Acquire(4), &s).is_err());
        assert!(matches!(
            run(Multi::Acquire(2), &s).unwrap(),
            Plan::Wait(Wait::Held(_))
        ));
    }

    #[test]
    fn claim_all_moves_every_lock_or_waits_naming_the_claimed_ones() {
        let s = snap(&["b"], &["a", "c"]);
        let c = commit(run(Multi::Claim(vec![name("c"), name("a")]), &s).unwrap());
        assert_eq!(c.subject, "claiming: a, c");
        assert_eq!(c.lock_list(), "a, c");
        assert_eq!(
            run(Multi::Claim(vec![name("a"), name("b")]), &s).unwrap(),
            Plan::Wait(Wait::SomeClaimed(vec![name("b")]))
        );
        assert!(matches!(
            run(Multi::Claim(vec![name("a"), name("zz")]), &s),
            Err(Error::LockNotFound { lock, .. }) if lock == "zz"
        ));
    }

    #[test]
    fn release_all_moves_every_lock_back_or_fails_if_any_is_not_claimed() {
        let s = snap(&["a", "b"], &["c"]);
        let c = commit(run(Multi::Release(vec![name("b"), name("a")]), &s).unwrap());
        assert_eq!(c.subject, "unclaiming: a, b");
        assert_eq!(
            c.parts()[1].1,
            [
                Edit::Delete(LockState::Claimed),
                Edit::Write(LockState::Unclaimed, Content::Keep("blob-b".into()))
            ]
        );
        assert!(matches!(
            run(Multi::Release(vec![name("a"), name("c")]), &s),
            Err(Error::NotClaimed { lock, .. }) if lock == "c"
        ));
    }

    #[test]
    fn a_multi_lock_operation_of_no_locks_is_refused_not_a_panic() {
        let s = snap(&["a"], &["b"]);
        for op in [
            Multi::Acquire(0),
            Multi::Claim(Vec::new()),
            Multi::Release(Vec::new()),
        ] {
            let err = run(op.clone(), &s).unwrap_err();
            assert!(matches!(err, Error::BadRequest(_)), "{op:?}: {err}");
        }
    }

    #[test]
    fn operations_name_their_param_and_whether_they_claim() {
        let a = || name("a");
        for (op, param, claims) in [
            (Operation::from(Single::Acquire), "acquire", true),
            (Single::Claim(a()).into(), "claim", true),
            (Single::Release(a()).into(), "release", false),
            (
                Single::WaitUntilClaimed(a()).into(),
                "check_unclaimed",
                false,
            ),
            (Multi::Acquire(2).into(), "acquire", true),
            (Multi::Claim(vec![a()]).into(), "claim", true),
            (Multi::Release(vec![a()]).into(), "release", false),
        ] {
            assert_eq!((op.param(), op.claims()), (param, claims), "{op:?}");
        }
    }

    #[test]
    fn reserved_locks_are_left_alone_by_acquire_and_claim_only() {
        let mut s = snap(&["a"], &["b", "c"]);
        s.reserved = [name("b")].into_iter().collect();
        let c = commit(run(Single::Acquire, &s).unwrap());
        assert_eq!(
            c.lock,
            name("c"),
            "acquire takes the lock nobody ahead keeps"
        );
        assert_eq!(
            run(Single::Claim(name("b")), &s).unwrap(),
            Plan::Wait(Wait::Reserved(vec![name("b")]))
        );
        assert!(matches!(
            run(Single::Claim(name("c")), &s).unwrap(),
            Plan::Commit(_)
        ));
        assert_eq!(
            run(Multi::Acquire(2), &s).unwrap(),
            Plan::Wait(Wait::Reserved(vec![name("b")]))
        );
        assert_eq!(
            run(Multi::Claim(vec![name("b"), name("c")]), &s).unwrap(),
            Plan::Wait(Wait::Reserved(vec![name("b")]))
        );
        s.reserved.insert(name("c"));
        assert_eq!(
            run(Single::Acquire, &s).unwrap(),
            Plan::Wait(Wait::Reserved(vec![name("b"), name("c")]))
        );
        let why = Wait::Reserved(vec![name("b"), name("c")]);
        assert_eq!(
            why.describe(&PoolPath::new("p").unwrap(), 0),
            "free locks b, c of pool p kept for builds ahead in line"
        );
        // Everything else ignores the line.
        for op in [
            Single::Release(name("a")),
            Single::Remove(name("b")),
            Single::WaitUntilUnclaimed(name("b")),
            Single::Update {
                lock: name("b"),
                content: b"x".to_vec(),
            },
        ] {
            assert!(!matches!(run(op, &s).unwrap(), Plan::Wait(_)));
        }
        assert!(matches!(
            run(Multi::Acquire(3), &s).unwrap(),
            Plan::Wait(Wait::TooFewFree { free: 2, .. })
        ));
    }

    fn shared_snap(claimed: &[&str], unclaimed: &[&str], holders: &[(&str, &[&str])]) -> Snapshot {
        let mut s = snap(claimed, unclaimed);
        for (lock, ids) in holders {
            for id in *ids {
                s.shares = s.shares.after(
                    &ShareEdit::Join {
                        lock: name(lock),
                        id: id.to_string(),
                    },
                    Some(&crate::model::shares::Holder {
                        id: id.to_string(),
                        build: format!("b #{id}"),
                        build_id: None,
                        url: None,
                        since: 1,
                    }),
                );
            }
        }
        s
    }

    fn share(lock: Option<&str>, id: &str) -> Single {
        Single::Share {
            lock: lock.map(name),
            id: id.into(),
        }
    }

    #[test]
    fn a_shared_put_takes_a_free_lock_into_claimed_and_records_its_holder() {
        let c = commit(run(share(Some("env"), "r1"), &shared_snap(&[], &["env"], &[])).unwrap());
        assert_eq!(c.subject, "claiming: env");
        assert_eq!(
            c.edits,
            vec![
                Edit::Delete(LockState::Unclaimed),
                Edit::Write(LockState::Claimed, Content::Keep("blob-env".into()))
            ]
        );
        assert_eq!(
            c.share,
            Some(ShareEdit::Join {
                lock: name("env"),
                id: "r1".into()
            })
        );
    }

    #[test]
    fn a_shared_put_joins_a_lock_held_shared_without_touching_the_pool_directory() {
        let s = shared_snap(&["env"], &[], &[("env", &["r1"])]);
        let c = commit(run(share(Some("env"), "r2"), &s).unwrap());
        assert_eq!(c.subject, "sharing: env");
        assert!(c.edits.is_empty(), "{c:?}");
    }

    #[test]
    fn a_shared_put_waits_for_a_lock_held_by_one_build_and_an_exclusive_one_for_a_shared_lock() {
        let one = snap(&["env"], &[]);
        assert_eq!(
            run(share(Some("env"), "r1"), &one).unwrap(),
            Plan::Wait(Wait::Claimed(name("env")))
        );
        let shared = shared_snap(&["env"], &[], &[("env", &["r1"])]);
        assert_eq!(
            run(Single::Claim(name("env")), &shared).unwrap(),
            Plan::Wait(Wait::Claimed(name("env")))
        );
        assert!(matches!(
            run(Single::Acquire, &shared).unwrap(),
            Plan::Wait(Wait::NoneFree { .. })
        ));
    }

    #[test]
    fn a_shared_put_does_not_join_a_lock_a_writer_ahead_waits_for() {
        let mut s = shared_snap(&["env"], &[], &[("env", &["r1"])]);
        s.reserved = [name("env")].into();
        assert_eq!(
            run(share(Some("env"), "r2"), &s).unwrap(),
            Plan::Wait(Wait::WriterAhead(vec![name("env")]))
        );
        assert_eq!(
            run(share(None, "r2"), &s).unwrap(),
            Plan::Wait(Wait::WriterAhead(vec![name("env")]))
        );
    }

    #[test]
    fn a_shared_acquire_prefers_the_lock_with_the_most_holders_over_a_free_one() {
        let s = shared_snap(
            &["a", "b"],
            &["free"],
            &[("a", &["r1"]), ("b", &["r2", "r3"])],
        );
        let c = commit(run(share(None, "r4"), &s).unwrap());
        assert_eq!(c.subject, "sharing: b");
        let none_shared = shared_snap(&[], &["free"], &[]);
        let c = commit(run(share(None, "r4"), &none_shared).unwrap());
        assert_eq!(c.subject, "claiming: free");
    }

    #[test]
    fn a_share_release_gives_back_that_share_and_the_last_one_frees_the_lock() {
        let two = shared_snap(&["env"], &[], &[("env", &["r1", "r2"])]);
        let unshare = |id: &str| Single::Unshare {
            lock: name("env"),
            id: id.into(),
        };
        let c = commit(run(unshare("r1"), &two).unwrap());
        assert_eq!(c.subject, "unsharing: env");
        assert!(c.edits.is_empty());
        let last = shared_snap(&["env"], &[], &[("env", &["r2"])]);
        let c = commit(run(unshare("r2"), &last).unwrap());
        assert_eq!(c.subject, "unclaiming: env");
        assert_eq!(
            c.edits,
            vec![
                Edit::Delete(LockState::Claimed),
                Edit::Write(LockState::Unclaimed, Content::Keep("blob-env".into()))
            ]
        );
        // Given back already: refused, so it can never free another's share.
        let err = run(unshare("r1"), &last).unwrap_err().to_string();
        assert!(err.contains("given back already"), "{err}");
    }

    #[test]
    fn a_release_for_all_frees_a_shared_lock_and_clears_its_holders_in_one_commit() {
        let s = shared_snap(
            &["env", "other"],
            &[],
            &[("env", &["r1", "r2"]), ("other", &["r3"])],
        );
        let c =
            commit(plan_release_all(&name("env"), &s, &PoolPath::new("pool").unwrap()).unwrap());
        assert_eq!(c.subject, "unclaiming: env");
        assert_eq!(c.share, Some(ShareEdit::Clear { lock: name("env") }));
        let after = s.shares.after(c.share.as_ref().unwrap(), None);
        assert!(!after.is_shared(&name("env")));
        assert!(after.is_shared(&name("other")), "other locks keep theirs");
        // One build's claim: a plain release, the shares file untouched.
        let one = snap(&["env"], &[]);
        let c =
            commit(plan_release_all(&name("env"), &one, &PoolPath::new("pool").unwrap()).unwrap());
        assert_eq!((c.subject.as_str(), c.share), ("unclaiming: env", None));
        // An unreadable shares file is cleared by it.
        let mut broken = snap(&["env"], &[]);
        broken.shares = Shares::parse(b"{not json");
        let c = commit(
            plan_release_all(&name("env"), &broken, &PoolPath::new("pool").unwrap()).unwrap(),
        );
        assert_eq!(
            broken
                .shares
                .after(c.share.as_ref().unwrap(), None)
                .to_bytes(),
            None
        );
    }

    #[test]
    fn an_exclusive_release_of_a_lock_held_shared_is_refused_naming_the_holders() {
        let s = shared_snap(&["env"], &[], &[("env", &["r1", "r2"])]);
        let err = run(Single::Release(name("env")), &s)
            .unwrap_err()
            .to_string();
        assert!(err.contains("held shared by 2 builds"), "{err}");
        assert!(err.contains("r1") && err.contains("r2"), "{err}");
        let err = run(Multi::Release(vec![name("env"), name("x")]), &{
            let mut s = s.clone();
            s.claimed.insert(name("x"), "blob-x".into());
            s
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("held shared"), "{err}");
    }
}
