//! `pool hold` and `pool unhold`: [`crate::operator::ops::hold`].

use crate::error::Result;
use crate::operator::commands::context::Context;
use crate::operator::ops::hold::set_hold;

/// `pool hold` (`hold`) or `pool unhold`.
pub fn exec(cx: &mut Context<'_>, hold: bool) -> Result<Option<String>> {
    let mut t = cx.open()?;
    let done = set_hold(t.store.as_mut(), &t.source.pool, &cx.operator(), hold)?;
    cx.done(&done);
    Ok(None)
}
