//! A Concourse resource for a pool of locks kept as files in a Git repository.
//!
//! Drop-in for `concourse/pool-resource`: same repository layout, params and
//! JSON, so both can share one lock repository. The tree reads as the
//! program's faces:
//!
//! - [`protocol`]: the JSON Concourse sends and reads, and the build's
//!   metadata from the environment: the contract below everything else.
//! - [`model`]: what a pool is and which change an operation makes, the
//!   commit message format and the history's semantics. No I/O, no git2.
//! - [`config`]: the pipeline's `source` and a step's `params`, validated
//!   into types that cannot be wrong before any network traffic.
//! - [`store`]: where the pool lives. One seam ([`store::seam`]) above two
//!   backends: git through libgit2 ([`store::git`]) and the CodeCommit API
//!   ([`store::codecommit`]).
//! - [`resource`]: the Concourse resource, `check`, `in` and `out`, with the
//!   put loop that waits and retries.
//! - [`operator`]: the `pool` command for people: status, history, changes,
//!   `serve` with its page and metrics.
//! - [`process`]: what every executable shares: the log on stderr, signals,
//!   back-off, printing an error.
//!
//! The executables in `bin/` are a few lines each over [`resource::run`] and
//! [`operator::cli`].

pub mod config;
pub mod error;
pub mod model;
pub mod operator;
pub mod process;
pub mod protocol;
pub mod resource;
pub mod store;

pub use error::{Error, Result};
