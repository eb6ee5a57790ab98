//! The operators' tools the ops tests check artifacts with: Debian's
//! (promtool, mandoc, systemd-analyze, PostgreSQL) on PATH or in their
//! package's directory, and Python ones in the virtualenv scripts/install-tools
//! makes (`UNBAKED_TOOLS_VENV`, scripts/test exports it). A missing tool
//! fails the test saying how to get it; it never skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const DEFAULT_VENV: &str = "/var/cache/unbaked/ops-tools-1";

/// A Debian tool by name, from PATH or `extra` directories.
pub fn tool(name: &str, extra: &[&str]) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(extra.iter().map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` not found on PATH: run scripts/install-tools"))
}

/// The virtualenv's python, with prometheus_client, jsonschema,
/// kubernetes-validate, python-hcl2 and PyYAML.
pub fn python() -> PathBuf {
    let venv = std::env::var_os("UNBAKED_TOOLS_VENV")
        .map_or_else(|| PathBuf::from(DEFAULT_VENV), PathBuf::from);
    let py = venv.join("bin/python");
    assert!(
        py.is_file(),
        "{} missing: run scripts/install-tools (or set UNBAKED_TOOLS_VENV)",
        py.display()
    );
    py
}

/// A program in the virtualenv's bin (kubernetes-validate).
pub fn venv_bin(name: &str) -> PathBuf {
    let p = python().parent().unwrap().join(name);
    assert!(
        p.is_file(),
        "{} missing: run scripts/install-tools",
        p.display()
    );
    p
}

/// Run `python -c code args...` with `stdin`.
pub fn run_python(code: &str, args: &[&Path], stdin: &[u8]) -> Output {
    run(Command::new(python()).arg("-c").arg(code).args(args), stdin)
}

/// Run a command with `stdin`, collecting its output.
pub fn run(cmd: &mut Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let bytes = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&bytes);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}
