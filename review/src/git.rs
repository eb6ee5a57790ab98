//! A policy directory read at a git revision (`policy diff --git REV`),
//! through gix: no `git` process, no checkout, no temporary files.
//!
//! The same files as `read_dir_sources` would read on disk: the visible
//! `*.toml` blobs directly in the directory's tree. Their paths read
//! `REV:dir/name.toml`, git's own notation, so a diagnostic on the old side
//! of a diff says which revision it is about.

use std::path::{Component, Path, PathBuf};
use unbaked_policy::{rule, Diagnostic, Diagnostics, Severity};

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot find the current directory: {0}")]
    Cwd(#[source] std::io::Error),
    #[error("no git repository at or above {}: run it inside a checkout, or compare two directories", .path.display())]
    NotARepository {
        path: PathBuf,
        #[source]
        source: Box<gix::discover::Error>,
    },
    #[error("the repository at {} is bare: run it in a checkout", .0.display())]
    Bare(PathBuf),
    #[error("{} is outside the repository at {}: name a directory inside it", .dir.display(), .root.display())]
    Outside { dir: PathBuf, root: PathBuf },
    #[error("cannot resolve revision {rev:?}: {message}; name a branch, tag or commit, e.g. origin/main")]
    Revision { rev: String, message: String },
    #[error("{rev}:{path} is not a directory at that revision: check the path, or the revision it was added in")]
    NotADirectory { rev: String, path: String },
    #[error("cannot read {what} at revision {rev:?}: {message}")]
    Read {
        rev: String,
        what: String,
        message: String,
    },
}

/// A policy directory as stored at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// `REV:relative/dir`, for output.
    pub label: String,
    /// `(path, text)` sorted by path, as `unbaked_policy::from_sources` takes them.
    pub sources: Vec<(PathBuf, String)>,
    /// Files that could not be used (symlinks, non-UTF-8).
    pub unreadable: Diagnostics,
}

/// The policy files of `dir` at `rev`. `dir` is a path in the working tree
/// of the repository that holds it; it need not exist there any more.
pub fn read_dir_at(rev: &str, dir: &Path) -> Result<Snapshot, GitError> {
    let (repo, rel) = locate(dir)?;
    let rel_text = rel.to_string_lossy().replace('\\', "/");
    let label = if rel_text.is_empty() {
        format!("{rev}:")
    } else {
        format!("{rev}:{rel_text}")
    };
    let tree = tree_at(&repo, rev, &rel, &rel_text)?;
    let mut sources = Vec::new();
    let mut diags = Vec::new();
    let tree_ref = tree.decode().map_err(|e| read_error(rev, &rel_text, &e))?;
    for entry in &tree_ref.entries {
        let name = entry.filename.to_string();
        if name.starts_with('.') || !name.ends_with(".toml") {
            continue;
        }
        let path = if rel_text.is_empty() {
            PathBuf::from(format!("{rev}:{name}"))
        } else {
            PathBuf::from(format!("{label}/{name}"))
        };
        if entry.mode.is_link() {
            diags.push(unusable(
                &path,
                "a symlink, which is not followed at a git revision",
                "commit the policy file itself",
            ));
            continue;
        }
        if !entry.mode.is_blob() {
            continue;
        }
        let blob = repo
            .find_object(entry.oid)
            .map_err(|e| read_error(rev, &name, &e))?;
        match String::from_utf8(blob.data.clone()) {
            Ok(text) => sources.push((path, text)),
            Err(_) => diags.push(unusable(&path, "not UTF-8 text", "save the file as UTF-8")),
        }
    }
    sources.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Snapshot {
        label,
        sources,
        unreadable: Diagnostics(diags),
    })
}

/// The repository that holds `dir` and `dir` relative to its work tree.
fn locate(dir: &Path) -> Result<(gix::Repository, PathBuf), GitError> {
    let cwd = std::env::current_dir().map_err(GitError::Cwd)?;
    let abs = normalize(&cwd.join(dir));
    // Discover from the deepest part of the path that exists: the directory
    // itself may be gone from the working tree.
    let existing = abs
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
        .to_path_buf();
    let repo = gix::discover(&existing).map_err(|e| GitError::NotARepository {
        path: existing.clone(),
        source: Box::new(e),
    })?;
    let root = repo
        .workdir()
        .ok_or_else(|| GitError::Bare(repo.git_dir().to_path_buf()))?;
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let rest = abs.strip_prefix(&existing).unwrap_or(Path::new(""));
    let real = existing
        .canonicalize()
        .unwrap_or(existing.clone())
        .join(rest);
    let rel = real
        .strip_prefix(&root)
        .map_err(|_| GitError::Outside {
            dir: dir.to_path_buf(),
            root: root.clone(),
        })?
        .to_path_buf();
    Ok((repo, rel))
}

fn read_error(rev: &str, what: &str, e: &dyn std::fmt::Display) -> GitError {
    GitError::Read {
        rev: rev.to_owned(),
        what: what.to_owned(),
        message: e.to_string(),
    }
}

/// The tree of directory `rel` in the commit `rev` names.
fn tree_at<'r>(
    repo: &'r gix::Repository,
    rev: &str,
    rel: &Path,
    rel_text: &str,
) -> Result<gix::Tree<'r>, GitError> {
    let revision = |message: String| GitError::Revision {
        rev: rev.to_owned(),
        message,
    };
    let tree = repo
        .rev_parse_single(rev)
        .map_err(|e| revision(e.to_string()))?
        .object()
        .map_err(|e| read_error(rev, "the commit", &e))?
        .peel_to_tree()
        .map_err(|e| revision(e.to_string()))?;
    if rel.as_os_str().is_empty() {
        return Ok(tree);
    }
    let not_dir = || GitError::NotADirectory {
        rev: rev.to_owned(),
        path: rel_text.to_owned(),
    };
    let entry = tree
        .lookup_entry_by_path(rel)
        .map_err(|e| read_error(rev, rel_text, &e))?
        .ok_or_else(not_dir)?;
    if !entry.mode().is_tree() {
        return Err(not_dir());
    }
    entry
        .object()
        .map_err(|e| read_error(rev, rel_text, &e))?
        .try_into_tree()
        .map_err(|_| not_dir())
}

fn unusable(path: &Path, what: &str, hint: &str) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        file: path.to_path_buf(),
        line: 0,
        column: 0,
        field: String::new(),
        message: format!("the file is {what}"),
        hint: Some(hint.to_owned()),
        rule: rule::IO,
    }
}

/// `a/./b/../c` -> `a/c`, without touching the filesystem.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_lexically() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), Path::new("/a/c"));
        assert_eq!(normalize(Path::new("/a/b/")), Path::new("/a/b"));
    }
}
