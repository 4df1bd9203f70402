//! `/metrics` of `pool serve`: the [`Board`] in Prometheus' text exposition
//! format (version 0.0.4), every name under the `pool_resource_` prefix,
//! each family with its HELP and TYPE lines.
//!
//! Labels: `source` (the repository's URI, without credentials) and
//! `branch` on everything, `pool`, `state`, `lock` and `kind` (`shared` or
//! `exclusive`: `lock_holders`, `waiters_by_kind`) where they apply.
//!
//! The line's gauges (`waiters`, `waiters_by_kind`, `oldest_wait_seconds`) count the tickets
//! live at `now`, not at the read: a lease lapses without a commit, and
//! the board is read again only when the tip moves.

use std::fmt::Write;

use crate::model::names::LockState;
use crate::operator::watch::Board;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A label value escaped as the format wants (`\`, `"` and newlines).
fn esc(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Family {
    out: String,
}

impl Family {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP pool_resource_{name} {help}");
        let _ = writeln!(self.out, "# TYPE pool_resource_{name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
            .collect();
        let _ = writeln!(
            self.out,
            "pool_resource_{name}{{{}}} {value}",
            labels.join(",")
        );
    }
}

/// The exposition of `board` at time `now` (Unix seconds).
pub fn render(board: &Board, now: i64) -> String {
    let mut f = Family { out: String::new() };
    f.head(
        "locks",
        "gauge",
        "Locks by pool and state (claimed or unclaimed).",
    );
    for v in &board.views {
        let Some(read) = &v.read else { continue };
        for p in &read.status.pools {
            for state in [LockState::Claimed, LockState::Unclaimed] {
                let n = p.locks.iter().filter(|l| l.state == state).count();
                f.sample(
                    "locks",
                    &[
                        ("source", &v.uri),
                        ("branch", &v.branch),
                        ("pool", &p.pool),
                        ("state", state.dir()),
                    ],
                    n,
                );
            }
        }
    }
    f.head(
        "lock_held_seconds",
        "gauge",
        "Seconds each claimed lock has been held (at least, when the claim is older than the look-back); for a lock held shared, by its longest-standing holder.",
    );
    for v in &board.views {
        let Some(read) = &v.read else { continue };
        for p in &read.status.pools {
            for l in p.locks.iter().filter(|l| l.state == LockState::Claimed) {
                f.sample(
                    "lock_held_seconds",
                    &[
                        ("source", &v.uri),
                        ("branch", &v.branch),
                        ("pool", &p.pool),
                        ("lock", l.name.as_str()),
                    ],
                    (now - l.held_since()).max(0),
                );
            }
        }
    }
    f.head(
        "lock_holders",
        "gauge",
        "Builds holding each lock, by kind: shared (shared: true puts, any number) or exclusive (0 or 1).",
    );
    for v in &board.views {
        let Some(read) = &v.read else { continue };
        for p in &read.status.pools {
            for l in &p.locks {
                let claimed = l.state == LockState::Claimed;
                for (kind, n) in [
                    ("shared", l.holders.len()),
                    ("exclusive", usize::from(claimed && !l.shared)),
                ] {
                    f.sample(
                        "lock_holders",
                        &[
                            ("source", &v.uri),
                            ("branch", &v.branch),
                            ("pool", &p.pool),
                            ("lock", l.name.as_str()),
                            ("kind", kind),
                        ],
                        n,
                    );
                }
            }
        }
    }
    f.head(
        "pool_held",
        "gauge",
        "Whether an operator holds the pool (1) or not (0): acquire and claim wait while it does.",
    );
    for v in &board.views {
        let Some(read) = &v.read else { continue };
        for p in &read.status.pools {
            f.sample(
                "pool_held",
                &[("source", &v.uri), ("branch", &v.branch), ("pool", &p.pool)],
                u8::from(p.hold.is_some()),
            );
        }
    }
    // Only where Concourse access is configured: a 0 would claim to know.
    let asked: Vec<&crate::operator::watch::View> = board
        .views
        .iter()
        .filter(|v| v.build_status_at.is_some())
        .collect();
    if !asked.is_empty() {
        f.head(
            "dead_build_claims",
            "gauge",
            "Claimed locks whose build ended failed, errored or aborted, by pool (what pool reap --dead releases once the grace is over).",
        );
        for v in &asked {
            let Some(read) = &v.read else { continue };
            for p in &read.status.pools {
                let n = p
                    .locks
                    .iter()
                    .filter(|l| l.state == LockState::Claimed)
                    .filter(|l| l.build_status.as_ref().is_some_and(|b| b.dead))
                    .count();
                f.sample(
                    "dead_build_claims",
                    &[("source", &v.uri), ("branch", &v.branch), ("pool", &p.pool)],
                    n,
                );
            }
        }
        f.head(
            "build_status_up",
            "gauge",
            "Whether Concourse answered every question about the holders' builds in the last round of lookups (1) or not (0: not yet, an error, or no answer in time).",
        );
        for v in &asked {
            f.sample(
                "build_status_up",
                &[("source", &v.uri), ("branch", &v.branch)],
                u8::from(v.build_status_error.is_none()),
            );
        }
    }
    f.head(
        "pool_held_seconds",
        "gauge",
        "Seconds since an operator put the hold on the pool (0 when it is not held).",
    );
    for v in &board.views {
        let Some(read) = &v.read else { continue };
        for p in &read.status.pools {
            f.sample(
                "pool_held_seconds",
                &[("source", &v.uri), ("branch", &v.branch), ("pool", &p.pool)],
                p.hold.as_ref().map_or(0, |h| (now - h.since).max(0)),
            );
        }
    }
    f.head(
        "waiters",
        "gauge",
        "Puts waiting in the pool's line (live tickets; expired ones count for no one).",
    );
    for v in &board.views {
        let Some(read) = &v.read else { continue };
        for p in &read.status.pools {
            f.sample(
                "waiters",
                &[("source", &v.uri), ("branch", &v.branch), ("pool", &p.pool)],
                p.waiting(now).0,
            );
        }
    }
    f.head(
        "waiters_by_kind",
        "gauge",
        "Puts waiting in the pool's line (live tickets) by the hold they want: shared or exclusive.",
    );
    for v in &board.views {
        let Some(read) = &v.read else { continue };
        for p in &read.status.pools {
            let live = p.line_file.live(now);
            for (kind, shared) in [("shared", true), ("exclusive", false)] {
                f.sample(
                    "waiters_by_kind",
                    &[
                        ("source", &v.uri),
                        ("branch", &v.branch),
                        ("pool", &p.pool),
                        ("kind", kind),
                    ],
                    live.iter().filter(|t| t.shared == shared).count(),
                );
            }
        }
    }
    f.head(
        "oldest_wait_seconds",
        "gauge",
        "Seconds the longest-waiting put in the pool's line has waited (0 when nobody waits).",
    );
    for v in &board.views {
        let Some(read) = &v.read else { continue };
        for p in &read.status.pools {
            f.sample(
                "oldest_wait_seconds",
                &[("source", &v.uri), ("branch", &v.branch), ("pool", &p.pool)],
                p.waiting(now).1.map_or(0, |t| (now - t).max(0)),
            );
        }
    }
    let repo = |v: &crate::operator::watch::View| {
        [("source", v.uri.clone()), ("branch", v.branch.clone())]
    };
    let per_repo = |f: &mut Family,
                    name: &str,
                    value: &dyn Fn(&crate::operator::watch::View) -> String| {
        for v in &board.views {
            let labels = repo(v);
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            f.sample(name, &labels, value(v));
        }
    };
    f.head(
        "last_refresh_success_timestamp_seconds",
        "gauge",
        "When a refresh of the repository last succeeded, Unix seconds (0: never).",
    );
    per_repo(&mut f, "last_refresh_success_timestamp_seconds", &|v| {
        v.last_success.unwrap_or(0).to_string()
    });
    f.head(
        "refresh_up",
        "gauge",
        "Whether the last refresh of the repository succeeded (1) or failed (0).",
    );
    per_repo(&mut f, "refresh_up", &|v| {
        u8::from(v.last_success.is_some() && v.last_error.is_none()).to_string()
    });
    f.head(
        "refreshes_total",
        "counter",
        "Refreshes of the repository attempted (each one look at the branch tip).",
    );
    per_repo(&mut f, "refreshes_total", &|v| v.refreshes.to_string());
    f.head(
        "refresh_failures_total",
        "counter",
        "Refreshes of the repository that failed.",
    );
    per_repo(&mut f, "refresh_failures_total", &|v| {
        v.failures.to_string()
    });
    f.head(
        "full_reads_total",
        "counter",
        "Refreshes that found the branch tip moved and read the pools again.",
    );
    per_repo(&mut f, "full_reads_total", &|v| v.full_reads.to_string());
    f.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::watch::View;

    #[test]
    fn a_label_value_with_quotes_and_backslashes_is_escaped() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn dead_build_claims_are_counted_only_where_concourse_was_asked() {
        use crate::model::commit::Actor;
        use crate::operator::concourse::build::BuildState;
        use crate::operator::ops::status::{LockStatus, PoolStatus, Since, Status};
        let lock = |name: &str, dead: Option<bool>| LockStatus {
            name: crate::model::names::LockName::new(name).expect("a lock name"),
            state: LockState::Claimed,
            since: Since::Commit {
                commit: "c".into(),
                time: 1,
                utc: String::new(),
                by: Actor::default(),
                verb: crate::model::message::Verb::Claiming,
            },
            for_seconds: 1,
            build_status: dead.map(|dead| BuildState {
                dead,
                ..BuildState::unknown("x")
            }),
            shared: false,
            holders: Vec::new(),
        };
        let read = crate::operator::watch::Read {
            status: Status {
                branch: "main".into(),
                tip: "c".into(),
                now: 2,
                looked_back: 1,
                pools: vec![PoolStatus {
                    pool: "envs".into(),
                    hold: None,
                    locks: vec![
                        lock("a", Some(true)),
                        lock("b", Some(false)),
                        lock("c", None),
                    ],
                    line: Vec::new(),
                    line_unreadable: None,
                    line_file: Default::default(),
                    shares_unreadable: None,
                    shares: Default::default(),
                }],
            },
            history: Vec::new(),
            metadata: Default::default(),
            annotations: Default::default(),
        };
        let mut view = View {
            uri: "git://h/l.git".into(),
            branch: "main".into(),
            read: Some(read),
            ..View::default()
        };
        let board = |v: &View| Board {
            refresh: Some(30),
            views: vec![v.clone()],
        };
        assert!(!render(&board(&view), 3).contains("dead_build_claims"));
        view.build_status_at = Some(2);
        let text = render(&board(&view), 3);
        assert!(text.contains(
            "pool_resource_dead_build_claims{source=\"git://h/l.git\",branch=\"main\",pool=\"envs\"} 1"
        ), "{text}");
        assert!(text
            .contains("pool_resource_build_status_up{source=\"git://h/l.git\",branch=\"main\"} 1"));
    }

    #[test]
    fn the_line_gauges_count_the_tickets_live_at_render_time() {
        use crate::model::line::Line;
        use crate::operator::ops::status::{PoolStatus, Status};
        use crate::operator::watch::Read;
        let file = serde_json::json!({"tickets": [
            {"id": "a", "build": "b #1", "wants": {"acquire": 1}, "arrived": 100, "seq": 1, "renewed": 900, "lease": 300},
            {"id": "b", "build": "b #2", "wants": {"acquire": 1}, "arrived": 400, "seq": 2, "renewed": 1100, "lease": 300}
        ]});
        let pool = PoolStatus {
            pool: "envs".into(),
            hold: Some(crate::model::pool::Hold {
                by: "ops".into(),
                reason: "upgrade".into(),
                since: 500,
            }),
            locks: Vec::new(),
            line: Vec::new(),
            line_unreadable: None,
            line_file: Line::parse(file.to_string().as_bytes()),
            shares_unreadable: None,
            shares: Default::default(),
        };
        let board = Board {
            refresh: Some(30),
            views: vec![View {
                uri: "git://h/l.git".into(),
                branch: "main".into(),
                read: Some(Read {
                    status: Status {
                        branch: "main".into(),
                        tip: "c".into(),
                        now: 1000,
                        looked_back: 1,
                        pools: vec![pool],
                    },
                    history: Vec::new(),
                    metadata: Default::default(),
                    annotations: Default::default(),
                }),
                ..View::default()
            }],
        };
        let labels = r#"{source="git://h/l.git",branch="main",pool="envs"}"#;
        let text = render(&board, 1000);
        assert!(
            text.contains(&format!("pool_resource_waiters{labels} 2")),
            "{text}"
        );
        assert!(
            text.contains(&format!("pool_resource_oldest_wait_seconds{labels} 900")),
            "{text}"
        );
        assert!(
            text.contains(&format!("pool_resource_pool_held_seconds{labels} 500")),
            "{text}"
        );
        // At 1300 the first ticket's lease has lapsed.
        let text = render(&board, 1300);
        assert!(
            text.contains(&format!("pool_resource_waiters{labels} 1")),
            "{text}"
        );
        assert!(
            text.contains(&format!("pool_resource_oldest_wait_seconds{labels} 900")),
            "{text}"
        );
        let text = render(&board, 2000);
        assert!(
            text.contains(&format!("pool_resource_waiters{labels} 0")),
            "{text}"
        );
        assert!(
            text.contains(&format!("pool_resource_oldest_wait_seconds{labels} 0")),
            "{text}"
        );
        for name in ["waiters", "oldest_wait_seconds", "pool_held_seconds"] {
            assert!(
                text.contains(&format!("# TYPE pool_resource_{name} gauge")),
                "{text}"
            );
        }
    }

    #[test]
    fn a_repository_never_read_still_reports_its_refreshes() {
        let board = Board {
            refresh: Some(30),
            views: vec![View {
                uri: "git://h/l.git".into(),
                branch: "main".into(),
                refreshes: 3,
                failures: 3,
                last_error: Some("down".into()),
                ..View::default()
            }],
        };
        let text = render(&board, 100);
        assert!(text.contains(
            "pool_resource_refresh_failures_total{source=\"git://h/l.git\",branch=\"main\"} 3"
        ));
        assert!(
            text.contains("pool_resource_refresh_up{source=\"git://h/l.git\",branch=\"main\"} 0")
        );
        assert!(text.contains("# TYPE pool_resource_locks gauge"));
    }
}
