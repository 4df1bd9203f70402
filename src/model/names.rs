//! Validated lock and pool names.
//!
//! A lock name becomes a file name in the lock repository and a pool name a
//! directory path, so both are checked once, here, before anything touches
//! git: a name that passes cannot escape its directory, hide as a dotfile or
//! smuggle control characters into a commit message. The two directories of
//! a pool ([`LockState`]) are named here too, so the pool model imports
//! names and not the other way round.

use std::fmt;

/// The longest lock name we accept, in bytes (a common file-name limit).
pub const MAX_NAME_LEN: usize = 255;

/// The longest pool path we accept, in bytes (a common path-length limit).
pub const MAX_POOL_LEN: usize = 4096;

/// A lock's file name: non-empty, no `/`, no leading `.`, no control characters.
/// Serialised as the name itself.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct LockName(String);

impl LockName {
    /// Checks `name` and wraps it; the error says what is wrong with it.
    pub fn new(name: &str) -> Result<LockName, String> {
        if name.is_empty() {
            return Err("lock name is empty".into());
        }
        if name.len() > MAX_NAME_LEN {
            return Err(format!(
                "lock name is {} bytes long (at most {MAX_NAME_LEN})",
                name.len()
            ));
        }
        if name.contains('/') || name.contains('\\') {
            return Err(format!("lock name {name:?} contains a path separator"));
        }
        if name.starts_with('.') {
            return Err(format!(
                "lock name {name:?} starts with '.' (dotfiles are never locks)"
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(format!("lock name {name:?} contains a control character"));
        }
        if name.trim() != name {
            return Err(format!(
                "lock name {name:?} starts or ends with white space"
            ));
        }
        Ok(LockName(name.to_string()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, so that `{:<24}` lines names up in columns.
        f.pad(&self.0)
    }
}

/// Is this directory entry a lock? Dotfiles (`.gitkeep`, `.pending-triggers`) are not.
pub fn is_lock_file_name(name: &str) -> bool {
    !name.starts_with('.') && LockName::new(name).is_ok()
}

/// Checks that `branch` names a branch git accepts: `refs/heads/BRANCH`
/// passes `git check-ref-format`. Each `/`-separated component is
/// non-empty, does not start with `.` or end with `.lock`; the name has no
/// `..`, no `@{`, no control character, space or DEL, none of `~ ^ : ? * [ \`,
/// and does not end with `.` or `/`. The error says which rule it breaks.
pub fn check_branch_name(branch: &str) -> Result<(), String> {
    if branch.is_empty() {
        return Err("is empty".into());
    }
    if let Some(c) = branch.chars().find(|c| {
        c.is_ascii_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\')
    }) {
        return Err(format!("contains {c:?}"));
    }
    for (bad, what) in [("..", "\"..\""), ("@{", "\"@{\"")] {
        if branch.contains(bad) {
            return Err(format!("contains {what}"));
        }
    }
    if branch.ends_with('.') {
        return Err("ends with '.'".into());
    }
    for component in branch.split('/') {
        if component.is_empty() {
            return Err("has an empty path component (a leading, trailing or double '/')".into());
        }
        if component.starts_with('.') {
            return Err("has a path component starting with '.'".into());
        }
        if component.ends_with(".lock") {
            return Err("has a path component ending with \".lock\"".into());
        }
    }
    Ok(())
}

/// A pool directory: one or more `/`-separated components, none empty, `.` or `..`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolPath {
    text: String,
    components: Vec<String>,
}

impl PoolPath {
    /// Checks `pool` and wraps it. A trailing `/` is tolerated and dropped.
    pub fn new(pool: &str) -> Result<PoolPath, String> {
        // Checked first: every other message quotes the pool.
        if pool.len() > MAX_POOL_LEN {
            return Err(format!(
                "pool is {} bytes long (at most {MAX_POOL_LEN})",
                pool.len()
            ));
        }
        let trimmed = pool.strip_suffix('/').unwrap_or(pool);
        if trimmed.is_empty() {
            return Err("pool is empty".into());
        }
        if trimmed.starts_with('/') {
            return Err(format!(
                "pool {pool:?} is an absolute path; it must be a directory inside the repository"
            ));
        }
        if pool.chars().any(char::is_control) {
            return Err(format!("pool {pool:?} contains a control character"));
        }
        let mut components = Vec::new();
        for c in trimmed.split('/') {
            if c.is_empty() || c == "." || c == ".." {
                return Err(format!(
                    "pool {pool:?} has an empty, '.' or '..' path component"
                ));
            }
            components.push(c.to_string());
        }
        Ok(PoolPath {
            text: trimmed.to_string(),
            components,
        })
    }

    /// The pool as written (without a trailing `/`).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The path components of the pool directory.
    pub fn components(&self) -> &[String] {
        &self.components
    }

    /// `<pool>/<state>/<lock>` as a repository path.
    pub fn lock_path(&self, state: LockState, lock: &LockName) -> String {
        format!("{}/{}/{}", self.text, state.dir(), lock)
    }
}

impl fmt::Display for PoolPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Which directory of the pool a lock file is in. Serialised (and
/// displayed) as the directory's name, `claimed` or `unclaimed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LockState {
    /// `<pool>/claimed/<lock>`
    Claimed,
    /// `<pool>/unclaimed/<lock>`
    Unclaimed,
}

impl LockState {
    /// The directory name in the pool.
    pub fn dir(self) -> &'static str {
        match self {
            LockState::Claimed => "claimed",
            LockState::Unclaimed => "unclaimed",
        }
    }

    /// The directory name as an adjective for messages.
    pub fn describe(self) -> &'static str {
        self.dir()
    }
}

impl fmt::Display for LockState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.dir())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_names_serialise_and_display_as_their_text() {
        let name = LockName::new("env-1").unwrap();
        assert_eq!(
            serde_json::to_string(&(&name, LockState::Claimed, LockState::Unclaimed)).unwrap(),
            r#"["env-1","claimed","unclaimed"]"#
        );
        assert_eq!(
            format!("[{name:<7}][{:<10}]", LockState::Claimed),
            "[env-1  ][claimed   ]"
        );
    }

    #[test]
    fn branch_names_follow_gits_ref_format() {
        for ok in [
            "main",
            "release/1.x",
            "feature/a-b_c",
            "v1.0",
            "ünïcode",
            "a@b",
            "@",
        ] {
            assert_eq!(check_branch_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "a..b",
            "a b",
            "a~1",
            "a^",
            "a:b",
            "a?",
            "a*",
            "a[b",
            "a\\b",
            "a\u{7f}",
            "a\tb",
            "a@{1}",
            "a.",
            "/a",
            "a/",
            "a//b",
            ".hidden",
            "a/.b",
            "x.lock",
            "a/x.lock/b",
        ] {
            assert!(check_branch_name(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(check_branch_name("a..b"), Err("contains \"..\"".into()));
    }

    #[test]
    fn ordinary_lock_names_are_accepted() {
        for name in [
            "env-1",
            "prod_eu",
            "a",
            "lock with spaces",
            "ünïcode",
            "x.y",
        ] {
            assert_eq!(LockName::new(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn dangerous_lock_names_are_rejected() {
        let long = "x".repeat(256);
        for name in [
            "", "a/b", "..", ".", ".gitkeep", "../etc", "a\nb", "a\0b", "tab\t", "\\x", " x", "x ",
            &long,
        ] {
            assert!(LockName::new(name).is_err(), "{name:?} should be rejected");
        }
    }

    #[test]
    fn dotfiles_are_never_locks() {
        assert!(!is_lock_file_name(".gitkeep"));
        assert!(!is_lock_file_name(".pending-triggers"));
        assert!(is_lock_file_name("env"));
    }

    #[test]
    fn pools_may_be_nested() {
        let p = PoolPath::new("envs/aws/").unwrap();
        assert_eq!(p.as_str(), "envs/aws");
        assert_eq!(p.components(), ["envs", "aws"]);
    }

    #[test]
    fn pools_of_megabytes_are_refused_without_being_quoted() {
        assert!(PoolPath::new(&"p".repeat(MAX_POOL_LEN)).is_ok());
        for pool in ["p".repeat(5 << 20), format!("{}\n", "p".repeat(5 << 20))] {
            let err = PoolPath::new(&pool).unwrap_err();
            assert!(err.len() < 100, "{}", &err[..100]);
            assert!(err.contains("bytes long (at most 4096)"), "{err}");
        }
    }

    #[test]
    fn pools_cannot_escape_the_repository() {
        for pool in ["", "/", "/abs", "a//b", "a/../b", "..", "./a", "a\nb"] {
            assert!(PoolPath::new(pool).is_err(), "{pool:?} should be rejected");
        }
    }
}
