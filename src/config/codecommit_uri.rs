//! Recognising CodeCommit repositories in `source.uri`.
//!
//! Users write the HTTPS clone URL (`https://git-codecommit.REGION.amazonaws.com/v1/repos/NAME`,
//! its FIPS, VPC-endpoint and China forms) or git-remote-codecommit's
//! `codecommit::REGION://[PROFILE@]NAME` and `codecommit://[PROFILE@]NAME`.
//! Anything else is not CodeCommit, and AWS is never contacted for it.

use crate::error::quoted;

/// A CodeCommit repository named by a URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeCommitRepo {
    /// The region, if the URI says (from the host or `codecommit::REGION://`).
    pub region: Option<String>,
    /// The repository name.
    pub name: String,
    /// A named AWS profile (`PROFILE@NAME`).
    pub profile: Option<String>,
    /// The Git HTTPS host (known once the region is).
    pub host: Option<String>,
}

/// The Git endpoint host for a region (China regions live under `.amazonaws.com.cn`).
pub fn git_host(region: &str) -> String {
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("git-codecommit.{region}.{suffix}")
}

fn region_from_host(host: &str) -> Option<String> {
    let host = host.to_ascii_lowercase();
    let labels: Vec<&str> = host.split('.').collect();
    let suffix_ok = host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn");
    if !suffix_ok {
        return None;
    }
    // git-codecommit[-fips].REGION.amazonaws.com[.cn]
    if matches!(
        labels.first(),
        Some(&"git-codecommit") | Some(&"git-codecommit-fips")
    ) {
        return labels.get(1).map(|r| r.to_string());
    }
    // vpce-ID.git-codecommit.REGION.vpce.amazonaws.com (and the -fips form)
    if labels.first().is_some_and(|l| l.starts_with("vpce-"))
        && matches!(
            labels.get(1),
            Some(&"git-codecommit") | Some(&"git-codecommit-fips")
        )
        && labels.get(3) == Some(&"vpce")
    {
        return labels.get(2).map(|r| r.to_string());
    }
    None
}

/// Whether `region` can be an AWS region name (it becomes part of a host name).
pub fn is_region(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= 64
        && region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

fn split_profile(rest: &str) -> (Option<String>, &str) {
    match rest.split_once('@') {
        Some((profile, name)) if !profile.is_empty() => (Some(profile.to_string()), name),
        _ => (None, rest),
    }
}

/// Recognises a CodeCommit URI. `Ok(None)` means "not CodeCommit".
pub fn parse(uri: &str) -> Result<Option<CodeCommitRepo>, String> {
    if let Some(rest) = uri.strip_prefix("codecommit::") {
        let (region, rest) = rest.split_once("://").ok_or_else(|| {
            format!(
                "source.uri {}: expected codecommit::REGION://NAME",
                quoted(uri)
            )
        })?;
        let (profile, name) = split_profile(rest);
        return named(uri, Some(region.to_string()), profile, name);
    }
    if let Some(rest) = uri.strip_prefix("codecommit://") {
        let (profile, name) = split_profile(rest);
        return named(uri, None, profile, name);
    }
    let Some(rest) = uri.strip_prefix("https://") else {
        return Ok(None);
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = authority.rsplit('@').next().unwrap_or(authority);
    let host = host.split(':').next().unwrap_or(host);
    let Some(region) = region_from_host(host) else {
        return Ok(None);
    };
    let name = path.strip_prefix("v1/repos/").ok_or_else(|| {
        format!(
            "source.uri {}: a CodeCommit URL's path is /v1/repos/NAME",
            quoted(uri)
        )
    })?;
    let name = name.trim_end_matches('/');
    if !valid_name(name) {
        return Err(format!(
            "source.uri {}: {} is not a CodeCommit repository name",
            quoted(uri),
            quoted(name)
        ));
    }
    Ok(Some(CodeCommitRepo {
        region: Some(region),
        name: name.to_string(),
        profile: None,
        host: Some(host.to_ascii_lowercase()),
    }))
}

fn named(
    uri: &str,
    region: Option<String>,
    profile: Option<String>,
    name: &str,
) -> Result<Option<CodeCommitRepo>, String> {
    if !valid_name(name) {
        return Err(format!(
            "source.uri {}: {} is not a CodeCommit repository name",
            quoted(uri),
            quoted(name)
        ));
    }
    if let Some(r) = &region {
        if !is_region(r) {
            return Err(format!(
                "source.uri {}: {} is not an AWS region",
                quoted(uri),
                quoted(r)
            ));
        }
    }
    Ok(Some(CodeCommitRepo {
        host: region.as_deref().map(git_host),
        region,
        name: name.to_string(),
        profile,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(uri: &str) -> CodeCommitRepo {
        parse(uri).unwrap().unwrap()
    }

    #[test]
    fn https_urls_give_the_region_from_the_host() {
        let r = repo("https://git-codecommit.eu-west-2.amazonaws.com/v1/repos/locks");
        assert_eq!(r.region.as_deref(), Some("eu-west-2"));
        assert_eq!(r.name, "locks");
        assert_eq!(
            repo("https://git-codecommit-fips.us-east-1.amazonaws.com/v1/repos/x")
                .region
                .as_deref(),
            Some("us-east-1")
        );
        assert_eq!(
            repo("https://vpce-0123-abcd.git-codecommit.eu-west-1.vpce.amazonaws.com/v1/repos/x")
                .region
                .as_deref(),
            Some("eu-west-1")
        );
        let cn = repo("https://git-codecommit.cn-north-1.amazonaws.com.cn/v1/repos/x");
        assert_eq!(cn.region.as_deref(), Some("cn-north-1"));
    }

    #[test]
    fn grc_forms_are_understood() {
        let r = repo("codecommit::eu-west-2://ops@locks");
        assert_eq!(r.region.as_deref(), Some("eu-west-2"));
        assert_eq!(r.profile.as_deref(), Some("ops"));
        assert_eq!(
            r.host.as_deref(),
            Some("git-codecommit.eu-west-2.amazonaws.com")
        );
        let r = repo("codecommit://locks");
        assert_eq!(
            (r.region, r.profile, r.name.as_str()),
            (None, None, "locks")
        );
        assert_eq!(
            git_host("cn-northwest-1"),
            "git-codecommit.cn-northwest-1.amazonaws.com.cn"
        );
    }

    #[test]
    fn other_uris_are_not_codecommit() {
        for uri in [
            "https://github.com/org/locks.git",
            "https://git-codecommit.eu-west-2.amazonaws.com.evil.example/v1/repos/x",
            "git@github.com:org/locks.git",
            "/srv/locks.git",
        ] {
            assert_eq!(parse(uri).unwrap(), None, "{uri}");
        }
    }

    #[test]
    fn malformed_codecommit_uris_are_errors() {
        for uri in [
            "https://git-codecommit.eu-west-2.amazonaws.com/locks",
            "codecommit::eu-west-2:/locks",
            "codecommit://bad name",
            "codecommit::://locks",
        ] {
            assert!(parse(uri).is_err(), "{uri}");
        }
    }
}
