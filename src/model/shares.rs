//! Shared holds: who holds a lock together with others (`shared: true`).
//!
//! No I/O here. A lock held shared is in `claimed/`, exactly as a lock held
//! by one build, so the Go resource, Pool Boy and dashboards see it taken
//! and never claim it under its holders. Who the holders are lives outside
//! the pool directory, in one JSON file per pool ([`Shares::path`], beside
//! the hold and line files): the first share moves the lock into
//! `claimed/` (`claiming: L`) and writes its holder here; later shares only
//! add themselves (`sharing: L`), earlier leavers only remove themselves
//! (`unsharing: L`); the last one moves the lock back (`unclaiming: L`).
//! So `check`, which lists commits that touch the pool directory, emits
//! two versions per shared period however many readers come and go.
//!
//! A lock in `claimed/` with holders in this file is held shared; without
//! them, by one build. Each holder is known by [`Holder::id`], a random
//! nonce the put chose: `in` writes it to `DIR/share`, and a `release` of
//! that directory removes exactly that holder (the fence of a share), so a
//! reader can never free a lock from under another.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::names::{LockName, PoolPath};

/// One build holding a lock together with others.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// A random nonce the put chose: what `in` writes to `DIR/share`, and
    /// what a release of that directory removes.
    pub id: String,
    /// Who holds it: `team/pipeline/job #name`, or `build ID`.
    pub build: String,
    /// Concourse's `BUILD_ID`, if set (`pool reap --dead` asks about it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    /// The build's URL, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Since when, Unix seconds.
    pub since: i64,
}

/// A pool's shared holds, as its shares file holds them: holders by lock,
/// each list in the order they took their share.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shares {
    /// Holders by lock; a lock without holders is not listed.
    #[serde(serialize_with = "locks_out", deserialize_with = "locks_in", default)]
    pub locks: BTreeMap<LockName, Vec<Holder>>,
    /// Why the file could not be read, when it could not. Every lock in
    /// `claimed/` then counts as held by one build: no reader joins it and
    /// no share release frees it until an operator repairs the file
    /// (`pool release L --force --all` rewrites it).
    #[serde(skip)]
    pub unreadable: Option<String>,
}

fn locks_out<S: serde::Serializer>(
    locks: &BTreeMap<LockName, Vec<Holder>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(locks.iter().map(|(l, h)| (l.as_str(), h)))
}

fn locks_in<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<LockName, Vec<Holder>>, D::Error> {
    BTreeMap::<String, Vec<Holder>>::deserialize(d)?
        .into_iter()
        .map(|(l, h)| {
            LockName::new(&l)
                .map(|l| (l, h))
                .map_err(serde::de::Error::custom)
        })
        .collect()
}

/// What a commit does to the shares file ([`crate::model::pool::Change::share`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShareEdit {
    /// The put with this holder id takes a share of the lock.
    Join {
        /// The lock.
        lock: LockName,
        /// [`Holder::id`].
        id: String,
    },
    /// The holder with this id gives its share back.
    Leave {
        /// The lock.
        lock: LockName,
        /// [`Holder::id`].
        id: String,
    },
    /// Every holder of the lock is gone (the lock was released for all of
    /// them, or removed).
    Clear {
        /// The lock.
        lock: LockName,
    },
}

