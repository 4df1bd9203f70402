//! AWS credentials from the default chain, fresh for every connection.
//!
//! The Concourse VM's instance profile (IMDSv2), environment variables, a
//! shared profile, web identity or the container endpoint: whatever
//! `aws-config`'s default chain finds. Credentials are cached here only until
//! five minutes before they expire, so a put that waits for hours keeps
//! signing with valid keys. The region of a `codecommit://NAME` URI that
//! names none comes from the SDK's default region chain the same way
//! ([`default_region`]). AWS is only ever contacted for CodeCommit URIs.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_codecommit::config::{Credentials, ProvideCredentials, SharedCredentialsProvider};

use crate::config::{RegionLookup, Source};
use crate::error::{Error, Result};
use crate::protocol::RawRequest;

/// Refresh credentials this long before they expire.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// The help appended to every "no credentials" error.
pub const NO_CREDENTIALS_HELP: &str = "no AWS credentials found; tried environment variables (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), the shared config and credentials files (AWS_PROFILE), web identity (AWS_WEB_IDENTITY_TOKEN_FILE), the container credentials endpoint and EC2 instance metadata (IMDSv2). On EC2, attach an instance profile; from inside a container, the instance's metadata hop limit must be at least 2 (aws ec2 modify-instance-metadata-options --instance-id ID --http-put-response-hop-limit 2 --http-tokens required)";

/// Where the region of a CodeCommit URI that names none was looked for, in
/// order, for the error when none of them said (`profile`: the URI's).
pub fn region_sources(profile: Option<&str>) -> String {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let profile = profile
        .map(String::from)
        .or_else(|| var("AWS_PROFILE"))
        .unwrap_or_else(|| "default".into());
    let config = var("AWS_CONFIG_FILE").unwrap_or_else(|| "~/.aws/config".into());
    let imds = if var("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        "EC2 instance metadata (not asked: AWS_EC2_METADATA_DISABLED is true)".to_string()
    } else {
        "EC2 instance metadata (IMDSv2 /latest/meta-data/placement/region; from inside a container the instance's metadata hop limit must be at least 2)".to_string()
    };
    format!(
        "the URI (codecommit::REGION://NAME), source.aws_region, the environment (AWS_REGION, AWS_DEFAULT_REGION), the region of profile {profile:?} in the shared config file ({config}) and {imds}"
    )
}

/// The region the AWS SDK's default region chain finds, as it finds it:
/// the environment (`AWS_REGION`, `AWS_DEFAULT_REGION`), the shared config
/// file's region for `profile` (else `AWS_PROFILE`, else `default`), then
/// EC2 instance metadata (IMDSv2, unless `AWS_EC2_METADATA_DISABLED`).
/// `None` when none of them says. Only ever called for CodeCommit URIs.
pub fn default_region(profile: Option<&str>) -> Result<Option<String>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("could not start the AWS client runtime", e))?;
    let mut chain = aws_config::default_provider::region::DefaultRegionChain::builder();
    if let Some(p) = profile {
        chain = chain.profile_name(p);
    }
    let chain = chain.build();
    Ok(runtime
        .block_on(chain.region())
        .map(|r| r.to_string())
        .filter(|r| !r.is_empty()))
}

/// The AWS SDK's default region chain as `source` validation asks it
/// ([`default_region`], and [`region_sources`] for the error).
pub struct DefaultRegionChain;

impl RegionLookup for DefaultRegionChain {
    fn region(&mut self, profile: Option<&str>) -> Result<Option<String>> {
        default_region(profile)
    }

    fn tried(&self, profile: Option<&str>) -> String {
        region_sources(profile)
    }
}

impl Source {
    /// Validates the `source` of `req` ([`Source::from_request_with`]). The
    /// region of a `codecommit://NAME` URI that the request does not give is
    /// asked of the AWS SDK's default region chain ([`DefaultRegionChain`])
    /// once everything else is valid. It is defined here, beside the chain,
    /// because `config` talks to no one.
    pub fn from_request(req: &RawRequest) -> Result<Source> {
        Source::from_request_with(req, &mut DefaultRegionChain)
    }
}

