//! What `pool serve` and `pool status --html` show, and how it is kept
//! fresh: a [`Board`] with one [`View`] per lock repository, refreshed by a
//! [`Watcher`] on a timer, never per request.
//!
//! Each refresh first peeks at the branch tip ([`LockStore::peek_tip`]: for
//! git the ref advertisement alone, nothing fetched) and reads the pools,
//! their history and the locks' metadata only when the tip moved, so the
//! cost to the git server (or CodeCommit's request quota) is one cheap call
//! per refresh however many people look. Plain synchronous code: the HTTP
//! side only ever reads the board.

use std::collections::BTreeMap;

use crate::config::Source;
use crate::error::{Error, Result};
use crate::model::names::PoolPath;
use crate::model::pool::Hold;
use crate::operator::events;
use crate::operator::ops::history::{history, Interval};
use crate::operator::ops::status::{status, Status};
use crate::process::clock::now_unix;
use crate::store::seam::LockStore;

/// How far back the history is kept: the page's longest timeline.
pub const HISTORY_KEPT: i64 = 7 * 86_400;
/// The most of a lock file's content kept as its metadata, in bytes.
pub const METADATA_LIMIT: usize = 16 * 1024;

/// One full read of a lock repository.
#[derive(Clone, Debug)]
pub struct Read {
    /// The source's pool, else every pool on the branch.
    pub status: Status,
    /// Claims of the last [`HISTORY_KEPT`] seconds, newest first.
    pub history: Vec<Interval>,
    /// Each lock file's content (at most [`METADATA_LIMIT`] bytes, lossy
    /// UTF-8), by pool and lock.
    pub metadata: BTreeMap<(String, String), String>,
    /// The operator's events and the look-back, for the annotations.
    pub annotations: events::History,
}

/// What is known of one lock repository.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// Its URI, without credentials.
    pub uri: String,
    /// The branch.
    pub branch: String,
    /// The latest full read, if any succeeded.
    pub read: Option<Read>,
    /// When the last refresh ended, Unix seconds.
    pub last_attempt: Option<i64>,
    /// When a refresh last succeeded.
    pub last_success: Option<i64>,
    /// Why the last refresh failed (`None` when it succeeded).
    pub last_error: Option<String>,
    /// Refreshes attempted.
    pub refreshes: u64,
    /// Refreshes that failed.
    pub failures: u64,
    /// Refreshes that found the tip moved and read everything.
    pub full_reads: u64,
    /// When Concourse was last asked about the holders' builds (`None`:
    /// Concourse access is not configured).
    pub build_status_at: Option<i64>,
    /// Why Concourse could not say, the last time it was asked.
    pub build_status_error: Option<String>,
}

impl View {
    /// The view of `source` before its first refresh.
    pub fn of(source: &Source) -> View {
        View {
            uri: public_uri(source),
            branch: source.branch.clone(),
            ..View::default()
        }
    }
}

/// Everything shown: the repositories in `--source` order.
#[derive(Clone, Debug, Default)]
pub struct Board {
    /// Seconds between refreshes (`None` for a static page).
    pub refresh: Option<u64>,
    /// One view per repository.
    pub views: Vec<View>,
}

/// The URI of `source` as shown to anyone: no password (see
/// [`crate::config::uri::RepoUri`]'s `Display`) and no user name either.
pub fn public_uri(source: &Source) -> String {
    let shown = source.uri.to_string();
    match shown.split_once("://") {
        Some((scheme, rest)) => {
            let host_end = rest.find('/').unwrap_or(rest.len());
            match rest[..host_end].rfind('@') {
                Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
                None => shown,
            }
        }
        None => shown,
    }
}

/// An error with its causes, on one line.
pub fn describe_error(err: &Error) -> String {
    err.chain()
}

/// Reads `pool` (else every pool of the branch), the history and the
/// locks' metadata.
pub fn read_all(store: &mut dyn LockStore, branch: &str, pool: Option<&PoolPath>) -> Result<Read> {
    let status = status(store, branch, pool)?;
    let pools: Vec<String> = status.pools.iter().map(|p| p.pool.clone()).collect();
    let history = history(store, branch, &pools, None, status.now - HISTORY_KEPT)?;
    let annotations =
        events::operator_events(store, &status.tip, &pools, status.now - HISTORY_KEPT)?;
    let mut metadata = BTreeMap::new();
    for p in &status.pools {
        for l in &p.locks {
            let path = format!("{}/{}/{}", p.pool, l.state, l.name);
            if let Some(bytes) = store.read_file(&status.tip, &path)? {
                let cut = &bytes[..bytes.len().min(METADATA_LIMIT)];
                metadata.insert(
                    (p.pool.clone(), l.name.to_string()),
                    String::from_utf8_lossy(cut).into_owned(),
                );
            }
        }
    }
    Ok(Read {
        status,
        history,
        metadata,
        annotations,
    })
}

