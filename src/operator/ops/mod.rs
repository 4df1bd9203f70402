//! The operator's operations on pools, one file per command or family,
//! as cargo's `ops/` are beside its `commands/`: [`status`] (who holds
//! what since when, who waits in line), [`history`] (the claims in a
//! window), [`change`] (`init`, `add`, `remove`, `claim`, `release`),
//! [`hold`] (`hold`, `unhold`), [`line`] (`dequeue`) and [`reap`] (`reap`,
//! `reap --dead`). Each works on any [`LockStore`] and returns a library
//! model; [`crate::operator::commands`] prints it.
//!
//! What the changes share is here: who acts ([`Operator`]), what a change
//! came to ([`Done`]), and the one read–plan–commit loop they run in
//! ([`crate::store::retry`]): the same Go-compatible commits the resource
//! makes, with the operator and reason as trailers
//! ([`crate::model::message`]); a network fault fails the command at once
//! (a person is there to run it again). The read side looks at the history
//! boundedly ([`crate::store::reads`], shared with the resource): at most
//! [`STATUS_LOOKBACK`] commits, so its cost does not grow with the
//! repository.

pub mod change;
pub mod history;
pub mod hold;
pub mod line;
pub mod reap;
pub mod status;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::message::{commit_message, operator_trailers, Trailer};
use crate::process::log::Log;
use crate::process::signal::Interrupt;
use crate::store::explain::explain;
use crate::store::retry::{self, Policy, Round, Tries};
use crate::store::seam::LockStore;

pub use crate::model::commit::Actor;
pub use crate::store::reads::STATUS_LOOKBACK;
pub use crate::store::reads::{find_pools, POOL_SEARCH_DEPTH};

/// Lost races tolerated by one operator command.
const MAX_RACES: u32 = 20;

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
        self.message_giving_back(subject, &[])
    }

    /// The message of a commit that gives back the shares `shares` of a
    /// lock held shared: a `Pool-Resource-Share` trailer for each.
    fn message_giving_back(&self, subject: &str, shares: &[String]) -> String {
        let mut trailers = operator_trailers(&self.name, self.reason.as_deref());
        let at = trailers.len() - 1;
        trailers.splice(at..at, shares.iter().map(|id| (Trailer::Share, id.clone())));
        commit_message(subject, None, &trailers)
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

/// Runs an operator command's rounds in the one read–plan–commit loop:
/// lost races retried (at most [`MAX_RACES`]), a refused push looked at
/// again, a network fault failing at once. Nothing is logged: the command
/// prints what it did.
fn rounds<T>(doing: &str, round: impl FnMut(&mut Tries) -> Result<Round<T>>) -> Result<T> {
    let quiet = Log::new(Box::new(std::io::sink()));
    let policy = Policy {
        log: &quiet,
        interrupt: &Interrupt::default(),
        backoff: None,
        max_races: MAX_RACES,
        doing,
        uri: "the lock repository",
    };
    retry::run(&policy, round)
}

/// What one commit made: its id, and one line for people.
fn one(subject: &str, id: String) -> Done {
    Done {
        lines: vec![format!("{subject} ({id})")],
        commits: vec![id],
    }
}

/// What an operator's file commit built on `tip` came to
/// ([`Tries::outcome`]): the commit, or `None` to look again.
fn made(
    tries: &mut Tries,
    outcome: crate::store::seam::CommitOutcome,
    tip: &str,
    subject: &str,
) -> Option<Done> {
    tries
        .outcome(outcome, tip)
        .map(|id| one(subject, id.to_string()))
}

fn tip_of(store: &mut dyn LockStore, branch: &str) -> Result<String> {
    match store.branch_tip()? {
        Some(tip) => Ok(tip),
        None => {
            let missing = Error::BranchNotFound {
                branch: branch.to_string(),
                uri: "the lock repository".into(),
            };
            Err(explain(store, missing))
        }
    }
}
