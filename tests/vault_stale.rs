//! `[vault] max_stale` against a real OpenBao (single-node raft, stopped
//! and started on its data): KV copies kept sealed in the store directory
//! are served while OpenBao is away, across a broker restart, audited as
//! stale on a short lease; past max_stale and for PKI nothing is served;
//! when OpenBao is back a rotation reaches a running sidecar within one
//! ttl (judged from the two audit logs).
mod util;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};
use util::bao::*;
use util::*;

const PW: &[u8] = b"stale-pw-5e1f0ddba11";
const ROTATED: &[u8] = b"stale-pw-r0t4t3d-77";

/// The kv grant's ttl: longer than the stale lease cap (30 s), so a capped
/// lease shows in when the sidecar renews.
const TTL: &str = "60s";

fn app_policy() -> String {
    host_policy(
        "app",
        &format!(
            r#"
[[grant]]
secret = "app/db"
key = "password"
env = "DB_PASSWORD"
ttl = "{TTL}"

[[grant]]
secret = "app/db"
key = "password"
file = "db/password"
ttl = "{TTL}"
"#
        ),
    )
}

fn web_policy() -> String {
    host_policy(
        "web",
        r#"
[[grant]]
pki = "pki/issue/web"
common_name = "web.internal"
field = "certificate"
env = "TLS_CERT"
ttl = "5m"
"#,
    )
}

fn vault_config(addr: &str, max_stale: &str) -> String {
    format!("[vault]\naddress = {addr:?}\nmax_stale = {max_stale:?}\n")
}

/// The latest audit record of `event` for `workload`.
fn last(b: &Broker, event: &str, workload: &str) -> serde_json::Value {
    b.audit_text()
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|r| r["event"] == event && r["workload"] == workload)
        .unwrap_or_else(|| panic!("no {event} record for {workload}:\n{}", b.audit_text()))
}

fn readyz(b: &Broker) -> (u16, String) {
    let port = b.admin_port.unwrap();
    http(&format!("127.0.0.1:{port}"), "GET", "/readyz", None).expect("readyz answers")
}

