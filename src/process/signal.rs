//! SIGINT/SIGTERM: stop waiting promptly and never claim after an abort.
//!
//! Concourse aborts a step with SIGTERM, then SIGKILL ten seconds later.
//! The Go resource's wrapper died on SIGTERM while its child kept retrying and
//! later claimed a lock for a build that no longer existed. Here the signal
//! sets a flag that every wait polls (so a waiting put ends within a fraction
//! of a second) and that is checked before each commit is started; a second
//! signal exits at once.
//!
//! One exception: a put waiting in line removes its ticket after the
//! signal ([`Interrupt::allow_cleanup`]), for a few seconds at most, so that
//! an aborted build does not hold up the builds behind it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How often a sleeping wait looks at the flag.
const POLL: Duration = Duration::from_millis(50);

/// How long all the cleanup after a signal may take together (giving back
/// a claim the signal caught in flight, then leaving the line), counted
/// from when the signal was first seen: Concourse sends SIGKILL 10 s after
/// SIGTERM (Garden's `Stop(false)`, containerd's `worker/runtime/killer.go`
/// `GracePeriod`); one second is kept for the answer and the exit.
pub const CLEANUP_WINDOW: Duration = Duration::from_secs(9);

/// Shared view of whether a termination signal has arrived.
#[derive(Clone, Default)]
pub struct Interrupt {
    signal: Arc<AtomicUsize>,
    /// Until when transfers may go on after a signal (the cleanup).
    cleanup_until: Arc<Mutex<Option<Instant>>>,
    /// When the signal was first seen (by [`Interrupt::received`], which
    /// every wait and transfer polls): where the cleanup window starts.
    seen_at: Arc<Mutex<Option<Instant>>>,
}

impl Interrupt {
    /// Registers handlers for SIGINT and SIGTERM. The first sets the flag; a
    /// second one ends the process at once with status 130.
    pub fn install() -> Result<Interrupt> {
        let interrupt = Interrupt::default();
        let seen = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&seen))
                .and_then(|_| signal_hook::flag::register(sig, Arc::clone(&seen)))
                .and_then(|_| {
                    signal_hook::flag::register_usize(
                        sig,
                        Arc::clone(&interrupt.signal),
                        sig as usize,
                    )
                })
                .map_err(|e| Error::io("could not install signal handlers", e))?;
        }
        Ok(interrupt)
    }

    /// The signal received, if any.
    pub fn received(&self) -> Option<&'static str> {
        let signal = match self.signal.load(Ordering::SeqCst) as i32 {
            0 => return None,
            signal_hook::consts::SIGINT => "SIGINT",
            signal_hook::consts::SIGTERM => "SIGTERM",
            _ => "a signal",
        };
        if let Ok(mut seen) = self.seen_at.lock() {
            seen.get_or_insert_with(Instant::now);
        }
        Some(signal)
    }

    /// With a signal received, the end of the `window` that starts when it
    /// was first seen: the time every cleanup after it must keep to (all of
    /// them together, not each its own). `None` without a signal.
    pub fn window_end(&self, window: Duration) -> Option<Instant> {
        self.received()?;
        let seen = *self.seen_at.lock().ok()?;
        seen.map(|at| at + window)
    }

    /// Lets network transfers started before `until` go on despite a
    /// signal: the one cleanup commit after a signal (leaving the line).
    pub fn allow_cleanup(&self, until: Instant) {
        if let Ok(mut c) = self.cleanup_until.lock() {
            *c = Some(until);
        }
    }

    /// Whether a transfer in progress should stop: a signal arrived and
    /// no cleanup is under way (or its time is up).
    pub fn stops_transfers(&self) -> bool {
        self.received().is_some()
            && !self
                .cleanup_until
                .lock()
                .map(|c| c.is_some_and(|until| Instant::now() < until))
                .unwrap_or(false)
    }

    /// Fails with [`Error::Interrupted`] if a signal has arrived.
    pub fn check(&self, doing: &str) -> Result<()> {
        match self.received() {
            None => Ok(()),
            Some(signal) => Err(Error::Interrupted {
                signal,
                doing: doing.to_string(),
            }),
        }
    }

    /// Sleeps for `d`, returning early with an error if a signal arrives.
    pub fn sleep(&self, d: Duration, doing: &str) -> Result<()> {
        let end = Instant::now() + d;
        loop {
            self.check(doing)?;
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            std::thread::sleep(POLL.min(end - now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raised_flag_cuts_a_sleep_short() {
        let i = Interrupt::default();
        i.signal
            .store(signal_hook::consts::SIGTERM as usize, Ordering::SeqCst);
        let start = Instant::now();
        let err = i.sleep(Duration::from_secs(10), "waiting").unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(1));
        assert!(err.to_string().contains("SIGTERM"));
    }

    #[test]
    fn the_cleanup_window_runs_from_when_the_signal_was_first_seen() {
        let i = Interrupt::default();
        assert_eq!(i.window_end(Duration::from_secs(9)), None);
        i.signal
            .store(signal_hook::consts::SIGTERM as usize, Ordering::SeqCst);
        let before = Instant::now();
        let end = i.window_end(Duration::from_secs(9)).expect("a window");
        assert!(end >= before + Duration::from_secs(9));
        std::thread::sleep(Duration::from_millis(30));
        // Later calls keep the first sighting: the window does not move.
        assert!(i.received().is_some());
        assert_eq!(i.window_end(Duration::from_secs(9)), Some(end));
        assert!(end < Instant::now() + Duration::from_secs(9));
    }
}
