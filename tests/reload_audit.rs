//! Policy reloads (SIGHUP, file changes, broken sets) and the audit trail
//! (hash chain, fail closed).
mod util;
use nix::sys::signal::Signal;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
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
    assert!(
        wait_for(DEADLINE, || b.log_text().contains("reload rejected")),
        "not within {DEADLINE:?}:\n{}",
        b.log_text()
    );
    assert!(b.log_text().contains("broken.toml:4:1"), "{}", b.log_text());
    assert!(can_exec(&b, "a"));
    assert!(!can_exec(&b, "b"));
    assert!(b.audit_text().contains("\"event\":\"reload_rejected\""));

    // Fixed: both are served.
    std::fs::remove_file(b.policies.join("broken.toml")).unwrap();
    assert!(
        wait_for(DEADLINE, || can_exec(&b, "b")),
        "not within {DEADLINE:?}:\n{}",
        b.log_text()
    );
}

/// Another local user: not root, not the broker's uid (the tests run as root).
const ATTACKER: u32 = 2002;

/// A policy granting the attacker's uid the secret, as the attacker would write it.
fn attackers_policy() -> String {
    format!(
        "workload = \"mallory\"\n[match]\nuids = [{ATTACKER}]\n[[grant]]\nsecret = \"app/x\"\nkey = \"k\"\nenv = \"X\"\n"
    )
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Lets the attacker reach the broker: the test directory (0700) becomes
/// searchable, the socket 0666, and the attacker gets a binary it can run
/// (the build directory need not be searchable by others).
fn open_to_attacker(b: &Broker) -> PathBuf {
    chmod(b.dir.path(), 0o711);
    chmod(&b.socket, 0o666);
    let searchable = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.mode() & 0o001 != 0);
    if Path::new(BIN).ancestors().all(searchable) {
        return PathBuf::from(BIN);
    }
    let bin = b.dir.path().join("unbaked-attacker");
    if std::fs::hard_link(BIN, &bin).is_err() {
        std::fs::copy(BIN, &bin).unwrap();
        chmod(&bin, 0o755);
    }
    bin
}

fn as_attacker(cmd: &mut Command) -> &mut Command {
    cmd.uid(ATTACKER).gid(ATTACKER).current_dir("/")
}

/// Whether the attacker's process gets the secret through its workload.
fn attacker_fetches(b: &Broker, bin: &Path) -> bool {
    let out = output(
        as_attacker(&mut Command::new(bin))
            .env("UNBAKED_SOCKET", &b.socket)
            .env_remove("UNBAKED_LOG")
            .args([
                "exec",
                "--workload",
                "mallory",
                "--",
                "sh",
                "-c",
                "printf %s \"$X\"",
            ]),
    );
    out.status.success() && out.stdout == VALUE
}

/// The attacker (uid 2002) writes `text` to `path`, as far as the kernel lets it.
fn attacker_writes(path: &Path, text: &str) -> bool {
    run_stdin(
        as_attacker(&mut Command::new("sh"))
            .args(["-c", "cat > \"$0\""])
            .arg(path),
        text.as_bytes(),
    )
    .status
    .success()
}

/// Waits for `f` (until [`DEADLINE`]), failing with the broker's log and audit.
fn wait_or_fail(b: &Broker, what: &str, f: impl FnMut() -> bool) {
    assert!(
        wait_for(DEADLINE, f),
        "{what}: not within {DEADLINE:?}\n--- log:\n{}\n--- audit:\n{}",
        b.log_text(),
        b.audit_text()
    );
}

/// Waits for a `reload_rejected` audit record whose reason holds `reason`.
fn wait_rejected(b: &Broker, reason: &str) {
    wait_or_fail(b, &format!("a reload rejected for {reason:?}"), || {
        b.audit_text()
            .lines()
            .any(|l| l.contains("\"event\":\"reload_rejected\"") && l.contains(reason))
    });
}

