//! `pool serve --grafana-url`: every hold pushed to Grafana as an
//! annotation through its HTTP API, so dashboards show the deploy windows
//! without the Infinity data source.
//!
//! A thread of its own, on the refresh timer, reads the board (the same
//! annotations as `/annotations.json`, [`crate::operator::annotations`]) and
//! makes Grafana agree: `POST /api/annotations` for a claim it has not got,
//! `PATCH /api/annotations/:id` with `timeEnd` at its release. Before
//! creating one it looks for it (`GET /api/annotations?tags=...` with the
//! tags `pool-resource`, `claim:COMMIT`, `pool:P`, `lock:L`), so a restart
//! or a second replica finds the annotation instead of making another, and
//! whatever happened while Grafana or `pool serve` was down within the
//! look-back is filled in on the next round (a duplicate two replicas race
//! into is deleted, keeping the oldest). Every request is bounded
//! ([`CONNECT_TIMEOUT`], [`REQUEST_TIMEOUT`]); a failure ends the round,
//! is counted in `/metrics` and logged once with what to do. The HTTP side
//! never waits for this thread.
//!
//! The routes and JSON are Grafana's (`pkg/api/annotations.go`, its DTOs
//! and its SQL store): `PATCH` changes only the fields sent, so the tags
//! stay (its `PUT` would replace them); tags are kept as `key:value`, cut
//! at a second colon, which is why the tags pushed are the ones
//! [`annotations`] shows, with at most one colon. A hold still going on is
//! a point (its claim) until the release sets `timeEnd`: Grafana would let
//! a region's end be moved every refresh, but that is a request per hold
//! per refresh, and a region whose end stopped moving (with `pool serve`
//! down) would show a release that never happened; a point claims only
//! what is known. `/annotations.json`, asked at each dashboard refresh,
//! shows the growing region.
//!
//! The token comes from `GRAFANA_TOKEN` only: it travels in the
//! `Authorization` header, never in a URL, and is a secret of the log.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::Deserialize;
use serde_json::json;
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};

use crate::error::{Error, Result};
use crate::operator::annotations::{self, Annotation, Kind};
use crate::operator::watch::Board;
use crate::process::clock::now_unix;
use crate::process::log::Log;
use crate::process::signal::Interrupt;

/// How long a connection to Grafana may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request may take, answer included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of an answer read.
const BODY_LIMIT: u64 = 4 << 20;
/// The environment variable holding the service account token.
pub const TOKEN_ENV: &str = "GRAFANA_TOKEN";

/// `pool serve`'s Grafana options.
#[derive(Debug, Default, clap::Args)]
pub struct Args {
    /// Push every lock hold to this Grafana as an annotation (token in GRAFANA_TOKEN)
    #[arg(long, value_name = "URL")]
    grafana_url: Option<String>,
    /// With --grafana-url: put the annotations on this dashboard only (its UID)
    #[arg(long, value_name = "UID", requires = "grafana_url")]
    grafana_dashboard: Option<String>,
    /// With --grafana-url: more tags for every annotation, comma-separated
    #[arg(long, value_name = "TAGS", requires = "grafana_url")]
    grafana_tags: Option<String>,
}

/// Where and how to push.
#[derive(Clone)]
pub struct Config {
    /// Grafana's base URL, without a trailing `/`.
    pub url: String,
    token: String,
    /// `--grafana-dashboard`.
    pub dashboard: Option<String>,
    /// `--grafana-tags`.
    pub tags: Vec<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("url", &self.url)
            .field("token", &TOKEN_ENV)
            .field("dashboard", &self.dashboard)
            .field("tags", &self.tags)
            .finish()
    }
}

