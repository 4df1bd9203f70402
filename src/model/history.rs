//! The history questions `check` and `in` ask, answered once, the way
//! `git log -- PATH` answers them.
//!
//! The Go resource asks git: `check` lists `git log --reverse REF~1..HEAD --
//! POOL`, `in` takes the lock from `git log -1 --name-only -- POOL` at the
//! version and calls a claim gone when `git log VERSION..HEAD -- LOCK` is not
//! empty. Both backends answer these questions here, from the same three
//! facts about a commit ([`Graph`]: its committer time, its parents, what is
//! at a path), so they give the same answers for one history, merges
//! included.
//!
//! What `git log` does with merges (its default history simplification,
//! which is what the Go resource gets):
//!
//! - commits are visited newest committer time first (ties in the order they
//!   were reached), and with a range `X..TIP` everything reachable from `X`
//!   is left out;
//! - a commit whose `PATH` equals that of one of its parents is TREESAME and
//!   not listed; if that parent is part of the walk (or is `X` itself), only
//!   that parent is followed, so a side branch merged without changing
//!   `PATH` is never looked at, and a merge that took `PATH` from its side
//!   branch is followed down that side branch only;
//! - a merge whose `PATH` differs from all its parents is listed and all its
//!   parents are followed;
//! - a root commit is listed if `PATH` exists in it.
//!
//! This is git's algorithm (revision.c: `limit_list`, `process_parents`,
//! `try_to_simplify_commit`, `still_interesting`), including the order in
//! which it visits commits of equal time and how far past the range it walks
//! to mark what is left out, so that the answers are git's; it was compared
//! with `git log` on random histories with merges, with and without equal
//! committer times.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};

use crate::error::Result;

/// What a walk needs to know about one commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    /// Committer time, seconds since the epoch.
    pub time: i64,
    /// The parents in order; `None` when they are not in the local copy of
    /// the history yet (the boundary of a shallow fetch).
    pub parents: Option<Vec<String>>,
}

/// A backend's view of the commit graph.
pub trait Graph {
    /// The facts about `commit`; `None` when the commit itself is not in
    /// the local copy of the history yet.
    fn facts(&mut self, commit: &str) -> Result<Option<Facts>>;

    /// What is at `path` in `commit`, as a value that is equal exactly when
    /// git would see no difference there (an object id and mode); `None`
    /// when nothing is.
    fn at_path(&mut self, commit: &str, path: &str) -> Result<Option<String>>;
}

/// Why a walk stopped without an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// It reached commits whose parents are not in the local copy yet:
    /// fetch more history and ask again.
    NeedsHistory,
    /// It visited more commits than it may.
    TooLong,
}

/// An answer, or why there is none yet.
pub type Walk<T> = std::result::Result<T, Stop>;

#[derive(Default)]
struct Flags {
    seen: bool,
    uninteresting: bool,
    /// The `X` of `X..TIP`: left out, but a parent a merge may follow.
    bottom: bool,
    treesame: bool,
    in_queue: bool,
}

/// A queued commit: newest first, then in the order queued (git's
/// `commit_list_insert_by_date`).
struct Queued {
    time: i64,
    seq: u64,
    id: String,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        self.time
            .cmp(&other.time)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

struct Walker<'g> {
    graph: &'g mut dyn Graph,
    path: &'g str,
    flags: HashMap<String, Flags>,
    /// Parents as git holds them: read when a commit is queued, cut down to
    /// the one followed when it is simplified.
    parents: HashMap<String, Option<Vec<String>>>,
    times: HashMap<String, i64>,
    queue: BinaryHeap<Queued>,
    queued_interesting: usize,
    seq: u64,
    visited: usize,
    limit: usize,
}

