//! The waiting room's settings: `source.queue` and `source.waiter_lease`,
//! put `params.priority` and `params.wait_timeout`
//! ([`crate::model::line`]). Checked before any network traffic, each
//! error naming its field.

use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::duration::parse_go_duration;
use crate::model::pool::Operation;
use crate::protocol::Fields;

/// How long a waiter's ticket counts without being renewed, when
/// `source.waiter_lease` does not say.
pub const DEFAULT_WAITER_LEASE: Duration = Duration::from_secs(300);

/// The shortest `source.waiter_lease` (tests use seconds).
pub const MIN_WAITER_LEASE: Duration = Duration::from_secs(1);

/// The put params this module reads, for the list of known params.
pub const PARAMS: [&str; 2] = ["priority", "wait_timeout"];

/// The line's source fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineSource {
    /// `queue` (default true): a put that must wait takes a place in the
    /// line; `false`, it polls as before and writes nothing while it waits
    /// (it still leaves alone the locks kept for those in line).
    pub queue: bool,
    /// `waiter_lease`: a ticket not renewed for this long counts for no one.
    pub waiter_lease: Duration,
}

impl Default for LineSource {
    fn default() -> Self {
        LineSource {
            queue: true,
            waiter_lease: DEFAULT_WAITER_LEASE,
        }
    }
}

impl LineSource {
    /// The lease as whole seconds, as a ticket records it (rounded up).
    pub fn lease_secs(&self) -> u64 {
        let d = self.waiter_lease;
        d.as_secs() + u64::from(d.subsec_nanos() > 0)
    }
}

/// The line's put params.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LineParams {
    /// `priority` (default 0): higher is served first.
    pub priority: i64,
    /// `wait_timeout`: give up waiting after this long; `None`: wait as
    /// long as it takes. Zero: do not wait at all.
    pub wait_timeout: Option<Duration>,
    /// Which of the two were given, for [`LineParams::check_applies`].
    given: Vec<&'static str>,
}

/// Takes `queue` and `waiter_lease` out of `source`.
pub fn parse_source(f: &mut Fields) -> Result<LineSource> {
    let queue = f.bool("queue")?.unwrap_or(true);
    let waiter_lease = match duration(f.take("waiter_lease"), "source.waiter_lease", "\"5m\"")? {
        None => DEFAULT_WAITER_LEASE,
        Some(d) if d < MIN_WAITER_LEASE => {
            return Err(Error::bad_request(format!(
                "invalid payload: source.waiter_lease must be at least 1s, not {}",
                crate::model::duration::human(d)
            )))
        }
        Some(d) => d,
    };
    Ok(LineSource {
        queue,
        waiter_lease,
    })
}

/// Takes `priority` and `wait_timeout` out of put `params`.
pub fn parse_params(f: &mut Fields) -> Result<LineParams> {
    let mut given = Vec::new();
    let priority = match f.take("priority") {
        None => 0,
        Some(Value::Number(n)) => {
            given.push("priority");
            n.as_i64().ok_or_else(|| {
                Error::bad_request(format!(
                    "invalid payload: params.priority must be a whole number, not {n}"
                ))
            })?
        }
        Some(_) => {
            return Err(Error::bad_request(
                "invalid payload: params.priority must be a whole number such as 10 or -5",
            ))
        }
    };
    let wait_timeout = duration(f.take("wait_timeout"), "params.wait_timeout", "\"30m\"")?;
    if wait_timeout.is_some() {
        given.push("wait_timeout");
    }
    Ok(LineParams {
        priority,
        wait_timeout,
        given,
    })
}

impl LineParams {
    /// Fails when `priority` or `wait_timeout` is given to a put that
    /// never waits in line (anything but `acquire` and `claim`).
    pub fn check_applies(&self, op: &Operation) -> Result<()> {
        let waits_in_line = op.claims();
        match self.given.first() {
            Some(field) if !waits_in_line => Err(Error::bad_request(format!(
                "invalid payload: params.{field} applies to acquire and claim, not {}",
                op.param()
            ))),
            _ => Ok(()),
        }
    }
}