fn set_max_stale(b: &Broker, from: &str, to: &str) {
    let file = b.dir.path().join("broker.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let from = format!("max_stale = {from:?}");
    assert!(text.contains(&from), "{text}");
    std::fs::write(&file, text.replace(&from, &format!("max_stale = {to:?}"))).unwrap();
}

fn ts(r: &serde_json::Value) -> SystemTime {
    parse_rfc3339(r["ts"].as_str().unwrap()).unwrap()
}

#[test]
fn an_openbao_outage_is_served_from_sealed_copies_within_max_stale() {
    register_secret(PW);
    register_secret(ROTATED);
    let mut bao = Persistent::start_audited();
    let bao_audit = bao.audit_log();
    setup_pki(&bao.server, &bao.root_token);
    bao.server.kv_put(&bao.root_token, "app/db", "password", PW);
    let StoreDir {
        tmp: _tmp,
        dir: store_dir,
        key,
    } = StoreDir::new("unbaked-vault-stale-");
    let mut b = Broker::builder()
        .policies(&[("app.toml", &app_policy()), ("web.toml", &web_policy())])
        .vault(&vault_config(&bao.server.addr, "1h"))
        .env("VAULT_TOKEN", &bao.root_token)
        .args([
            OsStr::new("--store-dir"),
            store_dir.as_os_str(),
            OsStr::new("--store-key-file"),
            key.as_os_str(),
        ])
        .admin()
        .start();

    // OpenBao up: a fresh answer, not stale; the copy is kept.
    let out = b.exec_printf("app", "DB_PASSWORD");
    assert_eq!((out.code, &out.stdout[..]), (Some(0), PW), "{}", out.stderr);
    let grant = last(&b, "grant", "app");
    assert!(grant["secrets"][0].get("stale").is_none(), "{grant}");
    assert_eq!(readyz(&b).0, 200);
    let pki = b.exec_printf("web", "TLS_CERT");
    assert_eq!(pki.code, Some(0), "{}", pki.stderr);

    // OpenBao stopped: the kept copy, audited stale with its age (once the
    // in-memory cache's copy, fresh for 5 s at most, is past use).
    let fresh_at = Instant::now();
    bao.server.stop();
    std::thread::sleep(Duration::from_millis(5200).saturating_sub(fresh_at.elapsed()));
    let started = Instant::now();
    let out = b.exec_printf("app", "DB_PASSWORD");
    let took = started.elapsed();
    assert_eq!(
        (out.code, &out.stdout[..]),
        (Some(0), PW),
        "{}\n{}",
        out.stderr,
        b.log_text()
    );
    let grant = last(&b, "grant", "app");
    assert_eq!(grant["secrets"][0]["stale"], true, "{grant}");
    assert!(grant["secrets"][0]["age_secs"].is_u64(), "{grant}");
    eprintln!("stale exec with OpenBao stopped took {took:?} (test clock, information only)");
    let (status, body) = readyz(&b);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("degraded: ") && body.contains("unavailable"),
        "{body}"
    );
    assert!(
        counter(
            &b.metrics(),
            "unbaked_stale_served_total",
            &["workload=\"app\""]
        ) >= 1
    );

    // A certificate is never served stale, nor reused for a new lease.
    let pki = b.exec_printf("web", "TLS_CERT");
    assert_eq!(pki.code, Some(4), "{}", pki.stderr);
    assert!(pki.stderr.contains("unavailable"), "{}", pki.stderr);

    // A broker restarted during the outage starts without OpenBao and
    // serves the copy it kept on disk.
    b.restart();
    let out = b.exec_printf("app", "DB_PASSWORD");
    assert_eq!(
        (out.code, &out.stdout[..]),
        (Some(0), PW),
        "{}\n{}",
        out.stderr,
        b.log_text()
    );
    let grant = last(&b, "grant", "app");
    assert_eq!(grant["secrets"][0]["stale"], true, "{grant}");

    // Past max_stale: a clear error, exit code 4, nothing served.
    set_max_stale(&b, "1h", "1s");
    std::thread::sleep(Duration::from_millis(1100));
    b.restart();
    let out = b.exec_printf("app", "DB_PASSWORD");
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert!(out.stdout.is_empty());
    assert!(out.stderr.contains("past max_stale 1s"), "{}", out.stderr);
    set_max_stale(&b, "1s", "1h");
    b.restart();

    // A sidecar started during the outage: a stale lease, capped at 30 s
    // (the grant says 60 s), so it renews within 30 s of its grant.
    let secrets = shm_dir("vault-stale");
    let mut sidecar = b
        .cmd()
        .args(["sidecar", "--workload", "app", "--dir"])
        .arg(secrets.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(b.dir.path().join("sidecar.log")).unwrap())
        .spawn()
        .unwrap();
    let file = secrets.path().join("db/password");
    assert!(
        wait_for(DEADLINE, || std::fs::read(&file).is_ok_and(|v| v == PW)),
        "{}",
        b.log_text()
    );
    let stale_grant = last(&b, "grant", "app");
    assert_eq!(stale_grant["secrets"][0]["stale"], true, "{stale_grant}");
    let lease = stale_grant["lease"].as_str().unwrap().to_string();

    // OpenBao back; a rotation reaches the sidecar within one (capped) ttl.
    bao.restart();
    bao.server
        .kv_put(&bao.root_token, "app/db", "password", ROTATED);
    let rotated_at = *audited_times(&bao_audit, "create", "secret/data/app/db")
        .iter()
        .chain(audited_times(&bao_audit, "update", "secret/data/app/db").iter())
        .max()
        .expect("OpenBao audited the rotation");
    assert!(
        wait_for(DEADLINE, || std::fs::read(&file)
            .is_ok_and(|v| v == ROTATED)),
        "{}",
        b.log_text()
    );
    let renewals: Vec<serde_json::Value> = b
        .audit_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["event"] == "renew" && r["lease"] == lease.as_str())
        .collect();
    let first = renewals.first().expect("the sidecar renewed");
    let gap = ts(first).duration_since(ts(&stale_grant)).unwrap();
    assert!(
        gap <= Duration::from_secs(30),
        "a stale lease is capped at 30 s, renewed after {gap:?}"
    );
    let fresh = renewals
        .iter()
        .find(|r| r["secrets"][0]["version"] == 2)
        .expect("a renewal delivered version 2");
    assert!(fresh["secrets"][0].get("stale").is_none(), "{fresh}");
    let reached = ts(fresh).duration_since(rotated_at).unwrap_or_default();
    eprintln!("stale lease renewed {gap:?} after its grant; rotation reached the sidecar {reached:?} after OpenBao took it (audit clocks)");
    assert!(
        reached <= Duration::from_secs(30),
        "the rotation reached the workload {reached:?} after OpenBao took it"
    );
    assert_eq!(readyz(&b).0, 200);
    assert_eq!(readyz(&b).1, "ready\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sidecar.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    sidecar.wait().unwrap();

    // Nothing in clear in the store directory (values, and the new one).
    for value in [PW, ROTATED] {
        let found = files_containing(&store_dir, value);
        assert!(found.is_empty(), "a value in clear in {found:?}");
    }
    assert!(store_dir.join("vault-copies/store.log").exists());
}

