//! `unbaked policy check`: every parser error of every file, then the lints
//! over whatever parsed, each finding located at file:line:column.

use crate::rules::Level;
use serde::Serialize;
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use unbaked_policy::{from_sources, Diagnostic, Diagnostics, PolicySet, Severity};

/// Thresholds of the lints. The defaults are what `unbaked policy check` uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `long-ttl` fires above this.
    pub max_ttl: Duration,
    /// `shared-secret` fires when this many workloads or more share a secret.
    pub shared_secret: usize,
    /// `broad-match` fires when `[match]` lists more uids (or gids) than this.
    pub max_match_ids: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_ttl: Duration::from_secs(60 * 60),
            shared_secret: 3,
            max_match_ids: 8,
        }
    }
}

/// One problem, from the parser (an error) or a lint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub level: Level,
    /// A stable id from [`crate::rules::RULES`].
    pub rule: &'static str,
    #[serde(serialize_with = "lossy")]
    pub file: PathBuf,
    /// 1-based; 0 when the problem has no position (an unreadable file).
    pub line: usize,
    pub column: usize,
    /// Dotted path of the field, e.g. `grant[1].env`; empty when unknown.
    pub field: String,
    /// Lowercase, no trailing period.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

/// Paths as text, even the rare one that is not UTF-8 (JSON cannot hold it).
fn lossy<S: serde::Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

impl From<Diagnostic> for Finding {
    fn from(d: Diagnostic) -> Self {
        Finding {
            level: match d.severity {
                Severity::Error => Level::Error,
                Severity::Warning => Level::Warning,
            },
            rule: d.rule,
            file: d.file,
            line: d.line,
            column: d.column,
            field: d.field,
            message: d.message,
            hint: d.hint,
        }
    }
}

impl fmt::Display for Finding {
    /// `policies/billing.toml:52:1: warning[env-delivery]: grant[1].env: message (hint: ...)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        write!(f, ": {}[{}]: ", self.level, self.rule)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

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
