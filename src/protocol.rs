//! The Concourse resource protocol: the JSON a step reads and writes.
//!
//! Requests are read as loose JSON first and then picked apart field by field
//! through [`Fields`], so that every mistake is reported with the field's
//! name (`source.branch must be a string`) rather than as a serde position,
//! and so that unknown fields can be warned about (in `source`) or rejected
//! (in `params`, where a typo like `aquire` would otherwise be ignored).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The largest request we read from stdin.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// A request as Concourse sends it: `source`, and optionally `params` and `version`.
#[derive(Debug, Clone)]
pub struct RawRequest {
    /// The resource's `source:` block.
    pub source: Map<String, Value>,
    /// The step's `params:` (absent for `check`).
    pub params: Map<String, Value>,
    /// The version (absent for a first `check`).
    pub version: Option<Map<String, Value>>,
}

impl RawRequest {
    /// Parses stdin. Anything but a JSON object with an object `source` is refused.
    pub fn parse(bytes: &[u8]) -> Result<RawRequest> {
        if bytes.len() > MAX_REQUEST_BYTES {
            return Err(Error::bad_request(format!(
                "invalid payload: request is {} bytes (at most {MAX_REQUEST_BYTES})",
                bytes.len()
            )));
        }
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::bad_request(format!("invalid payload: malformed JSON: {e}")))?;
        let Value::Object(mut top) = value else {
            return Err(Error::bad_request(
                "invalid payload: the request must be a JSON object",
            ));
        };
        let source = match top.remove("source") {
            Some(Value::Object(m)) => m,
            None | Some(Value::Null) => Map::new(),
            Some(_) => {
                return Err(Error::bad_request(
                    "invalid payload: source must be an object",
                ))
            }
        };
        let params = match top.remove("params") {
            Some(Value::Object(m)) => m,
            None | Some(Value::Null) => Map::new(),
            Some(_) => {
                return Err(Error::bad_request(
                    "invalid payload: params must be an object",
                ))
            }
        };
        let version = match top.remove("version") {
            Some(Value::Object(m)) => Some(m),
            None | Some(Value::Null) => None,
            Some(_) => {
                return Err(Error::bad_request(
                    "invalid payload: version must be an object",
                ))
            }
        };
        Ok(RawRequest {
            source,
            params,
            version,
        })
    }
}

/// Takes typed fields out of a JSON object, naming `section.field` in errors.
pub struct Fields {
    section: &'static str,
    map: Map<String, Value>,
}

impl Fields {
    /// Wraps `map`, whose fields are called `section.NAME` in messages.
    pub fn new(section: &'static str, map: Map<String, Value>) -> Fields {
        Fields { section, map }
    }

    fn name(&self, field: &str) -> String {
        format!("{}.{field}", self.section)
    }

    fn type_error(&self, field: &str, want: &str, got: &Value) -> Error {
        Error::bad_request(format!(
            "invalid payload: {} must be {want}, not {}",
            self.name(field),
            kind(got)
        ))
    }

    /// Takes a field out, treating JSON `null` as absent.
    pub fn take(&mut self, field: &str) -> Option<Value> {
        match self.map.remove(field) {
            Some(Value::Null) | None => None,
            Some(v) => Some(v),
        }
    }

    /// A field's value, left in place for a typed accessor to take.
    pub fn peek(&self, field: &str) -> Option<&Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    /// An optional string; `""` counts as absent, as `jq -r '.x // ""'` did.
    pub fn string(&mut self, field: &str) -> Result<Option<String>> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.type_error(field, "a string", &other)),
        }
    }

    /// An optional boolean.
    pub fn bool(&mut self, field: &str) -> Result<Option<bool>> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(self.type_error(field, "true or false", &other)),
        }
    }

    /// An optional non-negative integer.
    pub fn uint(&mut self, field: &str) -> Result<Option<u64>> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
            Some(other) => Err(self.type_error(field, "a whole number", &other)),
        }
    }

    /// An optional object, as its own [`Fields`].
    pub fn object(&mut self, field: &str, section: &'static str) -> Result<Option<Fields>> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(Fields::new(section, m))),
            Some(other) => Err(self.type_error(field, "an object", &other)),
        }
    }

    /// A string-like scalar (string, number or boolean) as text; for values
    /// such as `git_config` entries and ports that YAML may type either way.
    pub fn scalar(&mut self, field: &str) -> Result<Option<String>> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(other) => Err(self.type_error(field, "a string", &other)),
        }
    }

    /// The names of the fields nobody took, sorted.
    pub fn leftover(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }

    /// The section name (`source`, `params`, ...).
    pub fn section(&self) -> &'static str {
        self.section
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A version of the resource: the commit that made a change to the pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Version {
    /// The commit id, 40 hex digits.
    #[serde(rename = "ref")]
    pub reference: String,
}

