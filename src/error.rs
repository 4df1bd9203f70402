//! The one error type of the library.
//!
//! Callers must tell apart a bad request (fail at once), a lock that is not in
//! the state asked for (fail at once, naming pool and lock), an authentication
//! failure (fail at once, naming the URI without credentials) and a network
//! fault (retry with backoff). [`Error::is_retryable`] makes that decision in
//! one place, after cargo's `maybe_spurious`.

use std::path::PathBuf;

/// Everything that can go wrong while serving a `check`, `in` or `out`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The executable was called with the wrong arguments.
    #[error("usage: {0}")]
    Usage(String),

    /// The request on stdin is not one we can serve; the message names the field.
    #[error("{0}")]
    BadRequest(String),

    /// A file the put params point at is missing or unreadable.
    #[error("{what} ({path})")]
    Input {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The lock named by the request is not in the pool.
    #[error("lock {lock:?} does not exist in pool {pool:?}")]
    LockNotFound { pool: String, lock: String },

    /// `add`/`add_claimed` of a lock that is already there.
    #[error("lock {lock:?} already exists in pool {pool:?} (it is {state})")]
    LockExists {
        pool: String,
        lock: String,
        state: &'static str,
    },

    /// `release` of a lock that is not claimed.
    #[error("lock {lock:?} in pool {pool:?} is not claimed, so it cannot be released")]
    NotClaimed { pool: String, lock: String },

    /// `acquire: N` with N larger than the pool: it could never be done.
    #[error("acquire: {wanted} wants more locks than pool {pool:?} has ({have})")]
    TooFewLocks {
        pool: String,
        wanted: usize,
        have: usize,
    },

    /// The pool directory is not on the branch.
    #[error("pool {pool:?} does not exist on branch {branch:?} of {uri} (expected {pool}/claimed and {pool}/unclaimed)")]
    PoolNotFound {
        pool: String,
        branch: String,
        uri: String,
    },

    /// The branch is not in the repository.
    #[error("branch {branch:?} does not exist in {uri}")]
    BranchNotFound { branch: String, uri: String },

    /// The version asked for by `in` is not on the branch.
    #[error("version {version} is not on branch {branch:?} of {uri}")]
    VersionNotFound {
        version: String,
        branch: String,
        uri: String,
    },

    /// `in` of a claim that has been released (or released and claimed again) since.
    #[error("lock instance is no longer acquired")]
    NoLongerAcquired,

    /// A fenced `release` (its directory holds the `claim` file `in`
    /// wrote) of a lock that was released and claimed again since that
    /// claim: releasing it would free someone else's claim.
    #[error("refusing to release lock {lock:?} of pool {pool:?}: {detail} (the claim this build holds is commit {claim}, from the claim file in the release directory); nothing was committed")]
    Fenced {
        pool: String,
        lock: String,
        claim: String,
        detail: String,
    },

    /// A release that would free a lock held shared from under its other
    /// holders (an exclusive `release`, a share already given back).
    #[error("refusing to release lock {lock:?} of pool {pool:?}: {detail}; nothing was committed")]
    Shared {
        pool: String,
        lock: String,
        detail: String,
    },

    /// The server refused our credentials, or we had none to offer.
    #[error("authentication failed for {uri}: {detail}")]
    Auth { uri: String, detail: String },

    /// The server's identity could not be verified (TLS certificate or SSH host key).
    #[error("could not verify the identity of {uri}: {detail}")]
    Identity { uri: String, detail: String },

    /// A network-class failure: worth retrying. The cause is the
    /// `git2::Error` (its class and code decided this) or the SDK's error.
    #[error("{what} ({uri})")]
    Network {
        what: String,
        uri: String,
        #[source]
        source: Cause,
    },

    /// The server refused our push for a reason other than a lost race.
    #[error("push to {uri} was rejected: {detail}")]
    PushRejected { uri: String, detail: String },

    /// A libgit2 call failed for a reason that is not worth retrying; the
    /// `git2::Error` (class, code, message) is the cause.
    #[error("{what}")]
    Git {
        what: String,
        #[source]
        source: git2::Error,
    },

    /// A CodeCommit API call failed for a reason of its own (not
    /// credentials, a missing repository or branch); `retryable` for
    /// throttling and server errors. The SDK's error is the cause.
    #[error("codecommit:{action} failed ({code}) on {uri}")]
    Api {
        action: String,
        code: String,
        uri: String,
        retryable: bool,
        #[source]
        source: Cause,
    },

    /// The Concourse API answered something this resource cannot use: an
    /// unexpected status, a redirect, or a body that is not the JSON the
    /// route returns. `url` has no credentials (they travel in headers).
    #[error("{what} ({url}): {detail}")]
    ConcourseApi {
        what: String,
        url: String,
        detail: String,
    },

    /// The repository or a request to it is not as this operation needs,
    /// with no library error behind it.
    #[error("{what}: {detail}")]
    Repository { what: String, detail: String },

    /// A local I/O failure.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// Too many consecutive lost races or network faults.
    #[error("gave up after {attempts} attempts: {last}{}", unconfirmed_note(.unconfirmed))]
    GaveUp {
        attempts: u32,
        last: String,
        /// Changes pushed without an answer that may have landed.
        unconfirmed: Vec<String>,
    },

    /// A push whose reply was lost may have landed, and the history within
    /// reach cannot tell: planning another change could take a second lock.
    #[error("could not tell whether a push whose reply was lost reached the branch: neither its commit nor the commit it was built on is among the last {limit} commits{}", unconfirmed_note(.unconfirmed))]
    Unsettled {
        limit: usize,
        /// The changes whose fate is unknown.
        unconfirmed: Vec<String>,
    },

    /// An error and what to do about it: the nearest existing name and the
    /// list of what exists, or how to create what is missing. Added where
    /// the store is at hand to look ([`crate::store::explain`]); match on
    /// [`Error::root`] to see through it.
    #[error("{error}; {hint}")]
    Hinted { error: Box<Error>, hint: String },
    /// A put left the line without its locks: `wait_timeout` passed, or an
    /// operator removed its ticket.
    #[error("no lock of pool {pool:?} was claimed: {what}")]
    NotServed { pool: String, what: String },

    /// SIGINT or SIGTERM arrived.
    #[error(
        "interrupted by {signal} while {doing}; no lock was changed by this step after the signal"
    )]
    Interrupted { signal: &'static str, doing: String },
}

