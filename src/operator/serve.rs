//! `pool serve`: the status page, the JSON documents and Prometheus metrics
//! over HTTP, read-only.
//!
//! A thread refreshes the [`Board`] on the timer ([`crate::operator::watch`]); the
//! HTTP side (axum on a current-thread tokio runtime) only reads it, so a
//! request never reaches the git server. With Concourse access, another
//! thread asks about the holders' builds after each refresh (bounded,
//! in parallel, ended builds remembered) and feeds a cache the refresh
//! reads: a Concourse that hangs leaves the build statuses `unknown`, never
//! the lock state stale. Every response is `GET`/`HEAD`
//! only (anything else is 405), carries a Content-Security-Policy and goes
//! through the log's redaction; bad query parameters are a 400 that says
//! why.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::extract::{RawQuery, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::config::Source;
use crate::error::{Error, Result};
use crate::model::commit::Actor;
use crate::model::duration::parse_go_duration;
use crate::model::names::LockState;
use crate::operator::concourse::build::BuildState;
use crate::operator::concourse::client::Bounds;
use crate::operator::concourse::Builds;
use crate::operator::ops::history::Interval;
use crate::operator::ops::status::{Since, Status};
use crate::operator::page::{self, Mode, Window};
use crate::operator::watch::{self, Board, Opener, Watcher};
use crate::process::clock::now_unix;
use crate::process::log::Log;
use crate::process::signal::Interrupt;

/// How often the server looks for a termination signal.
const SIGNAL_POLL: Duration = Duration::from_millis(100);

/// What `pool serve` was asked for.
pub struct Config {
    /// `--listen`: where to listen (loopback by default).
    pub listen: SocketAddr,
    /// `--refresh`: how often each repository is looked at.
    pub refresh: Duration,
    /// The Concourse API, when configured: after each refresh a thread of
    /// its own asks it about the builds holding locks (once per build;
    /// ended builds are remembered).
    pub builds: Option<Builds>,
    /// `--grafana-url`: push every hold to Grafana as an annotation.
    pub grafana: Option<crate::operator::grafana::Config>,
}

/// What the builds are known as, by claim commit: what the lookups last
/// said, for the refresh to show on a read it has just made.
#[derive(Default)]
struct Known {
    /// The build status of each claim asked about (`None`: an operator's).
    states: HashMap<String, Option<BuildState>>,
}

/// The status of a claim Concourse has not been asked about yet.
const NOT_ANSWERED_YET: &str = "Concourse has not answered yet";

#[derive(Clone)]
struct App {
    board: Arc<RwLock<Board>>,
    log: Log,
    /// The Grafana push's counters, when it runs.
    grafana: Option<Arc<std::sync::Mutex<crate::operator::grafana::Stats>>>,
}

impl App {
    fn board(&self) -> std::sync::RwLockReadGuard<'_, Board> {
        self.board.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// Serves `sources` until SIGINT or SIGTERM; each source is opened with
/// `open` in the refresh thread.
pub fn serve(
    config: Config,
    sources: Vec<(Source, Opener)>,
    log: &Log,
    interrupt: &Interrupt,
) -> Result<()> {
    let listener = std::net::TcpListener::bind(config.listen)
        .and_then(|l| l.set_nonblocking(true).map(|_| l))
        .map_err(|e| Error::io(format!("could not listen on {}", config.listen), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("could not read the listening address", e))?;
    if !local.ip().is_loopback() {
        log.warn(format_args!(
            "listening on {local}: the page is reachable from other machines"
        ));
    }
    let board = Board {
        refresh: Some(config.refresh.as_secs().max(1)),
        views: sources.iter().map(|(s, _)| watch::View::of(s)).collect(),
    };
    let board = Arc::new(RwLock::new(board));
    let known: Option<Arc<Mutex<Known>>> = config.builds.as_ref().map(|_| Arc::default());
    let ticks = match config.builds {
        Some(mut builds) => {
            builds.set_bounds(Bounds::SERVE);
            // One round waiting at most: refreshes during a slow round
            // coalesce into the next, so running builds are asked at
            // most once per refresh.
            let (tx, rx) = mpsc::sync_channel::<()>(1);
            let (board, log, interrupt) = (board.clone(), log.clone(), interrupt.clone());
            let known = known.clone().unwrap_or_default();
            // Not joined at the end: a round waiting on a hung Concourse
            // must not hold up a SIGTERM either.
            std::thread::spawn(move || lookup_loop(builds, &board, &known, &rx, &log, &interrupt));
            Some(tx)
        }
        None => None,
    };
    let refresher = {
        let (board, log, interrupt) = (board.clone(), log.clone(), interrupt.clone());
        let refresh = config.refresh;
        std::thread::spawn(move || {
            refresh_loop(sources, &board, refresh, known, ticks, &log, &interrupt)
        })
    };
    log.line(format_args!(
        "pool serve: listening on http://{local}/ (refreshing every {}s)",
        config.refresh.as_secs().max(1)
    ));
    let grafana = config.grafana.map(|g| {
        log.line(format_args!("pool serve: pushing annotations to {}", g.url));
        crate::operator::grafana::spawn(g, board.clone(), config.refresh, log, interrupt)
    });
    let app = App {
        board,
        log: log.clone(),
        grafana,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| Error::io("could not start the HTTP runtime", e))?;
    let stop = interrupt.clone();
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        axum::serve(listener, router(app))
            .with_graceful_shutdown(async move {
                while stop.received().is_none() {
                    tokio::time::sleep(SIGNAL_POLL).await;
                }
            })
            .await
    });
    let _ = refresher.join();
    served.map_err(|e| Error::io("serving HTTP failed", e))?;
    if let Some(signal) = interrupt.received() {
        log.line(format_args!("pool serve: stopped by {signal}"));
    }
    Ok(())
}