impl Version {
    /// Reads `version.ref` from a request; `None` when there is no version.
    pub fn from_request(version: Option<&Map<String, Value>>) -> Result<Option<Version>> {
        let Some(map) = version else { return Ok(None) };
        let mut fields = Fields::new("version", map.clone());
        let Some(reference) = fields.string("ref")? else {
            return Ok(None);
        };
        // Versions are commit ids. Anything else cannot have come from this
        // resource, and would otherwise be echoed into the build log as is.
        let hex = reference.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex || !(4..=64).contains(&reference.len()) {
            let mut shown: String = reference.chars().take(48).collect();
            if shown.len() < reference.len() {
                shown.push_str("...");
            }
            return Err(Error::bad_request(format!(
                "invalid payload: version.ref {shown:?} is not a commit id (4 to 64 hexadecimal digits)"
            )));
        }
        Ok(Some(Version { reference }))
    }
}

/// What `check` was given as `version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckFrom {
    /// No version (the first check).
    Nothing,
    /// A full commit id, lowercased; it may or may not be on the branch.
    Commit(String),
    /// Any other string, quoted and shortened for the build log: a version
    /// pinned by hand, kept from a replaced repository or left by another
    /// resource type. It is merely unknown, so the answer is the latest
    /// version, as the Go resource gives (its own tests check `bogus-ref`).
    Unknown(String),
}

impl CheckFrom {
    /// Reads `version.ref` for `check`. Only a `ref` that is not a string
    /// is an error: Concourse versions are strings.
    pub fn from_request(version: Option<&Map<String, Value>>) -> Result<CheckFrom> {
        let Some(map) = version else {
            return Ok(CheckFrom::Nothing);
        };
        let mut fields = Fields::new("version", map.clone());
        let Some(reference) = fields.string("ref")? else {
            return Ok(CheckFrom::Nothing);
        };
        // Commit ids are 40 hexadecimal digits; nothing else can name one
        // (an abbreviation is never looked up), so nothing else needs a walk.
        if reference.len() == 40 && reference.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(CheckFrom::Commit(reference.to_ascii_lowercase()))
        } else {
            Ok(CheckFrom::Unknown(crate::error::quoted(&reference)))
        }
    }
}

/// One `{name, value}` metadata pair shown in the Concourse UI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Metadata {
    /// The key.
    pub name: String,
    /// The value.
    pub value: String,
}

/// What `in` and `out` print.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Response {
    /// The version fetched or created.
    pub version: Version,
    /// `lock_name` and `pool_name`.
    pub metadata: Vec<Metadata>,
}

impl Response {
    /// The response naming `lock` of `pool` at `commit`.
    pub fn new(commit: &str, lock: &str, pool: &str) -> Response {
        Response {
            version: Version {
                reference: commit.to_string(),
            },
            metadata: vec![
                Metadata {
                    name: "lock_name".into(),
                    value: lock.to_string(),
                },
                Metadata {
                    name: "pool_name".into(),
                    value: pool.to_string(),
                },
            ],
        }
    }
}

impl Response {
    /// The response with `extra` metadata after `lock_name` and `pool_name`.
    pub fn with(mut self, extra: Vec<Metadata>) -> Response {
        self.metadata.extend(extra);
        self
    }
}

/// Build identity from the environment Concourse sets for get and put steps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildInfo {
    vars: BTreeMap<&'static str, String>,
}

/// The variables recorded, in the order they are written into commits.
pub const BUILD_VARS: [&str; 7] = [
    "BUILD_ID",
    "BUILD_NAME",
    "BUILD_JOB_NAME",
    "BUILD_PIPELINE_NAME",
    "BUILD_TEAM_NAME",
    "BUILD_PIPELINE_INSTANCE_VARS",
    "ATC_EXTERNAL_URL",
];

