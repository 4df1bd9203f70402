//! The `pool` executable: operator controls over the command line.
//!
//! The command line is a [`Cli`], parsed by clap from its derive: the
//! options any command takes ([`Global`]) and one [`Command`] with its own
//! typed options. Durations go through the project's Go-duration parser,
//! lock and pool names through [`LockName`] and [`PoolPath`], so a wrong
//! argument is a usage error before anything is read: `error: ...`, clap's
//! tip for a near miss ("a similar subcommand exists: 'status'"), the
//! usage line, exit 2. `-h`, `--help`, `help COMMAND`, `COMMAND --help`
//! and `--version` print to stdout and exit 0; `completions SHELL` prints a
//! completion script for bash, zsh, fish, elvish or PowerShell.
//!
//! A command that reaches the lock repository builds the resource's own
//! [`Source`] from `--source FILE` (YAML or JSON, `-` for stdin) or
//! `POOL_SOURCE` (JSON) with `--uri`/`--branch`/`--pool` overrides (with
//! none of them it is a usage error naming both), opens the same backend the
//! resource would ([`open_store`]) and runs one [`crate::operator::ops`]
//! function. Read-only commands print one JSON document with `--json`;
//! everything else a person reads goes to stderr, scrubbed of the source's
//! secrets, errors as [`report`] writes them. Colour only on a terminal,
//! never with `NO_COLOR`.

use std::fmt;
use std::io::{IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand};
use clap_complete::Shell;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::raw_secrets;
use crate::config::Source;
use crate::error::{Error, Result};
use crate::model::duration::{parse_go_duration, utc};
use crate::model::names::{LockName, PoolPath};
use crate::model::pool::{Operation, Single};
use crate::operator::ops::{self, Done, Guard, Operator};
use crate::process::clock::now_unix;
use crate::process::log::{stderr_wants_colour, Log};
use crate::process::report::report;
use crate::process::signal::Interrupt;
use crate::protocol::RawRequest;
use crate::store::open::open_store;
use crate::store::seam::Cache;
use crate::store::seam::LockStore;

const AFTER_HELP: &str = "\
The lock repository is the resource's `source` block: --source FILE (YAML or
JSON, `-` reads stdin), else the environment variable POOL_SOURCE (JSON);
--uri, --branch and --pool override its fields. Without a pool, status,
history and serve cover every pool on the branch.

Exit status: 0 done, 1 failed, 2 usage error.";

/// The parsed command line of `pool`.
#[derive(Debug, Parser)]
#[command(
    name = "pool",
    bin_name = "pool",
    version,
    about = "Operate a pool of locks kept in a Git repository, as the pool resource sees it",
    after_help = AFTER_HELP,
    subcommand_required = true
)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: Global,
    /// `pool --json status`: the old usage line put `--json` before the
    /// command; still accepted there, for `status` and `history` only.
    #[arg(long = "json", hide = true)]
    pub json_first: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes, before or after the command's name.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// The resource's source block, YAML or JSON (-: stdin); only serve takes several
    #[arg(long, global = true, value_name = "FILE")]
    pub source: Vec<String>,
    /// Override source.uri
    #[arg(long, global = true, value_name = "URI")]
    pub uri: Option<String>,
    /// Override source.branch
    #[arg(long, global = true, value_name = "BRANCH")]
    pub branch: Option<String>,
    /// Override source.pool
    #[arg(long, global = true, value_name = "POOL", value_parser = PoolPath::new)]
    pub pool: Option<PoolPath>,
    /// Who acts, in the commit's trailers (default: git's user.name, else $USER@hostname)
    #[arg(long = "as", global = true, value_name = "NAME")]
    pub as_name: Option<String>,
    /// Why, in the commit's trailers (claim and hold need it)
    #[arg(long, global = true, value_name = "TEXT")]
    pub reason: Option<String>,
}

/// How `status`, `history`, `serve` and `reap --dead` reach Concourse
/// (credentials: `CONCOURSE_TOKEN`, or `CONCOURSE_USERNAME` and
/// `CONCOURSE_PASSWORD`, or `--fly-target`).
#[derive(Debug, Default, Args)]
pub struct ConcourseArgs {
    /// The Concourse to ask about holders' builds (else each claim's own)
    #[arg(long, value_name = "URL")]
    concourse_url: Option<String>,
    /// Read the Concourse URL and token from this target of ~/.flyrc
    #[arg(long, value_name = "NAME")]
    fly_target: Option<String>,
}

