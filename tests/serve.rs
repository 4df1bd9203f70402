//! `pool serve`, the real executable, against a lock repository behind
//! `git daemon` that real `out` processes change: the page in headless
//! Chromium, `/metrics` and the example alert rules through `promtool`, the
//! JSON documents, and a load test counting the connections the git server
//! sees (through a [`FaultProxy`] that injects nothing).
//!
//! The Chromium and promtool tests are `#[ignore]`d, so plain `cargo test`
//! shows them as ignored, not passed; `ci/test.sh` installs both and runs
//! them with `--include-ignored`. Run there without the tool, they record a
//! skip ([`skip`]) instead.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::faults::{FaultProxy, Rates};
use crate::support::run::spawn_raw;
use crate::support::{run_bin_raw, skip, Bg, GitDaemon, LockRepo, Run};
use crate::{put, source, Inputs};

const POOL: &str = "envs";
/// The most hostile lock name [`pool_resource::model::names::LockName`] accepts:
/// no `/`, so no closing tag, but an element with a handler all the same.
const HOSTILE: &str = "<img src=x onerror=alert(1)>";

fn build(name: &str) -> Vec<(&'static str, String)> {
    vec![
        ("BUILD_ID", format!("42{name}")),
        ("BUILD_NAME", name.to_string()),
        ("BUILD_JOB_NAME", "deploy".into()),
        ("BUILD_PIPELINE_NAME", "app".into()),
        ("BUILD_TEAM_NAME", "main".into()),
        ("ATC_EXTERNAL_URL", "https://ci.example.com".into()),
    ]
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Runs `pool` with `args`, the source in `POOL_SOURCE`.
fn pool(src: &Value, args: &[&str]) -> Run {
    let paths: Vec<&Path> = args.iter().map(Path::new).collect();
    let json = src.to_string();
    run_bin_raw(
        "pool",
        &paths,
        b"",
        &[("POOL_SOURCE", json.as_str()), ("USER", "tester")],
    )
}

/// A lock repository behind `git daemon` with pool `envs`: `qa` claimed by
/// build 7, `staging` free, and the hostile lock, with hostile metadata,
/// claimed by a build with hostile names.
struct Fixture {
    repo: LockRepo,
    daemon: GitDaemon,
}

impl Fixture {
    fn new() -> Fixture {
        let repo = LockRepo::new("main");
        let local = source(&repo.path().display().to_string(), "main", POOL);
        pool(&local, &["--as", "ops", "init", "qa", "staging"]).assert_success();
        // A day of claims as the Go resource records them, for the timeline.
        let now = pool_resource::process::clock::now_unix();
        let go = |job: &str, n: u32| {
            format!("Build URL: https://ci.example.com/teams/main/pipelines/app/jobs/{job}/builds/{n}\n")
        };
        for (lock, job, n, from_h, to_h) in [
            ("qa", "nightly", 31, 22.0, 19.5),
            ("staging", "deploy", 5, 20.0, 17.0),
            ("qa", "integration", 12, 15.0, 13.8),
            ("staging", "nightly", 32, 11.0, 6.5),
            ("qa", "integration", 13, 5.0, 2.2),
        ] {
            let at = |h: f64| now - (h * 3600.0) as i64;
            repo.move_lock_at(POOL, lock, true, at(from_h), &go(job, n));
            repo.move_lock_at(POOL, lock, false, at(to_h), &go(job, n));
        }
        let daemon = GitDaemon::start(repo.root());
        let f = Fixture { repo, daemon };
        let inputs = Inputs::new();
        inputs.lock(
            "hostile",
            HOSTILE,
            b"<script>alert('metadata')</script>\n\"><svg onload=alert(2)>",
        );
        put(
            &f.src(),
            json!({"add_claimed": "hostile"}),
            &inputs,
            &[
                ("BUILD_ID", "1"),
                ("BUILD_NAME", "<b>1</b>"),
                ("BUILD_JOB_NAME", "\"><svg onload=alert(3)>"),
                ("BUILD_PIPELINE_NAME", "<script>alert(4)</script>"),
                ("BUILD_TEAM_NAME", "main"),
                ("ATC_EXTERNAL_URL", "javascript:alert(5)//"),
            ],
        );
        f.claim("qa", "7");
        f
    }

    /// The source `out` uses: the daemon itself.
    fn src(&self) -> Value {
        source(&self.daemon.url("locks.git"), "main", POOL)
    }

    fn claim(&self, lock: &str, build_name: &str) {
        let env = build(build_name);
        put(
            &self.src(),
            json!({"claim": lock}),
            &Inputs::new(),
            &env_refs(&env),
        );
    }
}

/// A running `pool serve`, stopped (SIGTERM) on drop.
pub(crate) struct Server {
    bg: Bg,
    base: String,
}

impl Server {
    /// Starts `pool serve` for `uri` (every pool of branch main) on a free
    /// port of 127.0.0.1, refreshing every `refresh`.
    fn start(uri: &str, refresh: &str) -> Server {
        Server::start_with(&json!({"uri": uri, "branch": "main"}), refresh, &[])
    }

    /// Starts `pool serve` for the source `src` (as `POOL_SOURCE`) with
    /// `env` besides, on a free port of 127.0.0.1.
    pub(crate) fn start_with(src: &Value, refresh: &str, env: &[(&str, &str)]) -> Server {
        Server::start_args(src, refresh, env, &[])
    }

    /// [`Server::start_with`] with more arguments for `pool serve`.
    pub(crate) fn start_args(
        src: &Value,
        refresh: &str,
        env: &[(&str, &str)],
        more: &[&str],
    ) -> Server {
        let src = src.to_string();
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--refresh", refresh];
        args.extend_from_slice(more);
        let paths: Vec<&Path> = args.iter().map(Path::new).collect();
        let mut all = vec![("POOL_SOURCE", src.as_str())];
        all.extend_from_slice(env);
        let (child, command) = spawn_raw("pool", &paths, b"", &all);
        let mut bg = Bg::echoing(child, command, Duration::from_secs(40), "pool serve: ");
        let line = bg.next_line_with("listening on ");
        let base = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or("")
            .to_string();
        Server { bg, base }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path.trim_start_matches('/'))
    }

    pub(crate) fn get(&self, path: &str) -> Response {
        request(&self.base, "GET", path)
    }

    /// Waits (bounded) until `/status.json` satisfies `ok`.
    pub(crate) fn wait_for_status(&self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.get("/status.json");
            if r.status == 200 {
                let v: Value = serde_json::from_str(&r.body).expect("status.json is JSON");
                if ok(&v) {
                    return v;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the server never showed {what}: {} {}",
                r.status,
                r.body
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A metric's value, by a substring of its sample line.
    pub(crate) fn metric(&self, prefix: &str) -> f64 {
        let m = self.get("/metrics").body;
        m.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in\n{m}"))
    }

    /// Waits (bounded) for the next line of stderr containing `needle`.
    pub(crate) fn wait_for_line(&mut self, needle: &str) -> String {
        self.bg.next_line_with(needle)
    }

    /// SIGTERM, and the exit status within 10 s.
    pub(crate) fn stop(&mut self) -> std::process::ExitStatus {
        self.bg.signal("TERM");
        let (status, took) = self.bg.wait_exit();
        assert!(took < Duration::from_secs(10), "pool serve ignored SIGTERM");
        status
    }
}

/// An HTTP response, read whole.
pub(crate) struct Response {
    pub(crate) status: u16,
    head: String,
    pub(crate) body: String,
}

impl Response {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One request on a fresh connection (`Connection: close`).
fn request(base: &str, method: &str, path: &str) -> Response {
    let host = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut s = TcpStream::connect(&host).expect("connecting to pool serve");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .expect("sending a request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("reading a response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Response {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// Headless Chromium, if installed.
fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

/// Runs Chromium with `args` then `url` (bounded: 60 s); its stdout.
fn run_chromium(exe: &str, args: &[&str], url: &str) -> String {
    let profile = tempfile::TempDir::new().expect("a profile dir");
    let mut child = Command::new(exe)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting chromium");
    let mut out = child.stdout.take().expect("chromium stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().expect("waiting for chromium").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium took over 60 s on {url}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().unwrap_or_default()
}

/// Where the screenshot goes: `$POOL_SERVE_SCREENSHOT`, else under target/.
fn screenshot_path() -> PathBuf {
    std::env::var_os("POOL_SERVE_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve.png"))
}

/// Writes the line of pool `envs` directly in one commit, as the put loop
/// would have: `main/app/deploy #50` (priority 0) has waited 10 minutes, a
/// build with a hostile name and URL (priority 5, so first) 2 minutes; both
/// renewed just now with an hour's lease.
fn join_line(repo: &LockRepo) {
    let now = pool_resource::process::clock::now_unix();
    let line = json!({"tickets": [
        {"id": "t-old", "build": "main/app/deploy #50", "build_id": "4250",
         "url": "https://ci.example.com/teams/main/pipelines/app/jobs/deploy/builds/50",
         "wants": {"acquire": 1}, "priority": 0, "arrived": now - 600, "seq": 1,
         "renewed": now, "lease": 3600},
        {"id": "t-hostile", "build": "<script>alert('line')</script> #6",
         "url": "javascript:alert(6)",
         "wants": {"claim": ["qa"]}, "priority": 5, "arrived": now - 120, "seq": 2,
         "renewed": now, "lease": 3600}
    ]});
    repo.commit_file(
        ".pool-resource/line/envs.json",
        line.to_string().as_bytes(),
        "joining the line: envs",
    );
}

fn lock<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["pools"][0]["locks"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["name"] == name))
        .unwrap_or_else(|| panic!("no lock {name} in {status}"))
}

#[test]
#[ignore = "needs chromium: run by ci/test.sh with --include-ignored"]
fn chromium_shows_build_links_timeline_bars_hostile_names_as_text_and_a_later_claim() {
    let Some(exe) = chromium() else {
        skip(
            "serve::chromium_shows_build_links_timeline_bars_hostile_names_as_text_and_a_later_claim",
            "chromium is not installed (ci/test.sh installs it)",
        );
        return;
    };
    let f = Fixture::new();
    join_line(&f.repo);
    let server = Server::start(&f.daemon.url("locks.git"), "1s");
    server.wait_for_status("qa claimed", |s| lock(s, "qa")["state"] == "claimed");

    let dom = run_chromium(exe, &["--dump-dom"], &server.url("/"));
    // The line, on the pool's card, in the order it is served.
    assert!(dom.contains("Waiting in line: 2"), "no line in\n{dom}");
    assert!(dom.contains("2 waiting)"), "{dom}");
    let hostile = dom
        .find("&lt;script&gt;alert('line')&lt;/script&gt; #6")
        .unwrap_or_else(|| panic!("the hostile waiter is not text in\n{dom}"));
    let old = dom
        .find(r#"<a class="build" href="https://ci.example.com/teams/main/pipelines/app/jobs/deploy/builds/50" rel="noreferrer">main/app/deploy #50</a>"#)
        .unwrap_or_else(|| panic!("no link to the waiting build in\n{dom}"));
    assert!(hostile < old, "priority 5 is served first:\n{dom}");
    assert!(
        dom.contains(
            r#"claim: qa, <span class="kind exclusive">exclusive</span>, priority 5, waiting 2m"#
        ),
        "{dom}"
    );
    assert!(
        dom.contains(
            r#"acquire, <span class="kind exclusive">exclusive</span>, priority 0, waiting 10m"#
        ),
        "{dom}"
    );
    assert!(!dom.contains("<script>alert('line')"), "{dom}");
    assert!(
        dom.contains(
            r#"<a class="build" href="https://ci.example.com/teams/main/pipelines/app/jobs/deploy/builds/7" rel="noreferrer">main/app/deploy #7</a>"#
        ),
        "no link to qa's build in\n{dom}"
    );
    assert!(
        dom.matches(r#"class="bar""#).count() >= 2,
        "no timeline bars in\n{dom}"
    );
    assert!(dom.contains("qa: main/app/deploy #7 for "), "{dom}");
    // Every hostile string is text: escaped, never an element or a link.
    assert!(dom.contains("&lt;img src=x onerror=alert(1)&gt;"), "{dom}");
    assert!(
        dom.contains("&lt;script&gt;alert('metadata')&lt;/script&gt;"),
        "{dom}"
    );
    assert!(
        dom.contains("&lt;script&gt;alert(4)&lt;/script&gt;"),
        "{dom}"
    );
    for element in ["<img", "<svg onload", "<b>1", "href=\"javascript"] {
        assert!(!dom.contains(element), "{element} made it into\n{dom}");
    }

    let shot = screenshot_path();
    run_chromium(
        exe,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,900",
        ],
        &server.url("/"),
    );
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG: {}", shot.display());
    eprintln!("screenshot: {}", shot.display());

    // A claim made after the page was served shows on a later load. The
    // line's tickets (an hour's lease) would keep the free lock for the
    // waiters ahead, so they leave first.
    f.repo.commit_file(
        ".pool-resource/line/envs.json",
        br#"{"tickets": []}"#,
        "leaving the line: envs",
    );
    f.claim("staging", "8");
    server.wait_for_status("staging claimed", |s| {
        lock(s, "staging")["state"] == "claimed"
    });
    let dom = run_chromium(exe, &["--dump-dom"], &server.url("/"));
    assert!(
        dom.contains(
            r#"href="https://ci.example.com/teams/main/pipelines/app/jobs/deploy/builds/8""#
        ),
        "staging's new claim is not on the page:\n{dom}"
    );
    assert!(dom.contains("staging: main/app/deploy #8 for "), "{dom}");
}

/// A lock an operator only added reads "Created by", one a build gave
/// back "Released by"; once the pool is held, its free locks read as not
/// takeable, with the hold's reason, instead of a green "free".
#[test]
#[ignore = "needs chromium: run by ci/test.sh with --include-ignored"]
fn chromium_says_created_by_for_an_added_lock_and_not_takeable_for_free_locks_of_a_held_pool() {
    let test = "serve::chromium_says_created_by_for_an_added_lock_and_not_takeable_for_free_locks_of_a_held_pool";
    let Some(exe) = chromium() else {
        skip(test, "chromium is not installed (ci/test.sh installs it)");
        return;
    };
    let repo = LockRepo::new("main");
    let src = source(&repo.path().display().to_string(), "main", POOL);
    pool(&src, &["--as", "ops", "init", "qa", "staging"]).assert_success();
    let env = build("7");
    let inputs = Inputs::new();
    put(&src, json!({"claim": "qa"}), &inputs, &env_refs(&env));
    inputs.lock("held", "qa", b"");
    put(&src, json!({"release": "held"}), &inputs, &env_refs(&env));
    let server = Server::start(&repo.path().display().to_string(), "1s");
    server.wait_for_status("qa released", |s| lock(s, "qa")["state"] == "unclaimed");

    let dom = run_chromium(exe, &["--dump-dom"], &server.url("/"));
    assert!(
        dom.contains("Created by ops"),
        "staging was only created:\n{dom}"
    );
    assert!(!dom.contains("Released by ops"), "{dom}");
    assert!(
        dom.contains("Released by <a"),
        "qa was released by build 7:\n{dom}"
    );
    assert_eq!(dom.matches("○ free<").count(), 2, "{dom}");
    assert!(!dom.contains("not takeable"), "{dom}");

    pool(
        &src,
        &["--as", "ops", "hold", "--reason", "platform upgrade"],
    )
    .assert_success();
    server.wait_for_status("the hold", |s| !s["pools"][0]["hold"].is_null());
    let dom = run_chromium(exe, &["--dump-dom"], &server.url("/"));
    assert_eq!(
        dom.matches("○ free, not takeable").count(),
        2,
        "both free locks of the held pool are not takeable:\n{dom}"
    );
    assert!(
        !dom.contains("○ free<"),
        "a free lock of a held pool reads as takeable:\n{dom}"
    );
    assert!(
        dom.contains(r#"class="lock held""#) && dom.contains(r#"class="state held""#),
        "{dom}"
    );
    assert!(
        dom.contains(
            "The pool is held by ops: platform upgrade; acquire and claim wait until it is unheld."
        ),
        "the card does not say why:\n{dom}"
    );
}

/// Build `name` of `job` takes a share of `lock` (a real `out`), and `in`
/// fetches it into `inputs/<dir>`; returns its share id (`DIR/share`).
fn share(src: &Value, lock: &str, job: &str, name: &str, inputs: &Inputs, dir: &str) -> String {
    let mut env = build(name);
    env[2].1 = job.to_string();
    crate::take_share(src, inputs, lock, &env_refs(&env), dir).1
}

/// A real `out` of `params` by build `name` of `job`, left waiting in the
/// line (killed on drop).
fn waiting(src: &Value, params: Value, job: &str, name: &str, inputs: &Inputs) -> Bg {
    let mut env = build(name);
    env[2].1 = job.to_string();
    crate::start_out(
        src,
        params,
        inputs,
        &env_refs(&env),
        format!("the waiting {job} #{name}"),
        Duration::from_secs(60),
    )
}

/// The part of `dom` from `open` up to the next `close` after it.
fn element<'a>(dom: &'a str, open: &str, close: &str) -> &'a str {
    let from = dom
        .find(open)
        .unwrap_or_else(|| panic!("no {open} in\n{dom}"));
    let len = dom[from + open.len()..]
        .find(close)
        .unwrap_or_else(|| panic!("nothing closes {open} in\n{dom}"));
    &dom[from..from + open.len() + len]
}

/// Two readers hold `env` together, one of them a build with a hostile
/// name; a writer waits for `env` and a reader behind it (the writer
/// closes `env` to new readers). The page Chromium renders says `env` is
/// held shared by 2, lists both holders (the hostile one as text), and
/// marks each waiter shared or exclusive, in the order they are served.
#[test]
#[ignore = "needs chromium: run by ci/test.sh with --include-ignored"]
fn chromium_shows_a_lock_held_shared_with_each_holder_as_text_and_the_kind_of_each_waiter() {
    let test = "serve::chromium_shows_a_lock_held_shared_with_each_holder_as_text_and_the_kind_of_each_waiter";
    let Some(exe) = chromium() else {
        skip(test, "chromium is not installed (ci/test.sh installs it)");
        return;
    };
    let repo = LockRepo::new("main");
    let local = source(&repo.path().display().to_string(), "main", POOL);
    pool(&local, &["--as", "ops", "init", "env", "spare"]).assert_success();
    let daemon = GitDaemon::start(repo.root());
    let src = source(&daemon.url("locks.git"), "main", POOL);
    let inputs = Inputs::new();
    let plain = share(&src, "env", "smoke", "1", &inputs, "r1");
    let hostile = share(&src, "env", "smoke", HOSTILE, &inputs, "r2");
    let (w_in, r_in) = (Inputs::new(), Inputs::new());
    let mut writer = waiting(&src, json!({"claim": "env"}), "deploy", "10", &w_in);
    let server = Server::start(&daemon.url("locks.git"), "1s");
    // The reader comes after the writer is in the line, so behind it.
    server.wait_for_status("the writer in line", |s| {
        s["pools"][0]["line"]
            .as_array()
            .is_some_and(|l| l.len() == 1)
    });
    let mut reader = waiting(
        &src,
        json!({"claim": "env", "shared": true}),
        "smoke",
        "4",
        &r_in,
    );
    let status = server.wait_for_status("both waiters", |s| {
        s["pools"][0]["line"]
            .as_array()
            .is_some_and(|l| l.len() == 2)
    });
    assert_eq!(
        lock(&status, "env")["holders"].as_array().map(Vec::len),
        Some(2)
    );

    let dom = run_chromium(exe, &["--dump-dom"], &server.url("/"));
    // env's card, up to the next lock's (spare).
    let card = element(
        &dom,
        r#"<div class="lock claimed"><div class="name">env</div>"#,
        r#"<div class="lock "#,
    );
    assert!(card.contains("● claimed, shared"), "{card}");
    assert!(card.contains("Held shared by 2"), "{card}");
    let holders = element(
        card,
        r#"<ul class="holders" aria-label="Holders of env">"#,
        "</ul>",
    );
    assert_eq!(
        holders.matches(r#"<li class="holder">"#).count(),
        2,
        "{holders}"
    );
    let first = holders
        .find(r#"<a class="build" href="https://ci.example.com/teams/main/pipelines/app/jobs/smoke/builds/1" rel="noreferrer">main/app/smoke #1</a>"#)
        .unwrap_or_else(|| panic!("no link to the first holder's build in\n{holders}"));
    let second = holders
        .find("main/app/smoke #&lt;img src=x onerror=alert(1)&gt;")
        .unwrap_or_else(|| panic!("the hostile holder is not text in\n{holders}"));
    assert!(first < second, "holders in the order they came:\n{holders}");
    for id in [&plain, &hostile] {
        assert!(
            holders.contains(&format!("share {id}")),
            "no share {id} in\n{holders}"
        );
    }
    assert!(
        !dom.contains("<img"),
        "the hostile name made an element:\n{dom}"
    );

    let line = element(&dom, r#"<section class="line""#, "</section>");
    assert!(line.contains("Waiting in line: 2"), "{line}");
    let exclusive = line
        .find(r#"main/app/deploy #10</a> — claim: env, <span class="kind exclusive">exclusive</span>"#)
        .unwrap_or_else(|| panic!("the writer is not marked exclusive in\n{line}"));
    let shared = line
        .find(r#"main/app/smoke #4</a> — claim: env, <span class="kind shared">shared</span>"#)
        .unwrap_or_else(|| panic!("the reader is not marked shared in\n{line}"));
    assert!(exclusive < shared, "the writer is served first:\n{line}");

    writer.kill();
    reader.kill();
}

#[test]
#[ignore = "needs promtool: run by ci/test.sh with --include-ignored"]
fn metrics_pass_promtool_and_match_the_repository() {
    let promtool = "/usr/bin/promtool";
    if !Path::new(promtool).exists() {
        skip(
            "serve::metrics_pass_promtool_and_match_the_repository",
            "promtool is not installed (ci/test.sh installs prometheus)",
        );
        return;
    }
    let f = Fixture::new();
    pool(&f.src(), &["hold", "--as", "ops", "--reason", "upgrade"]).assert_success();
    join_line(&f.repo);
    let server = Server::start(&f.daemon.url("locks.git"), "1s");
    server.wait_for_status("the hold", |s| !s["pools"][0]["hold"].is_null());
    let r = server.get("/metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")),
        "{}",
        r.head
    );
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting promtool");
    check
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(r.body.as_bytes())
        .expect("feeding promtool");
    let out = check.wait_with_output().expect("promtool");
    eprintln!("/metrics:\n{}", r.body);
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        r.body
    );
    let repo = format!("source=\"{}\",branch=\"main\"", f.daemon.url("locks.git"));
    let at = |rest: &str| format!("pool_resource_{rest}");
    let claimed = f.repo.claimed(POOL).len() as f64;
    let unclaimed = f.repo.unclaimed(POOL).len() as f64;
    assert_eq!((claimed, unclaimed), (2.0, 1.0));
    assert_eq!(
        server.metric(&at(&format!(
            "locks{{{repo},pool=\"envs\",state=\"claimed\"}}"
        ))),
        claimed
    );
    assert_eq!(
        server.metric(&at(&format!(
            "locks{{{repo},pool=\"envs\",state=\"unclaimed\"}}"
        ))),
        unclaimed
    );
    assert_eq!(
        server.metric(&at(&format!("pool_held{{{repo},pool=\"envs\"}}"))),
        1.0
    );
    let held = server.metric(&at(&format!(
        "lock_held_seconds{{{repo},pool=\"envs\",lock=\"qa\"}}"
    )));
    assert!((0.0..600.0).contains(&held), "qa held for {held}");
    // A free lock has no held time; its holders are 0 of each kind.
    assert!(
        !r.body
            .lines()
            .any(|l| l.starts_with("pool_resource_lock_held_seconds")
                && l.contains("lock=\"staging\"")),
        "{}",
        r.body
    );
    assert_eq!(
        server.metric(&at(&format!(
            "lock_holders{{{repo},pool=\"envs\",lock=\"staging\",kind=\"exclusive\"}}"
        ))),
        0.0
    );
    assert_eq!(
        server.metric(&at(&format!("waiters{{{repo},pool=\"envs\"}}"))),
        2.0
    );
    let oldest = server.metric(&at(&format!("oldest_wait_seconds{{{repo},pool=\"envs\"}}")));
    assert!((600.0..700.0).contains(&oldest), "oldest wait {oldest}");
    let hold = server.metric(&at(&format!("pool_held_seconds{{{repo},pool=\"envs\"}}")));
    assert!((0.0..600.0).contains(&hold), "held for {hold}");
    for name in ["waiters", "oldest_wait_seconds", "pool_held_seconds"] {
        assert!(
            r.body.contains(&format!("# HELP pool_resource_{name} "))
                && r.body
                    .contains(&format!("# TYPE pool_resource_{name} gauge")),
            "{name}: {}",
            r.body
        );
    }
    assert_eq!(server.metric(&at(&format!("refresh_up{{{repo}}}"))), 1.0);
    assert_eq!(
        server.metric(&at(&format!("refresh_failures_total{{{repo}}}"))),
        0.0
    );
    assert!(
        server.metric(&at(&format!(
            "last_refresh_success_timestamp_seconds{{{repo}}}"
        ))) > 1e9
    );
}

/// Runs `promtool test rules` on the alert rules' tests in `dir`.
fn promtool_test_rules(promtool: &str, dir: &Path) -> std::process::Output {
    Command::new(promtool)
        .args(["test", "rules", "prometheus-alerts.test.yml"])
        .current_dir(dir)
        .output()
        .expect("running promtool test rules")
}

#[test]
#[ignore = "needs promtool: run by ci/test.sh with --include-ignored"]
fn the_example_alert_rules_pass_their_promtool_unit_tests_and_each_broken_rule_fails_them() {
    let promtool = "/usr/bin/promtool";
    if !Path::new(promtool).exists() {
        skip(
            "serve::the_example_alert_rules_pass_their_promtool_unit_tests_and_each_broken_rule_fails_them",
            "promtool is not installed (ci/test.sh installs prometheus)",
        );
        return;
    }
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let check = Command::new(promtool)
        .args(["check", "rules", "prometheus-alerts.yml"])
        .current_dir(&examples)
        .output()
        .expect("running promtool check rules");
    assert!(
        check.status.success(),
        "promtool check rules failed:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let out = promtool_test_rules(promtool, &examples);
    assert!(
        out.status.success(),
        "promtool test rules failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Each rule, made never to fire, must fail the tests: none is untested.
    let rules = std::fs::read_to_string(examples.join("prometheus-alerts.yml")).expect("the rules");
    let tests =
        std::fs::read_to_string(examples.join("prometheus-alerts.test.yml")).expect("the tests");
    let exprs: Vec<usize> = rules
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("expr:"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(exprs.len(), 4, "four alerts:\n{rules}");
    for at in exprs {
        let broken: Vec<String> = rules
            .lines()
            .enumerate()
            .map(|(i, l)| {
                if i == at {
                    let indent = &l[..l.len() - l.trim_start().len()];
                    format!("{indent}expr: vector(0) > 1")
                } else {
                    l.to_string()
                }
            })
            .collect();
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::write(dir.path().join("prometheus-alerts.yml"), broken.join("\n"))
            .expect("writing the broken rules");
        std::fs::write(dir.path().join("prometheus-alerts.test.yml"), &tests)
            .expect("writing the tests");
        let out = promtool_test_rules(promtool, dir.path());
        assert!(
            !out.status.success(),
            "the tests pass with this rule broken: {}\n{}",
            rules.lines().nth(at).unwrap_or(""),
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn the_json_is_that_of_pool_status_and_history_and_bad_requests_say_why() {
    let f = Fixture::new();
    join_line(&f.repo);
    let mut server = Server::start(&f.daemon.url("locks.git"), "1s");
    let served = server.wait_for_status("qa claimed", |s| lock(s, "qa")["state"] == "claimed");
    let waiting: Vec<(&Value, &Value)> = served["pools"][0]["line"]
        .as_array()
        .expect("a line in /status.json")
        .iter()
        .map(|w| (&w["position"], &w["build"]))
        .collect();
    assert_eq!(
        waiting,
        [
            (&json!(1), &json!("<script>alert('line')</script> #6")),
            (&json!(2), &json!("main/app/deploy #50"))
        ],
        "{served:#}"
    );
    let cli = pool(
        &json!({"uri": f.daemon.url("locks.git"), "branch": "main"}),
        &["status", "--json"],
    );
    cli.assert_success();
    let mut cli = cli.json();
    let mut served = served;
    for doc in [&mut cli, &mut served] {
        doc["now"] = Value::Null;
        for p in doc["pools"].as_array_mut().expect("pools") {
            for l in p["locks"].as_array_mut().expect("locks") {
                l["for_seconds"] = Value::Null;
            }
            for w in p["line"].as_array_mut().expect("line") {
                w["waiting_seconds"] = Value::Null;
            }
        }
    }
    assert_eq!(served, cli);

    let history = server.get("/history.json?since=1h");
    assert_eq!(history.status, 200, "{}", history.body);
    let served: Value = serde_json::from_str(&history.body).expect("history JSON");
    let cli = pool(
        &json!({"uri": f.daemon.url("locks.git"), "branch": "main"}),
        &["history", "--json", "--since", "1h"],
    );
    cli.assert_success();
    let strip = |v: &Value| -> Vec<Value> {
        v.as_array()
            .expect("a list")
            .iter()
            .map(|i| {
                let mut i = i.clone();
                i["seconds"] = Value::Null;
                i
            })
            .collect()
    };
    assert_eq!(strip(&served), strip(&cli.json()));
    assert_eq!(strip(&served).len(), 2, "{served}");

    let page = server.get("/");
    assert_eq!(page.status, 200);
    let csp = page
        .header("content-security-policy")
        .expect("a CSP header");
    assert!(
        csp.starts_with("default-src 'none'; style-src 'sha256-"),
        "{csp}"
    );
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert!(request(&server.base, "HEAD", "/").status == 200);
    for (path, why) in [
        ("/?window=forever", "window must be 24h or 7d"),
        ("/?color=red", "unknown query parameter \"color\""),
        ("/history.json?since=soon", "since: "),
        ("/history.json?since=900h", "at most 168h"),
        ("/status.json?x=1", "takes none"),
    ] {
        let r = server.get(path);
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert!(r.body.contains(why), "{path}: {}", r.body);
    }
    for method in ["POST", "PUT", "DELETE"] {
        let r = request(&server.base, method, "/status.json");
        assert_eq!(r.status, 405, "{method}: {}", r.body);
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
    }
    assert_eq!(server.get("/healthz").body, "ok\n");
    assert_eq!(server.get("/nowhere").status, 404);
    let status = server.stop();
    assert!(
        status.success(),
        "pool serve exited with {status} on SIGTERM"
    );
    let said = server.bg.all_stderr();
    assert!(said.contains("stopped by SIGTERM"), "{said}");
}

#[test]
fn status_html_writes_the_page_as_one_static_file() {
    let f = Fixture::new();
    let dir = tempfile::TempDir::new().expect("a temp dir");
    let file = dir.path().join("status.html");
    let file_arg = file.display().to_string();
    pool(&f.src(), &["status", "--html", &file_arg]).assert_success();
    let page = std::fs::read_to_string(&file).expect("the page");
    assert!(page.contains(r#"<meta http-equiv="Content-Security-Policy""#));
    assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(!page.contains("<img") && !page.contains("<script"));
    assert!(page.contains("builds/7"));
    assert!(page.contains("over the last 7 days"));
}

/// Requests `count` pages and scrapes from `threads` threads, stopping at
/// `limit`; returns (requests answered, seconds taken).
fn hammer(server: &Server, count: usize, threads: usize, limit: Duration) -> (usize, f64) {
    let paths = ["/", "/metrics", "/status.json", "/history.json", "/healthz"];
    let start = Instant::now();
    let done: usize = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let base = server.base.clone();
                s.spawn(move || {
                    let mut ok = 0;
                    for i in 0..count / threads {
                        if start.elapsed() > limit {
                            break;
                        }
                        let r = request(&base, "GET", paths[(i + t) % paths.len()]);
                        assert_eq!(r.status, 200, "{}", r.body);
                        ok += 1;
                    }
                    ok
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a worker"))
            .sum()
    });
    (done, start.elapsed().as_secs_f64())
}

fn load(count: usize, limit: Duration) {
    let f = Fixture::new();
    let proxy = FaultProxy::start(f.daemon.port(), Rates::none());
    let server = Server::start(&proxy.url("locks.git"), "1s");
    server.wait_for_status("qa claimed", |s| lock(s, "qa")["state"] == "claimed");
    let repo = format!("source=\"{}\",branch=\"main\"", proxy.url("locks.git"));
    let refreshes = |s: &Server| s.metric(&format!("pool_resource_refreshes_total{{{repo}}}"));
    // Settle the connection count on a refresh boundary.
    assert!(proxy.wait_idle(Duration::from_secs(10)));
    let (conns0, refreshes0) = (proxy.counts().connections, refreshes(&server));
    let (done, secs) = hammer(&server, count, 4, limit);
    assert!(proxy.wait_idle(Duration::from_secs(10)));
    let (conns1, refreshes1) = (proxy.counts().connections, refreshes(&server));
    let rate = done as f64 / secs;
    let (conns, looks) = (conns1 - conns0, refreshes1 - refreshes0);
    eprintln!(
        "load: {done} requests in {secs:.2}s = {rate:.0} requests/s; git server saw {conns} connections during {looks} refreshes ({} in all since start)",
        conns1
    );
    assert!(done >= count.min(200), "only {done} requests answered");
    assert!(rate >= 100.0, "only {rate:.0} requests/s");
    // One cheap look per refresh, whatever the load (the repository does
    // not change meanwhile); one more for a refresh under way at either end.
    assert!(
        conns as f64 <= looks + 1.0,
        "{conns} git connections for {looks} refreshes and {done} requests"
    );
    assert!(
        looks <= secs.ceil() + 2.0,
        "{looks} refreshes in {secs:.1}s"
    );
}

#[test]
fn a_load_of_requests_costs_the_git_server_only_the_timers_looks() {
    load(1500, Duration::from_secs(15));
}

/// On demand: cargo test --test integration serve::load_at_length -- --ignored --nocapture
#[test]
#[ignore = "a minute long; run on demand"]
fn load_at_length() {
    load(30_000, Duration::from_secs(60));
}