impl BuildInfo {
    /// Reads the build variables through `get` (normally `std::env::var`).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> BuildInfo {
        let mut vars = BTreeMap::new();
        for key in BUILD_VARS.iter().chain(["BUILD_URL"].iter()) {
            if let Some(v) = get(key).filter(|v| !v.is_empty()) {
                // Values end up in commit messages: one line each.
                let v: String = v.chars().filter(|c| !c.is_control()).collect();
                vars.insert(*key, v);
            }
        }
        BuildInfo { vars }
    }

    /// One variable.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str)
    }

    /// The build's URL: `BUILD_URL` (Concourse 8+), else formed from the
    /// parts as the Go resource does; `None` for one-off builds without a job.
    pub fn url(&self) -> Option<String> {
        if let Some(url) = self.get("BUILD_URL") {
            return Some(url.to_string());
        }
        let external = self.get("ATC_EXTERNAL_URL")?;
        let team = self.get("BUILD_TEAM_NAME")?;
        let pipeline = self.get("BUILD_PIPELINE_NAME")?;
        let job = self.get("BUILD_JOB_NAME")?;
        let build = self.get("BUILD_NAME")?;
        Some(format!(
            "{}/teams/{team}/pipelines/{pipeline}/jobs/{job}/builds/{build}",
            external.trim_end_matches('/')
        ))
    }

    /// A short human description: `team/pipeline/job #42`, or `build 1234`.
    pub fn describe(&self) -> Option<String> {
        match (
            self.get("BUILD_TEAM_NAME"),
            self.get("BUILD_PIPELINE_NAME"),
            self.get("BUILD_JOB_NAME"),
            self.get("BUILD_NAME"),
        ) {
            (Some(t), Some(p), Some(j), Some(n)) => Some(format!("{t}/{p}/{j} #{n}")),
            _ => self.get("BUILD_ID").map(|id| format!("build {id}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_need_to_be_json_objects() {
        assert!(RawRequest::parse(b"not json").is_err());
        assert!(RawRequest::parse(b"[]").is_err());
        assert!(RawRequest::parse(br#"{"source": 3}"#)
            .unwrap_err()
            .to_string()
            .contains("source must be an object"));
        let r = RawRequest::parse(br#"{"source": {"uri": "x"}, "version": null}"#).unwrap();
        assert!(r.version.is_none());
        assert!(r.params.is_empty());
    }

    #[test]
    fn wrong_types_name_the_field() {
        let mut f = Fields::new("source", json!({"branch": 7}).as_object().unwrap().clone());
        let err = f.string("branch").unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid payload: source.branch must be a string, not a number"
        );
    }

    #[test]
    fn fields_nobody_took_are_left_over_sorted() {
        let mut f = Fields::new(
            "params",
            json!({"aquire": true, "acquire": true, "zebra": 1})
                .as_object()
                .unwrap()
                .clone(),
        );
        assert_eq!(f.bool("acquire").unwrap(), Some(true));
        assert_eq!(f.leftover(), ["aquire", "zebra"]);
    }

    #[test]
    fn versions_must_be_commit_ids() {
        let v = |r: Value| {
            let map = json!({ "ref": r }).as_object().unwrap().clone();
            Version::from_request(Some(&map))
        };
        let sha = "0123456789abcdef0123456789ABCDEF01234567";
        assert_eq!(v(json!(sha)).unwrap().unwrap().reference, sha);
        assert_eq!(v(json!("abc1")).unwrap().unwrap().reference, "abc1");
        assert!(v(json!("")).unwrap().is_none());
        for bad in ["zzz", "abc", "a\nb", "\u{1b}[2J0000", &"a".repeat(65)] {
            let err = v(json!(bad)).unwrap_err().to_string();
            assert!(
                err.contains("version.ref") && err.contains("is not a commit id"),
                "{err}"
            );
        }
        let err = v(json!("\u{1b}[2J")).unwrap_err().to_string();
        assert!(!err.contains('\u{1b}'), "{err}");
        let err = v(json!("x".repeat(1 << 20))).unwrap_err().to_string();
        assert!(err.len() < 200, "{err}");
    }

    #[test]
    fn check_takes_any_string_that_is_not_a_commit_id_as_unknown() {
        let v = |r: Value| {
            let map = json!({ "ref": r }).as_object().unwrap().clone();
            CheckFrom::from_request(Some(&map))
        };
        let sha = "0123456789abcdef0123456789ABCDEF01234567";
        assert_eq!(
            v(json!(sha)).unwrap(),
            CheckFrom::Commit(sha.to_ascii_lowercase())
        );
        assert_eq!(CheckFrom::from_request(None).unwrap(), CheckFrom::Nothing);
        assert_eq!(v(json!("")).unwrap(), CheckFrom::Nothing);
        assert_eq!(
            v(json!("bogus-ref")).unwrap(),
            CheckFrom::Unknown("\"bogus-ref\"".into())
        );
        for odd in ["abc1", "\u{1b}[2J", "a\nb", &"0".repeat(41)] {
            assert!(
                matches!(v(json!(odd)).unwrap(), CheckFrom::Unknown(_)),
                "{odd:?}"
            );
        }
        let CheckFrom::Unknown(shown) = v(json!("0".repeat(5 << 20))).unwrap() else {
            panic!("a huge ref is unknown")
        };
        assert!(shown.len() < 100, "{shown}");
        let CheckFrom::Unknown(shown) = v(json!("\u{1b}[2J")).unwrap() else {
            panic!()
        };
        assert!(!shown.contains('\u{1b}'), "{shown}");
        let err = v(json!(12)).unwrap_err().to_string();
        assert!(err.contains("version.ref must be a string"), "{err}");
    }

    #[test]
    fn responses_serialize_like_the_go_resource() {
        let r = Response::new("abc", "lock-a", "pool/x");
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"version": {"ref": "abc"}, "metadata": [
                {"name": "lock_name", "value": "lock-a"},
                {"name": "pool_name", "value": "pool/x"}]})
        );
    }

    #[test]
    fn build_url_is_formed_from_the_parts() {
        let env = |k: &str| {
            Some(
                match k {
                    "ATC_EXTERNAL_URL" => "https://ci.example/",
                    "BUILD_TEAM_NAME" => "main",
                    "BUILD_PIPELINE_NAME" => "deploy",
                    "BUILD_JOB_NAME" => "prod",
                    "BUILD_NAME" => "42",
                    _ => return None,
                }
                .to_string(),
            )
        };
        let b = BuildInfo::from_env(env);
        assert_eq!(
            b.url().unwrap(),
            "https://ci.example/teams/main/pipelines/deploy/jobs/prod/builds/42"
        );
        assert_eq!(b.describe().unwrap(), "main/deploy/prod #42");
    }
}
