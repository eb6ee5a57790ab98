//! `unbaked run` launches survive a broker restart (issue 16): a broker
//! with a store directory and key keeps its launches in the sealed lease
//! record, so after a SIGKILL and a start it renews a running container's
//! file lease by its id (a rotation reaches the container within one ttl,
//! judged by the broker's own audit time stamps), and the tmpfs of a
//! container removed meanwhile is zeroed, unmounted, removed and audited.
//! Control: without a store directory the same restart leaves the
//! container unrenewed, and the rotation never reaches it.
//!
//! Run under the Docker lock: `flock /tmp/unbaked-docker.lock cargo test
//! --test launch_restart`.
mod util;
use std::time::Duration;
use util::docker::*;
use util::*;

const DB: &[u8] = b"launch-keep-db-1e7c0ffe";
const DB2: &[u8] = b"launch-keep-db2-5ab1d0e9";
/// The file grant's ttl: renewed every two thirds of it.
const TTL_SECS: u64 = 20;

fn policy(w: &str) -> String {
    label_policy(
        w,
        "",
        &format!(
            "[[grant]]\nsecret = \"app/db\"\nkey = \"password\"\nfile = \"db_password\"\nttl = \"{TTL_SECS}s\"\n"
        ),
    )
}

/// A broker for workload `w`: keeping launches in `keep`'s store, or
/// with the memory store (nothing kept).
fn broker(w: &str, keep: Option<&StoreDir>) -> Broker {
    let mut builder = Broker::builder().policies(&[("w.toml", &policy(w))]);
    if let Some(k) = keep {
        builder = builder.args(k.args());
    }
    let b = builder.start();
    b.put("app/db", "password", DB);
    b
}

/// `unbaked run -d` a container that sleeps; returns (name, launch id)
/// once its file holds `want`.
fn launch(b: &Broker, w: &str, clean: &mut Cleanup, want: &[u8]) -> (String, String) {
    let name = clean.container(&unique("keep"));
    let out = output(run(b, w).args(["--", "-d", "--name", &name, test_image(), "exec sleep 600"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        eventually(60, || read_file(&name) == rev(want)),
        "the file grant never arrived:\n{}",
        b.log_text()
    );
    let launch = docker_ok(&[
        "inspect",
        "-f",
        "{{index .Config.Labels \"io.unbaked.launch\"}}",
        &name,
    ]);
    assert!(!launch.is_empty(), "no launch label on {name}");
    (name, launch)
}

/// The container's file, reversed back by `rev` inside it ("" if none).
fn read_file(name: &str) -> String {
    text(&output(docker().args(["exec", name, "rev", "/run/secrets/db_password"])).stdout)
}

/// The size of the platform's record a "leases kept" line reports.
fn kept_bytes(line: &str) -> Option<u64> {
    let l = plain(line);
    l.contains("leases kept").then(|| {
        l.split("platform_bytes=")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })?
}

/// Wait until the broker saved the launch its latest container claimed:
/// a save after the claim whose platform record grew (a claimed launch
/// names its container; the keeper saves within a second of a change).
fn wait_kept(b: &Broker) {
    let ok = wait_for(DEADLINE, || {
        let log = b.log_text();
        let lines: Vec<&str> = log.lines().collect();
        let Some(claim) = lines
            .iter()
            .rposition(|l| l.contains("file grants written to the container's secrets tmpfs"))
        else {
            return false;
        };
        let before = lines[..claim]
            .iter()
            .rev()
            .find_map(|l| kept_bytes(l))
            .unwrap_or(0);
        lines[claim..]
            .iter()
            .filter_map(|l| kept_bytes(l))
            .any(|n| n > before)
    });
    assert!(ok, "the launch was not kept:\n{}", b.log_text());
}

fn records_after(b: &Broker, since: u64) -> Vec<AuditLine> {
    b.audit_records()
        .into_iter()
        .filter(|r| r.seq > since)
        .collect()
}

fn last_seq(b: &Broker) -> u64 {
    b.audit_records().last().map_or(0, |r| r.seq)
}

/// The latest file lease granted to `w` (a launch's files).
fn file_lease(b: &Broker, w: &str) -> String {
    b.audit_records()
        .iter()
        .filter(|r| r.event == "grant" && r.json["workload"] == w)
        .filter(|r| {
            r.json["secrets"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["secret"] == "app/db"))
        })
        .filter_map(|r| r.lease().map(str::to_string))
        .next_back()
        .unwrap_or_else(|| panic!("no grant of app/db to {w}:\n{}", b.audit_text()))
}

/// Kill the broker, rotate after it is back, and wait for the container
/// to read the new value; returns the audit seq of the restart, the
/// rotation's record and the renewal that carried it.
fn rotate_across_restart(b: &mut Broker, name: &str, lease: &str) -> (u64, AuditLine, AuditLine) {
    b.kill();
    let mark = last_seq(b);
    b.restart();
    b.put("app/db", "password", DB2);
    let written = records_after(b, mark)
        .into_iter()
        .rfind(|r| r.event == "secret_write")
        .expect("the rotation is audited");
    assert!(
        eventually(60, || read_file(name) == rev(DB2)),
        "the rotation never reached the container:\n{}",
        b.log_text()
    );
    let renewal = records_after(b, written.seq)
        .into_iter()
        .find(|r| {
            r.event == "renew"
                && r.lease() == Some(lease)
                && r.json["secrets"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s["version"] == 2))
        })
        .unwrap_or_else(|| panic!("no renewal of {lease} with version 2:\n{}", b.audit_text()));
    (mark, written, renewal)
}

