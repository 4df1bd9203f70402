//! The `pool` executable: operator controls over the command line.
//!
//! Parses the arguments into a [`Invocation`] (usage errors exit 2), builds
//! the resource's own [`Source`] from `--source FILE` (YAML or JSON, `-`
//! for stdin) or `POOL_SOURCE` (JSON) with `--uri`/`--branch`/`--pool`
//! overrides, opens the same backend the resource would ([`crate::store::open::open_store`])
//! and runs one [`crate::operator::ops`] function. Read-only commands print one JSON
//! document with `--json`; everything else a person reads goes to stderr,
//! scrubbed of the source's secrets.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::config::raw_secrets;
use crate::config::Source;
use crate::error::{Error, Result};
use crate::model::duration::{now_unix, parse_go_duration};
use crate::model::names::LockName;
use crate::model::pool::Operation;
use crate::operator::ops::{self, Guard, Operator};
use crate::process::log::Log;
use crate::process::report::report;
use crate::process::signal::Interrupt;
use crate::resource::protocol::RawRequest;
use crate::store::git::Purpose;
use crate::store::open::open_store;

const USAGE: &str = "pool [--source FILE | POOL_SOURCE=JSON] [--uri URI] [--branch B] [--pool P] [--as NAME] [--reason TEXT] [--json] COMMAND
commands:
  status [--html FILE]         every pool and lock: state, since when, by whom (--html: also as a page)
  serve [--listen ADDR] [--refresh D]
                               the page, JSON and metrics over HTTP (default 127.0.0.1:8080, 30s);
                               --source may be given once per lock repository
  history [LOCK] [--since D]   claims and releases, newest first (default --since 24h)
  init LOCK...                 create the pool and the missing locks (unclaimed)
  add LOCK [--claimed] [--metadata FILE]
  remove LOCK [--force]        a claimed lock needs --force
  claim LOCK --reason TEXT [--wait]
  release LOCK                 a build's claim needs --force --reason TEXT
  hold --reason TEXT           acquire and claim wait until unhold
  unhold
  dequeue WAITER --reason TEXT remove a stuck waiter from the line (ticket id, build name or build id)
  reap --older-than D [--dry-run]";

/// Options that take a value.
const VALUED: [&str; 12] = [
    "--source",
    "--uri",
    "--branch",
    "--pool",
    "--as",
    "--reason",
    "--metadata",
    "--since",
    "--older-than",
    "--html",
    "--listen",
    "--refresh",
];
/// Flags.
const FLAGS: [&str; 6] = [
    "--json",
    "--force",
    "--wait",
    "--claimed",
    "--dry-run",
    "--help",
];
/// Options every command takes.
const GLOBAL: [&str; 7] = [
    "--source", "--uri", "--branch", "--pool", "--as", "--reason", "--help",
];

/// The parsed command line.
#[derive(Debug, Default)]
pub struct Invocation {
    /// The command.
    pub command: String,
    /// Its positional arguments.
    pub args: Vec<String>,
    /// `--name value` options, by name.
    pub values: std::collections::BTreeMap<&'static str, String>,
    /// Flags given.
    pub flags: Vec<&'static str>,
    /// Every `--source`, in order (only `serve` takes more than one).
    pub sources: Vec<String>,
}

