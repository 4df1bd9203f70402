//! `check`: the versions of the pool, oldest first.

use serde_json::{json, Value};

use crate::support::{run_bin, LockRepo};
use crate::{put, source, Inputs};

fn check(src: &Value, version: Option<&str>) -> Vec<String> {
    let mut req = json!({"source": src});
    if let Some(v) = version {
        req["version"] = json!({"ref": v});
    }
    let out = run_bin("check", &[], &req, &[]).assert_success().json();
    out.as_array()
        .expect("check prints a list")
        .iter()
        .map(|v| v["ref"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn first_check_returns_the_latest_pool_commit_only() {
    let repo = LockRepo::new("main");
    repo.add_lock("envs", "a", false, b"");
    let latest = repo.add_lock("envs", "b", false, b"");
    repo.commit_file("unrelated.txt", b"x", "not the pool");
    repo.add_lock("other", "z", false, b"");
    let src = source(&repo.file_url(), "main", "envs");
    assert_eq!(check(&src, None), [latest]);
}

#[test]
fn check_from_a_version_lists_it_and_every_later_pool_commit() {
    let repo = LockRepo::new("main");
    let first = repo.add_lock("envs", "a", false, b"");
    repo.commit_file("unrelated.txt", b"x", "not the pool");
    let src = source(&repo.file_url(), "main", "envs");
    let claim = crate::version(&put(&src, json!({"claim": "a"}), &Inputs::new(), &[]));
    repo.add_lock("other", "z", false, b"");
    assert_eq!(check(&src, Some(&first)), [first.clone(), claim.clone()]);
    assert_eq!(check(&src, Some(&claim)), std::slice::from_ref(&claim));
}

#[test]
fn check_with_an_unknown_version_returns_the_latest() {
    let repo = LockRepo::new("main");
    let latest = repo.add_lock("envs", "a", false, b"");
    let src = source(&repo.file_url(), "main", "envs");
    assert_eq!(
        check(&src, Some("0123456789012345678901234567890123456789")),
        [latest]
    );
}

#[test]
fn check_handles_a_pool_created_by_the_root_commit() {
    let dir = tempfile::TempDir::new().unwrap();
    let repo = dir.path().join("root.git");
    crate::support::git_ok(
        dir.path(),
        &["init", "-q", "--bare", "-b", "main", "root.git"],
    );
    let work = dir.path().join("w");
    crate::support::git_ok(dir.path(), &["init", "-q", "-b", "main", "w"]);
    std::fs::create_dir_all(work.join("envs/unclaimed")).unwrap();
    std::fs::write(work.join("envs/unclaimed/a"), b"").unwrap();
    crate::support::git_ok(&work, &["add", "-A"]);
    crate::support::git_ok(
        &work,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "root",
        ],
    );
    crate::support::git_ok(&work, &["push", "-q", repo.to_str().unwrap(), "main"]);
    let root = crate::support::git_ok(&work, &["rev-parse", "HEAD"])
        .trim()
        .to_string();
    let src = source(repo.to_str().unwrap(), "main", "envs");
    assert_eq!(check(&src, None), std::slice::from_ref(&root));
    assert_eq!(check(&src, Some(&root)), [root]);
}

#[test]
fn check_of_an_empty_history_is_an_empty_list() {
    let repo = LockRepo::new("main");
    let src = source(&repo.file_url(), "main", "envs");
    assert!(check(&src, None).is_empty());
}

/// Commits a random history with merges onto `repo`'s branch: side branches
/// off any commit, lock changes, commits about another pool, and merges that
/// take the side's pool, keep the main line's, combine both or change it.
fn random_history(repo: &LockRepo, rng: &mut fastrand::Rng) {
    let files = |c: &str| -> Vec<String> {
        repo.git_out(&["ls-tree", "-r", "--name-only", c])
            .lines()
            .map(String::from)
            .collect()
    };
    let pool_files = |c: &str| -> Vec<String> {
        files(c)
            .into_iter()
            .filter(|f| f.starts_with("envs/"))
            .collect()
    };
    let content = |c: &str, f: &str| repo.file_at(c, f).unwrap_or_default();
    let base = repo.tip();
    let mut heads = vec![base.clone()];
    let mut all = vec![base.clone()];
    for i in 0..rng.usize(8..24) {
        let roll = rng.f32();
        if roll < 0.2 && heads.len() < 3 {
            heads.push(all[rng.usize(..all.len())].clone());
            continue;
        }
        if roll < 0.45 && heads.len() >= 2 {
            let (a, b) = (rng.usize(..heads.len()), rng.usize(..heads.len()));
            if a == b {
                continue;
            }
            let (ours, theirs) = (heads[a].clone(), heads[b].clone());
            let (mut writes, mut deletes) = (Vec::new(), Vec::new());
            match rng.usize(..4) {
                0 => {}
                1 => {
                    deletes = pool_files(&ours);
                    for f in pool_files(&theirs) {
                        writes.push((f.clone(), content(&theirs, &f)));
                    }
                }
                2 => {
                    let kept = pool_files(&ours);
                    for f in pool_files(&theirs) {
                        if !kept.contains(&f) {
                            writes.push((f.clone(), content(&theirs, &f)));
                        }
                    }
                }
                _ => writes.push((format!("envs/unclaimed/m{i}"), b"m".to_vec())),
            }
            deletes.retain(|d| !writes.iter().any(|(w, _)| w == d));
            let writes: Vec<(&str, &[u8])> = writes
                .iter()
                .map(|(f, c)| (f.as_str(), c.as_slice()))
                .collect();
            let deletes: Vec<&str> = deletes.iter().map(String::as_str).collect();
            let merge = repo.commit_on(&[&ours, &theirs], &writes, &deletes, "merge");
            heads[a] = merge.clone();
            if rng.bool() {
                heads.remove(b);
            }
            all.push(merge);
            continue;
        }
        let h = rng.usize(..heads.len());
        let parent = heads[h].clone();
        let unclaimed: Vec<String> = pool_files(&parent)
            .into_iter()
            .filter(|f| f.starts_with("envs/unclaimed/") && !f.ends_with("/.gitkeep"))
            .collect();
        let commit = match rng.usize(..3) {
            0 => {
                let lock = format!("envs/unclaimed/l{i}");
                repo.commit_on(&[&parent], &[(&lock, b"l")], &[], "adding unclaimed")
            }
            1 => repo.commit_on(&[&parent], &[(&format!("other/x{i}"), b"x")], &[], "other"),
            _ if unclaimed.is_empty() => repo.commit_on(
                &[&parent],
                &[("README.md", format!("{i}").as_bytes())],
                &[],
                "readme",
            ),
            _ => {
                let from = &unclaimed[rng.usize(..unclaimed.len())];
                let to = from.replacen("/unclaimed/", "/claimed/", 1);
                let bytes = content(&parent, from);
                repo.commit_on(&[&parent], &[(&to, &bytes)], &[from], "claiming")
            }
        };
        heads[h] = commit.clone();
        all.push(commit);
    }
    let mut tip = heads[0].clone();
    for side in &heads[1..] {
        tip = repo.commit_on(&[&tip, side], &[], &[], "final merge");
    }
    repo.move_branch(Some(&base), &tip);
}

#[test]
fn check_lists_what_git_log_lists_on_random_histories_with_merges() {
    for seed in 1..=4 {
        let repo = LockRepo::new("main");
        repo.add_lock("envs", "a", false, b"a");
        random_history(&repo, &mut fastrand::Rng::with_seed(seed));
        let src = source(&repo.file_url(), "main", "envs");
        let root = repo.git_out(&["rev-list", "--max-parents=0", "main"]);
        let git_log = |range: &str, args: &[&str]| -> Vec<String> {
            let mut full = vec!["log", "--format=%H"];
            full.extend(args);
            full.extend([range, "--", "envs"]);
            repo.git_out(&full).lines().map(String::from).collect()
        };
        assert_eq!(check(&src, None), git_log("main", &["-1"]), "seed {seed}");
        for since in repo.git_out(&["rev-list", "main"]).lines() {
            let range = if root.trim() == since {
                "main".to_string()
            } else {
                format!("{since}~1..main")
            };
            assert_eq!(
                check(&src, Some(since)),
                git_log(&range, &["--reverse"]),
                "seed {seed}, since {since}:\n{}",
                repo.git_out(&["log", "--graph", "--format=%h %ct %s", "main"])
            );
        }
    }
}
