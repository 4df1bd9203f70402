//! The bodies of the fuzz targets, kept out of `fuzz_targets/` so that the
//! integration tests can compile the same code (`tests/hostile.rs` includes
//! this file as a module) and run it over the seeds in `fuzz/seeds/`: if the
//! library's parsing API changes, `cargo test` fails rather than a fuzz build
//! nobody runs.
//!
//! Each function takes arbitrary bytes, must never panic on them, and checks
//! the promises the parsers make about what they accept.

use std::path::Path;
use std::time::Duration;

use pool_resource::config::uri::{RepoUri, Scheme};
use pool_resource::config::{self, RegionLookup, Source};
use pool_resource::model::duration::parse_go_duration;
use pool_resource::model::names::{check_branch_name, is_lock_file_name, LockName, PoolPath};
use pool_resource::model::pool::LockState;
use pool_resource::protocol::{CheckFrom, RawRequest, Version};

/// Where `parse_put` looks for lock files: a directory that does not exist,
/// so that reading them fails the same way whatever the input says.
const NO_SOURCES: &str = "/nonexistent/pool-resource-fuzz";

/// Longest error message accepted: a message quoting a multi-megabyte value
/// would flood the build log.
const MAX_MESSAGE: usize = 64 * 1024;

/// What the executables do with stdin before any I/O: parse the request,
/// validate `source`, `version` and the params of each of the three steps.
pub fn request(data: &[u8]) {
    let Ok(req) = RawRequest::parse(data) else {
        return;
    };
    if let Ok(Some(version)) = Version::from_request(req.version.as_ref()) {
        let hex = version.reference.bytes().all(|b| b.is_ascii_hexdigit());
        assert!(hex, "version.ref {:?} accepted", version.reference);
    }
    match CheckFrom::from_request(req.version.as_ref()) {
        Ok(CheckFrom::Commit(id)) => {
            let commit_id = id.len() == 40 && id.bytes().all(|b| b.is_ascii_hexdigit());
            assert!(commit_id, "check took {id:?} for a commit id");
        }
        Ok(CheckFrom::Unknown(shown)) => {
            assert!(shown.len() <= MAX_MESSAGE, "unknown version shown whole");
            assert!(
                !shown.chars().any(char::is_control),
                "control character shown"
            );
        }
        Ok(CheckFrom::Nothing) | Err(_) => {}
    }
    let _ = config::parse_check(&req);
    let _ = config::parse_get(&req);
    if let Err(e) = config::parse_put(&req, Path::new(NO_SOURCES)) {
        assert!(e.to_string().len() <= MAX_MESSAGE, "message too long");
    }
    // The region chain of a `codecommit://NAME` source may ask instance
    // metadata: never from here. Half the inputs find a region, half none.
    let mut lookup = Chain(data.len().is_multiple_of(2));
    match Source::from_request_with(&req, &mut lookup) {
        Ok(source) => {
            assert_pool(&source.pool);
            assert!(source.retry_delay > Duration::ZERO, "a zero retry delay");
            assert_no_password_shown(&source.uri);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// A region chain that finds `eu-west-1` if `.0`, else nothing.
struct Chain(bool);

impl RegionLookup for Chain {
    fn region(&mut self, _: Option<&str>) -> pool_resource::Result<Option<String>> {
        Ok(self.0.then(|| "eu-west-1".to_string()))
    }

    fn tried(&self, _: Option<&str>) -> String {
        "the fuzz target's chain".into()
    }
}

/// Lock, pool and branch name validation: whatever is accepted cannot
/// escape its directory, hide as a dotfile or carry control characters.
pub fn names(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let lock = LockName::new(&text);
    match &lock {
        Ok(lock) => {
            assert_eq!(lock.as_str(), text);
            assert_lock_name(&text);
            assert!(
                is_lock_file_name(&text),
                "{text:?} is a lock but not a lock file"
            );
        }
        Err(why) => {
            assert!(!why.is_empty());
            assert!(why.len() <= MAX_MESSAGE, "message too long");
            assert!(
                !is_lock_file_name(&text),
                "{text:?} is a lock file but not a lock"
            );
        }
    }
    match PoolPath::new(&text) {
        Ok(pool) => {
            assert_pool(&pool);
            let lock = lock
                .clone()
                .unwrap_or_else(|_| LockName::new("lock").expect("a valid name"));
            for state in [LockState::Claimed, LockState::Unclaimed] {
                let path = pool.lock_path(state, &lock);
                assert_eq!(path, format!("{pool}/{}/{lock}", state.dir()));
                assert!(
                    path.split('/')
                        .all(|c| !c.is_empty() && c != "." && c != ".."),
                    "{path:?} escapes"
                );
            }
        }
        Err(why) => assert!(why.len() <= MAX_MESSAGE, "message too long"),
    }
    if check_branch_name(&text).is_ok() {
        let ref_safe = !text.contains("..")
            && !text.contains("@{")
            && !text.chars().any(|c| c.is_control() && c.is_ascii())
            && text
                .split('/')
                .all(|c| !c.is_empty() && !c.starts_with('.'));
        assert!(ref_safe, "branch {text:?} accepted");
    }
}

/// The other strings `source` holds that have a grammar: `retry_delay` and
/// `uri` (including the CodeCommit forms).
pub fn values(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match parse_go_duration(&text) {
        Ok(d) => assert!(d.as_nanos() <= i64::MAX as u128, "{text:?} overflows"),
        Err(why) => assert!(why.len() <= MAX_MESSAGE, "message too long"),
    }
    if let Ok(uri) = RepoUri::parse(&text) {
        assert_no_password_shown(&uri);
    }
    let _ = pool_resource::config::codecommit_uri::parse(&text);
}

fn assert_lock_name(name: &str) {
    assert!(!name.is_empty());
    assert!(name.len() <= pool_resource::model::names::MAX_NAME_LEN);
    assert!(!name.contains(['/', '\\']), "{name:?} has a separator");
    assert!(!name.starts_with('.'), "{name:?} is a dotfile");
    assert!(
        !name.chars().any(char::is_control),
        "{name:?} has a control character"
    );
    assert_eq!(name.trim(), name);
}

fn assert_pool(pool: &PoolPath) {
    assert!(!pool.components().is_empty());
    for c in pool.components() {
        assert!(!c.is_empty() && c != "." && c != "..", "{pool:?} escapes");
        assert!(
            !c.chars().any(char::is_control),
            "{pool:?} has a control character"
        );
    }
    assert_eq!(pool.as_str(), pool.components().join("/"));
}

/// The display form of a remote URI, read back, has no password: what is
/// printed never carries the credentials.
fn assert_no_password_shown(uri: &RepoUri) {
    if matches!(uri.scheme, Scheme::Local(_)) {
        return;
    }
    let shown = uri.to_string();
    match RepoUri::parse(&shown) {
        Ok(again) => assert_eq!(again.password, None, "{shown:?} shows a password"),
        Err(e) => panic!("the display form {shown:?} of a valid URI does not parse: {e}"),
    }
}
