//! The `pool` command line as a newcomer meets it: help and `--version` on
//! stdout, a suggestion for a typo, usage errors that say what to do (exit
//! 2), an error for a lock that does not exist, and no colour codes in a
//! file.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::source;
use crate::support::run::bin_path;
use crate::support::{run_bin_raw, LockRepo, Run};

/// Every command with the options its help must list, one line each.
const COMMANDS: &[(&str, &[&str])] = &[
    ("status", &["--json", "--html <FILE>"]),
    ("serve", &["--listen <ADDR>", "--refresh <DURATION>"]),
    ("history", &["[LOCK]", "--since <DURATION>", "--json"]),
    ("init", &["[LOCK]..."]),
    ("add", &["<LOCK>", "--claimed", "--metadata <FILE>"]),
    ("remove", &["<LOCK>", "--force"]),
    ("claim", &["<LOCK>", "--wait"]),
    ("release", &["<LOCK>", "--force"]),
    ("hold", &[]),
    ("unhold", &[]),
    ("reap", &["--older-than <DURATION>", "--dry-run"]),
    ("completions", &["<SHELL>"]),
];

/// The options every command takes.
const GLOBAL: &[&str] = &[
    "--source <FILE>",
    "--uri <URI>",
    "--branch <BRANCH>",
    "--pool <POOL>",
    "--as <NAME>",
    "--reason <TEXT>",
    "-h, --help",
];

/// Runs `pool args` with `env` (and `POOL_SOURCE` only if `env` sets it).
fn pool(args: &[&str], env: &[(&str, &str)]) -> Run {
    let paths: Vec<&Path> = args.iter().map(Path::new).collect();
    let mut env = env.to_vec();
    if !env.iter().any(|(k, _)| *k == "POOL_SOURCE") {
        // The machine's own POOL_SOURCE must not leak in: empty is unset.
        env.push(("POOL_SOURCE", ""));
    }
    run_bin_raw("pool", &paths, b"", &env)
}

fn assert_usage_error(run: &Run) {
    assert_eq!(
        run.status.code(),
        Some(2),
        "{}: {}",
        run.command,
        run.stderr
    );
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
}

/// Whether `help` has a line that starts with `option` (after indentation)
/// and says something about it.
fn lists(help: &str, option: &str) -> bool {
    help.lines().any(|line| {
        line.trim_start()
            .strip_prefix(option)
            .is_some_and(|rest| rest.starts_with("  ") && !rest.trim().is_empty())
    })
}

#[test]
fn every_way_of_asking_for_help_prints_to_stdout_and_exits_0() {
    for args in [
        &["-h"][..],
        &["--help"],
        &["help"],
        &["help", "status"],
        &["status", "--help"],
        &["status", "-h"],
    ] {
        let run = pool(args, &[]);
        run.assert_success();
        assert!(run.stderr.is_empty(), "{args:?}: {}", run.stderr);
        assert!(
            run.stdout.contains("Usage: pool"),
            "{args:?}: {}",
            run.stdout
        );
    }
    let top = pool(&["--help"], &[]).stdout;
    for (command, _) in COMMANDS {
        assert!(lists(&top, command), "{command} is not listed:\n{top}");
    }
    assert!(top.contains("POOL_SOURCE"), "{top}");
}

#[test]
fn each_commands_help_lists_every_option_on_a_line_of_its_own() {
    for (command, options) in COMMANDS {
        for help in [
            pool(&["help", command], &[]),
            pool(&[command, "--help"], &[]),
        ] {
            help.assert_success();
            let text = &help.stdout;
            assert!(text.contains(&format!("Usage: pool {command}")), "{text}");
            for option in options.iter().chain(GLOBAL) {
                assert!(
                    lists(text, option),
                    "pool {command}: no line for {option}:\n{text}"
                );
            }
        }
    }
}

