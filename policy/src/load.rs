//! Reading a policy directory: with `trust`, the only I/O in this crate.

use crate::diagnostic::{line_column, rule, Diagnostic, Diagnostics, Severity};
use crate::model::PolicySet;
use crate::parse::parse_policy;
use crate::trust;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest policy file read: one workload's policy is a few KiB, so this
/// only stops a runaway (or hostile) file from costing the broker memory
/// and parse time. Reported as an `io` error, like an unreadable file.
pub const MAX_POLICY_BYTES: usize = 256 * 1024;

fn too_large(path: &Path, len: u64) -> Diagnostic {
    io_error(
        path,
        format!(
            "the file is {len} bytes, over the {} KiB limit for a policy file: one workload per file needs far less; split or trim it",
            MAX_POLICY_BYTES / 1024
        ),
    )
}

/// Most policy files one directory may hold: a broker serves one host's
/// workloads, far fewer than this; past it the set is refused whole (one
/// error on the directory) rather than read, so a runaway generator cannot
/// make a reload cost unbounded memory and time.
pub const MAX_POLICY_FILES: usize = 4096;

/// How far the loader trusts who could have written the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strictness {
    /// The files are read as data, by a tool that grants nothing: `policy
    /// check`, `test` and `diff` on a developer's checkout, which is owned
    /// by the developer, not root. Symlinks are followed (policies are
    /// often linked in by config management); only the size and count
    /// limits apply.
    #[default]
    Relaxed,
    /// The broker: sshd's `StrictModes`. A file, the directory or any
    /// directory above it up to `/` that is not owned by root or the
    /// broker's euid or is writable by group or others (a root-owned
    /// sticky ancestor such as /tmp excepted, see `trust::check_meta`), and
    /// a symlink that leaves the directory, is an error naming the path and
    /// the fix, and the file is not read. Files are opened `O_NOFOLLOW`
    /// relative to the checked directory and judged by `fstat` of the
    /// descriptor read, so nothing can be swapped between check and read.
    Strict,
}

/// Reads every `*.toml` file directly in `dir`, sorted by name, as a tool
/// reads a checkout ([`Strictness::Relaxed`]); the broker uses
/// [`load_dir_with`] and [`Strictness::Strict`]. Not recursive: `dir/tests/`
/// holds policy tests. Hidden files are skipped (editors' swap and lock
/// files). Reports every error of every file at once.
pub fn load_dir(dir: &Path) -> Result<PolicySet, Diagnostics> {
    load_dir_with(dir, Strictness::Relaxed)
}

/// [`load_dir`] with a choice of [`Strictness`].
pub fn load_dir_with(dir: &Path, strictness: Strictness) -> Result<PolicySet, Diagnostics> {
    let (sources, Diagnostics(mut diags)) = read_dir_sources_with(dir, strictness);
    match from_sources(&sources) {
        Ok(set) if diags.is_empty() => Ok(set),
        Ok(_) => Err(sorted(diags)),
        Err(Diagnostics(more)) => {
            diags.extend(more);
            Err(sorted(diags))
        }
    }
}

/// The policy files [`load_dir`] reads, as `(path, text)` pairs sorted by
/// path, and the files it could not read. For tools that need the text
/// next to the parsed policies (`unbaked policy check` locates its lints).
pub fn read_dir_sources(dir: &Path) -> (Vec<(PathBuf, String)>, Diagnostics) {
    read_dir_sources_with(dir, Strictness::Relaxed)
}

/// [`read_dir_sources`] with a choice of [`Strictness`]: under
/// [`Strictness::Strict`] a file that may not be trusted is an error and is
/// not read, and a directory that may not be trusted is an error of its
/// own (its files are still checked, so every problem shows at once).
pub fn read_dir_sources_with(
    dir: &Path,
    strictness: Strictness,
) -> (Vec<(PathBuf, String)>, Diagnostics) {
    let (sources, diags) = match strictness {
        Strictness::Relaxed => read_relaxed(dir),
        Strictness::Strict => {
            let strict = read_strict(dir, nix::unistd::geteuid().as_raw());
            let mut diags = strict.diags;
            diags.extend(strict.refused.iter().map(refused_diag));
            (strict.sources, diags)
        }
    };
    (sources, sorted(diags))
}

