//! The fence of a release of several locks: the `claim` file `in` writes
//! for a version that claimed them in one commit, and what a release of
//! that directory does once an operator has released one of them.

use std::path::Path;

use serde_json::{json, Value};

use crate::support::{run_bin, run_bin_raw, LockRepo, Run};
use crate::{put, source, version, Inputs};

const POOL: &str = "envs";

const BUILD: [(&str, &str); 6] = [
    ("BUILD_ID", "4242"),
    ("BUILD_NAME", "7"),
    ("BUILD_JOB_NAME", "deploy"),
    ("BUILD_PIPELINE_NAME", "app"),
    ("BUILD_TEAM_NAME", "main"),
    ("ATC_EXTERNAL_URL", "https://ci.example.com"),
];

const OTHER_BUILD: [(&str, &str); 6] = [
    ("BUILD_ID", "5151"),
    ("BUILD_NAME", "8"),
    ("BUILD_JOB_NAME", "deploy"),
    ("BUILD_PIPELINE_NAME", "app"),
    ("BUILD_TEAM_NAME", "main"),
    ("ATC_EXTERNAL_URL", "https://ci.example.com"),
];

/// Runs `pool` with `args`, the source in `POOL_SOURCE`.
fn pool(source: &Value, args: &[&str]) -> Run {
    let paths: Vec<&Path> = args.iter().map(Path::new).collect();
    let json = source.to_string();
    run_bin_raw(
        "pool",
        &paths,
        b"",
        &[("POOL_SOURCE", json.as_str()), ("USER", "tester")],
    )
}

fn initialised(locks: &[&str]) -> (LockRepo, Value) {
    let repo = LockRepo::new("main");
    let src = source(&repo.path().display().to_string(), "main", POOL);
    let mut args = vec!["--as", "ops", "init"];
    args.extend(locks);
    pool(&src, &args).assert_success();
    (repo, src)
}

/// Build 1 claims `a` and `b` in one put and `in` writes `inputs/held` at
/// that version, as Concourse's implicit get does; returns the claim.
fn pair_claimed_and_fetched(src: &Value, inputs: &Inputs) -> String {
    let out = put(src, json!({"claim": ["a", "b"]}), inputs, &BUILD);
    let claim = version(&out);
    let dest = inputs.path().join("held");
    run_bin(
        "in",
        &[dest.as_path()],
        &json!({"source": src, "version": {"ref": claim}}),
        &BUILD,
    )
    .assert_success();
    assert_eq!(
        std::fs::read_to_string(dest.join("name")).unwrap(),
        "a\nb\n"
    );
    claim
}

fn release_held(src: &Value, inputs: &Inputs) -> Run {
    run_bin(
        "out",
        &[inputs.path()],
        &json!({"source": src, "params": {"release": "held"}}),
        &BUILD,
    )
}

#[test]
fn in_of_a_two_lock_claim_writes_the_one_claim_commit_as_the_fence() {
    let (_repo, src) = initialised(&["a", "b", "c"]);
    let inputs = Inputs::new();
    let claim = pair_claimed_and_fetched(&src, &inputs);
    let fence = std::fs::read_to_string(inputs.path().join("held/claim")).unwrap();
    assert_eq!(fence, format!("{claim}\n"));
}

#[test]
fn a_release_of_a_pair_refuses_once_one_lock_was_force_released_and_claimed_again() {
    let (repo, src) = initialised(&["a", "b", "c"]);
    let inputs = Inputs::new();
    let claim = pair_claimed_and_fetched(&src, &inputs);
    pool(
        &src,
        &[
            "release", "a", "--force", "--reason", "stuck", "--as", "ops",
        ],
    )
    .assert_success();
    put(&src, json!({"claim": "a"}), &Inputs::new(), &OTHER_BUILD);
    let tip = repo.tip();
    let run = release_held(&src, &inputs);
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("refusing to release lock \"a\" of pool \"envs\"")
            && run.stderr.contains("released and claimed again since")
            && run.stderr.contains("main/app/deploy #8")
            && run.stderr.contains(&claim)
            && run.stderr.contains("nothing was committed"),
        "{}",
        run.stderr
    );
    assert_eq!(repo.tip(), tip, "a refused release commits nothing");
    assert_eq!(repo.claimed(POOL), ["a", "b"]);
}

#[test]
fn a_release_of_a_pair_one_of_which_an_operator_freed_refuses_and_leaves_the_other_claimed() {
    let (repo, src) = initialised(&["a", "b", "c"]);
    let inputs = Inputs::new();
    let claim = pair_claimed_and_fetched(&src, &inputs);
    let forced = pool(
        &src,
        &[
            "release", "a", "--force", "--reason", "stuck", "--as", "ops",
        ],
    );
    forced.assert_success();
    let said = format!("{}{}", forced.stdout, forced.stderr);
    assert!(
        said.contains("lock a of pool envs was claimed together with b by main/app/deploy #7")
            && said.contains(&claim)
            && said.contains("free them too"),
        "{said}"
    );
    let tip = repo.tip();
    let run = release_held(&src, &inputs);
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("\"a\"") && run.stderr.contains("not claimed"),
        "{}",
        run.stderr
    );
    assert_eq!(repo.tip(), tip, "a refused release commits nothing");
    assert_eq!(repo.claimed(POOL), ["b"]);
}

#[test]
fn a_release_of_a_pair_still_held_releases_both_and_a_hand_made_pair_is_unfenced() {
    let (repo, src) = initialised(&["a", "b", "c"]);
    let inputs = Inputs::new();
    pair_claimed_and_fetched(&src, &inputs);
    release_held(&src, &inputs).assert_success();
    assert!(repo.claimed(POOL).is_empty());
    // A directory made by hand (a `name` of two lines, no `claim`) releases
    // whatever is claimed under those names, as documented.
    put(
        &src,
        json!({"claim": ["b", "c"]}),
        &Inputs::new(),
        &OTHER_BUILD,
    );
    let by_hand = inputs.path().join("by-hand");
    std::fs::create_dir_all(&by_hand).unwrap();
    std::fs::write(by_hand.join("name"), "b\nc\n").unwrap();
    put(&src, json!({"release": "by-hand"}), &inputs, &BUILD);
    assert!(repo.claimed(POOL).is_empty());
}

#[test]
fn the_refusal_names_a_new_holder_that_claimed_the_lock_with_another_in_one_commit() {
    let (repo, src) = initialised(&["a", "b", "c"]);
    let inputs = Inputs::new();
    pair_claimed_and_fetched(&src, &inputs);
    pool(
        &src,
        &[
            "release", "a", "--force", "--reason", "stuck", "--as", "ops",
        ],
    )
    .assert_success();
    put(
        &src,
        json!({"claim": ["a", "c"]}),
        &Inputs::new(),
        &OTHER_BUILD,
    );
    let tip = repo.tip();
    let run = release_held(&src, &inputs);
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("it is now claimed by main/app/deploy #8 for"),
        "{}",
        run.stderr
    );
    assert_eq!(repo.tip(), tip, "a refused release commits nothing");
}