impl Config {
    /// The push the options configure, `None` without `--grafana-url`.
    pub fn configure(args: &Args, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Config>> {
        let Some(url) = &args.grafana_url else {
            return Ok(None);
        };
        let url = url.trim().trim_end_matches('/').to_string();
        let lower = url.to_ascii_lowercase();
        let Some(rest) = lower
            .strip_prefix("https://")
            .or_else(|| lower.strip_prefix("http://"))
        else {
            return Err(Error::Usage(format!(
                "--grafana-url {url:?} is not an http(s) URL"
            )));
        };
        let host = rest.split('/').next().unwrap_or_default();
        if host.contains('@') || url.contains('?') {
            return Err(Error::Usage(
                "--grafana-url takes no credentials or query: put the token in GRAFANA_TOKEN"
                    .into(),
            ));
        }
        let token = env(TOKEN_ENV)
            .map(|t| t.trim().to_string())
            .unwrap_or_default();
        if token.is_empty() {
            return Err(Error::Usage(format!(
                "--grafana-url needs {TOKEN_ENV}: a Grafana service account token with the annotations:read and annotations:write permissions (role Editor)"
            )));
        }
        let tags = args
            .grafana_tags
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        Ok(Some(Config {
            url,
            token,
            dashboard: args
                .grafana_dashboard
                .clone()
                .filter(|d| !d.trim().is_empty()),
            tags,
        }))
    }

    /// The token, for the log's secrets.
    pub fn secrets(&self) -> Vec<String> {
        vec![self.token.clone()]
    }
}

/// What the push did, for `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Requests made, by what they did.
    pub requests: BTreeMap<&'static str, u64>,
    /// Failed requests, by reason.
    pub failures: BTreeMap<&'static str, u64>,
    /// Whether the last round went through.
    pub up: bool,
    /// Annotations not yet in Grafana as the history has them.
    pub pending: u64,
    /// When a round last went through, Unix seconds.
    pub last_success: Option<i64>,
}

const ACTIONS: [&str; 4] = ["find", "create", "update", "delete"];
const REASONS: [&str; 4] = ["unauthorized", "server_error", "unreachable", "refused"];

/// The push's lines for `/metrics` (Prometheus text format).
pub fn render_metrics(stats: &Stats) -> String {
    let mut out = String::new();
    out.push_str("# HELP pool_resource_grafana_requests_total Requests made to Grafana's annotations API, by what they were for (find, create, update, delete).\n# TYPE pool_resource_grafana_requests_total counter\n");
    for a in ACTIONS {
        let n = stats.requests.get(a).copied().unwrap_or(0);
        out.push_str(&format!(
            "pool_resource_grafana_requests_total{{action=\"{a}\"}} {n}\n"
        ));
    }
    out.push_str("# HELP pool_resource_grafana_failures_total Requests to Grafana that failed, by reason (unauthorized: check GRAFANA_TOKEN; server_error: 5xx; unreachable: no answer in time; refused: another 4xx).\n# TYPE pool_resource_grafana_failures_total counter\n");
    for r in REASONS {
        let n = stats.failures.get(r).copied().unwrap_or(0);
        out.push_str(&format!(
            "pool_resource_grafana_failures_total{{reason=\"{r}\"}} {n}\n"
        ));
    }
    out.push_str("# HELP pool_resource_grafana_up Whether the last push of annotations to Grafana went through (1) or not (0).\n# TYPE pool_resource_grafana_up gauge\n");
    out.push_str(&format!(
        "pool_resource_grafana_up {}\n",
        u8::from(stats.up)
    ));
    out.push_str("# HELP pool_resource_grafana_pending_annotations Holds not yet in Grafana as the history has them (created or ended).\n# TYPE pool_resource_grafana_pending_annotations gauge\n");
    out.push_str(&format!(
        "pool_resource_grafana_pending_annotations {}\n",
        stats.pending
    ));
    out.push_str("# HELP pool_resource_grafana_last_success_timestamp_seconds When a push to Grafana last went through, Unix seconds (0: never).\n# TYPE pool_resource_grafana_last_success_timestamp_seconds gauge\n");
    out.push_str(&format!(
        "pool_resource_grafana_last_success_timestamp_seconds {}\n",
        stats.last_success.unwrap_or(0)
    ));
    out
}

