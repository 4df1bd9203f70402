//! One behavioural suite, run against every way of reaching a pool: a local
//! bare repository, `git daemon`, CodeCommit's Git endpoint signed with
//! instance-profile credentials (`git http-backend` checking the signature),
//! and the CodeCommit API backend (the JSON-protocol stand-in over a real
//! repository). Each scenario is written once, as a function of a
//! [`Backend`]; `on_every_backend!` makes a test of it for each kind, so the
//! backends are held to the same outputs, commit messages and errors.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::codecommit::assert_no_secrets;
use crate::support::{
    AwsEnv, Bg, CodeCommitServer, GitDaemon, GitSignatureCheck, HttpGitServer, HttpOptions, Imds,
    ImdsOptions, Keyring, LockRepo, Run,
};
use crate::{lock_name, version, Inputs};

const POOL: &str = "envs";
const REGION: &str = "eu-west-2";
const HOST: &str = "git-codecommit.eu-west-2.amazonaws.com";
const CODECOMMIT_URI: &str = "https://git-codecommit.eu-west-2.amazonaws.com/v1/repos/locks";
/// Longer than any step should take; a hung executable fails the test
/// instead of hanging it.
const DEADLINE: Duration = Duration::from_secs(30);

/// How the pool is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    LocalGit,
    GitDaemon,
    CodeCommitGit,
    CodeCommitApi,
}

/// A lock repository with locks `a` and `b` unclaimed, the servers in front
/// of it, and the environment the executables run in.
pub struct Backend {
    kind: Kind,
    repo: LockRepo,
    uri: String,
    env: AwsEnv,
    _daemon: Option<GitDaemon>,
    /// The instance metadata stand-in, for the CodeCommit backends.
    imds: Option<Imds>,
    /// The signature check and Git server, for CodeCommit's Git endpoint.
    http: Option<(GitSignatureCheck, HttpGitServer)>,
    /// The API stand-in, for the CodeCommit API backend.
    api: Option<CodeCommitServer>,
}

impl Backend {
    fn start(kind: Kind) -> Backend {
        let repo = LockRepo::new("main");
        repo.add_lock(POOL, "a", false, b"a-meta\n");
        repo.add_lock(POOL, "b", false, b"b-meta\n");
        let mut b = Backend {
            kind,
            uri: repo.path().display().to_string(),
            env: AwsEnv::new(),
            repo,
            _daemon: None,
            imds: None,
            http: None,
            api: None,
        };
        match kind {
            Kind::LocalGit => {}
            Kind::GitDaemon => {
                let daemon = GitDaemon::start(b.repo.root());
                b.uri = daemon.url("locks.git");
                b._daemon = Some(daemon);
            }
            Kind::CodeCommitGit => {
                let imds = Imds::start(ImdsOptions::default(), Keyring::new());
                let check = GitSignatureCheck::new(imds.keyring(), HOST, REGION);
                let server = HttpGitServer::start(
                    b.repo.root(),
                    HttpOptions {
                        auth_check: Some(check.auth_check()),
                        url_prefix: "/v1/repos".into(),
                        ..HttpOptions::default()
                    },
                );
                b.env = AwsEnv::new().with_imds(&imds).set(
                    "POOL_RESOURCE_CODECOMMIT_GIT_ENDPOINT",
                    &format!("http://127.0.0.1:{}", server.port()),
                );
                b.uri = CODECOMMIT_URI.into();
                b.imds = Some(imds);
                b.http = Some((check, server));
            }
            Kind::CodeCommitApi => {
                let imds = Imds::start(ImdsOptions::default(), Keyring::new());
                let api = CodeCommitServer::start(b.repo.path(), "locks", REGION, imds.keyring());
                b.env = AwsEnv::new()
                    .with_imds(&imds)
                    .set("AWS_ENDPOINT_URL_CODECOMMIT", &api.endpoint());
                b.uri = CODECOMMIT_URI.into();
                b.imds = Some(imds);
                b.api = Some(api);
            }
        }
        // check's cache lives under TMPDIR and is keyed by URI and branch:
        // every backend gets its own, or tests of one URI would share one.
        let tmp = b.env.home().display().to_string();
        b.env = std::mem::take(&mut b.env)
            .set("TMPDIR", &tmp)
            .set("POOL_RESOURCE_BACKOFF_BASE_MS", "10")
            .set("BUILD_ID", "31337")
            .set("BUILD_NAME", "42")
            .set("BUILD_JOB_NAME", "deploy")
            .set("BUILD_PIPELINE_NAME", "prod")
            .set("BUILD_TEAM_NAME", "main")
            .set("ATC_EXTERNAL_URL", "https://ci.example.com");
        b
    }

    fn source(&self, pool: &str) -> Value {
        self.source_on("main", pool)
    }

    fn source_on(&self, branch: &str, pool: &str) -> Value {
        let mut s = json!({"uri": self.uri, "branch": branch, "pool": pool, "retry_delay": "50ms"});
        if self.kind == Kind::CodeCommitApi {
            s["backend"] = json!("codecommit-api");
        }
        s
    }

    fn run(&self, bin: &str, args: &[&Path], request: Value) -> Run {
        self.env.run(bin, args, &request)
    }

    fn out(&self, params: Value, inputs: &Inputs) -> Run {
        self.run(
            "out",
            &[inputs.path()],
            json!({"source": self.source(POOL), "params": params}),
        )
    }

    fn put(&self, params: Value, inputs: &Inputs) -> Value {
        self.out(params, inputs).assert_success().json()
    }

