//! What Concourse says of a build, and which build a claim names: no I/O.
//!
//! The JSON is Concourse's `atc.Build` (`atc/build.go`, presented by
//! `atc/api/present/build.go`); every field but `id`, `name` and `status`
//! is optional, since 6.x lacks most of them and Concourse omits the empty
//! ones. A claim names its build by the trailers this resource writes
//! (`Pool-Resource-Build-Id`, `Pool-Resource-Concourse`) or, for a claim the
//! Go resource made, by its `Build URL:` line alone, which maps onto the
//! job-build route with its instance-vars query unchanged (the web UI, the
//! `BUILD_URL` variable and the API all speak the same `vars.K=V` form).
//! [`judge`] decides what `pool reap --dead` does with a claim,
//! [`judge_ticket`] with a waiting-room ticket, whose build [`waiting`]
//! names by its `build_id` and `url` (the Concourse is the part of the URL
//! before `/teams/` or `/builds/`, as for a Go-resource claim).

use serde::{Deserialize, Serialize};

use crate::model::commit::Actor;
use crate::model::duration::ago;
use crate::model::line::Ticket;
use crate::model::shares::Holder;

/// A build's status, `atc.BuildStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildStatus {
    /// Created, not yet scheduled.
    Pending,
    /// Running.
    Started,
    /// Ended well.
    Succeeded,
    /// Ended with a failed step.
    Failed,
    /// Ended with an error of Concourse's (a lost worker, say).
    Errored,
    /// Ended by someone's abort.
    Aborted,
}

impl BuildStatus {
    /// The word Concourse uses.
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Pending => "pending",
            BuildStatus::Started => "started",
            BuildStatus::Succeeded => "succeeded",
            BuildStatus::Failed => "failed",
            BuildStatus::Errored => "errored",
            BuildStatus::Aborted => "aborted",
        }
    }

    /// Still running (`atc.Build.IsRunning`): pending or started.
    pub fn is_running(self) -> bool {
        matches!(self, BuildStatus::Pending | BuildStatus::Started)
    }

    /// Ended without succeeding: the build cannot release what it holds.
    pub fn is_dead(self) -> bool {
        matches!(
            self,
            BuildStatus::Failed | BuildStatus::Errored | BuildStatus::Aborted
        )
    }
}

/// The fields of `atc.Build` this resource reads; the rest are ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Build {
    /// The build id, unique within one Concourse.
    pub id: i64,
    /// The build name: `7`, or `7.1` for a rerun.
    pub name: String,
    /// Its status.
    pub status: BuildStatus,
    /// The team.
    #[serde(default)]
    pub team_name: String,
    /// The job; absent for one-off builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// The pipeline; absent for one-off builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_name: Option<String>,
    /// When it started, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<i64>,
    /// When it ended, Unix seconds; absent while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<i64>,
}

/// What the API said of a build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The build.
    Found(Build),
    /// 404: Concourse does not know it (any more). Concourse answers 404
    /// before it checks credentials, so this is never a disguised 401.
    Missing,
}

/// Where to find a build in the API.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// `GET /api/v1/builds/:build_id`.
    Id(u64),
    /// `GET /api/v1/teams/:team/pipelines/:pipeline/jobs/:job/builds/:name`,
    /// each segment as the build URL had it (percent-encoded where needed),
    /// and the instance-vars part of its query (`vars.K=V&...`, or empty).
    Job {
        /// The team.
        team: String,
        /// The pipeline.
        pipeline: String,
        /// The job.
        job: String,
        /// The build name.
        name: String,
        /// The `vars` and `vars.*` query parameters, as in the URL.
        vars: String,
    },
}

/// A claim's build: which Concourse, and where in its API.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BuildRef {
    /// The Concourse's URL, without a trailing `/`.
    pub concourse: String,
    /// The build within it.
    pub target: Target,
}

impl BuildRef {
    /// The API path (and query) of the build.
    pub fn api_path(&self) -> String {
        match &self.target {
            Target::Id(id) => format!("/api/v1/builds/{id}"),
            Target::Job {
                team,
                pipeline,
                job,
                name,
                vars,
            } => {
                let mut path =
                    format!("/api/v1/teams/{team}/pipelines/{pipeline}/jobs/{job}/builds/{name}");
                if !vars.is_empty() {
                    path.push('?');
                    path.push_str(vars);
                }
                path
            }
        }
    }