impl<'g> Walker<'g> {
    fn new(graph: &'g mut dyn Graph, path: &'g str, limit: usize) -> Walker<'g> {
        Walker {
            graph,
            path,
            flags: HashMap::new(),
            parents: HashMap::new(),
            times: HashMap::new(),
            queue: BinaryHeap::new(),
            queued_interesting: 0,
            seq: 0,
            visited: 0,
            limit,
        }
    }

    fn flag(&mut self, id: &str) -> &mut Flags {
        self.flags.entry(id.to_string()).or_default()
    }

    fn is(&self, id: &str, f: impl Fn(&Flags) -> bool) -> bool {
        self.flags.get(id).is_some_and(f)
    }

    /// Queues `id` unless it was queued before.
    fn push(&mut self, id: &str) -> Result<Walk<()>> {
        if self.is(id, |f| f.seen) {
            return Ok(Ok(()));
        }
        let Some(facts) = self.graph.facts(id)? else {
            return Ok(Err(Stop::NeedsHistory));
        };
        let f = self.flag(id);
        f.seen = true;
        f.in_queue = true;
        if !f.uninteresting {
            self.queued_interesting += 1;
        }
        self.parents.entry(id.to_string()).or_insert(facts.parents);
        self.times.insert(id.to_string(), facts.time);
        self.seq += 1;
        self.queue.push(Queued {
            time: facts.time,
            seq: self.seq,
            id: id.to_string(),
        });
        Ok(Ok(()))
    }

    fn pop(&mut self) -> Option<String> {
        let id = self.queue.pop()?.id;
        let f = self.flag(&id);
        f.in_queue = false;
        if !f.uninteresting {
            self.queued_interesting -= 1;
        }
        Some(id)
    }

    /// Marks `id` uninteresting, and everything below it that the walk has
    /// read so far (git's `mark_parents_uninteresting`).
    fn mark_uninteresting(&mut self, id: &str) {
        let mut stack = vec![id.to_string()];
        while let Some(c) = stack.pop() {
            let f = self.flag(&c);
            if f.uninteresting {
                continue;
            }
            f.uninteresting = true;
            if f.in_queue {
                self.queued_interesting -= 1;
            }
            if let Some(Some(ps)) = self.parents.get(&c) {
                stack.extend(ps.iter().cloned());
            }
        }
    }

    /// How many more left-out commits to walk before the range is done
    /// (git's `still_interesting`): while any queued commit could still be
    /// listed, or is no older than the last one listed (`date`), git keeps
    /// going, then walks [`SLOP`] more to mark what they leave out.
    fn still_interesting(&self, date: i64, slop: usize) -> usize {
        let Some(head) = self.queue.peek() else {
            return 0;
        };
        if date <= head.time || self.queued_interesting > 0 {
            SLOP
        } else {
            slop - 1
        }
    }

    /// Whether `parent` counts for simplification (git's `relevant_commit`).
    fn relevant(&self, parent: &str) -> bool {
        !self.is(parent, |f| f.uninteresting) || self.is(parent, |f| f.bottom)
    }

    /// Decides whether `id` is TREESAME and which parents to follow
    /// (git's `try_to_simplify_commit`).
    fn simplify(&mut self, id: &str, parents: Vec<String>) -> Result<Vec<String>> {
        let here = self.graph.at_path(id, self.path)?;
        if parents.is_empty() {
            self.flag(id).treesame = here.is_none();
            return Ok(parents);
        }
        let (mut relevant_parents, mut relevant_change, mut irrelevant_change) = (0, false, false);
        for p in &parents {
            let relevant = self.relevant(p);
            if relevant {
                relevant_parents += 1;
            }
            if self.graph.at_path(p, self.path)? == here {
                if relevant {
                    self.flag(id).treesame = true;
                    return Ok(vec![p.clone()]);
                }
            } else if relevant {
                relevant_change = true;
            } else {
                irrelevant_change = true;
            }
        }
        self.flag(id).treesame = if relevant_parents > 0 {
            !relevant_change
        } else {
            !irrelevant_change
        };
        Ok(parents)
    }
}

/// How many left-out commits git walks past the range (its `SLOP`).
const SLOP: usize = 5;

