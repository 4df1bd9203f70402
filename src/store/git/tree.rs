//! Reading pools out of trees and editing trees in memory.
//!
//! A put never checks anything out: the new tree is built from the old one
//! with `TreeBuilder`, touching only the trees on the path from the root to
//! the lock file, so its cost does not depend on the size of the repository.

use std::collections::BTreeMap;

use git2::{FileMode, ObjectType, Oid, Repository, Tree};

use crate::model::names::{is_lock_file_name, LockName, PoolPath};
use crate::model::pool::{BlobId, CommitId};

/// A libgit2 commit id as the model's: here, so that the model names no git2.
impl From<Oid> for CommitId {
    fn from(id: Oid) -> CommitId {
        CommitId::from(id.to_string())
    }
}

/// One edit: set the file at `path` (components) to a blob, or delete it.
pub struct TreeEdit {
    /// Path components from the repository root.
    pub path: Vec<String>,
    /// `Some((blob, mode))` to write, `None` to delete.
    pub entry: Option<(Oid, i32)>,
}

/// The lock files directly in `<pool>/<dir>`; `None` if the pool directory is missing.
pub fn read_pool_dir(
    repo: &Repository,
    root: &Tree<'_>,
    pool: &PoolPath,
    dir: &str,
) -> Result<Option<BTreeMap<LockName, BlobId>>, git2::Error> {
    let pool_tree = match root.get_path(std::path::Path::new(pool.as_str())) {
        Ok(e) if e.kind() == Some(ObjectType::Tree) => repo.find_tree(e.id())?,
        Ok(_) => return Ok(None),
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut locks = BTreeMap::new();
    let Some(sub) = pool_tree.get_name(dir) else {
        return Ok(Some(locks));
    };
    if sub.kind() != Some(ObjectType::Tree) {
        return Ok(Some(locks));
    }
    for entry in repo.find_tree(sub.id())?.iter() {
        let Ok(name) = entry.name() else { continue };
        if entry.kind() != Some(ObjectType::Blob) || !is_lock_file_name(name) {
            continue;
        }
        if let Ok(lock) = LockName::new(name) {
            locks.insert(lock, entry.id().to_string());
        }
    }
    Ok(Some(locks))
}

/// The id and mode of the entry at `path`, if there is one.
pub fn entry_at(root: &Tree<'_>, path: &str) -> Option<(Oid, i32)> {
    root.get_path(std::path::Path::new(path))
        .ok()
        .map(|e| (e.id(), e.filemode()))
}

/// Applies `edits` to `base` (or to an empty tree) and writes the new tree.
/// Returns `None` when the result is empty (git does not keep empty trees).
pub fn apply(
    repo: &Repository,
    base: Option<&Tree<'_>>,
    edits: &[TreeEdit],
) -> Result<Option<Oid>, git2::Error> {
    apply_at(repo, base, edits, 0)
}

fn apply_at(
    repo: &Repository,
    base: Option<&Tree<'_>>,
    edits: &[TreeEdit],
    depth: usize,
) -> Result<Option<Oid>, git2::Error> {
    let mut builder = repo.treebuilder(base)?;
    let mut names: Vec<&str> = Vec::new();
    for e in edits {
        if !names.contains(&e.path[depth].as_str()) {
            names.push(&e.path[depth]);
        }
    }
    for name in names {
        let here: Vec<&TreeEdit> = edits.iter().filter(|e| e.path[depth] == name).collect();
        for leaf in here.iter().filter(|e| e.path.len() == depth + 1) {
            match leaf.entry {
                Some((oid, mode)) => {
                    builder.insert(name, oid, mode)?;
                }
                None => {
                    if builder.get(name)?.is_some() {
                        builder.remove(name)?;
                    }
                }
            }
        }
        let deeper: Vec<TreeEdit> = here
            .iter()
            .filter(|e| e.path.len() > depth + 1)
            .map(|e| TreeEdit {
                path: e.path.clone(),
                entry: e.entry,
            })
            .collect();
        if deeper.is_empty() {
            continue;
        }
        let sub = match builder.get(name)? {
            Some(e) if e.kind() == Some(ObjectType::Tree) => Some(repo.find_tree(e.id())?),
            _ => None,
        };
        match apply_at(repo, sub.as_ref(), &deeper, depth + 1)? {
            Some(oid) => {
                builder.insert(name, oid, FileMode::Tree.into())?;
            }
            None => {
                if builder.get(name)?.is_some() {
                    builder.remove(name)?;
                }
            }
        }
    }
    if builder.is_empty() {
        return Ok(None);
    }
    builder.write().map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(path: &str, entry: Option<(Oid, i32)>) -> TreeEdit {
        TreeEdit {
            path: path.split('/').map(String::from).collect(),
            entry,
        }
    }

    #[test]
    fn edits_build_nested_trees_and_drop_empty_ones() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let blob = repo.blob(b"content").unwrap();
        let mode = i32::from(FileMode::Blob);
        let t1 = apply(
            &repo,
            None,
            &[
                edit("a/b/claimed/x", Some((blob, mode))),
                edit("a/b/unclaimed/.gitkeep", Some((blob, mode))),
            ],
        )
        .unwrap()
        .unwrap();
        let t1 = repo.find_tree(t1).unwrap();
        assert!(entry_at(&t1, "a/b/claimed/x").is_some());
        let t2 = apply(
            &repo,
            Some(&t1),
            &[
                edit("a/b/claimed/x", None),
                edit("a/b/unclaimed/x", Some((blob, mode))),
            ],
        )
        .unwrap()
        .unwrap();
        let t2 = repo.find_tree(t2).unwrap();
        assert!(entry_at(&t2, "a/b/claimed").is_none(), "empty dir dropped");
        assert_eq!(entry_at(&t2, "a/b/unclaimed/x").unwrap().0, blob);
        let pool = PoolPath::new("a/b").unwrap();
        let unclaimed = read_pool_dir(&repo, &t2, &pool, "unclaimed")
            .unwrap()
            .unwrap();
        assert_eq!(unclaimed.len(), 1, "dotfiles are not locks");
    }

    /// The model checks branch names without libgit2; whatever it accepts,
    /// libgit2 takes as `refs/heads/NAME` too (git's rules are the stricter
    /// only for DEL, which libgit2 lets through).
    #[test]
    fn the_models_branch_names_are_ones_libgit2_accepts() {
        use crate::model::names::check_branch_name;
        let names = [
            "main",
            "release/1.x",
            "a@b",
            "@",
            "ünï",
            "a..b",
            "a b",
            "a~1",
            "a^",
            "a:b",
            "a?",
            "a*",
            "a[b",
            "a\\b",
            "a\tb",
            "a\nb",
            "a@{1}",
            "a.",
            "/a",
            "a/",
            "a//b",
            ".h",
            "a/.b",
            "x.lock",
            "a/x.lock/b",
            "a.lock.b",
            "HEAD",
            "-x",
            "a/b/c",
            "a\u{7f}",
        ];
        for name in names {
            let ours = check_branch_name(name).is_ok();
            let libgit2 = git2::Reference::is_valid_name(&format!("refs/heads/{name}"));
            if name.contains('\u{7f}') {
                assert!(!ours, "{name:?}");
            } else {
                assert_eq!(ours, libgit2, "{name:?}");
            }
        }
    }
}
