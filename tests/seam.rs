//! The store seam driven in-process, the same way on both backends: a put's
//! commit that also writes and removes files outside the pool (what a
//! waiting room's tickets need), and a CodeCommit reply without a commit id.

use pool_resource::config::Source;
use pool_resource::model::names::{LockName, PoolPath};
use pool_resource::model::pool::{plan, Operation, Plan, Single};
use pool_resource::process::log::Log;
use pool_resource::process::signal::Interrupt;
use pool_resource::protocol::RawRequest;
use pool_resource::store::codecommit::api::CodeCommitStore;
use pool_resource::store::codecommit::creds::Aws;
use pool_resource::store::git::GitStore;
use pool_resource::store::seam::{
    Cache, CommitOutcome, FileEdit, Identity, LockStore, PutStore, Step,
};
use pool_resource::Error;
use serde_json::json;

use crate::support::codecommit::CodeCommitServer;
use crate::support::imds::Keyring;
use crate::support::LockRepo;

const POOL: &str = "envs";
const REGION: &str = "eu-west-2";
const URI: &str = "https://git-codecommit.eu-west-2.amazonaws.com/v1/repos/locks";
const TICKET: &str = "waiting/envs/ticket-1";
const NEXT: &str = "waiting/envs/ticket-2";

fn pool_repo() -> LockRepo {
    let repo = LockRepo::new("main");
    repo.add_lock(POOL, "a", false, b"a-meta\n");
    repo.add_lock(POOL, "b", false, b"b-meta\n");
    repo.commit_file(TICKET, b"first in line\n", "waiting: ticket-1");
    repo
}

fn git_store(repo: &LockRepo) -> GitStore {
    let request = json!({"source": {"uri": repo.path().display().to_string(), "branch": "main", "pool": POOL}});
    let request = RawRequest::parse(request.to_string().as_bytes()).expect("request");
    let source = Source::from_request(&request).expect("source");
    GitStore::open(
        &source,
        Identity::default(),
        Cache::Fresh,
        Log::new(Box::new(std::io::sink())),
        Interrupt::default(),
    )
    .expect("opening the git store")
}

fn api_store(repo: &LockRepo) -> (CodeCommitServer, CodeCommitStore) {
    let keyring = Keyring::new();
    keyring.add_static("AKIDSEAMTEST", "seam-secret");
    let api = CodeCommitServer::start(repo.path(), "locks", REGION, keyring);
    let aws = Aws::fixed(&api.endpoint(), REGION, "AKIDSEAMTEST", "seam-secret").expect("aws");
    let pool = PoolPath::new(POOL).expect("pool");
    let store = CodeCommitStore::new(aws, "locks", "main", &pool, URI, Identity::default());
    (api, store)
}

/// Claims lock `a` and, in the same commit, removes the ticket and writes
/// the next one.
fn claim_with_tickets(store: &mut dyn LockStore) -> pool_resource::Result<CommitOutcome> {
    let pool = PoolPath::new(POOL).expect("pool");
    let snap = store.snapshot()?;
    let lock = LockName::new("a").expect("lock");
    let Plan::Commit(change) = plan(
        &Operation::from(Single::Claim(lock)),
        &snap,
        &pool,
        &mut |_| 0,
    )?
    else {
        panic!("lock a is free");
    };
    let step = Step {
        message: format!("{}\n\nPool-Resource-Nonce: seam-test\n", change.subject),
        change,
        files: vec![
            FileEdit {
                path: TICKET.into(),
                content: None,
            },
            FileEdit {
                path: NEXT.into(),
                content: Some(b"next in line\n".to_vec()),
            },
        ],
    };
    store.commit(&snap, &[step]).outcome
}

fn assert_one_commit_did_it_all(repo: &LockRepo, before: &str, id: &str) {
    assert_eq!(repo.tip(), id);
    let log = repo.log();
    let start = log.iter().position(|c| c.sha == before).expect("base");
    assert_eq!(log.len() - start, 2, "one commit: {log:#?}");
    assert_eq!(repo.claimed(POOL), ["a"]);
    assert_eq!(repo.file_at(id, TICKET), None);
    assert_eq!(
        repo.file_at(id, NEXT).as_deref(),
        Some(&b"next in line\n"[..])
    );
}

#[test]
fn a_git_put_commit_writes_and_removes_files_outside_the_pool_with_the_claim() {
    let repo = pool_repo();
    let before = repo.tip();
    let mut store = git_store(&repo);
    let outcome = claim_with_tickets(&mut store).expect("committed");
    let CommitOutcome::Committed(id) = outcome else {
        panic!("not committed: {outcome:?}");
    };
    assert_one_commit_did_it_all(&repo, &before, &id);
}

#[test]
fn a_codecommit_put_commit_writes_and_removes_files_outside_the_pool_with_the_claim() {
    let repo = pool_repo();
    let before = repo.tip();
    let (_api, mut store) = api_store(&repo);
    let outcome = claim_with_tickets(&mut store).expect("committed");
    let CommitOutcome::Committed(id) = outcome else {
        panic!("not committed: {outcome:?}");
    };
    assert_one_commit_did_it_all(&repo, &before, &id);
}

#[test]
fn a_create_commit_reply_without_a_commit_id_is_an_error_naming_the_call() {
    let repo = pool_repo();
    let (api, mut store) = api_store(&repo);
    api.omit_commit_ids(1);
    let err = claim_with_tickets(&mut store).expect_err("no commit id");
    let text = err.to_string();
    assert!(
        text.contains("codecommit:CreateCommit") && text.contains("no commit id"),
        "{text}"
    );
    assert!(matches!(err, Error::Api { .. }), "{err:?}");
    assert!(err.is_retryable(), "it may have committed: {err:?}");
    // Never `""` as a version: the put looks for it by its nonce instead.
    let edits = [FileEdit {
        path: NEXT.into(),
        content: Some(b"x\n".to_vec()),
    }];
    api.omit_commit_ids(1);
    let tip = repo.tip();
    let err = store
        .commit_files(Some(&tip), &edits, "an operator's commit\n")
        .expect_err("no commit id");
    assert!(err.to_string().contains("codecommit:CreateCommit"), "{err}");
}
