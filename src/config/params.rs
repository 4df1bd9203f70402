//! A step's `params`: a put's one action as an [`Operation`] (on one lock
//! or several), get's
//! `depth`, and check's none.

use std::path::Path;

use serde_json::{Map, Value};

use crate::config::fields::{lock_name, reject_unknown_params, MAX_PARAM_PATH};
use crate::error::{Error, Result};
use crate::model::names::LockName;
use crate::model::pool::{join_names, Multi, Operation, Single};
use crate::protocol::{Fields, RawRequest};

/// A put action that names a directory of the build's inputs (or, for
/// `claim`, a lock): every action but `acquire`, which is `true` or a count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DirAction {
    Release,
    Remove,
    Claim,
    Add,
    AddClaimed,
    Update,
    Check,
    CheckUnclaimed,
}

impl DirAction {
    /// In the order the Go resource listed them.
    const ALL: [DirAction; 8] = [
        DirAction::Release,
        DirAction::Remove,
        DirAction::Claim,
        DirAction::Add,
        DirAction::AddClaimed,
        DirAction::Update,
        DirAction::Check,
        DirAction::CheckUnclaimed,
    ];

    /// The param's name.
    fn param(self) -> &'static str {
        match self {
            DirAction::Release => "release",
            DirAction::Remove => "remove",
            DirAction::Claim => "claim",
            DirAction::Add => "add",
            DirAction::AddClaimed => "add_claimed",
            DirAction::Update => "update",
            DirAction::Check => "check",
            DirAction::CheckUnclaimed => "check_unclaimed",
        }
    }
}

/// Every param a put knows, for the unknown-field message.
fn put_params() -> Vec<&'static str> {
    std::iter::once("acquire")
        .chain(DirAction::ALL.iter().map(|a| a.param()))
        .chain(["idempotent", "shared"])
        .collect()
}

fn read_input(src: &Path, dir: &str, file: &str, param: &str) -> Result<Vec<u8>> {
    let path = src.join(dir).join(file);
    std::fs::read(&path).map_err(|source| Error::Input {
        what: format!("could not read {file} for params.{param}: {source}"),
        path,
        source,
    })
}

fn read_lock_name(src: &Path, dir: &str, param: &str) -> Result<LockName> {
    let bytes = read_input(src, dir, "name", param)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        Error::bad_request(format!(
            "invalid payload: {}/name (params.{param}) is not UTF-8 text",
            dir
        ))
    })?;
    lock_name(text.trim(), &format!("{dir}/name (params.{param})"))
}

/// Validated put `params`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutParams {
    /// The one action.
    pub op: Operation,
    /// `idempotent: true`: a put run again by the same build gets back what
    /// the first run did (see [`crate::resource::rerun`]) instead of doing it twice.
    pub idempotent: bool,
    /// `release: DIR` whose `DIR/claim` (written by `in`) names the claim
    /// commit (for a directory of several locks, the one commit that
    /// claimed them all): the release is fenced to that claim ([`crate::resource::holder::check_fence`]).
    pub fence: Option<String>,
    /// `priority` and `wait_timeout`: how the put waits in line.
    pub line: crate::config::line::LineParams,
}

/// Validates put `params` into one [`Operation`], reading lock files under `src`.
pub fn parse_put(req: &RawRequest, src: &Path) -> Result<PutParams> {
    let mut f = Fields::new("params", req.params.clone());
    let (acquire, many) = parse_acquire(&mut f)?;
    let claim_list = parse_claim_list(&mut f)?;
    let mut dirs = Vec::new();
    for action in DirAction::ALL {
        let param = action.param();
        if let Some(v) = f.string(param)? {
            // A lock name (claim) is checked, with its own message, later.
            if action != DirAction::Claim && v.len() > MAX_PARAM_PATH {
                return Err(Error::bad_request(format!(
                    "invalid payload: params.{param} is {} bytes long (at most {MAX_PARAM_PATH})",
                    v.len()
                )));
            }
            dirs.push((action, v));
        }
    }
    let idempotent = f.bool("idempotent")?.unwrap_or(false);
    let shared = f.bool("shared")?.unwrap_or(false);
    let line = crate::config::line::parse_params(&mut f)?;
    let mut known = put_params();
    known.extend(crate::config::line::PARAMS);
    reject_unknown_params(&f, &known)?;
    let op = match (many, claim_list) {
        (Some(n), None) if dirs.is_empty() => Multi::Acquire(n).into(),
        (None, Some(mut locks)) if dirs.is_empty() && acquire != Some(true) => {
            if locks.len() == 1 {
                Single::Claim(locks.remove(0)).into()
            } else {
                Multi::Claim(locks).into()
            }
        }
        // Two actions, or none: parse_action names them.
        (many, list) => {
            if let Some(locks) = list {
                dirs.push((DirAction::Claim, join_names(&locks)));
            }
            parse_action(acquire.or(many.map(|_| true)), dirs, src)?
        }
    };
    if idempotent
        && !matches!(
            op,
            Operation::Single(
                Single::Acquire | Single::Claim(_) | Single::Release(_) | Single::Unshare { .. }
            ) | Operation::Multi(_)
        )
    {
        return Err(Error::bad_request(format!(
            "invalid payload: params.idempotent applies to acquire, claim and release, not {}",
            op.param()
        )));
    }
    let op = if shared {
        shared_op(op, idempotent)?
    } else {
        op
    };
    line.check_applies(&op)?;
    let fence = match (&op, release_dir(&req.params)) {
        (
            Operation::Single(Single::Release(_)) | Operation::Multi(Multi::Release(_)),
            Some(dir),
        ) => read_fence(src, &dir)?,
        _ => None,
    };
    Ok(PutParams {
        op,
        idempotent,
        fence,
        line,
    })
}