fn refresh_loop(
    sources: Vec<(Source, Opener)>,
    board: &RwLock<Board>,
    refresh: Duration,
    known: Option<Arc<Mutex<Known>>>,
    ticks: Option<SyncSender<()>>,
    log: &Log,
    interrupt: &Interrupt,
) {
    let mut watchers: Vec<Watcher> = sources
        .into_iter()
        .map(|(s, open)| Watcher::new(s, open))
        .collect();
    loop {
        for (i, w) in watchers.iter_mut().enumerate() {
            if interrupt.received().is_some() {
                return;
            }
            let outcome = w.refresh();
            let mut b = board.write().unwrap_or_else(|e| e.into_inner());
            let view = &mut b.views[i];
            if let Some(why) = watch::record(view, outcome, &|s| log.redact(s)) {
                log.warn(format_args!(
                    "refreshing branch {} of {}: {why}",
                    view.branch, view.uri
                ));
            }
            if let Some(known) = &known {
                let known = known.lock().unwrap_or_else(|e| e.into_inner());
                show_known(view, &known);
            }
        }
        if let Some(t) = &ticks {
            // Full: a round is waiting already. Gone: the lookups ended.
            let _ = t.try_send(());
        }
        if interrupt.sleep(refresh, "serving").is_err() {
            return;
        }
    }
}

/// Gives each claimed lock of `view` the build status last learnt of its
/// claim, or `unknown` until Concourse has answered about it.
fn show_known(view: &mut watch::View, known: &Known) {
    let Some(read) = view.read.as_mut() else {
        return;
    };
    for p in read.status.pools.iter_mut() {
        for l in p.locks.iter_mut().filter(|l| l.state == LockState::Claimed) {
            if let Since::Commit { commit, by, .. } = &l.since {
                l.build_status = match known.states.get(commit) {
                    Some(state) => state.clone(),
                    None if by.operator.is_some() => None,
                    None => Some(BuildState::unknown(NOT_ANSWERED_YET)),
                };
            }
        }
    }
}

