//! Asking Concourse whether the build that holds a lock is still alive.
//!
//! A lock leaks when its build dies without releasing it; only Concourse
//! knows whether it did. [`build`] is the model (the build JSON, which
//! build a claim names, what `pool reap --dead` decides), [`client`] the
//! API client with its credentials, [`flyrc`] reads `fly`'s targets, and
//! [`Builds`] here asks about the claims of a status, once per build: an
//! ended build never changes, so its answer is kept; a running one is asked
//! again each round (each `pool serve` round).
//!
//! The builds of a round are asked in parallel, by at most [`WORKERS`]
//! threads, and all within the round's [`Bounds`]: a Concourse that never
//! answers costs the round its time budget, after which what was not
//! answered reads `unknown (Concourse did not answer within Ns)`. The lock
//! state never waits on it for longer.

pub mod build;
pub mod client;
pub mod flyrc;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::model::commit::Actor;
use crate::model::names::LockState;
use crate::operator::ops::history::Interval;
use crate::operator::ops::status::{Since, Status};
use crate::process::log::Log;
use crate::process::signal::Interrupt;
use build::{BuildRef, BuildState, Lookup};
use client::{Access, Bounds, Client, Deadline, Failure};

pub use build::recorded;

/// The most requests in flight at once.
pub const WORKERS: usize = 4;

/// How long after its deadline a round still waits for a worker that is
/// about to report (a timed-out request returns a little after it).
const REPORT_GRACE: Duration = Duration::from_millis(500);

/// The builds of claims, asked of Concourse and remembered.
pub struct Builds {
    client: Arc<Client>,
    bounds: Bounds,
    /// Builds that ended: their answer never changes.
    ended: HashMap<BuildRef, Lookup>,
    /// This round's answers about builds still running or unknown (404).
    round: HashMap<BuildRef, Lookup>,
    /// This round's failures, per build: the reason its status is unknown.
    unanswered: HashMap<BuildRef, String>,
    /// This round's failures, per Concourse URL: one failure answers for
    /// every other build of that Concourse until the next round.
    failed: BTreeMap<String, String>,
    /// Build questions asked, in all rounds.
    asked: u64,
}

impl Builds {
    /// The builds API configured by `--concourse-url`, `--fly-target` and
    /// the environment (see [`Access::configure`]); `None` when nothing is.
    pub fn configure(
        url: Option<&str>,
        fly_target: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
        log: &Log,
        interrupt: &Interrupt,
    ) -> Result<Option<Builds>> {
        match Access::configure(url, fly_target, env)? {
            Some(access) => Ok(Some(Builds::new(Client::new(access, log, interrupt)?))),
            None => Ok(None),
        }
    }

    /// Asks through `client`, within [`Bounds::SHOW`] until told otherwise.
    pub fn new(client: Client) -> Builds {
        Builds {
            client: Arc::new(client),
            bounds: Bounds::SHOW,
            ended: HashMap::new(),
            round: HashMap::new(),
            unanswered: HashMap::new(),
            failed: BTreeMap::new(),
            asked: 0,
        }
    }

    /// Asks each round within `bounds`.
    pub fn set_bounds(&mut self, bounds: Bounds) {
        self.bounds = bounds;
    }

    /// The access the client uses.
    pub fn access(&self) -> &Access {
        self.client.access()
    }

    /// Starts a new round: running builds and failures are asked again.
    pub fn next_round(&mut self) {
        self.round.clear();
        self.unanswered.clear();
        self.failed.clear();
    }

    /// Build questions asked so far.
    pub fn asked(&self) -> u64 {
        self.asked
    }

    /// This round's failures, one line per Concourse.
    pub fn failures(&self) -> Vec<String> {
        self.failed.values().cloned().collect()
    }

    /// The build a claim by `by` names, asking the Concourse given on the
    /// command line (or by the fly target) if any: `None` for an
    /// operator's claim, the reason when no build can be found.
    pub fn find(&self, by: &Actor) -> Option<std::result::Result<BuildRef, String>> {
        if by.operator.is_some() {
            return None;
        }
        Some(build::find(
            recorded(by),
            self.client.access().url.as_deref(),
        ))
    }

