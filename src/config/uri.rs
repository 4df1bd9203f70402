//! Repository URIs as users write them in `source.uri`.
//!
//! Git accepts local paths, `file://`, `git://`, `ssh://`, scp-like
//! `user@host:path` and `http(s)://` URLs. This module tells them apart once,
//! takes embedded credentials out of the URL (so they reach the credential
//! callback and never an error message), and gives a display form that is
//! safe to print.

use std::fmt;
use std::path::PathBuf;

/// How the repository is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// A path on this machine (plain path or `file://`).
    Local(PathBuf),
    /// `git://`
    Git,
    /// `ssh://` or scp-like.
    Ssh,
    /// `http://`
    Http,
    /// `https://`
    Https,
}

/// A parsed `source.uri`.
#[derive(Clone, PartialEq, Eq)]
pub struct RepoUri {
    /// The transport.
    pub scheme: Scheme,
    /// Host name (remote schemes only).
    pub host: String,
    /// Explicit port, if any.
    pub port: Option<u16>,
    /// User name from the URL, if any.
    pub user: Option<String>,
    /// Password from the URL, if any (http(s) only); never displayed.
    pub password: Option<String>,
    /// The path part as written (for scp-like URIs, relative to the home directory
    /// unless it starts with `/`).
    pub path: String,
    /// Whether the URI was written scp-like (`host:path`).
    pub scp_like: bool,
}

impl fmt::Debug for RepoUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoUri({})", self)
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// What may appear raw in a URL's user-info part: RFC 3986's unreserved
/// characters.
const USERINFO: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes what may not appear raw in a URL's user-info part.
pub fn percent_encode_userinfo(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, USERINFO).to_string()
}

/// The password embedded in `uri` (`scheme://user:password@host/...`), as
/// written and percent-decoded. Found even where the rest of the URI is
/// invalid, so that it can be kept out of the error saying why.
pub fn embedded_passwords(uri: &str) -> Vec<String> {
    let Some((_, rest)) = uri.split_once("://") else {
        return Vec::new();
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return Vec::new();
    };
    let Some((_, password)) = userinfo.split_once(':') else {
        return Vec::new();
    };
    let mut out = vec![password.to_string(), percent_decode(password)];
    out.dedup();
    out.retain(|p| !p.is_empty());
    out
}

impl RepoUri {
    /// Parses `uri`; the error says what is wrong with it.
    pub fn parse(uri: &str) -> Result<RepoUri, String> {
        if uri.chars().any(char::is_control) {
            return Err("source.uri contains a control character".into());
        }
        if let Some((scheme, rest)) = uri.split_once("://") {
            let scheme = match scheme.to_ascii_lowercase().as_str() {
                "file" => {
                    if rest.is_empty() {
                        return Err("source.uri file:// has no path".into());
                    }
                    return Ok(RepoUri::local(PathBuf::from(percent_decode(rest))));
                }
                "git" => Scheme::Git,
                "ssh" | "git+ssh" | "ssh+git" => Scheme::Ssh,
                "http" => Scheme::Http,
                "https" => Scheme::Https,
                other => {
                    return Err(format!(
                        "source.uri has an unsupported scheme {other:?} (use a path, file://, git://, ssh://, user@host:path, http:// or https://)"
                    ))
                }
            };
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            let (userinfo, hostport) = match authority.rfind('@') {
                Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
                None => (None, authority),
            };
            let (user, password) = match userinfo {
                None => (None, None),
                Some(info) => match info.split_once(':') {
                    Some((u, p)) => (Some(percent_decode(u)), Some(percent_decode(p))),
                    None => (Some(percent_decode(info)), None),
                },
            };
            let (host, port) = split_host_port(hostport)?;
            if host.is_empty() {
                return Err("source.uri has no host".into());
            }
            return Ok(RepoUri {
                scheme,
                host,
                port,
                user: user.filter(|u| !u.is_empty()),
                password: password.filter(|p| !p.is_empty()),
                path: path.to_string(),
                scp_like: false,
            });
        }
        // scp-like: [user@]host:path, where no '/' comes before the ':'.
        if let Some(colon) = uri.find(':') {
            let before = &uri[..colon];
            if !before.is_empty() && !before.contains('/') {
                let (user, host) = match before.rfind('@') {
                    Some(i) => (Some(before[..i].to_string()), &before[i + 1..]),
                    None => (None, before),
                };
                let host = host.trim_start_matches('[').trim_end_matches(']');
                if host.is_empty() {
                    return Err("source.uri has no host".into());
                }
                return Ok(RepoUri {
                    scheme: Scheme::Ssh,
                    host: host.to_string(),
                    port: None,
                    user: user.filter(|u| !u.is_empty()),
                    password: None,
                    path: uri[colon + 1..].to_string(),
                    scp_like: true,
                });
            }
        }
        Ok(RepoUri::local(PathBuf::from(uri)))
    }

