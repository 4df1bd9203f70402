//! The history's wire format: commit subjects and trailers.
//!
//! The lock history is read by more than this resource: the Go resource,
//! Pool Boy and dashboards parse the first line of every commit
//! (`claiming: L`, `unclaiming: L`, ...), and the Go resource writes a
//! `Build URL: ...` line after it. This resource adds git trailers naming the
//! build, an operator and a nonce. Every place that writes or reads a commit
//! message goes through this module, so the format is defined once: a
//! [`Verb`] composes and parses subjects, a [`Trailer`] names each trailer,
//! [`commit_message`] composes a whole message and [`Parsed`] reads one.

use serde::Serialize;

use crate::protocol::BuildInfo;

/// What a commit did to a lock: the word before `: ` in its subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verb {
    /// `claiming: L`: moved from `unclaimed/` to `claimed/`.
    Claiming,
    /// `unclaiming: L`: moved from `claimed/` to `unclaimed/`.
    Unclaiming,
    /// `adding unclaimed: L`: a new lock in `unclaimed/`.
    AddingUnclaimed,
    /// `adding claimed: L`: a new lock in `claimed/`.
    AddingClaimed,
    /// `removing: L`: the lock deleted.
    Removing,
    /// `updating: L`: an unclaimed lock's content replaced.
    Updating,
    /// `sharing: L`: one more holder of a lock held shared (only the
    /// shares file changes; this resource's own verb).
    Sharing,
    /// `unsharing: L`: one holder of a lock held shared gave its share
    /// back, others still hold it (only the shares file changes).
    Unsharing,
}

impl Verb {
    /// Every verb, in the order the Go resource's README lists them.
    pub const ALL: [Verb; 6] = [
        Verb::Claiming,
        Verb::Unclaiming,
        Verb::AddingUnclaimed,
        Verb::AddingClaimed,
        Verb::Removing,
        Verb::Updating,
    ];

    /// The verbs of shared holds, which only this resource writes, on
    /// commits that change no pool directory.
    pub const SHARES: [Verb; 2] = [Verb::Sharing, Verb::Unsharing];

    /// The words of the subject, as the Go resource writes them.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Claiming => "claiming",
            Verb::Unclaiming => "unclaiming",
            Verb::AddingUnclaimed => "adding unclaimed",
            Verb::AddingClaimed => "adding claimed",
            Verb::Removing => "removing",
            Verb::Updating => "updating",
            Verb::Sharing => "sharing",
            Verb::Unsharing => "unsharing",
        }
    }

    /// The subject of a commit doing this to `lock`: `claiming: L`.
    pub fn subject(self, lock: impl std::fmt::Display) -> String {
        format!("{}: {lock}", self.as_str())
    }

    /// Whether a commit with this verb leaves its lock claimed.
    pub fn leaves_claimed(self) -> bool {
        // `unsharing:` leaves it claimed too, but is no one's claim: the
        // history readers take this for "a claim by this commit's author".
        matches!(self, Verb::Claiming | Verb::AddingClaimed | Verb::Sharing)
    }
}

/// Reads a subject written by [`Verb::subject`] (or by the Go resource):
/// its verb and the lock name, trimmed. `None` for any other subject.
pub fn parse_subject(subject: &str) -> Option<(Verb, &str)> {
    let (words, lock) = subject.split_once(": ")?;
    let verb = Verb::ALL
        .into_iter()
        .chain(Verb::SHARES)
        .find(|v| v.as_str() == words)?;
    Some((verb, lock.trim()))
}

/// The line the Go resource writes after the subject, before the URL.
pub const BUILD_URL_PREFIX: &str = "Build URL: ";

/// The trailers this resource writes (`Key: value` lines after a blank line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Trailer {
    /// `Pool-Resource-Build`: `team/pipeline/job #name`, for people.
    Build,
    /// `Pool-Resource-Build-Id`: `BUILD_ID`, to recognise a re-run.
    BuildId,
    /// `Pool-Resource-Concourse`: `ATC_EXTERNAL_URL`; build ids are only
    /// unique within one installation.
    Concourse,
    /// `Pool-Resource-Nonce`: random, so that no two commits are identical.
    Nonce,
    /// `Pool-Resource-Operator`: the person who ran `pool` (`--as`).
    Operator,
    /// `Pool-Resource-Reason`: why (`--reason`, or what `reap` decided).
    Reason,
    /// `Pool-Resource-Lock`: one per lock of a commit that moves several
    /// (`claiming: A, B`). A lock name may itself contain `, `, so the
    /// subject alone cannot say which locks it lists; these lines can (a
    /// name has no newline). A subject without them names one lock.
    Lock,
    /// `Pool-Resource-Replaces`: the claim commit an expiry takeover
    /// (`source.expire_after`) replaced, on both commits of the takeover.
    Replaces,
    /// `Pool-Resource-Share`: the holder id of a shared hold, on each
    /// commit that takes or gives back a share (`claiming:` by the first
    /// reader, `sharing:`, `unsharing:`, `unclaiming:` by the last): what
    /// `in` writes to `DIR/share`.
    Share,
}

