//! The integration tests: one binary, a module per area. Every test runs the
//! real `check`, `in` and `out` executables against real repositories and
//! servers started on 127.0.0.1 (see `support`).

mod support;

mod abort;
mod annotations;
mod behaviour;
mod check;
mod cli;
mod codecommit;
mod faults;
mod fence;
mod get;
mod hostile;
mod image;
mod line;
mod newcomer;
mod ops;
mod pipelines;
mod protocol;
mod put;
mod races;
mod reap;
mod rerun;
mod seam;
mod secrets;
mod serve;
mod shared;
mod shared_ops;
mod shared_soak;
mod shared_views;
mod transports;

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tempfile::TempDir;

/// A `source` for `uri` with pool `pool` on branch `branch`, waiting 50ms between looks.
pub fn source(uri: &str, branch: &str, pool: &str) -> Value {
    json!({"uri": uri, "branch": branch, "pool": pool, "retry_delay": "50ms"})
}

/// The build's input directory for `out`, holding lock directories like the
/// ones an implicit get leaves behind.
pub struct Inputs {
    dir: TempDir,
}

impl Default for Inputs {
    fn default() -> Self {
        Inputs::new()
    }
}

impl Inputs {
    /// An empty inputs directory.
    pub fn new() -> Inputs {
        Inputs {
            dir: TempDir::new().expect("creating the inputs dir"),
        }
    }

    /// The directory itself (the `out` argument).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `<sub>/name` and `<sub>/metadata`.
    pub fn lock(&self, sub: &str, name: &str, metadata: &[u8]) -> PathBuf {
        let d = self.dir.path().join(sub);
        std::fs::create_dir_all(&d).expect("creating a lock dir");
        std::fs::write(d.join("name"), format!("{name}\n")).expect("writing name");
        std::fs::write(d.join("metadata"), metadata).expect("writing metadata");
        d
    }
}

/// Runs `out` with `params` and returns its JSON (asserting success).
pub fn put(source: &Value, params: Value, inputs: &Inputs, env: &[(&str, &str)]) -> Value {
    support::run_bin(
        "out",
        &[inputs.path()],
        &json!({"source": source, "params": params}),
        env,
    )
    .assert_success()
    .json()
}

/// `out` with `params` and `env`, in the background: `name` names it in
/// failures, `deadline` bounds every wait on it.
pub fn start_out(
    source: &Value,
    params: Value,
    inputs: &Inputs,
    env: &[(&str, &str)],
    name: impl Into<String>,
    deadline: std::time::Duration,
) -> support::Bg {
    let request = json!({"source": source, "params": params});
    support::Bg::new(
        support::spawn_bin("out", &[inputs.path()], &request, env),
        name,
        deadline,
    )
}

/// A reader taking its share: a shared `claim: lock` (a real `out`), then
/// the get of its version into `inputs/<dir>` (a real `in`), both with
/// `env`. Returns the put's response and the share id the get wrote
/// (`DIR/share`).
pub fn take_share(
    source: &Value,
    inputs: &Inputs,
    lock: &str,
    env: &[(&str, &str)],
    dir: &str,
) -> (Value, String) {
    let out = put(source, json!({"claim": lock, "shared": true}), inputs, env);
    let dest = inputs.path().join(dir);
    support::run_bin(
        "in",
        &[dest.as_path()],
        &json!({"source": source, "version": {"ref": version(&out)}}),
        env,
    )
    .assert_success();
    let id = std::fs::read_to_string(dest.join("share"))
        .expect("in writes DIR/share for a shared hold")
        .trim()
        .to_string();
    (out, id)
}

/// The `lock_name` of an `in`/`out` response.
pub fn lock_name(response: &Value) -> String {
    response["metadata"][0]["value"]
        .as_str()
        .expect("lock_name metadata")
        .to_string()
}

/// The `version.ref` of an `in`/`out` response.
pub fn version(response: &Value) -> String {
    response["version"]["ref"]
        .as_str()
        .expect("version.ref")
        .to_string()
}
