//! `--fly-target NAME`: a target of `~/.flyrc`, the file `fly login` writes.
//!
//! Its format is fly's `rc.RC` (`fly/rc/targets.go`): YAML with
//! `targets: NAME: {api, team, insecure, token: {type, value}, ca_cert}`,
//! found at `$FLY_HOME/.flyrc`, else `$HOME/.flyrc`, as fly looks for it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::error::{Error, Result};

/// One target of `.flyrc`, as much of it as `pool` uses.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Target {
    /// The Concourse's URL.
    pub api: String,
    /// The team fly logged in to.
    #[serde(default)]
    pub team: String,
    /// Skip TLS verification (`fly login -k`).
    #[serde(default)]
    pub insecure: bool,
    /// The token `fly login` saved; gone after `fly logout`.
    #[serde(default)]
    pub token: Option<Token>,
    /// A PEM CA certificate to trust (`fly login --ca-cert`).
    #[serde(default)]
    pub ca_cert: Option<String>,
}

/// A saved token: `Authorization: TYPE VALUE`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Token {
    /// `bearer`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The token.
    #[serde(default)]
    pub value: String,
}

#[derive(Deserialize)]
struct Rc {
    #[serde(default)]
    targets: Option<BTreeMap<String, Target>>,
}

/// Where fly keeps `.flyrc`: `$FLY_HOME`, else `$HOME`.
pub fn path(env: &dyn Fn(&str) -> Option<String>) -> Result<PathBuf> {
    let home = env("FLY_HOME")
        .filter(|h| !h.is_empty())
        .or_else(|| env("HOME").filter(|h| !h.is_empty()))
        .ok_or_else(|| {
            Error::bad_request("--fly-target: neither FLY_HOME nor HOME is set to find .flyrc in")
        })?;
    Ok(PathBuf::from(home).join(".flyrc"))
}

/// Reads target `name` of the `.flyrc` text `text` (read from `shown`).
pub fn parse(text: &str, name: &str, shown: &str) -> Result<Target> {
    // The parser's message may quote the file, token and all: never echo it.
    let rc: Rc = serde_norway::from_str(text).map_err(|e| {
        Error::bad_request(format!(
            "--fly-target {name}: {shown} is not fly's YAML (line {})",
            e.location().map(|l| l.line()).unwrap_or(0)
        ))
    })?;
    let targets = rc.targets.unwrap_or_default();
    let Some(target) = targets.get(name) else {
        let known: Vec<&str> = targets.keys().map(String::as_str).collect();
        return Err(Error::bad_request(format!(
            "--fly-target {name}: no such target in {shown} (it has: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    };
    if target.api.trim().is_empty() {
        return Err(Error::bad_request(format!(
            "--fly-target {name}: the target in {shown} has no api URL"
        )));
    }
    if target.token.as_ref().is_none_or(|t| t.value.is_empty()) {
        return Err(Error::bad_request(format!(
            "--fly-target {name}: the target in {shown} has no token (logged out?): run fly -t {name} login"
        )));
    }
    Ok(target.clone())
}

/// Reads target `name` of the `.flyrc` that fly would read.
pub fn load(name: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Target> {
    let path = path(env)?;
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|e| Error::Input {
        what: format!("--fly-target {name}: could not read fly's targets"),
        path: path.clone(),
        source: e,
    })?;
    parse(&text, name, &shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RC: &str = "targets:
  ci:
    api: https://ci.example.com
    team: main
    token:
      type: bearer
      value: s3cr3t-token
  old:
    api: https://old.example.com
    team: main
    insecure: true
    token:
      type: \"\"
      value: \"\"
";

    #[test]
    fn a_target_gives_its_url_and_token() {
        let t = parse(RC, "ci", "~/.flyrc").unwrap();
        assert_eq!(t.api, "https://ci.example.com");
        let token = t.token.unwrap();
        assert_eq!(
            (token.kind.as_str(), token.value.as_str()),
            ("bearer", "s3cr3t-token")
        );
    }

    #[test]
    fn an_unknown_or_logged_out_target_says_what_to_do_and_shows_no_token() {
        let e = parse(RC, "nope", "~/.flyrc").unwrap_err().to_string();
        assert!(e.contains("no such target") && e.contains("ci, old"), "{e}");
        let e = parse(RC, "old", "~/.flyrc").unwrap_err().to_string();
        assert!(e.contains("fly -t old login"), "{e}");
        let e = parse("targets: [s3cr3t-token", "ci", "~/.flyrc")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cr3t"), "{e}");
    }

    #[test]
    fn fly_home_wins_over_home() {
        let env = |k: &str| match k {
            "FLY_HOME" => Some("/fly".to_string()),
            "HOME" => Some("/home/me".to_string()),
            _ => None,
        };
        assert_eq!(path(&env).unwrap(), PathBuf::from("/fly/.flyrc"));
        let env = |k: &str| (k == "HOME").then(|| "/home/me".to_string());
        assert_eq!(path(&env).unwrap(), PathBuf::from("/home/me/.flyrc"));
    }
}