/// The pool a source names, which `pool serve` shows alone as `pool
/// status` does; `None` (every pool on the branch) for a source without
/// `pool`, which the `pool` command fills with the holds' directory
/// `.pool-resource`, where no pool can be.
pub fn named_pool(source: &Source) -> Option<&PoolPath> {
    let holds = Hold::DIR.split('/').next().unwrap_or_default();
    (source.pool.as_str() != holds).then_some(&source.pool)
}

/// Opens a store for a [`Watcher`] (the backend the resource would use).
pub type Opener = Box<dyn FnMut(&Source) -> Result<Box<dyn LockStore>> + Send>;

/// Keeps one repository's [`View`] fresh.
pub struct Watcher {
    source: Source,
    open: Opener,
    /// Kept between refreshes so a fetch brings only what is new; dropped
    /// after a failure and opened again on the next refresh.
    store: Option<Box<dyn LockStore>>,
    /// The tip of the latest full read.
    tip: Option<String>,
}

impl Watcher {
    /// A watcher of `source`, opening its store with `open` when needed.
    pub fn new(source: Source, open: Opener) -> Watcher {
        Watcher {
            source,
            open,
            store: None,
            tip: None,
        }
    }

    /// Peeks at the tip; reads everything only when it moved. `Some` with
    /// the new read, `None` when nothing changed.
    pub fn refresh(&mut self) -> Result<Option<Read>> {
        let result = self.look();
        if result.is_err() {
            self.store = None;
            self.tip = None;
        }
        result
    }

    fn look(&mut self) -> Result<Option<Read>> {
        if self.store.is_none() {
            self.store = Some((self.open)(&self.source)?);
        }
        let Some(store) = self.store.as_mut() else {
            return Ok(None);
        };
        let tip = store.peek_tip()?.ok_or_else(|| Error::BranchNotFound {
            branch: self.source.branch.clone(),
            uri: public_uri(&self.source),
        })?;
        if self.tip.as_deref() == Some(tip.as_str()) {
            return Ok(None);
        }
        let read = read_all(
            store.as_mut(),
            &self.source.branch,
            named_pool(&self.source),
        )?;
        self.tip = Some(read.status.tip.clone());
        Ok(Some(read))
    }
}

/// Records the outcome of one refresh of `view`; `redact` scrubs an error
/// of the source's secrets.
pub fn record(
    view: &mut View,
    outcome: Result<Option<Read>>,
    redact: &dyn Fn(&str) -> String,
) -> Option<String> {
    let now = now_unix();
    view.refreshes += 1;
    view.last_attempt = Some(now);
    match outcome {
        Ok(read) => {
            if let Some(read) = read {
                view.full_reads += 1;
                view.read = Some(read);
            }
            view.last_success = Some(now);
            view.last_error = None;
            None
        }
        Err(e) => {
            let why = redact(&describe_error(&e));
            view.failures += 1;
            view.last_error = Some(why.clone());
            Some(why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RawRequest;

    fn source(uri: &str) -> Source {
        let request = RawRequest::parse(
            serde_json::json!({"source": {"uri": uri, "branch": "main", "pool": "p"}})
                .to_string()
                .as_bytes(),
        )
        .expect("request");
        Source::from_request(&request).expect("source")
    }

    #[test]
    fn a_shown_uri_has_neither_password_nor_user() {
        assert_eq!(
            public_uri(&source("https://bob:s3cret@git.example.com/locks.git")),
            "https://git.example.com/locks.git"
        );
        assert_eq!(
            public_uri(&source("git://127.0.0.1:9418/locks.git")),
            "git://127.0.0.1:9418/locks.git"
        );
    }

    #[test]
    fn a_failed_refresh_keeps_the_last_read_and_says_why() {
        let mut view = View::default();
        let err = Error::Network {
            what: "fetching".into(),
            uri: "git://x".into(),
            source: crate::error::Cause::msg("connection refused"),
        };
        let why = record(&mut view, Err(err), &|s| s.replace("x", "[redacted]"));
        assert!(why.is_some_and(|w| w.contains("connection refused")));
        assert_eq!((view.refreshes, view.failures), (1, 1));
        assert!(view
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("[redacted]")));
        assert_eq!(record(&mut view, Ok(None), &|s| s.into()), None);
        assert_eq!((view.refreshes, view.failures), (2, 1));
        assert!(view.last_error.is_none() && view.last_success.is_some());
    }
}
