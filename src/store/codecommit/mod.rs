//! AWS CodeCommit: the AWS default credential and region chains
//! ([`creds`]) and the API backend ([`api`]). Its URIs are recognised
//! without any I/O by [`crate::config::codecommit_uri`], where `source` is
//! validated.
//!
//! With a CodeCommit URI and no `username`/`password`, the git backend signs
//! each connection with credentials from [`creds`] (the signer is part of
//! the git transport: [`crate::store::git::sign`]); with `backend: codecommit-api`
//! the pool is driven through the CodeCommit API instead, with no clone at
//! all ([`api`]).

pub mod api;
pub mod creds;