    /// Asks about every build of `refs` not known yet this round, in
    /// parallel and within the round's bounds, and remembers the answers.
    /// Returns the failures of this call: a build asked about and not
    /// answered, with the error (one per Concourse: the others of a
    /// Concourse that failed are not asked).
    pub fn ask(&mut self, refs: &[BuildRef]) -> Vec<(BuildRef, Failure)> {
        let mut todo: Vec<BuildRef> = Vec::new();
        for r in refs {
            let known = self.ended.contains_key(r)
                || self.round.contains_key(r)
                || self.unanswered.contains_key(r)
                || self.failed.contains_key(&r.concourse)
                || todo.contains(r);
            if !known {
                todo.push(r.clone());
            }
        }
        if todo.is_empty() {
            return Vec::new();
        }
        self.client.bind_first(&todo[0].concourse);
        let deadline = self.bounds.start();
        let answers = ask_parallel(&self.client, todo.clone(), deadline);
        let mut failures = Vec::new();
        for r in todo {
            let answer = match answers.get(&r) {
                Some(Asked::Answer(a)) => {
                    self.asked += 1;
                    a
                }
                Some(Asked::Skipped(reason)) => {
                    self.unanswered.insert(r, reason.clone());
                    continue;
                }
                None => {
                    // Its worker did not report in time (it waited on
                    // another's session, say): no answer either.
                    let what = format!("asking Concourse about {}", r.describe());
                    let f = Failure::no_answer(&what, &r.api_url(), &deadline, "no answer");
                    self.note_failure(&r, &f);
                    failures.push((r, f));
                    continue;
                }
            };
            match answer {
                Ok(l @ Lookup::Found(b)) if !b.status.is_running() => {
                    self.ended.insert(r, l.clone());
                }
                Ok(l) => {
                    self.round.insert(r, l.clone());
                }
                Err(_) => {}
            }
        }
        let mut answers = answers;
        for (r, asked) in answers.drain() {
            if let Asked::Answer(Err(f)) = asked {
                self.note_failure(&r, &f);
                failures.push((r, f));
            }
        }
        failures.sort_by(|a, b| a.0.cmp(&b.0));
        failures
    }

    fn note_failure(&mut self, r: &BuildRef, f: &Failure) {
        self.unanswered.insert(r.clone(), f.reason.clone());
        self.failed
            .entry(r.concourse.clone())
            .or_insert_with(|| f.error.chain());
    }

    /// What Concourse said of every build of `refs`, asked within the
    /// bounds: all of them, or the first error (naming the URL that did
    /// not answer). For `pool reap --dead`, which acts on all or nothing.
    pub fn lookup_all(&mut self, refs: &[BuildRef]) -> Result<BTreeMap<BuildRef, Lookup>> {
        let failures = self.ask(refs);
        if let Some((_, f)) = failures.into_iter().next() {
            return Err(*f.error);
        }
        let mut all = BTreeMap::new();
        for r in refs {
            match self.ended.get(r).or_else(|| self.round.get(r)) {
                Some(l) => {
                    all.insert(r.clone(), l.clone());
                }
                None => {
                    let why = self
                        .unanswered
                        .get(r)
                        .or_else(|| self.failed.get(&r.concourse))
                        .cloned()
                        .unwrap_or_else(|| "not asked".into());
                    return Err(Error::ConcourseApi {
                        what: format!("asking Concourse about {}", r.describe()),
                        url: client::shown(&r.api_url()),
                        detail: why,
                    });
                }
            }
        }
        Ok(all)
    }

    /// The state of the build that made a claim, for people, from this
    /// round's answers ([`Builds::ask`] first): `None` for an operator's
    /// claim; a failure is an `unknown` state saying why.
    pub fn known_state(&self, by: &Actor) -> Option<BuildState> {
        let r = match self.find(by)? {
            Ok(r) => r,
            Err(why) => return Some(BuildState::unknown(why)),
        };
        if let Some(l) = self.ended.get(&r).or_else(|| self.round.get(&r)) {
            if let Lookup::Found(b) = l {
                if let Some(why) = build::mismatch(recorded(by), b) {
                    return Some(BuildState::unknown(why));
                }
            }
            return Some(BuildState::of(l));
        }
        let why = self
            .unanswered
            .get(&r)
            .or_else(|| self.failed.get(&r.concourse))
            .cloned()
            .unwrap_or_else(|| "not asked yet".into());
        Some(BuildState::unknown(why))
    }

