//! What every `pool` command shares: the global options ([`Global`]) and
//! the Concourse ones ([`ConcourseArgs`]), and the [`Context`] a command
//! runs in, which builds the resource's own [`Source`] from `--source FILE`
//! (YAML or JSON, `-` for stdin) or `POOL_SOURCE` (JSON) with
//! `--uri`/`--branch`/`--pool` overrides, adds its secrets to the log's
//! redaction and opens the same backend the resource would
//! ([`open_store`]).

use std::fmt;
use std::io::Read;

use clap::Args;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::raw_secrets;
use crate::config::Source;
use crate::error::{Error, Result};
use crate::model::names::PoolPath;
use crate::operator::ops::{Done, Operator};
use crate::process::log::Log;
use crate::process::signal::Interrupt;
use crate::protocol::RawRequest;
use crate::store::open::open_store;
use crate::store::seam::{Cache, LockStore};

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
    pub concourse_url: Option<String>,
    /// Read the Concourse URL and token from this target of ~/.flyrc
    #[arg(long, value_name = "NAME")]
    pub fly_target: Option<String>,
}

/// Where a source came from, for its error messages.
#[derive(Clone, Copy)]
pub(crate) enum Origin<'a> {
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
pub(crate) fn in_source(err: Error, origin: Origin<'_>) -> Error {
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
pub struct Context<'a> {
    /// The options every command takes.
    pub global: &'a Global,
    /// The command's name, as typed.
    pub command: &'static str,
    /// Whether the command only reads (then a source without a pool
    /// covers every pool on the branch).
    pub read_only: bool,
    /// The environment.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Where `--source -` is read from.
    pub stdin: &'a mut dyn Read,
    /// What a person reads.
    pub log: &'a Log,
    /// SIGINT and SIGTERM.
    pub interrupt: &'a Interrupt,
}

/// The lock repository a command works on.
pub struct Target {
    /// The resource's source.
    pub source: Source,
    /// Whether the source names a pool (else a read-only command covers
    /// every pool on the branch).
    pub pool_given: bool,
    /// Its store.
    pub store: Box<dyn LockStore>,
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

    /// The `Source` of `--source path` (else `POOL_SOURCE`) for the command,
    /// and whether it names a pool; the secrets go to the log's redaction.
    pub fn load_source(&mut self, path: Option<&str>) -> Result<(Source, bool)> {
        let (mut raw, origin) = self.raw_source(path)?;
        self.log.add_secrets(raw_secrets(&raw));
        let pool_given = raw
            .get("pool")
            .and_then(Value::as_str)
            .is_some_and(|p| !p.is_empty());
        if !pool_given {
            if !self.read_only {
                return Err(Error::Usage(format!(
                    "{} needs a pool: --pool POOL or source.pool",
                    self.command
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

    /// Loads the one source and opens its store.
    pub fn open(&mut self) -> Result<Target> {
        let global = self.global;
        let (source, pool_given) = self.load_source(global.source.first().map(String::as_str))?;
        let store = open_store(&source, Cache::Fresh, self.log, self.interrupt)?;
        Ok(Target {
            source,
            pool_given,
            store,
        })
    }

    /// `--as`, else git's `user.name`/`user.email`, else `$USER@hostname`.
    pub fn operator(&self) -> Operator {
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
    pub fn done(&self, done: &Done) {
        for line in &done.lines {
            self.log.line(line);
        }
    }
}

/// `value` as one pretty JSON document.
pub fn to_json(value: &impl Serialize) -> Result<String> {
    serde_json::to_string_pretty(value)
        .map_err(|e| Error::io("could not write the document as JSON", e.into()))
}

/// The Concourse builds API, when `--concourse-url`, `--fly-target` or the
/// environment configure it.
pub fn concourse_builds(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
