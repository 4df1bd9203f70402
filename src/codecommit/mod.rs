//! AWS CodeCommit: IAM credentials for Git over HTTPS, and an API backend.
//!
//! With a CodeCommit URI and no `username`/`password`, the git backend signs
//! each connection with credentials from the AWS default chain ([`creds`],
//! [`sign`]); with `backend: codecommit-api` the pool is driven through the
//! CodeCommit API instead, with no clone at all ([`api`]).

pub mod api;
pub mod creds;
pub mod sign;
pub mod url;

use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::Result;

/// Test hook: connect Git traffic for CodeCommit to this base URL (e.g.
/// `http://127.0.0.1:PORT`) while still signing for the real host. Never set
/// in production; it only changes where bytes go, not what is signed.
pub const GIT_ENDPOINT_ENV: &str = "POOL_RESOURCE_CODECOMMIT_GIT_ENDPOINT";

/// Signs Git-over-HTTPS connections to one CodeCommit repository.
pub struct GitSigner {
    aws: creds::Aws,
    region: String,
    host: String,
    path: String,
    uri: String,
}

impl GitSigner {
    /// A signer for repository `name` at `host` in `region`.
    pub fn new(aws: creds::Aws, region: &str, host: &str, name: &str, uri: &str) -> GitSigner {
        GitSigner {
            aws,
            region: region.to_string(),
            host: host.to_string(),
            path: format!("/v1/repos/{name}"),
            uri: uri.to_string(),
        }
    }

    /// A fresh user name and password for one connection.
    pub fn credentials(&self) -> Result<(String, String)> {
        let creds = self.aws.credentials(&self.uri)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let user = sign::username(creds.access_key_id(), creds.session_token());
        let password = sign::password(
            creds.secret_access_key(),
            &self.region,
            &self.host,
            &self.path,
            &sign::timestamp(now),
        );
        Ok((user, password))
    }
}