/// What the broker would refuse in `dir` ([`Strictness::Strict`]), as
/// warnings: for `policy check` to show next to its own findings, so an
/// operator checking a deployed directory learns before a reload does.
/// Judged against this process's euid, as if it were the broker's.
pub fn trust_warnings(dir: &Path) -> Diagnostics {
    let strict = read_strict(dir, nix::unistd::geteuid().as_raw());
    let warnings = strict
        .refused
        .iter()
        .filter(|r| !matches!(r.problem, trust::Problem::Io(_)))
        .map(|r| Diagnostic {
            severity: Severity::Warning,
            ..refused_diag(r)
        })
        .collect();
    sorted(warnings)
}

/// Whether a directory entry is a policy file by its name: visible, `*.toml`.
fn is_policy_name(name: &OsStr) -> bool {
    let hidden = name.as_encoded_bytes().starts_with(b".");
    !hidden && Path::new(name).extension().is_some_and(|ext| ext == "toml")
}

fn too_many(dir: &Path, n: usize) -> Diagnostic {
    io_error(
        dir,
        format!(
            "the directory holds {n} policy files, over the limit of {MAX_POLICY_FILES}: none was read; split the workloads across brokers or remove generated files"
        ),
    )
}

fn read_relaxed(dir: &Path) -> (Vec<(PathBuf, String)>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            let d = io_error(dir, format!("cannot read the policy directory: {e}"));
            return (Vec::new(), vec![d]);
        }
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                diags.push(io_error(
                    dir,
                    format!("cannot list the policy directory: {e}"),
                ));
                continue;
            }
        };
        if !is_policy_name(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        // Follows symlinks: policies are often linked in by config management.
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() && meta.len() > MAX_POLICY_BYTES as u64 => {
                diags.push(too_large(&path, meta.len()));
            }
            Ok(meta) if meta.is_file() => paths.push(path),
            Ok(_) => {}
            Err(e) => diags.push(io_error(&path, format!("cannot read the file: {e}"))),
        }
        if paths.len() > MAX_POLICY_FILES {
            return (Vec::new(), vec![too_many(dir, paths.len())]);
        }
    }
    paths.sort();
    let mut sources = Vec::with_capacity(paths.len());
    for path in paths {
        match fs::File::open(&path) {
            Ok(file) => {
                if let Some(text) = read_bounded(file, &path, &mut diags) {
                    sources.push((path, text));
                }
            }
            Err(e) => diags.push(io_error(&path, format!("cannot read the file: {e}"))),
        }
    }
    (sources, diags)
}

/// What [`read_strict`] found: the files it read, the problems of reading
/// (unreadable, too large, too many) and the refusals.
struct Strict {
    sources: Vec<(PathBuf, String)>,
    diags: Vec<Diagnostic>,
    refused: Vec<trust::Refused>,
}

fn read_strict(dir: &Path, euid: u32) -> Strict {
    let mut out = Strict {
        sources: Vec::new(),
        diags: Vec::new(),
        refused: Vec::new(),
    };
    let dir_fd = match trust::open_dir(dir, euid) {
        Ok((dir_fd, refused)) => {
            out.refused = refused;
            dir_fd
        }
        Err(trust::Refused {
            problem: trust::Problem::Io(e),
            ..
        }) => {
            let d = io_error(dir, format!("cannot read the policy directory: {e}"));
            out.diags.push(d);
            return out;
        }
        Err(r) => {
            out.refused.push(r);
            return out;
        }
    };
    let mut names = match dir_fd.names() {
        Ok(names) => names,
        Err(r) => {
            let d = io_error(
                dir,
                format!("cannot list the policy directory: {}", r.problem),
            );
            out.diags.push(d);
            return out;
        }
    };
    names.retain(|name| is_policy_name(name));
    if names.len() > MAX_POLICY_FILES {
        out.diags.push(too_many(dir, names.len()));
        return out;
    }
    names.sort();
    for name in names {
        let path = dir.join(&name);
        match dir_fd.open_file(&name) {
            Ok(trust::Entry::Trusted(file)) => {
                if let Some(text) = read_bounded(file, &path, &mut out.diags) {
                    out.sources.push((path, text));
                }
            }
            Ok(trust::Entry::Skip) => {}
            Err(refused) => out.refused.extend(refused),
        }
    }
    out
}