/// Runs a round of build lookups after each refresh ([`check_builds`])
/// until the refreshes stop or a signal arrives.
fn lookup_loop(
    mut builds: Builds,
    board: &RwLock<Board>,
    known: &Mutex<Known>,
    ticks: &Receiver<()>,
    log: &Log,
    interrupt: &Interrupt,
) {
    loop {
        match ticks.recv_timeout(SIGNAL_POLL) {
            Ok(()) => {}
            Err(RecvTimeoutError::Timeout) => {
                if interrupt.received().is_some() {
                    return;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if interrupt.received().is_some() {
            return;
        }
        check_builds(&mut builds, board, known, log);
    }
}

/// Asks Concourse about the build of every claimed lock on the board (once
/// per build this round; ended builds are remembered), within
/// [`Bounds::SERVE`], and writes the answers into the cache and the board.
/// Neither is locked while Concourse is asked.
fn check_builds(builds: &mut Builds, board: &RwLock<Board>, known: &Mutex<Known>, log: &Log) {
    builds.next_round();
    // (view, pool, lock, claim commit, holder)
    let mut claims: Vec<(usize, String, String, String, Actor)> = Vec::new();
    {
        let mut b = board.write().unwrap_or_else(|e| e.into_inner());
        for (i, v) in b.views.iter_mut().enumerate() {
            // Asked from now on: until Concourse answers, it is not up.
            if v.build_status_at.is_none() {
                v.build_status_at = Some(now_unix());
                v.build_status_error = Some(NOT_ANSWERED_YET.into());
            }
            let Some(read) = &v.read else { continue };
            for p in &read.status.pools {
                for l in p.locks.iter().filter(|l| l.state == LockState::Claimed) {
                    if let Since::Commit { commit, by, .. } = &l.since {
                        claims.push((
                            i,
                            p.pool.clone(),
                            l.name.to_string(),
                            commit.clone(),
                            by.clone(),
                        ));
                    }
                }
            }
        }
    }
    let holders: Vec<&Actor> = claims.iter().map(|c| &c.4).collect();
    let states = builds.states(&holders);
    let failures = builds.failures();
    for why in &failures {
        log.warn(format_args!("build status unknown: {why}"));
    }
    {
        let mut k = known.lock().unwrap_or_else(|e| e.into_inner());
        k.states = claims
            .iter()
            .zip(&states)
            .map(|(c, s)| (c.3.clone(), s.clone()))
            .collect();
    }
    let now = now_unix();
    let mut b = board.write().unwrap_or_else(|e| e.into_inner());
    for v in b.views.iter_mut() {
        v.build_status_at = Some(now);
        v.build_status_error = (!failures.is_empty()).then(|| log.redact(&failures.join("; ")));
    }
    for ((i, pool, lock, commit, _), state) in claims.into_iter().zip(states) {
        let Some(read) = b.views.get_mut(i).and_then(|v| v.read.as_mut()) else {
            continue;
        };
        for p in read.status.pools.iter_mut().filter(|p| p.pool == pool) {
            for l in p.locks.iter_mut().filter(|l| l.name.as_str() == lock) {
                // Only the claim that was asked about: the read may be newer.
                if matches!(&l.since, Since::Commit { commit: c, .. } if *c == commit) {
                    l.build_status = state.clone();
                }
            }
        }
    }
}

fn router(app: App) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/status.json", get(status_json))
        .route("/history.json", get(history_json))
        .route("/annotations.json", get(annotations_json))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .layer(middleware::from_fn(guard))
        .with_state(app)
}

/// Every response: security headers, and the log's redaction of the body.
async fn guard(request: Request, next: Next) -> Response {
    let allowed = matches!(*request.method(), Method::GET | Method::HEAD);
    let mut response = if allowed {
        next.run(request).await
    } else {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: this server is read-only (GET and HEAD)\n".into(),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        r
    };
    let headers = response.headers_mut();
    let csp = page::content_security_policy(true);
    if let Ok(v) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn bad_request(why: String) -> Response {
    text(StatusCode::BAD_REQUEST, format!("bad request: {why}\n"))
}

/// A query-string value: `+` is a space, `%XX` a byte (a malformed escape
/// stays as written), the bytes read as UTF-8 (lossily).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// The query's parameters, refusing any not in `allowed` and repeats.
pub fn parse_query(
    raw: Option<&str>,
    allowed: &[&str],
) -> std::result::Result<BTreeMap<String, String>, String> {
    let mut params = BTreeMap::new();
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (percent_decode(k), percent_decode(v));
        let shown: String = k.chars().take(40).collect();
        if !allowed.contains(&k.as_str()) {
            return Err(if allowed.is_empty() {
                format!("unknown query parameter {shown:?} (this address takes none)")
            } else {
                format!(
                    "unknown query parameter {shown:?} (this address takes {})",
                    allowed.join(", ")
                )
            });
        }
        if params.insert(k, v).is_some() {
            return Err(format!("query parameter {shown:?} is given twice"));
        }
    }
    Ok(params)
}

fn html(app: &App, body: String) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        app.log.redact(&body),
    )
        .into_response()
}

/// `value` as JSON; a document that cannot be serialised is a 500 that
/// says so, never a 200 with an empty body.
fn json(app: &App, value: &impl serde::Serialize) -> Response {
    match serde_json::to_string_pretty(value) {
        Ok(body) => (
            [(header::CONTENT_TYPE, "application/json")],
            app.log.redact(&body),
        )
            .into_response(),
        Err(e) => {
            app.log
                .warn(format_args!("could not serialise a JSON document: {e}"));
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("could not serialise the document: {e}\n"),
            )
                .into_response()
        }
    }
}

async fn index(State(app): State<App>, RawQuery(q): RawQuery) -> Response {
    let window = match parse_query(q.as_deref(), &["window"]) {
        Ok(p) => match p.get("window").map(|w| Window::parse(w)) {
            None => Window::Day,
            Some(Ok(w)) => w,
            Some(Err(why)) => return bad_request(why),
        },
        Err(why) => return bad_request(why),
    };
    let body = page::render(&app.board(), now_unix(), window, Mode::Served);
    html(&app, body)
}

