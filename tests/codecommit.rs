//! CodeCommit with the instance profile, against local stand-ins that speak
//! the real protocols: an IMDSv2 endpoint handing out rotating session
//! credentials, `git http-backend` behind a Basic-auth check that recomputes
//! CodeCommit's signed password for the real host name, and a CodeCommit
//! JSON-API server backed by a real bare repository. The executables see no
//! AWS configuration from the machine (see `support::AwsEnv`).

use std::collections::BTreeSet;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::races::{assert_race_history, held_names, Cycle, FIVE};
use crate::support::{
    run_bin, AwsEnv, Bg, CodeCommitServer, CommitInfo, GitSignatureCheck, HttpGitServer,
    HttpOptions, Imds, ImdsOptions, Keyring, LockRepo, Run,
};
use crate::{lock_name, version, Inputs};

const REGION: &str = "eu-west-2";
const HOST: &str = "git-codecommit.eu-west-2.amazonaws.com";
const URI: &str = "https://git-codecommit.eu-west-2.amazonaws.com/v1/repos/locks";
const POOL: &str = "envs";
/// Longer than any step should take; a hung executable fails the test
/// instead of hanging it.
const DEADLINE: Duration = Duration::from_secs(30);

fn pool_repo(branch: &str) -> LockRepo {
    let repo = LockRepo::new(branch);
    repo.add_lock(POOL, "a", false, b"a-meta\n");
    repo.add_lock(POOL, "b", false, b"b-meta\n");
    repo
}

/// Waits for `child` at most [`DEADLINE`], killing it (and failing) if it
/// is still running then.
fn finish(child: Child, what: &str) -> Run {
    Bg::new(child, what, DEADLINE).finish()
}