    /// The whole API URL.
    pub fn api_url(&self) -> String {
        format!("{}{}", self.concourse, self.api_path())
    }

    /// The build in a few words: `build 42`, `main/app/deploy #7`.
    pub fn describe(&self) -> String {
        match &self.target {
            Target::Id(id) => format!("build {id}"),
            Target::Job {
                team,
                pipeline,
                job,
                name,
                vars,
            } => {
                let vars = if vars.is_empty() {
                    String::new()
                } else {
                    format!("?{}", percent_decode(vars))
                };
                format!(
                    "{}/{}{vars}/{} #{}",
                    percent_decode(team),
                    percent_decode(pipeline),
                    percent_decode(job),
                    percent_decode(name)
                )
            }
        }
    }
}

/// What a claim's commit says of its build.
#[derive(Clone, Copy, Debug, Default)]
pub struct Recorded<'a> {
    /// Trailer `Pool-Resource-Build-Id`.
    pub build_id: Option<&'a str>,
    /// The `Build URL:` line.
    pub build_url: Option<&'a str>,
    /// Trailer `Pool-Resource-Concourse` (`ATC_EXTERNAL_URL`).
    pub concourse: Option<&'a str>,
}

/// Finds the build a claim names, asking `concourse` (`--concourse-url`, or
/// a fly target's `api`) if given, else the Concourse the claim recorded
/// (its trailer, else the part of its build URL before `/teams/` or
/// `/builds/`). A build id is preferred: it names a rerun exactly. The
/// error says why there is none.
pub fn find(recorded: Recorded<'_>, concourse: Option<&str>) -> Result<BuildRef, String> {
    let url = recorded.build_url.map(parse_build_url);
    let base = concourse
        .map(trim_base)
        .or_else(|| recorded.concourse.map(trim_base))
        .or_else(|| {
            url.as_ref()
                .and_then(|u| u.as_ref().ok())
                .map(|u| u.0.clone())
        });
    let Some(base) = base else {
        return Err(match (recorded.build_id, recorded.build_url) {
            (None, None) => "no build recorded".into(),
            (_, Some(u)) => format!("build URL {u:?} is not a Concourse build page"),
            (Some(_), None) => "no Concourse URL recorded: give --concourse-url".into(),
        });
    };
    if !is_http(&base) {
        return Err(format!("Concourse URL {base:?} is not http(s)"));
    }
    if let Some(id) = recorded.build_id.and_then(|i| i.trim().parse::<u64>().ok()) {
        return Ok(BuildRef {
            concourse: base,
            target: Target::Id(id),
        });
    }
    match url {
        Some(Ok((_, target))) => Ok(BuildRef {
            concourse: base,
            target,
        }),
        Some(Err(why)) => Err(why),
        None => Err("no build recorded".into()),
    }
}

fn trim_base(url: &str) -> String {
    url.trim().trim_end_matches('/').to_string()
}

fn is_http(url: &str) -> bool {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    lower.starts_with("https://") || lower.starts_with("http://")
}

