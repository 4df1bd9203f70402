//! A newcomer's first hour, as a person runs it: the executables from a
//! working directory with relative paths, mistyped and unknown names with
//! stderr going to a file, and the README's quick start checked against
//! what the executables print.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::support::run::bin_path;
use crate::support::{LockRepo, Run, AMBIENT_ENV};

/// What Concourse sets for build 7 of job deploy (as `ci/demo.sh` does).
const BUILD: &[(&str, &str)] = &[
    ("BUILD_ID", "1234"),
    ("BUILD_NAME", "7"),
    ("BUILD_JOB_NAME", "deploy"),
    ("BUILD_PIPELINE_NAME", "app"),
    ("BUILD_TEAM_NAME", "main"),
    ("ATC_EXTERNAL_URL", "https://ci.example.com"),
];

/// Runs executable `name` in `cwd` with `args` as typed (relative paths
/// stay relative), `stdin`, and `env`; stderr goes to a file, as in a
/// Concourse build log or a CI log, and is read back.
fn run_in(cwd: &Path, name: &str, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Run {
    let log = tempfile::NamedTempFile::new().expect("a file for stderr");
    let mut cmd = Command::new(bin_path(name));
    cmd.current_dir(cwd).args(args);
    for var in AMBIENT_ENV {
        cmd.env_remove(var);
    }
    cmd.env_remove("POOL_SOURCE")
        .env_remove("NO_COLOR")
        .env("USER", "tester")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(File::create(log.path()).expect("opening the stderr file"));
    let command = format!("(cd {}; {name} {})", cwd.display(), args.join(" "));
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {command}: {e}"));
    let mut pipe = child.stdin.take().expect("child stdin");
    let bytes = stdin.as_bytes().to_vec();
    std::thread::spawn(move || {
        let _ = pipe.write_all(&bytes);
    });
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {command}: {e}"));
    let stderr = std::fs::read_to_string(log.path()).expect("reading stderr back");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes written to a file by {command}:\n{stderr:?}"
    );
    Run {
        command,
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    }
}

/// A request for pool `envs` of `locks.git`, relative to the cwd.
fn request(extra: Value) -> String {
    let mut req = json!({"source": {"uri": "locks.git", "branch": "main", "pool": "envs"}});
    if let (Some(r), Some(e)) = (req.as_object_mut(), extra.as_object()) {
        r.extend(e.clone());
    }
    req.to_string()
}

fn ref_of(json: &Value) -> String {
    json["version"]["ref"].as_str().expect("version.ref").into()
}

/// The repository of the tests: `locks.git` in the returned repo's root,
/// pool `envs` with `qa` and `staging` created by operator `ops`.
fn envs() -> LockRepo {
    let repo = LockRepo::new("main");
    let pool = run_in(
        repo.root(),
        "pool",
        &["--as", "ops", "init", "qa", "staging"],
        "",
        &[(
            "POOL_SOURCE",
            r#"{"uri": "locks.git", "branch": "main", "pool": "envs"}"#,
        )],
    );
    pool.assert_success();
    repo
}

#[test]
fn in_out_and_check_work_from_a_working_directory_with_relative_paths() {
    let repo = envs();
    let cwd = repo.root();
    std::fs::create_dir(cwd.join("build")).unwrap();
    let acquire = run_in(
        cwd,
        "out",
        &["build"],
        &request(json!({"params": {"acquire": true}})),
        BUILD,
    );
    let version = ref_of(&acquire.assert_success().json());
    let get = run_in(
        cwd,
        "in",
        &["rel1/lock"],
        &request(json!({"version": {"ref": version}})),
        BUILD,
    );
    assert_eq!(get.assert_success().json(), acquire.json());
    let dest = cwd.join("rel1/lock");
    assert!(dest.join("name").is_file() && dest.join("claim").is_file());
    assert!(dest.join("envs/claimed/.gitkeep").is_file(), "the tree");
    assert!(
        !dest.join("rel1").exists(),
        "the tree went into rel1/lock/rel1/lock"
    );
    // `out` reads the release directory relative to its own argument.
    let release = run_in(
        cwd,
        "out",
        &["rel1"],
        &request(json!({"params": {"release": "lock"}})),
        BUILD,
    );
    release.assert_success();
    let check = run_in(
        cwd,
        "check",
        &[],
        &request(json!({"version": {"ref": version}})),
        &[],
    );
    let versions = check.assert_success().json();
    assert_eq!(versions[0]["ref"], json!(version), "{versions}");
    assert_eq!(versions[1], release.json()["version"], "{versions}");
}

