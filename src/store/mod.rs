//! Where the pool lives: the seam every backend implements and the two
//! backends behind it.
//!
//! - [`seam`]: the [`seam::LockStore`] trait and the data it speaks in.
//! - [`explain`]: what to do about a branch, pool or lock that does not
//!   exist (the nearest name, what exists).
//! - [`open`]: the factory that opens the store a source names.
//! - [`git`]: any git server through libgit2, in-process.
//! - [`codecommit`]: AWS CodeCommit, over signed HTTPS (through [`git`]) or
//!   through its API.
//!
//! Which change to make, when to wait and when to retry is decided above the
//! stores, in [`crate::resource`] and [`crate::operator`].

pub mod codecommit;
pub mod explain;
pub mod git;
pub mod open;
pub mod seam;
