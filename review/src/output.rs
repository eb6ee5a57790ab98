//! A check [`Report`] as human text, JSON, SARIF 2.1.0 or Markdown.
//!
//! Every format is deterministic (findings sorted, maps ordered) so CI can
//! diff it and the golden tests can compare it byte for byte.

use crate::check::{Finding, Report};
use crate::rules::{self, Level, Rule};
use crate::text::{md_cell, md_code, plural, uri};
use serde_json::{json, Value};
use std::fmt::Write as _;

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
        Format::Sarif => pretty(&sarif(report)),
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

fn sarif(report: &Report) -> Value {
    let mut used: Vec<Rule> = Vec::new();
    for f in &report.findings {
        if !used.iter().any(|r| r.id == f.rule) {
            used.push(rule_of(f));
        }
    }
    let order = |r: &Rule| rules::RULES.iter().position(|k| k.id == r.id);
    used.sort_by_key(|r| (order(r).is_none(), order(r), r.id));
    let descriptors: Vec<Value> = used
        .iter()
        .map(|r| {
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
        })
        .collect();
    let results: Vec<Value> = report
        .findings
        .iter()
        .map(|f| {
            let mut text = String::new();
            if !f.field.is_empty() {
                let _ = write!(text, "{}: ", f.field);
            }
            text.push_str(&f.message);
            if let Some(hint) = &f.hint {
                let _ = write!(text, " (hint: {hint})");
            }
            let mut physical = json!({ "artifactLocation": { "uri": uri(&f.file) } });
            if f.line > 0 {
                physical["region"] = json!({ "startLine": f.line, "startColumn": f.column });
            }
            let mut location = json!({ "physicalLocation": physical });
            if !f.field.is_empty() {
                location["logicalLocations"] =
                    json!([{ "fullyQualifiedName": f.field, "kind": "member" }]);
            }
            json!({
                "ruleId": f.rule,
                "ruleIndex": used.iter().position(|r| r.id == f.rule),
                "level": f.level.sarif(),
                "message": { "text": text },
                "locations": [location],
            })
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
            "columnKind": "unicodeCodePoints",
            "results": results,
        }]
    })
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
