//! How an executable prints an error: cargo-style, `error: ...` and one
//! `caused by: ...` per source, scrubbed of secrets by the [`Log`].

use crate::error::Error;
use crate::process::log::Log;

/// Prints `err` and its causes to `log`.
pub fn report(err: &Error, log: &Log) {
    log.line(format_args!("{} {err}", log.label("error", "31")));
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        log.line(format_args!("  caused by: {cause}"));
        source = cause.source();
    }
}
