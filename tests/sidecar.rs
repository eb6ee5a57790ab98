//! `unbaked sidecar`: files on tmpfs, renewal, rotation, withdrawal, wipe.
mod util;
use nix::sys::signal::Signal;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::Duration;
use util::*;

const PASSWORD: &[u8] = b"sidecar-pw-0b5e55ed";
const ROTATED: &[u8] = b"sidecar-pw-r0tat3d2";

fn grants(ttl: &str) -> String {
    format!(
        r#"
[[grant]]
secret = "app/db"
key = "password"
file = "db/password"
ttl = "{ttl}"

[[grant]]
secret = "app/db"
key = "user"
file = "db_user"
mode = 0o440
ttl = "{ttl}"

[[grant]]
secret = "app/db"
key = "password"
env = "NOT_FOR_THE_SIDECAR"
"#
    )
}

fn broker(ttl: &str) -> Broker {
    let b = Broker::start(&[("db.toml", &host_policy("db", &grants(ttl)))]);
    b.put_many("app/db", &[("password", PASSWORD), ("user", b"app")]);
    b
}

fn is_tmpfs(p: &std::path::Path) -> bool {
    nix::sys::statfs::statfs(p).unwrap().filesystem_type() == nix::sys::statfs::TMPFS_MAGIC
}