/// Start a broker that must refuse; its stderr.
fn refused(config: &Path, socket: &Path, policies: &Path) -> String {
    let out = Command::new(BIN)
        .arg("broker")
        .arg("--config")
        .arg(config)
        .arg("--socket")
        .arg(socket)
        .arg("--policies")
        .arg(policies)
        .env("VAULT_TOKEN", "unused")
        .env_remove("UNBAKED_STORE_KEY_FILE")
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(!socket.exists(), "a refused broker does not listen");
    text(&out.stderr)
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out: Vec<_> = walk(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_default();
            (p, bytes)
        })
        .collect();
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
    }
    out
}

#[test]
fn a_wrong_or_missing_key_is_refused_and_nothing_changes() {
    register_secret(PW);
    let bao = Dev::start();
    bao.server.kv_put(ROOT_TOKEN, "app/db", "password", PW);
    let StoreDir {
        tmp,
        dir: store_dir,
        key,
    } = StoreDir::new("unbaked-vault-stale-");
    // A broker keeps a copy under the right key.
    {
        let b = Broker::builder()
            .policies(&[("app.toml", &app_policy())])
            .vault(&vault_config(&bao.server.addr, "1h"))
            .env("VAULT_TOKEN", ROOT_TOKEN)
            .args([
                OsStr::new("--store-dir"),
                store_dir.as_os_str(),
                OsStr::new("--store-key-file"),
                key.as_os_str(),
            ])
            .start();
        let out = b.exec_printf("app", "DB_PASSWORD");
        assert_eq!(out.code, Some(0), "{}", out.stderr);
    }
    let before = snapshot(&store_dir);
    assert!(!before.is_empty());

    let policies = tmp.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    let socket = tmp.path().join("refused.sock");
    let other = tmp.path().join("other.key");
    let out = output(Command::new(BIN).args([
        OsStr::new("store"),
        "init-key".as_ref(),
        other.as_os_str(),
    ]));
    assert!(out.status.success());
    let config = tmp.path().join("broker.toml");
    let write = |key: &Path| {
        std::fs::write(
            &config,
            format!(
                "[broker]\nstore = \"vault\"\nstore_dir = {:?}\nstore_key_file = {:?}\n\n{}",
                store_dir.display().to_string(),
                key.display().to_string(),
                vault_config(&bao.server.addr, "1h")
            ),
        )
        .unwrap();
    };
    write(&other);
    let e = refused(&config, &socket, &policies);
    assert!(
        e.contains("does not open") && e.contains("max_stale"),
        "{e}"
    );
    write(&tmp.path().join("absent.key"));
    let e = refused(&config, &socket, &policies);
    assert!(e.contains("absent.key") && e.contains("init-key"), "{e}");
    assert_eq!(before, snapshot(&store_dir), "a refusal changed the store");

    // Control: the right key starts.
    write(&key);
    let mut child = Command::new(BIN)
        .arg("broker")
        .arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(&socket)
        .arg("--policies")
        .arg(&policies)
        .env("VAULT_TOKEN", ROOT_TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up = wait_for(DEADLINE, || socket.exists());
    let _ = child.kill();
    let _ = child.wait();
    assert!(up, "the right key did not start the broker");
}

/// A certificate held by a sidecar's lease across a broker SIGKILL: the
/// restarted broker renews the lease by its id with the same certificate
/// (none issued anew: issued for 40 s, it outlives the first renewal's
/// next period) and still revokes it when the sidecar stops.
#[test]
fn a_leases_certificate_is_kept_across_a_restart_and_revoked_at_its_end() {
    let dev = Dev::start();
    setup_pki(&dev.server, ROOT_TOKEN);
    let web = host_policy(
        "web",
        r#"
[[grant]]
pki = "pki/issue/web"
common_name = "web.internal"
file = "tls"
ttl = "20s"
"#,
    );
    let StoreDir {
        tmp: _tmp,
        dir: store_dir,
        key,
    } = StoreDir::new("unbaked-vault-stale-");
    let mut b = Broker::builder()
        .policies(&[("web.toml", &web)])
        .vault(&vault_config(&dev.server.addr, "1h"))
        .env("VAULT_TOKEN", ROOT_TOKEN)
        .args([
            OsStr::new("--store-dir"),
            store_dir.as_os_str(),
            OsStr::new("--store-key-file"),
            key.as_os_str(),
        ])
        .start();
    let before = dev.serials();
    let secrets = shm_dir("vault-stale-pki");
    let log = b.dir.path().join("sidecar-web.log");
    let mut sidecar = b
        .cmd()
        .args(["sidecar", "--workload", "web", "--dir"])
        .arg(secrets.path())
        .env("UNBAKED_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let cert = secrets.path().join("tls/cert.pem");
    assert!(wait_for(DEADLINE, || cert.exists()), "{}", b.log_text());
    let pem = std::fs::read(&cert).unwrap();
    let issued = dev.serials();
    let new: Vec<&String> = issued.iter().filter(|s| !before.contains(s)).collect();
    assert_eq!(new.len(), 1, "{issued:?}");
    let serial = new[0].clone();
    let lease = last(&b, "grant", "web")["lease"]
        .as_str()
        .unwrap()
        .to_string();
    // The keeper saves within a second of a change.
    let kept = wait_for(DEADLINE, || {
        b.log_text()
            .lines()
            .any(|l| l.contains("leases kept") && plain(l).contains("credentials=1"))
    });
    assert!(kept, "{}", b.log_text());

    let mark = b.audit_text().lines().count();
    b.restart();
    let renewed = wait_for(DEADLINE, || {
        b.audit_text()
            .lines()
            .skip(mark)
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|r| r["event"] == "renew" && r["lease"] == lease.as_str())
    });
    assert!(renewed, "{}", b.log_text());
    assert_eq!(dev.serials(), issued, "a certificate was issued anew");
    assert_eq!(std::fs::read(&cert).unwrap(), pem, "the file was rewritten");
    assert!(!text(&std::fs::read(&log).unwrap()).contains("does not know the lease"));
    assert_eq!(dev.revocation_time(&serial), 0);

    let key_pem = std::fs::read_to_string(secrets.path().join("tls/key.pem")).unwrap();
    let key_line = key_pem.lines().nth(1).unwrap().to_string();

    // The sidecar stops: the restarted broker revokes the kept certificate.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sidecar.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    sidecar.wait().unwrap();
    assert!(
        wait_for(DEADLINE, || dev.revocation_time(&serial) > 0),
        "certificate {serial} not revoked:\n{}",
        b.log_text()
    );
    // The private key was kept sealed.
    assert!(files_containing(&store_dir, key_line.as_bytes()).is_empty());
}
