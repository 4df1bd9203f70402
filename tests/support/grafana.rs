//! A Grafana annotations API stand-in: the routes `pool serve
//! --grafana-url` uses, answering as Grafana's `pkg/api/annotations.go`
//! does with the JSON of `pkg/api/dtos/annotations.go`:
//!
//! - `POST /api/annotations` (`PostAnnotationsCmd`: `dashboardUID`,
//!   `time`, `timeEnd`, `tags`, `text`): `{"message": "Annotation added",
//!   "id": N}`; without `timeEnd` the annotation is a point (`timeEnd` = `time`).
//! - `PATCH /api/annotations/:id` (`PatchAnnotationsCmd`): only the fields
//!   given change; `{"message": "Annotation patched"}`, 404 for an unknown id.
//! - `GET /api/annotations?tags=A&tags=B&type=annotation&limit=N&dashboardUID=U`:
//!   the annotations carrying every tag (`matchAny` false), newest first,
//!   as `ItemDTO`s.
//! - `DELETE /api/annotations/:id`: `{"message": "Annotation deleted"}`.
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

fn respond(method: &str, target: &str, body: &str, state: &State) -> (u16, Value) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let id: Option<i64> = path
        .strip_prefix("/api/annotations/")
        .and_then(|i| i.parse().ok());
    let mut all = state.annotations.lock().expect("lock");
    match (method, path, id) {
        ("POST", "/api/annotations", _) => {
            let Ok(cmd) = serde_json::from_str::<Value>(body) else {
                return (400, json!({"message": "bad request data"}));
            };
            let id = state.next_id.fetch_add(1, Ordering::SeqCst) as i64;
            let time = cmd["time"].as_i64().unwrap_or(0);
            let end = cmd["timeEnd"].as_i64().filter(|e| *e > 0).unwrap_or(time);
            all.push(json!({
                "id": id, "alertId": 0, "dashboardId": 0,
                "dashboardUID": cmd["dashboardUID"].as_str().unwrap_or(""),
                "panelId": 0, "userId": 1, "newState": "", "prevState": "",
                "created": 0, "updated": 0, "time": time, "timeEnd": end,
                "text": cmd["text"], "tags": cmd["tags"], "login": "sa-pool",
                "email": "", "avatarUrl": "", "data": {}
            }));
            (200, json!({"message": "Annotation added", "id": id}))
        }
        ("PATCH", _, Some(id)) => {
            let Ok(cmd) = serde_json::from_str::<Value>(body) else {
                return (400, json!({"message": "bad request data"}));
            };
            let Some(a) = all.iter_mut().find(|a| a["id"] == id) else {
                return (
                    404,
                    json!({"message": "Could not find annotation to update"}),
                );
            };
            for k in ["time", "timeEnd", "text", "tags"] {
                if !cmd[k].is_null() {
                    a[k] = cmd[k].clone();
                }
            }
            (200, json!({"message": "Annotation patched"}))
        }
        ("DELETE", _, Some(id)) => {
            all.retain(|a| a["id"] != id);
            (200, json!({"message": "Annotation deleted"}))
        }
        ("GET", "/api/annotations", _) => {
            let tags = query_values(query, "tags");
            let dashboard = query_values(query, "dashboardUID");
            let mut found: Vec<Value> = all
                .iter()
                .filter(|a| {
                    let have: Vec<&str> = a["tags"]
                        .as_array()
                        .map(|t| t.iter().filter_map(|t| t.as_str()).collect())
                        .unwrap_or_default();
                    tags.iter().all(|t| have.contains(&t.as_str()))
                        && dashboard.iter().all(|d| a["dashboardUID"] == d.as_str())
                })
                .cloned()
                .collect();
            found.reverse();
            (200, Value::Array(found))
        }
        _ => (404, json!({"message": "Not found"})),
    }
}
