//! A check [`Report`] as human text, JSON, SARIF 2.1.0 or Markdown.
//!
//! Every format is deterministic (findings sorted, maps ordered) so CI can
//! diff it and the golden tests can compare it byte for byte.

use crate::check::{Finding, Report};
use crate::rules::{self, Level, Rule};
use crate::text::{md_cell, md_code, plural, uri};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

/// The `uriBaseId` every SARIF location is relative to: the repository
/// root, given in `originalUriBaseIds` (GitHub code scanning and other
/// consumers resolve it against their checkout).
pub const SRCROOT: &str = "SRCROOT";

/// Where the SARIF `informationUri` and rule help point.
pub const HOME: &str = "https://github.com/unbaked/unbaked";
/// Where rule documentation lives, `#<rule id>` appended.
pub const RULES_DOC: &str = "https://github.com/unbaked/unbaked/blob/main/docs/policy-rules.md";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
    Sarif,
    Markdown,
}

/// The report in `format`, ending with a newline (empty for a clean human
/// report: the summary goes to stderr).
pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Human => human(report),
        Format::Json => pretty(&json(report)),
        Format::Sarif => pretty(&sarif(report, &SarifRoot::find(&report.dir))),
        Format::Markdown => markdown(report),
    }
}

pub(crate) fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("a json value always serializes");
    s.push('\n');
    s
}

fn human(report: &Report) -> String {
    let mut out = String::new();
    for f in &report.findings {
        let _ = writeln!(out, "{f}");
    }
    out
}

fn json(report: &Report) -> Value {
    json!({
        "dir": report.dir.to_string_lossy(),
        "files": report.files,
        "workloads": report.workloads,
        "errors": report.count(Level::Error),
        "warnings": report.count(Level::Warning),
        "infos": report.count(Level::Info),
        "findings": report.findings,
    })
}

/// The rule of a finding; a parser rule this catalogue does not know yet
/// still gets a descriptor, so SARIF stays valid.
fn rule_of(f: &Finding) -> Rule {
    rules::get(f.rule).copied().unwrap_or(Rule {
        id: f.rule,
        level: f.level,
        summary: "a policy file problem",
        help: "See the message and hint of each result.",
    })
}

fn sarif(report: &Report, root: &SarifRoot) -> Value {
    let mut used: Vec<Rule> = Vec::new();
    for f in &report.findings {
        if !used.iter().any(|r| r.id == f.rule) {
            used.push(rule_of(f));
        }
    }
    let order = |r: &Rule| rules::RULES.iter().position(|k| k.id == r.id);
    used.sort_by_key(|r| (order(r).is_none(), order(r), r.id));
    let descriptors: Vec<Value> = used.iter().map(sarif_rule).collect();
    let results: Vec<Value> = report
        .findings
        .iter()
        .map(|f| {
            let mut result = sarif_result(f, root.location(&report.dir, &f.file));
            result["ruleIndex"] = json!(used.iter().position(|r| r.id == f.rule));
            result
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "unbaked",
                    "semanticVersion": env!("CARGO_PKG_VERSION"),
                    "informationUri": HOME,
                    "rules": descriptors,
                }
            },
            "originalUriBaseIds": {
                SRCROOT: {
                    "uri": root.uri(),
                    "description": { "text": "The repository root (or, outside a repository, the working directory)." },
                },
            },
            "columnKind": "unicodeCodePoints",
            "results": results,
        }]
    })
}

/// A rule's `reportingDescriptor`.
fn sarif_rule(r: &Rule) -> Value {
    json!({
        "id": r.id,
        "name": r.name(),
        "shortDescription": { "text": r.summary },
        "fullDescription": { "text": r.help },
        "help": {
            "text": r.help,
            "markdown": format!("**{}**\n\n{}", r.summary, r.help),
        },
        "helpUri": format!("{RULES_DOC}#{}", r.id),
        "defaultConfiguration": { "level": r.level.sarif() },
        "properties": {
            "tags": if r.is_error() { vec!["policy", "correctness"] } else { vec!["policy", "security"] },
        },
    })
}

/// One finding as a SARIF `result` at `artifact` (without its `ruleIndex`).
fn sarif_result(f: &Finding, artifact: Value) -> Value {
    let mut text = String::new();
    if !f.field.is_empty() {
        let _ = write!(text, "{}: ", f.field);
    }
    text.push_str(&f.message);
    if let Some(hint) = &f.hint {
        let _ = write!(text, " (hint: {hint})");
    }
    // A finding without a position (an unreadable file, a missing
    // directory) is about the whole file: line 1, which GitHub requires
    // of every result.
    let physical = json!({
        "artifactLocation": artifact,
        "region": { "startLine": f.line.max(1), "startColumn": f.column.max(1) },
    });
    let mut location = json!({ "physicalLocation": physical });
    if !f.field.is_empty() {
        location["logicalLocations"] = json!([{ "fullyQualifiedName": f.field, "kind": "member" }]);
    }
    json!({
        "ruleId": f.rule,
        "level": f.level.sarif(),
        "message": { "text": text },
        "locations": [location],
    })
}