#[test]
fn a_restarted_broker_renews_its_launches_and_ends_those_gone_meanwhile() {
    let _heavy = heavy();
    let w = unique("lkeep");
    let mut clean = Cleanup::default();
    clean.network(&format!("unbaked-{w}"));
    let keep = StoreDir::new("unbaked-launch-keep-");
    let mut b = broker(&w, Some(&keep));

    // 1. Still running: renewed by its kept lease id after the restart.
    let (name, _) = launch(&b, &w, &mut clean, DB);
    let lease = file_lease(&b, &w);
    wait_kept(&b);
    let (mark, written, renewal) = rotate_across_restart(&mut b, &name, &lease);
    let took = renewal.ts.duration_since(written.ts).unwrap_or_default();
    eprintln!("the rotation was renewed into the container {took:?} after it was written");
    // Renewed at once after the restart, then every two thirds of the ttl:
    // the rotation rides the first renewal (if it came first) or the second.
    let renewals: Vec<u64> = records_after(&b, mark)
        .iter()
        .filter(|r| r.event == "renew" && r.lease() == Some(lease.as_str()))
        .map(|r| r.seq)
        .collect();
    let carried = renewals.iter().position(|&s| s == renewal.seq);
    assert!(
        carried.is_some_and(|n| n <= 1),
        "the rotation was carried by renewal {carried:?} after the restart, not the first or second:\n{}",
        b.audit_text()
    );
    assert!(
        !records_after(&b, written.seq)
            .iter()
            .any(|r| r.event == "grant" && r.json["workload"] == w.as_str()),
        "the container was served afresh, not by its kept lease"
    );
    assert!(b.log_text().contains("kept launch resumed"));

    // 2. Removed while the broker was down: its tmpfs is zeroed,
    // unmounted and removed, and the end is audited.
    let (gone, launch_id) = launch(&b, &w, &mut clean, DB2);
    let gone_lease = file_lease(&b, &w);
    wait_kept(&b);
    let dir = b.dir.path().join("containers").join(&launch_id);
    assert!(dir.exists());
    b.kill();
    docker_ok(&["rm", "-f", &gone]);
    let mark = last_seq(&b);
    b.restart();
    let unmounted = eventually(60, || {
        !mounts_under(b.dir.path())
            .iter()
            .any(|m| m.contains(&launch_id))
            && !dir.exists()
    });
    assert!(
        unmounted,
        "the tmpfs of a container removed while the broker was down is still there:\n{}",
        b.log_text()
    );
    let revoked = records_after(&b, mark).into_iter().any(|r| {
        r.event == "revoke"
            && r.lease() == Some(gone_lease.as_str())
            && r.json["reason"]
                .as_str()
                .is_some_and(|s| s.contains(&launch_id))
    });
    assert!(revoked, "no revoke audited:\n{}", b.audit_text());
    // The first container still runs and is still served.
    assert_eq!(read_file(&name), rev(DB2));

    // Neither value ever in clear in the store directory (the kept
    // record names files and containers, never their content).
    for v in [DB, DB2] {
        let hits = scan(v).under(&keep.dir);
        assert!(hits.is_empty(), "secret bytes in the store dir: {hits:?}");
        assert!(!b.log_text().as_bytes().windows(v.len()).any(|x| x == v));
        assert!(!b.audit_text().as_bytes().windows(v.len()).any(|x| x == v));
    }
    docker_ok(&["rm", "-f", &name]);
    assert!(
        eventually(60, || mounts_under(b.dir.path()).is_empty()),
        "{}",
        b.log_text()
    );
}

