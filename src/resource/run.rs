//! The three executables' shared main: read stdin, run, print one JSON document.
//!
//! The binaries in `bin/` call [`main`] with their [`Command`]. Everything a
//! person reads goes to stderr through a [`Log`]; stdout carries exactly the
//! one JSON document Concourse reads. Errors are printed cargo-style
//! (`error: ...` and one `caused by: ...` per source), scrubbed of secrets,
//! and exit with status 1.

use std::io::{Read, Write};
use std::process::ExitCode;

use crate::config::{self, raw_secrets, Source};
use crate::error::{Error, Result};
use crate::process::log::Log;
use crate::process::report::report;
use crate::process::retry::Backoff;
use crate::process::signal::Interrupt;
use crate::protocol::{BuildInfo, CheckFrom, RawRequest, Version, MAX_REQUEST_BYTES};
use crate::resource::{check, get, put};
use crate::store::explain::explain;
use crate::store::open::open_store;
use crate::store::seam::Cache;

/// Which executable is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// `/opt/resource/check`
    Check,
    /// `/opt/resource/in DEST`
    In,
    /// `/opt/resource/out SRC`
    Out,
}

impl Command {
    /// The command a multi-call binary was started as: the file name it was
    /// run by (`/opt/resource/out` → [`Command::Out`]).
    pub fn from_program_name(program: &str) -> Option<Command> {
        let name = std::path::Path::new(program).file_name()?.to_str()?;
        match name {
            "check" => Some(Command::Check),
            "in" => Some(Command::In),
            "out" => Some(Command::Out),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Command::Check => "check",
            Command::In => "in",
            Command::Out => "out",
        }
    }
}

fn read_stdin(stdin: &mut dyn Read) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    stdin
        .take(MAX_REQUEST_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("could not read the request from stdin", e))?;
    Ok(bytes)
}

/// Runs `command` with `args` (without the program name), reading the
/// request from `stdin`; returns the JSON to print.
pub fn run(
    command: Command,
    args: &[String],
    stdin: &mut dyn Read,
    log: &Log,
    interrupt: &Interrupt,
) -> Result<serde_json::Value> {
    let dir = match (command, args) {
        (Command::Check, []) => None,
        (Command::Check, _) => return Err(Error::Usage("check takes no arguments".into())),
        // Absolute once, here: libgit2's checkout resolves a relative target
        // directory against the repository, not the working directory, so
        // `in rel/lock` wrote into `rel/lock/rel/lock` and failed.
        (_, [dir]) => Some(
            std::path::absolute(dir)
                .map_err(|e| Error::io(format!("could not resolve the directory {dir:?}"), e))?,
        ),
        (c, _) => {
            let what = if c == Command::In {
                "DESTINATION"
            } else {
                "SOURCES"
            };
            return Err(Error::Usage(format!("{} <{what} directory>", c.name())));
        }
    };
    let request = RawRequest::parse(&read_stdin(stdin)?)?;
    // Before validating: an error that quotes a field must not show a secret.
    log.add_secrets(raw_secrets(&request.source));
    let source = Source::from_request(&request)?;
    log.add_secrets(source.secrets());
    for warning in &source.warnings {
        log.warn(warning);
    }
    // `check` takes any string as a version (an unknown one); `in` must be
    // able to fetch it, and `out` refuses a malformed one as `in` does.
    let (since, version) = match command {
        Command::Check => (CheckFrom::from_request(request.version.as_ref())?, None),
        _ => (
            CheckFrom::Nothing,
            Version::from_request(request.version.as_ref())?,
        ),
    };
    match command {
        Command::Check => {
            config::parse_check(&request)?;
            let mut store = open_store(&source, Cache::Kept, log, interrupt)?;
            let versions =
                check::run(store.as_mut(), since, log).map_err(|e| explain(store.as_mut(), e))?;
            to_json(&versions)
        }
        Command::In => {
            let params = config::parse_get(&request)?;
            let dest = dir.unwrap_or_default();
            let mut store = open_store(&source, Cache::Fresh, log, interrupt)?;
            let response = get::run(store.as_mut(), &source, version, &params, &dest, log)
                .map_err(|e| explain(store.as_mut(), e))?;
            to_json(&response)
        }
        Command::Out => {
            let src = dir.unwrap_or_default();
            let params = config::parse_put(&request, &src)?;
            let build = BuildInfo::from_env(|k| std::env::var(k).ok());
            if params.idempotent && build.get("BUILD_ID").is_none() {
                return Err(Error::bad_request(
                    "invalid payload: params.idempotent needs BUILD_ID, which Concourse sets for every put; without it no earlier run of this put can be recognised",
                ));
            }
            let mut store = open_store(&source, Cache::Fresh, log, interrupt)?;
            let ctx = put::PutContext {
                source: &source,
                build: &build,
                log,
                interrupt,
                backoff: Backoff::from_env(),
                idempotent: params.idempotent,
                fence: params.fence.as_deref(),
                line: &params.line,
            };
            let response = put::run(store.as_mut(), &params.op, &ctx)
                .map_err(|e| explain(store.as_mut(), e))?;
            to_json(&response)
        }
    }
}

/// The response as JSON. A response that cannot be serialised is an error,
/// never `null`: Concourse would read `null` from a step that succeeded.
fn to_json(response: &impl serde::Serialize) -> Result<serde_json::Value> {
    serde_json::to_value(response).map_err(|e| Error::Repository {
        what: "could not serialise the response".into(),
        detail: e.to_string(),
    })
}

/// The whole of an executable's `main`.
pub fn main(command: Command) -> ExitCode {
    let log = Log::stderr();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = Interrupt::install().and_then(|interrupt| {
        run(
            command,
            &args,
            &mut std::io::stdin().lock(),
            &log,
            &interrupt,
        )
    });
    match result {
        Ok(json) => {
            let mut out = std::io::stdout().lock();
            match writeln!(out, "{json}").and_then(|_| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    report(
                        &Error::io("could not write the response to stdout", e),
                        &log,
                    );
                    ExitCode::FAILURE
                }
            }
        }
        Err(err) => {
            report(&err, &log);
            ExitCode::FAILURE
        }
    }
}
