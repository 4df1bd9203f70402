//! The model: what a pool looks like, which change an operation makes, how
//! commit messages are written and read, and what the history says.
//!
//! Nothing here does I/O or names git2: the stores hand the model plain
//! data ([`pool::Snapshot`], commit messages, [`history::Graph`] facts,
//! [`commit::CommitMeta`]) and commit what it decides. Who made a commit,
//! and how a holder is named on every screen, is [`commit::Actor`].

pub mod commit;
pub mod duration;
pub mod history;
pub mod line;
pub mod message;
pub mod names;
pub mod pool;
pub mod shares;
