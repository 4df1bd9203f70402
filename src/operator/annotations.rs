//! Lock holds as Grafana annotations: one region per claim, from the claim
//! commit to its release, and the operator's holds of a pool and dequeues,
//! built from the history `pool serve` already keeps ([`Read`]).
//!
//! `pool serve` answers them as `/annotations.json` (what the Infinity data
//! source reads, [`crate::operator::serve`]) and, with `--grafana-url`,
//! pushes the same annotations to Grafana's HTTP API
//! ([`crate::operator::grafana`]). Nothing here reads the repository on a
//! request: the operator's commits are collected by [`crate::operator::events::operator_events`] in
//! the refresh, within the same bounded look-back as the history
//! ([`crate::operator::watch::HISTORY_KEPT`], at most
//! [`crate::store::seam::HISTORY_WALK_LIMIT`] commits), so the cost does not grow with the
//! repository's age. What lies before the look-back is said, by an
//! annotation of kind [`Kind::LookBack`], never by silence.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::commit::Actor;
use crate::model::duration::utc;
use crate::model::names::LockState;
use crate::operator::events::Event;
use crate::operator::ops::history::Interval;
use crate::operator::ops::status::Since;
use crate::operator::watch::{Board, Read};

/// The tag every annotation of this resource carries.
pub const TAG: &str = "pool-resource";
/// The prefix of the tag naming a claim's commit: what makes an annotation
/// findable again in Grafana after a restart (with its pool and lock tags).
pub const CLAIM_TAG: &str = "claim:";

/// What an annotation stands for (also its `kind:` tag).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A build's claim of a lock, until its release.
    Claim,
    /// An operator's claim of a lock (`pool claim`).
    OperatorClaim,
    /// An operator's hold of a pool.
    Hold,
    /// An operator's dequeue of a ticket: a point in time.
    Dequeue,
    /// The part of the range before the history read: nothing is known there.
    LookBack,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::Claim => "kind:claim",
            Kind::OperatorClaim => "kind:operator-claim",
            Kind::Hold => "kind:hold",
            Kind::Dequeue => "kind:dequeue",
            Kind::LookBack => "kind:look-back",
        }
    }
}

/// One annotation, as `/annotations.json` serves it: Grafana's own names
/// (`time`, `timeEnd`, `title`, `text`, `tags`) and, for the Infinity data
/// source, `tags_csv` (its `tags` column is a comma-separated string).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Annotation {
    /// What it stands for.
    pub kind: Kind,
    /// Start, Unix milliseconds (the claim's commit time).
    pub time: i64,
    /// End, Unix milliseconds: the release's commit time, or the time of
    /// the answer while the lock is still held (see `ongoing`).
    #[serde(rename = "timeEnd")]
    pub time_end: i64,
    /// Whether it has not ended yet.
    pub ongoing: bool,
    /// One line: `pool/lock: holder`.
    pub title: String,
    /// HTML for Grafana's tooltip: names escaped, a build linked when its
    /// URL is http(s).
    pub text: String,
    /// `pool-resource`, `pool:P`, `lock:L`, `kind:K`, `team:`, `pipeline:`,
    /// `job:` when known, how it ended (`forced-release`, `reap`), and
    /// `claim:COMMIT`.
    pub tags: Vec<String>,
    /// `tags` joined by commas (a comma inside a tag becomes a space).
    pub tags_csv: String,
    /// The pool (empty for [`Kind::LookBack`]).
    pub pool: String,
    /// The lock, for claims.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
    /// The commit that started it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The commit that ended it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_commit: Option<String>,
    /// Whether it started before the history read (its start is then the
    /// oldest time known, not the claim's).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub started_before_look_back: bool,
    /// The repository, for [`Kind::LookBack`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
}