/// Control: the same restart with nothing kept (memory store, no store
/// directory): the broker does not know the launch, so nothing renews
/// it and the rotation never reaches the container.
#[test]
fn without_a_store_directory_a_restart_abandons_the_launch() {
    let _heavy = heavy();
    let w = unique("lnokeep");
    let mut clean = Cleanup::default();
    clean.network(&format!("unbaked-{w}"));
    let mut b = broker(&w, None);
    let (name, _) = launch(&b, &w, &mut clean, DB);
    let lease = file_lease(&b, &w);
    b.kill();
    let mark = last_seq(&b);
    b.restart();
    assert!(b
        .log_text()
        .contains("launches are not kept across a restart"));
    // The memory store lost the secret with the broker: write it again,
    // then rotate it.
    b.put("app/db", "password", DB);
    b.put("app/db", "password", DB2);
    // Past a whole renewal period (a wait with no upper bound on the
    // product: the assertion is that nothing happened).
    std::thread::sleep(Duration::from_secs(TTL_SECS));
    assert_ne!(read_file(&name), rev(DB2), "rotated without a kept launch");
    assert!(
        !records_after(&b, mark)
            .iter()
            .any(|r| r.event == "renew" && r.lease() == Some(lease.as_str())),
        "renewed without a kept launch:\n{}",
        b.audit_text()
    );
    docker_ok(&["rm", "-f", &name]);
}

/// The container restarted (`docker restart`: the same id, a new first
/// process) while the broker was down: the restarted broker does not take
/// it for the one that claimed the launch. Its file lease is revoked
/// (audited with the launch), never renewed, and its tmpfs is zeroed,
/// unmounted and removed. Its new first process, the exec shim, finds no
/// broker and exits, so the broker finds it either changed (still
/// starting) or stopped: both end the launch. (A restarted container that
/// keeps running with a new first process is the unit test of
/// `Containers::verify_restored`.)
#[test]
fn a_container_restarted_while_the_broker_was_down_is_not_served_again() {
    let _heavy = heavy();
    let w = unique("lrestart");
    let mut clean = Cleanup::default();
    clean.network(&format!("unbaked-{w}"));
    let keep = StoreDir::new("unbaked-launch-keep-");
    let mut b = broker(&w, Some(&keep));
    let (name, launch_id) = launch(&b, &w, &mut clean, DB);
    let lease = file_lease(&b, &w);
    wait_kept(&b);
    let id = docker_ok(&["inspect", "-f", "{{.Id}}", &name]);
    let dir = b.dir.path().join("containers").join(&launch_id);
    b.kill();
    let mark = last_seq(&b);
    docker_ok(&["restart", "-t", "0", &name]);
    assert_eq!(docker_ok(&["inspect", "-f", "{{.Id}}", &name]), id);
    b.restart();
    let revoked = wait_for(DEADLINE, || {
        records_after(&b, mark).iter().any(|r| {
            r.event == "revoke"
                && r.lease() == Some(lease.as_str())
                && r.json["reason"].as_str().is_some_and(|s| {
                    s.contains(&launch_id)
                        && (s.contains("the container changed while the broker was down")
                            || s.contains("no longer running")
                            || s.contains("stopped"))
                })
        })
    });
    assert!(
        revoked,
        "no revoke audited:\n{}\n{}",
        b.audit_text(),
        b.log_text()
    );
    let gone = eventually(60, || {
        !mounts_under(b.dir.path())
            .iter()
            .any(|m| m.contains(&launch_id))
            && !dir.exists()
    });
    assert!(gone, "the tmpfs is still there:\n{}", b.log_text());
    assert_eq!(read_file(&name), "", "the file is still readable");
    assert!(
        !records_after(&b, mark)
            .iter()
            .any(|r| r.event == "renew" && r.lease() == Some(lease.as_str())),
        "renewed for a restarted container:\n{}",
        b.audit_text()
    );
    docker_ok(&["rm", "-f", &name]);
}
