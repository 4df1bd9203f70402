//! Runs the real `check`, `in` and `out` executables the way Concourse does
//! (request JSON on stdin, result JSON on stdout, logs on stderr) and turns
//! any unexpected outcome into a panic showing everything that happened.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};

/// The outcome of running one of the resource's executables.
pub struct Run {
    /// How the command was invoked, for failure messages.
    pub command: String,
    /// The exit status.
    pub status: ExitStatus,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
}

impl Run {
    /// Whether it succeeded, its stdout and its stderr.
    pub fn parts(self) -> (bool, String, String) {
        (self.status.success(), self.stdout, self.stderr)
    }

    /// Stdout parsed as exactly one JSON document.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| self.fail(&format!("stdout is not one JSON document: {e}")))
    }

    /// Panics unless the command exited 0.
    pub fn assert_success(&self) -> &Self {
        if !self.status.success() {
            self.fail("expected success");
        }
        self
    }

    /// Panics unless the command exited 1.
    pub fn assert_failure(&self) -> &Self {
        if self.status.code() != Some(1) {
            self.fail("expected exit code 1");
        }
        self
    }

    fn fail(&self, why: &str) -> ! {
        panic!(
            "{why}\ncommand: {}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
    }
}

/// Runs executable `name` (`check`, `in` or `out`) with `args`, `request` on
/// stdin and `env` added; see [`spawn_raw`] for the environment.
pub fn run_bin(
    name: &str,
    args: &[&Path],
    request: &serde_json::Value,
    env: &[(&str, &str)],
) -> Run {
    run_bin_raw(name, args, request.to_string().as_bytes(), env)
}

/// Like [`run_bin`] with arbitrary stdin bytes, for malformed requests.
pub fn run_bin_raw(name: &str, args: &[&Path], stdin: &[u8], env: &[(&str, &str)]) -> Run {
    let (child, command) = spawn_raw(name, args, stdin, env);
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {command}: {e}"));
    Run {
        command,
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Starts executable `name` with `request` written to its stdin (then
/// closed) and stdout/stderr piped, for tests that race or abort it.
pub fn spawn_bin(
    name: &str,
    args: &[&Path],
    request: &serde_json::Value,
    env: &[(&str, &str)],
) -> Child {
    spawn_raw(name, args, request.to_string().as_bytes(), env).0
}

/// The path of executable `name`.
pub fn bin_path(name: &str) -> &'static str {
    match name {
        "check" => env!("CARGO_BIN_EXE_check"),
        "in" => env!("CARGO_BIN_EXE_in"),
        "out" => env!("CARGO_BIN_EXE_out"),
        "pool-resource" => env!("CARGO_BIN_EXE_pool-resource"),
        "pool" => env!("CARGO_BIN_EXE_pool"),
        other => panic!("no executable called {other:?}"),
    }
}

/// Spawns the executable without the machine's `AWS_*`, CA and proxy
/// variables ([`super::AMBIENT_ENV`]) unless `env` sets them, feeding stdin
/// from a thread. Returns the child and a printable command line.
pub fn spawn_raw(
    name: &str,
    args: &[&Path],
    stdin: &[u8],
    env: &[(&str, &str)],
) -> (Child, String) {
    let mut cmd = Command::new(bin_path(name));
    cmd.args(args);
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(var);
        }
    }
    for var in super::AMBIENT_ENV {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let command = describe(name, args, stdin, env);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {command}: {e}"));
    let mut pipe = child.stdin.take().expect("child stdin");
    let bytes = stdin.to_vec();
    // The executable may exit without reading everything; that is its
    // business, so write errors are ignored.
    std::thread::spawn(move || {
        let _ = pipe.write_all(&bytes);
    });
    (child, command)
}

/// `ENV=... name args < stdin`, with stdin shortened if it is long.
fn describe(name: &str, args: &[&Path], stdin: &[u8], env: &[(&str, &str)]) -> String {
    let mut line: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    line.push(name.to_owned());
    line.extend(args.iter().map(|a| a.display().to_string()));
    let stdin = String::from_utf8_lossy(stdin);
    let count = stdin.chars().count();
    let shown: String = stdin.chars().take(300).collect();
    let more = if count > 300 {
        format!("... ({count} characters)")
    } else {
        String::new()
    };
    format!("{} <<< {shown}{more}", line.join(" "))
}

/// Waits for `child` at most `deadline`, killing it and failing with the
/// end of its stderr if it is still running then: a test of waiting puts
/// must end even when a put would wait forever.
pub fn finish_within(mut child: Child, what: &str, deadline: std::time::Duration) -> Run {
    let start = std::time::Instant::now();
    while child.try_wait().expect("polling a child").is_none() {
        if start.elapsed() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("reaping a child");
            let stderr = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = stderr.lines().collect();
            panic!(
                "{what} still running after {deadline:?}\n--- last lines of stderr ---\n{}",
                lines[lines.len().saturating_sub(20)..].join("\n")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("reaping a child");
    Run {
        command: what.to_string(),
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