impl Annotation {
    /// The tags that find this annotation again in Grafana (`claim:`, pool
    /// and lock, or kind), `None` for a [`Kind::LookBack`].
    pub fn key_tags(&self) -> Option<Vec<String>> {
        let claim = self.tags.iter().find(|t| t.starts_with(CLAIM_TAG))?;
        let mut key = vec![
            TAG.to_string(),
            claim.clone(),
            clean_tag(format!("pool:{}", self.pool)),
        ];
        if let Some(lock) = &self.lock {
            key.push(clean_tag(format!("lock:{lock}")));
        }
        Some(key)
    }
}

/// What to answer: the range and the filters of `/annotations.json`.
#[derive(Clone, Debug, Default)]
pub struct Query {
    /// Start of the range, Unix milliseconds.
    pub from: i64,
    /// End of the range, Unix milliseconds.
    pub to: i64,
    /// Only this pool's.
    pub pool: Option<String>,
    /// Only this lock's.
    pub lock: Option<String>,
}

/// Escapes text for HTML (element content and double-quoted attributes).
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An http(s) URL, else `None` (never `javascript:` & co.).
fn safe_url(url: &str) -> Option<&str> {
    let lower = url.to_ascii_lowercase();
    (lower.starts_with("https://") || lower.starts_with("http://")).then_some(url)
}

/// Team, pipeline and job of a build: from `team/pipeline/job #name`, else
/// from a Concourse build URL (`/teams/T/pipelines/P/jobs/J/builds/N`, what
/// the Go resource records).
fn build_parts(by: &Actor) -> Option<(String, String, String)> {
    if let Some(b) = &by.build {
        let path = b.rsplit_once(" #").map(|(p, _)| p).unwrap_or(b);
        let parts: Vec<&str> = path.splitn(3, '/').collect();
        if let [t, p, j] = parts[..] {
            return Some((t.to_string(), p.to_string(), j.to_string()));
        }
    }
    let url = by.build_url.as_deref()?;
    let segs: Vec<&str> = url.split('/').collect();
    let after = |key: &str| {
        segs.iter()
            .position(|s| *s == key)
            .and_then(|i| segs.get(i + 1))
            .map(|s| s.to_string())
    };
    Some((after("teams")?, after("pipelines")?, after("jobs")?))
}

/// A tag's text as Grafana keeps it, so that the tag shown here is the tag
/// Grafana stores and finds: no commas (Infinity splits its `tags` column
/// on them), and at most one colon, with no spaces around it (Grafana's
/// `tag.ParseTagPairs` splits a tag at every colon, keeps the first two
/// parts trimmed as key and value, and drops the rest: `claim:before:C`
/// would be stored, and found, as `claim:before`). Empty for a tag Grafana
/// drops (no key).
fn clean_tag(s: String) -> String {
    let s = s.replace(',', " ");
    let Some((k, v)) = s.split_once(':') else {
        return s.trim().to_string();
    };
    let (k, v) = (k.trim(), v.replace(':', "-"));
    match (k, v.trim()) {
        ("", _) => String::new(),
        (k, "") => k.to_string(),
        (k, v) => format!("{k}:{v}"),
    }
}

/// The holder as HTML: the name, linked when the build's URL is http(s),
/// and an operator's reason.
fn holder_html(by: &Actor) -> String {
    let name = by.name(crate::model::commit::Detail::Name);
    if name.is_empty() {
        return "a holder unknown (claimed before the history read)".into();
    }
    let name = escape_html(&name);
    let named = match by.build_url.as_deref().and_then(safe_url) {
        Some(url) if by.operator.is_none() => {
            format!("<a href=\"{}\">{name}</a>", escape_html(url))
        }
        _ => name,
    };
    match (&by.operator, &by.reason) {
        (Some(_), Some(r)) => format!("{named} (operator: {})", escape_html(r)),
        (Some(_), None) => format!("{named} (operator)"),
        _ => named,
    }
}

