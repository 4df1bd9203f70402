//! `source` and `params`, validated into types that cannot be wrong.
//!
//! The raw request is picked apart with [`Fields`](crate::protocol::Fields);
//! what comes out is a [`Source`] with a parsed URI, pool path and retry
//! delay ([`source`]), and a put [`Operation`](crate::model::pool::Operation)
//! with validated lock names and the lock files already read from the
//! build's inputs ([`params`]). Mistakes fail here, before any network
//! traffic, with the field's name in the message. [`secret`] keeps secrets
//! out of every message; [`fields`] holds what both share (unknown fields
//! and their suggestions).
//!
//! The submodules import one another by their own paths, never through
//! these re-exports, so the re-exports create no import cycle.

pub mod fields;
pub mod line;
pub mod params;
pub mod secret;
pub mod source;

pub use params::{parse_check, parse_get, parse_put, GetParams, PutParams, FENCE_FILE};
pub use secret::{raw_secrets, Secret};
pub use source::{
    Backend, CodeCommit, GitSettings, RegionLookup, Source, Tunnel, DEFAULT_RETRY_DELAY,
};