/// `shared: true`: `acquire: true` or `claim: L` taking a share under a
/// fresh holder id.
fn shared_op(op: Operation, idempotent: bool) -> Result<Operation> {
    let lock = match op {
        Operation::Single(Single::Acquire) => None,
        Operation::Single(Single::Claim(lock)) => Some(lock),
        other => {
            return Err(Error::bad_request(format!(
                "invalid payload: params.shared applies to acquire: true and claim: LOCK (one lock), not {}",
                match &other {
                    Operation::Multi(m) => format!("{} of several locks", m.param()),
                    Operation::Single(s) => s.param().to_string(),
                }
            )))
        }
    };
    if idempotent {
        return Err(Error::bad_request(
            "invalid payload: params.idempotent does not apply with params.shared (a shared hold is found again by its holder id)",
        ));
    }
    Ok(Single::Share {
        lock,
        id: format!("{:016x}", fastrand::u64(..)),
    }
    .into())
}

/// `acquire`: `true`, or a count of locks; 1 is `true`. Returns the
/// boolean form and, for N ≥ 2, the count.
fn parse_acquire(f: &mut Fields) -> Result<(Option<bool>, Option<usize>)> {
    match f.take("acquire") {
        None => Ok((None, None)),
        Some(Value::Bool(b)) => Ok((Some(b), None)),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(0) | None => Err(Error::bad_request(format!(
                "invalid payload: params.acquire must be true or a number of locks (1 or more), not {n}"
            ))),
            Some(1) => Ok((Some(true), None)),
            Some(n) => Ok((None, Some(usize::try_from(n).unwrap_or(usize::MAX)))),
        },
        Some(other) => Err(Error::bad_request(format!(
            "invalid payload: params.acquire must be true or a number of locks, not {}",
            match other {
                Value::String(_) => "a string",
                Value::Array(_) => "a list",
                Value::Object(_) => "an object",
                _ => "null",
            }
        ))),
    }
}

/// `claim: [A, B]`: a list of distinct lock names (a string stays `claim: A`).
fn parse_claim_list(f: &mut Fields) -> Result<Option<Vec<LockName>>> {
    if !matches!(f.peek("claim"), Some(Value::Array(_))) {
        return Ok(None);
    }
    let Some(Value::Array(items)) = f.take("claim") else {
        return Ok(None);
    };
    let mut locks: Vec<LockName> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Value::String(name) = item else {
            return Err(Error::bad_request(format!(
                "invalid payload: params.claim[{i}] must be a lock name (a string)"
            )));
        };
        let lock = lock_name(name, &format!("params.claim[{i}]"))?;
        if locks.contains(&lock) {
            return Err(Error::bad_request(format!(
                "invalid payload: params.claim names lock {lock} twice"
            )));
        }
        locks.push(lock);
    }
    if locks.is_empty() {
        return Err(Error::bad_request(
            "invalid payload: params.claim is an empty list",
        ));
    }
    Ok(Some(locks))
}

