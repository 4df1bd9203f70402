//! `pool dequeue WAITER`: [`crate::operator::ops::line::dequeue`].

use crate::error::Result;
use crate::operator::commands::context::Context;
use crate::operator::ops::line::dequeue;

/// `pool dequeue WAITER`.
pub fn exec(cx: &mut Context<'_>, waiter: &str) -> Result<Option<String>> {
    let mut t = cx.open()?;
    let done = dequeue(t.store.as_mut(), &t.source.pool, waiter, &cx.operator())?;
    cx.done(&done);
    Ok(None)
}
