//! The image Concourse workers pull. `ci/build-and-test-image.sh` builds it
//! from the real Dockerfile with buildah (its offline route: binaries compiled
//! here, `FROM scratch` only), checks its files and labels, drives check, in
//! and out inside it with podman against a `git daemon` on 127.0.0.1, and
//! prints its size. The script runs once per test binary; the tests here add
//! what needs the test servers, such as a worker's CA certificates mounted
//! over the image's own.
//!
//! The tests are `#[ignore]`d, so plain `cargo test` shows them as ignored,
//! not passed; `ci/test.sh` runs them with `--include-ignored`. The script
//! installs buildah and podman when they are missing. Only when that fails,
//! or when they cannot be used on this host, does it exit 77; the tests then
//! record a skip ([`crate::support::skip`]: `ci/test.sh` prints it and counts
//! it as skipped, not passed) and check nothing. The Dockerfile's `tests`
//! stage skips this module (`--skip image::`): it is inside a build.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::support::{HttpGitServer, HttpOptions, LockRepo, TestCa};

/// The tag the tests build; kept apart from the script's default.
const IMAGE: &str = "localhost/pool-resource:test";

/// The largest image we accept, in bytes: the goal of issue 5.
const MAX_IMAGE_BYTES: u64 = 15_000_000;

/// What came of running the build script.
enum Build {
    /// The image is built and passed the script's checks; the summary lines.
    Ready(String),
    /// buildah or podman cannot be used here; the script's reason.
    Skipped(String),
    /// The build or a check failed; everything the script printed.
    Failed(String),
}

/// Runs the script the first time it is called; later calls (from other
/// tests, possibly in parallel) wait for that run and share its outcome.
fn build() -> &'static Build {
    static BUILD: OnceLock<Build> = OnceLock::new();
    BUILD.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let started = Instant::now();
        let out = Command::new("bash")
            .arg(root.join("ci/build-and-test-image.sh"))
            .current_dir(root)
            .env("IMAGE", IMAGE)
            // The size gets its own test below, so that an image that is too
            // big still has its other tests run.
            .env("IMAGE_MAX_BYTES", i64::MAX.to_string())
            // Never the target dir of the `cargo test` running us: cargo
            // holds its lock until the tests end.
            .env("CARGO_TARGET_DIR", root.join("target/image"))
            .stdin(Stdio::null())
            .output()
            .expect("running bash ci/build-and-test-image.sh");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!(
            "ci/build-and-test-image.sh took {:.0?}:\n{stdout}",
            started.elapsed()
        );
        match out.status.code() {
            Some(0) => Build::Ready(stdout),
            Some(77) => Build::Skipped(
                stderr
                    .lines()
                    .filter(|l| l.starts_with("SKIP:"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            _ => Build::Failed(format!(
                "ci/build-and-test-image.sh failed with {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
                out.status
            )),
        }
    })
}

/// The built image, or `None` (after saying why) when it cannot be built here.
fn image(test: &str) -> Option<&'static str> {
    match build() {
        Build::Ready(_) => Some(IMAGE),
        Build::Skipped(why) => {
            crate::support::skip(
                &format!("image::{test}"),
                &format!("the image cannot be built here: {why}"),
            );
            None
        }
        Build::Failed(output) => panic!("{output}"),
    }
}

/// `podman run` as this host needs it (runc, low ulimits), with the host's
/// network and an environment as bare as a Concourse container's.
const PODMAN_RUN: &[&str] = &[
    "run",
    "--rm",
    "-i",
    "--runtime=runc",
    "--network=host",
    "--unsetenv-all",
    "--ulimit=nofile=1024:1024",
    "--ulimit=nproc=1024:1024",
];

/// Runs `command` in `image` with `volumes` mounted and `stdin` as its input.
fn podman_run(image: &str, volumes: &[String], command: &[&str], stdin: &Value) -> Output {
    let mut cmd = Command::new("podman");
    cmd.args(PODMAN_RUN);
    for v in volumes {
        cmd.args(["--volume", v]);
    }
    cmd.arg(image)
        .args(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawning podman run");
    let request = stdin.to_string();
    let mut pipe = child.stdin.take().expect("podman stdin");
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = pipe.write_all(request.as_bytes());
    });
    let out = child.wait_with_output().expect("waiting for podman run");
    writer.join().expect("stdin writer");
    out
}

