//! A Grafana annotations API stand-in: the routes `pool serve
//! --grafana-url` uses, answering as Grafana's `pkg/api/annotations.go`
//! and its SQL store (`pkg/services/annotations/annotationsimpl/xorm_store.go`)
//! do, with the JSON of `pkg/api/dtos/annotations.go` and the `ItemDTO` of
//! `pkg/services/annotations/models.go`:
//!
//! - `POST /api/annotations` (`PostAnnotationsCmd`: `dashboardUID`,
//!   `panelId`, `time`, `timeEnd`, `tags`, `text`): `{"message": "Annotation
//!   added", "id": N}`; 400 without `text`; `time` 0 is now; without
//!   `timeEnd` a point (`timeEnd` = `time`), an end before the start swapped;
//!   an unknown `dashboardUID` ignored (an organization annotation, whose
//!   `dashboardUID` is `null`).
//! - Tags are stored as Grafana does (`tag.ParseTagPairs`): split at every
//!   colon, key and value (the first two parts) trimmed, the rest dropped,
//!   repeats dropped; a search matches key and value the same way.
//! - `PATCH /api/annotations/:id` (`PatchAnnotationsCmd`): only what is
//!   given changes (tags when present, text when not empty, `time` and
//!   `timeEnd` when above 0), so the tags stay; `{"message": "Annotation
//!   patched"}`, 404 `Annotation not found` for an unknown id.
//! - `GET /api/annotations?from=&to=&tags=A&tags=B&matchAny=&type=&limit=&dashboardUID=`:
//!   `ItemDTO`s carrying every tag (any with `matchAny=true`), overlapping
//!   `from`..`to` when both are given, newest end first, at most `limit`
//!   (100 by default); 400 for an unknown `dashboardUID`.
//! - `DELETE /api/annotations/:id`: `{"message": "Annotation deleted"}`,
//!   404 for an unknown id.
//!
//! Every route answers 401 `{"message": "invalid API key"}` unless the
//! `Authorization` header is `Bearer TOKEN`. It can also answer 5xx for a
//! while, or never answer at all.

use std::io::{self, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::net::{read_body, read_head, Server};

/// One request as the stand-in saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// `GET`, `POST`, `PATCH`, `DELETE`.
    pub method: String,
    /// Path and query.
    pub target: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The body.
    pub body: String,
    /// The status answered (0: never answered).
    pub status: u16,
}

impl Seen {
    /// `METHOD target status`, for assertions and the report.
    pub fn line(&self) -> String {
        format!("{} {} {}", self.method, self.target, self.status)
    }
}

#[derive(Default)]
struct State {
    token: String,
    annotations: Mutex<Vec<Value>>,
    /// The UIDs of the dashboards it has.
    dashboards: Mutex<Vec<String>>,
    next_id: AtomicUsize,
    /// Answer this many requests with 503.
    failing: AtomicUsize,
    /// Never answer (hold the connection) while set.
    hanging: AtomicBool,
    seen: Mutex<Vec<Seen>>,
}

/// A running stand-in on 127.0.0.1; dropping it stops it.
pub struct Grafana {
    server: Server,
    state: Arc<State>,
}

