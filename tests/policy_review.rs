//! `unbaked policy check | test | diff` end to end, against the real binary.
//!
//! Data-driven over `tests/fixtures/review/{check,test,diff}/*/`: each
//! directory's outcome (exit code, stdout, stderr; other formats where an
//! `expected.<format>` file exists) is compared with its golden files by
//! one [`check`] helper. `UPDATE_EXPECT=1 cargo test --test policy_review`
//! rewrites them; review the diff before committing.

use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_unbaked");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures(group: &str) -> PathBuf {
    root().join("tests/fixtures/review").join(group)
}

/// Subdirectories of `dir`, sorted.
fn dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    out
}

fn unbaked(cwd: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env_remove("UNBAKED_LOG")
        .env_remove("UNBAKED_LOG_FORMAT")
        .output()
        .expect("run unbaked")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Exit code, stdout and stderr as one golden text.
fn transcript(out: &Output) -> String {
    format!(
        "exit: {}\n--- stdout\n{}--- stderr\n{}",
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// The version and the checkout's place on disk (SARIF's
/// `originalUriBaseIds`) are not part of the golden output.
fn normalize(s: &str) -> String {
    s.replace(
        &format!("\"semanticVersion\": \"{}\"", env!("CARGO_PKG_VERSION")),
        "\"semanticVersion\": \"VERSION\"",
    )
    .replace(
        &format!("\"file://{}/\"", root().canonicalize().unwrap().display()),
        "\"file:///REPO/\"",
    )
}

/// Compares `actual` with the file `expected`; with `UPDATE_EXPECT=1`
/// rewrites the file instead.
fn check(actual: &str, expected: &Path) -> Result<(), String> {
    let actual = normalize(actual);
    if std::env::var_os("UPDATE_EXPECT").is_some_and(|v| v == "1") {
        fs::write(expected, &actual).unwrap();
        return Ok(());
    }
    let want = fs::read_to_string(expected).unwrap_or_default();
    if want == actual {
        Ok(())
    } else {
        Err(format!(
            "{} differs (UPDATE_EXPECT=1 rewrites it):\n--- expected\n{want}--- actual\n{actual}",
            expected.display()
        ))
    }
}

fn name(dir: &Path) -> &str {
    dir.file_name().unwrap().to_str().unwrap()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", text(&out.stdout)))
}

#[test]
fn check_fixtures() {
    let base = fixtures("check");
    let all = dirs(&base);
    assert!(all.len() >= 12, "check fixtures not found");
    let mut failures = Vec::new();
    for dir in &all {
        let n = name(dir);
        let out = unbaked(&base, &["policy", "check", n]);
        failures.extend(check(&transcript(&out), &dir.join("expected.txt")).err());
        for (format, ext) in [("json", "json"), ("sarif", "sarif"), ("markdown", "md")] {
            let golden = dir.join(format!("expected.{ext}"));
            if golden.exists() {
                let out = unbaked(&base, &["policy", "check", n, "--format", format]);
                failures.extend(check(&text(&out.stdout), &golden).err());
            }
        }
        // A directory named after a rule must produce it; `clean` nothing.
        let report = json(&unbaked(&base, &["policy", "check", n, "--format", "json"]));
        let rules: Vec<&str> = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["rule"].as_str().unwrap())
            .collect();
        match n {
            "clean" => {
                if !rules.is_empty() || out.status.code() != Some(0) {
                    failures.push(format!("clean: {rules:?}"));
                }
            }
            "errors" | "mixed" => {}
            rule => {
                assert!(
                    unbaked_review::rules::get(rule).is_some(),
                    "{rule}: no such rule"
                );
                if !rules.contains(&rule) {
                    failures.push(format!("{n}: no finding of rule {rule}: {rules:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn check_exit_codes_strict_and_usage() {
    let base = fixtures("check");
    let code = |args: &[&str]| unbaked(&base, args).status.code();
    // Warnings pass, and fail with --strict; infos never fail.
    assert_eq!(code(&["policy", "check", "env-delivery"]), Some(0));
    assert_eq!(
        code(&["policy", "check", "env-delivery", "--strict"]),
        Some(1)
    );
    assert_eq!(
        code(&["policy", "check", "launch-missing", "--strict"]),
        Some(0)
    );
    assert_eq!(code(&["policy", "check", "clean", "--strict"]), Some(0));
    // Errors fail in every format.
    for format in ["human", "json", "sarif", "markdown"] {
        assert_eq!(
            code(&["policy", "check", "errors", "--format", format]),
            Some(1)
        );
    }
    // Usage errors: 2.
    assert_eq!(code(&["policy", "check", "/nonexistent/dir"]), Some(2));
    assert_eq!(
        code(&["policy", "check", "clean", "--format", "yaml"]),
        Some(2)
    );
    assert_eq!(code(&["policy", "test", "/nonexistent/dir"]), Some(2));
    assert_eq!(code(&["policy", "diff", "clean"]), Some(2));
    assert_eq!(
        code(&["policy", "diff", "clean", "mixed", "--fail-on", "never"]),
        Some(2)
    );
}

/// The SARIF a code-scanning upload needs: 2.1.0, rules with metadata,
/// results pointing at their rule and at a line.
#[test]
fn sarif_results_point_at_their_rule_and_line() {
    let out = unbaked(
        &fixtures("check"),
        &["policy", "check", "errors", "--format", "sarif"],
    );
    let sarif = json(&out);
    assert_eq!(sarif["version"], "2.1.0");
    assert!(sarif["$schema"].as_str().unwrap().contains("sarif-2.1.0"));
    let run = &sarif["runs"][0];
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    let results = run["results"].as_array().unwrap();
    assert!(results.len() >= 4);
    for r in results {
        let rule = &rules[r["ruleIndex"].as_u64().unwrap() as usize];
        assert_eq!(rule["id"], r["ruleId"]);
        for key in ["shortDescription", "fullDescription", "help"] {
            assert!(!rule[key]["text"].as_str().unwrap().is_empty(), "{rule}");
        }
        let level = r["level"].as_str().unwrap();
        assert!(["error", "warning", "note"].contains(&level), "{level}");
        let loc = &r["locations"][0]["physicalLocation"];
        // Relative to the repository root, named in originalUriBaseIds.
        assert!(loc["artifactLocation"]["uri"]
            .as_str()
            .unwrap()
            .starts_with("tests/fixtures/review/check/errors/"));
        assert_eq!(loc["artifactLocation"]["uriBaseId"], "SRCROOT");
        assert!(loc["region"]["startLine"].as_u64().unwrap() > 0, "{r}");
    }
    // The lint of the file that parses is reported next to the errors.
    assert!(results.iter().any(|r| r["ruleId"] == "env-delivery"));
    assert!(results.iter().any(|r| r["ruleId"] == "unknown-field"));
}

/// Every parser rule the policy crate's fixtures exercise has SARIF
/// metadata in the review catalogue.
#[test]
fn every_parser_rule_has_metadata() {
    let bad = root().join("tests/fixtures/policies/bad");
    let mut missing = Vec::new();
    for dir in dirs(&bad) {
        if unbaked_review::rules::get(name(&dir)).is_none() {
            missing.push(name(&dir).to_owned());
        }
    }
    assert!(
        missing.is_empty(),
        "add these rules to review/src/rules.rs: {missing:?}"
    );
}

#[test]
fn test_fixtures() {
    let base = fixtures("test");
    let all = dirs(&base);
    assert!(all.len() >= 3);
    let mut failures = Vec::new();
    for dir in &all {
        let out = unbaked(&base, &["policy", "test", name(dir)]);
        failures.extend(check(&transcript(&out), &dir.join("expected.txt")).err());
        let want = if name(dir) == "pass" { 0 } else { 1 };
        if out.status.code() != Some(want) {
            failures.push(format!(
                "{}: exit {:?}, want {want}",
                name(dir),
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn repository_examples_check_and_test_clean() {
    let out = unbaked(&root(), &["policy", "check", "policies"]);
    assert_eq!(out.status.code(), Some(0), "{}", transcript(&out));
    let out = unbaked(&root(), &["policy", "test", "policies"]);
    assert_eq!(out.status.code(), Some(0), "{}", transcript(&out));
    assert!(
        text(&out.stderr).contains(" passed, 0 failed"),
        "{}",
        transcript(&out)
    );
}

#[test]
fn diff_fixtures() {
    let base = fixtures("diff");
    let all = dirs(&base);
    assert!(all.len() >= 12);
    let mut failures = Vec::new();
    for dir in &all {
        let out = unbaked(
            dir,
            &["policy", "diff", "old", "new", "--fail-on", "weaken"],
        );
        failures.extend(check(&transcript(&out), &dir.join("expected.txt")).err());
        for (format, ext) in [("markdown", "md"), ("json", "json")] {
            let golden = dir.join(format!("expected.{ext}"));
            if golden.exists() {
                let out = unbaked(dir, &["policy", "diff", "old", "new", "--format", format]);
                failures.extend(check(&text(&out.stdout), &golden).err());
            }
        }
        let report = json(&unbaked(
            dir,
            &["policy", "diff", "old", "new", "--format", "json"],
        ));
        let changes = report["changes"].as_array().unwrap();
        let weaker = changes.iter().any(|c| c["effect"] == "weaker");
        // --fail-on weaken exits 1 exactly when something got weaker.
        if out.status.code() != Some(i32::from(weaker)) {
            failures.push(format!(
                "{}: exit {:?} with weaker={weaker}",
                name(dir),
                out.status.code()
            ));
        }
        match name(dir) {
            "unchanged" => {
                if !changes.is_empty() {
                    failures.push(format!("unchanged: {changes:?}"));
                }
            }
            "mixed" => {}
            kind => {
                if !changes.iter().any(|c| c["kind"] == kind) {
                    failures.push(format!("{kind}: no change of that kind: {changes:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn diff_gates() {
    let dir = fixtures("diff");
    let code = |case: &str, on: &str| {
        unbaked(
            &dir.join(case),
            &["policy", "diff", "old", "new", "--fail-on", on],
        )
        .status
        .code()
    };
    // A gained secret is not a weakening, but trips --fail-on gain.
    assert_eq!(code("secret-gained", "weaken"), Some(0));
    assert_eq!(code("secret-gained", "gain"), Some(1));
    assert_eq!(code("secret-lost", "gain"), Some(0));
    assert_eq!(code("secret-lost", "any"), Some(1));
    assert_eq!(code("unchanged", "any"), Some(0));
    // Without --fail-on a diff only reports.
    let out = unbaked(&dir.join("mixed"), &["policy", "diff", "old", "new"]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn diff_refuses_a_side_that_does_not_load() {
    let base = fixtures("check");
    let out = unbaked(&base, &["policy", "diff", "clean", "errors"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("errors/broken.toml:4:1"),
        "{}",
        transcript(&out)
    );
    assert!(
        text(&out.stderr).contains("errors does not load"),
        "{}",
        transcript(&out)
    );
}

fn git(repo: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(repo)
        .output()
        .expect("git must be installed (scripts/test installs it)");
    assert!(out.status.success(), "git {args:?}: {}", transcript(&out));
}

/// `--git REV` reads OLD from the repository's objects, loose or packed,
/// with no checkout.
#[test]
fn diff_against_a_git_revision() {
    let repo = tempfile::tempdir().unwrap();
    let r = repo.path();
    let old = fixtures("diff").join("delivery-changed/old/billing.toml");
    let new = fixtures("diff").join("delivery-changed/new/billing.toml");
    fs::create_dir(r.join("policies")).unwrap();
    fs::copy(&old, r.join("policies/billing.toml")).unwrap();
    fs::write(r.join("policies/.hidden.toml"), "not a policy").unwrap();
    fs::write(r.join("README"), "x").unwrap();
    git(r, &["init", "-q"]);
    git(r, &["add", "-A"]);
    git(r, &["commit", "-q", "-m", "v1"]);

    // The working tree changes a file delivery to env.
    fs::copy(&new, r.join("policies/billing.toml")).unwrap();
    let out = unbaked(
        r,
        &[
            "policy",
            "diff",
            "--git",
            "HEAD",
            "policies",
            "--format",
            "json",
            "--fail-on",
            "weaken",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", transcript(&out));
    let d = json(&out);
    assert_eq!(d["old"], "HEAD:policies");
    assert_eq!(d["new"], "policies");
    let kinds: Vec<&str> = d["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["delivery-changed"]);

    // Committed and packed: the old side is HEAD~1, from a pack file; run
    // from a subdirectory with a relative path.
    git(r, &["commit", "-q", "-am", "v2"]);
    git(r, &["gc", "-q"]);
    let out = unbaked(
        &r.join("policies"),
        &["policy", "diff", "--git", "HEAD~1", ".", "--format", "json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", transcript(&out));
    assert_eq!(json(&out)["changes"][0]["kind"], "delivery-changed");
    let out = unbaked(
        r,
        &[
            "policy", "diff", "--git", "main", "policies", "--format", "json",
        ],
    );
    assert_eq!(
        json(&out)["changes"].as_array().unwrap().len(),
        0,
        "{}",
        transcript(&out)
    );

    // A directory deleted from the working tree is still read at REV.
    fs::rename(r.join("policies"), r.join("moved")).unwrap();
    let out = unbaked(
        r,
        &["policy", "diff", "--git", "HEAD~1", "policies", "moved"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", transcript(&out));
    assert!(
        text(&out.stdout).contains("delivery-changed"),
        "{}",
        transcript(&out)
    );

    // Errors say what to do, and exit 1.
    let out = unbaked(
        r,
        &["policy", "diff", "--git", "nosuchbranch", "moved", "moved"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot resolve revision \"nosuchbranch\""),
        "{}",
        transcript(&out)
    );
    let out = unbaked(r, &["policy", "diff", "--git", "HEAD", "nowhere", "moved"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("HEAD:nowhere is not a directory"),
        "{}",
        transcript(&out)
    );
    let elsewhere = tempfile::tempdir().unwrap();
    let out = unbaked(
        elsewhere.path(),
        &[
            "policy",
            "diff",
            "--git",
            "HEAD",
            ".",
            r.join("moved").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no git repository"),
        "{}",
        transcript(&out)
    );
}

/// Every `unbaked policy ...` command in the CI examples parses and runs
/// against this repository (revisions stand in as HEAD): an example that
/// drifts from the command line fails here with exit 2.
#[test]
fn ci_examples_use_the_real_command_line() {
    let mut commands = 0;
    for name in ["github-actions.yml", "gitlab-ci.yml"] {
        let path = root().join("examples/ci").join(name);
        let text = fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            let Some(at) = line.find("unbaked policy") else {
                continue;
            };
            let command = &line[at..];
            let end = command.find(['>', '|', '&']).unwrap_or(command.len());
            let args: Vec<String> = command[..end]
                .split_whitespace()
                .skip(1)
                .map(|a| {
                    if a.contains('$') {
                        "HEAD".to_owned()
                    } else {
                        a.trim_matches('"').to_owned()
                    }
                })
                .collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = unbaked(&root(), &args);
            assert!(
                matches!(out.status.code(), Some(0 | 1)),
                "{name}: {args:?}\n{}",
                transcript(&out)
            );
            commands += 1;
        }
    }
    assert!(commands >= 8, "{commands} commands found");
}

/// `docs/policy-rules.md`, where SARIF help links point, lists every rule.
#[test]
fn rules_reference_is_current() {
    let doc = root().join("docs/policy-rules.md");
    check(&unbaked_review::rules::reference_markdown(), &doc).unwrap();
}

/// `policies/policy.schema.json` is what the parser's types generate, and
/// every policy in the repository (examples, good fixtures) fits it.
#[test]
fn policy_schema_is_current_and_fits_the_examples() {
    let schema = unbaked_policy::json_schema();
    let mut text = serde_json::to_string_pretty(&schema).unwrap();
    text.push('\n');
    check(&text, &root().join("policies/policy.schema.json")).unwrap();

    let mut checked = 0;
    for dir in [
        root().join("policies"),
        root().join("tests/fixtures/policies/good"),
    ] {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let visible = !name(&path).starts_with('.');
            if visible && path.extension().is_some_and(|x| x == "toml") {
                let doc: toml::Value = toml::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
                let doc = serde_json::to_value(doc).unwrap();
                let mut errors = Vec::new();
                fits(&schema, &doc, "", &mut errors);
                assert!(errors.is_empty(), "{}: {errors:?}", path.display());
                checked += 1;
            }
        }
    }
    assert!(checked >= 4);
    // ...and the checker would notice a key the schema lacks.
    let typo = serde_json::json!({ "workload": "w", "match": { "uidz": [1] } });
    let mut errors = Vec::new();
    fits(&schema, &typo, "", &mut errors);
    assert_eq!(errors, ["match.uidz: not in the schema"]);
}

/// The subset of JSON Schema the generated schema uses: types, properties
/// with `additionalProperties: false`, items, and `anyOf`.
fn fits(schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    if let Some(alts) = schema["anyOf"].as_array() {
        let ok = alts.iter().any(|a| {
            let mut e = Vec::new();
            fits(a, v, at, &mut e);
            e.is_empty()
        });
        if !ok {
            errors.push(format!("{at}: fits no alternative"));
        }
        return;
    }
    let ty = schema["type"].as_str().unwrap_or("any");
    let ok = match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        _ => true,
    };
    if !ok {
        errors.push(format!("{at}: not {ty}"));
        return;
    }
    if let Some(map) = v.as_object() {
        for (k, item) in map {
            let path = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            match schema["properties"].get(k) {
                Some(s) => fits(s, item, &path, errors),
                None if schema["additionalProperties"] == false => {
                    errors.push(format!("{path}: not in the schema"))
                }
                None => {
                    if let Some(s) = schema.get("additionalProperties").filter(|s| s.is_object()) {
                        fits(s, item, &path, errors);
                    }
                }
            }
        }
    }
    if let Some(items) = v.as_array() {
        for (i, item) in items.iter().enumerate() {
            fits(&schema["items"], item, &format!("{at}[{i}]"), errors);
        }
    }
}
