//! `pool init`, `add`, `remove`, `claim` and `release`: one
//! [`crate::operator::ops::change`] each, what it did said on stderr.

use std::path::Path;

use crate::error::{Error, Result};
use crate::model::names::LockName;
use crate::model::pool::{Operation, Single};
use crate::operator::commands::context::Context;
use crate::operator::ops::change::{change_lock, init, Guard, WaitFn};

/// `pool init LOCK...`.
pub fn init_exec(cx: &mut Context<'_>, locks: &[LockName]) -> Result<Option<String>> {
    let mut t = cx.open()?;
    let pool = &t.source.pool;
    let done = init(t.store.as_mut(), pool, locks, &cx.operator())?;
    cx.done(&done);
    if done.commits.is_empty() {
        cx.log.line(format_args!(
            "pool {pool} is initialised already: no commit"
        ));
    }
    Ok(None)
}

/// `pool add LOCK [--claimed] [--metadata FILE]`.
pub fn add(
    cx: &mut Context<'_>,
    lock: &LockName,
    claimed: bool,
    metadata: Option<&Path>,
) -> Result<Option<String>> {
    let content = match metadata {
        Some(path) => std::fs::read(path).map_err(|e| Error::Input {
            what: "could not read --metadata".into(),
            path: path.to_path_buf(),
            source: e,
        })?,
        None => format!("{lock}\n").into_bytes(),
    };
    let op: Operation = Single::Add {
        lock: lock.clone(),
        content,
        claimed,
    }
    .into();
    exec(cx, &op, Guard::default(), false)
}

/// `add`, `remove`, `claim`, `release`: one change to one lock; `wait`
/// waits out a claimed lock or a held pool, `retry_delay` between looks.
pub fn exec(
    cx: &mut Context<'_>,
    op: &Operation,
    guard: Guard<'_>,
    wait: bool,
) -> Result<Option<String>> {
    let mut t = cx.open()?;
    let (log, interrupt) = (cx.log, cx.interrupt);
    let delay = t.source.retry_delay;
    let mut wait_fn = |why: &str| -> Result<()> {
        log.line(format_args!("waiting: {why}"));
        interrupt.sleep(delay, "waiting to claim")
    };
    let wait_fn: Option<WaitFn<'_>> = if wait { Some(&mut wait_fn) } else { None };
    let done = change_lock(
        t.store.as_mut(),
        &t.source.pool,
        op,
        &cx.operator(),
        guard,
        wait_fn,
    )?;
    cx.done(&done);
    Ok(None)
}
