//! Go duration strings, as `retry_delay` has always been written.
//!
//! Pipelines written for the Go resource say `retry_delay: 1m30s` or `1.5h`,
//! and a bare JSON number means nanoseconds (Go's `time.Duration`). This module
//! parses exactly that grammar so existing YAML keeps its meaning.

use std::time::Duration;

use crate::error::quoted;

/// Parses a Go duration such as `"300ms"`, `"1m30s"`, `"1.5h"` or `"2h45m"`.
///
/// Units: `ns`, `us`, `µs`, `μs`, `ms`, `s`, `m`, `h`. `"0"` is zero. Negative
/// durations are rejected (a delay cannot be negative).
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let shown = || quoted(text);
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.starts_with('-') {
        return Err(format!("negative duration {}", shown()));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total_nanos: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(format!("invalid duration {}: expected a number", shown()));
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => {
                // `"3"` reads best as `"3s"`; in `"1m30"` the example is
                // the whole, not the last number.
                let examples = if num == s {
                    format!(
                        "{}, {}",
                        quoted(&format!("{num}s")),
                        quoted(&format!("{num}m"))
                    )
                } else {
                    "\"10s\", \"4h\"".to_string()
                };
                return Err(format!(
                    "invalid duration {}: missing unit (write it as {examples} or \"1m30s\"; units ns, us, ms, s, m, h)",
                    shown(),
                ));
            }
            other => {
                return Err(format!(
                    "invalid duration {}: unknown unit {}",
                    shown(),
                    quoted(other)
                ))
            }
        };
        let value: f64 = num
            .parse()
            .map_err(|_| format!("invalid duration {}: bad number {}", shown(), quoted(num)))?;
        total_nanos += value * scale;
        rest = next;
    }
    // Go's Duration is an i64 of nanoseconds: about 292 years.
    if total_nanos > i64::MAX as f64 {
        return Err(format!("duration {} is too large", shown()));
    }
    Ok(Duration::from_nanos(total_nanos.round() as u64))
}

/// Formats a duration for people: `1h2m3s`, `1.5s`, `250ms`.
pub fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 {
        let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
        if h > 0 {
            format!("{h}h{m}m{s}s")
        } else {
            format!("{m}m{s}s")
        }
    } else if secs >= 1 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// A Unix time as RFC 3339 UTC: `2026-05-01T12:34:56Z`. A time the
/// calendar cannot show (beyond the year 9999 either way, as from a
/// hand-edited hold file) is shown as `@SECS`, as `date -d @SECS` takes it.
pub fn utc(secs: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("@{secs}"),
    }
}

/// How long ago `since` (Unix seconds) was, for people (`1h2m3s`).
pub fn ago(since: i64, now: i64) -> String {
    human(Duration::from_secs((now - since).max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_times_format_as_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_514_116_400), "2017-12-24T11:53:20Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(-1), "1969-12-31T23:59:59Z");
        assert_eq!(utc(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(utc(i64::MAX), format!("@{}", i64::MAX));
    }

    #[test]
    fn go_duration_strings_parse_like_go() {
        let cases = [
            ("10s", Duration::from_secs(10)),
            ("100ms", Duration::from_millis(100)),
            ("1m30s", Duration::from_secs(90)),
            ("1.5h", Duration::from_secs(5400)),
            ("2h45m", Duration::from_secs(9900)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("1us", Duration::from_micros(1)),
            ("1µs", Duration::from_micros(1)),
            ("3ns", Duration::from_nanos(3)),
            ("+5s", Duration::from_secs(5)),
            (".5s", Duration::from_millis(500)),
            ("1h1m1s1ms", Duration::from_millis(3_661_001)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_go_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_durations_are_rejected_with_the_reason() {
        for text in [
            "",
            "10",
            "s",
            "1x",
            "-1s",
            "1..5s",
            "abc",
            "1s2",
            "9999999999h",
        ] {
            assert!(parse_go_duration(text).is_err(), "{text:?} should fail");
        }
        assert!(parse_go_duration("5 parsecs").unwrap_err().contains("unit"));
        assert_eq!(
            parse_go_duration("soon").unwrap_err(),
            "invalid duration \"soon\": expected a number"
        );
    }

    #[test]
    fn huge_bad_durations_are_not_quoted_whole() {
        for text in ["x".repeat(5 << 20), format!("1{}", "y".repeat(5 << 20))] {
            let err = parse_go_duration(&text).unwrap_err();
            assert!(err.len() < 300, "{} bytes: {}", err.len(), &err[..300]);
            assert!(
                err.contains("(5242880 bytes)") || err.contains("(5242881 bytes)"),
                "{err}"
            );
        }
    }

    #[test]
    fn human_durations_are_short() {
        assert_eq!(human(Duration::from_millis(250)), "250ms");
        assert_eq!(human(Duration::from_millis(1500)), "1.5s");
        assert_eq!(human(Duration::from_secs(125)), "2m5s");
        assert_eq!(human(Duration::from_secs(3725)), "1h2m5s");
    }
}
