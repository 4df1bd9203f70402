//! `git daemon` serving a directory over `git://`, with push enabled, so the
//! resource can be tested against an unauthenticated remote that can also be
//! stopped and restarted to simulate outages.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use std::os::unix::process::CommandExt;

/// A running `git daemon` exporting every repository under a root directory.
/// Dropping it kills the daemon and all of its per-connection children.
pub struct GitDaemon {
    root: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl GitDaemon {
    /// Starts a daemon exporting `root` (read and push) on a free port of
    /// 127.0.0.1 and waits until it accepts connections.
    pub fn start(root: &Path) -> GitDaemon {
        for _ in 0..10 {
            let port = super::free_port();
            if let Some(child) = spawn(root, port) {
                return GitDaemon {
                    root: root.to_owned(),
                    port,
                    child: Some(child),
                };
            }
        }
        panic!("could not start git daemon for {}", root.display());
    }

    /// The `git://` URL of repository `repo` (relative to the root).
    pub fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }

    /// The port the daemon listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the daemon; connections are refused until [`Self::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            super::kill_group(&mut child);
        }
    }

    /// Stops the daemon if it runs and starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        // The port may linger briefly after the kill; --reuseaddr covers
        // TIME_WAIT, the retries cover the rest.
        for _ in 0..50 {
            if let Some(child) = spawn(&self.root, self.port) {
                self.child = Some(child);
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("could not restart git daemon on port {}", self.port);
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Spawns the daemon in its own process group; `None` if it exited before
/// listening (port taken).
fn spawn(root: &Path, port: u16) -> Option<Child> {
    let mut cmd = Command::new("git");
    cmd.arg("daemon")
        .arg("--reuseaddr")
        .arg("--informative-errors")
        .arg(format!("--base-path={}", root.display()))
        .arg("--export-all")
        .arg("--enable=receive-pack")
        .arg("--listen=127.0.0.1")
        .arg(format!("--port={port}"))
        .arg(root)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = cmd.spawn().expect("spawning git daemon");
    if super::wait_until_listening(&mut child, port, "git daemon") {
        Some(child)
    } else {
        super::kill_group(&mut child);
        None
    }
}