#[test]
fn version_prints_the_crate_version() {
    let run = pool(&["--version"], &[]);
    run.assert_success();
    assert_eq!(run.stdout, format!("pool {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn a_mistyped_command_or_option_gets_the_nearest_name_and_exit_2() {
    let run = pool(&["stauts"], &[]);
    assert_usage_error(&run);
    assert!(
        run.stderr.contains("unrecognized subcommand 'stauts'")
            && run
                .stderr
                .contains("tip: a similar subcommand exists: 'status'"),
        "{}",
        run.stderr
    );
    let run = pool(&["status", "--jsn"], &[]);
    assert_usage_error(&run);
    assert!(
        run.stderr
            .contains("tip: a similar argument exists: '--json'"),
        "{}",
        run.stderr
    );
    let run = pool(&["reap", "--older-then", "1h"], &[]);
    assert_usage_error(&run);
    assert!(run.stderr.contains("'--older-than'"), "{}", run.stderr);
}

#[test]
fn an_invalid_value_is_a_usage_error_that_shows_a_valid_one() {
    let run = pool(&["history", "--since", "3"], &[]);
    assert_usage_error(&run);
    assert!(
        run.stderr.contains("missing unit") && run.stderr.contains("1h30m"),
        "{}",
        run.stderr
    );
    let run = pool(&["claim", ".git", "--reason", "x"], &[]);
    assert_usage_error(&run);
    assert!(run.stderr.contains("starts with '.'"), "{}", run.stderr);
}

#[test]
fn status_without_a_source_is_a_usage_error_naming_both_ways_to_give_one() {
    for args in [&["status"][..], &["history", "qa"], &["serve"]] {
        let run = pool(args, &[]);
        assert_usage_error(&run);
        assert!(
            run.stderr.contains("--source FILE") && run.stderr.contains("POOL_SOURCE"),
            "{args:?}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains("invalid payload"), "{}", run.stderr);
    }
}

#[test]
fn a_source_error_says_where_the_source_came_from() {
    let run = pool(&["status"], &[("POOL_SOURCE", r#"{"branch": "main"}"#)]);
    run.assert_failure();
    assert!(
        run.stderr
            .contains("source.uri is missing (in the source from POOL_SOURCE)"),
        "{}",
        run.stderr
    );
    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("locks.yml");
    std::fs::write(&file, "uri: /nowhere\n").unwrap();
    let file = file.display().to_string();
    let run = pool(&["--source", &file, "status"], &[]);
    run.assert_failure();
    assert!(
        run.stderr.contains(&format!(
            "source.branch is missing (in the source from --source {file})"
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn history_of_a_lock_that_does_not_exist_is_an_error() {
    let repo = LockRepo::new("main");
    let src = source(&repo.path().display().to_string(), "main", "envs").to_string();
    let env = [("POOL_SOURCE", src.as_str())];
    pool(&["--as", "ops", "init", "qa"], &env).assert_success();

    let run = pool(&["history", "nope"], &env);
    run.assert_failure();
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(
        run.stderr
            .contains(r#"error: lock "nope" does not exist in pool "envs""#),
        "{}",
        run.stderr
    );
    // A lock that exists but was never claimed: nothing to list, no error.
    let run = pool(&["history", "qa"], &env);
    run.assert_success();
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(
        run.stderr.contains("no claims of qa since"),
        "{}",
        run.stderr
    );
    let run = pool(&["history", "qa", "--json"], &env);
    run.assert_success();
    assert_eq!(run.json(), Value::Array(Vec::new()));
}

#[test]
fn stderr_written_to_a_file_has_no_colour_codes() {
    let repo = LockRepo::new("main");
    let src = source(&repo.path().display().to_string(), "main", "envs").to_string();
    let dir = tempfile::TempDir::new().unwrap();
    for (i, args) in [&["stauts"][..], &["status"], &["history", "nope"]]
        .iter()
        .enumerate()
    {
        let path = dir.path().join(format!("stderr-{i}"));
        let file = std::fs::File::create(&path).unwrap();
        let mut cmd = Command::new(bin_path("pool"));
        cmd.args(*args)
            .env("TERM", "xterm-256color")
            .env_remove("NO_COLOR")
            .env_remove("CLICOLOR_FORCE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        // `status` fails for want of a source; `history` for the lock.
        match *args {
            ["history", ..] => cmd.env("POOL_SOURCE", &src),
            _ => cmd.env_remove("POOL_SOURCE"),
        };
        let status = cmd.status().unwrap();
        assert!(!status.success(), "{args:?}");
        let written = std::fs::read_to_string(&path).unwrap();
        assert!(written.starts_with("error: "), "{args:?}: {written}");
        assert!(!written.contains('\x1b'), "{args:?}: {written:?}");
    }
}

#[test]
fn completions_are_printed_for_a_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let run = pool(&["completions", shell], &[]);
        run.assert_success();
        assert!(run.stdout.contains("status"), "{shell}: {}", run.stdout);
    }
    assert_usage_error(&pool(&["completions", "tcsh"], &[]));
}
