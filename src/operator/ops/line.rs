//! `pool dequeue`: an operator's removal of a ticket from a pool's line,
//! in one commit of the line file alone; [`remove_ticket`] is also how
//! `reap --dead` removes the tickets of builds that ended.

use crate::error::{Error, Result};
use crate::model::line::{Line, Ticket};
use crate::model::message::dequeue_subject;
use crate::model::names::PoolPath;
use crate::operator::ops::{made, rounds, Done, Operator};
use crate::process::clock::now_unix;
use crate::store::retry::Round;
use crate::store::seam::{FileEdit, LockStore};

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
    let doing = format!("dequeuing {waiter} from pool {pool}");
    let mut pick =
        |line: &Line, now: i64| find_waiter(line, waiter, pool, now).map(|t| Some(t.clone()));
    remove_ticket(store, pool, &doing, who, &mut pick)?.ok_or_else(|| {
        Error::bad_request(format!("no waiter {waiter:?} in the line of pool {pool}"))
    })
}

/// Chooses, in the line as read at a time, the ticket to remove (`None`:
/// none any more); an error stops the removal.
pub(crate) type PickFn<'a> = &'a mut dyn FnMut(&Line, i64) -> Result<Option<Ticket>>;

/// Removes from the line of `pool` the ticket `pick` chooses, in one commit
/// of the line file alone with `who`'s trailers, in the one read–plan–commit
/// loop (the choice made again on each look). `None`, nothing committed,
/// when `pick` chooses none.
pub(crate) fn remove_ticket(
    store: &mut dyn LockStore,
    pool: &PoolPath,
    doing: &str,
    who: &Operator,
    pick: PickFn<'_>,
) -> Result<Option<Done>> {
    rounds(doing, |tries| {
        let snap = store.snapshot()?;
        tries.check_rejected(&snap.tip)?;
        let now = now_unix();
        let Some(ticket) = pick(&snap.line, now)? else {
            return Ok(Round::Done(None));
        };
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
        let outcome = store.commit_files(Some(&snap.tip), &edits, &who.message(&subject))?;
        Ok(match made(tries, outcome, &snap.tip, &subject) {
            Some(mut done) => {
                done.lines.push(what);
                Round::Done(Some(done))
            }
            None => Round::Again,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::ops::status::tests::sample;

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