#[test]
fn once_writes_files_with_their_modes_and_exits() {
    let b = broker("10m");
    let secrets = shm_dir("once");
    let out = output(
        b.cmd()
            .args(["sidecar", "--workload", "db", "--once", "--dir"])
            .arg(secrets.path()),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pw = secrets.path().join("db/password");
    assert_eq!(std::fs::read(&pw).unwrap(), PASSWORD);
    assert_eq!(std::fs::metadata(&pw).unwrap().mode() & 0o7777, 0o400);
    let user = secrets.path().join("db_user");
    assert_eq!(std::fs::read(&user).unwrap(), b"app");
    assert_eq!(std::fs::metadata(&user).unwrap().mode() & 0o7777, 0o440);
    // Env grants are not the sidecar's; no temp files are left behind.
    let names: Vec<_> = walk(secrets.path());
    assert_eq!(names, ["db", "db/password", "db_user"], "{names:?}");
    assert!(!b
        .log_text()
        .contains(std::str::from_utf8(PASSWORD).unwrap()));
}

fn walk(root: &std::path::Path) -> Vec<String> {
    let mut out = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

fn spawn_sidecar(b: &Broker, dir: &std::path::Path) -> std::process::Child {
    b.cmd()
        .env("NO_COLOR", "1")
        .args(["sidecar", "--workload", "db", "--dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(b.dir.path().join("sidecar.log")).unwrap())
        .spawn()
        .unwrap()
}

/// Waits that only a hung broker or sidecar misses; how soon a change
/// reached the files is judged from the product's records (the audit's and
/// the sidecar log's time stamps), with this slack for a late timer.
const TIMER_SLACK: Duration = Duration::from_secs(1);

fn sidecar_log(b: &Broker) -> String {
    std::fs::read_to_string(b.dir.path().join("sidecar.log")).unwrap_or_default()
}

/// The sidecar logged `what` within one ttl (and the slack) of the
/// broker's latest `event` record.
fn within_ttl_of(b: &Broker, event: &str, what: &str, ttl: Duration) {
    let since = b.audited_at(event);
    let took = logged_after(&sidecar_log(b), what, since);
    assert!(
        took <= ttl + TIMER_SLACK,
        "{what:?} {took:?} after the {event} record (ttl {ttl:?}):\n{}",
        sidecar_log(b)
    );
}

fn stop(child: &mut std::process::Child, sig: Signal) -> std::process::ExitStatus {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
    child.wait().unwrap()
}

#[test]
fn renewal_follows_rotation_and_withdrawal_and_sigterm_wipes() {
    let b = broker("2s");
    let secrets = shm_dir("renew");
    let pw = secrets.path().join("db/password");
    let mut child = spawn_sidecar(&b, secrets.path());
    let ttl = Duration::from_secs(2);
    assert!(
        wait_for(DEADLINE, || std::fs::read(&pw).is_ok_and(|v| v == PASSWORD)),
        "no delivery:\n{}",
        sidecar_log(&b)
    );

    // Rotation reaches the file within one ttl (renewal at two thirds of it).
    b.put_many("app/db", &[("password", ROTATED), ("user", b"app")]);
    assert!(
        wait_for(DEADLINE, || std::fs::read(&pw).is_ok_and(|v| v == ROTATED)),
        "rotation not seen:\n{}",
        sidecar_log(&b)
    );
    within_ttl_of(&b, "secret_write", "secrets updated", ttl);

    // A grant removed from the policy disappears at the next renewal.
    let only_user = grants("2s").replace("file = \"db/password\"", "env = \"PW\"");
    b.write_policy("db.toml", &host_policy("db", &only_user));
    assert!(
        wait_for(DEADLINE, || !pw.exists()),
        "withdrawn file still there:\n{}",
        sidecar_log(&b)
    );
    within_ttl_of(&b, "reload", "wiped=1", ttl);
    let audit = b.audit_text();
    assert!(audit.contains("\"event\":\"renew\""));
    assert!(audit.contains("\"event\":\"reload\""));

    // Restore it, then stop: every file is wiped.
    b.write_policy("db.toml", &host_policy("db", &grants("2s")));
    assert!(wait_for(DEADLINE, || pw.exists()), "{}", sidecar_log(&b));
    within_ttl_of(&b, "reload", "written=1", ttl);
    let status = stop(&mut child, Signal::SIGTERM);
    assert!(status.success(), "{status}");
    assert!(
        walk(secrets.path()).iter().all(|p| p == "db"),
        "{:?}",
        walk(secrets.path())
    );
    assert!(b.audit_text().contains("\"event\":\"revoke\""));
}

#[test]
fn a_denied_renewal_removes_the_files() {
    let b = broker("2s");
    let secrets = shm_dir("deny");
    let pw = secrets.path().join("db/password");
    let mut child = spawn_sidecar(&b, secrets.path());
    assert!(wait_for(DEADLINE, || pw.exists()), "{}", sidecar_log(&b));
    let other = grants("2s");
    b.write_policy(
        "db.toml",
        &format!("workload = \"db\"\n[match]\nuids = [4242]\n{other}"),
    );
    assert!(
        wait_for(DEADLINE, || !pw.exists()),
        "denied file still there:\n{}",
        sidecar_log(&b)
    );
    within_ttl_of(
        &b,
        "reload",
        "the broker withdrew the secrets",
        Duration::from_secs(2),
    );
    assert!(b.audit_text().contains("match.uids"));
    stop(&mut child, Signal::SIGINT);
}

#[test]
fn a_disk_backed_dir_gets_a_private_tmpfs_that_is_gone_after_exit() {
    let b = broker("10m");
    let disk = tempfile::tempdir().unwrap();
    assert!(!is_tmpfs(disk.path()), "test needs a disk-backed /tmp");
    let mut child = spawn_sidecar(&b, disk.path());
    let pw = disk.path().join("db/password");
    assert!(
        wait_for(DEADLINE, || pw.exists()),
        "not within {DEADLINE:?}:\n{}",
        b.log_text()
    );
    assert!(is_tmpfs(disk.path()), "the sidecar did not mount a tmpfs");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.contains(&disk.path().display().to_string()))
        .unwrap();
    for opt in ["nosuid", "nodev", "noexec"] {
        assert!(line.contains(opt), "{line}");
    }
    stop(&mut child, Signal::SIGTERM);
    assert!(!is_tmpfs(disk.path()), "the tmpfs was not unmounted");
    assert!(!pw.exists());
    assert!(files_containing(disk.path(), PASSWORD).is_empty());
}

#[test]
fn without_cap_sys_admin_a_disk_backed_dir_is_refused_and_nothing_written() {
    let b = broker("10m");
    let disk = tempfile::tempdir().unwrap();
    let out = output(
        Command::new("setpriv")
            .args(["--bounding-set=-sys_admin", "--inh-caps=-sys_admin", BIN])
            .env("UNBAKED_SOCKET", &b.socket)
            .args(["sidecar", "--workload", "db", "--once", "--dir"])
            .arg(disk.path()),
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("not on tmpfs") && err.contains("CAP_SYS_ADMIN"),
        "{err}"
    );
    assert!(std::fs::read_dir(disk.path()).unwrap().next().is_none());
    assert!(
        !b.audit_text().contains("\"event\":\"grant\""),
        "refusal must come before any fetch"
    );
}

#[test]
fn the_sidecar_and_broker_have_core_dumps_off() {
    let b = broker("10m");
    let secrets = shm_dir("core");
    let mut child = spawn_sidecar(&b, secrets.path());
    assert!(
        wait_for(DEADLINE, || secrets.path().join("db/password").exists()),
        "not within {DEADLINE:?}:\n{}",
        b.log_text()
    );
    for pid in [b.pid(), child.id()] {
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let core = limits
            .lines()
            .find(|l| l.starts_with("Max core file size"))
            .unwrap();
        let fields: Vec<&str> = core.split_whitespace().collect();
        assert_eq!(&fields[4..6], ["0", "0"], "{core}");
    }
    stop(&mut child, Signal::SIGTERM);
}