impl Error {
    /// True for failures that may go away when the same operation is tried
    /// again: network faults only. Authentication, certificate and request
    /// errors never are.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.root(),
            Error::Network { .. }
                | Error::Api {
                    retryable: true,
                    ..
                }
        )
    }

    /// True for a failed commit attempt that may still have reached the
    /// branch: a network fault (the reply lost), or a signal that stopped
    /// the push after it was sent. Such an attempt is kept for
    /// [`crate::store::recovery::Recovery`] to settle.
    pub fn may_have_landed(&self) -> bool {
        self.is_retryable() || matches!(self.root(), Error::Interrupted { .. })
    }

    /// The message and every cause on one line, `: `-separated: for the
    /// one-line warnings of a put that retries, and for [`Error::GaveUp`].
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }

    /// The error itself, under any [`Error::Hinted`] wrapping.
    pub fn root(&self) -> &Error {
        match self {
            Error::Hinted { error, .. } => error.root(),
            other => other,
        }
    }

    /// This error with `hint` (what to do next) added; an empty hint adds
    /// nothing.
    pub fn hinted(self, hint: impl Into<String>) -> Error {
        let hint = hint.into();
        if hint.is_empty() {
            return self;
        }
        Error::Hinted {
            error: Box::new(self),
            hint,
        }
    }

    /// Shorthand for [`Error::BadRequest`].
    pub fn bad_request(msg: impl Into<String>) -> Error {
        Error::BadRequest(msg.into())
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

fn unconfirmed_note(changes: &[String]) -> String {
    if changes.is_empty() {
        return String::new();
    }
    format!(
        "; a push whose reply was lost may still have landed, so this build may hold {}: run the put again with idempotent: true to get it back (its commit carries this build's Pool-Resource-Build-Id), or release it",
        changes.join(" and ")
    )
}

/// How many names a hint lists before `... and N more`.
const LISTED: usize = 10;

/// The name among `known` nearest to `wanted`, if it is close enough to be
/// a typo of it: at most two edits (one for names of up to four
/// characters), or `wanted` differing only in case.
pub fn nearest<'a>(wanted: &str, known: &'a [String]) -> Option<&'a str> {
    let len = wanted.chars().count();
    let allowed = if len <= 4 { 1 } else { 2 };
    known
        .iter()
        // Cheap first: a name longer or shorter by more than the allowed
        // edits cannot be within them, and a huge name must not cost seconds.
        .filter(|k| len.abs_diff(k.chars().count()) <= allowed && k.as_str() != wanted)
        .map(|k| {
            let d = if k.eq_ignore_ascii_case(wanted) {
                0
            } else {
                // A swap of two neighbours counts as one edit (`mian` is
                // one from `main`): the optimal string alignment distance.
                strsim::osa_distance(wanted, k)
            };
            (d, k.as_str())
        })
        .filter(|(d, _)| *d <= allowed)
        .min()
        .map(|(_, k)| k)
}