impl Trailer {
    /// The trailer's key.
    pub fn key(self) -> &'static str {
        match self {
            Trailer::Build => "Pool-Resource-Build",
            Trailer::BuildId => "Pool-Resource-Build-Id",
            Trailer::Concourse => "Pool-Resource-Concourse",
            Trailer::Nonce => "Pool-Resource-Nonce",
            Trailer::Operator => "Pool-Resource-Operator",
            Trailer::Reason => "Pool-Resource-Reason",
            Trailer::Lock => "Pool-Resource-Lock",
            Trailer::Replaces => "Pool-Resource-Replaces",
            Trailer::Share => "Pool-Resource-Share",
        }
    }
}

/// A fresh value for [`Trailer::Nonce`].
pub fn nonce() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// The trailers of a commit made by `build`: who it is and a fresh nonce.
pub fn build_trailers(build: &BuildInfo) -> Vec<(Trailer, String)> {
    let mut t = Vec::new();
    if let Some(who) = build.describe() {
        t.push((Trailer::Build, who));
    }
    if let Some(id) = build.get("BUILD_ID") {
        t.push((Trailer::BuildId, id.to_string()));
    }
    if let Some(site) = build.get("ATC_EXTERNAL_URL") {
        t.push((Trailer::Concourse, site.to_string()));
    }
    t.push((Trailer::Nonce, nonce()));
    t
}

/// The trailers of a commit made by an operator with `pool`, and a fresh nonce.
pub fn operator_trailers(operator: &str, reason: Option<&str>) -> Vec<(Trailer, String)> {
    let one_line = |s: &str| s.chars().filter(|c| !c.is_control()).collect::<String>();
    let mut t = vec![(Trailer::Operator, one_line(operator))];
    if let Some(r) = reason {
        t.push((Trailer::Reason, one_line(r)));
    }
    t.push((Trailer::Nonce, nonce()));
    t
}

/// The [`Trailer::Lock`] lines of a commit changing `locks`: none for one
/// lock, whose subject names it as the Go resource's does.
pub fn lock_trailers<'a>(
    locks: impl IntoIterator<Item = &'a crate::model::names::LockName>,
) -> Vec<(Trailer, String)> {
    let t: Vec<(Trailer, String)> = locks
        .into_iter()
        .map(|l| (Trailer::Lock, l.to_string()))
        .collect();
    if t.len() < 2 {
        Vec::new()
    } else {
        t
    }
}

/// The subject of a commit putting a hold on `pool` (not a lock verb: the
/// hold file is outside the pool, and Go-resource readers skip it).
pub fn hold_subject(pool: impl std::fmt::Display) -> String {
    format!("holding pool: {pool}")
}

/// The subject of a commit lifting the hold on `pool`.
pub fn unhold_subject(pool: impl std::fmt::Display) -> String {
    format!("unholding pool: {pool}")
}

/// The subject of an operator's commit removing `build`'s ticket from the
/// line of `pool` (`pool dequeue`; not a lock verb either). The build is
/// from the line file: anything but one line of it is dropped.
pub fn dequeue_subject(pool: impl std::fmt::Display, build: &str) -> String {
    let build: String = build.chars().filter(|c| !c.is_control()).collect();
    format!("dequeuing {build} from the line: {pool}")
}

/// A commit message: the Go resource's subject line, the build URL, and
/// trailers naming the build and a nonce that makes every commit unique.
pub fn commit_message(
    subject: &str,
    build_url: Option<&str>,
    trailers: &[(Trailer, String)],
) -> String {
    let mut msg = format!("{subject}\n");
    if let Some(url) = build_url {
        msg.push_str(&format!("\n{BUILD_URL_PREFIX}{url}\n"));
    }
    if !trailers.is_empty() {
        msg.push('\n');
        for (k, v) in trailers {
            msg.push_str(&format!("{}: {v}\n", k.key()));
        }
    }
    msg
}

/// A commit message read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed<'a> {
    message: &'a str,
}

impl<'a> Parsed<'a> {
    /// Wraps a whole commit message.
    pub fn new(message: &'a str) -> Parsed<'a> {
        Parsed { message }
    }

    /// The first line.
    pub fn subject(&self) -> &'a str {
        self.message.lines().next().unwrap_or("")
    }

