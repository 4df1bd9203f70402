//! The status page of `pool serve` and `pool status --html`: every pool and
//! lock at a glance, and an SVG timeline of the claims, all rendered on the
//! server from a [`Board`].
//!
//! Built with maud, whose `html!` escapes every value it splices in: lock
//! names, metadata, build names and URLs come from git and may hold markup.
//! No script at all; a served page refreshes itself with a meta refresh,
//! and the Content-Security-Policy ([`content_security_policy`]) allows only
//! the page's own stylesheet (by hash), so even a missed escape could not
//! run anything. A build URL becomes a link only when it is `http(s)://`.
//!
//! Each pool shows its line of waiting puts under its locks: the live
//! tickets in the order they are served, then expired ones, greyed.

use base64::Engine;
use maud::{html, Markup, PreEscaped, DOCTYPE};
use sha2::{Digest, Sha256};

use crate::model::commit::Actor;
use crate::model::commit::Detail;
use crate::model::duration::{ago, utc};
use crate::model::message::Verb;
use crate::model::names::{LockName, LockState};
use crate::model::pool::Hold;
use crate::model::shares::Holder;
use crate::operator::ops::history::Interval;
use crate::operator::ops::status::{kind_of, waiters, LockStatus, PoolStatus, Since, Waiter};
use crate::operator::watch::{Board, Read, View};

/// The timeline's span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// The last 24 hours.
    Day,
    /// The last 7 days.
    Week,
}

impl Window {
    /// Reads the `window` query parameter; the error says what is allowed.
    pub fn parse(value: &str) -> Result<Window, String> {
        match value {
            "24h" | "1d" => Ok(Window::Day),
            "7d" | "168h" => Ok(Window::Week),
            other => Err(format!(
                "window must be 24h or 7d, not {:?}",
                other.chars().take(40).collect::<String>()
            )),
        }
    }

    /// Its length in seconds.
    pub fn seconds(self) -> i64 {
        match self {
            Window::Day => 86_400,
            Window::Week => 7 * 86_400,
        }
    }

    fn param(self) -> &'static str {
        match self {
            Window::Day => "24h",
            Window::Week => "7d",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Window::Day => "24 hours",
            Window::Week => "7 days",
        }
    }
}

