//! The embedded default (`broker --dev`) and the offline commands.
mod util;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use util::*;

#[test]
fn dev_starts_with_the_demo_and_says_what_to_try() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("dev.sock");
    let mut child = Command::new(BIN)
        .args(["broker", "--dev", "--socket"])
        .arg(&socket)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    while !banner.contains("policy check") {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        banner.push_str(&line);
    }
    assert!(banner.contains("unbaked exec --workload demo"), "{banner}");
    assert!(banner.contains(&socket.display().to_string()));
    assert!(wait_for(DEADLINE, || socket.exists()));

    let out = output(unbaked(&socket).args([
        "exec",
        "--workload",
        "demo",
        "--",
        "sh",
        "-c",
        "echo \"$DEMO_MESSAGE\"; cat \"$DEMO_MESSAGE_FILE\"",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello from unbaked\nhello from unbaked");
    // The example policies were loaded next to the demo.
    let out = output(unbaked(&socket).args(["exec", "--workload", "billing", "--", "true"]));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(!socket.exists(), "the socket is removed on exit");
}

#[test]
fn policy_check_passes_the_examples_and_names_file_line_field_on_errors() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = output(
        Command::new(BIN)
            .arg("policy")
            .arg("check")
            .arg(root.join("policies")),
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "workload = \"w\"\n[match]\nuids = [1]\n[[grant]]\nsecret = \"a/b\"\nkey = \"k\"\nfile = \"../escape\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("also.toml"),
        "workload = \"v\"\n[match]\nuidz = [1]\n",
    )
    .unwrap();
    let out = output(Command::new(BIN).args(["policy", "check"]).arg(dir.path()));
    assert_eq!(out.status.code(), Some(1));
    let report = text(&out.stdout);
    assert!(
        report.contains("bad.toml:7:")
            && (report.contains("grant[0].file") || report.contains("grant[1].file")),
        "{report}"
    );
    assert!(
        report.contains("also.toml:3:1") && report.contains("uidz"),
        "{report}"
    );
    assert!(
        text(&out.stderr).contains("2 errors"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = output(Command::new(BIN).args(["sidecar", "--dir", "/x"]));
    assert_eq!(out.status.code(), Some(2));
    let out = output(Command::new(BIN).args(["policy", "check", "/nonexistent/dir"]));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn version_completions_and_man_page_come_from_the_command_line_definitions() {
    let out = output(Command::new(BIN).arg("--version"));
    let version = text(&out.stdout);
    assert!(
        version.starts_with("unbaked 0.") && version.contains("commit "),
        "{version}"
    );
    let out = output(Command::new(BIN).args(["completions", "bash"]));
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("sidecar"));
    let out = output(Command::new(BIN).arg("man"));
    assert!(text(&out.stdout).contains(".TH UNBAKED 1 "));
}

#[test]
fn the_shipped_broker_config_loads() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let cfg = unbaked_broker::config::FileConfig::load(&root.join("dist/broker.toml")).unwrap();
    assert_eq!(
        cfg.broker.socket.unwrap(),
        std::path::Path::new("/run/unbaked/broker.sock")
    );
}