/// A build page URL as its Concourse and API target:
/// `BASE/teams/T/pipelines/P/jobs/J/builds/N[?vars...]` (what the web UI
/// shows, the Go resource records and `BUILD_URL` holds) or `BASE/builds/ID`
/// (a one-off build, and `BUILD_URL_SHORT`).
pub fn parse_build_url(url: &str) -> Result<(String, Target), String> {
    let bad = || format!("build URL {url:?} is not a Concourse build page");
    let url = url.trim();
    if !is_http(url) {
        return Err(bad());
    }
    let url = url.split('#').next().unwrap_or(url);
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let host_end = path
        .find("://")
        .map(|i| i + 3)
        .and_then(|i| path[i..].find('/').map(|j| i + j))
        .ok_or_else(bad)?;
    if let Some(at) = path.rfind("/teams/").filter(|at| *at >= host_end) {
        let segments: Vec<&str> = path[at + 1..].split('/').collect();
        if let ["teams", team, "pipelines", pipeline, "jobs", job, "builds", name] =
            segments.as_slice()
        {
            if [team, pipeline, job, name].iter().all(|s| !s.is_empty()) {
                let vars: Vec<&str> = query
                    .split('&')
                    .filter(|pair| {
                        let key = percent_decode(pair.split('=').next().unwrap_or(""));
                        key == "vars" || key.starts_with("vars.")
                    })
                    .collect();
                return Ok((
                    path[..at].to_string(),
                    Target::Job {
                        team: encode(team),
                        pipeline: encode(pipeline),
                        job: encode(job),
                        name: encode(name),
                        vars: encode(&vars.join("&")),
                    },
                ));
            }
        }
        return Err(bad());
    }
    if let Some(at) = path.rfind("/builds/").filter(|at| *at >= host_end) {
        if let Ok(id) = path[at + "/builds/".len()..].parse::<u64>() {
            return Ok((path[..at].to_string(), Target::Id(id)));
        }
    }
    Err(bad())
}

/// Why the build Concourse gave for a claim is not the claim's build, if
/// it is not. A build id is unique only within one Concourse and one
/// database (a restored or reset one hands the same ids out again), and a
/// claim's `Build URL:` names its build too: team, pipeline, job and name
/// must agree, or the answer is about someone else's build.
pub fn mismatch(recorded: Recorded<'_>, build: &Build) -> Option<String> {
    let (_, target) = parse_build_url(recorded.build_url?).ok()?;
    let Target::Job {
        team,
        pipeline,
        job,
        name,
        ..
    } = target
    else {
        return None;
    };
    let (team, pipeline, job, name) = (
        percent_decode(&team),
        percent_decode(&pipeline),
        percent_decode(&job),
        percent_decode(&name),
    );
    let same = build.team_name == team
        && build.pipeline_name.as_deref() == Some(pipeline.as_str())
        && build.job_name.as_deref() == Some(job.as_str())
        && build.name == name;
    (!same).then(|| {
        format!(
            "Concourse's build {} is {}/{}/{} #{}, not the claim's {team}/{pipeline}/{job} #{name}",
            build.id,
            build.team_name,
            build.pipeline_name.as_deref().unwrap_or(""),
            build.job_name.as_deref().unwrap_or(""),
            build.name
        )
    })
}

/// Percent-encodes what may not stand in a URL path or query as it is
/// (`BUILD_URL` splices names in unescaped); `%`, `=` and `&` stay, so an
/// already-encoded piece is unchanged.
fn encode(piece: &str) -> String {
    let mut out = String::with_capacity(piece.len());
    for b in piece.bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:@".contains(&b);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` (and nothing else: `+` stays, as in a path).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// What is known of a holder's build: the `status` of [`BuildState`],
/// one word in the JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HolderStatus {
    /// Concourse's status (`pending`, `started`, `succeeded`, `failed`,
    /// `errored`, `aborted`).
    Concourse(BuildStatus),
    /// `missing`: the API answered 404.
    Missing,
    /// `unknown`: the API could not be asked.
    Unknown,
}

impl HolderStatus {
    /// The word in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            HolderStatus::Concourse(s) => s.as_str(),
            HolderStatus::Missing => "missing",
            HolderStatus::Unknown => "unknown",
        }
    }
}

