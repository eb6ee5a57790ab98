//! Leases survive a broker restart (issue 16): a broker with a store
//! directory and key keeps its lease table sealed there, so after a
//! SIGKILL and a start its running sidecars renew with the lease ids they
//! hold: no file lost, nothing fetched afresh (judged from the audit log
//! and the sidecars' own logs). Control: without the kept leases the same
//! restart makes every sidecar fetch anew.
mod util;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use util::*;

const PW: &[u8] = b"lease-keep-pw-3c0ffee9";

fn sidecars() -> usize {
    std::env::var("UNBAKED_TEST_SIDECARS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(40)
}

fn records_after(b: &Broker, skip: usize) -> Vec<serde_json::Value> {
    b.audit_text()
        .lines()
        .skip(skip)
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn lines(b: &Broker) -> usize {
    b.audit_text().lines().count()
}

struct Fleet {
    children: Vec<Child>,
    dirs: Vec<tempfile::TempDir>,
    logs: Vec<PathBuf>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
    }
}

fn logs_containing(f: &Fleet, what: &str) -> usize {
    f.logs
        .iter()
        .filter(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .contains(what)
        })
        .count()
}

/// Wait until the broker's latest save kept `n` leases
/// (the keeper saves within a second of a change).
fn wait_kept(b: &Broker, n: usize) {
    let want = format!("leases={n}");
    let ok = wait_for(DEADLINE, || {
        b.log_text()
            .lines()
            .rev()
            .find(|l| l.contains("leases kept"))
            .is_some_and(|l| plain(l).contains(&want))
    });
    assert!(ok, "the broker did not keep {n} leases:\n{}", b.log_text());
}

#[test]
fn a_restarted_broker_renews_its_sidecars_leases_by_their_ids() {
    let _heavy = heavy();
    let n = sidecars();
    let StoreDir {
        tmp: _tmp,
        dir: store,
        key,
    } = StoreDir::new("unbaked-lease-keep-");
    let policy = host_policy(
        "app",
        "[[grant]]\nsecret = \"app/db\"\nkey = \"password\"\nfile = \"db/password\"\nttl = \"8s\"\n",
    );
    let mut b = Broker::builder()
        .policies(&[("app.toml", &policy)])
        .args([
            OsStr::new("--store"),
            OsStr::new("file"),
            OsStr::new("--store-dir"),
            store.as_os_str(),
            OsStr::new("--store-key-file"),
            key.as_os_str(),
        ])
        .start();
    b.put("app/db", "password", PW);

    let mut fleet = Fleet {
        children: vec![],
        dirs: vec![],
        logs: vec![],
    };
    for i in 0..n {
        let dir = shm_dir(&format!("lease-keep-{i}"));
        let log = b.dir.path().join(format!("sidecar-{i}.log"));
        let child = b
            .cmd()
            .args(["sidecar", "--workload", "app", "--dir"])
            .arg(dir.path())
            .env("UNBAKED_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        fleet.children.push(child);
        fleet.dirs.push(dir);
        fleet.logs.push(log);
    }
    let files: Vec<PathBuf> = fleet
        .dirs
        .iter()
        .map(|d| d.path().join("db/password"))
        .collect();
    let all_there = || {
        files
            .iter()
            .all(|f| std::fs::read(f).is_ok_and(|v| v == PW))
    };
    assert!(wait_for(DEADLINE, all_there), "{}", b.log_text());
    let grants: std::collections::BTreeSet<String> = records_after(&b, 0)
        .iter()
        .filter(|r| r["event"] == "grant" && r["workload"] == "app")
        .map(|r| r["lease"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(grants.len(), n);
    wait_kept(&b, n);

    // SIGKILL and start again: the kept table comes back.
    let mark = lines(&b);
    b.restart();
    let renewed = |b: &Broker| -> std::collections::BTreeSet<String> {
        records_after(b, mark)
            .iter()
            .filter(|r| r["event"] == "renew")
            .filter_map(|r| Some(r["lease"].as_str()?.to_string()))
            .collect()
    };
    let ok = wait_for(DEADLINE, || {
        grants.iter().all(|id| renewed(&b).contains(id))
    });
    assert!(
        ok,
        "not every lease was renewed after the restart ({} of {n}):\n{}",
        grants.iter().filter(|id| renewed(&b).contains(*id)).count(),
        b.log_text()
    );
    let after = records_after(&b, mark);
    let fresh = after
        .iter()
        .filter(|r| r["event"] == "grant" && r["workload"] == "app")
        .count();
    assert_eq!(fresh, 0, "sidecars fetched afresh after the restart");
    assert!(
        !after.iter().any(|r| r["event"] == "expire"),
        "a lease expired"
    );
    assert_eq!(logs_containing(&fleet, "does not know the lease"), 0);
    assert!(all_there(), "a sidecar lost its file");
    // Renewals carry on after the restart: each lease renewed twice more.
    let twice = wait_for(DEADLINE, || {
        let recs = records_after(&b, mark);
        grants.iter().all(|id| {
            recs.iter()
                .filter(|r| r["event"] == "renew" && r["lease"] == id.as_str())
                .count()
                >= 2
        })
    });
    assert!(twice, "{}", b.log_text());

    // Nothing of the value in clear in the store directory.
    assert!(files_containing(&store, PW).is_empty());

    // Control: the same restart without the kept leases makes every
    // sidecar fetch anew, which the checks above would have caught.
    wait_kept(&b, n);
    b.kill();
    std::fs::remove_dir_all(store.join("leases")).unwrap();
    let mark = lines(&b);
    b.restart();
    let refetched = wait_for(DEADLINE, || {
        records_after(&b, mark)
            .iter()
            .filter(|r| r["event"] == "grant" && r["workload"] == "app")
            .count()
            >= n
    });
    assert!(refetched, "{}", b.log_text());
    assert!(logs_containing(&fleet, "does not know the lease") >= n);
}
