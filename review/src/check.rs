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
pub fn check_dir(dir: &Path, limits: &Limits) -> Report {
    let (sources, unreadable) = unbaked_policy::read_dir_sources(dir);
    check_sources(dir, &sources, unreadable, limits)
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