    fn local(path: PathBuf) -> RepoUri {
        RepoUri {
            scheme: Scheme::Local(path),
            host: String::new(),
            port: None,
            user: None,
            password: None,
            path: String::new(),
            scp_like: false,
        }
    }

    /// The local repository path, for local URIs.
    pub fn local_path(&self) -> Option<&PathBuf> {
        match &self.scheme {
            Scheme::Local(p) => Some(p),
            _ => None,
        }
    }

    fn host_port(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(p) => format!("{host}:{p}"),
            None => host,
        }
    }

    /// The URL handed to libgit2: no password; the user name only for SSH.
    pub fn git_url(&self) -> String {
        match &self.scheme {
            Scheme::Local(p) => p.display().to_string(),
            Scheme::Ssh if self.scp_like => {
                let user = self
                    .user
                    .as_ref()
                    .map(|u| format!("{u}@"))
                    .unwrap_or_default();
                format!("{user}{}:{}", self.host, self.path)
            }
            Scheme::Ssh => {
                let user = self
                    .user
                    .as_ref()
                    .map(|u| format!("{}@", percent_encode_userinfo(u)))
                    .unwrap_or_default();
                format!("ssh://{user}{}{}", self.host_port(), self.path)
            }
            Scheme::Git => format!("git://{}{}", self.host_port(), self.path),
            Scheme::Http => format!("http://{}{}", self.host_port(), self.path),
            Scheme::Https => format!("https://{}{}", self.host_port(), self.path),
        }
    }

    /// The SSH URL for the same repository reached through `127.0.0.1:port`
    /// (the in-process tunnel). A home-relative scp path becomes `/~/path`.
    pub fn via_local_port(&self, port: u16, user: &str) -> String {
        let path = if self.scp_like && !self.path.starts_with('/') {
            format!("/~/{}", self.path)
        } else {
            self.path.clone()
        };
        format!(
            "ssh://{}@127.0.0.1:{port}{path}",
            percent_encode_userinfo(user)
        )
    }
}

fn split_host_port(hostport: &str) -> Result<(String, Option<u16>), String> {
    if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("source.uri has an unterminated [IPv6] host")?;
        let port = match after.strip_prefix(':') {
            Some(p) if !p.is_empty() => Some(parse_port(p)?),
            Some(_) => None,
            None if after.is_empty() => None,
            None => return Err("source.uri has text after its [IPv6] host".into()),
        };
        if host.contains('[') {
            return Err("source.uri has an invalid [IPv6] host".into());
        }
        return Ok((host.to_string(), port));
    }
    let (host, port) = match hostport.rsplit_once(':') {
        Some((host, p)) if !p.is_empty() => (host, Some(parse_port(p)?)),
        Some((host, _)) => (host, None),
        None => (hostport, None),
    };
    // Else the display form (which brackets a host holding ':') would not
    // read back as the same URI.
    if host.contains([':', '[', ']']) {
        return Err(
            "source.uri has an invalid host (an IPv6 address must be in [brackets])".into(),
        );
    }
    Ok((host.to_string(), port))
}