/// The commits `git log [EXCLUDE..]TIP -- PATH` lists, newest first, at most
/// `max` of them; walking at most `limit` commits.
pub fn log(
    graph: &mut dyn Graph,
    tip: &str,
    exclude: Option<&str>,
    path: &str,
    max: Option<usize>,
    limit: usize,
) -> Result<Walk<Vec<String>>> {
    let mut w = Walker::new(graph, path, limit);
    // As git queues `X..TIP`: X first (it wins ties), marked left out.
    if let Some(x) = exclude {
        let f = w.flag(x);
        f.uninteresting = true;
        f.bottom = true;
        if let Err(stop) = w.push(x)? {
            return Ok(Err(stop));
        }
        // git marks the range's bottom's parents before walking at all
        // (`handle_commit`), so a merge reached before the bottom already
        // sees them as left out.
        if let Some(Some(parents)) = w.parents.get(x).cloned() {
            for p in &parents {
                w.mark_uninteresting(p);
            }
        }
    }
    if let Err(stop) = w.push(tip)? {
        return Ok(Err(stop));
    }
    let mut listed = Vec::new();
    let mut count = 0;
    let (mut date, mut slop) = (i64::MAX, SLOP);
    while let Some(id) = w.pop() {
        w.visited += 1;
        if w.visited > w.limit {
            return Ok(Err(Stop::TooLong));
        }
        let Some(parents) = w.parents.get(&id).cloned().flatten() else {
            return Ok(Err(Stop::NeedsHistory));
        };
        if w.is(&id, |f| f.uninteresting) {
            for p in &parents {
                w.mark_uninteresting(p);
                if let Err(stop) = w.push(p)? {
                    return Ok(Err(stop));
                }
                // Read just now: what is below it is left out too.
                if let Some(Some(grandparents)) = w.parents.get(p).cloned() {
                    for g in &grandparents {
                        w.mark_uninteresting(g);
                    }
                }
            }
            slop = w.still_interesting(date, slop);
            if slop == 0 {
                break;
            }
            continue;
        }
        let follow = w.simplify(&id, parents)?;
        w.parents.insert(id.clone(), Some(follow.clone()));
        for p in &follow {
            if let Err(stop) = w.push(p)? {
                return Ok(Err(stop));
            }
        }
        // Without a range nothing listed can be left out later, so git
        // stops at `max`; with one, the whole range is walked first.
        if exclude.is_none() && !w.is(&id, |f| f.treesame) {
            count += 1;
        }
        date = w.times.get(&id).copied().unwrap_or(i64::MAX);
        listed.push(id);
        if max.is_some_and(|m| count >= m) {
            break;
        }
    }
    let mut out = shown(&w, &listed);
    if let Some(m) = max {
        out.truncate(m);
    }
    Ok(Ok(out))
}

fn shown(w: &Walker<'_>, listed: &[String]) -> Vec<String> {
    listed
        .iter()
        .filter(|id| !w.is(id, |f| f.uninteresting || f.treesame))
        .cloned()
        .collect()
}

/// Whether `target` is `tip` or one of its ancestors (by any parent),
/// walking at most `limit` commits.
pub fn is_reachable(
    graph: &mut dyn Graph,
    tip: &str,
    target: &str,
    limit: usize,
) -> Result<Walk<bool>> {
    let mut seen = HashSet::from([tip.to_string()]);
    let mut queue = VecDeque::from([tip.to_string()]);
    while let Some(id) = queue.pop_front() {
        if id == target {
            return Ok(Ok(true));
        }
        if seen.len() > limit {
            return Ok(Err(Stop::TooLong));
        }
        let Some(Facts {
            parents: Some(parents),
            ..
        }) = graph.facts(&id)?
        else {
            return Ok(Err(Stop::NeedsHistory));
        };
        for p in parents {
            if seen.insert(p.clone()) {
                queue.push_back(p);
            }
        }
    }
    Ok(Ok(false))
}

/// `check`: the commits that touched `pool`, oldest first, from `since`
/// (inclusive, if it touched the pool) to `tip`, as `git log --reverse
/// SINCE~1..TIP -- POOL` lists them (`--reverse TIP` when `since` is a root
/// commit). Without `since`, or when it is not on the branch, or is too far
/// back to tell: the last commit that touched the pool.
pub fn versions(
    graph: &mut dyn Graph,
    tip: &str,
    since: Option<&str>,
    pool: &str,
    limit: usize,
) -> Result<Walk<Vec<String>>> {
    let from = match since {
        None => None,
        Some(s) => match is_reachable(graph, tip, s, limit)? {
            Ok(true) => match graph.facts(s)? {
                Some(Facts {
                    parents: Some(parents),
                    ..
                }) => Some(parents.into_iter().next()),
                _ => return Ok(Err(Stop::NeedsHistory)),
            },
            Ok(false) | Err(Stop::TooLong) => None,
            Err(Stop::NeedsHistory) => return Ok(Err(Stop::NeedsHistory)),
        },
    };
    let listed = match from {
        Some(exclude) => match log(graph, tip, exclude.as_deref(), pool, None, limit)? {
            Err(Stop::TooLong) => log(graph, tip, None, pool, Some(1), limit)?,
            other => other,
        },
        None => log(graph, tip, None, pool, Some(1), limit)?,
    };
    Ok(listed.map(|mut v| {
        v.reverse();
        v
    }))
}

/// `in`: the most recent commit at or before `at` that touched `path`, as
/// `git log -1 -- PATH` run at `at` finds it.
pub fn last_change(
    graph: &mut dyn Graph,
    at: &str,
    path: &str,
    limit: usize,
) -> Result<Walk<Option<String>>> {
    Ok(log(graph, at, None, path, Some(1), limit)?.map(|v| v.into_iter().next()))
}