/// Reads an opened policy file, at most [`MAX_POLICY_BYTES`]: the size is
/// checked on the descriptor first, and the read is bounded even if the
/// file grew since. `None` when it cannot be read; the reason is in `diags`.
fn read_bounded(file: fs::File, path: &Path, diags: &mut Vec<Diagnostic>) -> Option<String> {
    let len = match file.metadata() {
        Ok(meta) => meta.len(),
        Err(e) => {
            diags.push(io_error(path, format!("cannot read the file: {e}")));
            return None;
        }
    };
    if len > MAX_POLICY_BYTES as u64 {
        diags.push(too_large(path, len));
        return None;
    }
    let mut text = String::new();
    match file
        .take(MAX_POLICY_BYTES as u64 + 1)
        .read_to_string(&mut text)
    {
        Ok(n) if n > MAX_POLICY_BYTES => diags.push(too_large(path, n as u64)),
        Ok(_) => return Some(text),
        Err(e) => diags.push(io_error(path, format!("cannot read the file: {e}"))),
    }
    None
}

/// A refusal as a diagnostic: the path to fix, what is wrong, the command
/// that fixes it. Rule `io`: like an unreadable file, the file is not read.
fn refused_diag(r: &trust::Refused) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        file: r.path.clone(),
        line: 0,
        column: 0,
        field: String::new(),
        message: r.message(),
        hint: Some(r.hint()),
        rule: rule::IO,
    }
}

/// The same as [`load_dir`] from in-memory `(path, content)` pairs; the path
/// is only used in messages and [`crate::Policy::source`]. Sources are taken
/// in path order, so a duplicate workload is reported on the later path.
pub fn from_sources(sources: &[(PathBuf, String)]) -> Result<PolicySet, Diagnostics> {
    let mut order: Vec<&(PathBuf, String)> = sources.iter().collect();
    order.sort_by(|a, b| a.0.cmp(&b.0));
    let mut set = PolicySet::default();
    let mut diags = Vec::new();
    let mut declared: BTreeMap<String, (&Path, usize, usize)> = BTreeMap::new();
    for (path, text) in order {
        if text.len() > MAX_POLICY_BYTES {
            diags.push(too_large(path, text.len() as u64));
            continue;
        }
        let parsed = parse_policy(path, text);
        if let Some(workload) = &parsed.workload {
            let (line, column) = line_column(text, workload.span().start);
            let name = workload.get_ref();
            if let Some((first, l, c)) = declared.get(name) {
                diags.push(Diagnostic {
                    severity: Severity::Error,
                    file: path.clone(),
                    line,
                    column,
                    field: "workload".into(),
                    message: format!(
                        "workload {name:?} is already declared in {}:{l}:{c}",
                        first.display()
                    ),
                    hint: Some(
                        "keep one file per workload: rename this workload or merge the two files"
                            .into(),
                    ),
                    rule: rule::DUPLICATE_WORKLOAD,
                });
            } else {
                declared.insert(name.clone(), (path, line, column));
            }
        }
        match parsed.result {
            Ok(policy) => {
                set.insert(policy);
            }
            Err(d) => diags.extend(d),
        }
    }
    if diags.is_empty() {
        Ok(set)
    } else {
        Err(sorted(diags))
    }
}

fn io_error(file: &Path, message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        file: file.to_path_buf(),
        line: 0,
        column: 0,
        field: String::new(),
        message,
        hint: Some("check that the path exists, is readable and holds UTF-8 text".into()),
        rule: rule::IO,
    }
}

