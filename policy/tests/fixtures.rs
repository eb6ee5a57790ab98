//! Data-driven tests over `tests/fixtures/policies/` and the repository's
//! example `policies/`.
//!
//! Each fixture directory is loaded as a policy directory and the outcome is
//! compared with its `expected.txt`: the exact `Diagnostics` display (paths
//! relative to the fixture) or, for a clean set, a summary of every policy.
//! `UPDATE_EXPECT=1 cargo test -p unbaked-policy` rewrites the expectations;
//! review the diff before committing.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use unbaked_policy::{load_dir, Dynamic, GrantDelivery, Policy, PolicySet, Severity};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every directory holding an `expected.txt`, sorted.
fn fixture_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if dir.join("expected.txt").is_file() {
            dirs.push(dir.clone());
        }
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    dirs.sort();
    dirs
}

/// Loads `dir` and compares the outcome with `expected`; with
/// `UPDATE_EXPECT=1` rewrites `expected` instead.
fn check(dir: &Path, expected: &Path) -> Result<(), String> {
    let actual = render(dir);
    if std::env::var_os("UPDATE_EXPECT").is_some_and(|v| v == "1") {
        fs::write(expected, &actual).unwrap();
        return Ok(());
    }
    let want = fs::read_to_string(expected).unwrap();
    if want == actual {
        Ok(())
    } else {
        Err(format!(
            "{}:\n--- expected\n{want}--- actual\n{actual}",
            expected.display()
        ))
    }
}

fn render(dir: &Path) -> String {
    match load_dir(dir) {
        Ok(set) => summary(&set, dir),
        Err(mut diags) => {
            for d in &mut diags.0 {
                d.file = d.file.strip_prefix(dir).unwrap_or(&d.file).to_path_buf();
            }
            let prefix = format!("{}/", dir.display());
            format!("{}\n", diags.to_string().replace(&prefix, ""))
        }
    }
}

/// One block per policy: everything the parser decided, defaults included.
fn summary(set: &PolicySet, dir: &Path) -> String {
    let mut out = String::new();
    for p in set.iter() {
        let Policy {
            workload,
            source,
            matcher: m,
            launch: l,
            isolation: i,
            grants,
            templates,
        } = p;
        let source = source.strip_prefix(dir).unwrap_or(source).display();
        writeln!(out, "workload {workload} ({source})").unwrap();
        writeln!(
            out,
            "  match uids={:?} gids={:?} docker_labels={:?} image={:?}",
            m.uids, m.gids, m.docker_labels, m.image
        )
        .unwrap();
        writeln!(out, "  launch uids={:?} gids={:?}", l.uids, l.gids).unwrap();
        writeln!(
            out,
            "  isolation icc={} privileged={} host_network={} host_pid={} host_ipc={} docker_socket={} read_only_rootfs={} cap_add={:?}",
            i.inter_container_traffic, i.privileged, i.host_network, i.host_pid, i.host_ipc,
            i.docker_socket, i.read_only_rootfs, i.cap_add
        )
        .unwrap();
        for g in grants {
            write!(
                out,
                "  grant {} <- {}#{} ttl={}s",
                g.id(),
                g.secret,
                g.key,
                g.ttl.as_secs()
            )
            .unwrap();
            match &g.dynamic {
                Some(Dynamic::Pki(p)) => write!(
                    out,
                    " pki mount={} role={} cn={} alt={:?} ip={:?}",
                    p.mount, p.role, p.common_name, p.alt_names, p.ip_sans
                )
                .unwrap(),
                Some(Dynamic::Leased) => out.push_str(" leased"),
                None => {}
            }
            if g.is_directory() {
                out.push_str(" dir");
            }
            if let GrantDelivery::File(_) = g.delivery {
                write!(out, " mode={:#o} uid={:?} gid={:?}", g.mode, g.uid, g.gid).unwrap();
            }
            if let Some(a) = &g.on_change {
                write!(
                    out,
                    " on_change={a:?} debounce={}ms",
                    g.debounce.as_millis()
                )
                .unwrap();
            }
            out.push('\n');
        }
        for t in templates {
            let sources: Vec<String> = t.sources().iter().map(|s| s.describe()).collect();
            writeln!(
                out,
                "  template {} <- {} ttl={}s mode={:#o} on_change={:?} debounce={}ms",
                t.id(),
                sources.join(", "),
                t.ttl.as_secs(),
                t.mode,
                t.on_change,
                t.debounce.as_millis()
            )
            .unwrap();
        }
    }
    out
}

#[test]
fn fixtures() {
    let root = repo_root().join("tests/fixtures/policies");
    let dirs = fixture_dirs(&root);
    assert!(
        dirs.len() > 10,
        "fixtures not found under {}",
        root.display()
    );
    let mut failures = Vec::new();
    for dir in &dirs {
        if let Err(e) = check(dir, &dir.join("expected.txt")) {
            failures.push(e);
        }
        // A fixture under bad/<rule>/ must fail, and with that rule.
        let kind = dir.parent().and_then(Path::file_name);
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        match (kind.and_then(|k| k.to_str()), load_dir(dir)) {
            (Some("bad"), Ok(_)) => failures.push(format!("{}: loads clean", dir.display())),
            (Some("bad"), Err(diags)) => {
                if !diags.iter().any(|d| d.rule == name) {
                    failures.push(format!("{}: no diagnostic with rule {name}", dir.display()));
                }
                if diags
                    .iter()
                    .any(|d| d.severity != Severity::Error || d.line == 0)
                {
                    failures.push(format!(
                        "{}: a diagnostic is not a located error",
                        dir.display()
                    ));
                }
            }
            (_, Err(diags)) => failures.push(format!("{}: fails:\n{diags}", dir.display())),
            (_, Ok(_)) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn repository_examples_load_clean() {
    let dir = repo_root().join("policies");
    let set = load_dir(&dir).unwrap_or_else(|d| panic!("policies/ does not load:\n{d}"));
    assert!(set.get("billing").is_some() && set.get("reports").is_some());
    // policies/tests/ holds test cases, not policies.
    assert_eq!(
        set.len(),
        fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "toml")
            })
            .count()
    );
}

/// The example policy tests agree with the example policies: a case
/// expects "allow" exactly when the workload has a grant of that secret.
#[test]
fn repository_policy_tests_agree_with_examples() {
    let dir = repo_root().join("policies");
    let set = load_dir(&dir).unwrap();
    let mut cases = 0;
    for entry in fs::read_dir(dir.join("tests")).unwrap() {
        let path = entry.unwrap().path();
        let text = fs::read_to_string(&path).unwrap();
        let doc: toml::Table = toml::from_str(&text).unwrap();
        for case in doc["case"].as_array().unwrap() {
            let field = |k: &str| case[k].as_str().unwrap();
            let policy = set.get(field("workload")).unwrap();
            let granted = policy.grants.iter().any(|g| g.secret == field("secret"));
            let expect = if granted { "allow" } else { "deny" };
            assert_eq!(field("expect"), expect, "{}: {case:?}", path.display());
            cases += 1;
        }
    }
    assert!(cases > 0);
}
