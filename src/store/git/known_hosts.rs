//! SSH host-key verification against `source.known_hosts`.
//!
//! The Go resource ran ssh with `StrictHostKeyChecking no`, so a spoofed
//! server could take the pushes. With `known_hosts` set, the key the server
//! presents (handed to us by libgit2's certificate callback) must match a line
//! for that host, in OpenSSH's format: plain or hashed (`|1|salt|hash`) host
//! patterns, `[host]:port`, wildcards, negation and `@revoked`.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// The result of looking a host key up.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A line for this host has this key.
    Trusted,
    /// The host is listed, but not with this key (or the key is revoked).
    Mismatch,
    /// The host is not listed at all.
    Unknown,
}

/// `SHA256:...` as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &[u8]) -> String {
    format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(key)))
}

/// The `known_hosts` line a user could add for this host and key.
pub fn line_for(host: &str, port: Option<u16>, key_type: &str, key: &[u8]) -> String {
    format!(
        "{} {key_type} {}",
        host_pattern(host, port),
        STANDARD.encode(key)
    )
}

fn host_pattern(host: &str, port: Option<u16>) -> String {
    match port {
        Some(p) if p != 22 => format!("[{host}]:{p}"),
        _ => host.to_string(),
    }
}

fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi].eq_ignore_ascii_case(&t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn hashed_matches(entry: &str, name: &str) -> bool {
    let mut parts = entry.trim_start_matches("|1|").splitn(2, '|');
    let (Some(salt), Some(hash)) = (parts.next(), parts.next()) else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (STANDARD.decode(salt), STANDARD.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

fn host_matches(patterns: &str, name: &str) -> bool {
    if patterns.starts_with("|1|") {
        return hashed_matches(patterns, name);
    }
    let mut matched = false;
    for pat in patterns.split(',') {
        if let Some(negated) = pat.strip_prefix('!') {
            if glob(negated, name) {
                return false;
            }
        } else if glob(pat, name) {
            matched = true;
        }
    }
    matched
}

/// Checks `key` (the raw SSH public-key blob) of `host`:`port` against the
/// lines of a known_hosts file.
pub fn verify(known_hosts: &str, host: &str, port: Option<u16>, key: &[u8]) -> Verdict {
    let name = host_pattern(host, port);
    let mut listed = false;
    let mut trusted = false;
    for line in known_hosts.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut first = fields.next().unwrap_or("");
        let marker = if first.starts_with('@') {
            let m = first;
            first = fields.next().unwrap_or("");
            Some(m)
        } else {
            None
        };
        let (Some(_key_type), Some(key_b64)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !host_matches(first, &name) {
            continue;
        }
        let same_key = STANDARD.decode(key_b64).is_ok_and(|k| k == key);
        match marker {
            Some("@revoked") if same_key => return Verdict::Mismatch,
            Some(_) => continue,
            None => {
                listed = true;
                trusted |= same_key;
            }
        }
    }
    match (trusted, listed) {
        (true, _) => Verdict::Trusted,
        (false, true) => Verdict::Mismatch,
        (false, false) => Verdict::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] =
        b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20abcdefghijklmnopqrstuvwxyz012345";

    fn b64(k: &[u8]) -> String {
        STANDARD.encode(k)
    }

    #[test]
    fn plain_and_port_patterns_match() {
        let kh = format!("git.example,10.0.0.1 ssh-ed25519 {}\n", b64(KEY));
        assert_eq!(verify(&kh, "git.example", None, KEY), Verdict::Trusted);
        assert_eq!(verify(&kh, "git.example", Some(22), KEY), Verdict::Trusted);
        assert_eq!(
            verify(&kh, "git.example", Some(2222), KEY),
            Verdict::Unknown
        );
        let kh = format!("[127.0.0.1]:2222 ssh-ed25519 {}\n", b64(KEY));
        assert_eq!(verify(&kh, "127.0.0.1", Some(2222), KEY), Verdict::Trusted);
    }

    #[test]
    fn a_different_key_is_a_mismatch() {
        let kh = format!("git.example ssh-ed25519 {}\n", b64(b"other"));
        assert_eq!(verify(&kh, "git.example", None, KEY), Verdict::Mismatch);
    }

    #[test]
    fn hashed_hosts_match() {
        let salt = b"0123456789abcdefghij";
        let mut mac = Hmac::<Sha1>::new_from_slice(salt).unwrap();
        mac.update(b"git.example");
        let hash = mac.finalize().into_bytes();
        let kh = format!("|1|{}|{} ssh-ed25519 {}", b64(salt), b64(&hash), b64(KEY));
        assert_eq!(verify(&kh, "git.example", None, KEY), Verdict::Trusted);
        assert_eq!(verify(&kh, "other.example", None, KEY), Verdict::Unknown);
    }

    #[test]
    fn wildcards_negation_and_revocation() {
        let kh = format!(
            "*.example,!bad.example ssh-ed25519 {k}\n@revoked * ssh-ed25519 {r}\n",
            k = b64(KEY),
            r = b64(b"revoked")
        );
        assert_eq!(verify(&kh, "a.example", None, KEY), Verdict::Trusted);
        assert_eq!(verify(&kh, "bad.example", None, KEY), Verdict::Unknown);
        assert_eq!(
            verify(&kh, "a.example", None, b"revoked"),
            Verdict::Mismatch
        );
    }

    #[test]
    fn fingerprints_look_like_ssh_keygen() {
        assert!(fingerprint(KEY).starts_with("SHA256:"));
        assert!(!fingerprint(KEY).ends_with('='));
    }
}
