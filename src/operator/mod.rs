//! The `pool` command: the operator's face.
//!
//! [`cli`] parses the command line and hands it to one of the
//! [`commands`], which runs one of the [`ops`]: reading status and history
//! and making the operator's changes; [`watch`] keeps a board of every
//! pool fresh for [`serve`], which serves the [`page`], its JSON and the
//! [`metrics`]; [`concourse`] asks Concourse whether the build holding a
//! lock is still alive, for `reap --dead` and the status.

pub mod annotations;
pub mod cli;
pub mod commands;
pub mod concourse;
pub mod events;
pub mod grafana;
pub mod metrics;
pub mod ops;
pub mod page;
pub mod serve;
pub mod watch;
