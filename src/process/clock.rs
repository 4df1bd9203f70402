//! The clock, read in one place: the model takes the time from its callers
//! (it does no I/O), and they take it from [`now_unix`], which a test can
//! move with [`NOW_OFFSET_ENV`].

/// A test hook: a whole number of seconds that [`now_unix`] adds to the
/// clock, so that a test sees a claim made a moment ago as an hour old
/// instead of sleeping until it is (as `POOL_RESOURCE_BACKOFF_BASE_MS`
/// shortens waits). Git's commit times come from the system clock and do
/// not move. Unset, or not a whole number, it changes nothing.
pub const NOW_OFFSET_ENV: &str = "POOL_RESOURCE_NOW_OFFSET_SECONDS";

/// Seconds since the Unix epoch now (0 if the clock is before 1970), moved
/// by [`NOW_OFFSET_ENV`] when a test sets it.
pub fn now_unix() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let offset = std::env::var(NOW_OFFSET_ENV)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(0);
    now.saturating_add(offset)
}
