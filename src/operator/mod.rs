//! The `pool` command: the operator's face.
//!
//! [`cli`] parses the command line and runs one command; [`ops`] reads
//! status and history and makes the operator's changes; [`watch`] keeps a
//! board of every pool fresh for [`serve`], which serves the [`page`], its
//! JSON and the [`metrics`].

pub mod cli;
pub mod metrics;
pub mod ops;
pub mod page;
pub mod serve;
pub mod watch;
