//! `pool status [--json] [--html FILE]`: [`crate::operator::ops::status`]
//! as a table or one JSON document, with the holders' build status when
//! Concourse access is configured; `--html` writes the page of `pool
//! serve` as one static file too.

use std::path::Path;

use crate::config::Source;
use crate::error::{Error, Result};
use crate::operator::commands::context::{concourse_builds, to_json, ConcourseArgs, Context};
use crate::operator::ops::status::{status, Status};
use crate::process::log::Log;

/// `pool status [--json] [--html FILE]`: what to print on stdout.
pub fn exec(
    cx: &mut Context<'_>,
    json: bool,
    html: Option<&Path>,
    concourse: &ConcourseArgs,
) -> Result<Option<String>> {
    let mut t = cx.open()?;
    let mut builds = concourse_builds(cx, concourse)?;
    let pool = t.pool_given.then_some(&t.source.pool);
    let log = cx.log;
    let st = match html {
        None => {
            let mut st = status(t.store.as_mut(), &t.source.branch, pool)?;
            annotate(builds.as_mut(), &mut st, log);
            st
        }
        Some(file) => {
            let mut read =
                crate::operator::watch::read_all(t.store.as_mut(), &t.source.branch, pool)?;
            annotate(builds.as_mut(), &mut read.status, log);
            write_page(&t.source, read.clone(), file, log)?;
            read.status
        }
    };
    Ok(Some(if json { to_json(&st)? } else { st.render() }))
}

/// `status --html FILE`: the page of `pool serve`, as one static file.
fn write_page(
    source: &Source,
    read: crate::operator::watch::Read,
    file: &Path,
    log: &Log,
) -> Result<()> {
    let now = read.status.now;
    let board = crate::operator::watch::Board {
        refresh: None,
        views: vec![crate::operator::watch::View {
            read: Some(read),
            last_success: Some(now),
            last_attempt: Some(now),
            ..crate::operator::watch::View::of(source)
        }],
    };
    let page = crate::operator::page::render(
        &board,
        now,
        crate::operator::page::Window::Day,
        crate::operator::page::Mode::Static,
    );
    let shown = file.display();
    std::fs::write(file, log.redact(&page))
        .map_err(|e| Error::io(format!("could not write --html {shown}"), e))?;
    log.line(format_args!("wrote the status page to {shown}"));
    Ok(())
}

/// Adds the holders' build status to `st`, warning of what Concourse did not say.
fn annotate(builds: Option<&mut crate::operator::concourse::Builds>, st: &mut Status, log: &Log) {
    if let Some(b) = builds {
        b.annotate_status(st);
        for w in crate::operator::concourse::warnings(b) {
            log.warn(w);
        }
    }
}