fn parse_port(p: &str) -> Result<u16, String> {
    p.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("source.uri has an invalid port {p:?}"))
}

impl fmt::Display for RepoUri {
    /// The URI without any password: safe for logs and errors.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.git_url())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_and_file_urls_are_local() {
        for (uri, path) in [
            ("/srv/locks.git", "/srv/locks.git"),
            ("file:///srv/locks.git", "/srv/locks.git"),
            ("relative/locks", "relative/locks"),
            ("./locks", "./locks"),
        ] {
            assert_eq!(
                RepoUri::parse(uri).unwrap().local_path().unwrap(),
                &PathBuf::from(path)
            );
        }
    }

    #[test]
    fn scp_like_uris_are_ssh() {
        let u = RepoUri::parse("git@github.com:org/locks.git").unwrap();
        assert_eq!(u.scheme, Scheme::Ssh);
        assert_eq!(u.user.as_deref(), Some("git"));
        assert_eq!(u.host, "github.com");
        assert_eq!(u.path, "org/locks.git");
        assert_eq!(u.git_url(), "git@github.com:org/locks.git");
        assert_eq!(
            u.via_local_port(4000, "git"),
            "ssh://git@127.0.0.1:4000/~/org/locks.git"
        );
    }

    #[test]
    fn embedded_credentials_are_taken_out_of_the_url() {
        let u = RepoUri::parse("https://bot:s3cr%40t@git.example:8443/locks.git").unwrap();
        assert_eq!(u.user.as_deref(), Some("bot"));
        assert_eq!(u.password.as_deref(), Some("s3cr@t"));
        assert_eq!(u.port, Some(8443));
        assert_eq!(u.to_string(), "https://git.example:8443/locks.git");
        assert!(!format!("{u:?}").contains("s3cr"));
    }

    #[test]
    fn ssh_urls_keep_user_and_port() {
        let u = RepoUri::parse("ssh://git@127.0.0.1:2222/srv/locks.git").unwrap();
        assert_eq!(u.git_url(), "ssh://git@127.0.0.1:2222/srv/locks.git");
        assert_eq!(
            u.via_local_port(5, "git"),
            "ssh://git@127.0.0.1:5/srv/locks.git"
        );
    }

    #[test]
    fn bad_uris_are_rejected() {
        for uri in ["ftp://x/y", "https://:80/x", "https://h:99999/x", "a\nb"] {
            assert!(RepoUri::parse(uri).is_err(), "{uri:?}");
        }
    }

    #[test]
    fn embedded_passwords_are_found_even_in_invalid_uris() {
        assert_eq!(
            embedded_passwords("https://bot:s3cr%40t@git.example:99999/x"),
            ["s3cr%40t", "s3cr@t"]
        );
        assert_eq!(embedded_passwords("codecommit://me:pw@bad/name"), ["pw"]);
        for none in [
            "https://bot@h/x",
            "https://h/a:b@c",
            "git@h:x",
            "/srv/x",
            "https://:@h/",
        ] {
            assert!(embedded_passwords(none).is_empty(), "{none}");
        }
    }

    #[test]
    fn hosts_are_bracketed_ipv6_or_free_of_colons_and_brackets() {
        let u = RepoUri::parse("ssh://git@[::1]:2222/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", Some(2222)));
        assert_eq!(RepoUri::parse(&u.to_string()).unwrap(), u);
        // Found by fuzz/values: this used to parse, and display as
        // "ssh://git@[1]:2]]:22/", which does not.
        for uri in [
            "ssh://git@1]:2]:22",
            "https://::1/x",
            "http://a[b/x",
            "ssh://[::1]x/y",
        ] {
            assert!(RepoUri::parse(uri).is_err(), "{uri}");
        }
    }

    #[test]
    fn userinfo_is_percent_encoded() {
        assert_eq!(percent_encode_userinfo("a%b:c"), "a%25b%3Ac");
    }
}