impl Invocation {
    /// Parses `args` (without the program name).
    pub fn parse(args: &[String]) -> Result<Invocation> {
        let mut inv = Invocation::default();
        let mut it = args.iter();
        let mut positional = Vec::new();
        while let Some(arg) = it.next() {
            if let Some(rest) = arg.strip_prefix("--") {
                let (name, inline) = match rest.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (rest, None),
                };
                let name = format!("--{name}");
                if let Some(opt) = VALUED.iter().find(|o| **o == name) {
                    let value = match inline {
                        Some(v) => v,
                        None => it
                            .next()
                            .cloned()
                            .ok_or_else(|| Error::Usage(format!("{opt} needs a value")))?,
                    };
                    if *opt == "--source" {
                        inv.sources.push(value.clone());
                    }
                    inv.values.insert(opt, value);
                } else if let Some(flag) = FLAGS.iter().find(|f| **f == name) {
                    inv.flags.push(flag);
                } else {
                    return Err(Error::Usage(format!("unknown option {name}\n{USAGE}")));
                }
            } else {
                positional.push(arg.clone());
            }
        }
        if inv.flag("--help") {
            return Err(Error::Usage(USAGE.to_string()));
        }
        let mut positional = positional.into_iter();
        inv.command = positional
            .next()
            .ok_or_else(|| Error::Usage(format!("no command\n{USAGE}")))?;
        inv.args = positional.collect();
        let (allowed, min, max): (&[&str], usize, usize) = match inv.command.as_str() {
            "status" => (&["--json", "--html"], 0, 0),
            "serve" => (&["--listen", "--refresh"], 0, 0),
            "history" => (&["--json", "--since"], 0, 1),
            "init" => (&[], 0, usize::MAX),
            "add" => (&["--claimed", "--metadata"], 1, 1),
            "remove" => (&["--force"], 1, 1),
            "claim" => (&["--wait"], 1, 1),
            "release" => (&["--force"], 1, 1),
            "hold" | "unhold" => (&[], 0, 0),
            "dequeue" => (&[], 1, 1),
            "reap" => (&["--older-than", "--dry-run"], 0, 0),
            other => return Err(Error::Usage(format!("unknown command {other:?}\n{USAGE}"))),
        };
        let given = inv.values.keys().copied().chain(inv.flags.iter().copied());
        for opt in given {
            if !GLOBAL.contains(&opt) && !allowed.contains(&opt) {
                return Err(Error::Usage(format!(
                    "{} does not take {opt}\n{USAGE}",
                    inv.command
                )));
            }
        }
        if inv.sources.len() > 1 && inv.command != "serve" {
            return Err(Error::Usage(format!(
                "{} takes one --source (only serve takes several)",
                inv.command
            )));
        }
        if inv.args.len() < min || inv.args.len() > max {
            return Err(Error::Usage(format!(
                "wrong number of arguments for {}\n{USAGE}",
                inv.command
            )));
        }
        let needs_reason = matches!(inv.command.as_str(), "claim" | "hold" | "dequeue");
        if needs_reason && inv.value("--reason").is_none() {
            return Err(Error::Usage(format!("{} needs --reason TEXT", inv.command)));
        }
        if inv.command == "reap" && inv.value("--older-than").is_none() {
            return Err(Error::Usage("reap needs --older-than DURATION".into()));
        }
        Ok(inv)
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    fn flag(&self, name: &str) -> bool {
        self.flags.contains(&name)
    }

    fn duration(&self, name: &str) -> Result<Option<Duration>> {
        self.value(name)
            .map(|v| parse_go_duration(v).map_err(|e| Error::Usage(format!("{name}: {e}"))))
            .transpose()
    }
}

/// Whether a command only reads.
fn read_only(command: &str) -> bool {
    matches!(command, "status" | "history" | "serve")
}

/// The raw `source` object: `--source FILE` (`path`; YAML or JSON, `-` is
/// stdin), else `POOL_SOURCE`, with the overrides applied.
fn raw_source(
    inv: &Invocation,
    path: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
) -> Result<Map<String, Value>> {
    let text = match path {
        Some("-") => {
            let mut s = String::new();
            stdin
                .read_to_string(&mut s)
                .map_err(|e| Error::io("could not read the source from stdin", e))?;
            Some(s)
        }
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| Error::io(format!("could not read --source {path}"), e))?,
        ),
        None => env("POOL_SOURCE").filter(|s| !s.trim().is_empty()),
    };
    let mut map = match text {
        // YAML is a superset of JSON: one parser reads both.
        Some(t) => match serde_norway::from_str::<Value>(&t) {
            Ok(Value::Object(m)) => m,
            Ok(Value::Null) => Map::new(),
            Ok(_) => {
                return Err(Error::bad_request(
                    "the source must be a mapping of the resource's source fields",
                ))
            }
            // The parser's message may quote the document: never echo it.
            Err(e) => {
                return Err(Error::bad_request(format!(
                    "the source is neither YAML nor JSON (line {})",
                    e.location().map(|l| l.line()).unwrap_or(0)
                )))
            }
        },
        None => Map::new(),
    };
    // A pipeline's `source:` block pasted with its key.
    if map.len() == 1 {
        if let Some(Value::Object(inner)) = map.get("source") {
            map = inner.clone();
        }
    }
    for (opt, field) in [("--uri", "uri"), ("--branch", "branch"), ("--pool", "pool")] {
        if let Some(v) = inv.value(opt) {
            map.insert(field.into(), Value::String(v.into()));
        }
    }
    Ok(map)
}

/// `--as`, else git's `user.name`/`user.email`, else `$USER@hostname`.
fn operator_name(inv: &Invocation, env: &dyn Fn(&str) -> Option<String>) -> String {
    if let Some(name) = inv.value("--as") {
        return name.to_string();
    }
    if let Ok(cfg) = git2::Config::open_default() {
        let get = |k| cfg.get_string(k).ok().filter(|s: &String| !s.is_empty());
        match (get("user.name"), get("user.email")) {
            (Some(n), Some(e)) => return format!("{n} <{e}>"),
            (Some(n), None) => return n,
            (None, Some(e)) => return e,
            (None, None) => {}
        }
    }
    let user = env("USER").unwrap_or_else(|| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| env("HOSTNAME"))
        .unwrap_or_else(|| "localhost".into());
    format!("{user}@{}", host.trim())
}