    /// A put that must fail at once; returns its stderr.
    fn put_fails(&self, params: Value, inputs: &Inputs) -> String {
        let tip = self.repo.tip();
        let commits = self.api_calls("CreateCommit");
        let start = Instant::now();
        let run = self.out(params.clone(), inputs);
        run.assert_failure();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{params} did not fail at once"
        );
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        assert!(!run.stderr.contains("retrying"), "retried:\n{}", run.stderr);
        assert_eq!(
            self.repo.tip(),
            tip,
            "a failed put committed:\n{}",
            run.stderr
        );
        assert_eq!(
            self.api_calls("CreateCommit"),
            commits,
            "a failed put tried to commit"
        );
        run.stderr
    }

    /// Starts an `out` that is expected to wait.
    fn spawn_out(&self, params: Value, inputs: &Inputs) -> Bg {
        let request = json!({"source": self.source(POOL), "params": params});
        Bg::new(
            self.env.spawn("out", &[inputs.path()], &request),
            format!("out {params}"),
            DEADLINE,
        )
    }

    /// How often the API stand-in served `operation`; `None` on the other
    /// backends, which have no API.
    fn api_calls(&self, operation: &str) -> Option<usize> {
        self.api.as_ref().map(|api| api.calls(operation))
    }

    /// On the CodeCommit backends, panics if what `runs` printed holds a
    /// key from instance metadata or a signed Git password.
    fn assert_no_secrets(&self, runs: &[&Run]) {
        let Some(imds) = &self.imds else { return };
        let mut secrets = imds.secrets();
        if let Some((check, _)) = &self.http {
            for v in check.verdicts() {
                secrets.push(v.password);
                secrets.push(v.user);
            }
        }
        assert_no_secrets(&secrets, runs);
    }

    fn get(&self, version: &str) -> (Run, TempDir) {
        let dest = TempDir::new().expect("creating the get's destination");
        let run = self.run(
            "in",
            &[dest.path()],
            json!({"source": self.source(POOL), "version": {"ref": version}}),
        );
        (run, dest)
    }

    fn check(&self, version: Option<&str>) -> Vec<String> {
        self.check_pool(POOL, version)
    }

    fn check_pool(&self, pool: &str, version: Option<&str>) -> Vec<String> {
        let mut request = json!({"source": self.source(pool)});
        if let Some(v) = version {
            request["version"] = json!({"ref": v});
        }
        let run = self.run("check", &[], request);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        run.assert_success()
            .json()
            .as_array()
            .expect("check prints a list")
            .iter()
            .map(|v| v["ref"].as_str().expect("a ref").to_string())
            .collect()
    }

    fn subjects_since(&self, base: &str) -> Vec<String> {
        let log = self.repo.log();
        let start = log.iter().position(|c| c.sha == base).map_or(0, |i| i + 1);
        log[start..].iter().map(|c| c.subject.clone()).collect()
    }
}

/// Returns once `waiter` logged `waiting: {why}` `times` times (one per
/// look at the pool), still running.
fn until_it_waited(waiter: &mut Bg, times: usize, why: &str) {
    waiter.until_logged(times, &format!("waiting: {why}"));
    assert!(
        waiter.running(),
        "{} returned instead of waiting",
        waiter.name()
    );
}

