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
//! [`crate::config::Source`] from `--source FILE` (YAML or JSON, `-` for stdin) or
//! `POOL_SOURCE` (JSON) with `--uri`/`--branch`/`--pool` overrides (with
//! none of them it is a usage error naming both), opens the same backend the
//! resource would ([`crate::store::open::open_store`]) and runs one of the
//! [`crate::operator::commands`] (its [`Context`]), which runs one
//! [`crate::operator::ops`] function. Read-only commands print one JSON document with `--json`;
//! everything else a person reads goes to stderr, scrubbed of the source's
//! secrets, errors as [`report`] writes them. Colour only on a terminal,
//! never with `NO_COLOR`.

use std::io::{IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::Shell;

use crate::error::{Error, Result};
use crate::model::duration::parse_go_duration;
use crate::model::names::LockName;
use crate::model::pool::Single;
use crate::operator::commands::context::Context;
use crate::operator::commands::{change, history, hold, line, reap, serve, status};
use crate::operator::ops::change::Guard;
use crate::process::log::{stderr_wants_colour, Log};
use crate::process::report::report;
use crate::process::signal::Interrupt;

pub use crate::operator::commands::context::{ConcourseArgs, Global};

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
    /// Release a lock; a build's claim needs --force --reason TEXT, a lock held shared also --holder ID or --all
    Release {
        /// The lock
        #[arg(value_name = "LOCK", value_parser = LockName::new)]
        lock: LockName,
        /// Release a claim a build holds
        #[arg(long)]
        force: bool,
        /// With --force, on a lock held shared: give back only this holder's share (its id: --force alone lists the holders); the last one frees the lock
        #[arg(long, value_name = "ID", requires = "force", conflicts_with = "all")]
        holder: Option<String>,
        /// With --force: free the lock for every holder of its shares at once, and repair an unreadable shares file; on a lock held by one build, the same as --force alone
        #[arg(long, requires = "force")]
        all: bool,
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
        command: command.name(),
        read_only: command.read_only(),
        env,
        stdin,
        log,
        interrupt,
    };
    let cx = &mut cx;
    match command {
        Command::Status {
            json,
            html,
            concourse,
        } => status::exec(cx, json || json_first, html.as_deref(), &concourse),
        Command::Serve {
            listen,
            refresh,
            concourse,
            grafana,
        } => serve::exec(cx, listen, refresh, &concourse, &grafana),
        Command::History {
            lock,
            since,
            json,
            concourse,
        } => history::exec(cx, lock.as_ref(), since, json || json_first, &concourse),
        Command::Init { locks } => change::init_exec(cx, &locks),
        Command::Add {
            lock,
            claimed,
            metadata,
        } => change::add(cx, &lock, claimed, metadata.as_deref()),
        Command::Remove { lock, force } => change::exec(
            cx,
            &Single::Remove(lock).into(),
            Guard {
                force,
                ..Guard::default()
            },
            false,
        ),
        Command::Claim { lock, wait } => {
            change::exec(cx, &Single::Claim(lock).into(), Guard::default(), wait)
        }
        Command::Release {
            lock,
            force,
            holder,
            all,
        } => change::exec(
            cx,
            &Single::Release(lock).into(),
            Guard {
                force,
                holder: holder.as_deref(),
                all,
            },
            false,
        ),
        Command::Hold => hold::exec(cx, true),
        Command::Unhold => hold::exec(cx, false),
        Command::Dequeue { waiter } => line::exec(cx, &waiter),
        Command::Reap {
            older_than,
            dead,
            grace,
            finished,
            missing,
            dry_run,
            concourse,
        } => reap::exec(
            cx,
            reap::Options {
                older_than: older_than.filter(|_| !dead),
                grace,
                finished,
                missing,
                dry_run,
                concourse: &concourse,
            },
        ),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "pool", &mut script);
            Ok(Some(String::from_utf8_lossy(&script).into_owned()))
        }
    }
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
    use crate::model::names::PoolPath;

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
    fn a_usage_error_after_parsing_shows_the_commands_usage() {
        let text = usage_error("claim", "claim needs --reason TEXT").to_string();
        assert!(
            text.starts_with("error: claim needs --reason TEXT"),
            "{text}"
        );
        assert!(text.contains("pool claim"), "{text}");
    }
}
