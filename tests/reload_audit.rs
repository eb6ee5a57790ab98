//! Policy reloads (SIGHUP, file changes, broken sets) and the audit trail
//! (hash chain, fail closed).
mod util;
use nix::sys::signal::Signal;
use std::time::Duration;
use util::*;

const VALUE: &[u8] = b"reload-value-c4fe";

fn policy(workload: &str) -> String {
    host_policy(
        workload,
        "[[grant]]\nsecret = \"app/x\"\nkey = \"k\"\nenv = \"X\"\n",
    )
}

fn can_exec(b: &Broker, workload: &str) -> bool {
    output(b.cmd().args(["exec", "--workload", workload, "--", "true"]))
        .status
        .success()
}

#[test]
fn a_broken_policy_set_is_rejected_whole_and_the_old_one_keeps_serving() {
    let b = Broker::start(&[("a.toml", &policy("a"))]);
    b.put("app/x", "k", VALUE);
    assert!(can_exec(&b, "a"));

    // A new good workload next to a broken file: neither is taken.
    b.write_policy("b.toml", &policy("b"));
    b.write_policy(
        "broken.toml",
        "workload = \"c\"\n[match]\nuids = [1]\n[[grant]]\nsecret = \"app/x\"\nkey = \"k\"\n",
    );
    assert!(wait_for(Duration::from_secs(5), || b
        .log_text()
        .contains("reload rejected")));
    assert!(b.log_text().contains("broken.toml:4:1"), "{}", b.log_text());
    assert!(can_exec(&b, "a"));
    assert!(!can_exec(&b, "b"));
    assert!(b.audit_text().contains("\"event\":\"reload_rejected\""));

    // Fixed: both are served.
    std::fs::remove_file(b.policies.join("broken.toml")).unwrap();
    assert!(wait_for(Duration::from_secs(5), || can_exec(&b, "b")));
}

#[test]
fn sighup_reloads() {
    let b = Broker::start(&[]);
    b.put("app/x", "k", VALUE);
    // Written behind the watcher's back is not possible, so check the
    // trigger the audit names.
    b.signal(Signal::SIGHUP);
    assert!(wait_for(Duration::from_secs(5), || b
        .audit_text()
        .contains("SIGHUP: 0 workloads")));
    b.write_policy("a.toml", &policy("a"));
    b.signal(Signal::SIGHUP);
    assert!(wait_for(Duration::from_secs(5), || can_exec(&b, "a")));
}

#[test]
fn the_audit_chain_verifies_and_catches_tampering() {
    let mut b = Broker::start(&[("a.toml", &policy("a"))]);
    b.put("app/x", "k", VALUE);
    assert!(can_exec(&b, "a"));
    assert!(
        !output(b.cmd().args(["exec", "--workload", "nope", "--", "true"]))
            .status
            .success()
    );
    b.stop();
    let audit = b.audit_text();
    for event in [
        "start",
        "authenticate",
        "grant",
        "deny",
        "secret_write",
        "stop",
    ] {
        assert!(
            audit.contains(&format!("\"event\":\"{event}\"")),
            "{event} missing:\n{audit}"
        );
    }
    assert!(!audit.contains(std::str::from_utf8(VALUE).unwrap()));
    let verify = |b: &Broker| output(b.cmd().args(["audit", "verify"]).arg(&b.audit));
    let out = verify(&b);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(" records, chain intact"));

    let lines: Vec<&str> = audit.lines().collect();
    let edited = audit.replacen("\"workload\":\"nope\"", "\"workload\":\"a\"", 1);
    assert_ne!(edited, audit);
    std::fs::write(&b.audit, edited).unwrap();
    let out = verify(&b);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("chain broken"),
        "{}",
        text(&out.stderr)
    );

    let dropped: String = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    std::fs::write(&b.audit, dropped).unwrap();
    let out = verify(&b);
    assert!(
        text(&out.stderr).contains("audit.log:2:"),
        "{}",
        text(&out.stderr)
    );

    // And a broker refuses to extend a broken chain.
    let out = output(
        b.cmd()
            .args(["broker", "--socket"])
            .arg(b.dir.path().join("again.sock"))
            .arg("--policies")
            .arg(&b.policies)
            .arg("--audit")
            .arg(&b.audit),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("audit.log line 2"),
        "{}",
        text(&out.stderr)
    );
}

/// A tmpfs of 64 KiB for the audit file, unmounted on drop.
struct TinyFs(tempfile::TempDir);
impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn when_the_audit_file_cannot_be_written_nothing_is_released() {
    let fs = TinyFs(tempfile::tempdir().unwrap());
    nix::mount::mount(
        Some("tmpfs"),
        fs.0.path(),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=64k"),
    )
    .expect("mount a small tmpfs (the tests run as root)");
    let audit = fs.0.path().join("audit.log");
    let b = Broker::start_with_audit(&[("a.toml", &policy("a"))], &audit);
    b.put("app/x", "k", VALUE);
    assert!(can_exec(&b, "a"));

    // Fill the filesystem. Appends still fit in the audit file's last
    // page for a few requests; after that no record can be written.
    let filler = fs.0.path().join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 128 * 1024]);
    let mut refused = None;
    for _ in 0..40 {
        let out =
            output(
                b.cmd()
                    .args(["exec", "--workload", "a", "--", "sh", "-c", "echo \"$X\""]),
            );
        if !out.status.success() {
            refused = Some(out);
            break;
        }
        assert_eq!(out.stdout, [VALUE, b"\n"].concat());
    }
    let out = refused.expect("the audit file never filled up");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("cannot write audit file"),
        "{}",
        text(&out.stderr)
    );

    // Room again: service resumes, and the chain is still whole.
    std::fs::remove_file(&filler).unwrap();
    assert!(can_exec(&b, "a"));
    let out = output(b.cmd().args(["audit", "verify"]).arg(&audit));
    assert!(out.status.success(), "{}", text(&out.stderr));
}
