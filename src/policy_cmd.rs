//! `unbaked policy check | test | diff`: call `unbaked-review`, print its
//! report on stdout, the summary on stderr, and pick the exit code.

use crate::cli::{CheckFormat, DiffFormat, FailOn, PolicyCommand};
use crate::Failure;
use std::io::Write;
use std::path::Path;
use unbaked_api::exit;
use unbaked_review::diff::{self, PolicyDiff};
use unbaked_review::output::{render, Format};
use unbaked_review::{cases, check_dir, git, Finding, Limits};

pub fn run(cmd: PolicyCommand) -> Result<(), Failure> {
    match cmd {
        PolicyCommand::Check {
            dir,
            format,
            strict,
            compose,
        } => check(&dir, format, strict, &compose),
        PolicyCommand::Test { dir } => test(&dir),
        PolicyCommand::Diff {
            old,
            new,
            git,
            format,
            fail_on,
        } => {
            let new = new.unwrap_or_else(|| old.clone());
            diff(&old, &new, git.as_deref(), format, fail_on)
        }
    }
}

/// Output is best effort: a closed pipe (`| head`) is not an error.
fn print(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn require_dir(dir: &Path) -> Result<(), Failure> {
    if dir.is_dir() {
        return Ok(());
    }
    Err(Failure::msg(
        exit::USAGE,
        format!(
            "{} is not a directory: name a policy directory, e.g. policies/",
            dir.display()
        ),
    ))
}

fn check(
    dir: &Path,
    format: CheckFormat,
    strict: bool,
    compose: &[std::path::PathBuf],
) -> Result<(), Failure> {
    // A missing directory still gets a report (with its `io` error) in the
    // asked format, so a CI step uploading the SARIF has a valid file.
    let mut report = check_dir(dir, &Limits::default());
    if !compose.is_empty() {
        // Judged against the set as the broker would load it; a set with
        // errors has them reported already, and judges nothing.
        let (sources, _) = unbaked_policy::read_dir_sources(dir);
        if let Ok(set) = unbaked_policy::from_sources(&sources) {
            for file in compose {
                report
                    .findings
                    .extend(crate::compose::check::check_file(file, &set));
            }
            report.findings.sort_by(|a, b| {
                (&a.file, a.line, a.column, a.rule).cmp(&(&b.file, b.line, b.column, b.rule))
            });
        }
    }
    let format = match format {
        CheckFormat::Human => Format::Human,
        CheckFormat::Json => Format::Json,
        CheckFormat::Sarif => Format::Sarif,
        CheckFormat::Markdown => Format::Markdown,
    };
    print(&render(&report, format));
    require_dir(dir)?;
    match report.exit_code(strict) {
        exit::OK => {
            eprintln!("{}", report.summary());
            Ok(())
        }
        code => Err(Failure::msg(code, report.summary())),
    }
}

fn test(dir: &Path) -> Result<(), Failure> {
    require_dir(dir)?;
    let report = cases::run_dir(dir);
    print(&report.render());
    match report.exit_code() {
        exit::OK => {
            eprintln!("{}", report.summary());
            Ok(())
        }
        code => Err(Failure::msg(code, report.summary())),
    }
}

fn diff(
    old: &Path,
    new: &Path,
    rev: Option<&str>,
    format: DiffFormat,
    fail_on: Option<FailOn>,
) -> Result<(), Failure> {
    let (old_label, old_sources, unreadable) = match rev {
        Some(rev) => {
            let snap = git::read_dir_at(rev, old).map_err(|e| Failure::new(exit::FAILURE, e))?;
            (snap.label, snap.sources, snap.unreadable)
        }
        None => {
            require_dir(old)?;
            let (sources, unreadable) = unbaked_policy::read_dir_sources(old);
            (old.display().to_string(), sources, unreadable)
        }
    };
    require_dir(new)?;
    let old_set = loaded(&old_label, unreadable, &old_sources)?;
    let (new_sources, unreadable) = unbaked_policy::read_dir_sources(new);
    let new_label = new.display().to_string();
    let new_set = loaded(&new_label, unreadable, &new_sources)?;

    let d = PolicyDiff::new(&old_label, &old_set, &new_label, &new_set);
    print(&match format {
        DiffFormat::Human => d.human(),
        DiffFormat::Json => d.json(),
        DiffFormat::Markdown => d.markdown(),
    });
    let gate = fail_on.map(|f| match f {
        FailOn::Weaken => (diff::FailOn::Weaken, "weaken"),
        FailOn::Gain => (diff::FailOn::Gain, "gain"),
        FailOn::Any => (diff::FailOn::Any, "any"),
    });
    match gate {
        Some((on, name)) if d.fails(on) => Err(Failure::msg(
            exit::FAILURE,
            format!("{}; failing on --fail-on {name}", d.summary()),
        )),
        _ => {
            eprintln!("{}", d.summary());
            Ok(())
        }
    }
}

/// One side of a diff, which must load clean: a diff of a broken set would
/// hide what the broker actually does (it refuses the whole set).
fn loaded(
    label: &str,
    unreadable: unbaked_policy::Diagnostics,
    sources: &[(std::path::PathBuf, String)],
) -> Result<unbaked_policy::PolicySet, Failure> {
    let mut problems: Vec<Finding> = unreadable.0.into_iter().map(Finding::from).collect();
    match unbaked_policy::from_sources(sources) {
        Ok(set) if problems.is_empty() => return Ok(set),
        Ok(_) => {}
        Err(diags) => problems.extend(diags.0.into_iter().map(Finding::from)),
    }
    let mut text = String::new();
    for p in &problems {
        text.push_str(&p.to_string());
        text.push('\n');
    }
    print(&text);
    Err(Failure::msg(
        exit::FAILURE,
        format!(
            "{label} does not load ({} errors): fix it (`unbaked policy check`) before diffing",
            problems.len()
        ),
    ))
}
