//! Where the pool lives: the seam every backend implements, what is built
//! once above it for both, and the two backends behind it.
//!
//! - [`seam`]: the [`seam::PutStore`], [`seam::CommitWalk`],
//!   [`seam::TreeReader`] and [`seam::HistoryReader`] traits (together
//!   [`seam::LockStore`]) and the data they speak in.
//! - [`explain`]: what to do about a branch, pool or lock that does not
//!   exist (the nearest name, what exists).
//! - [`open`]: the factory that opens the store a source names.
//! - [`recovery`]: pushes whose reply was lost, kept until the history says
//!   whether they landed.
//! - [`retry`]: the one read–plan–commit loop, and what a commit outcome
//!   means.
//! - [`reads`]: history reads the resource and the operator share (pools,
//!   locks, a lock's claim).
//! - [`git`]: any git server through libgit2, in-process.
//! - [`codecommit`]: AWS CodeCommit, over signed HTTPS (through [`git`]) or
//!   through its API.
//! - `memory` (tests only): a repository in memory with programmed faults,
//!   for the unit tests of the put and retry loops.
//!
//! Which change to make and when to wait is decided above the stores, in
//! [`crate::resource`] and [`crate::operator`].

pub mod codecommit;
pub mod explain;
pub mod git;
#[cfg(test)]
pub mod memory;
pub mod open;
pub mod reads;
pub mod recovery;
pub mod retry;
pub mod seam;