/// `status` as `pool status --json` would print it now: the read's pools,
/// with the times (and the line's expiries) brought up to `now`.
fn status_now(status: &Status, now: i64) -> Status {
    status.at(now)
}

fn not_read_yet() -> Response {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "not read yet: the first refresh of every repository has not succeeded\n".into(),
    )
}

/// One document per repository: the document itself for one, a list for several.
fn one_or_many<T: serde::Serialize>(app: &App, docs: Vec<T>) -> Response {
    if docs.len() == 1 {
        json(app, &docs[0])
    } else {
        json(app, &docs)
    }
}

async fn status_json(State(app): State<App>, RawQuery(q): RawQuery) -> Response {
    if let Err(why) = parse_query(q.as_deref(), &[]) {
        return bad_request(why);
    }
    let now = now_unix();
    let docs: Option<Vec<Status>> = app
        .board()
        .views
        .iter()
        .map(|v| v.read.as_ref().map(|r| status_now(&r.status, now)))
        .collect();
    match docs {
        Some(d) => one_or_many(&app, d),
        None => not_read_yet(),
    }
}

async fn history_json(State(app): State<App>, RawQuery(q): RawQuery) -> Response {
    let since = match parse_query(q.as_deref(), &["since"]) {
        Ok(p) => match p.get("since") {
            None => 86_400,
            Some(s) => match parse_go_duration(s) {
                Ok(d) if d.as_secs() as i64 <= watch::HISTORY_KEPT => d.as_secs() as i64,
                Ok(_) => {
                    return bad_request(format!(
                        "since is at most {}h (the server keeps 7 days)",
                        watch::HISTORY_KEPT / 3600
                    ))
                }
                Err(e) => return bad_request(format!("since: {e}")),
            },
        },
        Err(why) => return bad_request(why),
    };
    let now = now_unix();
    let docs: Option<Vec<Vec<Interval>>> = app
        .board()
        .views
        .iter()
        .map(|v| {
            v.read.as_ref().map(|r| {
                r.history
                    .iter()
                    .filter(|i| i.claimed_at >= now - since)
                    .map(|i| {
                        let mut i = i.clone();
                        if i.released_at.is_none() {
                            i.seconds = (now - i.claimed_at).max(0);
                        }
                        i
                    })
                    .collect()
            })
        })
        .collect();
    match docs {
        Some(d) => one_or_many(&app, d),
        None => not_read_yet(),
    }
}

/// Lock holds as Grafana annotations ([`crate::operator::annotations`]).
async fn annotations_json(State(app): State<App>, RawQuery(q): RawQuery) -> Response {
    use crate::operator::annotations;
    let now = now_unix();
    let query = match parse_query(q.as_deref(), &["from", "to", "pool", "lock"])
        .and_then(|p| annotations::parse_query(&p, now))
    {
        Ok(q) => q,
        Err(why) => return bad_request(why),
    };
    let found = annotations::answer_board(&app.board(), &query, now);
    match found {
        Some(a) => json(&app, &a),
        None => not_read_yet(),
    }
}

async fn metrics(State(app): State<App>, RawQuery(q): RawQuery) -> Response {
    if let Err(why) = parse_query(q.as_deref(), &[]) {
        return bad_request(why);
    }
    let mut body = crate::operator::metrics::render(&app.board(), now_unix());
    if let Some(g) = &app.grafana {
        let stats = g.lock().unwrap_or_else(|e| e.into_inner()).clone();
        body.push_str(&crate::operator::grafana::render_metrics(&stats));
    }
    (
        [(header::CONTENT_TYPE, crate::operator::metrics::CONTENT_TYPE)],
        app.log.redact(&body),
    )
        .into_response()
}

async fn healthz() -> Response {
    text(StatusCode::OK, "ok\n".into())
}

async fn not_found() -> Response {
    text(
        StatusCode::NOT_FOUND,
        "not found: this server has /, /status.json, /history.json, /annotations.json, /metrics and /healthz\n".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_takes_only_the_parameters_named_once_each() {
        let p = parse_query(Some("window=7d"), &["window"]).expect("ok");
        assert_eq!(p["window"], "7d");
        let err = parse_query(Some("win%64ow=7d&x=1"), &["window"]).unwrap_err();
        assert!(
            err.contains("\"x\"") && err.contains("takes window"),
            "{err}"
        );
        let err = parse_query(Some("since=1h&since=2h"), &["since"]).unwrap_err();
        assert!(err.contains("twice"), "{err}");
        assert!(parse_query(Some("a"), &[])
            .unwrap_err()
            .contains("takes none"));
        assert_eq!(percent_decode("a%20b+c%zz%4"), "a b c%zz%4");
    }
}