fn who_tags(by: &Actor, tags: &mut Vec<String>) {
    if let Some((team, pipeline, job)) = build_parts(by) {
        tags.push(format!("team:{team}"));
        tags.push(format!("pipeline:{pipeline}"));
        tags.push(format!("job:{job}"));
    }
    if let Some(op) = &by.operator {
        tags.push(format!("operator:{op}"));
    }
}

/// How a release ended a hold, as a tag: an operator's forced release or a
/// reap (its reason says `reaped:`), `None` for a build's own release.
fn ending_tag(released_by: Option<&Actor>) -> Option<&'static str> {
    let by = released_by?;
    by.operator.as_ref()?;
    if by.reason.as_deref().is_some_and(|r| r.contains("reaped:")) {
        Some("reap")
    } else {
        Some("forced-release")
    }
}

fn finish(mut a: Annotation, extra_tags: &[String]) -> Annotation {
    a.tags.extend(extra_tags.iter().cloned());
    a.tags = a.tags.into_iter().map(clean_tag).collect();
    let mut seen = std::collections::BTreeSet::new();
    a.tags.retain(|t| !t.is_empty() && seen.insert(t.clone()));
    a.tags_csv = a.tags.join(",");
    a
}

fn claim_annotation(i: &Interval, now: i64, before: bool) -> Annotation {
    let kind = if i.claimed_by.operator.is_some() {
        Kind::OperatorClaim
    } else {
        Kind::Claim
    };
    let mut tags = vec![
        TAG.to_string(),
        kind.tag().to_string(),
        format!("pool:{}", i.pool),
        format!("lock:{}", i.lock),
    ];
    who_tags(&i.claimed_by, &mut tags);
    let ending = ending_tag(i.released_by.as_ref());
    if let Some(t) = ending {
        tags.push(t.to_string());
    }
    tags.push(format!("{CLAIM_TAG}{}", i.claimed_commit));
    let holder = holder_html(&i.claimed_by);
    let mut text = format!(
        "{holder} held lock <b>{}</b> of pool <b>{}</b>",
        escape_html(i.lock.as_str()),
        escape_html(&i.pool)
    );
    if before {
        text.push_str(&format!(
            " (claimed at or before {}, before the history read)",
            utc(i.claimed_at)
        ));
    }
    match (&i.released_by, ending) {
        (Some(by), Some(how)) => text.push_str(&format!(
            "; {} by {}",
            if how == "reap" { "reaped" } else { "released" },
            holder_html(by)
        )),
        (None, _) => text.push_str(" (still held)"),
        _ => {}
    }
    let end = i.released_at.unwrap_or(now);
    Annotation {
        kind,
        time: i.claimed_at * 1000,
        time_end: end.max(i.claimed_at) * 1000,
        ongoing: i.released_at.is_none(),
        title: format!("{}/{}: {}", i.pool, i.lock, {
            let name = i.claimed_by.name(crate::model::commit::Detail::Name);
            if name.is_empty() {
                "a holder unknown".to_string()
            } else {
                name
            }
        }),
        text,
        tags,
        tags_csv: String::new(),
        pool: i.pool.clone(),
        lock: Some(i.lock.to_string()),
        commit: Some(i.claimed_commit.clone()),
        end_commit: i.released_commit.clone(),
        started_before_look_back: before,
        repository: None,
    }
}

