//! `unbaked policy test`: assertion files under `DIR/tests/*.toml`.
//!
//! ```toml
//! [[case]]
//! workload = "billing"
//! secret = "app/db"
//! expect = "allow"            # or "deny"
//! key = "password"            # optional: only this key of the secret
//! delivery = "file"           # optional: only by this kind (file, env, fd)
//! caller = { uid = 1000, docker_labels = { app = "billing" } }  # optional
//! ```
//!
//! A case allows when the workload has a grant of the secret (of that key
//! and delivery kind, if given) and, with `caller`, that caller passes the
//! workload's `[match]`. A case naming a workload no policy declares fails
//! whatever it expects, so a typo cannot pass as a "deny".

use crate::finding::Finding;
use crate::rules::Level;
use crate::rules::CASE_FILE;
use crate::text::plural;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use toml::Spanned;
use unbaked_api::wire::DeliveryKind;
use unbaked_policy::{Caller, ContainerInfo, Grant, PolicySet};

/// Rule id of a problem in a case file itself.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(default)]
    case: Vec<Spanned<RawCase>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Expect {
    Allow,
    Deny,
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Expect::Allow => "allow",
            Expect::Deny => "deny",
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    workload: String,
    secret: String,
    expect: Expect,
    key: Option<String>,
    delivery: Option<DeliveryKind>,
    caller: Option<RawCaller>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCaller {
    uid: u32,
    gid: Option<u32>,
    #[serde(default)]
    docker_labels: BTreeMap<String, String>,
    image: Option<String>,
}

/// The outcome of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// `billing gets app/db` (with the key, delivery and caller if given).
    pub name: String,
    pub passed: bool,
    /// What was decided and why: the grant that allows, or the reason it
    /// is denied; for a failed case, what was expected instead.
    pub reason: String,
}

impl fmt::Display for CaseResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = if self.passed { "ok  " } else { "FAIL" };
        write!(
            f,
            "{status} {}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.name,
            self.reason
        )
    }
}

/// Every case of every file, and the problems that kept cases from running.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestReport {
    pub results: Vec<CaseResult>,
    /// Policy errors, unreadable or malformed case files.
    pub problems: Vec<Finding>,
}

impl TestReport {
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| !r.passed).count()
    }

    pub fn passed(&self) -> usize {
        self.results.len() - self.failed()
    }

    /// 0 when every case ran and passed, else 1.
    pub fn exit_code(&self) -> i32 {
        if self.problems.is_empty() && self.failed() == 0 && !self.results.is_empty() {
            unbaked_api::exit::OK
        } else {
            unbaked_api::exit::FAILURE
        }
    }

    /// `5 cases: 4 passed, 1 failed`, and the problems if any.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{}: {} passed, {} failed",
            plural(self.results.len(), "case"),
            self.passed(),
            self.failed()
        );
        if !self.problems.is_empty() {
            s.push_str(&format!(
                "; {} kept cases from running",
                plural(self.problems.len(), "error")
            ));
        }
        s
    }

    /// One line per case, then the problems; ends with a newline.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for r in &self.results {
            out.push_str(&r.to_string());
            out.push('\n');
        }
        for p in &self.problems {
            out.push_str(&p.to_string());
            out.push('\n');
        }
        out
    }
}

/// Loads the policies of `dir` and runs every case under `dir/tests/`.
pub fn run_dir(dir: &Path) -> TestReport {
    let mut report = TestReport::default();
    let set = match unbaked_policy::load_dir(dir) {
        Ok(set) => set,
        Err(diags) => {
            report.problems = diags.0.into_iter().map(Finding::from).collect();
            return report;
        }
    };
    let tests = dir.join("tests");
    let mut files: Vec<PathBuf> = match fs::read_dir(&tests) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().as_encoded_bytes().starts_with(b"."))
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
            .collect(),
        Err(e) => {
            report.problems.push(problem(
                &tests,
                0,
                0,
                format!("cannot read the tests directory: {e}"),
                "put assertion files with [[case]] tables under DIR/tests/*.toml",
            ));
            return report;
        }
    };
    files.sort();
    if files.is_empty() {
        report.problems.push(problem(
            &tests,
            0,
            0,
            "no *.toml assertion files".into(),
            "add a file with [[case]] tables: workload, secret, expect = \"allow\" or \"deny\"",
        ));
    }
    for file in files {
        match fs::read_to_string(&file) {
            Ok(text) => run_text(&set, &file, &text, &mut report),
            Err(e) => report.problems.push(problem(
                &file,
                0,
                0,
                format!("cannot read the file: {e}"),
                "check that it is readable and holds UTF-8 text",
            )),
        }
    }
    report
}

