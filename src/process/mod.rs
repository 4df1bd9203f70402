//! What every executable shares: the [`clock`], the [`log`] on stderr
//! (scrubbed of secrets), [`signal`]s (an abort stops a wait and never
//! claims), the network [`retry`] back-off, and how an error is
//! [`report`]ed.

pub mod clock;
pub mod log;
pub mod report;
pub mod retry;
pub mod signal;