/// One share of a lock held shared: a claim of its own, tagged `shared`
/// and `share:ID`, found again by its holder id (stable whether its start
/// is in the history read or not). `start` is its commit and time (`None`
/// for the commit when it lies before the history read).
fn share_annotation(e: &Event, read_from: i64, now: i64) -> Option<Annotation> {
    let (pool, lock, id, commit, at, by, ended) = match e {
        Event::Share {
            pool,
            lock,
            id,
            commit,
            at,
            by,
            ended,
        } => (
            pool.clone(),
            lock.clone(),
            id.clone(),
            commit.clone(),
            *at,
            by.clone(),
            ended.as_deref().cloned(),
        ),
        _ => return None,
    };
    let end = ended.as_ref().map_or(now, |e| e.1);
    let i = Interval {
        pool,
        lock: crate::model::names::LockName::new(&lock).ok()?,
        claimed_commit: commit.clone().unwrap_or_default(),
        claimed_at: at,
        claimed_by: by,
        released_commit: ended.as_ref().map(|e| e.0.clone()),
        released_at: ended.as_ref().map(|e| e.1),
        released_by: ended.map(|e| e.2),
        seconds: (end - at).max(0),
        build_status: None,
    };
    let mut a = claim_annotation(&i, now, commit.is_none() && at <= read_from);
    a.tags.retain(|t| !t.starts_with(CLAIM_TAG));
    a.tags.push("shared".into());
    a.tags.push(format!("share:{id}"));
    a.tags.push(format!("{CLAIM_TAG}share-{id}"));
    a.text = a.text.replacen(" held lock ", " held a share of lock ", 1);
    a.title.push_str(" (shared)");
    a.commit = commit;
    Some(a)
}

/// A share still held whose start the history read did not see: from the
/// pool's shares file (its holder's own `since`).
fn held_share(pool: &str, lock: &str, h: &crate::model::shares::Holder) -> Event {
    Event::Share {
        pool: pool.to_string(),
        lock: lock.to_string(),
        id: h.id.clone(),
        commit: None,
        at: h.since,
        by: Actor {
            build: Some(h.build.clone()),
            build_id: h.build_id.clone(),
            build_url: h.url.clone(),
            ..Actor::default()
        },
        ended: None,
    }
}

fn event_annotation(e: &Event, now: i64) -> Annotation {
    let (kind, pool, commit, at, by, end) = match e {
        Event::Hold {
            pool,
            commit,
            at,
            by,
            ended,
        } => (Kind::Hold, pool, commit, *at, by, ended.unwrap_or(now)),
        // Shares are answered by `share_annotation`; this names one alone.
        Event::Share {
            pool, id, at, by, ..
        } => (Kind::Claim, pool, id, *at, by, *at),
        Event::Dequeue {
            pool,
            commit,
            at,
            by,
            ..
        }
        | Event::Release {
            pool,
            commit,
            at,
            by,
            ..
        } => (Kind::Dequeue, pool, commit, *at, by, *at),
    };
    let mut tags = vec![
        TAG.to_string(),
        kind.tag().to_string(),
        format!("pool:{pool}"),
    ];
    who_tags(by, &mut tags);
    tags.push(format!("{CLAIM_TAG}{commit}"));
    let (title, text) = match e {
        Event::Hold { .. } => (
            format!(
                "{pool}: held by {}",
                by.name(crate::model::commit::Detail::Name)
            ),
            format!(
                "pool <b>{}</b> held by {}",
                escape_html(pool),
                holder_html(by)
            ),
        ),
        Event::Release { .. } | Event::Dequeue { .. } | Event::Share { .. } => {
            let build = match e {
                Event::Dequeue { build, .. } => build.as_str(),
                _ => "",
            };
            (
                format!("{pool}: dequeued {build}"),
                format!(
                    "{} took <b>{}</b> out of the line of pool <b>{}</b>",
                    holder_html(by),
                    escape_html(build),
                    escape_html(pool)
                ),
            )
        }
    };
    Annotation {
        kind,
        time: at * 1000,
        time_end: end.max(at) * 1000,
        ongoing: matches!(e, Event::Hold { ended: None, .. }),
        title,
        text,
        tags,
        tags_csv: String::new(),
        pool: pool.clone(),
        lock: None,
        commit: Some(commit.clone()),
        end_commit: None,
        started_before_look_back: false,
        repository: None,
    }
}