/// The page's only style, inline; allowed by its hash in the CSP.
pub const CSS: &str = r#"
:root{--bg:#fafafa;--fg:#1b1b1b;--muted:#5f6368;--card:#fff;--line:#d9d9d9;--claimed:#c5221f;--free:#188038;--hold:#b06000;--holdbg:#fef7e0;--errbg:#fce8e6;color-scheme:light dark}
@media (prefers-color-scheme:dark){:root{--bg:#121212;--fg:#e8eaed;--muted:#9aa0a6;--card:#1e1e1e;--line:#3c4043;--claimed:#f28b82;--free:#81c995;--hold:#fdd663;--holdbg:#3a3000;--errbg:#4a1c1a}}
*{box-sizing:border-box}
body{margin:0 auto;max-width:80rem;padding:1rem;font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);color:var(--fg)}
h1{font-size:1.5rem;margin:0 0 .25rem}h2{font-size:1.15rem;margin:1.5rem 0 .5rem;overflow-wrap:anywhere}h3{font-size:1.05rem;margin:1rem 0 .5rem;overflow-wrap:anywhere}
a{color:inherit}
.meta,.muted{color:var(--muted);font-size:.9rem}
nav a{margin-right:.75rem}nav a[aria-current]{font-weight:700;text-decoration:none}
.error{background:var(--errbg);border-left:4px solid var(--claimed);padding:.5rem .75rem;overflow-wrap:anywhere}
.hold{background:var(--holdbg);border-left:4px solid var(--hold);padding:.5rem .75rem;overflow-wrap:anywhere}
.locks{display:grid;grid-template-columns:repeat(auto-fill,minmax(17rem,1fr));gap:.6rem}
.lock{background:var(--card);border:1px solid var(--line);border-left:6px solid var(--free);border-radius:6px;padding:.5rem .75rem;min-width:0}
.lock.claimed{border-left-color:var(--claimed)}.lock.held{border-left-color:var(--hold)}
.name{font-weight:600;overflow-wrap:anywhere;font-family:ui-monospace,SFMono-Regular,Menlo,monospace}
.state{font-weight:700;font-size:.85rem;text-transform:uppercase;letter-spacing:.03em}
.state.claimed{color:var(--claimed)}.state.unclaimed{color:var(--free)}.state.held{color:var(--hold)}
.who{overflow-wrap:anywhere}
.buildstate{font-size:.9rem;overflow-wrap:anywhere}.buildstate.dead{color:var(--claimed);font-weight:700}
details{margin-top:.25rem}summary{cursor:pointer;color:var(--muted);font-size:.9rem}
pre{white-space:pre-wrap;overflow-wrap:anywhere;font-size:.8rem;margin:.25rem 0;max-height:16rem;overflow:auto}
.tl-wrap{overflow-x:auto;background:var(--card);border:1px solid var(--line);border-radius:6px;margin-top:.6rem}
.tl{display:block;width:100%;min-width:40rem;height:auto}
.tl text{fill:var(--muted);font:12px system-ui,sans-serif}.tl .lockname{fill:var(--fg)}
.tl .grid{stroke:var(--line);stroke-width:1}.tl .row{fill:var(--bg)}
.tl .bar{stroke:var(--card);stroke-width:.5}
.line{background:var(--card);border:1px solid var(--line);border-left:6px solid var(--hold);border-radius:6px;padding:.5rem .75rem;margin-top:.6rem;overflow-wrap:anywhere}
.line h4{font-size:1rem;margin:0 0 .25rem}.line ol,.line ul{margin:0;padding-left:1.5rem}.line li{margin:.15rem 0}
.waiter.expired{color:var(--muted);text-decoration:line-through}
.holders{margin:.25rem 0 0;padding-left:1.25rem}.holder{overflow-wrap:anywhere}
.kind{font-weight:600}.kind.shared{color:var(--free)}.kind.exclusive{color:var(--claimed)}
"#;

/// The Content-Security-Policy of the page: nothing but its own style.
/// `frame-ancestors` only counts in a header (`for_header`), not in a meta tag.
pub fn content_security_policy(for_header: bool) -> String {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(CSS.as_bytes()));
    let mut csp = format!(
        "default-src 'none'; style-src 'sha256-{hash}'; img-src 'self'; base-uri 'none'; form-action 'none'"
    );
    if for_header {
        csp.push_str("; frame-ancestors 'none'");
    }
    csp
}

/// How a page is published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Served by `pool serve`: refreshes itself, links to the JSON and
    /// metrics, switches the timeline with `?window=`.
    Served,
    /// One file (`pool status --html`): both timelines, the longer one
    /// behind a click.
    Static,
}

/// The whole page at time `now`.
pub fn render(board: &Board, now: i64, window: Window, mode: Mode) -> String {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                meta name="referrer" content="no-referrer";
                @if mode == Mode::Static {
                    meta http-equiv="Content-Security-Policy" content=(content_security_policy(false));
                }
                @if let (Mode::Served, Some(secs)) = (mode, board.refresh) {
                    meta http-equiv="refresh" content=(secs.max(5));
                }
                title { "Lock pools" }
                style { (PreEscaped(CSS)) }
            }
            body {
                header {
                    h1 { "Lock pools" }
                    (freshness(board, now))
                    @if mode == Mode::Served {
                        nav {
                            "Timeline: "
                            @for w in [Window::Day, Window::Week] {
                                @if w == window {
                                    a href={ "?window=" (w.param()) } aria-current="page" { (w.label()) }
                                } @else {
                                    a href={ "?window=" (w.param()) } { (w.label()) }
                                }
                            }
                            " · "
                            a href="status.json" { "status.json" }
                            a href="history.json" { "history.json" }
                            a href="metrics" { "metrics" }
                        }
                    }
                }
                main {
                    @for view in &board.views {
                        (repository(view, now, window, mode))
                    }
                }
            }
        }
    };
    page.into_string()
}

