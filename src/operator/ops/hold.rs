//! `pool hold` and `pool unhold`: the operator's hold of a pool, during
//! which `acquire` and `claim` wait (the hold file, [`Hold`]).

use crate::error::{Error, Result};
use crate::model::names::PoolPath;
use crate::model::pool::Hold;
use crate::operator::ops::{made, rounds, Done, Operator};
use crate::process::clock::now_unix;
use crate::store::explain::explain;
use crate::store::retry::Round;
use crate::store::seam::{FileEdit, LockStore};

/// `hold` (with `Some(reason)`) or `unhold` (`None`) of `pool`.
pub fn set_hold(
    store: &mut dyn LockStore,
    pool: &PoolPath,
    who: &Operator,
    hold: bool,
) -> Result<Done> {
    let doing = format!("{} pool {pool}", if hold { "holding" } else { "unholding" });
    rounds(&doing, |tries| {
        let snap = store.snapshot().map_err(|e| explain(store, e))?;
        tries.check_rejected(&snap.tip)?;
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
        let outcome = store.commit_files(Some(&snap.tip), &edits, &who.message(&subject))?;
        Ok(match made(tries, outcome, &snap.tip, &subject) {
            Some(done) => Round::Done(done),
            None => Round::Again,
        })
    })
}