/// One `pool` command with its own options.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every pool and lock: state, since when, by whom
    Status {
        /// Print one JSON document instead of the table
        #[arg(long)]
        json: bool,
        /// Also write the status page of `pool serve` to FILE
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        #[command(flatten)]
        concourse: ConcourseArgs,
    },
    /// Serve the status page, its JSON and Prometheus metrics over HTTP
    Serve {
        /// Where to listen
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080", value_parser = listen_address)]
        listen: SocketAddr,
        /// How often each lock repository is looked at (at least 1s)
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = refresh_interval)]
        refresh: Duration,
        #[command(flatten)]
        concourse: ConcourseArgs,
        #[command(flatten)]
        grafana: crate::operator::grafana::Args,
    },
    /// Claims and releases, newest first
    History {
        /// Only this lock's claims
        #[arg(value_name = "LOCK", value_parser = LockName::new)]
        lock: Option<LockName>,
        /// How far back (a Go duration)
        #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = duration)]
        since: Duration,
        /// Print one JSON document (a list of claims)
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        concourse: ConcourseArgs,
    },
    /// Create the pool and the missing locks (unclaimed)
    Init {
        /// The locks the pool must have
        #[arg(value_name = "LOCK", value_parser = LockName::new)]
        locks: Vec<LockName>,
    },
    /// Add a lock to the pool
    Add {
        /// The new lock
        #[arg(value_name = "LOCK", value_parser = LockName::new)]
        lock: LockName,
        /// Add it claimed
        #[arg(long)]
        claimed: bool,
        /// The lock file's content (default: the lock's name)
        #[arg(long, value_name = "FILE")]
        metadata: Option<PathBuf>,
    },
    /// Remove a lock from the pool
    Remove {
        /// The lock
        #[arg(value_name = "LOCK", value_parser = LockName::new)]
        lock: LockName,
        /// Remove it even if claimed
        #[arg(long)]
        force: bool,
    },
    /// Claim a lock (needs --reason)
    Claim {
        /// The lock
        #[arg(value_name = "LOCK", value_parser = LockName::new)]
        lock: LockName,
        /// Wait until it is free (and the pool not held) instead of failing
        #[arg(long)]
        wait: bool,
    },
    /// Release a lock; a build's claim needs --force --reason TEXT
    Release {
        /// The lock
        #[arg(value_name = "LOCK", value_parser = LockName::new)]
        lock: LockName,
        /// Release a claim a build holds
        #[arg(long)]
        force: bool,
    },
    /// Hold the pool: acquire and claim wait until unhold (needs --reason)
    Hold,
    /// End a hold of the pool
    Unhold,
    /// Remove a stuck waiter from the pool's line (needs --reason)
    Dequeue {
        /// Its ticket id, or the build (`team/pipeline/job #name`) or build id of one ticket
        #[arg(value_name = "WAITER")]
        waiter: String,
    },
    /// Release the claims older than a duration, or whose build is dead
    #[command(group(clap::ArgGroup::new("which").required(true).args(["older_than", "dead"])))]
    Reap {
        /// Release claims held longer than this (a Go duration)
        #[arg(long, value_name = "DURATION", value_parser = duration)]
        older_than: Option<Duration>,
        /// Release claims whose Concourse build ended failed, errored or aborted, and remove waiting tickets of builds that ended
        #[arg(long)]
        dead: bool,
        /// With --dead: how long ago the build must have ended [default: 5m]
        #[arg(long, value_name = "DURATION", value_parser = duration)]
        grace: Option<Duration>,
        /// With --dead: a build that succeeded counts as dead too
        #[arg(long)]
        finished: bool,
        /// With --dead: a build Concourse does not know (404) counts as dead too
        #[arg(long)]
        missing: bool,
        /// Only say what would be released or removed
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        concourse: ConcourseArgs,
    },
    /// Print a shell completion script
    Completions {
        /// The shell
        #[arg(value_name = "SHELL")]
        shell: Shell,
    },
}