fn describe(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The script's closing lines, or `None` (after saying why) when the image
/// cannot be built here.
fn summary(test: &str) -> Option<&'static str> {
    image(test)?;
    match build() {
        Build::Ready(summary) => Some(summary),
        _ => unreachable!("image() returned an image"),
    }
}

#[test]
#[ignore = "needs buildah and podman: run by ci/test.sh with --include-ignored"]
fn the_image_runs_check_in_and_out_against_a_git_server() {
    let Some(summary) = summary("the_image_runs_check_in_and_out_against_a_git_server") else {
        return;
    };
    assert!(
        summary.contains(&format!("ok: {IMAGE} runs check, in and out")),
        "{summary}"
    );
}

#[test]
#[ignore = "needs buildah and podman: run by ci/test.sh with --include-ignored"]
fn the_image_is_at_most_15_mb() {
    let Some(summary) = summary("the_image_is_at_most_15_mb") else {
        return;
    };
    // `image localhost/...: 12.3 MB (12345678 bytes), ...`
    let bytes: u64 = summary
        .lines()
        .find_map(|l| l.strip_prefix(&format!("image {IMAGE}: ")))
        .and_then(|rest| rest.split_once(" ("))
        .and_then(|(_, rest)| rest.split_once(" bytes)"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no size line in:\n{summary}"));
    let inspect = Command::new("podman")
        .args(["image", "inspect", "--format", "{{.Size}}", IMAGE])
        .output()
        .expect("running podman image inspect");
    assert_eq!(
        String::from_utf8_lossy(&inspect.stdout).trim(),
        bytes.to_string(),
        "the size printed is not the image's"
    );
    assert!(
        bytes <= MAX_IMAGE_BYTES,
        "the image is {bytes} bytes, over {MAX_IMAGE_BYTES}:\n{summary}"
    );
}

#[test]
#[ignore = "needs buildah and podman: run by ci/test.sh with --include-ignored"]
fn the_image_trusts_the_ca_certificates_a_worker_mounts_over_its_own() {
    let Some(image) = image("the_image_trusts_the_ca_certificates_a_worker_mounts_over_its_own")
    else {
        return;
    };
    let repo = LockRepo::new("main");
    repo.add_lock("pool", "a", false, b"a\n");
    let ca = Arc::new(TestCa::new());
    let server = HttpGitServer::start(
        repo.root(),
        HttpOptions {
            tls: Some(Arc::clone(&ca)),
            ..HttpOptions::default()
        },
    );
    let request = json!({"source": {
        "uri": server.url("locks.git"),
        "branch": "main",
        "pool": "pool",
    }});

    // The image's own bundle does not know the test CA.
    let untrusted = podman_run(image, &[], &["/opt/resource/check"], &request);
    assert_eq!(untrusted.status.code(), Some(1), "{}", describe(&untrusted));
    let stderr = String::from_utf8_lossy(&untrusted.stderr).to_lowercase();
    assert!(stderr.contains("certificate"), "{}", describe(&untrusted));

    // Workers bind-mount a directory of certificates at /etc/ssl/certs.
    let certs = TempDir::new().expect("creating the certs dir");
    std::fs::copy(ca.ca_pem_path(), certs.path().join("ca-certificates.crt"))
        .expect("copying the CA");
    let volume = format!("{}:/etc/ssl/certs:ro", certs.path().display());
    let trusted = podman_run(image, &[volume], &["/opt/resource/check"], &request);
    assert!(trusted.status.success(), "{}", describe(&trusted));
    let versions: Value = serde_json::from_slice(&trusted.stdout)
        .unwrap_or_else(|e| panic!("check printed no JSON ({e}):\n{}", describe(&trusted)));
    assert_eq!(versions, json!([{"ref": repo.tip()}]));
}
