//! `unbaked run` with the broker in a mount namespace of its own, as the
//! systemd unit runs it (`ProtectSystem=strict`, `ProtectHome=`,
//! `PrivateTmp=`: a private namespace, slave propagation from the host):
//! the launch's tmpfs must still be what dockerd bind-mounts at the
//! container's `/run/secrets`, and go when the container goes.
mod util;
use std::path::Path;
use util::docker::*;
use util::*;

const DB: &[u8] = b"db-pw-ns-5e1d0c7a";

/// A workload matched by labels, launchable by the test's uid, with one
/// file grant.
fn policy(w: &str) -> String {
    label_policy(w, "", DB_FILE_GRANT)
}

/// `unshare --mount --propagation slave`, then what `ProtectSystem=`
/// does: /usr and /etc read-only, in the broker's namespace only.
const LIKE_THE_UNIT: &[&str] = &[
    "unshare",
    "--mount",
    "--propagation",
    "slave",
    "--",
    "sh",
    "-c",
    "for d in /usr /etc; do mount --bind $d $d && mount -o remount,bind,ro $d; done 2>/dev/null; exec \"$@\"",
    "sh",
];

fn mount_ns(pid: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn file_grants_reach_a_container_from_a_broker_in_its_own_mount_namespace() {
    let image = test_image();
    let w = unique("unitns");
    let mut clean = Cleanup::default();
    clean.network(&format!("unbaked-{w}"));
    let b = Broker::start_wrapped(LIKE_THE_UNIT, &[("w.toml", &policy(&w))]);
    assert_ne!(
        mount_ns(&b.pid().to_string()),
        mount_ns("self"),
        "the broker is not in a mount namespace of its own: the test proves nothing"
    );
    b.put("app/db", "password", DB);

    let name = clean.container(&unique("unitns"));
    let out = output(run(&b, &w).args(["--", "-d", "--name", &name, image, "exec sleep 60"]));
    assert!(
        out.status.success(),
        "unbaked run failed:\n{}\nbroker log:\n{}",
        text(&out.stderr),
        b.log_text()
    );
    let file = || output(docker().args(["exec", &name, "rev", "/run/secrets/db_password"]));
    assert!(
        eventually(60, || text(&file().stdout).trim() == rev(DB)),
        "the file grant never reached the container's /run/secrets (ls: {:?}):\nbroker log:\n{}",
        text(&output(docker().args(["exec", &name, "ls", "-la", "/run/secrets"])).stdout),
        b.log_text()
    );
    // Mounted where the host (and dockerd) sees it: in the test's namespace.
    assert_eq!(
        mounts_under(b.dir.path()).len(),
        1,
        "the launch's tmpfs is not mounted in the host's namespace:\nbroker log:\n{}",
        b.log_text()
    );

    // The container goes: the tmpfs is wiped, unmounted in the host's
    // namespace and removed.
    docker_ok(&["rm", "-f", &name]);
    let containers_dir = b.dir.path().join("containers");
    let empty = |d: &Path| std::fs::read_dir(d).map_or(true, |mut e| e.next().is_none());
    assert!(
        eventually(60, || mounts_under(b.dir.path()).is_empty()
            && empty(&containers_dir)),
        "the secrets tmpfs is still there after the container was removed ({:?}):\nbroker log:\n{}",
        mounts_under(b.dir.path()),
        b.log_text()
    );
    assert!(files_containing(b.dir.path(), DB).is_empty());
}