impl Grafana {
    /// A Grafana accepting the service account token `token`.
    pub fn start(token: &str) -> Grafana {
        let state = Arc::new(State {
            token: token.into(),
            next_id: AtomicUsize::new(1),
            ..State::default()
        });
        let server = {
            let state = Arc::clone(&state);
            Server::start(move |stream, _| {
                let _ = serve(stream, &state);
            })
        };
        Grafana { server, state }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port())
    }

    /// Adds a dashboard (by UID) annotations can be put on.
    pub fn add_dashboard(&self, uid: &str) {
        self.state
            .dashboards
            .lock()
            .expect("dashboards")
            .push(uid.into());
    }

    /// Answers the next `n` requests with 503.
    pub fn fail_next(&self, n: usize) {
        self.state.failing.store(n, Ordering::SeqCst);
    }

    /// While `on`, reads requests and never answers them.
    pub fn hang(&self, on: bool) {
        self.state.hanging.store(on, Ordering::SeqCst);
    }

    /// Every request, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("seen lock").clone()
    }

    /// The annotations stored, by id.
    pub fn annotations(&self) -> Vec<Value> {
        self.state.annotations.lock().expect("lock").clone()
    }

    /// Waits (bounded) until the stored annotations satisfy `ok`.
    pub fn wait_for(&self, what: &str, ok: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let a = self.annotations();
            if ok(&a) {
                return a;
            }
            assert!(
                Instant::now() < deadline,
                "Grafana never had {what}: {a:#?}\nrequests: {:#?}",
                self.seen().iter().map(Seen::line).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (bounded) until a request satisfies `ok`.
    pub fn wait_for_request(&self, what: &str, ok: impl Fn(&Seen) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.seen().iter().any(&ok) {
            assert!(
                Instant::now() < deadline,
                "Grafana never saw {what}: {:#?}",
                self.seen().iter().map(Seen::line).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn serve(stream: TcpStream, state: &State) -> io::Result<()> {
    let mut conn = BufReader::new(stream);
    while let Some(head) = read_head(&mut conn)? {
        let body = read_body(&mut conn, &head)?;
        let body = String::from_utf8_lossy(&body).into_owned();
        let authorization = head.header("authorization").map(String::from);
        let mut seen = Seen {
            method: head.method.clone(),
            target: head.target.clone(),
            authorization: authorization.clone(),
            body: body.clone(),
            status: 0,
        };
        if state.hanging.load(Ordering::SeqCst) {
            state.seen.lock().expect("seen lock").push(seen);
            // Never answer: hold the connection until the client gives up.
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            return Ok(());
        }
        let (status, answer) = if state
            .failing
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            (503, json!({"message": "database is locked"}))
        } else if authorization.as_deref() != Some(&format!("Bearer {}", state.token)) {
            (401, json!({"message": "invalid API key"}))
        } else {
            respond(&head.method, &head.target, &body, state)
        };
        seen.status = status;
        state.seen.lock().expect("seen lock").push(seen);
        let answer = answer.to_string();
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            _ => "Service Unavailable",
        };
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n{answer}",
            answer.len(),
            if head.keep_alive() { "" } else { "Connection: close\r\n" }
        );
        conn.get_mut().write_all(response.as_bytes())?;
        conn.get_mut().flush()?;
        if !head.keep_alive() {
            break;
        }
    }
    Ok(())
}

fn query_values(query: &str, key: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

/// Grafana's `tag.ParseTagPairs`: a tag is split at every colon, the first
/// two parts trimmed of spaces are its key and value, the rest is dropped;
/// a tag without a key is dropped, a repeated one kept once.
fn tag_pairs(tags: &[String]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for t in tags {
        let mut parts = t.split(':');
        let key = parts
            .next()
            .unwrap_or_default()
            .trim_matches(' ')
            .to_string();
        let value = parts
            .next()
            .unwrap_or_default()
            .trim_matches(' ')
            .to_string();
        if !key.is_empty() && !out.contains(&(key.clone(), value.clone())) {
            out.push((key, value));
        }
    }
    out
}

/// Grafana's `tag.JoinTagPairs`: what it stores and answers.
fn join_pairs(pairs: &[(String, String)]) -> Value {
    pairs
        .iter()
        .map(|(k, v)| match v.as_str() {
            "" => Value::String(k.clone()),
            v => Value::String(format!("{k}:{v}")),
        })
        .collect()
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array().map(|a| {
        a.iter()
            .filter_map(|t| t.as_str().map(String::from))
            .collect()
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Grafana's `validateTimeRange`: an end of 0 is the start (a point), an
/// end before the start swaps them.
fn time_range(time: i64, end: i64) -> (i64, i64) {
    let end = if end == 0 { time } else { end };
    let time = if time == 0 { end } else { time };
    (time.min(end), time.max(end))
}

fn not_found() -> (u16, Value) {
    (404, json!({"message": "Annotation not found"}))
}

fn respond(method: &str, target: &str, body: &str, state: &State) -> (u16, Value) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let id: Option<i64> = path
        .strip_prefix("/api/annotations/")
        .and_then(|i| i.parse().ok());
    let mut all = state.annotations.lock().expect("lock");
    let dashboards = state.dashboards.lock().expect("dashboards").clone();
    match (method, path, id) {
        ("POST", "/api/annotations", _) => {
            let Ok(cmd) = serde_json::from_str::<Value>(body) else {
                return (400, json!({"message": "bad request data"}));
            };
            if cmd["text"].as_str().unwrap_or_default().is_empty() {
                return (400, json!({"message": "Failed to save annotation"}));
            }
            // An unknown dashboardUID is ignored: an organization annotation.
            let dashboard = cmd["dashboardUID"]
                .as_str()
                .filter(|d| dashboards.iter().any(|k| k == d));
            let id = state.next_id.fetch_add(1, Ordering::SeqCst) as i64;
            let time = cmd["time"]
                .as_i64()
                .filter(|t| *t > 0)
                .unwrap_or_else(now_ms);
            let (time, end) = time_range(time, cmd["timeEnd"].as_i64().unwrap_or(0));
            let tags = join_pairs(&tag_pairs(&strings(&cmd["tags"]).unwrap_or_default()));
            all.push(json!({
                "id": id, "alertId": 0, "alertName": "",
                "dashboardId": if dashboard.is_some() { 1 } else { 0 },
                "dashboardUID": dashboard,
                "panelId": cmd["panelId"].as_i64().unwrap_or(0), "userId": 1,
                "newState": "", "prevState": "",
                "created": now_ms(), "updated": now_ms(), "time": time, "timeEnd": end,
                "text": cmd["text"], "tags": tags, "login": "sa-pool",
                "email": "", "avatarUrl": "", "data": {}
            }));
            (200, json!({"message": "Annotation added", "id": id}))
        }
        ("PATCH", _, Some(id)) => {
            let Ok(cmd) = serde_json::from_str::<Value>(body) else {
                return (400, json!({"message": "bad request data"}));
            };
            let Some(a) = all.iter_mut().find(|a| a["id"] == id) else {
                return not_found();
            };
            // Only what is given changes: tags when present, text when not
            // empty, time and timeEnd when above 0.
            if let Some(tags) = strings(&cmd["tags"]) {
                a["tags"] = join_pairs(&tag_pairs(&tags));
            }
            if let Some(text) = cmd["text"].as_str().filter(|t| !t.is_empty()) {
                a["text"] = json!(text);
            }
            let mut time = a["time"].as_i64().unwrap_or(0);
            let mut end = a["timeEnd"].as_i64().unwrap_or(0);
            if let Some(t) = cmd["time"].as_i64().filter(|t| *t > 0) {
                time = t;
            }
            if let Some(e) = cmd["timeEnd"].as_i64().filter(|e| *e > 0) {
                end = e;
            }
            let (time, end) = time_range(time, end);
            a["time"] = json!(time);
            a["timeEnd"] = json!(end);
            a["updated"] = json!(now_ms());
            (200, json!({"message": "Annotation patched"}))
        }
        ("DELETE", _, Some(id)) => {
            if !all.iter().any(|a| a["id"] == id) {
                return not_found();
            }
            all.retain(|a| a["id"] != id);
            (200, json!({"message": "Annotation deleted"}))
        }
        ("GET", "/api/annotations", _) => {
            let one = |k: &str| query_values(query, k).into_iter().next();
            let int = |k: &str| one(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
            let dashboard = one("dashboardUID").filter(|d| !d.is_empty());
            if let Some(d) = &dashboard {
                if !dashboards.contains(d) {
                    return (
                        400,
                        json!({"message": "Invalid dashboard UID in annotation request"}),
                    );
                }
            }
            let (from, to) = (int("from"), int("to"));
            let limit = match int("limit") {
                0 => 100,
                n => n,
            };
            let match_any = one("matchAny").is_some_and(|v| v == "true" || v == "1");
            let wanted = tag_pairs(&query_values(query, "tags"));
            let alert = one("type");
            let mut found: Vec<Value> = all
                .iter()
                .filter(|a| {
                    let have = tag_pairs(&strings(&a["tags"]).unwrap_or_default());
                    let hits = wanted
                        .iter()
                        .filter(|(k, v)| {
                            have.iter()
                                .any(|(hk, hv)| hk == k && (v.is_empty() || hv == v))
                        })
                        .count();
                    let tags_ok = wanted.is_empty()
                        || if match_any {
                            hits > 0
                        } else {
                            hits == wanted.len()
                        };
                    let range_ok = from <= 0
                        || to <= 0
                        || (a["time"].as_i64() <= Some(to) && a["timeEnd"].as_i64() >= Some(from));
                    let type_ok = alert.as_deref() != Some("alert");
                    let dash_ok = dashboard
                        .as_ref()
                        .is_none_or(|d| a["dashboardUID"] == d.as_str());
                    tags_ok && range_ok && type_ok && dash_ok
                })
                .cloned()
                .collect();
            // ORDER BY epoch_end DESC, epoch DESC, then LIMIT.
            found.sort_by_key(|a| std::cmp::Reverse((a["timeEnd"].as_i64(), a["time"].as_i64())));
            found.truncate(limit.max(0) as usize);
            (200, Value::Array(found))
        }
        _ => (404, json!({"message": "Not found"})),
    }
}