/// Runs the cases of one assertion file against `set`.
pub fn run_text(set: &PolicySet, file: &Path, text: &str, report: &mut TestReport) {
    let parsed: CaseFile = match toml::from_str(text) {
        Ok(parsed) => parsed,
        Err(e) => {
            let (line, column) = unbaked_policy::line_column(text, e.span().map_or(0, |s| s.start));
            report.problems.push(problem(
                file,
                line,
                column,
                e.message().to_owned(),
                "write each case as a [[case]] table with workload, secret and expect = \"allow\" or \"deny\" (optional: key, delivery, caller)",
            ));
            return;
        }
    };
    if parsed.case.is_empty() {
        report.problems.push(problem(
            file,
            1,
            1,
            "the file holds no [[case]] table".into(),
            "add [[case]] tables, or remove the file",
        ));
    }
    for case in parsed.case {
        let (line, column) = unbaked_policy::line_column(text, case.span().start);
        let case = case.into_inner();
        let (allowed, why) = decide(set, &case);
        let passed = allowed == Some(case.expect == Expect::Allow);
        let reason = match (allowed, passed) {
            (Some(_), true) => format!("{} ({why})", case.expect),
            (Some(true), false) => format!("expected deny, but it is allowed: {why}"),
            (Some(false), false) => format!("expected allow, but it is denied: {why}"),
            (None, _) => why,
        };
        report.results.push(CaseResult {
            file: file.to_path_buf(),
            line,
            column,
            name: name(&case),
            passed,
            reason,
        });
    }
}

fn name(case: &RawCase) -> String {
    let mut name = format!("{} gets {}", case.workload, case.secret);
    if let Some(key) = &case.key {
        name.push_str(&format!(" key {key:?}"));
    }
    if let Some(kind) = case.delivery {
        name.push_str(&format!(" by {kind}"));
    }
    if let Some(c) = &case.caller {
        name.push_str(&format!(" as uid {}", c.uid));
        if c.image.is_some() || !c.docker_labels.is_empty() {
            name.push_str(" in a container");
        }
    }
    name
}

/// `Some(true)` allowed, `Some(false)` denied, `None` the case cannot be
/// decided (an unknown workload); with the reason.
fn decide(set: &PolicySet, case: &RawCase) -> (Option<bool>, String) {
    let Some(policy) = set.get(&case.workload) else {
        return (
            None,
            format!(
                "no policy declares workload {:?}: fix the case's workload, or add the policy",
                case.workload
            ),
        );
    };
    if let Some(c) = &case.caller {
        let in_container = c.image.is_some() || !c.docker_labels.is_empty();
        let caller = Caller {
            uid: c.uid,
            gid: c.gid.unwrap_or(c.uid),
            pid: None,
            container: in_container.then(|| ContainerInfo {
                id: "policy-test".into(),
                labels: c.docker_labels.clone(),
                image_id: c.image.clone().unwrap_or_default(),
            }),
            service_account: None,
        };
        if let Err(denial) = policy.authorize(&caller) {
            return (
                Some(false),
                format!("[{}] refuses the caller: {}", denial.rule, denial.reason),
            );
        }
    }
    let fits = |g: &Grant| {
        g.secret == case.secret
            && case.key.as_ref().is_none_or(|k| &g.key == k)
            && case.delivery.is_none_or(|d| g.delivery.kind() == d)
    };
    if let Some((i, g)) = policy.grants.iter().enumerate().find(|(_, g)| fits(g)) {
        return (
            Some(true),
            format!(
                "grant[{i}] delivers it by {} {:?}",
                g.delivery.kind(),
                g.delivery.target()
            ),
        );
    }
    let near: Vec<String> = policy
        .grants
        .iter()
        .enumerate()
        .filter(|(_, g)| g.secret == case.secret)
        .map(|(i, g)| format!("grant[{i}] has key {:?} by {}", g.key, g.delivery.kind()))
        .collect();
    let mut why = format!(
        "workload {:?} ({}) has no grant of {}",
        policy.workload,
        policy.source.display(),
        case.secret
    );
    if let Some(k) = &case.key {
        why.push_str(&format!(" key {k:?}"));
    }
    if let Some(d) = case.delivery {
        why.push_str(&format!(" by {d}"));
    }
    if !near.is_empty() {
        why.push_str(&format!(" ({})", near.join("; ")));
    }
    (Some(false), why)
}

fn problem(file: &Path, line: usize, column: usize, message: String, hint: &str) -> Finding {
    Finding {
        level: Level::Error,
        rule: CASE_FILE,
        file: file.to_path_buf(),
        line,
        column,
        field: String::new(),
        message,
        hint: Some(hint.to_owned()),
    }
}
