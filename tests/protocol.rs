//! The protocol edges: arguments, malformed requests, the Go resource's error strings.

use serde_json::json;

use crate::support::{run_bin, run_bin_raw, LockRepo};
use crate::{source, Inputs};

#[test]
fn missing_source_fields_use_the_go_messages() {
    let inputs = Inputs::new();
    for (name, args) in [
        ("check", vec![]),
        ("in", vec![inputs.path()]),
        ("out", vec![inputs.path()]),
    ] {
        let run = run_bin(
            name,
            &args,
            &json!({"source": {"uri": "/x"}, "params": {"acquire": true}}),
            &[],
        );
        run.assert_failure();
        assert!(
            run.stderr.contains("invalid payload (missing branch)"),
            "{name}: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains("invalid payload (missing pool)"),
            "{name}: {}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "nothing on stdout on failure");
    }
    let run = run_bin(
        "check",
        &[],
        &json!({"source": {"branch": "b", "pool": "p"}}),
        &[],
    );
    assert!(
        run.stderr.contains("invalid payload (missing uri)"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_put_without_an_action_uses_the_go_message() {
    let repo = LockRepo::new("main");
    let inputs = Inputs::new();
    let run = run_bin(
        "out",
        &[inputs.path()],
        &json!({"source": source(&repo.file_url(), "main", "p"), "params": {}}),
        &[],
    );
    run.assert_failure();
    assert!(
        run.stderr.contains("invalid payload (missing acquire, release, remove, claim, add, add_claimed, update, check, or check_unclaimed)"),
        "{}",
        run.stderr
    );
}

#[test]
fn misspelled_params_are_rejected_by_name() {
    let repo = LockRepo::new("main");
    repo.add_lock("p", "a", false, b"");
    let inputs = Inputs::new();
    let run = run_bin(
        "out",
        &[inputs.path()],
        &json!({"source": source(&repo.file_url(), "main", "p"), "params": {"aquire": true}}),
        &[],
    );
    run.assert_failure();
    assert!(
        run.stderr.contains("params.aquire (did you mean acquire?)"),
        "{}",
        run.stderr
    );
    assert!(repo.claimed("p").is_empty());
}

#[test]
fn unknown_source_fields_are_only_warned_about() {
    let repo = LockRepo::new("main");
    repo.add_lock("p", "a", false, b"");
    let mut src = source(&repo.file_url(), "main", "p");
    src["some_future_option"] = json!(true);
    let run = run_bin("check", &[], &json!({"source": src}), &[]);
    run.assert_success();
    assert!(
        run.stderr
            .contains("unknown field source.some_future_option is ignored"),
        "{}",
        run.stderr
    );
}

#[test]
fn missing_directory_arguments_are_usage_errors() {
    for name in ["in", "out"] {
        let run = run_bin(name, &[], &json!({"source": {}}), &[]);
        run.assert_failure();
        assert!(run.stderr.contains("usage:"), "{name}: {}", run.stderr);
    }
}

#[test]
fn malformed_json_is_rejected_without_a_panic() {
    for bytes in [
        &b""[..],
        b"{",
        b"[]",
        b"null",
        b"{\"source\": []}",
        b"\xff\xfe",
    ] {
        let run = run_bin_raw("check", &[], bytes, &[]);
        run.assert_failure();
        assert!(
            run.stderr.contains("invalid payload"),
            "{:?}: {}",
            bytes,
            run.stderr
        );
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    }
}

#[test]
fn two_actions_in_one_put_are_refused() {
    let repo = LockRepo::new("main");
    repo.add_lock("p", "a", false, b"");
    let inputs = Inputs::new();
    inputs.lock("x", "a", b"");
    let run = run_bin(
        "out",
        &[inputs.path()],
        &json!({"source": source(&repo.file_url(), "main", "p"), "params": {"acquire": true, "release": "x"}}),
        &[],
    );
    run.assert_failure();
    assert!(run.stderr.contains("acquire and release"), "{}", run.stderr);
}

#[test]
fn bad_lock_names_are_rejected_before_any_change() {
    let repo = LockRepo::new("main");
    repo.add_lock("p", "a", false, b"");
    let tip = repo.tip();
    let inputs = Inputs::new();
    for (i, name) in ["../a", ".hidden", "a/b", ""].iter().enumerate() {
        let dir = format!("bad{i}");
        inputs.lock(&dir, name, b"");
        let run = run_bin(
            "out",
            &[inputs.path()],
            &json!({"source": source(&repo.file_url(), "main", "p"), "params": {"add": dir}}),
            &[],
        );
        run.assert_failure();
        assert!(run.stderr.contains("lock name"), "{name:?}: {}", run.stderr);
    }
    let run = run_bin(
        "out",
        &[inputs.path()],
        &json!({"source": source(&repo.file_url(), "main", "p"), "params": {"claim": "a\nb"}}),
        &[],
    );
    run.assert_failure();
    assert_eq!(repo.tip(), tip);
}

#[test]
fn retry_delay_must_be_a_duration() {
    let repo = LockRepo::new("main");
    let mut src = source(&repo.file_url(), "main", "p");
    src["retry_delay"] = json!("10 minutes");
    let run = run_bin("check", &[], &json!({"source": src}), &[]);
    run.assert_failure();
    assert!(run.stderr.contains("source.retry_delay"), "{}", run.stderr);
}

#[test]
fn the_multicall_binary_runs_as_the_name_it_is_linked_as() {
    let repo = LockRepo::new("main");
    repo.add_lock("envs", "a", false, b"a");
    let links = tempfile::TempDir::new().unwrap();
    let multicall = crate::support::run::bin_path("pool-resource");
    for name in ["check", "in", "out"] {
        std::fs::hard_link(multicall, links.path().join(name)).unwrap();
    }
    let src = source(&repo.path().display().to_string(), "main", "envs");
    let run = |program: &str, args: &[&std::path::Path], request: serde_json::Value| {
        let out = std::process::Command::new(links.path().join(program))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(request.to_string().as_bytes())?;
                child.wait_with_output()
            })
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let inputs = Inputs::new();
    let (code, stdout, stderr) = run(
        "out",
        &[inputs.path()],
        json!({"source": src, "params": {"acquire": true}}),
    );
    assert_eq!(code, Some(0), "{stderr}");
    let claimed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(repo.claimed("envs"), vec!["a".to_string()]);
    let (code, stdout, stderr) = run("check", &[], json!({"source": src}));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap(),
        json!([claimed["version"]])
    );
    let dest = tempfile::TempDir::new().unwrap();
    let (code, _, stderr) = run(
        "in",
        &[dest.path()],
        json!({"source": src, "version": claimed["version"]}),
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(std::fs::read(dest.path().join("metadata")).unwrap(), b"a");
    // Under any other name it says how to run it.
    let plain = run_bin("pool-resource", &[], &json!({"source": src}), &[]);
    plain.assert_failure();
    assert!(
        plain
            .stderr
            .contains("run this program as check, in, out or pool"),
        "{}",
        plain.stderr
    );
}