/// Starts the push thread; its [`Stats`] are shared for `/metrics`.
pub fn spawn(
    config: Config,
    board: Arc<RwLock<Board>>,
    refresh: Duration,
    log: &Log,
    interrupt: &Interrupt,
) -> Arc<Mutex<Stats>> {
    log.add_secrets(config.secrets());
    let stats = Arc::new(Mutex::new(Stats::default()));
    let (shared, log, interrupt) = (stats.clone(), log.clone(), interrupt.clone());
    std::thread::spawn(move || {
        let mut pusher = Pusher::new(config, shared, log);
        loop {
            if interrupt.received().is_some() {
                return;
            }
            pusher.round(&board);
            if interrupt.sleep(refresh, "pushing annotations").is_err() {
                return;
            }
        }
    });
    stats
}

/// What Grafana has of one annotation.
#[derive(Clone, Copy, Debug)]
struct Known {
    id: i64,
    ended: bool,
}

/// One annotation as `GET /api/annotations` lists it (`ItemDTO`).
#[derive(Deserialize)]
struct Item {
    id: i64,
    #[serde(default, rename = "timeEnd")]
    time_end: i64,
}

#[derive(Deserialize)]
struct Created {
    id: i64,
}

/// Why a request failed: the metric's reason and the log's line.
struct Failure {
    reason: &'static str,
    why: String,
}

struct Pusher {
    config: Config,
    agent: ureq::Agent,
    stats: Arc<Mutex<Stats>>,
    log: Log,
    known: HashMap<Vec<String>, Known>,
    /// The reason of the last failure logged (one line per change).
    logged: Option<&'static str>,
}