/// `in`: whether `git log SINCE..TIP -- PATH` lists anything.
pub fn changed_since(
    graph: &mut dyn Graph,
    tip: &str,
    since: &str,
    path: &str,
    limit: usize,
) -> Result<Walk<bool>> {
    Ok(log(graph, tip, Some(since), path, None, limit)?.map(|v| !v.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A history in memory: commit → (time, parents, content at the path).
    #[derive(Default)]
    struct Mem {
        commits: HashMap<String, (i64, Vec<String>, Option<String>)>,
        /// Commits whose parents are "not fetched yet".
        shallow: HashSet<String>,
        asked: usize,
    }

    impl Mem {
        fn add(&mut self, id: &str, time: i64, parents: &[&str], pool: Option<&str>) {
            self.commits.insert(
                id.into(),
                (
                    time,
                    parents.iter().map(|p| p.to_string()).collect(),
                    pool.map(String::from),
                ),
            );
        }
    }

    impl Graph for Mem {
        fn facts(&mut self, commit: &str) -> Result<Option<Facts>> {
            self.asked += 1;
            Ok(self.commits.get(commit).map(|(time, parents, _)| Facts {
                time: *time,
                parents: (!self.shallow.contains(commit)).then(|| parents.clone()),
            }))
        }
        fn at_path(&mut self, commit: &str, path: &str) -> Result<Option<String>> {
            assert_eq!(path, "pool");
            Ok(self.commits.get(commit).and_then(|c| c.2.clone()))
        }
    }

    /// A lock branch with a hand-made branch merged into it:
    ///
    /// ```text
    /// r(p1) - a(p2) - b(p2) ------------- m(p4) - t(p5)
    ///              \                    /
    ///               s1(p2) - s2(p3) - s3(p3)
    /// ```
    /// `m` takes the side branch's pool and changes it again (p4 differs
    /// from both parents): listed, both parents followed.
    fn merged() -> Mem {
        let mut g = Mem::default();
        g.add("r", 1, &[], Some("p1"));
        g.add("a", 2, &["r"], Some("p2"));
        g.add("b", 3, &["a"], Some("p2"));
        g.add("s1", 4, &["a"], Some("p2"));
        g.add("s2", 5, &["s1"], Some("p3"));
        g.add("s3", 6, &["s2"], Some("p3"));
        g.add("m", 7, &["b", "s3"], Some("p4"));
        g.add("t", 8, &["m"], Some("p5"));
        g
    }

    fn all(g: &mut Mem, tip: &str, exclude: Option<&str>) -> Vec<String> {
        log(g, tip, exclude, "pool", None, 100).unwrap().unwrap()
    }

    #[test]
    fn a_merge_that_changed_the_pool_is_listed_with_both_sides() {
        let mut g = merged();
        assert_eq!(all(&mut g, "t", None), ["t", "m", "s2", "a", "r"]);
        assert_eq!(all(&mut g, "t", Some("s2")), ["t", "m"]);
        // `s2~1..t`: the side branch from s2 on, and nothing of the main line.
        assert_eq!(all(&mut g, "t", Some("s1")), ["t", "m", "s2"]);
        assert_eq!(
            versions(&mut g, "t", Some("s2"), "pool", 100).unwrap(),
            Ok(vec!["s2".into(), "m".into(), "t".into()])
        );
    }

    #[test]
    fn a_merge_that_kept_one_parents_pool_follows_only_that_parent() {
        // m keeps the main line's pool: the side branch is never looked at.
        let mut g = merged();
        g.add("m", 7, &["b", "s3"], Some("p2"));
        assert_eq!(all(&mut g, "t", None), ["t", "a", "r"]);
        // m took the side branch's pool: only the side branch is followed,
        // and the main line's commits are not listed.
        let mut g = merged();
        g.add("b", 3, &["a"], Some("pb"));
        g.add("m", 7, &["b", "s3"], Some("p3"));
        assert_eq!(all(&mut g, "t", None), ["t", "s2", "a", "r"]);
    }

    #[test]
    fn a_range_whose_bottom_a_merge_kept_lists_the_range_only() {
        // `b..t`, m TREESAME to b (the bottom, relevant): s2 is not listed.
        let mut g = merged();
        g.add("m", 7, &["b", "s3"], Some("p2"));
        assert_eq!(all(&mut g, "t", Some("b")), ["t"]);
        // m took the side branch's pool: the side branch is followed down
        // to where it left the range's part of the main line.
        let mut g = merged();
        g.add("m", 7, &["b", "s3"], Some("p3"));
        assert_eq!(all(&mut g, "t", Some("b")), ["t", "s2"]);
    }

    #[test]
    fn the_last_change_and_changed_since_use_the_same_walk() {
        let mut g = merged();
        assert_eq!(
            last_change(&mut g, "s3", "pool", 100).unwrap(),
            Ok(Some("s2".into()))
        );
        assert_eq!(
            last_change(&mut g, "b", "pool", 100).unwrap(),
            Ok(Some("a".into()))
        );
        assert_eq!(
            changed_since(&mut g, "t", "m", "pool", 100).unwrap(),
            Ok(true)
        );
        g.add("t", 8, &["m"], Some("p4"));
        assert_eq!(
            changed_since(&mut g, "t", "m", "pool", 100).unwrap(),
            Ok(false)
        );
        assert_eq!(
            changed_since(&mut g, "t", "b", "pool", 100).unwrap(),
            Ok(true),
            "the side branch merged after b changed it"
        );
    }

    #[test]
    fn check_from_an_unknown_or_root_version() {
        let mut g = merged();
        let latest = Ok(vec!["t".to_string()]);
        assert_eq!(versions(&mut g, "t", None, "pool", 100).unwrap(), latest);
        assert_eq!(
            versions(&mut g, "t", Some("nowhere"), "pool", 100).unwrap(),
            latest
        );
        g.add("other", 9, &["r"], Some("p9"));
        assert_eq!(
            versions(&mut g, "t", Some("other"), "pool", 100).unwrap(),
            latest,
            "a commit that is not on the branch is unknown"
        );
        assert_eq!(
            versions(&mut g, "t", Some("r"), "pool", 100).unwrap(),
            Ok(["r", "a", "s2", "m", "t"].map(String::from).to_vec())
        );
        // A version that did not touch the pool is not listed itself.
        assert_eq!(
            versions(&mut g, "t", Some("b"), "pool", 100).unwrap(),
            Ok(["s2", "m", "t"].map(String::from).to_vec())
        );
    }

    #[test]
    fn walks_stop_at_the_limit_and_at_unfetched_history() {
        let mut g = merged();
        assert_eq!(
            log(&mut g, "t", None, "pool", None, 3).unwrap(),
            Err(Stop::TooLong)
        );
        // Too long to tell from a version: the latest, as for an unknown one.
        assert_eq!(
            versions(&mut g, "t", Some("r"), "pool", 3).unwrap(),
            Ok(vec!["t".to_string()])
        );
        g.shallow.insert("m".into());
        assert_eq!(
            log(&mut g, "t", None, "pool", None, 100).unwrap(),
            Err(Stop::NeedsHistory)
        );
        assert_eq!(
            last_change(&mut g, "t", "pool", 100).unwrap(),
            Ok(Some("t".into())),
            "the answer above the boundary needs nothing below it"
        );
        assert_eq!(
            versions(&mut g, "t", Some("a"), "pool", 100).unwrap(),
            Err(Stop::NeedsHistory)
        );
    }

    #[test]
    fn the_bottoms_parents_are_left_out_before_the_walk_reaches_them() {
        // M (newer than the bottom X) merges X and X's own parent Q, taking
        // Q's pool: Q is already left out, so M differs from its only
        // relevant parent and is listed (git: `X..T` lists T and M).
        let mut g = Mem::default();
        g.add("r", 100, &[], Some("p0"));
        g.add("q", 101, &["r"], Some("q"));
        g.add("p1", 102, &["r"], Some("p1"));
        g.add("x", 103, &["p1", "q"], Some("x"));
        g.add("m", 104, &["x", "q"], Some("q"));
        g.add("t", 105, &["m"], Some("t"));
        assert_eq!(all(&mut g, "t", Some("x")), ["t", "m"]);
    }

    #[test]
    fn with_equal_times_the_walk_goes_on_until_the_left_out_part_is_marked() {
        // All at one second: the root is reached through T before the walk
        // down from X marks it, and git walks on (its SLOP) until it does.
        let mut g = Mem::default();
        g.add("r", 100, &[], Some("r"));
        for (c, p) in [("y", "r"), ("z", "y"), ("a", "z"), ("b", "a"), ("x", "b")] {
            g.add(c, 100, &[p], Some(c));
        }
        g.add("t", 100, &["x", "r"], Some("t"));
        assert_eq!(all(&mut g, "t", Some("x")), ["t"]);
    }

    #[test]
    fn a_range_walks_little_beyond_its_bottom() {
        let mut g = Mem::default();
        g.add("c0", 0, &[], Some("p0"));
        for i in 1..500 {
            g.add(
                &format!("c{i}"),
                i,
                &[&format!("c{}", i - 1)],
                Some(&format!("p{i}")),
            );
        }
        assert_eq!(all(&mut g, "c499", Some("c497")), ["c499", "c498"]);
        assert!(g.asked < 10, "asked about {} commits", g.asked);
    }
}