#[test]
fn a_policy_file_others_can_write_is_refused_and_the_old_set_keeps_serving() {
    let b = Broker::start(&[("a.toml", &policy("a"))]);
    b.put("app/x", "k", VALUE);
    let bin = open_to_attacker(&b);
    assert!(can_exec(&b, "a"));
    let file = b.policies.join("a.toml");

    // A deploy left the file 0666; the attacker rewrites it to grant
    // itself the secret. The chmod and the write each trigger a reload.
    chmod(&file, 0o666);
    assert!(attacker_writes(&file, &attackers_policy()));
    wait_rejected(
        &b,
        &format!(
            "{}: error: the file is writable by group and others (mode 0666) (hint: chmod 0644 {}",
            file.display(),
            file.display()
        ),
    );
    assert!(b.log_text().contains("policy reload rejected"));
    assert!(can_exec(&b, "a"), "the old set stopped serving");
    assert!(!attacker_fetches(&b, &bin));

    // A new 0666 file the attacker drops into a directory left 0777.
    chmod(&b.policies, 0o777);
    let dropped = b.policies.join("z.toml");
    assert!(attacker_writes(
        &dropped,
        &attackers_policy().replace("mallory", "m2")
    ));
    chmod(&dropped, 0o666);
    b.signal(Signal::SIGHUP);
    wait_rejected(&b, "SIGHUP: 4 errors");
    let audit = b.audit_text();
    let last = audit
        .lines()
        .rev()
        .find(|l| l.contains("reload_rejected"))
        .unwrap();
    assert!(
        last.contains(&format!(
            "first: {}: error: the directory is writable by group and others (mode 0777) (hint: chmod 0755",
            b.policies.display()
        )),
        "{last}"
    );
    assert!(b
        .log_text()
        .contains("the file is owned by uid 2002, not root or the broker's uid 0"));
    assert!(can_exec(&b, "a"));
    assert!(!attacker_fetches(&b, &bin));

    // Control: the same files, root's and 0644, in a 0755 directory, load;
    // and then the attacker's grant works, so the refusal is what stopped it.
    std::fs::remove_file(&dropped).unwrap();
    chmod(&b.policies, 0o755);
    chmod(&file, 0o644);
    wait_or_fail(&b, "the fixed file loads", || attacker_fetches(&b, &bin));
    assert!(b
        .audit_text()
        .contains("policies directory changed: 1 workloads"));
}

#[test]
fn a_symlink_to_another_users_file_outside_the_directory_is_refused() {
    let b = Broker::start(&[("a.toml", &policy("a"))]);
    b.put("app/x", "k", VALUE);
    let bin = open_to_attacker(&b);
    // The attacker's own directory and file, outside the policies directory.
    let home = b.dir.path().join("mallory");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(ATTACKER), Some(ATTACKER)).unwrap();
    let theirs = home.join("mallory.toml");
    assert!(attacker_writes(&theirs, &attackers_policy()));
    let link = b.policies.join("mallory.toml");
    std::os::unix::fs::symlink(&theirs, &link).unwrap();
    b.signal(Signal::SIGHUP);
    wait_rejected(
        &b,
        &format!(
            "{}: error: the symlink points at {}, which is outside the policy directory",
            link.display(),
            theirs.display()
        ),
    );
    assert!(can_exec(&b, "a"));
    assert!(!attacker_fetches(&b, &bin));

    // Control: a link to root's copy inside the directory is followed.
    let available = b.policies.join("available");
    std::fs::create_dir(&available).unwrap();
    chmod(&available, 0o755);
    std::fs::write(available.join("mallory.toml"), attackers_policy()).unwrap();
    chmod(&available.join("mallory.toml"), 0o644);
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink("available/mallory.toml", &link).unwrap();
    b.signal(Signal::SIGHUP);
    wait_or_fail(&b, "the link inside loads", || attacker_fetches(&b, &bin));
    assert!(can_exec(&b, "a"));
}

#[test]
fn a_policy_file_owned_by_another_user_is_refused() {
    let b = Broker::start(&[("a.toml", &policy("a"))]);
    b.put("app/x", "k", VALUE);
    let bin = open_to_attacker(&b);
    // Root's 0644 file, but the attacker's: chmod is theirs to make.
    b.write_policy("mallory.toml", &attackers_policy());
    let file = b.policies.join("mallory.toml");
    std::os::unix::fs::chown(&file, Some(ATTACKER), Some(ATTACKER)).unwrap();
    b.signal(Signal::SIGHUP);
    wait_rejected(
        &b,
        &format!(
            "{}: error: the file is owned by uid 2002, not root or the broker's uid 0 (hint: chown root {}",
            file.display(),
            file.display()
        ),
    );
    assert!(can_exec(&b, "a"));
    assert!(!attacker_fetches(&b, &bin));

    // Control: root's again, it loads.
    std::os::unix::fs::chown(&file, Some(0), Some(0)).unwrap();
    b.signal(Signal::SIGHUP);
    wait_or_fail(&b, "the root-owned file loads", || {
        attacker_fetches(&b, &bin)
    });
    assert!(can_exec(&b, "a"));
}

#[test]
fn sighup_reloads() {
    let b = Broker::start(&[]);
    b.put("app/x", "k", VALUE);
    // Written behind the watcher's back is not possible, so check the
    // trigger the audit names.
    b.signal(Signal::SIGHUP);
    wait_or_fail(&b, "the SIGHUP reload", || {
        b.audit_text().contains("SIGHUP: 0 workloads")
    });
    b.write_policy("a.toml", &policy("a"));
    b.signal(Signal::SIGHUP);
    wait_or_fail(&b, "the reloaded workload", || can_exec(&b, "a"));
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

#[test]
fn when_the_audit_file_cannot_be_written_nothing_is_released() {
    let fs = TinyFs::mount("64k");
    let audit = fs.path().join("audit.log");
    let b = Broker::start_with_audit(&[("a.toml", &policy("a"))], &audit);
    b.put("app/x", "k", VALUE);
    assert!(can_exec(&b, "a"));

    // Fill the filesystem. Appends still fit in the audit file's last
    // page for a few requests; after that no record can be written.
    let filler = fs.path().join("filler");
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
