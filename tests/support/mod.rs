//! Test support shared by the integration tests: a lock repository built with
//! the git CLI, the servers the resource talks to (git daemon, smart HTTP(S),
//! an HTTP CONNECT proxy, sshd, the Concourse API) and helpers that run the
//! real executables.
//!
//! Every server binds 127.0.0.1 and is stopped when its guard is dropped;
//! every file lives in a `tempfile::TempDir`. The `selftest` module checks
//! these helpers against the stock git CLI and runs in whichever test binary
//! includes this module.
#![allow(dead_code, unused_imports)]

pub mod bg;
pub mod codecommit;
pub mod concourse;
pub mod daemon;
pub mod faults;
pub mod grafana;
pub mod http;
pub mod imds;
mod net;
pub mod proxy;
pub mod repo;
pub mod run;
#[cfg(test)]
mod selftest;
pub mod sshd;
pub mod tls;

pub use bg::Bg;
pub use codecommit::{AwsEnv, CodeCommitServer, GitSignatureCheck};
pub use concourse::Concourse;
pub use daemon::GitDaemon;
pub use http::{HttpGitServer, HttpOptions};
pub use imds::{Imds, ImdsOptions, IssuedKey, Keyring};
pub use proxy::ConnectProxy;
pub use repo::{git, git_ok, CommitInfo, LockRepo};
pub use run::{finish_within, run_bin, run_bin_raw, spawn_bin, Run};
pub use sshd::{ssh_keygen, SshKey, Sshd};
pub use tls::TestCa;

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// How long a freshly started server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Environment variables that point git, libgit2 or OpenSSL at the machine's
/// CA bundle or proxy; tests must say explicitly which ones they want.
pub const AMBIENT_ENV: &[&str] = &[
    "GIT_SSL_CAINFO",
    "GIT_SSL_CAPATH",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "CURL_CA_BUNDLE",
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
    "SSH_AUTH_SOCK",
];

/// A port on 127.0.0.1 that was free a moment ago (the listener is closed
/// before returning, so callers that spawn a server must retry on failure).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0 to find a free port")
        .port()
}

/// Waits until 127.0.0.1:`port` accepts connections. Returns `false` if the
/// child exits first (typically because the port was taken) and panics after
/// [`READY_TIMEOUT`].
pub(crate) fn wait_until_listening(child: &mut Child, port: u16, what: &str) -> bool {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return true;
        }
        if let Some(status) = child.try_wait().expect("polling a server process") {
            eprintln!("{what} on port {port} exited early with {status}");
            return false;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on 127.0.0.1:{port} within {READY_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills a child started with `process_group(0)` together with everything it
/// forked, then reaps it.
pub(crate) fn kill_group(child: &mut Child) {
    // `kill -9 -- -PGID` also reaches the children the server forked (git
    // daemon and sshd fork one per connection), even if the leader is gone.
    let _ = Command::new("kill")
        .args(["-9", "--", &format!("-{}", child.id())])
        .stderr(std::process::Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// Records that `test` could not run here, and why: on stderr, and as a
/// `SKIPPED: test: why` line in the file named by `POOL_TEST_SKIP_LOG`
/// (set by `ci/test.sh`, which prints those lines and counts them as
/// skipped, not passed, in its totals). The caller then returns: cargo's
/// harness has no run-time skip, so the file is what keeps a skip from
/// passing for a pass. A test that needs a tool plain `cargo test` may lack
/// is also `#[ignore = "needs TOOL: ..."]`, so that outside `ci/test.sh`
/// (which runs it with `--include-ignored`) it shows as ignored.
pub fn skip(test: &str, why: &str) {
    let line = format!("SKIPPED: {test}: {}", why.replace('\n', " / "));
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("POOL_TEST_SKIP_LOG") {
        use std::io::Write;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path);
        match file {
            Ok(mut f) => {
                let _ = writeln!(f, "{line}");
            }
            Err(e) => panic!("cannot record a skip in {}: {e}", path.to_string_lossy()),
        }
    }
}