/// Runs `pool` in the repository's root with the source in `POOL_SOURCE`.
fn pool(repo: &LockRepo, args: &[&str]) -> Run {
    run_in(
        repo.root(),
        "pool",
        args,
        "",
        &[(
            "POOL_SOURCE",
            r#"{"uri": "locks.git", "branch": "main", "pool": "envs"}"#,
        )],
    )
}

fn assert_says(run: &Run, code: i32, parts: &[&str]) {
    assert_eq!(
        run.status.code(),
        Some(code),
        "{}: {}",
        run.command,
        run.stderr
    );
    for part in parts {
        assert!(
            run.stderr.contains(part),
            "{} does not say {part:?}:\n{}",
            run.command,
            run.stderr
        );
    }
}

#[test]
fn unknown_names_get_the_nearest_one_and_the_list_of_what_exists() {
    let repo = envs();
    assert_says(
        &pool(&repo, &["claim", "stagin", "--reason", "test"]),
        1,
        &[
            r#"lock "stagin" does not exist in pool "envs""#,
            r#"did you mean "staging"?"#,
            "its locks: qa, staging",
        ],
    );
    assert_says(
        &pool(&repo, &["--pool", "envz", "status"]),
        1,
        &[
            r#"pool "envz" does not exist"#,
            r#"did you mean "envs"?"#,
            "pools on the branch: envs",
        ],
    );
    assert_says(
        &pool(&repo, &["--branch", "master", "status"]),
        1,
        &[r#"branch "master" does not exist"#, "branches: main"],
    );
    // The resource says the same to a pipeline.
    std::fs::create_dir_all(repo.root().join("build/lock")).unwrap();
    std::fs::write(repo.root().join("build/lock/name"), "stagin\n").unwrap();
    std::fs::write(repo.root().join("build/lock/metadata"), "").unwrap();
    let put = run_in(
        repo.root(),
        "out",
        &["build"],
        r#"{"source": {"uri": "locks.git", "branch": "main", "pool": "env"}, "params": {"claim": "stagin"}}"#,
        BUILD,
    );
    assert_says(
        &put,
        1,
        &[r#"pool "env" does not exist"#, r#"did you mean "envs"?"#],
    );
    let put = run_in(
        repo.root(),
        "out",
        &["build"],
        &request(json!({"params": {"remove": "lock"}})),
        BUILD,
    );
    assert_says(&put, 1, &[r#"did you mean "staging"?"#]);
    let get = run_in(
        repo.root(),
        "check",
        &[],
        r#"{"source": {"uri": "locks.git", "branch": "mian", "pool": "envs"}}"#,
        &[],
    );
    assert_says(&get, 1, &[r#"did you mean "main"?"#]);
}

#[test]
fn a_missing_repository_says_how_to_create_one() {
    let repo = envs();
    assert_says(
        &pool(&repo, &["--uri", "nope.git", "status"]),
        1,
        &[
            "could not open the lock repository nope.git",
            "git init --bare nope.git",
            "init LOCK",
        ],
    );
}

#[test]
fn a_claimed_lock_refused_to_pool_claim_names_its_holder_and_wait() {
    let repo = envs();
    std::fs::create_dir(repo.root().join("build")).unwrap();
    let claim = run_in(
        repo.root(),
        "out",
        &["build"],
        &request(json!({"params": {"claim": "qa"}})),
        BUILD,
    );
    claim.assert_success();
    assert_says(
        &pool(&repo, &["claim", "qa", "--reason", "manual test"]),
        1,
        &[
            "lock qa of pool envs is claimed by main/app/deploy #7",
            " since 20",
            "add --wait to wait until it is released",
        ],
    );
    pool(&repo, &["--as", "ops", "hold", "--reason", "upgrade"]).assert_success();
    assert_says(
        &pool(&repo, &["claim", "staging", "--reason", "manual test"]),
        1,
        &[
            "held by ops",
            "upgrade",
            "add --wait to wait until the pool is unheld",
        ],
    );
}

#[test]
fn durations_without_a_unit_show_a_valid_one() {
    let repo = envs();
    assert_says(
        &pool(&repo, &["history", "--since", "3"]),
        2,
        &[r#"invalid duration "3": missing unit"#, r#""3s""#],
    );
    let put = run_in(
        repo.root(),
        "check",
        &[],
        r#"{"source": {"uri": "locks.git", "branch": "main", "pool": "envs", "retry_delay": "10"}}"#,
        &[],
    );
    assert_says(
        &put,
        1,
        &[
            r#"source.retry_delay: invalid duration "10": missing unit"#,
            "nanoseconds only as a JSON number",
            "retry_delay: 10s",
            "retry_delay: 10000000000",
        ],
    );
}

/// The JSON documents of the README's quick start, in order.
fn readme_quick_start() -> Vec<Value> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("reading README.md");
    let start = readme
        .find("\n== put: acquire a lock")
        .expect("the README shows the demo's output");
    let block = &readme[start..];
    let block = &block[..block.find("\n```").expect("the block ends")];
    block
        .lines()
        .filter(|l| l.starts_with('{') || l.starts_with('['))
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("README line is not JSON: {e}\n{l}"))
        })
        .collect()
}

/// The shape of a document: its keys, and the names of its metadata.
fn shape(doc: &Value) -> Value {
    match doc {
        Value::Array(items) => Value::Array(items.iter().map(shape).collect()),
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                let v = match (k.as_str(), v) {
                    ("metadata", Value::Array(items)) => {
                        Value::Array(items.iter().map(|m| m["name"].clone()).collect())
                    }
                    (_, Value::Object(_)) => shape(v),
                    _ => Value::Null,
                };
                out.insert(k.clone(), v);
            }
            Value::Object(out)
        }
        _ => Value::Null,
    }
}

#[test]
fn the_readme_quick_start_shows_what_the_demo_steps_print() {
    let repo = envs();
    let cwd = repo.root();
    std::fs::create_dir(cwd.join("build")).unwrap();
    let with = request;
    let acquire = run_in(
        cwd,
        "out",
        &["build"],
        &with(json!({"params": {"acquire": true}})),
        BUILD,
    );
    let version = ref_of(&acquire.assert_success().json());
    let get = run_in(
        cwd,
        "in",
        &["build/lock"],
        &with(json!({"version": {"ref": version}})),
        BUILD,
    );
    let release = run_in(
        cwd,
        "out",
        &["build"],
        &with(json!({"params": {"release": "lock"}})),
        BUILD,
    );
    let check = run_in(
        cwd,
        "check",
        &[],
        &with(json!({"version": {"ref": version}})),
        &[],
    );
    let printed: Vec<Value> = [acquire, get, release, check]
        .iter()
        .map(|r| r.assert_success().json())
        .collect();
    let shown = readme_quick_start();
    assert_eq!(shown.len(), printed.len(), "{shown:#?}");
    for (i, (shown, printed)) in shown.iter().zip(&printed).enumerate() {
        assert_eq!(
            shape(shown),
            shape(printed),
            "step {} of the README's quick start:\nREADME:  {shown}\nprinted: {printed}",
            i + 1
        );
    }
    // The values that do not depend on the run are the demo's.
    assert_eq!(shown[0]["metadata"][2]["value"], "main/app/deploy #7");
    assert_eq!(printed[0]["metadata"][2]["value"], "main/app/deploy #7");
    assert_eq!(shown[0]["metadata"][4], printed[0]["metadata"][4]);
}