    /// The verb and lock of the subject, if it is one of ours.
    pub fn verb(&self) -> Option<(Verb, &'a str)> {
        parse_subject(self.subject())
    }

    /// The verb and every lock of the commit: the [`Trailer::Lock`] lines of
    /// a commit that moved several locks, else the one lock of the subject.
    pub fn locks(&self) -> Option<(Verb, Vec<&'a str>)> {
        let (verb, lock) = self.verb()?;
        let key = Trailer::Lock.key();
        let listed: Vec<&str> = self
            .message
            .lines()
            .skip(1)
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
            .map(str::trim)
            .collect();
        Some((verb, if listed.len() < 2 { vec![lock] } else { listed }))
    }

    /// The value of the first `KEY: value` line for `key`. The subject is
    /// searched too, so that a body alone (`git log --format=%b`) reads the
    /// same; no subject begins with a trailer key.
    pub fn line_value(&self, key: &str) -> Option<&'a str> {
        self.message
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
            .map(str::trim)
    }

    /// The value of trailer `t`.
    pub fn trailer(&self, t: Trailer) -> Option<&'a str> {
        self.line_value(t.key())
    }

    /// The Go resource's (and ours) `Build URL:` line.
    pub fn build_url(&self) -> Option<&'a str> {
        self.message
            .lines()
            .find_map(|l| l.strip_prefix(BUILD_URL_PREFIX))
            .map(str::trim)
            .filter(|u| !u.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_verb_reads_back_what_it_writes() {
        for verb in Verb::ALL {
            let subject = verb.subject("env-1");
            assert_eq!(parse_subject(&subject), Some((verb, "env-1")));
        }
        assert_eq!(Verb::AddingClaimed.subject("a"), "adding claimed: a");
        assert_eq!(parse_subject("merging: a"), None);
        assert_eq!(parse_subject("claiming a"), None);
    }

    #[test]
    fn a_message_reads_back_its_url_and_trailers() {
        let msg = commit_message(
            "claiming: a",
            Some("https://ci/builds/1"),
            &[
                (Trailer::BuildId, "42".into()),
                (Trailer::Nonce, "00ff".into()),
            ],
        );
        assert_eq!(
            msg,
            "claiming: a\n\nBuild URL: https://ci/builds/1\n\nPool-Resource-Build-Id: 42\nPool-Resource-Nonce: 00ff\n"
        );
        let p = Parsed::new(&msg);
        assert_eq!(p.verb(), Some((Verb::Claiming, "a")));
        assert_eq!(p.build_url(), Some("https://ci/builds/1"));
        assert_eq!(p.trailer(Trailer::BuildId), Some("42"));
        assert_eq!(p.trailer(Trailer::Nonce), Some("00ff"));
        assert_eq!(p.trailer(Trailer::Concourse), None);
    }

    #[test]
    fn a_multi_lock_message_lists_its_locks_in_trailers_even_with_commas_in_names() {
        let names: Vec<crate::model::names::LockName> = ["a, b", "c"]
            .iter()
            .map(|n| crate::model::names::LockName::new(n).unwrap())
            .collect();
        let msg = commit_message("claiming: a, b, c", None, &lock_trailers(&names));
        assert_eq!(
            Parsed::new(&msg).locks(),
            Some((Verb::Claiming, vec!["a, b", "c"]))
        );
        // One lock: no trailer, and the subject's whole name, commas and all.
        assert!(lock_trailers(&names[..1]).is_empty());
        assert_eq!(
            Parsed::new("claiming: a, b\n").locks(),
            Some((Verb::Claiming, vec!["a, b"]))
        );
    }

    #[test]
    fn a_go_resource_message_has_a_url_and_no_trailers() {
        let p = Parsed::new("unclaiming: b\n\nBuild URL: https://ci/x\n");
        assert_eq!(p.verb(), Some((Verb::Unclaiming, "b")));
        assert_eq!(p.build_url(), Some("https://ci/x"));
        assert_eq!(p.trailer(Trailer::Build), None);
    }

    #[test]
    fn build_trailers_name_the_build_and_end_with_a_fresh_nonce() {
        let build = BuildInfo::from_env(|k| match k {
            "BUILD_ID" => Some("7".into()),
            _ => None,
        });
        let t = build_trailers(&build);
        assert_eq!(t[0], (Trailer::Build, "build 7".into()));
        assert_eq!(t[1], (Trailer::BuildId, "7".into()));
        assert_eq!(t.last().map(|(k, _)| *k), Some(Trailer::Nonce));
        assert_ne!(build_trailers(&build).last(), t.last());
    }
}