fn sorted(diags: Vec<Diagnostic>) -> Diagnostics {
    let mut diags = Diagnostics(diags);
    diags.sort();
    diags
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{GrantDelivery, DEFAULT_MODE, DEFAULT_TTL};

    fn sources(files: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
        files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect()
    }

    #[test]
    fn defaults_apply() {
        let set = from_sources(&sources(&[(
            "p/a.toml",
            "workload = \"a\"\n[match]\nuids = [1]\n[[grant]]\nsecret = \"s\"\nkey = \"k\"\nfile = \"f\"\n",
        )]))
        .unwrap();
        let p = set.get("a").unwrap();
        assert_eq!(p.source, Path::new("p/a.toml"));
        assert_eq!(p.isolation, crate::Isolation::default());
        assert!(p.launch.uids.is_empty() && p.launch.gids.is_empty());
        let g = &p.grants[0];
        assert_eq!(g.delivery, GrantDelivery::File("f".into()));
        assert_eq!(
            (g.ttl, g.mode, g.uid, g.gid),
            (DEFAULT_TTL, DEFAULT_MODE, None, None)
        );
    }

    #[test]
    fn every_file_reported_sorted_and_duplicates_on_the_later_path() {
        let ok = "workload = \"w\"\n[match]\nuids = [1]\n";
        let err = sources(&[
            ("p/c.toml", "workload = \"c\"\n[match]\nuids = []\n"),
            ("p/b.toml", ok),
            ("p/a.toml", ok),
            ("p/0.toml", "workload = "),
        ]);
        let diags = from_sources(&err).unwrap_err();
        let got: Vec<_> = diags
            .iter()
            .map(|d| (d.file.to_str().unwrap(), d.line, d.rule))
            .collect();
        assert_eq!(
            got,
            [
                ("p/0.toml", 1, rule::PARSE),
                ("p/b.toml", 1, rule::DUPLICATE_WORKLOAD),
                ("p/c.toml", 3, rule::EMPTY_SELECTOR),
            ]
        );
        assert!(diags.0[1]
            .message
            .ends_with("already declared in p/a.toml:1:12"));
    }

    #[test]
    fn load_dir_reads_only_visible_toml_files_at_the_top() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        write("a.toml", "workload = \"a\"\n[match]\nuids = [1]\n");
        write("tests/a.toml", "[[case]]\nworkload = \"a\"\n");
        write(".#a.toml", "not toml");
        write("notes.txt", "not toml");
        fs::create_dir(dir.path().join("dir.toml")).unwrap();
        let set = load_dir(dir.path()).unwrap();
        assert_eq!(
            set.iter().map(|p| p.workload.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(set.get("a").unwrap().source, dir.path().join("a.toml"));
    }

    #[test]
    fn unreadable_directory_is_one_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let diags = load_dir(&missing).unwrap_err();
        assert_eq!(diags.len(), 1);
        assert_eq!((diags.0[0].rule, diags.0[0].line), (rule::IO, 0));
        assert!(diags.to_string().starts_with(&format!(
            "{}: error: cannot read the policy directory",
            missing.display()
        )));
    }

    #[test]
    fn oversized_policy_files_are_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let ok = "workload = \"a\"\n[match]\nuids = [1]\n";
        fs::write(dir.path().join("a.toml"), ok).unwrap();
        let big = format!("{ok}#{}\n", "x".repeat(MAX_POLICY_BYTES));
        fs::write(dir.path().join("b.toml"), &big).unwrap();
        let diags = load_dir(dir.path()).unwrap_err();
        assert_eq!(diags.len(), 1, "{diags}");
        assert_eq!(diags.0[0].rule, rule::IO);
        assert!(
            diags.0[0].message.contains("over the 256 KiB limit"),
            "{diags}"
        );
        // The same limit holds for in-memory sources (git revisions, fuzzing).
        let srcs = sources(&[("p/a.toml", ok), ("p/b.toml", &big)]);
        let diags = from_sources(&srcs).unwrap_err();
        assert_eq!(diags.0[0].file, Path::new("p/b.toml"));
        assert!(diags.0[0].message.contains("limit"));
        // Exactly at the limit is fine.
        let edge = format!("{ok}#{}", "x".repeat(MAX_POLICY_BYTES - ok.len() - 1));
        assert_eq!(edge.len(), MAX_POLICY_BYTES);
        assert!(from_sources(&sources(&[("p/a.toml", &edge)])).is_ok());
    }

    #[test]
    fn empty_directory_is_an_empty_set() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_dir(dir.path()).unwrap().is_empty());
    }
}