/// The `Source` of `--source path` (else `POOL_SOURCE`), and whether it
/// names a pool; the secrets go to the log's redaction.
fn load_source(
    inv: &Invocation,
    path: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    log: &Log,
) -> Result<(Source, bool)> {
    let mut raw = raw_source(inv, path, env, stdin)?;
    log.add_secrets(raw_secrets(&raw));
    let pool_given = raw
        .get("pool")
        .and_then(Value::as_str)
        .is_some_and(|p| !p.is_empty());
    if !pool_given {
        if !read_only(&inv.command) {
            return Err(Error::Usage(format!(
                "{} needs a pool: --pool P or source.pool",
                inv.command
            )));
        }
        // Never used to read: the read-only commands then cover every pool.
        raw.insert("pool".into(), Value::String(".pool-resource".into()));
    }
    let request = RawRequest {
        source: raw,
        params: Map::new(),
        version: None,
    };
    let source = Source::from_request(&request)?;
    log.add_secrets(source.secrets());
    for warning in &source.warnings {
        log.warn(warning);
    }
    Ok((source, pool_given))
}

/// `pool serve`: every `--source` (else `POOL_SOURCE`), every pool on its
/// branch, until SIGINT or SIGTERM.
fn serve(
    inv: &Invocation,
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    log: &Log,
    interrupt: &Interrupt,
) -> Result<Option<String>> {
    let listen = inv.value("--listen").unwrap_or("127.0.0.1:8080");
    let listen = listen.parse().map_err(|_| {
        Error::Usage(format!(
            "--listen {listen:?} is not an address and port (like 127.0.0.1:8080)"
        ))
    })?;
    let refresh = inv
        .duration("--refresh")?
        .unwrap_or(Duration::from_secs(30));
    if refresh < Duration::from_secs(1) {
        return Err(Error::Usage("--refresh is at least 1s".into()));
    }
    let paths: Vec<Option<&str>> = if inv.sources.is_empty() {
        vec![None]
    } else {
        inv.sources.iter().map(|s| Some(s.as_str())).collect()
    };
    let mut sources = Vec::new();
    for path in paths {
        let (source, _) = load_source(inv, path, env, stdin, log)?;
        let (log, interrupt) = (log.clone(), interrupt.clone());
        let open: crate::operator::watch::Opener =
            Box::new(move |s: &Source| open_store(s, Purpose::Put, &log, &interrupt));
        sources.push((source, open));
    }
    let config = crate::operator::serve::Config { listen, refresh };
    crate::operator::serve::serve(&config, sources, log, interrupt)?;
    Ok(None)
}

