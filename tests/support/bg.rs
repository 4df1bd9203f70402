//! One harness for a process running in the background (cargo-test-support's
//! `ProcessBuilder` and `Execs` play this part in cargo): its stderr read
//! line by line as it comes, so that a test waits for a line instead of
//! sleeping and hoping ([`Bg::until_logged`]); its stdout read whole; its
//! end awaited within a bound, after which it is killed and the test fails
//! with what it logged ([`Bg::finish`], [`Bg::wait_exit`]). Once the
//! process is gone, stdout and stderr must close: nothing it started may
//! keep them open (the Go resource's orphaned ssh-agent hung aborted
//! builds).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Run;

/// How long stdout and stderr may stay open after the process is gone.
const PIPES_CLOSE: Duration = Duration::from_secs(5);

/// A process running in the background.
pub struct Bg {
    child: Child,
    name: String,
    deadline: Duration,
    stderr: Arc<Mutex<String>>,
    stderr_closed: Receiver<()>,
    stdout: Receiver<String>,
    stdout_read: Option<String>,
    /// How many lines of stderr [`Bg::next_line_with`] has gone past.
    cursor: usize,
}

impl Bg {
    /// Reads `child`'s piped stderr and stdout from now on; `name` names it
    /// in failures, and `deadline` bounds every wait on it.
    pub fn new(child: Child, name: impl Into<String>, deadline: Duration) -> Bg {
        Bg::start(child, name.into(), deadline, None)
    }

    /// [`Bg::new`], each line of stderr also written to the test's stderr
    /// after `prefix` as it comes (a server's log, shown when a test fails).
    pub fn echoing(child: Child, name: impl Into<String>, deadline: Duration, prefix: &str) -> Bg {
        Bg::start(child, name.into(), deadline, Some(prefix.to_string()))
    }

    fn start(mut child: Child, name: String, deadline: Duration, echo: Option<String>) -> Bg {
        let pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let (closed_tx, stderr_closed) = mpsc::channel();
        std::thread::spawn(move || {
            // Byte for byte (lossy where it is not UTF-8), as it comes.
            let mut pipe = BufReader::new(pipe);
            let mut line = Vec::new();
            while matches!(pipe.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                let text = String::from_utf8_lossy(&line);
                if let Some(prefix) = &echo {
                    eprint!("{prefix}{text}");
                }
                sink.lock().expect("the stderr buffer").push_str(&text);
                line.clear();
            }
            let _ = closed_tx.send(());
        });
        let (out_tx, stdout) = mpsc::channel();
        let mut pipe = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            let _ = out_tx.send(String::from_utf8_lossy(&bytes).into_owned());
        });
        Bg {
            child,
            name,
            deadline,
            stderr,
            stderr_closed,
            stdout,
            stdout_read: None,
            cursor: 0,
        }
    }

    /// Stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("the stderr buffer").clone()
    }

    /// The name it was given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("polling a child").is_none()
    }

    /// Returns once stderr holds `times` lines containing `needle`; fails
    /// if the process ends first or the deadline passes.
    pub fn until_logged(&mut self, times: usize, needle: &str) {
        let what = format!("did not log {needle:?} {times} times");
        self.poll(&what, |seen, _| {
            (seen.lines().filter(|l| l.contains(needle)).count() >= times).then_some(())
        })
    }

    /// The next line of stderr containing `needle`, after the lines this
    /// went past before; fails if the process ends first or the deadline
    /// passes.
    pub fn next_line_with(&mut self, needle: &str) -> String {
        let (i, line) = self.poll(&format!("never said {needle:?}"), |seen, cursor| {
            seen.lines()
                .enumerate()
                .skip(cursor)
                .find(|(_, l)| l.contains(needle))
                .map(|(i, l)| (i, l.to_string()))
        });
        self.cursor = i + 1;
        line
    }

    /// Looks at stderr (and the cursor) until `found` finds something;
    /// fails, saying it `what`, if the process ends first or the deadline
    /// passes.
    fn poll<T>(&mut self, what: &str, found: impl Fn(&str, usize) -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            let seen = self.stderr();
            if let Some(t) = found(&seen, self.cursor) {
                return t;
            }
            let ended = self.child.try_wait().expect("polling a child");
            assert!(
                ended.is_none() && start.elapsed() < self.deadline,
                "{} {what} ({}):\n{seen}",
                self.name,
                match ended {
                    Some(status) => format!("it ended: {status}"),
                    None => format!("still running after {:?}", self.deadline),
                }
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` (`TERM`, `INT`) with the `kill` command.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// Kills it (SIGKILL, as Concourse does ten seconds after SIGTERM)
    /// and waits for it.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    /// Waits for the end: its status and how long the wait took. Kills it
    /// and fails, with its stderr, if it still runs after the deadline.
    pub fn wait_exit(&mut self) -> (ExitStatus, Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("polling a child") {
                return (status, start.elapsed());
            }
            if start.elapsed() > self.deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} still running after {:?}; stderr:\n{}",
                    self.name,
                    self.deadline,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Everything written to stdout; the process must be gone, and stdout
    /// closed soon after.
    pub fn stdout(&mut self) -> String {
        if self.stdout_read.is_none() {
            let text = match self.stdout.recv_timeout(PIPES_CLOSE) {
                Ok(text) => text,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "stdout of {} is still open after it exited: a child process holds it",
                    self.name
                ),
                Err(RecvTimeoutError::Disconnected) => panic!("the stdout reader died"),
            };
            self.stdout_read = Some(text);
        }
        self.stdout_read.clone().unwrap_or_default()
    }

    /// All of stderr; the process must be gone, and stderr closed soon
    /// after.
    pub fn all_stderr(&self) -> String {
        if let Err(RecvTimeoutError::Timeout) = self.stderr_closed.recv_timeout(PIPES_CLOSE) {
            panic!(
                "stderr of {} is still open after it exited: a child process holds it",
                self.name
            );
        }
        self.stderr()
    }

    /// Waits for the end within the deadline ([`Bg::wait_exit`]) and
    /// returns what it did.
    pub fn finish(mut self) -> Run {
        let (status, _) = self.wait_exit();
        Run {
            command: self.name.clone(),
            status,
            stdout: self.stdout(),
            stderr: self.all_stderr(),
        }
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