impl Serialize for HolderStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A holder's build as `pool status`, `history` and `serve` show it: the
/// `build_status` object of their JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BuildState {
    /// Concourse's status, or that Concourse does not know the build, or
    /// that it could not be asked (see `error`).
    pub status: HolderStatus,
    /// The build id Concourse gave.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// When it started, Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<i64>,
    /// When it ended, Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<i64>,
    /// The build ended `failed`, `errored` or `aborted`: it cannot release
    /// the lock, and `pool reap --dead` releases it once the grace is over.
    pub dead: bool,
    /// Why the status is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl BuildState {
    /// The state of an answer.
    pub fn of(lookup: &Lookup) -> BuildState {
        match lookup {
            Lookup::Found(b) => BuildState {
                status: HolderStatus::Concourse(b.status),
                id: Some(b.id),
                start_time: b.start_time,
                end_time: b.end_time,
                dead: b.status.is_dead(),
                error: None,
            },
            Lookup::Missing => BuildState {
                status: HolderStatus::Missing,
                id: None,
                start_time: None,
                end_time: None,
                dead: false,
                error: None,
            },
        }
    }

    /// A status that could not be learnt, and why.
    pub fn unknown(why: impl Into<String>) -> BuildState {
        BuildState {
            status: HolderStatus::Unknown,
            id: None,
            start_time: None,
            end_time: None,
            dead: false,
            error: Some(why.into()),
        }
    }

    /// A few words for people at time `now`: `running`, `aborted 2h0m0s
    /// ago (dead)`, `not found in Concourse`.
    pub fn describe(&self, now: i64) -> String {
        let mut text = match self.status {
            HolderStatus::Concourse(BuildStatus::Started) => "running".to_string(),
            HolderStatus::Concourse(BuildStatus::Pending) => "pending".to_string(),
            HolderStatus::Missing => "not found in Concourse".to_string(),
            HolderStatus::Unknown => format!(
                "status unknown ({})",
                self.error.as_deref().unwrap_or("not asked")
            ),
            HolderStatus::Concourse(ended) => match self.end_time {
                Some(t) => format!("{} {} ago", ended.as_str(), ago(t, now)),
                None => ended.as_str().to_string(),
            },
        };
        if self.dead {
            text.push_str(" (dead)");
        }
        text
    }
}

/// What `pool reap --dead` counts as dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeadPolicy {
    /// `--grace`: seconds a build must have been over.
    pub grace: i64,
    /// `--finished`: a succeeded build counts too.
    pub finished: bool,
    /// `--missing`: a build the API does not know counts too.
    pub missing: bool,
}

/// What to do with one claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Release it; why, for the commit's reason.
    Reap(String),
    /// Leave it; why, for people.
    Keep(String),
}

/// Decides whether the claim of a build `what` (its description) in the
/// state `lookup` is released at time `now`.
pub fn judge(what: &str, lookup: &Lookup, now: i64, policy: DeadPolicy) -> Verdict {
    let build = match lookup {
        Lookup::Missing if policy.missing => {
            return Verdict::Reap(format!("{what} is not found in Concourse (404)"))
        }
        Lookup::Missing => {
            return Verdict::Keep(format!(
                "{what} is not found in Concourse (404); --missing releases such claims"
            ))
        }
        Lookup::Found(b) => b,
    };
    let status = build.status.as_str();
    if build.status.is_running() {
        return Verdict::Keep(format!("{what} is still running ({status})"));
    }
    let counts = build.status.is_dead() || policy.finished;
    if !counts {
        return Verdict::Keep(format!(
            "{what} {status}: it may have handed the lock on; --finished releases such claims"
        ));
    }
    let Some(end) = build.end_time else {
        return Verdict::Keep(format!(
            "{what} {status} but Concourse gives no end time to count the grace from"
        ));
    };
    let over = now - end;
    if over < policy.grace {
        return Verdict::Keep(format!(
            "{what} {status} {} ago, within the grace of {}",
            ago(end, now),
            ago(0, policy.grace)
        ));
    }
    Verdict::Reap(format!(
        "{what} {status} at {} ({} ago)",
        crate::model::duration::utc(end),
        ago(end, now)
    ))
}

/// What a claim's commit recorded of its build.
pub fn recorded(by: &Actor) -> Recorded<'_> {
    Recorded {
        build_id: by.build_id.as_deref(),
        build_url: by.build_url.as_deref(),
        concourse: by.concourse.as_deref(),
    }
}

/// What a shares file recorded of a holder's build: its `BUILD_ID` and
/// its URL, the Concourse being the part of that URL before `/teams/` or
/// `/builds/`.
pub fn holding(holder: &Holder) -> Recorded<'_> {
    Recorded {
        build_id: holder.build_id.as_deref(),
        build_url: holder.url.as_deref(),
        concourse: None,
    }
}