/// How holders are named in messages: `2 builds (main/app/smoke #41 as
/// 9f0c…, main/app/probe #12 as 62ca…)` with `each` saying what follows
/// each build (its id, or how long it holds).
pub fn describe_holders(holders: &[Holder], each: impl Fn(&Holder) -> String) -> String {
    format!(
        "{} ({})",
        match holders.len() {
            1 => "1 build".to_string(),
            n => format!("{n} builds"),
        },
        holders
            .iter()
            .map(|h| format!("{} {}", h.build, each(h)))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

impl Shares {
    /// The directory of every pool's shares file (beside the holds and
    /// the line).
    pub const DIR: &'static str = ".pool-resource/shares";

    /// The repository path of `pool`'s shares file.
    pub fn path(pool: &PoolPath) -> String {
        format!("{}/{pool}.json", Shares::DIR)
    }

    /// Reads a shares file; one that cannot be read says why in
    /// [`Shares::unreadable`] and counts as no holders.
    pub fn parse(bytes: &[u8]) -> Shares {
        serde_json::from_slice(bytes).unwrap_or_else(|e| Shares {
            unreadable: Some(format!("unreadable shares file: {e}")),
            ..Shares::default()
        })
    }

    /// The file's content, or `None` when no lock is held shared (the file
    /// is then deleted).
    pub fn to_bytes(&self) -> Option<Vec<u8>> {
        if self.locks.values().all(Vec::is_empty) {
            return None;
        }
        let mut bytes = serde_json::to_vec_pretty(self).ok()?;
        bytes.push(b'\n');
        Some(bytes)
    }

    /// The holders of `lock`, in the order they came; empty when it is not
    /// held shared.
    pub fn holders(&self, lock: &LockName) -> &[Holder] {
        self.locks.get(lock).map_or(&[], Vec::as_slice)
    }

    /// Whether `lock` is held shared.
    pub fn is_shared(&self, lock: &LockName) -> bool {
        !self.holders(lock).is_empty()
    }

    /// The holder with `id` of `lock`, if it still holds a share.
    pub fn find(&self, lock: &LockName, id: &str) -> Option<&Holder> {
        self.holders(lock).iter().find(|h| h.id == id)
    }

    /// This file after `edit`, `holder` being the one a [`ShareEdit::Join`]
    /// adds (ignored otherwise). A join of an id already there replaces it,
    /// so a retried write cannot add a second share.
    pub fn after(&self, edit: &ShareEdit, holder: Option<&Holder>) -> Shares {
        let mut next = Shares {
            locks: self.locks.clone(),
            unreadable: None,
        };
        match edit {
            ShareEdit::Join { lock, id } => {
                let list = next.locks.entry(lock.clone()).or_default();
                list.retain(|h| &h.id != id);
                if let Some(h) = holder {
                    list.push(Holder {
                        id: id.clone(),
                        ..h.clone()
                    });
                }
            }
            ShareEdit::Leave { lock, id } => {
                if let Some(list) = next.locks.get_mut(lock) {
                    list.retain(|h| &h.id != id);
                }
            }
            ShareEdit::Clear { lock } => {
                next.locks.remove(lock);
            }
        }
        next.locks.retain(|_, list| !list.is_empty());
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> LockName {
        LockName::new(s).unwrap()
    }

    fn holder(id: &str) -> Holder {
        Holder {
            id: id.into(),
            build: format!("main/app/smoke #{id}"),
            build_id: Some(id.into()),
            url: None,
            since: 100,
        }
    }

    #[test]
    fn a_join_adds_a_holder_once_and_a_leave_removes_only_that_holder() {
        let join = |id: &str| ShareEdit::Join {
            lock: name("env"),
            id: id.into(),
        };
        let s = Shares::default().after(&join("r1"), Some(&holder("r1")));
        let s = s.after(&join("r2"), Some(&holder("r2")));
        let again = s.after(&join("r2"), Some(&holder("r2")));
        assert_eq!(again.holders(&name("env")).len(), 2, "a retried join");
        let left = again.after(
            &ShareEdit::Leave {
                lock: name("env"),
                id: "r1".into(),
            },
            None,
        );
        let ids: Vec<&str> = left
            .holders(&name("env"))
            .iter()
            .map(|h| h.id.as_str())
            .collect();
        assert_eq!(ids, ["r2"]);
        let empty = left.after(
            &ShareEdit::Leave {
                lock: name("env"),
                id: "r2".into(),
            },
            None,
        );
        assert!(!empty.is_shared(&name("env")));
        assert_eq!(empty.to_bytes(), None, "no holders: the file goes");
    }

    #[test]
    fn the_file_round_trips_and_a_broken_one_says_why() {
        let s = Shares::default().after(
            &ShareEdit::Join {
                lock: name("env"),
                id: "r1".into(),
            },
            Some(&holder("r1")),
        );
        let bytes = s.to_bytes().unwrap();
        assert_eq!(Shares::parse(&bytes), s);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("\"env\""), "{text}");
        let broken = Shares::parse(b"{not json");
        assert!(broken.unreadable.is_some());
        assert!(broken.locks.is_empty());
    }
}