impl Command {
    /// The command's name, as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Status { .. } => "status",
            Command::Serve { .. } => "serve",
            Command::History { .. } => "history",
            Command::Init { .. } => "init",
            Command::Add { .. } => "add",
            Command::Remove { .. } => "remove",
            Command::Claim { .. } => "claim",
            Command::Release { .. } => "release",
            Command::Hold => "hold",
            Command::Unhold => "unhold",
            Command::Dequeue { .. } => "dequeue",
            Command::Reap { .. } => "reap",
            Command::Completions { .. } => "completions",
        }
    }

    /// Whether the command only reads (then a source without a pool
    /// covers every pool on the branch).
    fn read_only(&self) -> bool {
        matches!(
            self,
            Command::Status { .. } | Command::History { .. } | Command::Serve { .. }
        )
    }
}

/// A Go duration (`90s`, `1h30m`), with an example when it is not one.
fn duration(text: &str) -> std::result::Result<Duration, String> {
    parse_go_duration(text).map_err(|e| format!("{e} (a Go duration, like 90s, 15m, 1h30m or 24h)"))
}

/// `--refresh`: a duration of at least a second.
fn refresh_interval(text: &str) -> std::result::Result<Duration, String> {
    let d = duration(text)?;
    if d < Duration::from_secs(1) {
        return Err("the refresh interval is at least 1s".into());
    }
    Ok(d)
}

/// `--listen`: an address and port.
fn listen_address(text: &str) -> std::result::Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| "not an address and port (like 127.0.0.1:8080)".into())
}

/// Where a source came from, for its error messages.
#[derive(Clone, Copy)]
enum Origin<'a> {
    File(&'a str),
    Stdin,
    Env,
    Options,
}

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "--source {path}"),
            Origin::Stdin => f.write_str("--source - (stdin)"),
            Origin::Env => f.write_str("POOL_SOURCE"),
            Origin::Options => f.write_str("--uri, --branch and --pool"),
        }
    }
}

const NO_SOURCE: &str = "no lock repository given: pass --source FILE (the resource's source block, YAML or JSON; - reads stdin), set POOL_SOURCE to it as JSON, or give --uri URI --branch BRANCH";

/// A source error that says where the source came from, in the
/// operator's words: the resource's `invalid payload` is Concourse's
/// phrase for the request on stdin, which `pool` has none of.
fn in_source(err: Error, origin: Origin<'_>) -> Error {
    let Error::BadRequest(msg) = err else {
        return err;
    };
    let lines: Vec<String> = msg
        .lines()
        .map(|line| {
            match line
                .strip_prefix("invalid payload (missing ")
                .and_then(|rest| rest.strip_suffix(')'))
            {
                Some(field) => format!("source.{field} is missing"),
                None => line
                    .strip_prefix("invalid payload: ")
                    .unwrap_or(line)
                    .to_string(),
            }
        })
        .collect();
    Error::BadRequest(format!(
        "{} (in the source from {origin})",
        lines.join("; ")
    ))
}

/// What a command needs besides its own options.
struct Context<'a> {
    global: &'a Global,
    env: &'a dyn Fn(&str) -> Option<String>,
    stdin: &'a mut dyn Read,
    log: &'a Log,
    interrupt: &'a Interrupt,
}

/// The lock repository a command works on.
struct Target {
    source: Source,
    /// Whether the source names a pool (else a read-only command covers
    /// every pool on the branch).
    pool_given: bool,
    store: Box<dyn LockStore>,
}