impl Pusher {
    fn new(config: Config, stats: Arc<Mutex<Stats>>, log: Log) -> Pusher {
        let roots: Vec<Certificate<'static>> = rustls_native_certs::load_native_certs()
            .certs
            .iter()
            .map(|der| Certificate::from_der(der.as_ref()).to_owned())
            .collect();
        let crypto = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(crypto)
            .root_certs(RootCerts::new_with_certs(&roots))
            .build();
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(REQUEST_TIMEOUT))
            .user_agent(format!("pool-resource/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Pusher {
            config,
            agent,
            stats,
            log,
            known: HashMap::new(),
            logged: None,
        }
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The annotations the board has now (the board is not locked while
    /// Grafana is asked).
    fn wanted(&self, board: &RwLock<Board>) -> Vec<Annotation> {
        let now = now_unix();
        let b = board.read().unwrap_or_else(|e| e.into_inner());
        b.views
            .iter()
            .filter_map(|v| v.read.as_ref())
            .flat_map(|r| annotations::all(r, now, &self.config.tags))
            .filter(|a| a.kind != Kind::LookBack)
            .collect()
    }

    fn round(&mut self, board: &RwLock<Board>) {
        let wanted = self.wanted(board);
        let todo: Vec<(Vec<String>, Annotation)> = wanted
            .into_iter()
            .filter_map(|a| Some((a.key_tags()?, a)))
            .filter(|(key, a)| match self.known.get(key) {
                Some(k) => !k.ended && !a.ongoing,
                None => true,
            })
            .collect();
        self.stats().pending = todo.len() as u64;
        let mut result = Ok(());
        for (i, (key, a)) in todo.iter().enumerate() {
            result = self.sync(key, a);
            if result.is_err() {
                break;
            }
            self.stats().pending = (todo.len() - i - 1) as u64;
        }
        match result {
            Ok(()) => {
                let mut s = self.stats();
                s.up = true;
                s.last_success = Some(now_unix());
                drop(s);
                if self.logged.take().is_some() {
                    self.log.line(format_args!(
                        "grafana: annotations pushed to {} again",
                        self.config.url
                    ));
                }
            }
            Err(f) => {
                let mut s = self.stats();
                s.up = false;
                *s.failures.entry(f.reason).or_insert(0) += 1;
                drop(s);
                if self.logged != Some(f.reason) {
                    self.logged = Some(f.reason);
                    self.log.warn(format_args!(
                        "grafana: {} (retried every refresh; counted in pool_resource_grafana_failures_total)",
                        self.log.redact(&f.why)
                    ));
                }
            }
        }
    }

    /// Makes Grafana have `a`: finds it, else creates it; ends it.
    fn sync(&mut self, key: &[String], a: &Annotation) -> std::result::Result<(), Failure> {
        let known = match self.known.get(key) {
            Some(k) => *k,
            None => match self.find(key, a)? {
                Some(k) => k,
                None => {
                    let id = self.create(a)?;
                    let k = Known {
                        id,
                        ended: !a.ongoing,
                    };
                    self.known.insert(key.to_vec(), k);
                    return Ok(());
                }
            },
        };
        self.known.insert(key.to_vec(), known);
        if !known.ended && !a.ongoing {
            self.end(known.id, a)?;
            self.known.insert(
                key.to_vec(),
                Known {
                    id: known.id,
                    ended: true,
                },
            );
        }
        Ok(())
    }

    fn find(
        &mut self,
        key: &[String],
        a: &Annotation,
    ) -> std::result::Result<Option<Known>, Failure> {
        let mut url = format!(
            "{}/api/annotations?type=annotation&limit=100",
            self.config.url
        );
        for t in key {
            url.push_str("&tags=");
            url.push_str(&utf8_percent_encode(t, NON_ALPHANUMERIC).to_string());
        }
        if let Some(d) = &self.config.dashboard {
            url.push_str("&dashboardUID=");
            url.push_str(&utf8_percent_encode(d, NON_ALPHANUMERIC).to_string());
        }
        let body = self.send("find", "GET", &url, None)?;
        let mut items: Vec<Item> = serde_json::from_str(&body).map_err(|e| Failure {
            reason: "refused",
            why: format!(
                "Grafana's answer to GET /api/annotations is not a list of annotations: {e}"
            ),
        })?;
        items.sort_by_key(|i| i.id);
        // Two replicas may both have created it: keep the oldest.
        for extra in items.iter().skip(1) {
            let url = format!("{}/api/annotations/{}", self.config.url, extra.id);
            self.send("delete", "DELETE", &url, None)?;
        }
        Ok(items.first().map(|i| Known {
            id: i.id,
            ended: !a.ongoing && i.time_end >= a.time_end,
        }))
    }

    fn create(&mut self, a: &Annotation) -> std::result::Result<i64, Failure> {
        let mut body = json!({
            "time": a.time,
            "tags": a.tags,
            "text": format!("<b>{}</b><br>{}", annotations::escape_html(&a.title), a.text),
        });
        if !a.ongoing {
            body["timeEnd"] = json!(a.time_end);
        }
        if let Some(d) = &self.config.dashboard {
            body["dashboardUID"] = json!(d);
        }
        let url = format!("{}/api/annotations", self.config.url);
        let answer = self.send("create", "POST", &url, Some(body))?;
        let created: Created = serde_json::from_str(&answer).map_err(|e| Failure {
            reason: "refused",
            why: format!("Grafana's answer to POST /api/annotations has no id: {e}"),
        })?;
        Ok(created.id)
    }

    fn end(&mut self, id: i64, a: &Annotation) -> std::result::Result<(), Failure> {
        let url = format!("{}/api/annotations/{id}", self.config.url);
        let body = json!({"time": a.time, "timeEnd": a.time_end});
        self.send("update", "PATCH", &url, Some(body)).map(|_| ())
    }

    /// One request; a non-2xx answer or no answer is a [`Failure`].
    fn send(
        &mut self,
        action: &'static str,
        method: &str,
        url: &str,
        body: Option<serde_json::Value>,
    ) -> std::result::Result<String, Failure> {
        *self.stats().requests.entry(action).or_insert(0) += 1;
        let auth = format!("Bearer {}", self.config.token);
        let path = url
            .strip_prefix(&self.config.url)
            .unwrap_or(url)
            .split('?')
            .next()
            .unwrap_or_default()
            .to_string();
        let sent = match (method, body) {
            ("GET", _) => self
                .agent
                .get(url)
                .header("Accept", "application/json")
                .header("Authorization", &auth)
                .call(),
            ("DELETE", _) => self
                .agent
                .delete(url)
                .header("Accept", "application/json")
                .header("Authorization", &auth)
                .call(),
            (m, body) => {
                let req = if m == "PATCH" {
                    self.agent.patch(url)
                } else {
                    self.agent.post(url)
                };
                req.header("Accept", "application/json")
                    .header("Authorization", &auth)
                    .header("Content-Type", "application/json")
                    .send(body.unwrap_or_default().to_string())
            }
        };
        let unreachable = |e: ureq::Error| Failure {
            reason: "unreachable",
            why: format!(
                "{method} {path} on {} got no answer: {e}; is Grafana up and --grafana-url right?",
                self.config.url
            ),
        };
        let mut response = sent.map_err(unreachable)?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(BODY_LIMIT)
            .read_to_string()
            .map_err(unreachable)?;
        match status {
            200..=299 => Ok(text),
            401 | 403 => Err(Failure {
                reason: "unauthorized",
                why: format!(
                    "Grafana refused {method} {path} ({status}): set {TOKEN_ENV} to a service account token with the annotations:read and annotations:write permissions (role Editor)"
                ),
            }),
            500..=599 => Err(Failure {
                reason: "server_error",
                why: format!(
                    "Grafana answered {method} {path} with {status}: {}; see Grafana's log",
                    excerpt(&text)
                ),
            }),
            _ => Err(Failure {
                reason: "refused",
                why: format!(
                    "Grafana refused {method} {path} ({status}): {}",
                    excerpt(&text)
                ),
            }),
        }
    }
}

/// The start of an answer, one line.
fn excerpt(text: &str) -> String {
    let t: String = text.chars().take(200).collect();
    t.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: &str) -> Args {
        Args {
            grafana_url: Some(url.into()),
            grafana_dashboard: None,
            grafana_tags: Some("deployment, concourse,".into()),
        }
    }

    #[test]
    fn the_token_comes_from_the_environment_never_the_url() {
        let env = |k: &str| (k == TOKEN_ENV).then(|| "glsa_secret".to_string());
        let c = Config::configure(&args("https://grafana.example.com/"), &env)
            .expect("ok")
            .expect("configured");
        assert_eq!(c.url, "https://grafana.example.com");
        assert_eq!(c.tags, ["deployment", "concourse"]);
        assert!(!format!("{c:?}").contains("glsa_secret"));
        let err = Config::configure(&args("https://admin:pw@grafana"), &env).unwrap_err();
        assert!(err.to_string().contains("GRAFANA_TOKEN"), "{err}");
        let err = Config::configure(&args("https://grafana"), &|_| None).unwrap_err();
        assert!(err.to_string().contains("GRAFANA_TOKEN"), "{err}");
        let err = Config::configure(&args("ftp://grafana"), &env).unwrap_err();
        assert!(err.to_string().contains("http(s)"), "{err}");
        assert!(Config::configure(&Args::default(), &env)
            .expect("ok")
            .is_none());
    }

    #[test]
    fn the_metrics_name_every_action_and_reason() {
        let m = render_metrics(&Stats::default());
        for a in ACTIONS {
            assert!(m.contains(&format!("{{action=\"{a}\"}} 0")), "{m}");
        }
        for r in REASONS {
            assert!(m.contains(&format!("{{reason=\"{r}\"}} 0")), "{m}");
        }
        assert!(m.contains("pool_resource_grafana_up 0"));
    }
}