/// Runs `pool` with `args`; returns what to print on stdout.
pub fn run(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    log: &Log,
    interrupt: &Interrupt,
) -> Result<Option<String>> {
    let inv = Invocation::parse(args)?;
    if inv.command == "serve" {
        return serve(&inv, env, stdin, log, interrupt);
    }
    let (source, pool_given) = load_source(&inv, inv.value("--source"), env, stdin, log)?;
    let mut store = open_store(&source, Purpose::Put, log, interrupt)?;
    let store = store.as_mut();
    let pool = &source.pool;
    let who = Operator {
        name: operator_name(&inv, env),
        reason: inv.value("--reason").map(String::from),
    };
    let json = inv.flag("--json");
    let lock = |i: usize| -> Result<LockName> {
        let arg = inv.args.get(i).map(String::as_str).unwrap_or("");
        LockName::new(arg).map_err(|e| Error::Usage(e.to_string()))
    };
    let done = match inv.command.as_str() {
        "status" => {
            let st = match inv.value("--html") {
                None => ops::status(store, &source.branch, pool_given.then_some(pool))?,
                Some(file) => {
                    let read = crate::operator::watch::read_all(
                        store,
                        &source.branch,
                        pool_given.then_some(pool),
                    )?;
                    write_page(&source, read.clone(), file, log)?;
                    read.status
                }
            };
            return Ok(Some(if json {
                serde_json::to_string_pretty(&st).unwrap_or_default()
            } else {
                st.render()
            }));
        }
        "history" => {
            let since = inv
                .duration("--since")?
                .unwrap_or(Duration::from_secs(86_400));
            let tip = store.branch_tip()?.ok_or_else(|| Error::BranchNotFound {
                branch: source.branch.clone(),
                uri: source.uri.to_string(),
            })?;
            let pools = if pool_given {
                vec![pool.to_string()]
            } else {
                ops::find_pools(store, &tip)?
            };
            let lock = inv.args.first().map(String::as_str);
            let since = now_unix() - since.as_secs() as i64;
            let h = ops::history(store, &source.branch, &pools, lock, since)?;
            return Ok(Some(if json {
                serde_json::to_string_pretty(&h).unwrap_or_default()
            } else {
                render_history(&h)
            }));
        }
        "init" => {
            let locks = (0..inv.args.len()).map(lock).collect::<Result<Vec<_>>>()?;
            ops::init(store, pool, &locks, &who)?
        }
        "add" => {
            let name = lock(0)?;
            let content = match inv.value("--metadata") {
                Some(path) => std::fs::read(path).map_err(|e| Error::Input {
                    what: "could not read --metadata".into(),
                    path: path.into(),
                    source: e,
                })?,
                None => format!("{name}\n").into_bytes(),
            };
            let op = Operation::Add {
                lock: name,
                content,
                claimed: inv.flag("--claimed"),
            };
            ops::change_lock(store, pool, &op, &who, Guard::default(), None)?
        }
        "remove" | "release" | "claim" => {
            let name = lock(0)?;
            let op = match inv.command.as_str() {
                "remove" => Operation::Remove(name),
                "release" => Operation::Release(name),
                _ => Operation::Claim(name),
            };
            let guard = Guard {
                force: inv.flag("--force"),
            };
            let delay = source.retry_delay;
            let mut wait = |why: &str| -> Result<()> {
                log.line(format_args!("waiting: {why}"));
                interrupt.sleep(delay, "waiting to claim")
            };
            let wait: Option<ops::WaitFn<'_>> = if inv.flag("--wait") {
                Some(&mut wait)
            } else {
                None
            };
            ops::change_lock(store, pool, &op, &who, guard, wait)?
        }
        "hold" => ops::set_hold(store, pool, &who, true)?,
        "unhold" => ops::set_hold(store, pool, &who, false)?,
        "dequeue" => {
            let waiter = inv.args.first().map(String::as_str).unwrap_or("");
            ops::dequeue(store, pool, waiter, &who)?
        }
        "reap" => {
            let older = inv.duration("--older-than")?.unwrap_or_default();
            ops::reap(
                store,
                &source.branch,
                pool,
                older.as_secs() as i64,
                inv.flag("--dry-run"),
                &who,
            )?
        }
        _ => return Err(Error::Usage(USAGE.into())),
    };
    for line in &done.lines {
        log.line(line);
    }
    if done.commits.is_empty() && inv.command == "init" {
        log.line(format_args!(
            "pool {pool} is initialised already: no commit"
        ));
    }
    Ok(None)
}

/// `status --html FILE`: the page of `pool serve`, as one static file.
fn write_page(
    source: &Source,
    read: crate::operator::watch::Read,
    file: &str,
    log: &Log,
) -> Result<()> {
    let now = read.status.now;
    let board = crate::operator::watch::Board {
        refresh: None,
        views: vec![crate::operator::watch::View {
            read: Some(read),
            last_success: Some(now),
            last_attempt: Some(now),
            ..crate::operator::watch::View::of(source)
        }],
    };
    let page = crate::operator::page::render(
        &board,
        now,
        crate::operator::page::Window::Day,
        crate::operator::page::Mode::Static,
    );
    std::fs::write(file, log.redact(&page))
        .map_err(|e| Error::io(format!("could not write --html {file}"), e))?;
    log.line(format_args!("wrote the status page to {file}"));
    Ok(())
}

fn render_history(h: &[ops::Interval]) -> String {
    let mut out = String::new();
    for i in h {
        let until = match i.released_at {
            Some(t) => crate::model::duration::utc(t),
            None => "still claimed".into(),
        };
        out.push_str(&format!(
            "{}/{}  {} → {}  ({})  by {}\n",
            i.pool,
            i.lock,
            crate::model::duration::utc(i.claimed_at),
            until,
            crate::model::duration::human(Duration::from_secs(i.seconds as u64)),
            i.claimed_by.describe()
        ));
    }
    out
}

/// The whole of the `pool` executable's `main`: exit 0 done, 1 failed, 2 usage.
pub fn main() -> ExitCode {
    let log = Log::stderr();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env = |k: &str| std::env::var(k).ok();
    let result =
        Interrupt::install().and_then(|i| run(&args, &env, &mut std::io::stdin().lock(), &log, &i));
    match result {
        Ok(out) => {
            if let Some(text) = out {
                let mut stdout = std::io::stdout().lock();
                let text = log.redact(&text);
                if writeln!(stdout, "{}", text.trim_end()).is_err() {
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(Error::Usage(msg)) => {
            log.line(format_args!("usage: {msg}"));
            ExitCode::from(2)
        }
        Err(err) => {
            report(&err, &log);
            ExitCode::FAILURE
        }
    }
}
