//! `pool reap --older-than DURATION` and `pool reap --dead`:
//! [`crate::operator::ops::reap`], with Concourse asked about every build
//! for `--dead`.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::operator::commands::context::{concourse_builds, ConcourseArgs, Context};
use crate::operator::concourse::build::DeadPolicy;
use crate::operator::ops::reap::{reap, reap_dead, Dead, Reaping};

/// How long a build must have been over before `reap --dead` releases its claim.
const DEFAULT_GRACE: Duration = Duration::from_secs(300);

/// The options of `pool reap`.
pub struct Options<'a> {
    /// `--older-than`, unless `--dead` is given.
    pub older_than: Option<Duration>,
    /// `--grace` (with `--dead`).
    pub grace: Option<Duration>,
    /// `--finished` (with `--dead`).
    pub finished: bool,
    /// `--missing` (with `--dead`).
    pub missing: bool,
    /// `--dry-run`.
    pub dry_run: bool,
    /// How Concourse is reached (with `--dead`).
    pub concourse: &'a ConcourseArgs,
}

/// `pool reap`.
pub fn exec(cx: &mut Context<'_>, options: Options<'_>) -> Result<Option<String>> {
    let mut t = cx.open()?;
    let who = cx.operator();
    let job = Reaping {
        branch: &t.source.branch,
        pool: &t.source.pool,
        who: &who,
        dry_run: options.dry_run,
    };
    let done = match options.older_than {
        Some(older_than) => reap(t.store.as_mut(), &job, older_than.as_secs() as i64)?,
        None => {
            let Some(mut builds) = concourse_builds(cx, options.concourse)? else {
                return Err(Error::Usage(
                    "reap --dead needs Concourse access: CONCOURSE_TOKEN, CONCOURSE_USERNAME and CONCOURSE_PASSWORD, --fly-target NAME, or --concourse-url URL".into(),
                ));
            };
            let dead = DeadPolicy {
                grace: options.grace.unwrap_or(DEFAULT_GRACE).as_secs() as i64,
                finished: options.finished,
                missing: options.missing,
            };
            builds.set_bounds(crate::operator::concourse::client::Bounds::REAP);
            let url = builds.access().url.clone();
            let dead = Dead {
                policy: dead,
                concourse: url.as_deref(),
            };
            let log = cx.log;
            // Every build is asked about before anything is released.
            reap_dead(t.store.as_mut(), &job, &dead, &mut |refs| {
                builds.lookup_all(refs).inspect_err(|_| {
                    log.line("reap --dead: Concourse could not say whether the builds are alive, so nothing was released or removed")
                })
            })?
        }
    };
    cx.done(&done);
    Ok(None)
}