/// The hint for an unknown name: `did you mean "staging"? ` when one is
/// close, then `what: a, b, c` (at most [`LISTED`] names, each shortened),
/// or `none` when nothing exists.
pub fn name_hint(wanted: &str, known: &[String], what: &str, none: &str) -> String {
    if known.is_empty() {
        return none.to_string();
    }
    let mut listed: Vec<String> = known.iter().take(LISTED).map(|k| shortened(k)).collect();
    if known.len() > LISTED {
        listed.push(format!("... and {} more", known.len() - LISTED));
    }
    let list = format!("{what}: {}", listed.join(", "));
    match nearest(wanted, known) {
        Some(near) => format!("did you mean {}? ({list})", quoted(near)),
        None => list,
    }
}

/// How many characters of a value a message shows.
const SHOWN: usize = 48;

/// The first [`SHOWN`] characters of `text`, if it has more.
fn head_of(text: &str) -> Option<String> {
    (text.chars().count() > SHOWN).then(|| text.chars().take(SHOWN).collect())
}

/// `text` quoted for a message, shortened: a value of megabytes must not
/// flood the build log.
pub fn quoted(text: &str) -> String {
    match head_of(text) {
        None => format!("{text:?}"),
        Some(head) => format!("{head:?}... ({} bytes)", text.len()),
    }
}

/// `text` as it is, shortened like [`quoted`]: for names such as a field's.
pub fn shortened(text: &str) -> String {
    match head_of(text) {
        None => text.to_string(),
        Some(head) => format!("{head}... ({} bytes)", text.len()),
    }
}

/// The cause behind an [`Error::Network`] or [`Error::Api`]: a library's
/// error, boxed (a `git2::Error`, with its message already scrubbed of
/// secrets, or an AWS SDK error).
#[derive(Debug)]
pub struct Cause(pub Box<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl Cause {
    /// A cause that is only a message (a fault we detect ourselves).
    pub fn msg(text: impl Into<String>) -> Cause {
        Cause(text.into().into())
    }

    /// The `git2::Error` behind this cause, if it is one.
    pub fn git2(&self) -> Option<&git2::Error> {
        self.0.downcast_ref()
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_typo_finds_the_name_it_was_meant_to_be() {
        let known = names(&["qa", "staging", "production"]);
        assert_eq!(nearest("stagin", &known), Some("staging"));
        assert_eq!(nearest("prodcution", &known), Some("production"));
        assert_eq!(nearest("QA", &known), Some("qa"));
        assert_eq!(nearest("mian", &names(&["main"])), Some("main"));
        assert_eq!(nearest("master", &names(&["main"])), None);
        assert_eq!(nearest("qa", &known), None, "an exact name is no typo");
    }

    #[test]
    fn a_hint_lists_what_exists_cut_at_ten() {
        let many: Vec<String> = (0..25).map(|i| format!("lock-{i:02}")).collect();
        let hint = name_hint("nope", &many, "its locks", "none");
        assert!(hint.starts_with("its locks: lock-00, lock-01,"), "{hint}");
        assert!(hint.ends_with("lock-09, ... and 15 more"), "{hint}");
        assert_eq!(name_hint("x", &[], "its locks", "no locks"), "no locks");
        assert_eq!(
            name_hint("envz", &names(&["envs", "ops"]), "pools", "none"),
            "did you mean \"envs\"? (pools: envs, ops)"
        );
    }
}