/// `release: DIR`: the locks named in `DIR/name`, one a line (what the get
/// after `acquire: N` or `claim: [A, B]` writes); two or more are released
/// in one commit.
fn release_op(src: &Path, dir: &str) -> Result<Operation> {
    let bytes = read_input(src, dir, "name", "release")?;
    let text = String::from_utf8(bytes).map_err(|_| {
        Error::bad_request(format!(
            "invalid payload: {dir}/name (params.release) is not UTF-8 text"
        ))
    })?;
    let mut locks: Vec<LockName> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let lock = lock_name(line, &format!("{dir}/name (params.release)"))?;
        if !locks.contains(&lock) {
            locks.push(lock);
        }
    }
    if let Some(id) = read_share(src, dir)? {
        return match locks.len() {
            1 => Ok(Single::Unshare {
                lock: locks.remove(0),
                id,
            }
            .into()),
            n => Err(Error::bad_request(format!(
                "invalid payload: {dir}/{SHARE_FILE} (params.release) names a share of one lock, but {dir}/name names {n}"
            ))),
        };
    }
    Ok(match locks.len() {
        // Empty: the one-lock path says what is wrong with it.
        0 => Single::Release(read_lock_name(src, dir, "release")?).into(),
        1 => Single::Release(locks.remove(0)).into(),
        _ => Multi::Release(locks).into(),
    })
}

fn parse_action(
    acquire: Option<bool>,
    mut dirs: Vec<(DirAction, String)>,
    src: &Path,
) -> Result<Operation> {
    let mut given: Vec<&str> = dirs.iter().map(|(a, _)| a.param()).collect();
    if acquire == Some(true) {
        given.insert(0, "acquire");
    }
    match given.len() {
        0 => {
            return Err(Error::bad_request(
                "invalid payload (missing acquire, release, remove, claim, add, add_claimed, update, check, or check_unclaimed)",
            ))
        }
        1 => {}
        _ => {
            return Err(Error::bad_request(format!(
                "invalid payload: a put takes exactly one action, but params has {} (the Go resource ran them all in a fixed order; use one put per action)",
                given.join(" and ")
            )))
        }
    }
    let Some((action, dir)) = dirs.pop() else {
        return Ok(Single::Acquire.into());
    };
    let param = action.param();
    let read_name = || read_lock_name(src, &dir, param);
    let read_content = || read_input(src, &dir, "metadata", param);
    Ok(match action {
        DirAction::Claim => Single::Claim(lock_name(&dir, "params.claim")?).into(),
        DirAction::Release => return release_op(src, &dir),
        DirAction::Remove => Single::Remove(read_name()?).into(),
        DirAction::Add | DirAction::AddClaimed => Single::Add {
            lock: read_name()?,
            content: read_content()?,
            claimed: action == DirAction::AddClaimed,
        }
        .into(),
        DirAction::Update => Single::Update {
            lock: read_name()?,
            content: read_content()?,
        }
        .into(),
        DirAction::Check => Single::WaitUntilUnclaimed(read_name()?).into(),
        DirAction::CheckUnclaimed => Single::WaitUntilClaimed(read_name()?).into(),
    })
}

/// The file `in` writes next to `name` and `metadata` for a claimed lock:
/// the claim commit's id, which fences a later `release` of that directory.
pub const FENCE_FILE: &str = "claim";

/// The file `in` writes next to `name` for a shared hold: the holder id,
/// which a `release` of that directory gives back (and only that share).
pub const SHARE_FILE: &str = "share";

/// Reads `DIR/share`; `None` when there is none (an exclusive hold).
fn read_share(src: &Path, dir: &str) -> Result<Option<String>> {
    let path = src.join(dir).join(SHARE_FILE);
    let text = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Input {
                what: format!("could not read {SHARE_FILE} for params.release: {source}"),
                path,
                source,
            })
        }
    };
    let id = String::from_utf8_lossy(&text).trim().to_string();
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Error::bad_request(format!(
            "invalid payload: {dir}/{SHARE_FILE} (params.release) must hold the holder id that in wrote"
        )));
    }
    Ok(Some(id))
}

fn release_dir(params: &Map<String, Value>) -> Option<String> {
    params.get("release")?.as_str().map(String::from)
}

/// Reads `DIR/claim`; `None` when there is none (a hand-made directory).
fn read_fence(src: &Path, dir: &str) -> Result<Option<String>> {
    let path = src.join(dir).join(FENCE_FILE);
    let text = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Input {
                what: format!("could not read {FENCE_FILE} for params.release: {source}"),
                path,
                source,
            })
        }
    };
    let id = String::from_utf8_lossy(&text).trim().to_string();
    if id.len() != 40 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::bad_request(format!(
            "invalid payload: {dir}/{FENCE_FILE} (params.release) must hold a 40-digit commit id, as in writes it"
        )));
    }
    Ok(Some(id))
}

/// Validated get `params`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GetParams {
    /// `depth`: how much history to fetch at first.
    pub depth: Option<u32>,
}

