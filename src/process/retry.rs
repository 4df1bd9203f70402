//! How long to back off after a network fault, and how often to try.
//!
//! Only network faults are retried ([`crate::Error::is_retryable`]); the
//! delay doubles from one second up to half a minute, with jitter so that
//! workers that failed together do not retry together, and gives up after a
//! few attempts rather than retrying forever. Tests shorten the base delay
//! with `POOL_RESOURCE_BACKOFF_BASE_MS`.

use std::time::Duration;

/// The environment variable that sets the first backoff delay, in milliseconds.
pub const BACKOFF_ENV: &str = "POOL_RESOURCE_BACKOFF_BASE_MS";

/// Exponential backoff with a cap and an attempt limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub base: Duration,
    /// The longest delay.
    pub cap: Duration,
    /// Consecutive failures tolerated before giving up.
    pub max_failures: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(30),
            max_failures: 6,
        }
    }
}

impl Backoff {
    /// The default, with the base delay taken from [`BACKOFF_ENV`] if set.
    pub fn from_env() -> Backoff {
        let mut b = Backoff::default();
        if let Some(ms) = std::env::var(BACKOFF_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            b.base = Duration::from_millis(ms);
            b.cap = b.cap.min(b.base * 32);
        }
        b
    }

    /// The delay before retry number `failure` (1 for the first retry).
    pub fn delay(&self, failure: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << failure.saturating_sub(1).min(16))
            .min(self.cap);
        // Up to 25% jitter.
        let jitter = exp.mul_f64(fastrand::f64() * 0.25);
        exp.saturating_sub(exp / 8) + jitter
    }
}

/// A short random pause after a lost race: enough to let racers spread out.
pub fn race_jitter(races: u32) -> Duration {
    Duration::from_millis(fastrand::u64(0..=(5 * u64::from(races.min(10))) + 5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff::default();
        assert!(b.delay(1) < Duration::from_millis(1200));
        assert!(b.delay(2) > Duration::from_millis(1700));
        assert!(b.delay(20) <= Duration::from_secs(34));
        assert!(b.delay(20) >= Duration::from_secs(26));
    }
}
