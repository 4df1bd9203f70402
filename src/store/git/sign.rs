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

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sigv4::sign::v4::{calculate_signature, generate_signing_key};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::error::Result;
use crate::store::codecommit::creds::Aws;

/// The moment a password is signed at, in whole seconds: a time the
/// calendar can show (years 1970 to 9999), so that its timestamp always
/// has the `YYYYMMDDTHHMMSS` shape the signature needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SigningTime(OffsetDateTime);

impl SigningTime {
    /// The time `unix_secs` seconds after the epoch; `None` past the year 9999.
    pub fn from_unix(unix_secs: u64) -> Option<SigningTime> {
        let secs = i64::try_from(unix_secs).ok()?;
        let at = OffsetDateTime::from_unix_timestamp(secs).ok()?;
        (at.year() <= 9999).then_some(SigningTime(at))
    }

    /// Now, in whole seconds (the epoch if the clock is before it).
    pub fn now() -> SigningTime {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        SigningTime::from_unix(secs).unwrap_or(SigningTime(OffsetDateTime::UNIX_EPOCH))
    }

    /// `YYYYMMDDTHHMMSS`, UTC.
    pub fn timestamp(self) -> String {
        let t = self.0;
        format!(
            "{}T{:02}{:02}{:02}",
            self.date(),
            t.hour(),
            t.minute(),
            t.second()
        )
    }

    /// `YYYYMMDD`, UTC: the date of the credential scope.
    pub fn date(self) -> String {
        let t = self.0;
        format!("{:04}{:02}{:02}", t.year(), u8::from(t.month()), t.day())
    }

    fn system_time(self) -> SystemTime {
        // Never before the epoch: from_unix takes unsigned seconds.
        UNIX_EPOCH + Duration::from_secs(self.0.unix_timestamp().max(0).unsigned_abs())
    }
}

/// A UTC time as `YYYYMMDDTHHMMSS`, from seconds since the epoch; `None`
/// past the year 9999.
pub fn timestamp(unix_secs: u64) -> Option<String> {
    SigningTime::from_unix(unix_secs).map(SigningTime::timestamp)
}

/// The canonical request for a Git connection to `path` on `host`.
pub fn canonical_request(host: &str, path: &str) -> String {
    format!("GIT\n{path}\n\nhost:{host}\n\nhost\n")
}

/// The password for `host` and `path` signed at `at`: the timestamp, `Z`,
/// and the SigV4 signature (key derived by `aws-sigv4`, as the SDK does).
pub fn password(secret_key: &str, region: &str, host: &str, path: &str, at: SigningTime) -> String {
    let timestamp = at.timestamp();
    let scope = format!("{}/{region}/codecommit/aws4_request", at.date());
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{timestamp}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request(host, path).as_bytes()))
    );
    let key = generate_signing_key(secret_key, at.system_time(), region, "codecommit");
    format!(
        "{timestamp}Z{}",
        calculate_signature(key, string_to_sign.as_bytes())
    )
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
        let user = username(creds.access_key_id(), creds.session_token());
        let password = password(
            creds.secret_access_key(),
            &self.region,
            &self.host,
            &self.path,
            SigningTime::now(),
        );
        Ok((user, password))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2017-12-24 11:53:20 UTC
    const T: u64 = 1_514_116_400;

    fn at(secs: u64) -> SigningTime {
        SigningTime::from_unix(secs).unwrap()
    }

    #[test]
    fn timestamps_are_utc_basic_format() {
        assert_eq!(timestamp(T).as_deref(), Some("20171224T115320"));
        assert_eq!(timestamp(0).as_deref(), Some("19700101T000000"));
        assert_eq!(timestamp(951_782_400).as_deref(), Some("20000229T000000"));
        assert_eq!(at(T).date(), "20171224");
    }

    #[test]
    fn a_time_the_calendar_cannot_show_is_refused_not_sliced() {
        // 9999-12-31T23:59:59Z is the last; after it, and far past i64, none.
        assert_eq!(
            timestamp(253_402_300_799).as_deref(),
            Some("99991231T235959")
        );
        assert_eq!(timestamp(253_402_300_800), None);
        assert_eq!(timestamp(u64::MAX), None);
        assert_eq!(SigningTime::now().timestamp().len(), 15);
    }

    #[test]
    fn canonical_request_matches_the_vector() {
        let c = canonical_request(
            "git-codecommit.us-west-2.amazonaws.com",
            "/v1/repos/test_repo",
        );
        assert_eq!(
            hex::encode(Sha256::digest(c.as_bytes())),
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
            at(T),
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
            at(T),
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
