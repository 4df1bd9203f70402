//! A secret value and the secrets of a raw `source`.
//!
//! [`Secret`] never prints itself; [`raw_secrets`] reads the secrets out of
//! a `source` before it is validated, so that even the errors of validation
//! can be scrubbed of them.

use std::fmt;

/// A string that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself, for the one place that must hand it on.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The `source` fields that hold secrets (read by [`crate::config::source::Source::from_request_with`]
/// and by [`raw_secrets`], which must agree).
pub(crate) const PASSWORD: &str = "password";
pub(crate) const PRIVATE_KEY: &str = "private_key";
pub(crate) const PRIVATE_KEY_PASSPHRASE: &str = "private_key_passphrase";
/// `https_tunnel.proxy_password`.
pub(crate) const PROXY_PASSWORD: &str = "proxy_password";

/// The secrets in a raw `source`, as written and as `{:?}` quotes them:
/// read before the source is validated, so that even the errors of
/// validation never show them.
pub fn raw_secrets(source: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(String::from);
    let mut found: Vec<String> = [PASSWORD, PRIVATE_KEY, PRIVATE_KEY_PASSPHRASE]
        .iter()
        .filter_map(|field| text(source.get(*field)))
        .collect();
    found.extend(text(
        source
            .get("https_tunnel")
            .and_then(|t| t.get(PROXY_PASSWORD)),
    ));
    if let Some(uri) = text(source.get("uri")) {
        found.extend(crate::config::uri::embedded_passwords(&uri));
    }
    let escaped: Vec<String> = found
        .iter()
        .map(|s| {
            let quoted = format!("{s:?}");
            quoted[1..quoted.len() - 1].to_string()
        })
        .filter(|e| !found.contains(e))
        .collect();
    found.extend(escaped);
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_secret_debug_prints_as_stars() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "***");
        assert_eq!(Secret::new("hunter2").expose(), "hunter2");
    }

    #[test]
    fn raw_secrets_finds_every_secret_field_and_its_escaped_form() {
        let source = json!({
            "password": "pa\"ss",
            "private_key": "KEY",
            "https_tunnel": {"proxy_password": "proxy"},
            "uri": "https://u:inuri@example.com/r.git",
            "branch": "not-a-secret"
        });
        let found = raw_secrets(source.as_object().unwrap());
        for s in ["pa\"ss", "pa\\\"ss", "KEY", "proxy", "inuri"] {
            assert!(found.iter().any(|f| f == s), "{s}: {found:?}");
        }
        assert!(!found.iter().any(|f| f == "not-a-secret"), "{found:?}");
    }
}
