//! Asking Concourse whether the build that holds a lock is still alive.
//!
//! A lock leaks when its build dies without releasing it; only Concourse
//! knows whether it did. [`build`] is the model (the build JSON, which
//! build a claim names, what `pool reap --dead` decides), [`client`] the
//! API client with its credentials, [`flyrc`] reads `fly`'s targets, and
//! [`Builds`] here asks about the claims of a status, once per build: an
//! ended build never changes, so its answer is kept; a running one is asked
//! again each round (each `pool serve` refresh).

pub mod build;
pub mod client;
pub mod flyrc;

use std::collections::HashMap;

use crate::error::Result;
use crate::model::names::LockState;
use crate::operator::ops::{Actor, Interval, Since, Status};
use crate::process::log::Log;
use crate::process::signal::Interrupt;
use build::{BuildRef, BuildState, Lookup};
use client::{Access, Client};

pub use build::recorded;

/// The builds of claims, asked of Concourse and remembered.
pub struct Builds {
    client: Client,
    /// Builds that ended: their answer never changes.
    ended: HashMap<BuildRef, Lookup>,
    /// This round's answers about builds still running or unknown (404).
    round: HashMap<BuildRef, Lookup>,
    /// This round's failures, per Concourse URL: one failure answers for
    /// every other build of that Concourse until the next round.
    failed: HashMap<String, String>,
    /// Build requests made, in all rounds.
    asked: u64,
}

impl Builds {
    /// The builds API configured by `--concourse-url`, `--fly-target` and
    /// the environment (see [`Access::configure`]); `None` when nothing is.
    pub fn configure(
        url: Option<&str>,
        fly_target: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
        log: &Log,
        interrupt: &Interrupt,
    ) -> Result<Option<Builds>> {
        match Access::configure(url, fly_target, env)? {
            Some(access) => Ok(Some(Builds::new(Client::new(access, log, interrupt)?))),
            None => Ok(None),
        }
    }

    /// Asks through `client`.
    pub fn new(client: Client) -> Builds {
        Builds {
            client,
            ended: HashMap::new(),
            round: HashMap::new(),
            failed: HashMap::new(),
            asked: 0,
        }
    }

    /// The client, to tune it.
    pub fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    /// Starts a new round: running builds and failures are asked again.
    pub fn next_round(&mut self) {
        self.round.clear();
        self.failed.clear();
    }

    /// Build requests made so far.
    pub fn asked(&self) -> u64 {
        self.asked
    }

    /// This round's failures, one line per Concourse.
    pub fn failures(&self) -> Vec<String> {
        let mut f: Vec<String> = self.failed.values().cloned().collect();
        f.sort();
        f
    }

    /// The build a claim by `by` names, asking the Concourse given on the
    /// command line (or by the fly target) if any: `None` for an
    /// operator's claim, the reason when no build can be found.
    pub fn find(&self, by: &Actor) -> Option<std::result::Result<BuildRef, String>> {
        if by.operator.is_some() {
            return None;
        }
        Some(build::find(
            recorded(by),
            self.client.access().url.as_deref(),
        ))
    }

    /// What Concourse says of `r`: remembered if it ended, else asked (once
    /// per round).
    pub fn lookup(&mut self, r: &BuildRef) -> Result<Lookup> {
        if let Some(l) = self.ended.get(r).or_else(|| self.round.get(r)) {
            return Ok(l.clone());
        }
        self.asked += 1;
        let l = self.client.build(r)?;
        match &l {
            Lookup::Found(b) if !b.status.is_running() => {
                self.ended.insert(r.clone(), l.clone());
            }
            _ => {
                self.round.insert(r.clone(), l.clone());
            }
        }
        Ok(l)
    }

    /// The state of the build that made a claim, for people: `None` for an
    /// operator's claim; a failure is an `unknown` state saying why.
    pub fn state(&mut self, by: &Actor) -> Option<BuildState> {
        let r = match self.find(by)? {
            Ok(r) => r,
            Err(why) => return Some(BuildState::unknown(why)),
        };
        if let Some(why) = self.failed.get(&r.concourse) {
            return Some(BuildState::unknown(why.clone()));
        }
        match self.lookup(&r) {
            Ok(Lookup::Found(b)) => match build::mismatch(recorded(by), &b) {
                Some(why) => Some(BuildState::unknown(why)),
                None => Some(BuildState::of(&Lookup::Found(b))),
            },
            Ok(l) => Some(BuildState::of(&l)),
            Err(e) => {
                let why = e.chain();
                self.failed.insert(r.concourse.clone(), why.clone());
                Some(BuildState::unknown(why))
            }
        }
    }

    /// Sets the `build_status` of every claimed lock of `st`.
    pub fn annotate_status(&mut self, st: &mut Status) {
        for p in &mut st.pools {
            for l in p.locks.iter_mut().filter(|l| l.state == LockState::Claimed) {
                if let Since::Commit { by, .. } = &l.since {
                    l.build_status = self.state(by);
                }
            }
        }
    }

    /// Sets the `build_status` of the claims of `history` still held.
    pub fn annotate_history(&mut self, history: &mut [Interval]) {
        for i in history.iter_mut().filter(|i| i.released_at.is_none()) {
            i.build_status = self.state(&i.claimed_by);
        }
    }
}

/// Warnings for the failures of a round, naming what could not be shown.
pub fn warnings(builds: &Builds) -> Vec<String> {
    builds
        .failures()
        .into_iter()
        .map(|why| format!("build status unknown: {why}"))
        .collect()
}
