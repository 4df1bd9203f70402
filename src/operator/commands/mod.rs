//! The `pool` commands, one file per command or family, as cargo's
//! `commands/` are: each has its `exec`, which [`crate::operator::cli`]
//! calls with the command's own options and the [`context::Context`]
//! every command shares; it runs one [`crate::operator::ops`] function
//! (or [`crate::operator::serve`]) and prints what came of it: one JSON
//! document on stdout for `--json`, everything a person reads on stderr.

pub mod change;
pub mod context;
pub mod history;
pub mod hold;
pub mod line;
pub mod reap;
pub mod serve;
pub mod status;
