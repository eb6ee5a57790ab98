//! `unbaked policy check`: every parser error of every file, then the lints
//! over whatever parsed, each finding located at file:line:column.

use crate::finding::lossy;
pub use crate::finding::{Finding, Limits};
use crate::rules::Level;
use serde::Serialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use unbaked_policy::{from_sources, Diagnostics, PolicySet};

/// The outcome of checking one policy directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    #[serde(serialize_with = "lossy")]
    pub dir: PathBuf,
    /// Policy files read (unreadable ones are findings).
    pub files: usize,
    /// Workloads that parsed (and were linted).
    pub workloads: usize,
    /// Sorted by file, line and column.
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn count(&self, level: Level) -> usize {
        self.findings.iter().filter(|f| f.level == level).count()
    }

    /// 1 on errors, and on warnings when `strict`; else 0.
    pub fn exit_code(&self, strict: bool) -> i32 {
        let failing = self.count(Level::Error) > 0 || (strict && self.count(Level::Warning) > 0);
        if failing {
            unbaked_api::exit::FAILURE
        } else {
            unbaked_api::exit::OK
        }
    }

    /// `policies: 2 files, 2 workloads: 0 errors, 1 warning, 2 infos`
    pub fn summary(&self) -> String {
        format!(
            "{}: {}, {}: {}, {}, {}",
            self.dir.display(),
            crate::text::plural(self.files, "file"),
            crate::text::plural(self.workloads, "workload"),
            crate::text::plural(self.count(Level::Error), "error"),
            crate::text::plural(self.count(Level::Warning), "warning"),
            crate::text::plural(self.count(Level::Info), "info"),
        )
    }
}

/// Reads `dir` as `unbaked broker` would and checks it.
/// A missing directory is an `io` error, a directory without policy files
/// a `no-policies` error: a CI gate over a mistyped path must not pass.
pub fn check_dir(dir: &Path, limits: &Limits) -> Report {
    let (sources, unreadable) = unbaked_policy::read_dir_sources(dir);
    let mut report = check_sources(dir, &sources, unreadable, limits);
    if report.files == 0 && report.findings.is_empty() {
        report.findings.push(Finding {
            level: Level::Error,
            rule: crate::rules::check::NO_POLICIES,
            file: dir.to_path_buf(),
            line: 0,
            column: 0,
            field: String::new(),
            message: "no policy files (*.toml) in the directory".into(),
            hint: Some(
                "check the path: a broker started on it serves no workload and denies every request"
                    .into(),
            ),
        });
    }
    report
}

/// Checks in-memory `(path, text)` sources; `unreadable` are the files that
/// could not be read (reported first).
pub fn check_sources(
    dir: &Path,
    sources: &[(PathBuf, String)],
    unreadable: Diagnostics,
    limits: &Limits,
) -> Report {
    let mut findings: Vec<Finding> = unreadable.0.into_iter().map(Finding::from).collect();
    let set = match from_sources(sources) {
        Ok(set) => set,
        Err(diags) => {
            // Lint the files that are fine on their own, so one broken file
            // does not hide the warnings of the others.
            let broken: HashSet<&Path> = diags.iter().map(|d| d.file.as_path()).collect();
            let mut set = PolicySet::default();
            for source in sources
                .iter()
                .filter(|(p, _)| !broken.contains(p.as_path()))
            {
                if let Ok(one) = from_sources(std::slice::from_ref(source)) {
                    for policy in one.iter() {
                        set.insert(policy.clone());
                    }
                }
            }
            findings.extend(diags.0.into_iter().map(Finding::from));
            set
        }
    };
    crate::lint::lint(&set, sources, limits, &mut findings);
    findings.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    Report {
        dir: dir.to_path_buf(),
        files: sources.len(),
        workloads: set.len(),
        findings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{render, Format};
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn a_non_utf8_file_name_still_renders_as_json() {
        let name = Path::new(OsStr::from_bytes(b"p/\xff.toml")).to_path_buf();
        let text = "workload = \"a\"\n[match]\nuids = [1]\n[[grant]]\nsecret = \"s\"\nkey = \"k\"\nenv = \"E\"\n";
        let report = check_sources(
            Path::new("p"),
            &[(name, text.into())],
            Diagnostics::default(),
            &Limits::default(),
        );
        assert_eq!(report.count(Level::Warning), 1);
        assert!(render(&report, Format::Json).contains("\"p/\u{fffd}.toml\""));
        assert!(render(&report, Format::Sarif).contains("p/%EF%BF%BD.toml\""));
    }

    #[test]
    fn exit_codes() {
        let mut r = Report {
            dir: "p".into(),
            files: 0,
            workloads: 0,
            findings: vec![],
        };
        assert_eq!((r.exit_code(false), r.exit_code(true)), (0, 0));
        let f = |level| Finding {
            level,
            rule: "x",
            file: "f".into(),
            line: 1,
            column: 1,
            field: String::new(),
            message: "m".into(),
            hint: None,
        };
        r.findings.push(f(Level::Info));
        assert_eq!((r.exit_code(false), r.exit_code(true)), (0, 0));
        r.findings.push(f(Level::Warning));
        assert_eq!((r.exit_code(false), r.exit_code(true)), (0, 1));
        r.findings.push(f(Level::Error));
        assert_eq!((r.exit_code(false), r.exit_code(true)), (1, 1));
        assert_eq!(
            r.summary(),
            "p: 0 files, 0 workloads: 1 error, 1 warning, 1 info"
        );
    }
}
