//! `source` and `params`, validated into types that cannot be wrong.
//!
//! The raw request is picked apart with [`Fields`](crate::protocol::Fields);
//! what comes out is a [`Source`] with a parsed URI, pool path and retry
//! delay ([`source`]), and a put [`Operation`](crate::model::pool::Operation)
//! with validated lock names and the lock files already read from the
//! build's inputs ([`params`]). Mistakes fail here, before any network
//! traffic, with the field's name in the message. [`uri`] and
//! [`codecommit_uri`] parse `source.uri` (pure parsing, so that config
//! needs nothing from the stores); the region of a CodeCommit URI that
//! names none is asked of a [`RegionLookup`] the caller passes in (the
//! AWS chain is the store's: `Source::from_request` in
//! [`crate::store::codecommit::creds`]). [`secret`] keeps secrets out of
//! every message; [`fields`] holds what both share (unknown fields and
//! their suggestions).
//!
//! The submodules import one another by their own paths, never through
//! these re-exports, so the re-exports create no import cycle.

pub mod codecommit_uri;
pub mod fields;
pub mod line;
pub mod params;
pub mod secret;
pub mod source;
pub mod uri;

pub use params::{parse_check, parse_get, parse_put, GetParams, PutParams, FENCE_FILE, SHARE_FILE};
pub use secret::{raw_secrets, Secret};
pub use source::{
    Backend, CodeCommit, GitSettings, RegionLookup, Source, Tunnel, DEFAULT_RETRY_DELAY,
};