/// Every annotation of one read, unfiltered: its claims (with those still
/// held whose claim is older than the history read, from the status), and
/// its operator events (with a hold older than the history, from the
/// status). `now` is the time of the answer, Unix seconds.
pub fn all(read: &Read, now: i64, extra_tags: &[String]) -> Vec<Annotation> {
    // A lock held shared is one claim in the history (first share to last
    // release) but a hold per share: each share is answered on its own.
    let mut starts = std::collections::BTreeSet::new();
    let mut ends = std::collections::BTreeSet::new();
    let mut held_shares = std::collections::BTreeSet::new();
    for e in &read.annotations.events {
        if let Event::Share {
            pool,
            lock,
            id,
            commit,
            ended,
            ..
        } = e
        {
            starts.extend(commit.as_deref());
            match ended {
                Some(end) => ends.insert(end.0.as_str()),
                None => held_shares.insert((pool.as_str(), lock.as_str(), id.as_str())),
            };
        }
    }
    let mut out: Vec<Annotation> = read
        .history
        .iter()
        .filter(|i| !starts.contains(i.claimed_commit.as_str()))
        .map(|i| claim_annotation(i, now, false))
        .collect();
    let open: std::collections::BTreeSet<(&str, &str)> = read
        .history
        .iter()
        .filter(|i| i.released_at.is_none())
        .map(|i| (i.pool.as_str(), i.lock.as_str()))
        .collect();
    for p in &read.status.pools {
        for l in p.locks.iter().filter(|l| l.state == LockState::Claimed) {
            if l.shared {
                for h in &l.holders {
                    if !held_shares.contains(&(p.pool.as_str(), l.name.as_str(), h.id.as_str())) {
                        let e = held_share(&p.pool, l.name.as_str(), h);
                        out.extend(share_annotation(&e, read.annotations.read_from, now));
                    }
                }
                continue;
            }
            if open.contains(&(p.pool.as_str(), l.name.as_str())) {
                continue;
            }
            // Claimed before the history read: the status knows the claim
            // (within its own look-back) or only a bound.
            let (commit, at, by, before) = match &l.since {
                Since::Commit {
                    commit, time, by, ..
                } => (
                    commit.clone(),
                    *time,
                    by.clone(),
                    *time < read.annotations.read_from,
                ),
                Since::Before { time, .. } => {
                    (format!("before-{time}"), *time, Actor::default(), true)
                }
            };
            let i = Interval {
                pool: p.pool.clone(),
                lock: l.name.clone(),
                claimed_commit: commit,
                claimed_at: at,
                claimed_by: by,
                released_commit: None,
                released_at: None,
                released_by: None,
                seconds: (now - at).max(0),
                build_status: None,
            };
            out.push(claim_annotation(&i, now, before));
        }
    }
    // Releases whose claim lies before the history read: a hold from the
    // start of what was read.
    let released: std::collections::BTreeSet<&str> = read
        .history
        .iter()
        .filter_map(|i| i.released_commit.as_deref())
        .collect();
    for e in &read.annotations.events {
        match e {
            Event::Release {
                pool,
                lock,
                commit,
                at,
                by,
            } => {
                if released.contains(commit.as_str()) || ends.contains(commit.as_str()) {
                    continue;
                }
                let Ok(lock) = crate::model::names::LockName::new(lock) else {
                    continue;
                };
                let from = read.annotations.read_from.min(*at);
                let i = Interval {
                    pool: pool.clone(),
                    lock,
                    // Stable across reads (the look-back moves): named by
                    // the release, which is in the history.
                    claimed_commit: format!("before-{commit}"),
                    claimed_at: from,
                    claimed_by: Actor::default(),
                    released_commit: Some(commit.clone()),
                    released_at: Some(*at),
                    released_by: Some(by.clone()),
                    seconds: at - from,
                    build_status: None,
                };
                out.push(claim_annotation(&i, now, true));
            }
            Event::Share { .. } => {
                out.extend(share_annotation(e, read.annotations.read_from, now));
            }
            _ => out.push(event_annotation(e, now)),
        }
    }
    let held: std::collections::BTreeSet<&str> = read
        .annotations
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Hold {
                pool, ended: None, ..
            } => Some(pool.as_str()),
            _ => None,
        })
        .collect();
    for p in &read.status.pools {
        let Some(h) = &p.hold else { continue };
        if held.contains(p.pool.as_str()) {
            continue;
        }
        let by = Actor {
            operator: Some(h.by.clone()),
            reason: Some(h.reason.clone()),
            ..Actor::default()
        };
        let mut a = event_annotation(
            &Event::Hold {
                pool: p.pool.clone(),
                commit: format!("hold-{}", h.since),
                at: h.since,
                by,
                ended: None,
            },
            now,
        );
        a.started_before_look_back = h.since < read.annotations.read_from;
        a.commit = None;
        out.push(a);
    }
    out.into_iter().map(|a| finish(a, extra_tags)).collect()
}

