//! A Concourse resource for a pool of locks kept as files in a Git repository.
//!
//! Drop-in for `concourse/pool-resource`: same repository layout, params and
//! JSON, so both can share one lock repository. The three executables
//! (`check`, `in`, `out`) are thin wrappers around [`cli::main`]; the pool
//! model ([`pool`]) decides, the backends ([`git`]) read and commit, and the
//! put loop ([`put`]) waits and retries.

pub mod backend;
pub mod check;
pub mod cli;
pub mod codecommit;
pub mod config;
pub mod duration;
pub mod error;
pub mod get;
pub mod git;
pub mod history;
pub mod holder;
pub mod log;
pub mod message;
pub mod metrics;
pub mod names;
pub mod ops;
pub mod page;
pub mod pool;
pub mod pool_cli;
pub mod protocol;
pub mod put;
pub mod rerun;
pub mod retry;
pub mod serve;
pub mod signal;
pub mod watch;

pub use error::{Error, Result};
