//! `pool serve`: every `--source` (else `POOL_SOURCE`) handed to
//! [`crate::operator::serve`], each with a way to open its store again.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::Source;
use crate::error::Result;
use crate::operator::commands::context::{concourse_builds, ConcourseArgs, Context};
use crate::store::open::open_store;
use crate::store::seam::Cache;

/// `pool serve`: every `--source` (else `POOL_SOURCE`), every pool on its
/// branch, until SIGINT or SIGTERM.
pub fn exec(
    cx: &mut Context<'_>,
    listen: SocketAddr,
    refresh: Duration,
    concourse: &ConcourseArgs,
    grafana: &crate::operator::grafana::Args,
) -> Result<Option<String>> {
    let global = cx.global;
    let grafana = crate::operator::grafana::Config::configure(grafana, cx.env)?;
    let paths: Vec<Option<&str>> = if global.source.is_empty() {
        vec![None]
    } else {
        global.source.iter().map(|s| Some(s.as_str())).collect()
    };
    let mut sources = Vec::new();
    for path in paths {
        let (source, _) = cx.load_source(path)?;
        let (log, interrupt) = (cx.log.clone(), cx.interrupt.clone());
        let open: crate::operator::watch::Opener =
            Box::new(move |s: &Source| open_store(s, Cache::Fresh, &log, &interrupt));
        sources.push((source, open));
    }
    let builds = concourse_builds(cx, concourse)?;
    let config = crate::operator::serve::Config {
        listen,
        refresh,
        builds,
        grafana,
    };
    crate::operator::serve::serve(config, sources, cx.log, cx.interrupt)?;
    Ok(None)
}