/// Panics if any of `secrets` appears in what `runs` printed.
pub(crate) fn assert_no_secrets(secrets: &[String], runs: &[&Run]) {
    assert!(!secrets.is_empty(), "there are secrets to look for");
    for run in runs {
        for secret in secrets.iter().filter(|s| s.len() >= 8) {
            for (stream, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
                assert!(
                    !text.contains(secret.as_str()),
                    "{stream} of {} contains the secret {secret:?}:\n{text}",
                    run.command
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Git over HTTPS, signed with instance-profile credentials.
// ---------------------------------------------------------------------------

/// A lock repository served as CodeCommit's Git endpoint, and an IMDS.
struct GitSide {
    repo: LockRepo,
    imds: Imds,
    check: GitSignatureCheck,
    server: HttpGitServer,
    env: AwsEnv,
}

impl GitSide {
    fn start(repo: LockRepo, opts: ImdsOptions) -> GitSide {
        let imds = Imds::start(opts, Keyring::new());
        let check = GitSignatureCheck::new(imds.keyring(), HOST, REGION);
        let server = HttpGitServer::start(
            repo.root(),
            HttpOptions {
                auth_check: Some(check.auth_check()),
                url_prefix: "/v1/repos".into(),
                ..HttpOptions::default()
            },
        );
        let env = AwsEnv::new().with_imds(&imds).set(
            "POOL_RESOURCE_CODECOMMIT_GIT_ENDPOINT",
            &format!("http://127.0.0.1:{}", server.port()),
        );
        GitSide {
            repo,
            imds,
            check,
            server,
            env,
        }
    }

    fn source(&self, uri: &str) -> Value {
        json!({"uri": uri, "branch": self.repo.branch(), "pool": POOL, "retry_delay": "50ms"})
    }

    fn put(&self, src: &Value, params: Value, inputs: &Inputs) -> Run {
        self.env.run(
            "out",
            &[inputs.path()],
            &json!({"source": src, "params": params}),
        )
    }

    /// Generations of the keys accepted so far, and every rejection.
    fn verdicts(&self) -> (Vec<usize>, Vec<String>) {
        let mut accepted = Vec::new();
        let mut rejected = Vec::new();
        for v in self.check.verdicts() {
            match v.outcome {
                Ok(generation) => accepted.push(generation),
                Err(why) => rejected.push(why),
            }
        }
        (accepted, rejected)
    }

    /// Everything secret: what IMDS handed out and every signed password.
    fn secrets(&self) -> Vec<String> {
        let mut out = self.imds.secrets();
        for v in self.check.verdicts() {
            out.push(v.password);
            out.push(v.user);
        }
        out
    }
}

#[test]
fn git_over_https_signs_with_instance_profile_keys_and_follows_their_rotation() {
    let side = GitSide::start(
        pool_repo("main"),
        ImdsOptions {
            rotate_every: 0,
            ..ImdsOptions::default()
        },
    );
    let src = side.source(URI);
    let inputs = Inputs::new();
    let acquire = side.put(&src, json!({"acquire": true}), &inputs);
    let out = acquire.assert_success().json();
    let lock = lock_name(&out);
    assert_eq!(side.repo.claimed(POOL), std::slice::from_ref(&lock));
    assert_eq!(version(&out), side.repo.tip());
    let (accepted, rejected) = side.verdicts();
    assert!(
        !accepted.is_empty() && accepted.iter().all(|g| *g == 1),
        "{accepted:?}"
    );
    assert!(rejected.is_empty(), "{rejected:?}");
    assert!(side.imds.served("/latest/api/token") >= 1);
    assert_eq!(
        side.imds.served("/latest/meta-data/placement/region"),
        0,
        "the region comes from the URI"
    );
    assert!(
        side.imds.credential_fetches() >= 2,
        "a fresh signature per connection: {:?}",
        side.imds.requests()
    );
    assert!(
        side.server
            .requests()
            .iter()
            .any(|r| r.contains("/v1/repos/locks/git-receive-pack")),
        "{:?}",
        side.server.requests()
    );

    // The instance profile's keys rotate: the old pair stays valid until it
    // expires, but everything from now on is signed with the new one.
    side.imds.rotate();
    let dest = TempDir::new().unwrap();
    let get = side.env.run(
        "in",
        &[dest.path()],
        &json!({"source": src, "version": {"ref": version(&out)}}),
    );
    assert_eq!(get.assert_success().json(), out);
    assert_eq!(
        std::fs::read(dest.path().join("name")).unwrap(),
        format!("{lock}\n").as_bytes()
    );
    inputs.lock("held", &lock, b"");
    let release = side.put(&src, json!({"release": "held"}), &inputs);
    assert_eq!(lock_name(&release.assert_success().json()), lock);
    assert_eq!(side.repo.claimed(POOL), Vec::<String>::new());
    let (accepted, rejected) = side.verdicts();
    let first_after_rotation = accepted.iter().position(|g| *g == 2).expect("gen 2 used");
    assert!(
        accepted[first_after_rotation..].iter().all(|g| *g == 2),
        "after the rotation only the new key is used: {accepted:?}"
    );
    assert!(rejected.is_empty(), "{rejected:?}");
    assert_eq!(side.imds.generations(), 2);
    assert_no_secrets(&side.secrets(), &[&acquire, &get, &release]);
}

#[test]
fn every_git_connection_fetches_credentials_again() {
    let side = GitSide::start(pool_repo("main"), ImdsOptions::default());
    let src = side.source(URI);
    let run = side.put(&src, json!({"claim": "a"}), &Inputs::new());
    run.assert_success();
    let (accepted, rejected) = side.verdicts();
    assert!(rejected.is_empty(), "{rejected:?}");
    let distinct: BTreeSet<usize> = accepted.iter().copied().collect();
    assert!(
        distinct.len() >= 2,
        "the fetch and the push each signed with the key current then: {accepted:?}"
    );
    assert_no_secrets(&side.secrets(), &[&run]);
}

#[test]
fn a_waiting_put_keeps_working_after_its_first_key_expires() {
    let repo = LockRepo::new("main");
    repo.add_lock(POOL, "only", true, b"");
    let side = GitSide::start(
        repo,
        ImdsOptions {
            lifetime: Duration::from_secs(2),
            rotate_every: 0,
            ..ImdsOptions::default()
        },
    );
    let src = side.source(URI);
    let inputs = Inputs::new();
    let waiter = side.env.spawn(
        "out",
        &[inputs.path()],
        &json!({"source": src, "params": {"acquire": true}}),
    );
    // Wait until the first key has expired and the waiter has gone on
    // looking (signing with newer keys) after that.
    let first = side.imds.keyring();
    let start = Instant::now();
    let mut seen_after_expiry = None;
    loop {
        let expired = first
            .all()
            .first()
            .is_some_and(|k| k.expires < std::time::SystemTime::now());
        let verdicts = side.check.verdicts().len();
        match seen_after_expiry {
            None if expired => seen_after_expiry = Some(verdicts),
            Some(n) if verdicts >= n + 3 => break,
            _ => {}
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no signed looks after the first key expired: {:?}\n{:?}",
            crate::support::imds::summarize(&side.imds.requests()),
            side.verdicts()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    inputs.lock("held", "only", b"");
    side.put(&src, json!({"release": "held"}), &inputs)
        .assert_success();
    let run = finish(waiter, "the waiting acquire");
    assert_eq!(lock_name(&run.assert_success().json()), "only");
    let (accepted, rejected) = side.verdicts();
    assert!(rejected.is_empty(), "{rejected:?}");
    assert!(
        accepted.contains(&1) && accepted.iter().any(|g| *g >= 3),
        "{accepted:?}"
    );
    assert_no_secrets(&side.secrets(), &[&run]);
}

#[test]
fn keys_codecommit_does_not_accept_fail_at_once_naming_git_pull() {
    let side = GitSide::start(
        pool_repo("main"),
        ImdsOptions {
            wrong_secret: true,
            ..ImdsOptions::default()
        },
    );
    let start = Instant::now();
    let run = side.put(&side.source(URI), json!({"acquire": true}), &Inputs::new());
    run.assert_failure();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    assert!(
        run.stderr.contains("authentication failed") && run.stderr.contains("codecommit:GitPull"),
        "{}",
        run.stderr
    );
    let (accepted, rejected) = side.verdicts();
    assert!(accepted.is_empty(), "{accepted:?}");
    assert!(
        rejected.iter().all(|why| why == "signature mismatch"),
        "{rejected:?}"
    );
    assert_eq!(side.repo.claimed(POOL), Vec::<String>::new());
    assert_no_secrets(&side.secrets(), &[&run]);
}

#[test]
fn without_credentials_both_backends_say_where_they_looked_and_mention_the_hop_limit() {
    let side = GitSide::start(pool_repo("main"), ImdsOptions::default());
    let env = AwsEnv::new()
        .with_imds(&side.imds)
        .set("AWS_EC2_METADATA_DISABLED", "true")
        .set(
            "POOL_RESOURCE_CODECOMMIT_GIT_ENDPOINT",
            &format!("http://127.0.0.1:{}", side.server.port()),
        );
    let mut api_src = side.source(URI);
    api_src["backend"] = json!("codecommit-api");
    for src in [side.source(URI), api_src] {
        let start = Instant::now();
        let run = env.run(
            "out",
            &[Inputs::new().path()],
            &json!({"source": src, "params": {"acquire": true}}),
        );
        run.assert_failure();
        assert!(
            run.stderr.contains("no AWS credentials found")
                && run.stderr.contains("instance metadata")
                && run.stderr.contains("hop limit"),
            "{}",
            run.stderr
        );
        assert!(start.elapsed() < Duration::from_secs(10));
    }
    assert!(
        side.imds.requests().is_empty(),
        "{:?}",
        side.imds.requests()
    );
}

#[test]
fn the_codecommit_uri_forms_take_the_region_from_the_uri_the_source_or_the_environment() {
    let side = GitSide::start(pool_repo("main"), ImdsOptions::default());
    let inputs = Inputs::new();
    let grc = side.source("codecommit::eu-west-2://locks");
    let claim = side.put(&grc, json!({"claim": "a"}), &inputs);
    let claimed_at = version(&claim.assert_success().json());
    assert_eq!(side.repo.claimed(POOL), ["a"]);

    let check = |src: &Value, env: &AwsEnv| {
        let run = env.run("check", &[], &json!({"source": src}));
        let versions = run.assert_success().json();
        assert_eq!(versions, json!([{"ref": claimed_at}]), "{src}");
        run
    };
    let mut with_region = side.source("codecommit://locks");
    with_region["aws_region"] = json!(REGION);
    let by_source = check(&with_region, &side.env);
    let by_env = check(
        &side.source("codecommit://locks"),
        &AwsEnv::new()
            .with_imds(&side.imds)
            .set("AWS_REGION", REGION)
            .set(
                "POOL_RESOURCE_CODECOMMIT_GIT_ENDPOINT",
                &format!("http://127.0.0.1:{}", side.server.port()),
            ),
    );
    assert_eq!(
        side.imds.served("/latest/meta-data/placement/region"),
        0,
        "the URI, the source and the environment come before instance metadata"
    );
    let (_, rejected) = side.verdicts();
    assert!(rejected.is_empty(), "{rejected:?}");
    assert_no_secrets(&side.secrets(), &[&claim, &by_source, &by_env]);
}

#[test]
fn both_backends_find_the_region_of_codecommit_name_in_the_profile_or_instance_metadata() {
    let side = GitSide::start(pool_repo("main"), ImdsOptions::default());
    let api = CodeCommitServer::start(side.repo.path(), "locks", REGION, side.imds.keyring());
    let tip = side.repo.tip();
    let region_asked = || side.imds.served("/latest/meta-data/placement/region");
    let config = side.env.home().join("aws-config");
    std::fs::write(
        &config,
        "[default]\nregion = us-east-1\n\n[profile ops]\nregion = eu-west-2\n",
    )
    .unwrap();
    let env = |imds: Option<&Imds>| {
        let env = match imds {
            Some(imds) => AwsEnv::new().with_imds(imds),
            None => AwsEnv::new(),
        };
        env.set(
            "POOL_RESOURCE_CODECOMMIT_GIT_ENDPOINT",
            &format!("http://127.0.0.1:{}", side.server.port()),
        )
        .set("AWS_ENDPOINT_URL_CODECOMMIT", &api.endpoint())
    };
    let sources = |uri: &str| {
        let git = side.source(uri);
        let mut api = git.clone();
        api["backend"] = json!("codecommit-api");
        [git, api]
    };
    let check = |src: &Value, env: &AwsEnv| {
        let run = env.run("check", &[], &json!({"source": src}));
        assert_eq!(run.assert_success().json(), json!([{"ref": tip}]), "{src}");
        run
    };
    let mut runs = Vec::new();

    // Nothing in the URI, the source, the environment or a profile: the
    // instance's metadata says, as the SDK's default region chain finds it.
    for src in sources("codecommit://locks") {
        let before = region_asked();
        runs.push(check(&src, &env(Some(&side.imds))));
        assert!(region_asked() > before, "{src}: {:?}", side.imds.requests());
    }
    // The profile's region comes before instance metadata; the
    // environment before the profile (the default profile's us-east-1
    // would be signed for the wrong region and refused).
    let with_profile = env(Some(&side.imds)).set("AWS_CONFIG_FILE", &config.display().to_string());
    let before = region_asked();
    for src in sources("codecommit://ops@locks") {
        runs.push(check(&src, &with_profile));
    }
    let by_env = with_profile.set("AWS_REGION", REGION);
    for src in sources("codecommit://locks") {
        runs.push(check(&src, &by_env));
    }
    assert_eq!(region_asked(), before, "{:?}", side.imds.requests());

    // Nowhere: the error lists where it looked. Instance metadata turned
    // off, or not answering (as off EC2).
    let closed = format!("http://127.0.0.1:{}", crate::support::free_port());
    for env in [
        env(Some(&side.imds)).set("AWS_EC2_METADATA_DISABLED", "true"),
        env(None).set("AWS_EC2_METADATA_SERVICE_ENDPOINT", &closed),
    ] {
        for src in sources("codecommit://locks") {
            let start = Instant::now();
            let run = env.run("check", &[], &json!({"source": src}));
            run.assert_failure();
            for needle in [
                "does not say which AWS region",
                "source.aws_region",
                "AWS_REGION",
                "the shared config file",
                "EC2 instance metadata",
            ] {
                assert!(run.stderr.contains(needle), "{needle}: {}", run.stderr);
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "{:?}",
                start.elapsed()
            );
            runs.push(run);
        }
    }
    let (accepted, rejected) = side.verdicts();
    assert!(!accepted.is_empty() && rejected.is_empty(), "{rejected:?}");
    assert!(api.calls("GetBranch") >= 3, "{:?}", api.log());
    let runs: Vec<&Run> = runs.iter().collect();
    assert_no_secrets(&side.secrets(), &runs);
}

#[test]
fn a_uri_that_is_not_codecommit_never_asks_instance_metadata() {
    let repo = pool_repo("main");
    let imds = Imds::start(ImdsOptions::default(), Keyring::new());
    let env = AwsEnv::new().with_imds(&imds);
    let src = crate::source(&repo.file_url(), "main", POOL);
    let run = env.run(
        "out",
        &[Inputs::new().path()],
        &json!({"source": src, "params": {"acquire": true}}),
    );
    run.assert_success();
    assert!(imds.requests().is_empty(), "{:?}", imds.requests());
}

// ---------------------------------------------------------------------------
// The CodeCommit API backend.
// ---------------------------------------------------------------------------

// What every backend must do alike (the put params, in, check) is asserted
// for this one by the scenarios of `behaviour.rs`; here is only what is the
// API's own: keys, IAM errors, throttling and lost CreateCommit replies.

/// A lock repository behind the CodeCommit API stand-in, and an IMDS.
struct ApiSide {
    repo: LockRepo,
    imds: Imds,
    api: CodeCommitServer,
    env: AwsEnv,
}

impl ApiSide {
    fn start(repo: LockRepo) -> ApiSide {
        ApiSide::with_imds(repo, ImdsOptions::default())
    }

    fn with_imds(repo: LockRepo, opts: ImdsOptions) -> ApiSide {
        let imds = Imds::start(opts, Keyring::new());
        let api = CodeCommitServer::start(repo.path(), "locks", REGION, imds.keyring());
        let env = AwsEnv::new()
            .with_imds(&imds)
            .set("AWS_ENDPOINT_URL_CODECOMMIT", &api.endpoint());
        ApiSide {
            repo,
            imds,
            api,
            env,
        }
    }

    fn source(&self, pool: &str) -> Value {
        json!({
            "uri": URI,
            "branch": self.repo.branch(),
            "pool": pool,
            "retry_delay": "50ms",
            "backend": "codecommit-api",
        })
    }

    fn out(&self, src: &Value, params: Value, inputs: &Inputs) -> Run {
        let child = self.env.spawn(
            "out",
            &[inputs.path()],
            &json!({"source": src, "params": params}),
        );
        finish(child, &format!("out {params}"))
    }

    fn put(&self, params: Value, inputs: &Inputs) -> Value {
        self.out(&self.source(POOL), params, inputs)
            .assert_success()
            .json()
    }

    fn spawn_put(&self, params: Value, inputs: &Inputs) -> Child {
        self.env.spawn(
            "out",
            &[inputs.path()],
            &json!({"source": self.source(POOL), "params": params}),
        )
    }

    fn subjects(&self) -> Vec<String> {
        self.repo.log().into_iter().map(|c| c.subject).collect()
    }
}

#[test]
fn a_waiting_api_put_keeps_working_after_its_first_key_expires() {
    let repo = LockRepo::new("main");
    repo.add_lock(POOL, "only", true, b"");
    let side = ApiSide::with_imds(
        repo,
        ImdsOptions {
            lifetime: Duration::from_secs(2),
            rotate_every: 0,
            ..ImdsOptions::default()
        },
    );
    let inputs = Inputs::new();
    let waiter = side.spawn_put(json!({"acquire": true}), &inputs);
    let keyring = side.imds.keyring();
    let start = Instant::now();
    let mut seen_after_expiry = None;
    loop {
        let expired = keyring
            .all()
            .first()
            .is_some_and(|k| k.expires < std::time::SystemTime::now());
        let looks = side.api.calls("GetBranch");
        match seen_after_expiry {
            None if expired => seen_after_expiry = Some(looks),
            Some(n) if looks >= n + 3 => break,
            _ => {}
        }
        assert!(start.elapsed() < DEADLINE, "{:?}", side.api.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    inputs.lock("held", "only", b"");
    side.put(json!({"release": "held"}), &inputs);
    let run = finish(waiter, "the waiting acquire");
    assert_eq!(lock_name(&run.assert_success().json()), "only");
    assert!(side.imds.generations() >= 3, "{}", side.imds.generations());
    // The waiting log's look for the holder asks for the claimed folder
    // before the claim, which is not there, and each look at a pool with a
    // claimed lock asks for its shares file, which no shared hold wrote:
    // answers, not a key refused.
    assert!(
        side.api.log().iter().all(|l| l.ends_with("-> 200")
            || l.ends_with("-> FolderDoesNotExistException")
            || l.ends_with("-> FileDoesNotExistException")),
        "only valid keys were used: {:?}",
        side.api.log()
    );
    assert_no_secrets(&side.imds.secrets(), &[&run]);
}

#[test]
fn api_credentials_codecommit_refuses_name_the_iam_action() {
    let side = ApiSide::with_imds(
        pool_repo("main"),
        ImdsOptions {
            wrong_secret: true,
            ..ImdsOptions::default()
        },
    );
    let start = Instant::now();
    let run = side.out(&side.source(POOL), json!({"acquire": true}), &Inputs::new());
    run.assert_failure();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert!(
        run.stderr.contains("authentication failed")
            && run.stderr.contains("codecommit:GetBranch")
            && run.stderr.contains("arn:aws:codecommit:eu-west-2:"),
        "{}",
        run.stderr
    );
    assert!(
        side.api
            .log()
            .iter()
            .all(|l| l.ends_with("InvalidSignatureException")),
        "{:?}",
        side.api.log()
    );
    assert_no_secrets(&side.imds.secrets(), &[&run]);
}

#[test]
fn api_throttling_is_retried() {
    let side = ApiSide::start(pool_repo("main"));
    side.api.throttle_next(2);
    let out = side.put(json!({"claim": "a"}), &Inputs::new());
    assert_eq!(lock_name(&out), "a");
    assert_eq!(side.repo.claimed(POOL), ["a"]);
    let throttled = side
        .api
        .log()
        .iter()
        .filter(|l| l.ends_with("ThrottlingException"))
        .count();
    assert_eq!(throttled, 2, "{:?}", side.api.log());
}

/// The claiming commits since `base`, oldest first.
fn claims_since(repo: &LockRepo, base: &str) -> Vec<CommitInfo> {
    let log = repo.log();
    let start = log
        .iter()
        .position(|c| c.sha == base)
        .expect("base on branch");
    log[start + 1..]
        .iter()
        .filter(|c| c.subject.starts_with("claiming: "))
        .cloned()
        .collect()
}

#[test]
fn a_lost_create_commit_reply_is_recovered_without_claiming_a_second_lock() {
    let side = ApiSide::start(pool_repo("main"));
    let base = side.repo.tip();
    side.api.lose_create_commit_replies(1);
    let run = side.out(&side.source(POOL), json!({"acquire": true}), &Inputs::new());
    let out = run.assert_success().json();
    let lost = side.api.lost_commits();
    assert_eq!(lost.len(), 1, "{:?}", side.api.log());
    assert_eq!(version(&out), lost[0], "the put reports the commit it made");
    let lock = lock_name(&out);
    assert_eq!(side.repo.claimed(POOL), std::slice::from_ref(&lock));
    let claims = claims_since(&side.repo, &base);
    assert_eq!(claims.len(), 1, "{claims:?}");
    assert!(
        run.stderr.contains("reply was lost did reach the branch"),
        "{}",
        run.stderr
    );
}

#[test]
fn lost_replies_of_a_claim_and_a_release_are_recovered_too() {
    let side = ApiSide::start(pool_repo("main"));
    let inputs = Inputs::new();
    side.api.lose_create_commit_replies(1);
    let claim = side.out(&side.source(POOL), json!({"claim": "a"}), &inputs);
    let out = claim.assert_success().json();
    assert_eq!(version(&out), side.api.lost_commits()[0]);
    assert_eq!(side.repo.claimed(POOL), ["a"]);

    inputs.lock("held", "a", b"");
    side.api.lose_create_commit_replies(1);
    let release = side.out(&side.source(POOL), json!({"release": "held"}), &inputs);
    let out = release.assert_success().json();
    assert_eq!(version(&out), side.api.lost_commits()[1]);
    assert_eq!(side.repo.unclaimed(POOL), ["a", "b"]);
    assert_eq!(
        side.subjects()[side.subjects().len() - 2..],
        ["claiming: a", "unclaiming: a"]
    );
}

/// The reply of an accepted release is lost and, before the put looks for
/// it, the next build claims the lock; then the `GetCommit` calls of that
/// look fail (500s, as many as the SDK makes attempts). The put once forgot
/// its pending release when that look failed, planned a fresh release and
/// unclaimed the next build's claim: two holders. It must keep the pending
/// change, find its release on the next round and leave the claim alone.
#[test]
fn a_lost_release_reply_then_a_failed_get_commit_never_releases_the_next_holders_claim() {
    let side = ApiSide::start(pool_repo("main"));
    let held = Inputs::new();
    side.put(json!({"claim": "a"}), &held);
    held.lock("held", "a", b"");
    let base = side.repo.tip();
    side.api.lose_create_commit_replies(1);
    let next = {
        let local = crate::source(&side.repo.path().display().to_string(), "main", POOL);
        let api = side.api.fail_handle();
        let (tx, rx) = std::sync::mpsc::channel();
        side.api.after_lost_reply(move || {
            let run = run_bin(
                "out",
                &[Inputs::new().path()],
                &json!({"source": local, "params": {"claim": "a"}}),
                &[("BUILD_ID", "next-holder")],
            );
            api("GetCommit", 3);
            let _ = tx.send(run);
        });
        rx
    };
    let release = side.out(&side.source(POOL), json!({"release": "held"}), &held);
    let next = next
        .try_recv()
        .expect("the next build ran while the reply was lost");
    next.assert_success();
    let out = release.assert_success().json();
    let lost = side.api.lost_commits();
    assert_eq!(lost.len(), 1, "{:?}", side.api.log());
    assert_eq!(version(&out), lost[0], "the put reports its own release");
    let log = side.repo.log();
    let start = log.iter().position(|c| c.sha == base).expect("base");
    let subjects: Vec<&str> = log[start + 1..]
        .iter()
        .map(|c| c.subject.as_str())
        .collect();
    assert_eq!(
        subjects,
        ["unclaiming: a", "claiming: a"],
        "{}\n{:?}",
        release.stderr,
        side.api.log()
    );
    assert_eq!(side.repo.claimed(POOL), ["a"]);
    let failed = side
        .api
        .log()
        .iter()
        .filter(|l| *l == "GetCommit -> InternalFailure")
        .count();
    assert_eq!(failed, 3, "{:?}", side.api.log());
    assert!(
        release
            .stderr
            .contains("codecommit:GetCommit failed (InternalFailure)")
            && release.stderr.contains("retrying in"),
        "the failed look was a fault the put retried:\n{}",
        release.stderr
    );
}

// ---------------------------------------------------------------------------
// Racing processes.
// ---------------------------------------------------------------------------

/// Runs `workers` threads of `cycles` acquire → release each; worker `w`
/// uses `source_of(w)`. Returns every cycle.
fn race(
    env: &AwsEnv,
    workers: usize,
    cycles: usize,
    source_of: &dyn Fn(usize) -> Value,
) -> Vec<Cycle> {
    race_with(env, workers, cycles, source_of, &json!({"acquire": true}))
}

/// [`race`] claiming with `claim_params` (`acquire: 2`, say).
fn race_with(
    env: &AwsEnv,
    workers: usize,
    cycles: usize,
    source_of: &dyn Fn(usize) -> Value,
    claim_params: &Value,
) -> Vec<Cycle> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let src = source_of(w);
                scope.spawn(move || {
                    let inputs = Inputs::new();
                    let put = |params: Value, build: &str| {
                        let child = env.spawn_with(
                            "out",
                            &[inputs.path()],
                            &json!({"source": src, "params": params}),
                            &[("BUILD_ID", build)],
                        );
                        let run = finish(child, &format!("worker {w}"));
                        let out = run.assert_success().json();
                        (lock_name(&out), version(&out))
                    };
                    (0..cycles)
                        .map(|c| {
                            let build = format!("w{w}-c{c}");
                            let (lock, claim) = put(claim_params.clone(), &build);
                            inputs.lock("held", &held_names(&lock), b"");
                            let (released, release) = put(json!({"release": "held"}), &build);
                            assert_eq!(released, lock, "{build} released what it claimed");
                            Cycle {
                                build,
                                lock,
                                claim,
                                release,
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a racer panicked"))
            .collect()
    })
}

/// Replays the history since `base` and checks mutual exclusion: every claim
/// of an unclaimed lock, every release of a claimed one, one lock per
/// commit, each cycle's claim followed by that same cycle's release, and
/// every lock free at the end.
fn assert_mutual_exclusion(repo: &LockRepo, base: &str, locks: &[&str], cycles: &[Cycle]) {
    let log = repo.log();
    let start = log
        .iter()
        .position(|c| c.sha == base)
        .expect("base on branch");
    assert_race_history(repo, &log[start..], locks, cycles, cycles.len());
    assert!(repo.claimed(POOL).is_empty());
}

#[test]
fn racing_api_processes_never_claim_a_lock_twice() {
    let side = ApiSide::start(pool_repo("main"));
    let base = side.repo.tip();
    let start = Instant::now();
    let src = side.source(POOL);
    let cycles = race(&side.env, 6, 2, &|_| src.clone());
    eprintln!(
        "{} API acquire/release cycles in {:?}; API calls: {} CreateCommit, {} lost races",
        cycles.len(),
        start.elapsed(),
        side.api.calls("CreateCommit"),
        side.api
            .log()
            .iter()
            .filter(|l| l.ends_with("ParentCommitIdOutdatedException"))
            .count()
    );
    assert_mutual_exclusion(&side.repo, &base, &["a", "b"], &cycles);
}

#[test]
fn racing_api_processes_taking_two_of_five_locks_never_share_or_deadlock() {
    let repo = LockRepo::new("main");
    for lock in FIVE {
        repo.add_lock(POOL, lock, false, format!("{lock}-meta\n").as_bytes());
    }
    let side = ApiSide::start(repo);
    let base = side.repo.tip();
    let start = Instant::now();
    let src = side.source(POOL);
    let cycles = race_with(&side.env, 6, 2, &|_| src.clone(), &json!({"acquire": 2}));
    eprintln!(
        "{} API two-lock cycles in {:?}; {} CreateCommit calls",
        cycles.len(),
        start.elapsed(),
        side.api.calls("CreateCommit"),
    );
    assert!(cycles.iter().all(|c| c.lock.split(", ").count() == 2));
    assert_mutual_exclusion(&side.repo, &base, &FIVE, &cycles);
}

#[test]
fn a_pool_shared_by_git_and_api_processes_stays_consistent() {
    let side = ApiSide::start(pool_repo("main"));
    let base = side.repo.tip();
    let api = side.source(POOL);
    let git = crate::source(&side.repo.file_url(), "main", POOL);
    let start = Instant::now();
    let cycles = race(&side.env, 6, 2, &|w| {
        if w % 2 == 0 {
            api.clone()
        } else {
            git.clone()
        }
    });
    eprintln!(
        "{} mixed git/API cycles in {:?}; {} CreateCommit calls",
        cycles.len(),
        start.elapsed(),
        side.api.calls("CreateCommit")
    );
    assert!(
        side.api.calls("CreateCommit") >= 6,
        "the API side took part"
    );
    assert_mutual_exclusion(&side.repo, &base, &["a", "b"], &cycles);
}

/// The replay must catch a lock claimed twice and a claim ended by another
/// process, or the race tests above prove nothing.
#[test]
fn the_replay_rejects_a_double_claim_and_a_stolen_lock() {
    let panic_message = |f: &dyn Fn()| -> String {
        let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
            .expect_err("the replay accepted a broken history");
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    };
    let claimed = format!("{POOL}/claimed/a");
    let unclaimed = format!("{POOL}/unclaimed/a");
    let step = |repo: &LockRepo, claim: bool, build: &str| {
        let (to, from, verb) = if claim {
            (&claimed, &unclaimed, "claiming")
        } else {
            (&unclaimed, &claimed, "unclaiming")
        };
        repo.commit_changes(
            &[(to, b"")],
            &[from],
            &format!("{verb}: a\n\nPool-Resource-Build-Id: {build}\n"),
        )
    };

    let repo = LockRepo::new("main");
    repo.add_lock(POOL, "a", false, b"");
    let base = repo.tip();
    step(&repo, true, "w0-c0");
    repo.commit_changes(&[(&claimed, b"x")], &[], "claiming: a");
    let message = panic_message(&|| assert_mutual_exclusion(&repo, &base, &["a"], &[]));
    assert!(
        message.contains("claims a while it is Some(Claimed"),
        "{message}"
    );

    let repo = LockRepo::new("main");
    repo.add_lock(POOL, "a", false, b"");
    let base = repo.tip();
    let cycle = |build: &str, claim: &str, release: &str| Cycle {
        build: build.into(),
        lock: "a".into(),
        claim: claim.into(),
        release: release.into(),
    };
    let c1 = step(&repo, true, "w0-c0");
    let c2 = step(&repo, false, "w0-c0");
    assert_mutual_exclusion(&repo, &base, &["a"], &[cycle("w0-c0", &c1, &c2)]);

    // w1 releases w0's claim, claims the lock itself, and w0 "releases" it.
    let c3 = step(&repo, true, "w0-c1");
    let c4 = step(&repo, false, "w1-c0");
    let c5 = step(&repo, true, "w1-c0");
    let c6 = step(&repo, false, "w0-c1");
    let cycles = [
        cycle("w0-c0", &c1, &c2),
        cycle("w0-c1", &c3, &c6),
        cycle("w1-c0", &c5, &c4),
    ];
    let message = panic_message(&|| assert_mutual_exclusion(&repo, &base, &["a"], &cycles));
    assert!(message.contains("changed hands"), "{message}");
}
