//! The CodeCommit Git-over-HTTPS password: a SigV4 signature of a `GIT` request.
//!
//! Part of the git transport: [`GitSigner`] gives libgit2's credential
//! callback a fresh user name and password for every connection to a
//! CodeCommit repository, from the AWS default chain.
//!
//! This is the scheme `aws codecommit credential-helper` and
//! git-remote-codecommit use: the password is `YYYYMMDDTHHMMSSZ` followed by
//! the hex signature of the canonical request `GIT /v1/repos/NAME` for the
//! host, signed with the secret key for the `codecommit` service. The session
//! token travels in the user name (`KEY%TOKEN`), not in the signature.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::store::codecommit::creds::Aws;

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any size");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A UTC time as `YYYYMMDDTHHMMSS`, from seconds since the epoch.
pub fn timestamp(unix_secs: u64) -> String {
    let (year, month, day, h, m, s) = crate::model::duration::civil(unix_secs as i64);
    format!("{year:04}{month:02}{day:02}T{h:02}{m:02}{s:02}")
}

/// The canonical request for a Git connection to `path` on `host`.
pub fn canonical_request(host: &str, path: &str) -> String {
    format!("GIT\n{path}\n\nhost:{host}\n\nhost\n")
}

/// The password for `host` and `path` at `timestamp` (`YYYYMMDDTHHMMSS`).
pub fn password(secret_key: &str, region: &str, host: &str, path: &str, timestamp: &str) -> String {
    let date = &timestamp[..8];
    let scope = format!("{date}/{region}/codecommit/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{timestamp}\n{scope}\n{}",
        hex(&Sha256::digest(canonical_request(host, path).as_bytes()))
    );
    let k_date = hmac(format!("AWS4{secret_key}").as_bytes(), date);
    let k_region = hmac(&k_date, region);
    let k_service = hmac(&k_region, "codecommit");
    let k_signing = hmac(&k_service, "aws4_request");
    format!("{timestamp}Z{}", hex(&hmac(&k_signing, &string_to_sign)))
}

/// The user name: the access key id, with `%TOKEN` when there is a session token.
pub fn username(access_key_id: &str, session_token: Option<&str>) -> String {
    match session_token {
        Some(token) if !token.is_empty() => format!("{access_key_id}%{token}"),
        _ => access_key_id.to_string(),
    }
}

/// Test hook: connect Git traffic for CodeCommit to this base URL (e.g.
/// `http://127.0.0.1:PORT`) while still signing for the real host. Never set
/// in production; it only changes where bytes go, not what is signed.
pub const GIT_ENDPOINT_ENV: &str = "POOL_RESOURCE_CODECOMMIT_GIT_ENDPOINT";

/// Signs Git-over-HTTPS connections to one CodeCommit repository.
pub struct GitSigner {
    aws: Aws,
    region: String,
    host: String,
    path: String,
    uri: String,
}

impl GitSigner {
    /// A signer for repository `name` at `host` in `region`.
    pub fn new(aws: Aws, region: &str, host: &str, name: &str, uri: &str) -> GitSigner {
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
        let user = username(creds.access_key_id(), creds.session_token());
        let password = password(
            creds.secret_access_key(),
            &self.region,
            &self.host,
            &self.path,
            &timestamp(now),
        );
        Ok((user, password))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2017-12-24 11:53:20 UTC
    const T: u64 = 1_514_116_400;

    #[test]
    fn timestamps_are_utc_basic_format() {
        assert_eq!(timestamp(T), "20171224T115320");
        assert_eq!(timestamp(0), "19700101T000000");
        assert_eq!(timestamp(951_782_400), "20000229T000000");
    }

    #[test]
    fn canonical_request_matches_the_vector() {
        let c = canonical_request(
            "git-codecommit.us-west-2.amazonaws.com",
            "/v1/repos/test_repo",
        );
        assert_eq!(
            hex(&Sha256::digest(c.as_bytes())),
            "298a3d18fae21d0bc76a2c741f479faa2c874420a05f054ebe7a2c4f84d9c765"
        );
    }

    #[test]
    fn password_matches_git_remote_codecommit() {
        let p = password(
            "secret",
            "us-west-2",
            "git-codecommit.us-west-2.amazonaws.com",
            "/v1/repos/test_repo",
            &timestamp(T),
        );
        assert_eq!(
            p,
            "20171224T115320Zb6df2d758a8023b2f000a546417007b65494f3ce8ad0300fd45fcfa173f1959a"
        );
    }

    #[test]
    fn password_for_an_overridden_host_matches() {
        let p = password(
            "secret",
            "us-west-2",
            "land.called.honahlee",
            "/v1/repos/test_repo",
            &timestamp(T),
        );
        assert_eq!(
            p,
            "20171224T115320Za14a37a53035bbceb6e1748247b143124fe7326cdffd3d418236a592ce6158a0"
        );
    }

    #[test]
    fn session_tokens_go_into_the_user_name() {
        assert_eq!(username("access", Some("token")), "access%token");
        assert_eq!(username("access", None), "access");
    }
}