/// The answer of `/annotations.json` for one repository: the annotations
/// overlapping the range and passing the filters, oldest first, after a
/// [`Kind::LookBack`] annotation covering the part of the range before the
/// history read.
pub fn answer(read: &Read, repository: &str, q: &Query, now: i64) -> Vec<Annotation> {
    let mut out = Vec::new();
    let read_from_ms = read.annotations.read_from * 1000;
    if q.from < read_from_ms && !read.annotations.complete {
        let tags = vec![TAG.to_string(), Kind::LookBack.tag().to_string()];
        out.push(finish(
            Annotation {
                kind: Kind::LookBack,
                time: q.from,
                time_end: read_from_ms.min(q.to),
                ongoing: false,
                title: format!("pool-resource: no history read before {}", utc(read.annotations.read_from)),
                text: format!(
                    "pool serve reads the history of {} from {} on: holds before that are not shown",
                    escape_html(repository),
                    utc(read.annotations.read_from)
                ),
                tags,
                tags_csv: String::new(),
                pool: String::new(),
                lock: None,
                commit: None,
                end_commit: None,
                started_before_look_back: false,
                repository: Some(repository.to_string()),
            },
            &[],
        ));
    }
    let mut found: Vec<Annotation> = all(read, now, &[])
        .into_iter()
        .filter(|a| a.time <= q.to && a.time_end >= q.from)
        .filter(|a| q.pool.as_deref().is_none_or(|p| a.pool == p))
        .filter(|a| {
            q.lock
                .as_deref()
                .is_none_or(|l| a.lock.as_deref() == Some(l))
        })
        .collect();
    found.sort_by(|a, b| (a.time, &a.pool, &a.lock).cmp(&(b.time, &b.pool, &b.lock)));
    out.extend(found);
    out
}

/// The range when `from` or `to` is missing: the six hours up to now
/// (Grafana's default dashboard range).
pub const DEFAULT_RANGE_MS: i64 = 6 * 3600 * 1000;

/// The query of `/annotations.json` (`from`, `to` in epoch milliseconds as
/// Grafana's `${__from}` and `${__to}` give them; `pool`, `lock`), or why
/// it is refused. `now` is Unix seconds.
pub fn parse_query(
    params: &BTreeMap<String, String>,
    now: i64,
) -> std::result::Result<Query, String> {
    let ms = |k: &str| -> std::result::Result<Option<i64>, String> {
        match params.get(k).map(|v| v.trim()) {
            None | Some("") => Ok(None),
            Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
                let shown: String = v.chars().take(40).collect();
                format!("{k} is epoch milliseconds (Grafana's ${{__{k}}}), not {shown:?}")
            }),
        }
    };
    let to = ms("to")?.unwrap_or(now * 1000);
    let from = ms("from")?.unwrap_or(to - DEFAULT_RANGE_MS);
    if from > to {
        return Err(format!("from ({from}) is after to ({to})"));
    }
    let given = |k: &str| params.get(k).filter(|v| !v.is_empty()).cloned();
    Ok(Query {
        from,
        to,
        pool: given("pool"),
        lock: given("lock"),
    })
}

