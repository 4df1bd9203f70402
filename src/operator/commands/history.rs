//! `pool history [LOCK] [--since DURATION] [--json]`:
//! [`crate::operator::ops::history`] as a table or one JSON document, with
//! the build status of the claims still held when Concourse access is
//! configured.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::model::duration::utc;
use crate::model::names::LockName;
use crate::operator::commands::context::{concourse_builds, to_json, ConcourseArgs, Context};
use crate::operator::ops::find_pools;
use crate::operator::ops::history::{history, Interval};
use crate::process::clock::now_unix;

/// `pool history`: what to print on stdout.
pub fn exec(
    cx: &mut Context<'_>,
    lock: Option<&LockName>,
    since: Duration,
    json: bool,
    concourse: &ConcourseArgs,
) -> Result<Option<String>> {
    let mut t = cx.open()?;
    let store = t.store.as_mut();
    let tip = match store.branch_tip()? {
        Some(tip) => tip,
        None => {
            let missing = Error::BranchNotFound {
                branch: t.source.branch.clone(),
                uri: t.source.uri.to_string(),
            };
            return Err(crate::store::explain::explain(store, missing));
        }
    };
    let pools = if t.pool_given {
        vec![t.source.pool.to_string()]
    } else {
        find_pools(store, &tip)?
    };
    // Go durations end before 2^63 ns, about 292 years: no overflow.
    let from = now_unix() - since.as_secs() as i64;
    let lock = lock.map(LockName::as_str);
    let mut h = history(store, &t.source.branch, &pools, lock, from)?;
    if let Some(b) = concourse_builds(cx, concourse)?.as_mut() {
        b.annotate_history(&mut h);
        for w in crate::operator::concourse::warnings(b) {
            cx.log.warn(w);
        }
    }
    if json {
        return Ok(Some(to_json(&h)?));
    }
    if h.is_empty() {
        let of = lock.map(|l| format!(" of {l}")).unwrap_or_default();
        cx.log
            .line(format_args!("no claims{of} since {}", utc(from)));
        return Ok(None);
    }
    Ok(Some(render(&h)))
}

/// The claims for people, one line each.
fn render(h: &[Interval]) -> String {
    let mut out = String::new();
    let now = now_unix();
    for i in h {
        let until = match (i.released_at, &i.build_status) {
            (Some(t), _) => utc(t),
            (None, Some(b)) => format!("still claimed, build {}", b.describe(now)),
            (None, None) => "still claimed".into(),
        };
        out.push_str(&format!(
            "{}/{}  {} → {}  ({})  by {}\n",
            i.pool,
            i.lock,
            utc(i.claimed_at),
            until,
            crate::model::duration::human(Duration::from_secs(i.seconds as u64)),
            i.claimed_by.describe()
        ));
    }
    out
}