impl Context<'_> {
    /// The raw `source` object: `--source path` (YAML or JSON, `-` is
    /// stdin), else `POOL_SOURCE`, with the overrides applied; and where it
    /// came from.
    fn raw_source<'p>(
        &mut self,
        path: Option<&'p str>,
    ) -> Result<(Map<String, Value>, Origin<'p>)> {
        let (text, origin) = match path {
            Some("-") => {
                let mut s = String::new();
                self.stdin
                    .read_to_string(&mut s)
                    .map_err(|e| Error::io("could not read the source from stdin", e))?;
                (Some(s), Origin::Stdin)
            }
            Some(path) => (
                Some(
                    std::fs::read_to_string(path)
                        .map_err(|e| Error::io(format!("could not read --source {path}"), e))?,
                ),
                Origin::File(path),
            ),
            None => match (self.env)("POOL_SOURCE").filter(|s| !s.trim().is_empty()) {
                Some(text) => (Some(text), Origin::Env),
                None if self.global.uri.is_some() => (None, Origin::Options),
                None => return Err(Error::Usage(NO_SOURCE.into())),
            },
        };
        let mut map = match text {
            // YAML is a superset of JSON: one parser reads both.
            Some(t) => match serde_norway::from_str::<Value>(&t) {
                Ok(Value::Object(m)) => m,
                Ok(Value::Null) => Map::new(),
                Ok(_) => {
                    return Err(Error::bad_request(format!(
                        "the source from {origin} must be a mapping of the resource's source fields"
                    )))
                }
                // The parser's message may quote the document: never echo it.
                Err(e) => {
                    return Err(Error::bad_request(format!(
                        "the source from {origin} is neither YAML nor JSON (line {})",
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
        let g = self.global;
        let overrides = [
            ("uri", g.uri.as_deref()),
            ("branch", g.branch.as_deref()),
            ("pool", g.pool.as_ref().map(PoolPath::as_str)),
        ];
        for (field, value) in overrides {
            if let Some(v) = value {
                map.insert(field.into(), Value::String(v.into()));
            }
        }
        Ok((map, origin))
    }

    /// The `Source` of `--source path` (else `POOL_SOURCE`) for `command`,
    /// and whether it names a pool; the secrets go to the log's redaction.
    fn load_source(&mut self, path: Option<&str>, command: &Command) -> Result<(Source, bool)> {
        let (mut raw, origin) = self.raw_source(path)?;
        self.log.add_secrets(raw_secrets(&raw));
        let pool_given = raw
            .get("pool")
            .and_then(Value::as_str)
            .is_some_and(|p| !p.is_empty());
        if !pool_given {
            if !command.read_only() {
                return Err(Error::Usage(format!(
                    "{} needs a pool: --pool POOL or source.pool",
                    command.name()
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
        let source = Source::from_request(&request).map_err(|e| in_source(e, origin))?;
        self.log.add_secrets(source.secrets());
        for warning in &source.warnings {
            self.log.warn(warning);
        }
        Ok((source, pool_given))
    }

    /// Loads the one source and opens its store, for `command`.
    fn open(&mut self, command: &Command) -> Result<Target> {
        let global = self.global;
        let (source, pool_given) =
            self.load_source(global.source.first().map(String::as_str), command)?;
        let store = open_store(&source, Cache::Fresh, self.log, self.interrupt)?;
        Ok(Target {
            source,
            pool_given,
            store,
        })
    }

    /// `--as`, else git's `user.name`/`user.email`, else `$USER@hostname`.
    fn operator(&self) -> Operator {
        let name = match &self.global.as_name {
            Some(name) => name.clone(),
            None => crate::store::git::default_user_name().unwrap_or_else(|| {
                let user = (self.env)("USER").unwrap_or_else(|| "unknown".into());
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .or_else(|| (self.env)("HOSTNAME"))
                    .unwrap_or_else(|| "localhost".into());
                format!("{user}@{}", host.trim())
            }),
        };
        Operator {
            name,
            reason: self.global.reason.clone(),
        }
    }

    /// Tells the operator what a change did.
    fn done(&self, done: &Done) {
        for line in &done.lines {
            self.log.line(line);
        }
    }
}

/// The usage rules clap cannot say: `--reason` and `--json` are accepted
/// anywhere on the line but only some commands take them; one `--source`
/// except for `serve`.
fn check_usage(cli: &Cli) -> Result<()> {
    let command = &cli.command;
    let name = command.name();
    if cli.json_first && !matches!(command, Command::Status { .. } | Command::History { .. }) {
        return Err(Error::Usage(format!(
            "{name} does not take --json (only status and history print JSON)"
        )));
    }
    if cli.global.source.len() > 1 && !matches!(command, Command::Serve { .. }) {
        return Err(Error::Usage(format!(
            "{name} takes one --source (only serve takes several)"
        )));
    }
    let needs_reason = matches!(
        command,
        Command::Claim { .. } | Command::Hold | Command::Dequeue { .. }
    );
    if needs_reason && cli.global.reason.is_none() {
        return Err(Error::Usage(format!(
            "{name} needs --reason TEXT (it is recorded in the commit)"
        )));
    }
    if let Command::Reap {
        dead: false,
        grace,
        finished,
        missing,
        concourse,
        ..
    } = command
    {
        let given = [
            ("--grace", grace.is_some()),
            ("--finished", *finished),
            ("--missing", *missing),
            ("--concourse-url", concourse.concourse_url.is_some()),
            ("--fly-target", concourse.fly_target.is_some()),
        ];
        if let Some((opt, _)) = given.iter().find(|(_, given)| *given) {
            return Err(Error::Usage(format!("reap takes {opt} only with --dead")));
        }
    }
    Ok(())
}

/// `value` as one pretty JSON document.
fn to_json(value: &impl Serialize) -> Result<String> {
    serde_json::to_string_pretty(value)
        .map_err(|e| Error::io("could not write the document as JSON", e.into()))
}

/// Runs the parsed command line; returns what to print on stdout.
pub fn run(
    cli: Cli,
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    log: &Log,
    interrupt: &Interrupt,
) -> Result<Option<String>> {
    check_usage(&cli)?;
    let Cli {
        global,
        json_first,
        command,
    } = cli;
    let mut cx = Context {
        global: &global,
        env,
        stdin,
        log,
        interrupt,
    };
    match &command {
        Command::Status {
            json,
            html,
            concourse,
        } => {
            let mut t = cx.open(&command)?;
            let mut builds = concourse_builds(&cx, concourse)?;
            let pool = t.pool_given.then_some(&t.source.pool);
            let st = match html {
                None => {
                    let mut st = ops::status(t.store.as_mut(), &t.source.branch, pool)?;
                    annotate(builds.as_mut(), &mut st, log);
                    st
                }
                Some(file) => {
                    let mut read =
                        crate::operator::watch::read_all(t.store.as_mut(), &t.source.branch, pool)?;
                    annotate(builds.as_mut(), &mut read.status, log);
                    write_page(&t.source, read.clone(), file, log)?;
                    read.status
                }
            };
            Ok(Some(if *json || json_first {
                to_json(&st)?
            } else {
                st.render()
            }))
        }
        Command::Serve {
            listen,
            refresh,
            concourse,
            grafana,
        } => serve(&mut cx, &command, *listen, *refresh, concourse, grafana),
        Command::History {
            lock,
            since,
            json,
            concourse,
        } => {
            let mut t = cx.open(&command)?;
            let store = t.store.as_mut();
            let tip = match store.branch_tip()? {
                Some(tip) => tip,
                None => {
                    let missing = Error::BranchNotFound {
                        branch: t.source.branch.clone(),
                        uri: t.source.uri.to_string(),
                    };
                    return Err(crate::store::explain::explain(store, missing));
                }
            };
            let pools = if t.pool_given {
                vec![t.source.pool.to_string()]
            } else {
                ops::find_pools(store, &tip)?
            };
            // Go durations end before 2^63 ns, about 292 years: no overflow.
            let from = now_unix() - since.as_secs() as i64;
            let lock = lock.as_ref().map(LockName::as_str);
            let mut h = ops::history(store, &t.source.branch, &pools, lock, from)?;
            if let Some(b) = concourse_builds(&cx, concourse)?.as_mut() {
                b.annotate_history(&mut h);
                for w in crate::operator::concourse::warnings(b) {
                    log.warn(w);
                }
            }
            if *json || json_first {
                return Ok(Some(to_json(&h)?));
            }
            if h.is_empty() {
                let of = lock.map(|l| format!(" of {l}")).unwrap_or_default();
                log.line(format_args!("no claims{of} since {}", utc(from)));
                return Ok(None);
            }
            Ok(Some(render_history(&h)))
        }
        Command::Init { locks } => {
            let mut t = cx.open(&command)?;
            let pool = &t.source.pool;
            let done = ops::init(t.store.as_mut(), pool, locks, &cx.operator())?;
            cx.done(&done);
            if done.commits.is_empty() {
                log.line(format_args!(
                    "pool {pool} is initialised already: no commit"
                ));
            }
            Ok(None)
        }
        Command::Add {
            lock,
            claimed,
            metadata,
        } => {
            let content = match metadata {
                Some(path) => std::fs::read(path).map_err(|e| Error::Input {
                    what: "could not read --metadata".into(),
                    path: path.clone(),
                    source: e,
                })?,
                None => format!("{lock}\n").into_bytes(),
            };
            let op: Operation = Single::Add {
                lock: lock.clone(),
                content,
                claimed: *claimed,
            }
            .into();
            change_lock(&mut cx, &command, &op, Guard::default(), false)
        }
        Command::Remove { lock, force } => {
            let op: Operation = Single::Remove(lock.clone()).into();
            change_lock(&mut cx, &command, &op, Guard { force: *force }, false)
        }
        Command::Claim { lock, wait } => {
            let op: Operation = Single::Claim(lock.clone()).into();
            change_lock(&mut cx, &command, &op, Guard::default(), *wait)
        }
        Command::Release { lock, force } => {
            let op: Operation = Single::Release(lock.clone()).into();
            change_lock(&mut cx, &command, &op, Guard { force: *force }, false)
        }
        Command::Hold | Command::Unhold => {
            let mut t = cx.open(&command)?;
            let hold = matches!(command, Command::Hold);
            let done = ops::set_hold(t.store.as_mut(), &t.source.pool, &cx.operator(), hold)?;
            cx.done(&done);
            Ok(None)
        }
        Command::Dequeue { waiter } => {
            let mut t = cx.open(&command)?;
            let done = ops::dequeue(t.store.as_mut(), &t.source.pool, waiter, &cx.operator())?;
            cx.done(&done);
            Ok(None)
        }
        Command::Reap {
            older_than,
            dead,
            grace,
            finished,
            missing,
            dry_run,
            concourse,
        } => {
            let mut t = cx.open(&command)?;
            let done = match older_than {
                Some(older_than) if !*dead => ops::reap(
                    t.store.as_mut(),
                    &t.source.branch,
                    &t.source.pool,
                    older_than.as_secs() as i64,
                    *dry_run,
                    &cx.operator(),
                )?,
                _ => {
                    let Some(mut builds) = concourse_builds(&cx, concourse)? else {
                        return Err(Error::Usage(
                            "reap --dead needs Concourse access: CONCOURSE_TOKEN, CONCOURSE_USERNAME and CONCOURSE_PASSWORD, --fly-target NAME, or --concourse-url URL".into(),
                        ));
                    };
                    let policy = crate::operator::concourse::build::DeadPolicy {
                        grace: grace.unwrap_or(DEFAULT_GRACE).as_secs() as i64,
                        finished: *finished,
                        missing: *missing,
                    };
                    builds.set_bounds(crate::operator::concourse::client::Bounds::REAP);
                    let url = builds.access().url.clone();
                    ops::reap_dead(
                        t.store.as_mut(),
                        &t.source.branch,
                        &t.source.pool,
                        policy,
                        *dry_run,
                        &cx.operator(),
                        url.as_deref(),
                        // Every build is asked about before anything is released.
                        &mut |refs| {
                            builds.lookup_all(refs).inspect_err(|_| {
                                log.line("reap --dead: Concourse could not say whether the builds are alive, so nothing was released or removed")
                            })
                        },
                    )?
                }
            };
            cx.done(&done);
            Ok(None)
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "pool", &mut script);
            Ok(Some(String::from_utf8_lossy(&script).into_owned()))
        }
    }
}

/// `add`, `remove`, `claim`, `release`: one change to one lock; `wait`
/// waits out a claimed lock or a held pool, `retry_delay` between looks.
fn change_lock(
    cx: &mut Context<'_>,
    command: &Command,
    op: &Operation,
    guard: Guard,
    wait: bool,
) -> Result<Option<String>> {
    let mut t = cx.open(command)?;
    let (log, interrupt) = (cx.log, cx.interrupt);
    let delay = t.source.retry_delay;
    let mut wait_fn = |why: &str| -> Result<()> {
        log.line(format_args!("waiting: {why}"));
        interrupt.sleep(delay, "waiting to claim")
    };
    let wait_fn: Option<ops::WaitFn<'_>> = if wait { Some(&mut wait_fn) } else { None };
    let done = ops::change_lock(
        t.store.as_mut(),
        &t.source.pool,
        op,
        &cx.operator(),
        guard,
        wait_fn,
    )?;
    cx.done(&done);
    Ok(None)
}

/// `pool serve`: every `--source` (else `POOL_SOURCE`), every pool on its
/// branch, until SIGINT or SIGTERM.
fn serve(
    cx: &mut Context<'_>,
    command: &Command,
    listen: SocketAddr,
    refresh: Duration,
    concourse: &ConcourseArgs,
    grafana: &crate::operator::grafana::Args,
) -> Result<Option<String>> {
    let global = cx.global;
    let grafana = crate::operator::grafana::Config::configure(grafana, cx.env)?;
    let paths: Vec<Option<&str>> = if global.source.is_empty() {
        vec![None]
    } else {
        global.source.iter().map(|s| Some(s.as_str())).collect()
    };
    let mut sources = Vec::new();
    for path in paths {
        let (source, _) = cx.load_source(path, command)?;
        let (log, interrupt) = (cx.log.clone(), cx.interrupt.clone());
        let open: crate::operator::watch::Opener =
            Box::new(move |s: &Source| open_store(s, Cache::Fresh, &log, &interrupt));
        sources.push((source, open));
    }
    let builds = concourse_builds(cx, concourse)?;
    let config = crate::operator::serve::Config {
        listen,
        refresh,
        builds,
        grafana,
    };
    crate::operator::serve::serve(config, sources, cx.log, cx.interrupt)?;
    Ok(None)
}

/// `status --html FILE`: the page of `pool serve`, as one static file.
fn write_page(
    source: &Source,
    read: crate::operator::watch::Read,
    file: &Path,
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
    let shown = file.display();
    std::fs::write(file, log.redact(&page))
        .map_err(|e| Error::io(format!("could not write --html {shown}"), e))?;
    log.line(format_args!("wrote the status page to {shown}"));
    Ok(())
}

/// How long a build must have been over before `reap --dead` releases its claim.
const DEFAULT_GRACE: Duration = Duration::from_secs(300);

/// The Concourse builds API, when `--concourse-url`, `--fly-target` or the
/// environment configure it.
fn concourse_builds(
    cx: &Context<'_>,
    args: &ConcourseArgs,
) -> Result<Option<crate::operator::concourse::Builds>> {
    crate::operator::concourse::Builds::configure(
        args.concourse_url.as_deref(),
        args.fly_target.as_deref(),
        cx.env,
        cx.log,
        cx.interrupt,
    )
}

/// Adds the holders' build status to `st`, warning of what Concourse did not say.
fn annotate(
    builds: Option<&mut crate::operator::concourse::Builds>,
    st: &mut ops::Status,
    log: &Log,
) {
    if let Some(b) = builds {
        b.annotate_status(st);
        for w in crate::operator::concourse::warnings(b) {
            log.warn(w);
        }
    }
}

fn render_history(h: &[ops::Interval]) -> String {
    let mut out = String::new();
    let now = now_unix();
    for i in h {
        let until = match (i.released_at, &i.build_status) {
            (Some(t), _) => utc(t),
            (None, Some(b)) => format!("still claimed, build {}", b.describe(now)),
            (None, None) => "still claimed".into(),
        };
        out.push_str(&format!(
            "{}/{}  {} → {}  ({})  by {}\n",
            i.pool,
            i.lock,
            utc(i.claimed_at),
            until,
            crate::model::duration::human(Duration::from_secs(i.seconds as u64)),
            i.claimed_by.describe()
        ));
    }
    out
}

/// Writes a usage error as clap renders it (`error: ...`, a tip, the
/// usage line), in colour only when [`stderr_wants_colour`]. The house
/// labels its lines in lower case (`error:`, `warning:`, `usage:`); clap
/// heads the usage line `Usage:`.
fn print_usage_error(err: &clap::Error, log: &Log) {
    let styled = err.render();
    let colour = stderr_wants_colour(|k| std::env::var(k).ok(), std::io::stderr().is_terminal());
    let text = if colour {
        styled.ansi().to_string()
    } else {
        styled.to_string()
    };
    log.line(text.trim_end().replacen("Usage:", "usage:", 1));
}

/// A usage error found after parsing, rendered like clap's own with the
/// usage line of `command`.
fn usage_error(command: &str, msg: &str) -> clap::Error {
    let mut cli = Cli::command();
    cli.build();
    match cli.find_subcommand_mut(command) {
        Some(sub) => sub.error(ErrorKind::MissingRequiredArgument, msg),
        None => cli.error(ErrorKind::MissingRequiredArgument, msg),
    }
}

/// The whole of the `pool` executable's `main`: exit 0 done, 1 failed, 2 usage.
pub fn main() -> ExitCode {
    let log = Log::stderr();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and --version: to stdout, exit 0, in clap's colours.
        Err(err) if !err.use_stderr() => {
            return match err.print() {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
        Err(err) => {
            print_usage_error(&err, &log);
            return ExitCode::from(2);
        }
    };
    let name = cli.command.name();
    let env = |k: &str| std::env::var(k).ok();
    let result =
        Interrupt::install().and_then(|i| run(cli, &env, &mut std::io::stdin().lock(), &log, &i));
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
            print_usage_error(&usage_error(name, &msg), &log);
            ExitCode::from(2)
        }
        Err(err) => {
            report(&err, &log);
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> std::result::Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("pool").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_go_before_or_after_the_command() {
        let before = parse(&["--as", "ops", "--pool", "envs", "init", "a", "b"]).unwrap();
        let after = parse(&["init", "a", "b", "--as", "ops", "--pool", "envs"]).unwrap();
        for cli in [before, after] {
            assert_eq!(cli.global.as_name.as_deref(), Some("ops"));
            assert_eq!(cli.global.pool.as_ref().map(PoolPath::as_str), Some("envs"));
            let Command::Init { locks } = cli.command else {
                panic!("not init: {:?}", cli.command)
            };
            let names: Vec<&str> = locks.iter().map(LockName::as_str).collect();
            assert_eq!(names, ["a", "b"]);
        }
    }

    #[test]
    fn durations_are_go_durations_with_defaults() {
        let cli = parse(&["history", "qa"]).unwrap();
        let Command::History { since, lock, .. } = cli.command else {
            panic!("not history")
        };
        assert_eq!(since, Duration::from_secs(86_400));
        assert_eq!(lock.as_ref().map(LockName::as_str), Some("qa"));
        let cli = parse(&["reap", "--older-than", "1h30m"]).unwrap();
        let Command::Reap { older_than, .. } = cli.command else {
            panic!("not reap")
        };
        assert_eq!(older_than, Some(Duration::from_secs(5400)));
        let err = parse(&["history", "--since", "3"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        let text = err.to_string();
        assert!(
            text.contains("missing unit") && text.contains("1h30m"),
            "{text}"
        );
        let err = parse(&["serve", "--refresh", "500ms"]).unwrap_err();
        assert!(err.to_string().contains("at least 1s"), "{err}");
    }

    #[test]
    fn lock_and_pool_names_are_validated_while_parsing() {
        let err = parse(&["claim", ".hidden", "--reason", "x"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        assert!(err.to_string().contains("starts with '.'"), "{err}");
        let err = parse(&["--pool", "../up", "status"]).unwrap_err();
        assert!(err.to_string().contains("'..'"), "{err}");
    }

    #[test]
    fn the_rules_clap_cannot_say_are_usage_errors() {
        for args in [
            &["claim", "a"][..],
            &["hold"],
            &["--json", "init"],
            &["--source", "a.yml", "--source", "b.yml", "status"],
        ] {
            let cli = parse(args).unwrap();
            assert!(
                matches!(check_usage(&cli), Err(Error::Usage(_))),
                "{args:?}"
            );
        }
        for args in [
            &["claim", "a", "--reason", "x"][..],
            &["--json", "status"],
            &["--source", "a.yml", "--source", "b.yml", "serve"],
        ] {
            assert!(check_usage(&parse(args).unwrap()).is_ok(), "{args:?}");
        }
    }

    #[test]
    fn a_source_error_names_where_the_source_came_from() {
        let err = in_source(
            Error::bad_request("invalid payload (missing uri)\ninvalid payload (missing branch)"),
            Origin::Env,
        );
        assert_eq!(
            err.to_string(),
            "source.uri is missing; source.branch is missing (in the source from POOL_SOURCE)"
        );
        let err = in_source(
            Error::bad_request("invalid payload: source.retry_delay: bad"),
            Origin::File("locks.yml"),
        );
        assert_eq!(
            err.to_string(),
            "source.retry_delay: bad (in the source from --source locks.yml)"
        );
    }

    #[test]
    fn a_usage_error_after_parsing_shows_the_commands_usage() {
        let text = usage_error("claim", "claim needs --reason TEXT").to_string();
        assert!(
            text.starts_with("error: claim needs --reason TEXT"),
            "{text}"
        );
        assert!(text.contains("pool claim"), "{text}");
    }
}
