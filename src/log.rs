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
}

impl Log {
    /// A log writing to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Log {
        Log {
            out: Arc::new(Mutex::new(out)),
            secrets: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// A log to the process's stderr.
    pub fn stderr() -> Log {
        Log::new(Box::new(std::io::stderr()))
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

    /// Writes a warning line (yellow, as Concourse renders ANSI colour).
    pub fn warn(&self, msg: impl Display) {
        self.line(format_args!("\x1b[33mwarning:\x1b[0m {msg}"));
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
}