/// The answer for every repository of `board`, one array (`None` before
/// every repository was read once).
pub fn answer_board(board: &Board, q: &Query, now: i64) -> Option<Vec<Annotation>> {
    let mut out = Vec::new();
    for v in &board.views {
        out.extend(answer(v.read.as_ref()?, &v.uri, q, now));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::events::{operator_subject, Op};

    /// Grafana's `tag.ParseTagPairs` then `tag.JoinTagPairs`: what it
    /// stores of a tag (`None`: dropped).
    fn as_grafana_stores(t: &str) -> Option<String> {
        let (k, v) = match t.contains(':') {
            true => {
                let mut parts = t.split(':');
                let k = parts.next().unwrap_or_default().trim_matches(' ');
                (k, parts.next().unwrap_or_default().trim_matches(' '))
            }
            false => (t.trim_matches(' '), ""),
        };
        match (k, v) {
            ("", _) => None,
            (k, "") => Some(k.to_string()),
            (k, v) => Some(format!("{k}:{v}")),
        }
    }

    #[test]
    fn a_tag_is_shown_as_grafana_stores_and_finds_it() {
        for t in [
            "claim:before:0123abcd",
            "env: prod ",
            "a:b:c:d",
            "pipeline:app/branch:main",
            "plain",
            " spaced ",
            "claim:",
            ":orphan",
            "x,y:z",
        ] {
            let shown = clean_tag(t.to_string());
            assert_eq!(
                as_grafana_stores(&shown).unwrap_or_default(),
                shown,
                "{t:?} is shown as {shown:?}"
            );
            assert!(!shown.contains(','), "{shown:?}");
        }
        assert_eq!(clean_tag("claim:before:0123".into()), "claim:before-0123");
        assert_eq!(clean_tag("env: prod ".into()), "env:prod");
    }

    #[test]
    fn an_operator_subject_names_what_it_did_and_the_pool() {
        assert_eq!(
            operator_subject("holding pool: envs\n\nPool-Resource-Operator: ops"),
            Some((Op::Hold, "envs".into(), String::new()))
        );
        assert_eq!(
            operator_subject("unholding pool: a/b"),
            Some((Op::Unhold, "a/b".into(), String::new()))
        );
        assert_eq!(
            operator_subject("dequeuing main/app/j #3 from the line: envs"),
            Some((Op::Dequeue, "envs".into(), "main/app/j #3".into()))
        );
        assert_eq!(operator_subject("claiming: a"), None);
    }

    #[test]
    fn a_build_is_split_into_team_pipeline_and_job_from_its_name_or_url() {
        let a = Actor {
            build: Some("main/app/deploy #7".into()),
            ..Actor::default()
        };
        assert_eq!(
            build_parts(&a),
            Some(("main".into(), "app".into(), "deploy".into()))
        );
        let go = Actor {
            build_url: Some("https://ci/teams/t/pipelines/p/jobs/j/builds/3".into()),
            ..Actor::default()
        };
        assert_eq!(build_parts(&go), Some(("t".into(), "p".into(), "j".into())));
        assert_eq!(build_parts(&Actor::default()), None);
    }

    #[test]
    fn a_holder_is_escaped_and_linked_only_over_http() {
        let a = Actor {
            build: Some("<b>x</b>".into()),
            build_url: Some("javascript:alert(1)".into()),
            ..Actor::default()
        };
        assert_eq!(holder_html(&a), "&lt;b&gt;x&lt;/b&gt;");
        let b = Actor {
            build: Some("m/p/j #1".into()),
            build_url: Some("https://ci/b?a=1&b=\"2\"".into()),
            ..Actor::default()
        };
        assert_eq!(
            holder_html(&b),
            "<a href=\"https://ci/b?a=1&amp;b=&quot;2&quot;\">m/p/j #1</a>"
        );
    }
}