macro_rules! on_every_backend {
    ($($scenario:ident),* $(,)?) => {
        mod local_git {
            $(#[test] fn $scenario() { super::$scenario(super::Backend::start(super::Kind::LocalGit)) })*
        }
        mod git_daemon {
            $(#[test] fn $scenario() { super::$scenario(super::Backend::start(super::Kind::GitDaemon)) })*
        }
        mod codecommit_git {
            $(#[test] fn $scenario() { super::$scenario(super::Backend::start(super::Kind::CodeCommitGit)) })*
        }
        mod codecommit_api {
            $(#[test] fn $scenario() { super::$scenario(super::Backend::start(super::Kind::CodeCommitApi)) })*
        }
    };
}

on_every_backend!(
    acquire_get_release_and_check_make_the_same_commits_and_json,
    add_update_and_remove_keep_binary_metadata_byte_for_byte,
    impossible_puts_fail_at_once_with_the_same_messages,
    in_fails_once_the_claim_was_released_since,
    check_waits_for_unclaimed_and_check_unclaimed_for_claimed,
    an_idempotent_acquire_run_again_gets_the_same_lock,
    update_says_adding_for_a_missing_lock_and_updating_for_an_unclaimed_one,
    in_of_a_version_about_another_pool_gets_this_pools_last_lock,
    check_of_a_version_that_is_not_on_the_branch_lists_the_latest_whatever_the_string,
    check_and_in_answer_what_git_log_answers_on_a_history_with_merges,
    git_config_sets_the_commit_identity,
    acquire_waits_until_a_lock_is_released,
    claim_waits_for_a_claimed_lock,
    update_waits_while_the_lock_is_claimed,
    add_and_add_claimed_fill_an_empty_pool_with_binary_metadata,
    nested_pools_and_other_branches_work_and_missing_ones_fail,
    acquire_two_claims_both_in_one_commit_and_release_gives_both_back,
    claim_of_a_list_takes_every_lock_in_one_commit,
    multi_lock_puts_that_can_never_be_done_fail_at_once_touching_nothing,
    an_idempotent_acquire_of_two_run_again_gets_the_same_commit,
    in_and_out_name_who_claimed_the_lock_and_since_when,
    expire_after_takes_over_an_old_claim_and_the_old_holders_release_refuses,
);

fn with_job(b: Backend) -> Backend {
    let mut b = b;
    b.env = std::mem::take(&mut b.env)
        .set("BUILD_NAME", "7")
        .set("BUILD_JOB_NAME", "deploy")
        .set("BUILD_PIPELINE_NAME", "app")
        .set("BUILD_TEAM_NAME", "main");
    b
}

fn in_and_out_name_who_claimed_the_lock_and_since_when(b: Backend) {
    let b = with_job(b);
    let inputs = Inputs::new();
    let claimed = b.put(json!({"claim": "a"}), &inputs);
    let meta = claimed["metadata"].as_array().expect("metadata").clone();
    assert_eq!(meta[0], json!({"name": "lock_name", "value": "a"}));
    assert_eq!(meta[1], json!({"name": "pool_name", "value": POOL}));
    assert_eq!(
        meta[2],
        json!({"name": "claimed_by", "value": "main/app/deploy #7"})
    );
    assert_eq!(meta[3]["name"], "claimed_since");
    let since = meta[3]["value"].as_str().unwrap();
    let commit_time = b.repo.log().pop().unwrap().committer_time;
    assert_eq!(
        since,
        pool_resource::model::duration::utc(commit_time),
        "the claim's committer time, RFC 3339 UTC"
    );
    assert_eq!(
        meta[4],
        json!({"name": "build_url", "value": "https://ci.example.com/teams/main/pipelines/app/jobs/deploy/builds/7"})
    );
    assert_eq!(meta.len(), 5, "{meta:?}");
    let (get, dest) = b.get(&version(&claimed));
    assert_eq!(
        get.assert_success().json(),
        claimed,
        "in names the same claim"
    );
    assert_eq!(
        std::fs::read_to_string(dest.path().join("claim")).unwrap(),
        format!("{}\n", version(&claimed))
    );
    // A release adds nothing, and the get of a release writes no claim file.
    std::fs::rename(dest.path(), inputs.path().join("held")).unwrap();
    let released = b.put(json!({"release": "held"}), &inputs);
    assert_eq!(released["metadata"].as_array().unwrap().len(), 2);
    let (get, dest) = b.get(&version(&released));
    assert_eq!(get.assert_success().json(), released);
    assert!(!dest.path().join("claim").exists());
}

fn expire_after_takes_over_an_old_claim_and_the_old_holders_release_refuses(b: Backend) {
    let inputs = Inputs::new();
    let first = b.put(json!({"claim": "a"}), &inputs);
    let old = version(&first);
    let (get, dest) = b.get(&old);
    get.assert_success();
    std::fs::rename(dest.path(), inputs.path().join("held")).unwrap();
    let mut src = b.source(POOL);
    src["expire_after"] = json!("1s");
    // The takeover runs an hour later by its clock (the resource's test
    // hook), so the claim just made is older than expire_after.
    let run = b.env.run_with(
        "out",
        &[Inputs::new().path()],
        &json!({"source": src, "params": {"claim": "a"}}),
        &[(pool_resource::process::clock::NOW_OFFSET_ENV, "3600")],
    );
    let took = run.assert_success().json();
    assert!(run.stderr.contains("taking it over"), "{}", run.stderr);
    assert_eq!(
        b.subjects_since(&old),
        vec!["unclaiming: a".to_string(), "claiming: a".to_string()]
    );
    let log = b.repo.log();
    let unclaim = &log[log.len() - 2];
    assert!(
        unclaim
            .body
            .contains(&format!("Pool-Resource-Replaces: {old}"))
            && unclaim.body.contains("Pool-Resource-Reason: expired"),
        "{}",
        unclaim.body
    );
    assert_eq!(version(&took), b.repo.tip());
    assert_eq!(
        b.check(Some(&old)),
        vec![old.clone(), unclaim.sha.clone(), version(&took)]
    );
    let err = b.put_fails(json!({"release": "held"}), &inputs);
    assert!(
        err.contains("refusing to release lock \"a\" of pool \"envs\"") && err.contains(&old),
        "{err}"
    );
    assert_eq!(b.repo.claimed(POOL), vec!["a".to_string()]);
}

fn acquire_two_claims_both_in_one_commit_and_release_gives_both_back(b: Backend) {
    let base = b.repo.tip();
    let inputs = Inputs::new();
    let claimed = b.put(json!({"acquire": 2}), &inputs);
    assert_eq!(lock_name(&claimed), "a, b", "{claimed}");
    assert_eq!(
        claimed["metadata"][1],
        json!({"name": "pool_name", "value": POOL})
    );
    assert_eq!(version(&claimed), b.repo.tip());
    assert_eq!(b.repo.claimed(POOL), vec!["a".to_string(), "b".to_string()]);
    assert_eq!(b.subjects_since(&base), vec!["claiming: a, b".to_string()]);
    let body = &b.repo.log().pop().unwrap().body;
    assert!(
        body.contains("Pool-Resource-Lock: a\nPool-Resource-Lock: b\n"),
        "{body}"
    );
    assert_eq!(b.check(Some(&base))[1..], [version(&claimed)]);

    let (get, dest) = b.get(&version(&claimed));
    assert_eq!(
        get.assert_success().json(),
        claimed,
        "in prints what out printed"
    );
    let read = |f: &str| std::fs::read_to_string(dest.path().join(f)).unwrap();
    assert_eq!(read("name"), "a\nb\n");
    assert_eq!(read("locks/a"), "a-meta\n");
    assert_eq!(read("locks/b"), "b-meta\n");
    assert!(
        !dest.path().join("metadata").exists(),
        "no one lock's metadata"
    );

    std::fs::rename(dest.path(), inputs.path().join("held")).unwrap();
    let released = b.put(json!({"release": "held"}), &inputs);
    assert_eq!(lock_name(&released), "a, b");
    assert!(b.repo.claimed(POOL).is_empty());
    for lock in ["a", "b"] {
        assert_eq!(
            b.repo
                .file_at(&b.repo.tip(), &format!("{POOL}/unclaimed/{lock}")),
            Some(format!("{lock}-meta\n").into_bytes()),
            "the lock keeps its content"
        );
    }
    assert_eq!(
        b.subjects_since(&base),
        vec!["claiming: a, b".to_string(), "unclaiming: a, b".to_string()]
    );
    let (get, _dest) = b.get(&version(&claimed));
    get.assert_failure();
    assert!(
        get.stderr.contains("lock instance is no longer acquired"),
        "{}",
        get.stderr
    );
}

fn claim_of_a_list_takes_every_lock_in_one_commit(b: Backend) {
    let base = b.repo.tip();
    let inputs = Inputs::new();
    let claimed = b.put(json!({"claim": ["b", "a"]}), &inputs);
    assert_eq!(lock_name(&claimed), "a, b");
    assert_eq!(b.repo.claimed(POOL), vec!["a".to_string(), "b".to_string()]);
    assert_eq!(b.subjects_since(&base), vec!["claiming: a, b".to_string()]);
    // A list of one is claim: A.
    let inputs = Inputs::new();
    inputs.lock("a", "a", b"");
    b.put(json!({"release": "a"}), &inputs);
    let one = b.put(json!({"claim": ["a"]}), &inputs);
    assert_eq!(lock_name(&one), "a");
    assert_eq!(b.subjects_since(&base).last().unwrap(), "claiming: a");
}

fn multi_lock_puts_that_can_never_be_done_fail_at_once_touching_nothing(b: Backend) {
    let inputs = Inputs::new();
    let err = b.put_fails(json!({"acquire": 3}), &inputs);
    assert!(
        err.contains("acquire: 3 wants more locks than pool \"envs\" has (2)"),
        "{err}"
    );
    let err = b.put_fails(json!({"claim": ["a", "zz"]}), &inputs);
    assert!(
        err.contains("lock \"zz\" does not exist in pool \"envs\""),
        "{err}"
    );
    b.put(json!({"claim": "a"}), &inputs);
    let held = inputs.path().join("both");
    std::fs::create_dir_all(&held).unwrap();
    std::fs::write(held.join("name"), "a\nb\n").unwrap();
    let err = b.put_fails(json!({"release": "both"}), &inputs);
    assert!(
        err.contains("lock \"b\" in pool \"envs\" is not claimed, so it cannot be released"),
        "{err}"
    );
    assert_eq!(
        b.repo.claimed(POOL),
        vec!["a".to_string()],
        "a stays claimed"
    );
    for (params, want) in [
        (
            json!({"acquire": 0}),
            "params.acquire must be true or a number of locks",
        ),
        (json!({"claim": []}), "params.claim is an empty list"),
        (
            json!({"claim": ["a", "a"]}),
            "params.claim names lock a twice",
        ),
        (
            json!({"acquire": 2, "claim": ["a", "b"]}),
            "acquire and claim",
        ),
    ] {
        let err = b.put_fails(params.clone(), &inputs);
        assert!(err.contains(want), "{params}: {err}");
    }
}

fn an_idempotent_acquire_of_two_run_again_gets_the_same_commit(b: Backend) {
    let inputs = Inputs::new();
    let params = json!({"acquire": 2, "idempotent": true});
    let first = b.put(params.clone(), &inputs);
    let tip = b.repo.tip();
    let again = b.put(params, &inputs);
    assert_eq!(again, first);
    assert_eq!(b.repo.tip(), tip, "the re-run commits nothing");
}

fn acquire_get_release_and_check_make_the_same_commits_and_json(b: Backend) {
    b.repo
        .commit_file("scripts/deploy.sh", b"#!/bin/sh\n", "a file tasks read");
    if let Some(api) = &b.api {
        // One difference per page: `in` must follow GetDifferences' NextToken.
        api.set_page_size(1);
    }
    let base = b.repo.tip();
    let inputs = Inputs::new();
    let acquire = b.out(json!({"acquire": true}), &inputs);
    let claimed = acquire.assert_success().json();
    let lock = lock_name(&claimed);
    assert!(lock == "a" || lock == "b", "{claimed}");
    assert_eq!(
        claimed["metadata"][1],
        json!({"name": "pool_name", "value": POOL})
    );
    assert_eq!(version(&claimed), b.repo.tip());
    assert_eq!(b.repo.claimed(POOL), vec![lock.clone()]);
    let c = b.repo.log().pop().unwrap();
    assert_eq!(c.subject, format!("claiming: {lock}"));
    assert_eq!(c.changed.len(), 2, "{:?}", c.changed);
    for needle in [
        "Build URL: https://ci.example.com/teams/main/pipelines/prod/jobs/deploy/builds/42",
        "Pool-Resource-Build: main/prod/deploy #42",
        "Pool-Resource-Build-Id: 31337",
        "Pool-Resource-Nonce: ",
    ] {
        assert!(c.body.contains(needle), "{needle}: {}", c.body);
    }
    assert_eq!(
        b.repo
            .file_at(&b.repo.tip(), &format!("{POOL}/claimed/{lock}")),
        Some(format!("{lock}-meta\n").into_bytes()),
        "the lock keeps its content when it moves"
    );
    let author = b
        .repo
        .git_out(&["log", "-1", "--format=%an <%ae>|%cn <%ce>"]);
    assert_eq!(author.trim(), "git <git@localhost>|git <git@localhost>");
    if let Some(api) = &b.api {
        // No clone: the API, with keys from the instance profile.
        assert_eq!(api.calls("CreateCommit"), 1, "{:?}", api.log());
        assert!(api.calls("GetBranch") >= 1);
        assert!(
            api.log().iter().all(|l| l.ends_with("-> 200")),
            "{:?}",
            api.log()
        );
    }
    if let Some(imds) = &b.imds {
        assert!(imds.credential_fetches() >= 1);
        assert_eq!(imds.served("/latest/meta-data/placement/region"), 0);
    }

    let (get, dest) = b.get(&version(&claimed));
    assert_eq!(
        get.assert_success().json(),
        claimed,
        "in prints what out printed"
    );
    assert_eq!(
        std::fs::read(dest.path().join("scripts/deploy.sh")).unwrap(),
        b"#!/bin/sh\n",
        "in leaves the repository's tree"
    );
    assert!(dest.path().join("README.md").is_file());
    if let Some(api) = &b.api {
        assert!(api.calls("GetDifferences") >= 2, "paged: {:?}", api.log());
    }
    b.assert_no_secrets(&[&acquire, &get]);
    assert_eq!(
        std::fs::read_to_string(dest.path().join("name")).unwrap(),
        format!("{lock}\n")
    );
    assert_eq!(
        std::fs::read(dest.path().join("metadata")).unwrap(),
        format!("{lock}-meta\n").as_bytes()
    );
    assert!(
        dest.path().join(POOL).join("claimed").join(&lock).is_file(),
        "in leaves the repository's tree"
    );

    std::fs::rename(dest.path(), inputs.path().join("held")).unwrap();
    // release moves the lock's content back; it does not take the input's.
    std::fs::write(inputs.path().join("held/metadata"), b"ignored").unwrap();
    let released = b.put(json!({"release": "held"}), &inputs);
    assert_eq!(lock_name(&released), lock);
    assert_eq!(version(&released), b.repo.tip());
    assert!(b.repo.claimed(POOL).is_empty());
    assert_eq!(
        b.repo.unclaimed(POOL),
        vec!["a".to_string(), "b".to_string()]
    );
    assert_eq!(
        b.repo
            .file_at(&b.repo.tip(), &format!("{POOL}/unclaimed/{lock}")),
        Some(format!("{lock}-meta\n").into_bytes()),
        "the lock keeps its content"
    );
    assert_eq!(
        b.subjects_since(&base),
        vec![format!("claiming: {lock}"), format!("unclaiming: {lock}")]
    );
    let body = &b.repo.log().pop().unwrap().body;
    assert!(body.contains("Pool-Resource-Build-Id: 31337"), "{body}");
    assert!(body.contains("Pool-Resource-Nonce: "), "{body}");

    assert_eq!(
        b.check(Some(&version(&claimed))),
        vec![version(&claimed), version(&released)]
    );
    assert_eq!(b.check(None), vec![version(&released)]);
}

fn add_update_and_remove_keep_binary_metadata_byte_for_byte(b: Backend) {
    let base = b.repo.tip();
    let binary: Vec<u8> = (0..=255u8)
        .chain(*b"\x00\xff\xfe binary\nmetadata\r\n\x7f")
        .collect();
    let binary = binary.as_slice();
    let inputs = Inputs::new();
    inputs.lock("new", "c", binary);
    inputs.lock("held", "d", b"d\n");
    inputs.lock("changed", "a", b"\x01new content\xff");
    let added = b.put(json!({"add": "new"}), &inputs);
    assert_eq!(lock_name(&added), "c");
    assert_eq!(
        b.repo
            .file_at(&b.repo.tip(), &format!("{POOL}/unclaimed/c")),
        Some(binary.to_vec())
    );
    let (get, dest) = b.get(&version(&added));
    get.assert_success();
    assert_eq!(std::fs::read(dest.path().join("metadata")).unwrap(), binary);

    b.put(json!({"add_claimed": "held"}), &inputs);
    assert_eq!(b.repo.claimed(POOL), vec!["d".to_string()]);
    b.put(json!({"update": "changed"}), &inputs);
    assert_eq!(
        b.repo
            .file_at(&b.repo.tip(), &format!("{POOL}/unclaimed/a")),
        Some(b"\x01new content\xff".to_vec())
    );
    b.put(json!({"remove": "held"}), &inputs);
    let removal = b.put(json!({"remove": "new"}), &inputs);
    assert!(b.repo.claimed(POOL).is_empty());
    assert_eq!(
        b.repo.unclaimed(POOL),
        vec!["a".to_string(), "b".to_string()]
    );
    // The pool's folders survive with their .gitkeep files.
    assert!(b
        .repo
        .file_at("HEAD", &format!("{POOL}/claimed/.gitkeep"))
        .is_some());
    // in of the removal names the lock, and has no files to give.
    let (get, dest) = b.get(&version(&removal));
    assert_eq!(lock_name(&get.assert_success().json()), "c");
    assert!(!dest.path().join("name").exists());
    assert!(get.stderr.contains("does not exist"), "{}", get.stderr);
    assert_eq!(
        b.subjects_since(&base),
        vec![
            "adding unclaimed: c",
            "adding claimed: d",
            "updating: a",
            "removing: d",
            "removing: c"
        ]
    );
}

fn impossible_puts_fail_at_once_with_the_same_messages(b: Backend) {
    let inputs = Inputs::new();
    inputs.lock("existing", "a", b"again");
    inputs.lock("missing", "zz", b"");
    for param in ["add", "add_claimed"] {
        let err = b.put_fails(json!({param: "existing"}), &inputs);
        assert!(
            err.contains("lock \"a\" already exists in pool \"envs\" (it is unclaimed)"),
            "{param}: {err}"
        );
    }
    let err = b.put_fails(json!({"release": "existing"}), &inputs);
    assert!(
        err.contains("lock \"a\" in pool \"envs\" is not claimed, so it cannot be released"),
        "{err}"
    );
    for params in [
        json!({"release": "missing"}),
        json!({"remove": "missing"}),
        json!({"claim": "zz"}),
        json!({"check": "missing"}),
        json!({"check_unclaimed": "missing"}),
    ] {
        let err = b.put_fails(params.clone(), &inputs);
        assert!(
            err.contains("lock \"zz\" does not exist in pool \"envs\""),
            "{params}: {err}"
        );
    }
    let run = b.run(
        "out",
        &[inputs.path()],
        json!({"source": b.source("no-such-pool"), "params": {"acquire": true}}),
    );
    run.assert_failure();
    assert!(
        run.stderr
            .contains("pool \"no-such-pool\" does not exist on branch \"main\""),
        "{}",
        run.stderr
    );
}

fn in_fails_once_the_claim_was_released_since(b: Backend) {
    let inputs = Inputs::new();
    let claimed = b.put(json!({"claim": "b"}), &inputs);
    inputs.lock("held", "b", b"");
    let released = b.put(json!({"release": "held"}), &inputs);
    let (get, _dest) = b.get(&version(&claimed));
    get.assert_failure();
    assert!(
        get.stderr.contains("lock instance is no longer acquired"),
        "{}",
        get.stderr
    );
    // A new claim of the same lock does not bring the old one back.
    b.put(json!({"claim": "b"}), &inputs);
    b.get(&version(&claimed)).0.assert_failure();
    let (get, dest) = b.get(&version(&released));
    assert_eq!(lock_name(&get.assert_success().json()), "b");
    assert_eq!(std::fs::read(dest.path().join("name")).unwrap(), b"b\n");
}

fn check_waits_for_unclaimed_and_check_unclaimed_for_claimed(b: Backend) {
    let inputs = Inputs::new();
    inputs.lock("a", "a", b"");
    let tip = b.repo.tip();
    let free = b.put(json!({"check": "a"}), &inputs);
    assert_eq!(
        (lock_name(&free), version(&free)),
        ("a".to_string(), tip),
        "check reports the tip and commits nothing"
    );
    b.put(json!({"claim": "a"}), &inputs);
    let tip = b.repo.tip();
    let commits = b.api_calls("CreateCommit");
    let held = b.put(json!({"check_unclaimed": "a"}), &inputs);
    assert_eq!(version(&held), tip);
    assert_eq!(b.repo.tip(), tip);
    // `check` of a claimed lock waits, and is satisfied by the release: its
    // version is the release commit, and it made none itself.
    let mut waiter = b.spawn_out(json!({"check": "a"}), &inputs);
    until_it_waited(&mut waiter, 2, "lock a of pool envs is claimed");
    assert_eq!(b.repo.tip(), tip, "a waiting check commits nothing");
    assert_eq!(b.api_calls("CreateCommit"), commits);
    let released = b.put(json!({"release": "a"}), &inputs);
    let out = waiter.finish().assert_success().json();
    assert_eq!(
        version(&out),
        version(&released),
        "satisfied by the release"
    );
    assert_eq!(b.repo.tip(), version(&released), "check made no commit");
}

fn an_idempotent_acquire_run_again_gets_the_same_lock(b: Backend) {
    b.repo.add_lock(POOL, "c", false, b"c-meta\n");
    let inputs = Inputs::new();
    let params = json!({"acquire": true, "idempotent": true});
    let first = b.put(params.clone(), &inputs);
    let tip = b.repo.tip();
    let again = b.put(params.clone(), &inputs);
    assert_eq!(again, first);
    assert_eq!(b.repo.tip(), tip, "the re-run commits nothing");
    // Another build gets another lock.
    let request = json!({"source": b.source(POOL), "params": params});
    let other = Bg::new(
        b.env
            .spawn_with("out", &[inputs.path()], &request, &[("BUILD_ID", "78")]),
        "out of build 78",
        DEADLINE,
    )
    .finish()
    .assert_success()
    .json();
    assert_ne!(lock_name(&other), lock_name(&first));
    assert_eq!(b.repo.claimed(POOL).len(), 2);
    // Without idempotent the same build takes another lock.
    let second = b.put(json!({"acquire": true}), &inputs);
    assert_ne!(lock_name(&second), lock_name(&first));
}

fn update_says_adding_for_a_missing_lock_and_updating_for_an_unclaimed_one(b: Backend) {
    let base = b.repo.tip();
    let inputs = Inputs::new();
    inputs.lock("missing", "c", b"c-meta\n");
    inputs.lock("present", "a", b"a-new\n");
    b.put(json!({"update": "missing"}), &inputs);
    b.put(json!({"update": "present"}), &inputs);
    assert_eq!(
        b.subjects_since(&base),
        vec!["adding unclaimed: c", "updating: a"]
    );
    assert_eq!(
        b.repo.unclaimed(POOL),
        vec!["a".to_string(), "b".to_string(), "c".to_string()]
    );
    assert_eq!(
        b.repo
            .file_at(&b.repo.tip(), &format!("{POOL}/unclaimed/c")),
        Some(b"c-meta\n".to_vec())
    );
}

fn in_of_a_version_about_another_pool_gets_this_pools_last_lock(b: Backend) {
    let inputs = Inputs::new();
    let claimed = b.put(json!({"claim": "b"}), &inputs);
    // Another pool on the same branch, and a commit by hand: neither
    // touches this pool, and both still stand for its last lock.
    let other_pool = b.repo.add_lock("other", "z", false, b"z-meta\n");
    let by_hand = b
        .repo
        .commit_file("notes.txt", b"hello\n", "a commit by hand");
    for v in [&other_pool, &by_hand] {
        let (get, dest) = b.get(v);
        let out = get.assert_success().json();
        assert_eq!(version(&out), *v);
        assert_eq!(
            out["metadata"].as_array().unwrap()[..2],
            [
                json!({"name": "lock_name", "value": "b"}),
                json!({"name": "pool_name", "value": POOL})
            ],
            "the requested version, with the lock {} changed",
            version(&claimed)
        );
        // The claim it stands for is the one out made, with its metadata.
        assert_eq!(out["metadata"], claimed["metadata"]);
        assert_eq!(
            std::fs::read_to_string(dest.path().join("claim")).unwrap(),
            format!("{}\n", version(&claimed))
        );
        assert_eq!(
            std::fs::read_to_string(dest.path().join("name")).unwrap(),
            "b\n"
        );
        assert_eq!(
            std::fs::read(dest.path().join("metadata")).unwrap(),
            b"b-meta\n"
        );
        assert!(dest.path().join("other/unclaimed/z").is_file());
    }
    // The claim those versions stand for ends with its release.
    inputs.lock("held", "b", b"");
    let released = b.put(json!({"release": "held"}), &inputs);
    let (get, _dest) = b.get(&by_hand);
    get.assert_failure();
    assert!(
        get.stderr.contains("lock instance is no longer acquired"),
        "{}",
        get.stderr
    );
    // After the release, a version about another pool stands for it: free.
    let later = b
        .repo
        .commit_file("notes.txt", b"again\n", "another hand commit");
    let (get, dest) = b.get(&later);
    assert_eq!(lock_name(&get.assert_success().json()), "b");
    assert_eq!(
        std::fs::read(dest.path().join("metadata")).unwrap(),
        b"b-meta\n"
    );
    assert_eq!(
        b.check(Some(&other_pool)),
        vec![version(&released)],
        "a version that did not touch the pool is not one of its versions"
    );
}

fn check_of_a_version_that_is_not_on_the_branch_lists_the_latest_whatever_the_string(b: Backend) {
    let latest = b.repo.tip();
    // A commit of the repository that is not on the branch.
    let elsewhere = b.repo.commit_on(
        &[&latest],
        &[(&format!("{POOL}/unclaimed/x"), b"")],
        &[],
        "adding unclaimed: x",
    );
    b.repo
        .git_out(&["update-ref", "refs/heads/elsewhere", &elsewhere]);
    let missing = "0123456789abcdef0123456789abcdef01234567";
    for since in [
        "bogus-ref",
        missing,
        &elsewhere,
        "not hex at all, with spaces",
        "abc1",
    ] {
        assert_eq!(b.check(Some(since)), vec![latest.clone()], "{since}");
    }
    assert_eq!(b.check(Some(&latest.to_uppercase())), vec![latest.clone()]);
    // in cannot fetch such a version, and says so.
    for (v, says) in [
        ("bogus-ref", "version.ref \"bogus-ref\" is not a commit id"),
        ("not-a-sha", "version.ref \"not-a-sha\" is not a commit id"),
        (missing, "is not on branch \"main\""),
        (elsewhere.as_str(), "is not on branch \"main\""),
    ] {
        let (get, _dest) = b.get(v);
        get.assert_failure();
        assert!(get.stderr.contains(says), "{v}: {}", get.stderr);
    }
}

/// Builds on the backend's pool (`a`, `b` unclaimed) a history with three
/// merges of hand-made branches into `main`, and an unmerged branch:
///
/// ```text
/// B -- C1 ------ M1 -- D -------------- E -- M2 -- F -------- M3 -- G
///  \            /       \                   /        \        /
///   S1 --------'         S2 -- S2b --------'          S3 ----'
/// ```
/// - S1 claims `a`; C1 adds a lock to another pool; M1 takes the pool from
///   S1 (git follows only S1 there);
/// - D claims `b`; S2 adds `c`, S2b touches no pool; E releases `a`; M2
///   combines both (its pool differs from both parents: listed);
/// - S3 adds `d`, F touches no pool, M3 keeps F's pool (S3 is never seen);
/// - G releases `b`; `unmerged` (off G) claims `c`.
///
/// Returns every commit, oldest first, and the unmerged one.
fn build_merged_history(repo: &LockRepo) -> (Vec<String>, String) {
    let lock = |state: &str, name: &str| format!("{POOL}/{state}/{name}");
    let meta = |name: &str| format!("{name}-meta\n").into_bytes();
    let b = repo.tip();
    let s1 = repo.commit_on(
        &[&b],
        &[(&lock("claimed", "a"), &meta("a"))],
        &[&lock("unclaimed", "a")],
        "claiming: a",
    );
    let c1 = repo.commit_on(
        &[&b],
        &[("other/unclaimed/z", b"z\n")],
        &[],
        "adding unclaimed: z",
    );
    let m1 = repo.commit_on(
        &[&c1, &s1],
        &[(&lock("claimed", "a"), &meta("a"))],
        &[&lock("unclaimed", "a")],
        "Merge branch 'side-1'",
    );
    let d = repo.commit_on(
        &[&m1],
        &[(&lock("claimed", "b"), &meta("b"))],
        &[&lock("unclaimed", "b")],
        "claiming: b",
    );
    let s2 = repo.commit_on(
        &[&d],
        &[(&lock("unclaimed", "c"), &meta("c"))],
        &[],
        "adding unclaimed: c",
    );
    let s2b = repo.commit_on(&[&s2], &[("notes.txt", b"side\n")], &[], "notes");
    let e = repo.commit_on(
        &[&d],
        &[(&lock("unclaimed", "a"), &meta("a"))],
        &[&lock("claimed", "a")],
        "unclaiming: a",
    );
    let m2 = repo.commit_on(
        &[&e, &s2b],
        &[
            (&lock("unclaimed", "c"), &meta("c")),
            ("notes.txt", b"side\n"),
        ],
        &[],
        "Merge branch 'side-2'",
    );
    let s3 = repo.commit_on(
        &[&m2],
        &[(&lock("unclaimed", "d"), &meta("d"))],
        &[],
        "adding unclaimed: d",
    );
    let f = repo.commit_on(&[&m2], &[("README.md", b"changed\n")], &[], "readme");
    let m3 = repo.commit_on(&[&f, &s3], &[], &[], "Merge branch 'side-3' (ours)");
    let g = repo.commit_on(
        &[&m3],
        &[(&lock("unclaimed", "b"), &meta("b"))],
        &[&lock("claimed", "b")],
        "unclaiming: b",
    );
    let unmerged = repo.commit_on(
        &[&g],
        &[(&lock("claimed", "c"), &meta("c"))],
        &[&lock("unclaimed", "c")],
        "claiming: c",
    );
    repo.git_out(&["update-ref", "refs/heads/unmerged", &unmerged]);
    repo.move_branch(Some(&b), &g);
    let all = repo.git_out(&["rev-list", "--reverse", "--topo-order", "main"]);
    (all.lines().map(String::from).collect(), unmerged)
}

/// What the git CLI says `check` from `since` lists (the Go resource's
/// command).
fn git_check(repo: &LockRepo, since: Option<&str>) -> Vec<String> {
    let out = match since {
        None => repo.git_out(&["log", "-1", "--format=%H", "main", "--", POOL]),
        Some(s) => {
            let root = repo.git_out(&["rev-list", "--max-parents=0", "main"]);
            let range = if root.trim() == s {
                "main".to_string()
            } else {
                format!("{s}~1..main")
            };
            repo.git_out(&["log", "--reverse", "--format=%H", &range, "--", POOL])
        }
    };
    out.lines().map(String::from).collect()
}

/// What the git CLI says `in` of `v` gives: the lock of the last commit at
/// or before `v` that touched the pool (a merge compared with its first
/// parent; dotfiles are not locks; none before the pool existed), whether
/// its claim is gone, and its content at `v`.
fn git_in(repo: &LockRepo, v: &str) -> (String, bool, Option<Vec<u8>>) {
    let last = repo.git_out(&["log", "-1", "--format=%H", v, "--", POOL]);
    let last = last.trim();
    if last.is_empty() {
        return (String::new(), false, None);
    }
    let out = repo.git_out(&[
        "diff-tree",
        "-r",
        "--root",
        "-m",
        "--first-parent",
        "--no-commit-id",
        "--name-only",
        "--no-renames",
        last,
        "--",
        POOL,
    ]);
    let lock = out
        .lines()
        .filter_map(|p| p.strip_prefix(&format!("{POOL}/")))
        .filter_map(|p| p.split_once('/'))
        .filter(|(dir, name)| (*dir == "claimed" || *dir == "unclaimed") && !name.starts_with('.'))
        .map(|(_, name)| name.to_string())
        .next();
    let Some(lock) = lock else {
        return (String::new(), false, None);
    };
    let claimed = format!("{POOL}/claimed/{lock}");
    let gone = repo.file_at(v, &claimed).is_some()
        && !repo
            .git_out(&["log", "--format=%H", &format!("{v}..main"), "--", &claimed])
            .trim()
            .is_empty();
    let content = repo
        .file_at(v, &claimed)
        .or_else(|| repo.file_at(v, &format!("{POOL}/unclaimed/{lock}")));
    (lock, gone, content)
}

fn check_and_in_answer_what_git_log_answers_on_a_history_with_merges(b: Backend) {
    let (all, unmerged) = build_merged_history(&b.repo);
    let mut answers = Vec::new();
    assert_eq!(b.check(None), git_check(&b.repo, None));
    for since in &all {
        let listed = b.check(Some(since));
        assert_eq!(
            listed,
            git_check(&b.repo, Some(since)),
            "check from {since}"
        );
        answers.push(listed.len());
    }
    assert_eq!(b.check(Some(&unmerged)), git_check(&b.repo, None));
    // The history is one where following first parents only, or every
    // parent, would list other versions (see build_merged_history).
    assert!(answers.iter().any(|n| *n > 1), "{answers:?}");
    let mut gone = 0;
    for v in &all {
        let subject = b.repo.git_out(&["log", "-1", "--format=%s", v]);
        let what = format!("in {v} ({})", subject.trim());
        let (lock, no_longer_acquired, content) = git_in(&b.repo, v);
        let (get, dest) = b.get(v);
        if no_longer_acquired {
            gone += 1;
            get.assert_failure();
            assert!(
                get.stderr.contains("lock instance is no longer acquired"),
                "{what}: {}",
                get.stderr
            );
            continue;
        }
        let out = get.assert_success().json();
        assert_eq!(version(&out), *v);
        assert_eq!(lock_name(&out), lock, "{what}");
        match content {
            Some(bytes) => {
                assert_eq!(
                    std::fs::read_to_string(dest.path().join("name")).unwrap(),
                    format!("{lock}\n")
                );
                assert_eq!(std::fs::read(dest.path().join("metadata")).unwrap(), bytes);
            }
            None => assert!(!dest.path().join("name").exists(), "{what}"),
        }
    }
    assert!(gone > 0, "some claims in the history are gone");
    // git log of a pool that never existed lists nothing, and so does check.
    assert!(b.check_pool("never", None).is_empty());
}

fn git_config_sets_the_commit_identity(b: Backend) {
    let mut src = b.source(POOL);
    src["git_config"] = json!([
        {"name": "user.name", "value": "Pool Bot"},
        {"name": "user.email", "value": "bot@example.com"}
    ]);
    let inputs = Inputs::new();
    b.run(
        "out",
        &[inputs.path()],
        json!({"source": src, "params": {"claim": "b"}}),
    )
    .assert_success();
    let author = b.repo.git_out(&["log", "-1", "--format=%an <%ae>"]);
    assert_eq!(author.trim(), "Pool Bot <bot@example.com>");
}

fn acquire_waits_until_a_lock_is_released(b: Backend) {
    let inputs = Inputs::new();
    b.put(json!({"claim": "a"}), &inputs);
    b.put(json!({"claim": "b"}), &inputs);
    let tip = b.repo.tip();
    let mut waiter = b.spawn_out(json!({"acquire": true}), &inputs);
    // The waiter looks at least twice, committing nothing but its place
    // in line, before the lock is released.
    until_it_waited(
        &mut waiter,
        2,
        "all 2 locks of pool envs are claimed: a (claimed by main/prod/deploy #42 for ",
    );
    assert_eq!(b.repo.claimed(POOL), ["a", "b"]);
    assert_eq!(b.subjects_since(&tip), ["waiting in line: envs"]);
    inputs.lock("held", "b", b"");
    b.put(json!({"release": "held"}), &inputs);
    let run = waiter.finish();
    assert_eq!(lock_name(&run.assert_success().json()), "b");
    let subjects = b.subjects_since(&tip);
    assert_eq!(
        subjects,
        ["waiting in line: envs", "unclaiming: b", "claiming: b"]
    );
}

fn claim_waits_for_a_claimed_lock(b: Backend) {
    let inputs = Inputs::new();
    b.put(json!({"claim": "a"}), &inputs);
    let mut waiter = b.spawn_out(json!({"claim": "a"}), &inputs);
    until_it_waited(&mut waiter, 2, "lock a of pool envs is claimed");
    inputs.lock("held", "a", b"");
    b.put(json!({"release": "held"}), &inputs);
    let run = waiter.finish();
    assert_eq!(lock_name(&run.assert_success().json()), "a");
    assert_eq!(b.repo.claimed(POOL), ["a"]);
}

fn update_waits_while_the_lock_is_claimed(b: Backend) {
    let inputs = Inputs::new();
    b.put(json!({"claim": "a"}), &inputs);
    inputs.lock("new", "a", b"new-a");
    let mut waiter = b.spawn_out(json!({"update": "new"}), &inputs);
    until_it_waited(&mut waiter, 2, "lock a of pool envs is claimed");
    assert_eq!(
        b.repo.file_at("HEAD", &format!("{POOL}/claimed/a")),
        Some(b"a-meta\n".to_vec())
    );
    inputs.lock("held", "a", b"");
    b.put(json!({"release": "held"}), &inputs);
    waiter.finish().assert_success();
    assert_eq!(
        b.repo.file_at("HEAD", &format!("{POOL}/unclaimed/a")),
        Some(b"new-a".to_vec())
    );
    assert_eq!(b.repo.log().pop().unwrap().subject, "updating: a");
}

fn add_and_add_claimed_fill_an_empty_pool_with_binary_metadata(b: Backend) {
    const EMPTY: &str = "spare";
    b.repo.add_empty_pool(EMPTY);
    let base = b.repo.tip();
    let inputs = Inputs::new();
    let binary: Vec<u8> = (0..=255u8).chain([0, 0xff, 0xfe]).collect();
    inputs.lock("new", "fresh", &binary);
    inputs.lock("new2", "busy", b"busy-meta");
    let put = |params: Value| {
        b.run(
            "out",
            &[inputs.path()],
            json!({"source": b.source(EMPTY), "params": params}),
        )
        .assert_success()
        .json()
    };
    assert_eq!(lock_name(&put(json!({"add": "new"}))), "fresh");
    put(json!({"add_claimed": "new2"}));
    assert_eq!(b.repo.unclaimed(EMPTY), ["fresh"]);
    assert_eq!(b.repo.claimed(EMPTY), ["busy"]);
    assert_eq!(
        b.repo.file_at("HEAD", &format!("{EMPTY}/unclaimed/fresh")),
        Some(binary)
    );
    assert_eq!(
        b.subjects_since(&base),
        ["adding unclaimed: fresh", "adding claimed: busy"]
    );
}

fn nested_pools_and_other_branches_work_and_missing_ones_fail(b: Backend) {
    const BRANCH: &str = "locks/v2";
    const NESTED: &str = "teams/payments/envs";
    let root = b.repo.git_out(&["rev-list", "--max-parents=0", "main"]);
    let v2 = b.repo.commit_on(
        &[root.trim()],
        &[
            (&format!("{NESTED}/unclaimed/eu"), b"eu"),
            (&format!("{NESTED}/claimed/.gitkeep"), b""),
            ("teams/payments/unclaimed/decoy", b"not in the nested pool"),
            ("teams/payments/claimed/.gitkeep", b""),
        ],
        &[],
        "nested pools",
    );
    b.repo
        .git_out(&["update-ref", &format!("refs/heads/{BRANCH}"), &v2]);
    let locks = |dir: &str| -> Vec<String> {
        b.repo
            .git_out(&["ls-tree", "--name-only", &format!("{BRANCH}:{dir}")])
            .lines()
            .filter(|l| !l.starts_with('.'))
            .map(String::from)
            .collect()
    };
    let main = b.repo.tip();
    let out = |src: Value| {
        let inputs = Inputs::new();
        b.run(
            "out",
            &[inputs.path()],
            json!({"source": src, "params": {"acquire": true}}),
        )
    };
    let run = out(b.source_on(BRANCH, NESTED));
    assert_eq!(lock_name(&run.assert_success().json()), "eu");
    assert_eq!(locks(&format!("{NESTED}/claimed")), ["eu"]);
    assert_eq!(locks("teams/payments/unclaimed"), ["decoy"]);
    assert_eq!(b.repo.tip(), main, "main is left alone");

    let run = out(b.source_on(BRANCH, "nope"));
    run.assert_failure();
    assert!(
        run.stderr
            .contains("pool \"nope\" does not exist on branch \"locks/v2\""),
        "{}",
        run.stderr
    );
    let run = out(b.source_on("gone", NESTED));
    run.assert_failure();
    assert!(
        run.stderr.contains("branch \"gone\" does not exist"),
        "{}",
        run.stderr
    );
}
