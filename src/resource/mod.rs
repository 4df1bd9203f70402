//! The Concourse resource: `check`, `in` (get) and `out` (put).
//!
//! [`run`] reads the request from stdin and prints the one JSON document
//! Concourse reads ([`crate::protocol`] is that JSON). [`check`] lists versions,
//! [`get`] writes the lock a version names, and [`put`] is the loop that
//! plans a change, commits it, and waits or retries. [`holder`] finds who
//! holds a lock (metadata, expiry, fences); [`rerun`] recognises a put that
//! already ran.

pub mod check;
pub mod get;
pub mod holder;
pub mod put;
pub mod rerun;
pub mod run;
pub mod waiting;