/// Validates get `params`.
pub fn parse_get(req: &RawRequest) -> Result<GetParams> {
    let mut f = Fields::new("params", req.params.clone());
    let depth = f.uint("depth")?;
    reject_unknown_params(&f, &["depth"])?;
    let depth = match depth {
        None | Some(0) => None,
        Some(d) => Some(u32::try_from(d).unwrap_or(u32::MAX).min(i32::MAX as u32)),
    };
    Ok(GetParams { depth })
}

/// `check` takes no params; reject any so a misplaced param is noticed.
pub fn parse_check(req: &RawRequest) -> Result<()> {
    reject_unknown_params(&Fields::new("params", req.params.clone()), &[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(v: serde_json::Value) -> RawRequest {
        RawRequest::parse(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn misspelled_put_params_are_named_with_a_suggestion() {
        let err = parse_put(
            &req(json!({"source": {}, "params": {"aquire": true}})),
            Path::new("/"),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "invalid payload: unknown field params.aquire (did you mean acquire?)"
        );
    }

    #[test]
    fn two_actions_in_one_put_are_refused_naming_both() {
        let err = parse_put(
            &req(json!({"source": {}, "params": {"acquire": true, "claim": "x"}})),
            Path::new("/"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("acquire and claim"), "{err}");
    }

    #[test]
    fn a_put_without_an_action_uses_the_go_message() {
        for params in [json!({}), json!({"acquire": false})] {
            let err = parse_put(
                &req(json!({"source": {}, "params": params})),
                Path::new("/"),
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.starts_with("invalid payload (missing acquire, release"),
                "{err}"
            );
        }
    }

    #[test]
    fn get_depth_must_be_a_number() {
        assert_eq!(
            parse_get(&req(json!({"source": {}, "params": {"depth": 3}})))
                .unwrap()
                .depth,
            Some(3)
        );
        assert!(parse_get(&req(json!({"source": {}, "params": {"depth": "3"}}))).is_err());
        assert!(parse_get(&req(json!({"source": {}, "params": {"dept": 3}}))).is_err());
    }

    #[test]
    fn every_action_param_makes_its_operation() {
        let dir = tempfile::tempdir().unwrap();
        for (sub, names) in [("one", "a\n"), ("two", "a\nb\n")] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
            std::fs::write(dir.path().join(sub).join("name"), names).unwrap();
            std::fs::write(dir.path().join(sub).join("metadata"), b"m").unwrap();
        }
        let put = |params: serde_json::Value| {
            parse_put(&req(json!({"source": {}, "params": params})), dir.path())
                .unwrap()
                .op
        };
        let a = || LockName::new("a").unwrap();
        let b = || LockName::new("b").unwrap();
        let cases: Vec<(serde_json::Value, Operation)> = vec![
            (json!({"acquire": true}), Single::Acquire.into()),
            (json!({"acquire": 1}), Single::Acquire.into()),
            (json!({"acquire": 3}), Multi::Acquire(3).into()),
            (json!({"claim": "a"}), Single::Claim(a()).into()),
            (json!({"claim": ["a"]}), Single::Claim(a()).into()),
            (
                json!({"claim": ["a", "b"]}),
                Multi::Claim(vec![a(), b()]).into(),
            ),
            (json!({"release": "one"}), Single::Release(a()).into()),
            (
                json!({"release": "two"}),
                Multi::Release(vec![a(), b()]).into(),
            ),
            (json!({"remove": "one"}), Single::Remove(a()).into()),
            (
                json!({"add": "one"}),
                Single::Add {
                    lock: a(),
                    content: b"m".to_vec(),
                    claimed: false,
                }
                .into(),
            ),
            (
                json!({"add_claimed": "one"}),
                Single::Add {
                    lock: a(),
                    content: b"m".to_vec(),
                    claimed: true,
                }
                .into(),
            ),
            (
                json!({"update": "one"}),
                Single::Update {
                    lock: a(),
                    content: b"m".to_vec(),
                }
                .into(),
            ),
            (
                json!({"check": "one"}),
                Single::WaitUntilUnclaimed(a()).into(),
            ),
            (
                json!({"check_unclaimed": "one"}),
                Single::WaitUntilClaimed(a()).into(),
            ),
        ];
        for (params, want) in cases {
            let shown = params.to_string();
            let op = put(params);
            assert_eq!(op, want, "{shown}");
        }
        // Every action is known by its name, and listed where none is given.
        for action in DirAction::ALL {
            assert!(put_params().contains(&action.param()));
        }
    }
}