fn freshness(board: &Board, now: i64) -> Markup {
    let read = board.views.iter().filter_map(|v| v.last_success).min();
    html! {
        p.meta {
            @match read {
                Some(t) if now - t < 1 => { "Data refreshed " (utc(t)) " (just now)" }
                Some(t) => { "Data refreshed " (utc(t)) " (" (ago(t, now)) " ago)" }
                None => { "Not read yet" }
            }
            @if let Some(secs) = board.refresh {
                ", every " (secs) "s"
            }
            ". Page made " (utc(now)) "."
        }
        @for v in board.views.iter().filter(|v| v.last_error.is_some()) {
            p.error role="alert" {
                strong { "The last refresh failed" }
                " (" (v.uri) ", branch " (v.branch) ")"
                @if let Some(t) = v.last_attempt { " at " (utc(t)) }
                ": " (v.last_error.as_deref().unwrap_or(""))
                @match v.last_success {
                    Some(t) => { ". Showing data from " (utc(t)) "." }
                    None => { ". Nothing could be read yet." }
                }
            }
        }
    }
}

fn repository(view: &View, now: i64, window: Window, mode: Mode) -> Markup {
    html! {
        section.repo {
            h2 { "Branch " (view.branch) " of " (view.uri) }
            @match &view.read {
                None => { p.muted { "Not read yet." } }
                Some(read) => {
                    @if read.status.pools.is_empty() {
                        p.muted { "No pools on this branch." }
                    }
                    @for pool in &read.status.pools {
                        (pool_section(read, pool, now, window, mode))
                    }
                }
            }
        }
    }
}

fn pool_section(read: &Read, pool: &PoolStatus, now: i64, window: Window, mode: Mode) -> Markup {
    let claimed = pool
        .locks
        .iter()
        .filter(|l| l.state == LockState::Claimed)
        .count();
    let line = waiters(&pool.line_file, now);
    let waiting = line.iter().filter(|w| !w.expired).count();
    html! {
        article.pool {
            h3 {
                "Pool " (pool.pool) " "
                span.muted {
                    "(" (claimed) " of " (pool.locks.len()) " claimed"
                    @if waiting > 0 { ", " (waiting) " waiting" }
                    ")"
                }
            }
            @if let Some(hold) = &pool.hold {
                (hold_banner(hold, now))
            }
            @if pool.locks.is_empty() {
                p.muted { "No locks." }
            }
            div.locks {
                @for lock in &pool.locks {
                    (lock_card(read, pool, lock, now))
                }
            }
            (line_card(pool, &line, now))
            @match mode {
                Mode::Served => { (timeline(read, pool, now, window)) }
                Mode::Static => {
                    (timeline(read, pool, now, Window::Day))
                    details { summary { "The last 7 days" } (timeline(read, pool, now, Window::Week)) }
                }
            }
        }
    }
}

fn hold_banner(hold: &Hold, now: i64) -> Markup {
    html! {
        p.hold role="status" {
            strong { "Held" } " by " (hold.by) " since " (utc(hold.since))
            " (for " (ago(hold.since, now)) ")"
            @if !hold.reason.is_empty() { ": " (hold.reason) }
            ". acquire and claim wait until it is unheld."
        }
    }
}