    /// The states of the builds of `holders`, asked about in parallel
    /// within the round's bounds.
    pub fn states(&mut self, holders: &[&Actor]) -> Vec<Option<BuildState>> {
        let refs: Vec<BuildRef> = holders
            .iter()
            .filter_map(|by| self.find(by).and_then(|r| r.ok()))
            .collect();
        self.ask(&refs);
        holders.iter().map(|by| self.known_state(by)).collect()
    }

    /// Sets the `build_status` of every claimed lock of `st`.
    pub fn annotate_status(&mut self, st: &mut Status) {
        let holders: Vec<Actor> = st
            .pools
            .iter()
            .flat_map(|p| p.locks.iter())
            // A lock held shared: its claim names the first reader, who may
            // be gone; its holders are listed instead.
            .filter(|l| l.state == LockState::Claimed && !l.shared)
            .filter_map(|l| match &l.since {
                Since::Commit { by, .. } => Some(by.clone()),
                Since::Before { .. } => None,
            })
            .collect();
        let refs: Vec<&Actor> = holders.iter().collect();
        self.states(&refs);
        for p in &mut st.pools {
            for l in p
                .locks
                .iter_mut()
                .filter(|l| l.state == LockState::Claimed && !l.shared)
            {
                if let Since::Commit { by, .. } = &l.since {
                    l.build_status = self.known_state(by);
                }
            }
        }
    }

    /// Sets the `build_status` of the claims of `history` still held.
    pub fn annotate_history(&mut self, history: &mut [Interval]) {
        let holders: Vec<Actor> = history
            .iter()
            .filter(|i| i.released_at.is_none())
            .map(|i| i.claimed_by.clone())
            .collect();
        let refs: Vec<&Actor> = holders.iter().collect();
        self.states(&refs);
        for i in history.iter_mut().filter(|i| i.released_at.is_none()) {
            i.build_status = self.known_state(&i.claimed_by);
        }
    }
}

/// What became of one question in [`ask_parallel`].
enum Asked {
    /// Asked: the answer or why there is none.
    Answer(std::result::Result<Lookup, Failure>),
    /// Not asked: the time was up, or another build of the same Concourse
    /// failed first; the reason its status is unknown.
    Skipped(String),
}

/// Asks about `todo` with at most [`WORKERS`] threads, returning what was
/// reported by `deadline` (and a little grace). A worker still waiting
/// then is left to end on its own: its requests end by the deadline, and
/// what it reports later goes nowhere.
fn ask_parallel(
    client: &Arc<Client>,
    todo: Vec<BuildRef>,
    deadline: Deadline,
) -> HashMap<BuildRef, Asked> {
    let workers = todo.len().min(WORKERS);
    let queue = Arc::new(Mutex::new(VecDeque::from(todo)));
    // Per Concourse: the reason of its first failure this call.
    let failed: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let (tx, rx) = mpsc::channel::<(BuildRef, Asked)>();
    for _ in 0..workers {
        let (client, queue, failed, tx) =
            (client.clone(), queue.clone(), failed.clone(), tx.clone());
        // A thread that cannot start leaves its share to the others; with
        // none at all, every build reads "did not answer".
        let _ = std::thread::Builder::new()
            .name("concourse-lookup".into())
            .spawn(move || loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                let Some(r) = next else { return };
                let same = failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&r.concourse)
                    .cloned();
                let asked = match same {
                    Some(reason) => Asked::Skipped(reason),
                    None if deadline.passed() => Asked::Skipped(deadline.no_answer()),
                    None => {
                        let answer = client.build(&r, &deadline);
                        if let Err(f) = &answer {
                            failed
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .entry(r.concourse.clone())
                                .or_insert_with(|| f.reason.clone());
                        }
                        Asked::Answer(answer)
                    }
                };
                if tx.send((r, asked)).is_err() {
                    return;
                }
            });
    }
    drop(tx);
    let mut answers = HashMap::new();
    loop {
        let wait = deadline.remaining() + REPORT_GRACE;
        match rx.recv_timeout(wait) {
            Ok((r, asked)) => {
                answers.insert(r, asked);
            }
            Err(_) => break,
        }
    }
    answers
}

/// Warnings for the failures of a round, naming what could not be shown.
pub fn warnings(builds: &Builds) -> Vec<String> {
    builds
        .failures()
        .into_iter()
        .map(|why| format!("build status unknown: {why}"))
        .collect()
}