/// A Go duration string or a whole number of nanoseconds; `""` is absent.
fn duration(value: Option<Value>, field: &str, example: &str) -> Result<Option<Duration>> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => parse_go_duration(&s)
            .map(Some)
            .map_err(|e| Error::bad_request(format!("invalid payload: {field}: {e}"))),
        Some(Value::Number(n)) => n.as_u64().map(|ns| Some(Duration::from_nanos(ns))).ok_or_else(
            || {
                Error::bad_request(format!(
                    "invalid payload: {field} {n} is not a whole, non-negative number of nanoseconds"
                ))
            },
        ),
        Some(_) => Err(Error::bad_request(format!(
            "invalid payload: {field} must be a duration such as {example}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::names::LockName;
    use crate::model::pool::{Multi, Single};
    use serde_json::json;

    fn fields(section: &'static str, v: Value) -> Fields {
        Fields::new(section, v.as_object().unwrap().clone())
    }

    fn source(v: Value) -> Result<LineSource> {
        parse_source(&mut fields("source", v))
    }

    fn params(v: Value) -> Result<LineParams> {
        parse_params(&mut fields("params", v))
    }

    #[test]
    fn the_line_is_on_by_default_with_a_five_minute_lease() {
        assert_eq!(source(json!({})).unwrap(), LineSource::default());
        assert_eq!(LineSource::default().lease_secs(), 300);
        let s = source(json!({"queue": false, "waiter_lease": "1500ms"})).unwrap();
        assert!(!s.queue);
        assert_eq!(s.waiter_lease, Duration::from_millis(1500));
        assert_eq!(s.lease_secs(), 2, "rounded up");
        assert_eq!(
            source(json!({"waiter_lease": 2_000_000_000u64}))
                .unwrap()
                .lease_secs(),
            2
        );
    }

    #[test]
    fn bad_source_values_name_their_field() {
        for (v, want) in [
            (json!({"queue": "no"}), "source.queue must be true or false"),
            (json!({"waiter_lease": "soon"}), "source.waiter_lease: "),
            (
                json!({"waiter_lease": "500ms"}),
                "source.waiter_lease must be at least 1s",
            ),
            (
                json!({"waiter_lease": "0s"}),
                "source.waiter_lease must be at least 1s",
            ),
            (json!({"waiter_lease": -1}), "source.waiter_lease -1 is not"),
            (
                json!({"waiter_lease": true}),
                "source.waiter_lease must be a duration",
            ),
        ] {
            let err = source(v.clone()).unwrap_err().to_string();
            assert!(err.contains(want), "{v}: {err}");
        }
    }

    #[test]
    fn priority_and_wait_timeout_are_read_and_checked() {
        let p = params(json!({"priority": -5, "wait_timeout": "1m30s"})).unwrap();
        assert_eq!(p.priority, -5);
        assert_eq!(p.wait_timeout, Some(Duration::from_secs(90)));
        let none = params(json!({})).unwrap();
        assert_eq!((none.priority, none.wait_timeout), (0, None));
        assert_eq!(
            params(json!({"wait_timeout": "0s"})).unwrap().wait_timeout,
            Some(Duration::ZERO)
        );
        for (v, want) in [
            (
                json!({"priority": 1.5}),
                "params.priority must be a whole number, not 1.5",
            ),
            (
                json!({"priority": "high"}),
                "params.priority must be a whole number",
            ),
            (json!({"wait_timeout": "forever"}), "params.wait_timeout: "),
            (
                json!({"wait_timeout": [1]}),
                "params.wait_timeout must be a duration",
            ),
        ] {
            let err = params(v.clone()).unwrap_err().to_string();
            assert!(err.contains(want), "{v}: {err}");
        }
    }

    #[test]
    fn line_params_apply_to_acquire_and_claim_only() {
        let lock = LockName::new("a").unwrap();
        let p = params(json!({"wait_timeout": "1m"})).unwrap();
        for op in [
            Single::Acquire.into(),
            Single::Claim(lock.clone()).into(),
            Multi::Acquire(2).into(),
            Multi::Claim(vec![lock.clone()]).into(),
        ] {
            assert!(p.check_applies(&op).is_ok());
        }
        let err = params(json!({"priority": 3}))
            .unwrap()
            .check_applies(&Single::Release(lock.clone()).into())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid payload: params.priority applies to acquire and claim, not release"
        );
        assert!(params(json!({}))
            .unwrap()
            .check_applies(&Single::Remove(lock).into())
            .is_ok());
    }
}