/// What a waiting-room ticket recorded of its build: its `BUILD_ID` and
/// its URL (`BUILD_URL`, or the build page under `ATC_EXTERNAL_URL`), the
/// Concourse being the part of that URL before `/teams/` or `/builds/`.
pub fn waiting(ticket: &Ticket) -> Recorded<'_> {
    Recorded {
        build_id: ticket.build_id.as_deref(),
        build_url: ticket.url.as_deref(),
        concourse: None,
    }
}

/// Decides whether the ticket of a build `what` in the state `lookup` is
/// removed from the line at time `now`. A put waits only while its build
/// runs, so a build that ended in any status (`succeeded` too: the put is
/// not what it waits on any more) is dead once the grace is over; one the
/// API does not know only with `--missing`.
pub fn judge_ticket(what: &str, lookup: &Lookup, now: i64, policy: DeadPolicy) -> Verdict {
    match lookup {
        Lookup::Missing if !policy.missing => Verdict::Keep(format!(
            "{what} is not found in Concourse (404); --missing removes such tickets"
        )),
        _ => judge(
            what,
            lookup,
            now,
            DeadPolicy {
                finished: true,
                ..policy
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(status: BuildStatus, end: Option<i64>) -> Lookup {
        Lookup::Found(Build {
            id: 42,
            name: "7".into(),
            status,
            team_name: "main".into(),
            job_name: Some("deploy".into()),
            pipeline_name: Some("app".into()),
            start_time: Some(100),
            end_time: end,
        })
    }

    const POLICY: DeadPolicy = DeadPolicy {
        grace: 300,
        finished: false,
        missing: false,
    };

    #[test]
    fn the_json_of_concourse_6_and_8_reads_and_unknown_fields_are_ignored() {
        let v6: Build = serde_json::from_str(
            r#"{"id":5,"team_name":"main","name":"3","status":"aborted","job_name":"j","api_url":"/api/v1/builds/5","pipeline_name":"p","start_time":10,"end_time":20}"#,
        )
        .unwrap();
        assert_eq!((v6.status, v6.end_time), (BuildStatus::Aborted, Some(20)));
        let v8: Build = serde_json::from_str(
            r#"{"id":6,"team_name":"main","name":"4.1","status":"started","api_url":"/api/v1/builds/6","comment":"x","job_name":"j","pipeline_id":3,"pipeline_name":"p","pipeline_instance_vars":{"b":"f"},"start_time":10,"rerun_number":1,"rerun_of":{"id":5,"name":"4"},"created_by":"me"}"#,
        )
        .unwrap();
        assert_eq!((v8.status, v8.end_time), (BuildStatus::Started, None));
        assert!(serde_json::from_str::<Build>(r#"{"id":1,"name":"1"}"#).is_err());
    }

    #[test]
    fn a_build_id_is_asked_of_the_concourse_the_claim_recorded() {
        let r = find(
            Recorded {
                build_id: Some("4242"),
                build_url: Some("https://ci/teams/main/pipelines/app/jobs/deploy/builds/7"),
                concourse: Some("https://ci.example.com/"),
            },
            None,
        )
        .unwrap();
        assert_eq!(r.api_url(), "https://ci.example.com/api/v1/builds/4242");
        let r = find(
            Recorded {
                build_id: Some("4242"),
                ..Recorded::default()
            },
            Some("http://10.0.0.1:8080"),
        )
        .unwrap();
        assert_eq!(r.api_url(), "http://10.0.0.1:8080/api/v1/builds/4242");
    }

    #[test]
    fn a_go_resource_build_url_maps_onto_the_job_build_route_with_its_vars() {
        let r = find(
            Recorded {
                build_url: Some("https://ci/teams/main/pipelines/app/jobs/deploy/builds/7.1"),
                ..Recorded::default()
            },
            None,
        )
        .unwrap();
        assert_eq!(
            r.api_url(),
            "https://ci/api/v1/teams/main/pipelines/app/jobs/deploy/builds/7.1"
        );
        assert_eq!(r.describe(), "main/app/deploy #7.1");
        let url = "https://ci/prefix/teams/t/pipelines/p/jobs/j/builds/3?vars.branch=%22feature%22&vars.n=1&groups=x";
        let r = find(
            Recorded {
                build_url: Some(url),
                ..Recorded::default()
            },
            None,
        )
        .unwrap();
        assert_eq!(r.concourse, "https://ci/prefix");
        assert_eq!(
            r.api_path(),
            "/api/v1/teams/t/pipelines/p/jobs/j/builds/3?vars.branch=%22feature%22&vars.n=1"
        );
        assert_eq!(r.describe(), "t/p?vars.branch=\"feature\"&vars.n=1/j #3");
        // A `vars=` JSON object, and names spliced in unescaped.
        let (_, t) =
            parse_build_url(r#"http://ci/teams/t/pipelines/p q/jobs/j/builds/1?vars={"a":1}"#)
                .unwrap();
        assert_eq!(
            BuildRef {
                concourse: "http://ci".into(),
                target: t
            }
            .api_path(),
            "/api/v1/teams/t/pipelines/p%20q/jobs/j/builds/1?vars=%7B%22a%22:1%7D"
        );
        let (base, t) = parse_build_url("https://ci/builds/99").unwrap();
        assert_eq!((base.as_str(), t), ("https://ci", Target::Id(99)));
    }

    #[test]
    fn a_build_id_naming_another_build_is_a_mismatch() {
        let Lookup::Found(b) = build(BuildStatus::Aborted, Some(1)) else {
            unreachable!()
        };
        let url = |u| Recorded {
            build_id: Some("42"),
            build_url: Some(u),
            concourse: None,
        };
        assert_eq!(
            mismatch(
                url("https://ci/teams/main/pipelines/app/jobs/deploy/builds/7"),
                &b
            ),
            None
        );
        let why = mismatch(
            url("https://ci/teams/main/pipelines/app/jobs/deploy/builds/8"),
            &b,
        )
        .unwrap();
        assert!(
            why.contains("main/app/deploy #7, not the claim's main/app/deploy #8"),
            "{why}"
        );
        // Nothing to compare with: no mismatch.
        assert_eq!(mismatch(url("https://ci/builds/42"), &b), None);
        assert_eq!(mismatch(Recorded::default(), &b), None);
    }

    #[test]
    fn a_claim_without_a_usable_build_says_why() {
        assert_eq!(
            find(Recorded::default(), None).unwrap_err(),
            "no build recorded"
        );
        for url in [
            "javascript:alert(1)",
            "https://ci/teams/main/pipelines/app",
            "https://ci/",
        ] {
            let e = find(
                Recorded {
                    build_url: Some(url),
                    ..Recorded::default()
                },
                None,
            )
            .unwrap_err();
            assert!(e.contains("not a Concourse build page"), "{e}");
        }
        let e = find(
            Recorded {
                build_id: Some("1"),
                concourse: Some("file:///etc"),
                ..Recorded::default()
            },
            None,
        )
        .unwrap_err();
        assert!(e.contains("not http"), "{e}");
    }

    #[test]
    fn only_dead_builds_past_the_grace_are_reaped() {
        let now = 10_000;
        let judge = |l: &Lookup, p| judge("build 42", l, now, p);
        assert!(matches!(
            judge(&build(BuildStatus::Aborted, Some(now - 301)), POLICY),
            Verdict::Reap(_)
        ));
        assert!(matches!(
            judge(&build(BuildStatus::Errored, Some(now - 60)), POLICY),
            Verdict::Keep(w) if w.contains("grace")
        ));
        for running in [BuildStatus::Pending, BuildStatus::Started] {
            assert!(matches!(
                judge(&build(running, None), POLICY),
                Verdict::Keep(_)
            ));
        }
        let ok = build(BuildStatus::Succeeded, Some(0));
        assert!(matches!(judge(&ok, POLICY), Verdict::Keep(w) if w.contains("--finished")));
        let finished = DeadPolicy {
            finished: true,
            ..POLICY
        };
        assert!(matches!(judge(&ok, finished), Verdict::Reap(_)));
        assert!(matches!(judge(&Lookup::Missing, POLICY), Verdict::Keep(_)));
        let missing = DeadPolicy {
            missing: true,
            ..POLICY
        };
        assert!(matches!(judge(&Lookup::Missing, missing), Verdict::Reap(_)));
        assert!(matches!(
            judge(&build(BuildStatus::Failed, None), POLICY),
            Verdict::Keep(w) if w.contains("no end time")
        ));
    }

    #[test]
    fn a_ticket_of_a_build_that_ended_in_any_status_goes_once_the_grace_is_over() {
        let now = 10_000;
        let judge = |l: &Lookup, p| judge_ticket("main/app/deploy #7", l, now, p);
        for ended in [
            BuildStatus::Succeeded,
            BuildStatus::Failed,
            BuildStatus::Errored,
            BuildStatus::Aborted,
        ] {
            assert!(
                matches!(judge(&build(ended, Some(now - 301)), POLICY), Verdict::Reap(w) if w.contains(ended.as_str())),
                "{ended:?}"
            );
            assert!(matches!(
                judge(&build(ended, Some(now - 10)), POLICY),
                Verdict::Keep(w) if w.contains("grace")
            ));
        }
        for running in [BuildStatus::Pending, BuildStatus::Started] {
            assert!(matches!(
                judge(&build(running, None), POLICY),
                Verdict::Keep(w) if w.contains("still running")
            ));
        }
        assert!(matches!(
            judge(&Lookup::Missing, POLICY),
            Verdict::Keep(w) if w.contains("--missing removes such tickets")
        ));
        let missing = DeadPolicy {
            missing: true,
            ..POLICY
        };
        assert!(matches!(judge(&Lookup::Missing, missing), Verdict::Reap(_)));
    }

    #[test]
    fn a_ticket_names_its_build_by_id_on_the_concourse_of_its_url() {
        let ticket: Ticket = serde_json::from_value(serde_json::json!({
            "id": "t-1", "build": "main/app/deploy #7", "build_id": "4242",
            "url": "https://ci.example.com/teams/main/pipelines/app/jobs/deploy/builds/7",
            "wants": {"acquire": 1}, "arrived": 1, "renewed": 1, "lease": 60,
        }))
        .unwrap();
        let r = find(waiting(&ticket), None).unwrap();
        assert_eq!(r.api_url(), "https://ci.example.com/api/v1/builds/4242");
        let r = find(waiting(&ticket), Some("http://10.0.0.1:8080/")).unwrap();
        assert_eq!(r.api_url(), "http://10.0.0.1:8080/api/v1/builds/4242");
        let go_style = Ticket {
            build_id: None,
            ..ticket.clone()
        };
        assert_eq!(
            find(waiting(&go_style), None).unwrap().api_path(),
            "/api/v1/teams/main/pipelines/app/jobs/deploy/builds/7"
        );
        let no_url = Ticket {
            url: None,
            ..ticket
        };
        assert!(find(waiting(&no_url), None)
            .unwrap_err()
            .contains("--concourse-url"));
    }

    #[test]
    fn a_state_reads_as_people_say_it() {
        let s = BuildState::of(&build(BuildStatus::Aborted, Some(1000)));
        assert_eq!(s.describe(1000 + 7200), "aborted 2h0m0s ago (dead)");
        assert!(s.dead);
        assert_eq!(
            BuildState::of(&build(BuildStatus::Started, None)).describe(0),
            "running"
        );
        assert_eq!(
            BuildState::of(&Lookup::Missing).describe(0),
            "not found in Concourse"
        );
    }

    #[test]
    fn a_state_s_status_is_one_word_in_the_json() {
        let json = |s: BuildState| serde_json::to_value(s).unwrap()["status"].clone();
        assert_eq!(
            json(BuildState::of(&build(BuildStatus::Aborted, Some(1)))),
            "aborted"
        );
        assert_eq!(
            json(BuildState::of(&build(BuildStatus::Started, None))),
            "started"
        );
        assert_eq!(json(BuildState::of(&Lookup::Missing)), "missing");
        let unknown = BuildState::unknown("no answer");
        assert_eq!(unknown.describe(0), "status unknown (no answer)");
        assert_eq!(
            serde_json::to_value(unknown).unwrap(),
            serde_json::json!({"status": "unknown", "dead": false, "error": "no answer"})
        );
    }
}