/// The AWS side of a CodeCommit connection: a runtime, the loaded config and
/// a credential cache.
pub struct Aws {
    runtime: tokio::runtime::Runtime,
    config: SdkConfig,
    provider: SharedCredentialsProvider,
    cached: Mutex<Option<Credentials>>,
}

impl Aws {
    /// Loads the default chain, with `region` and `profile` if given.
    pub fn load(region: Option<&str>, profile: Option<&str>) -> Result<Aws> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("could not start the AWS client runtime", e))?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(r) = region {
            loader = loader.region(Region::new(r.to_string()));
        }
        if let Some(p) = profile {
            loader = loader.profile_name(p);
        }
        let config = runtime.block_on(loader.load());
        let provider = config.credentials_provider().ok_or_else(|| Error::Auth {
            uri: "AWS".into(),
            detail: NO_CREDENTIALS_HELP.into(),
        })?;
        Ok(Aws {
            runtime,
            config,
            provider,
            cached: Mutex::new(None),
        })
    }

    /// A connection to `endpoint` in `region` signing with one fixed key
    /// pair, for a program that drives a CodeCommit stand-in in-process
    /// (the tests of the store seam); a pipeline always uses [`Aws::load`].
    pub fn fixed(endpoint: &str, region: &str, access_key_id: &str, secret: &str) -> Result<Aws> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("could not start the AWS client runtime", e))?;
        let key = Credentials::new(access_key_id, secret, None, None, "fixed");
        let config = runtime.block_on(
            aws_config::defaults(BehaviorVersion::latest())
                .region(Region::new(region.to_string()))
                .endpoint_url(endpoint)
                .credentials_provider(key)
                .load(),
        );
        let provider = config.credentials_provider().ok_or_else(|| Error::Auth {
            uri: endpoint.into(),
            detail: NO_CREDENTIALS_HELP.into(),
        })?;
        Ok(Aws {
            runtime,
            config,
            provider,
            cached: Mutex::new(None),
        })
    }

    /// The region in effect (from the URI, `source.aws_region` or the chain).
    pub fn region(&self) -> Option<String> {
        self.config.region().map(|r| r.to_string())
    }

    /// The loaded SDK configuration.
    pub fn sdk_config(&self) -> &SdkConfig {
        &self.config
    }

    /// Runs a future on this connection's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// Current credentials, refreshed when they are about to expire.
    pub fn credentials(&self, uri: &str) -> Result<Credentials> {
        let fresh = |c: &Credentials| {
            c.expiry()
                .is_none_or(|exp| exp > SystemTime::now() + REFRESH_MARGIN)
        };
        if let Ok(cached) = self.cached.lock() {
            if let Some(c) = cached.as_ref().filter(|c| fresh(c)) {
                return Ok(c.clone());
            }
        }
        let creds = self
            .runtime
            .block_on(self.provider.provide_credentials())
            .map_err(|e| credentials_error(uri, &e))?;
        if let Ok(mut cached) = self.cached.lock() {
            *cached = Some(creds.clone());
        }
        Ok(creds)
    }
}

fn credentials_error(uri: &str, e: &dyn std::error::Error) -> Error {
    let mut detail = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        detail.push_str(&format!(": {s}"));
        source = s.source();
    }
    Error::Auth {
        uri: uri.to_string(),
        detail: format!("{NO_CREDENTIALS_HELP} ({detail})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_error_names_every_place_the_chain_looks() {
        let tried = region_sources(Some("ops"));
        for needle in [
            "source.aws_region",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "\"ops\"",
            "shared config file",
            "EC2 instance metadata",
        ] {
            assert!(tried.contains(needle), "{needle}: {tried}");
        }
    }
}