/// The directory SARIF locations are relative to: the root of the git
/// repository holding the checked directory, else the working directory
/// when the checked directory is inside it, else the checked directory.
/// So `policy check .` run inside `policies/` and `policy check
/// /abs/repo/policies` both give `policies/billing.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SarifRoot(PathBuf);

impl SarifRoot {
    pub fn find(dir: &Path) -> SarifRoot {
        let dir = real(dir);
        let git = dir
            .ancestors()
            .find(|d| d.join(".git").exists())
            .map(Path::to_path_buf);
        let cwd = std::env::current_dir()
            .ok()
            .and_then(|c| c.canonicalize().ok())
            .filter(|c| dir.starts_with(c));
        SarifRoot(git.or(cwd).unwrap_or(dir))
    }

    pub fn at(root: impl Into<PathBuf>) -> SarifRoot {
        SarifRoot(root.into())
    }

    /// `file:///…/` with the trailing slash a base URI needs.
    fn uri(&self) -> String {
        let mut u = uri(&self.0);
        if !u.ends_with('/') {
            u.push('/');
        }
        u
    }

    /// `file` (as the report names it, under `dir` or not) relative to the
    /// root, or an absolute `file://` URI when it is outside.
    fn location(&self, dir: &Path, file: &Path) -> Value {
        let abs = match file.strip_prefix(dir) {
            Ok(rest) => real(dir).join(rest),
            Err(_) => real(file),
        };
        match abs.strip_prefix(&self.0) {
            Ok(rel) => json!({ "uri": uri(rel), "uriBaseId": SRCROOT }),
            Err(_) => json!({ "uri": uri(&abs) }),
        }
    }
}

/// `path` absolute, symlinks resolved as far as it exists, `.` and `..`
/// removed from the rest.
fn real(path: &Path) -> PathBuf {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut clean = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                clean.pop();
            }
            Component::CurDir => {}
            other => clean.push(other),
        }
    }
    // Resolve the longest existing prefix (a missing directory still
    // gets its real parent).
    let mut tail = Vec::new();
    let mut head = clean.as_path();
    loop {
        if let Ok(r) = head.canonicalize() {
            let mut out = r;
            out.extend(tail.iter().rev());
            return out;
        }
        match (head.parent(), head.file_name()) {
            (Some(parent), Some(name)) => {
                tail.push(name.to_os_string());
                head = parent;
            }
            _ => return clean,
        }
    }
}

fn markdown(report: &Report) -> String {
    let (e, w, i) = (
        report.count(Level::Error),
        report.count(Level::Warning),
        report.count(Level::Info),
    );
    let mut out = String::new();
    let verdict = if e > 0 {
        "❌"
    } else if w > 0 {
        "⚠️"
    } else {
        "✅"
    };
    let _ = writeln!(
        out,
        "### {verdict} unbaked policy check: {}\n",
        md_code(&report.dir.display().to_string())
    );
    let _ = writeln!(
        out,
        "{} in {}: **{}**, **{}**, {}",
        plural(report.workloads, "workload"),
        plural(report.files, "file"),
        plural(e, "error"),
        plural(w, "warning"),
        plural(i, "info"),
    );
    if report.findings.is_empty() {
        return out;
    }
    out.push_str("\n| level | where | rule | finding |\n| --- | --- | --- | --- |\n");
    for f in &report.findings {
        let level = match f.level {
            Level::Error => "❌ error",
            Level::Warning => "⚠️ warning",
            Level::Info => "ℹ️ info",
        };
        let mut place = f.file.display().to_string();
        if f.line > 0 {
            let _ = write!(place, ":{}:{}", f.line, f.column);
        }
        let mut finding = String::new();
        if !f.field.is_empty() {
            let _ = write!(finding, "{}: ", md_code(&f.field));
        }
        finding.push_str(&md_cell(&f.message));
        if let Some(hint) = &f.hint {
            let _ = write!(finding, "<br>*hint:* {}", md_cell(hint));
        }
        let _ = writeln!(
            out,
            "| {level} | {} | {} | {finding} |",
            md_code(&place),
            md_code(f.rule)
        );
    }
    out
}