/// The pool's line: who waits, in the order they are served; nothing when
/// nobody waits (or waited: an expired ticket stays until the next write).
fn line_card(pool: &PoolStatus, line: &[Waiter], now: i64) -> Markup {
    let (live, expired): (Vec<&Waiter>, Vec<&Waiter>) = line.iter().partition(|w| !w.expired);
    html! {
        @if !line.is_empty() || pool.line_unreadable.is_some() {
            section.line aria-label={ "Line of pool " (pool.pool) } {
                h4 { "Waiting in line: " (live.len()) }
                @if let Some(why) = &pool.line_unreadable {
                    p.muted { "The line file cannot be read (" (why) "); it counts as empty until the next write replaces it." }
                }
                @if !live.is_empty() {
                    ol.waiters {
                        @for w in &live {
                            li.waiter value=(w.position.unwrap_or(0)) {
                                (waiter_build(w)) " — " (w.wants.describe())
                                ", " (kind_badge(w.shared))
                                ", priority " (w.priority)
                                ", waiting " (ago(w.arrived, now)) " (since " (w.arrived_utc) ")"
                                " " span.muted { "ticket " (w.id) }
                            }
                        }
                    }
                }
                @if !expired.is_empty() {
                    p.muted { "Expired (lease lapsed: they count for no one, and the next write of the line drops them):" }
                    ul {
                        @for w in &expired {
                            li.waiter.expired {
                                (waiter_build(w)) " — " (w.wants.describe())
                                ", " (kind_of(w.shared))
                                " " span.muted { "ticket " (w.id) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Whether a waiter wants a shared hold or an exclusive one, marked.
fn kind_badge(shared: bool) -> Markup {
    html! { span class={ "kind " (kind_of(shared)) } { (kind_of(shared)) } }
}

fn waiter_build(w: &Waiter) -> Markup {
    html! {
        @match w.url.as_deref().and_then(safe_url) {
            Some(url) => { a.build href=(url) rel="noreferrer" { (w.build) } }
            None => { (w.build) }
        }
    }
}

/// A build URL as a link target: only http(s), never `javascript:` & co.
fn safe_url(url: &str) -> Option<&str> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    (lower.starts_with("https://") || lower.starts_with("http://")).then_some(url)
}

/// Who, in a few words: the name every screen gives a holder
/// ([`Actor::name`]); the reason is shown beside it and the URL is its link.
pub fn holder_name(by: &Actor) -> String {
    by.name(Detail::Name)
}

fn actor(by: &Actor) -> Markup {
    let name = holder_name(by);
    html! {
        @match by.build_url.as_deref().and_then(safe_url) {
            Some(url) => { a.build href=(url) rel="noreferrer" { (name) } }
            None => { (name) }
        }
        @if by.operator.is_some() {
            @if let Some(r) = &by.reason { ": " (r) }
        }
    }
}

/// How a lock card names the commit that put the lock in its state.
fn made_by(verb: Verb) -> &'static str {
    match verb {
        Verb::Claiming => "Held by ",
        Verb::AddingClaimed => "Created claimed by ",
        Verb::Unclaiming => "Released by ",
        Verb::AddingUnclaimed => "Created by ",
        Verb::Updating => "Updated by ",
        Verb::Sharing | Verb::Unsharing => "Shared by ",
        // A removed lock is not on the page; the words are for completeness.
        Verb::Removing => "Removed by ",
    }
}

fn lock_card(read: &Read, pool: &PoolStatus, lock: &LockStatus, now: i64) -> Markup {
    let claimed = lock.state == LockState::Claimed;
    // A free lock of a held pool cannot be taken: acquire and claim wait.
    let held = pool.hold.as_ref().filter(|_| !claimed);
    let class = if held.is_some() {
        "held"
    } else {
        lock.state.dir()
    };
    let metadata = read
        .metadata
        .get(&(pool.pool.clone(), lock.name.to_string()));
    html! {
        div class={ "lock " (class) } {
            div.name { (lock.name) }
            div {
                span class={ "state " (class) } {
                    @if lock.shared { "● claimed, shared" } @else if claimed { "● claimed" } @else if held.is_some() { "○ free, not takeable" } @else { "○ free" }
                }
            }
            @if let Some(hold) = held {
                div.who {
                    "The pool is held by " (hold.by)
                    @if !hold.reason.is_empty() { ": " (hold.reason) }
                    "; acquire and claim wait until it is unheld."
                }
            }
            @if lock.shared {
                (shared_holders(lock, now))
            } @else {
            @match &lock.since {
                Since::Commit { time, by, verb, .. } => {
                    div.who {
                        (made_by(*verb))
                        (actor(by))
                    }
                    div.muted {
                        @if claimed { "for " } @else { "free for " }
                        (ago(*time, now)) " (since " (utc(*time)) ")"
                    }
                }
                Since::Before { time, .. } => {
                    div.muted { "since before " (utc(*time)) " (" @if claimed { "held" } @else { "free" } " for over " (ago(*time, now)) ")" }
                }
            }
            }
            @if let Some(b) = &lock.build_status {
                @if b.dead {
                    div.buildstate.dead { "Build " (b.describe(now)) }
                } @else {
                    div.buildstate { "Build " (b.describe(now)) }
                }
            }
            @if let Some(m) = metadata {
                details { summary { "metadata" } pre { (m) } }
            }
        }
    }
}

/// The holders of a lock held shared: how many since when, then each one
/// (its build, linked when http(s), since when, its share id).
fn shared_holders(lock: &LockStatus, now: i64) -> Markup {
    html! {
        div.who { "Held shared by " (lock.holders.len()) }
        div.muted {
            @match &lock.since {
                Since::Commit { time, .. } => { "for " (ago(*time, now)) " (since " (utc(*time)) ")" }
                Since::Before { time, .. } => { "since before " (utc(*time)) }
            }
        }
        ul.holders aria-label={ "Holders of " (lock.name) } {
            @for h in &lock.holders {
                li.holder {
                    (holder_build(h))
                    ", for " (ago(h.since, now)) " (since " (utc(h.since)) ")"
                    " " span.muted { "share " (h.id) }
                }
            }
        }
    }
}

fn holder_build(h: &Holder) -> Markup {
    html! {
        @match h.url.as_deref().and_then(safe_url) {
            Some(url) => { a.build href=(url) rel="noreferrer" { (h.build) } }
            None => { (h.build) }
        }
    }
}

/// A colour for `key`, the same on every page: a hue from its hash.
fn colour(key: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in key.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    format!("hsl({} 65% 48%)", h % 360)
}

/// What a holder's colour is keyed by: the job (a build name without its
/// `#N`, a build URL without its `/builds/N`), so one job keeps its colour
/// from build to build.
fn colour_key(by: &Actor) -> String {
    let name = holder_name(by);
    let cut = match &by.build {
        Some(_) => name.rfind(" #"),
        None => name.rfind("/builds/"),
    };
    match cut {
        Some(i) => name[..i].to_string(),
        None => name,
    }
}

fn short(name: &str, max: usize) -> String {
    if name.chars().count() <= max {
        name.to_string()
    } else {
        let mut s: String = name.chars().take(max - 1).collect();
        s.push('…');
        s
    }
}

const TL_WIDTH: f64 = 1000.0;
const TL_LABEL: f64 = 170.0;
const TL_ROW: f64 = 24.0;
const TL_TOP: f64 = 22.0;

fn timeline(read: &Read, pool: &PoolStatus, now: i64, window: Window) -> Markup {
    let start = now - window.seconds();
    let claims: Vec<&Interval> = read
        .history
        .iter()
        .filter(|i| i.pool == pool.pool && i.released_at.unwrap_or(now) >= start)
        .collect();
    let mut rows: Vec<LockName> = pool.locks.iter().map(|l| l.name.clone()).collect();
    for c in &claims {
        if !rows.contains(&c.lock) {
            rows.push(c.lock.clone());
        }
    }
    let span = TL_WIDTH - TL_LABEL - 10.0;
    let x = |t: i64| TL_LABEL + ((t - start).max(0) as f64 / window.seconds() as f64) * span;
    let height = TL_TOP + TL_ROW * rows.len().max(1) as f64 + 4.0;
    let (ticks, unit) = match window {
        Window::Day => (4, 6 * 3600),
        Window::Week => (7, 86_400),
    };
    html! {
        div.tl-wrap {
            svg.tl xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (TL_WIDTH) " " (height) } role="img"
                aria-label={ "Claims of pool " (pool.pool) " over the last " (window.label()) } {
                title { "Claims of pool " (pool.pool) " over the last " (window.label()) }
                @for k in 0..=ticks {
                    @let t = start + k * unit;
                    @let tx = x(t);
                    line.grid x1=(tx) x2=(tx) y1=(TL_TOP - 6.0) y2=(height - 4.0) {}
                    text x=(tx) y="13" text-anchor=(if k == 0 { "start" } else if k == ticks { "end" } else { "middle" }) {
                        @if k == ticks { "now" } @else {
                            @match window {
                                Window::Day => { ((ticks - k) * 6) "h ago" }
                                Window::Week => { (ticks - k) "d ago" }
                            }
                        }
                    }
                }
                @for (row, name) in rows.iter().enumerate() {
                    @let y = TL_TOP + TL_ROW * row as f64;
                    rect.row x=(TL_LABEL) y=(y + 3.0) width=(span) height=(TL_ROW - 6.0) {}
                    text.lockname x="4" y=(y + 16.0) { title { (name) } (short(name.as_str(), 22)) }
                    @for c in claims.iter().filter(|c| &c.lock == name) {
                        @let x0 = x(c.claimed_at);
                        @let x1 = x(c.released_at.unwrap_or(now));
                        rect.bar x=(x0) y=(y + 4.0) width=((x1 - x0).max(2.0)) height=(TL_ROW - 8.0)
                            fill=(colour(&colour_key(&c.claimed_by))) {
                            title {
                                (c.lock) ": " (holder_name(&c.claimed_by)) " for " (ago(0, c.seconds))
                                " (" (utc(c.claimed_at)) " → "
                                @match c.released_at { Some(t) => { (utc(t)) } None => { "still claimed" } }
                                ")"
                            }
                        }
                    }
                }
                @if claims.is_empty() {
                    text x=(TL_LABEL + 8.0) y=(TL_TOP + 16.0) { "no claims in the last " (window.label()) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::ops::status::Status;
    use std::collections::BTreeMap;

    fn board(name: &str, build: &str, url: &str, metadata: &str) -> Board {
        let by = Actor {
            build: Some(build.into()),
            build_url: Some(url.into()),
            author: "git <git@localhost>".into(),
            ..Actor::default()
        };
        let lock = LockStatus {
            name: LockName::new(name).unwrap(),
            state: LockState::Claimed,
            since: Since::Commit {
                commit: "c1".into(),
                time: 1000,
                utc: utc(1000),
                by: by.clone(),
                verb: Verb::Claiming,
            },
            for_seconds: 60,
            build_status: None,
            shared: false,
            holders: Vec::new(),
        };
        let status = Status {
            branch: "main".into(),
            tip: "c1".into(),
            now: 1060,
            looked_back: 1,
            pools: vec![PoolStatus {
                pool: "envs".into(),
                hold: Some(Hold {
                    by: "<b>ops</b>".into(),
                    reason: "<i>upgrade</i>".into(),
                    since: 1010,
                }),
                locks: vec![lock],
                line: Vec::new(),
                line_unreadable: None,
                line_file: crate::model::line::Line::default(),
                shares_unreadable: None,
                shares: Default::default(),
            }],
        };
        let history = vec![Interval {
            pool: "envs".into(),
            lock: LockName::new(name).unwrap(),
            claimed_commit: "c1".into(),
            claimed_at: 1000,
            claimed_by: by,
            released_commit: None,
            released_at: None,
            released_by: None,
            seconds: 60,
            build_status: None,
        }];
        let mut md = BTreeMap::new();
        md.insert(("envs".to_string(), name.to_string()), metadata.to_string());
        Board {
            refresh: Some(30),
            views: vec![View {
                uri: "git://h/locks.git".into(),
                branch: "main".into(),
                read: Some(Read {
                    status,
                    history,
                    metadata: md,
                    annotations: Default::default(),
                }),
                last_success: Some(1060),
                ..View::default()
            }],
        }
    }

    #[test]
    fn everything_from_git_is_escaped_and_a_script_url_is_no_link() {
        let page = render(
            &board(
                "<img src=x onerror=alert(1)>",
                "t/<script>p</script>/j #1",
                "javascript:alert(2)",
                "<script>alert(3)</script>",
            ),
            1060,
            Window::Day,
            Mode::Served,
        );
        for raw in ["<img", "<script", "<b>", "<i>", "href=\"javascript"] {
            assert!(!page.contains(raw), "{raw} in {page}");
        }
        assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(page.contains("&lt;script&gt;alert(3)&lt;/script&gt;"));
    }

    #[test]
    fn a_claim_is_a_bar_with_its_holder_on_hover_and_a_link_to_the_build() {
        let page = render(
            &board("qa", "main/app/deploy #7", "https://ci/builds/7", "qa\n"),
            1060,
            Window::Day,
            Mode::Served,
        );
        assert!(page.contains(r#"<a class="build" href="https://ci/builds/7""#));
        assert!(page.contains(r#"class="bar""#));
        assert!(page.contains("qa: main/app/deploy #7 for 1m0s"));
        assert!(page.contains(r#"http-equiv="refresh" content="30""#));
        assert!(page.contains("Held</strong> by &lt;b&gt;ops&lt;/b&gt;"));
    }

    #[test]
    fn a_static_page_carries_its_policy_and_both_timelines() {
        let page = render(
            &board("qa", "b #1", "https://x", ""),
            1060,
            Window::Day,
            Mode::Static,
        );
        assert!(page.contains("Content-Security-Policy"));
        assert!(!page.contains("http-equiv=\"refresh\""));
        assert!(page.contains("over the last 7 days"));
        assert!(page.contains("over the last 24 hours"));
    }

    #[test]
    fn the_line_is_on_the_pools_card_in_order_escaped_with_expired_tickets_struck() {
        let mut b = board("qa", "b #1", "https://x", "");
        let file = serde_json::json!({"tickets": [
            {"id": "t2", "build": "main/app/late #2", "url": "https://ci/builds/2",
             "wants": {"acquire": 1}, "arrived": 1000, "seq": 2, "renewed": 1050, "lease": 300},
            {"id": "t1", "build": "<script>x</script> #1", "url": "javascript:alert(1)",
             "wants": {"claim": ["qa"]}, "arrived": 990, "seq": 1, "renewed": 1050, "lease": 300},
            {"id": "t0", "build": "main/app/gone #0",
             "wants": {"acquire": 2}, "arrived": 900, "seq": 0, "renewed": 900, "lease": 10}
        ]});
        let line = crate::model::line::Line::parse(file.to_string().as_bytes());
        if let Some(read) = b.views[0].read.as_mut() {
            read.status.pools[0].line_file = line;
        }
        let page = render(&b, 1060, Window::Day, Mode::Served);
        assert!(page.contains("1 of 1 claimed, 2 waiting)"), "{page}");
        assert!(page.contains("Waiting in line: 2"), "{page}");
        let first = page
            .find("&lt;script&gt;x&lt;/script&gt; #1")
            .expect("t1 listed");
        let second = page
            .find(r#"<a class="build" href="https://ci/builds/2" rel="noreferrer">main/app/late #2</a>"#)
            .expect("t2 listed with its link");
        assert!(first < second, "served in the order they joined");
        assert!(
            page.contains("claim: qa, <span class=\"kind exclusive\">exclusive</span>, priority 0, waiting 1m10s"),
            "{page}"
        );
        assert!(!page.contains("<script>x") && !page.contains("href=\"javascript"));
        assert!(
            page.contains(r#"<li class="waiter expired">main/app/gone #0"#),
            "{page}"
        );
        // An hour later every lease has lapsed: nobody waits, all are struck.
        let later = render(&b, 4660, Window::Day, Mode::Served);
        assert!(later.contains("Waiting in line: 0"), "{later}");
        assert!(!later.contains("waiting)"), "{later}");
    }

    #[test]
    fn a_bad_window_says_what_is_allowed() {
        assert_eq!(Window::parse("7d"), Ok(Window::Week));
        let err = Window::parse("forever").unwrap_err();
        assert!(err.contains("24h or 7d"), "{err}");
    }

    #[test]
    fn a_lock_held_shared_lists_its_holders_escaped_and_the_line_marks_each_waiters_kind() {
        let mut b = board("env", "b #1", "https://x", "");
        let holder = |id: &str, build: &str, url: &str| Holder {
            id: id.into(),
            build: build.into(),
            build_id: None,
            url: Some(url.into()),
            since: 1030,
        };
        let file = serde_json::json!({"tickets": [
            {"id": "w", "build": "main/app/deploy #5", "wants": {"acquire": 1},
             "arrived": 1000, "seq": 1, "renewed": 1050, "lease": 300},
            {"id": "r", "build": "main/app/probe #6", "wants": {"acquire": 1}, "shared": true,
             "arrived": 1001, "seq": 2, "renewed": 1050, "lease": 300}
        ]});
        if let Some(read) = b.views[0].read.as_mut() {
            let pool = &mut read.status.pools[0];
            pool.locks[0].shared = true;
            pool.locks[0].holders = vec![
                holder("s1", "main/app/smoke #1", "https://ci/builds/1"),
                holder("s2", "<script>x</script> #2", "javascript:alert(1)"),
            ];
            pool.line_file = crate::model::line::Line::parse(file.to_string().as_bytes());
        }
        let page = render(&b, 1060, Window::Day, Mode::Served);
        assert!(page.contains("● claimed, shared"), "{page}");
        assert!(page.contains("Held shared by 2"), "{page}");
        assert!(
            page.contains(r#"<a class="build" href="https://ci/builds/1" rel="noreferrer">main/app/smoke #1</a>, for 30.0s"#),
            "{page}"
        );
        assert!(page.contains("share s2"), "{page}");
        assert!(!page.contains("<script>x") && !page.contains("href=\"javascript"));
        assert!(page.contains("&lt;script&gt;x&lt;/script&gt; #2"), "{page}");
        let deploy = page
            .find("main/app/deploy #5 — acquire, <span class=\"kind exclusive\">exclusive</span>");
        let probe =
            page.find("main/app/probe #6 — acquire, <span class=\"kind shared\">shared</span>");
        assert!(deploy.is_some() && probe.is_some(), "{page}");
    }
}
