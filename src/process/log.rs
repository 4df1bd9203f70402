//! The build log: everything a person reads goes to stderr, scrubbed of secrets.
//!
//! A [`Log`] is passed in (no global logger) so tests can capture it, and it is
//! cheap to clone into libgit2 callbacks and the tunnel thread. Every line
//! goes through [`redact`], a last line of defence should a secret ever reach
//! a message.

use std::fmt::Display;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// Replaces every occurrence of a secret (and of each longer line of a
/// multi-line secret such as a private key) with `***`.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for secret in secrets {
        if secret.len() >= 3 && out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "***");
        }
        for line in secret.lines().map(str::trim).filter(|l| l.len() >= 16) {
            if out.contains(line) {
                out = out.replace(line, "***");
            }
        }
    }
    out
}

/// A shared writer for progress and warnings.
#[derive(Clone)]
pub struct Log {
    out: Arc<Mutex<Box<dyn Write + Send>>>,
    secrets: Arc<Mutex<Vec<String>>>,
    colour: bool,
}

/// Whether stderr should get ANSI colour: only on a terminal, never with
/// `NO_COLOR` set (<https://no-color.org>) or `TERM=dumb`. Concourse build
/// logs and CI logs are files, so they get plain text.
pub fn stderr_wants_colour(env: impl Fn(&str) -> Option<String>, is_terminal: bool) -> bool {
    is_terminal
        && env("NO_COLOR").is_none_or(|v| v.is_empty())
        && env("TERM").as_deref() != Some("dumb")
}

impl Log {
    /// A log writing to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Log {
        Log {
            out: Arc::new(Mutex::new(out)),
            secrets: Arc::new(Mutex::new(Vec::new())),
            colour: false,
        }
    }

    /// A log to the process's stderr, in colour only on a terminal
    /// ([`stderr_wants_colour`]).
    pub fn stderr() -> Log {
        use std::io::IsTerminal;
        let mut log = Log::new(Box::new(std::io::stderr()));
        log.colour =
            stderr_wants_colour(|k| std::env::var(k).ok(), std::io::stderr().is_terminal());
        log
    }

    /// `label:` for the start of a line, in the ANSI colour `sgr` when this
    /// log is in colour.
    pub fn label(&self, label: &str, sgr: &str) -> String {
        if self.colour {
            format!("\x1b[{sgr}m{label}:\x1b[0m")
        } else {
            format!("{label}:")
        }
    }

    /// Adds values that must never be written.
    pub fn add_secrets(&self, secrets: impl IntoIterator<Item = String>) {
        if let Ok(mut s) = self.secrets.lock() {
            s.extend(secrets.into_iter().filter(|s| !s.is_empty()));
        }
    }

    /// Scrubs `text` of every known secret.
    pub fn redact(&self, text: &str) -> String {
        match self.secrets.lock() {
            Ok(s) => redact(text, &s),
            Err(_) => text.to_string(),
        }
    }

    /// Writes one line.
    pub fn line(&self, msg: impl Display) {
        let text = self.redact(&msg.to_string());
        if let Ok(mut out) = self.out.lock() {
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
    }

    /// Writes a warning line (yellow on a terminal).
    pub fn warn(&self, msg: impl Display) {
        self.line(format_args!("{} {msg}", self.label("warning", "33")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_key_lines_are_scrubbed() {
        let key =
            "-----BEGIN KEY-----\nAAAAB3NzaC1yc2EAAAADAQABAAABAQ\n-----END KEY-----".to_string();
        let text = "failed: hunter2 and AAAAB3NzaC1yc2EAAAADAQABAAABAQ";
        let out = redact(text, &["hunter2".into(), key]);
        assert_eq!(out, "failed: *** and ***");
    }

    #[test]
    fn colour_only_on_a_terminal_and_never_with_no_color_or_a_dumb_terminal() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(stderr_wants_colour(env(&[("TERM", "xterm")]), true));
        assert!(!stderr_wants_colour(env(&[("TERM", "xterm")]), false));
        assert!(!stderr_wants_colour(env(&[("NO_COLOR", "1")]), true));
        assert!(stderr_wants_colour(env(&[("NO_COLOR", "")]), true));
        assert!(!stderr_wants_colour(env(&[("TERM", "dumb")]), true));
    }

    #[test]
    fn a_log_that_is_not_a_terminal_writes_plain_labels() {
        let log = Log::new(Box::new(std::io::sink()));
        assert_eq!(log.label("error", "31"), "error:");
    }
}
