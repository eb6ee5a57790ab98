//! `--store vault` against a real OpenBao dev server: KV reads through
//! `unbaked exec` and the sidecar, rotation, coalescing, AppRole login with
//! token renewal and re-login, PKI certificates revoked when the lease ends.
mod util;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;
use util::bao::*;
use util::*;

const PW: &[u8] = b"vault-pw-7a1c0ffee";
const ROTATED: &[u8] = b"vault-pw-r0t4ted99";

fn kv_put(dev: &Dev, path: &str, key: &str, value: &[u8]) {
    dev.server.kv_put(ROOT_TOKEN, path, key, value);
}

fn token_env(dev: &Dev) -> Vec<(&'static str, String)> {
    vec![
        ("VAULT_ADDR", dev.server.addr.clone()),
        ("VAULT_TOKEN", ROOT_TOKEN.to_string()),
    ]
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn grants(ttl: &str) -> String {
    format!(
        r#"
[[grant]]
secret = "app/db"
key = "password"
env = "DB_PASSWORD"
ttl = "{ttl}"

[[grant]]
secret = "app/db"
key = "password"
file = "db/password"
ttl = "{ttl}"
"#
    )
}

#[test]
fn kv_reads_reach_exec_and_the_sidecar_and_rotation_reaches_a_running_sidecar() {
    let dev = Dev::start();
    kv_put(&dev, "app/db", "password", PW);
    let env = token_env(&dev);
    let b = vault_broker(
        &[("app.toml", &host_policy("app", &grants("3s")))],
        "",
        &env_refs(&env),
    );

    let out = b.exec_printf("app", "DB_PASSWORD");
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, PW);

    let once = shm_dir("vault-once");
    let out = output(
        b.cmd()
            .args(["sidecar", "--workload", "app", "--once", "--dir"])
            .arg(once.path()),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(once.path().join("db/password")).unwrap(), PW);

    // Rotation in Vault reaches a running sidecar within one ttl (3 s):
    // the sidecar's record of the update against OpenBao's record of the
    // write, each by its own clock (renewal at most two thirds of the ttl
    // after, from a cache at most a third of it old), not how long the
    // test waited.
    let secrets = shm_dir("vault-rotate");
    let file = secrets.path().join("db/password");
    let mut sidecar = b.spawn_sidecar("app", secrets.path());
    let sidecar_log = b.sidecar_log("app");
    assert!(
        wait_for(Duration::from_secs(60), || std::fs::read(&file)
            .is_ok_and(|v| v == PW)),
        "no delivery:\n{}\n--- broker:\n{}",
        std::fs::read_to_string(&sidecar_log).unwrap_or_default(),
        b.log_text()
    );
    kv_put(&dev, "app/db", "password", ROTATED);
    assert!(
        wait_for(Duration::from_secs(60), || std::fs::read(&file)
            .is_ok_and(|v| v == ROTATED)),
        "rotation not seen:\n{}",
        b.log_text()
    );
    let written = *audited_times(&dev.audit, "update", "secret/data/app/db")
        .last()
        .expect("OpenBao audited the rotation");
    let log = std::fs::read_to_string(&sidecar_log).unwrap();
    let took = logged_after(&log, "secrets updated", written);
    assert!(
        took <= Duration::from_secs(3) + Duration::from_secs(1),
        "the rotation reached the sidecar {took:?} after the write (ttl 3s):\n{log}"
    );
    sigterm(&mut sidecar);

    // The admin API writes through to Vault's KV v2.
    let out = run_stdin(
        b.cmd().args(["secret", "put", "app/api", "token=-"]),
        b"api-token-5eaf00d",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        dev.must(&["kv", "get", "-field=token", "secret/app/api"]),
        "api-token-5eaf00d"
    );
    let out = output(b.cmd().args(["secret", "list", "app/"]));
    assert!(
        text(&out.stdout).contains("app/api"),
        "{}",
        text(&out.stdout)
    );

    for needle in [PW, ROTATED, b"api-token-5eaf00d".as_slice()] {
        assert!(
            files_containing(b.dir.path(), needle).is_empty(),
            "a value reached the broker's log or audit"
        );
    }
    assert!(b.audit_text().contains("\"event\":\"grant\""));
}

/// POST /v1/fetch over the socket; the status code.
fn start_fetch(socket: &Path) -> UnixStream {
    let body = r#"{"workload":"app","kinds":["env"]}"#;
    let mut s = UnixStream::connect(socket).unwrap();
    write!(
        s,
        "POST /v1/fetch HTTP/1.1\r\nHost: broker\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s
}

fn finish(mut s: UnixStream) -> String {
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.lines().next().unwrap_or_default().to_string()
}

#[test]
fn a_thousand_concurrent_fetches_make_one_vault_read() {
    let dev = Dev::start();
    kv_put(&dev, "app/db", "password", PW);
    let env = token_env(&dev);
    let b = vault_broker(
        &[("app.toml", &host_policy("app", &grants("10m")))],
        "",
        &env_refs(&env),
    );
    let before = dev.audited("read", "secret/data/app/db");
    // Every request is on the wire before the first answer is read. Past
    // the broker's connection limit some are answered 503 `overloaded`:
    // they come back after Retry-After, as the client does.
    let mut pending = 1000;
    let mut overloaded = 0;
    for round in 0..5 {
        let streams: Vec<UnixStream> = (0..pending).map(|_| start_fetch(&b.socket)).collect();
        let statuses: Vec<String> = streams.into_iter().map(finish).collect();
        let busy = statuses.iter().filter(|s| s.contains(" 503 ")).count();
        let ok = statuses.iter().filter(|s| s.contains(" 200 ")).count();
        assert_eq!(
            ok + busy,
            pending,
            "round {round}: {:?}",
            statuses
                .iter()
                .find(|s| !s.contains(" 200 ") && !s.contains(" 503 "))
        );
        pending = busy;
        overloaded += busy;
        if pending == 0 {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(pending, 0, "still overloaded after five rounds");
    eprintln!("1000 fetches, {overloaded} answered overloaded first");
    // The audit device of the real server saw one read of the path.
    assert_eq!(dev.audited("read", "secret/data/app/db") - before, 1);
}

#[test]
fn approle_login_from_files_renews_its_token_and_logs_in_again_when_revoked() {
    let dev = Dev::start();
    let files = tempfile::tempdir().unwrap();
    let (role_id, secret_id) = setup_approle(&dev.server, ROOT_TOKEN, "3s", files.path());
    kv_put(&dev, "app/db", "password", PW);
    let config = approle_config(std::slice::from_ref(&dev.server.addr), &role_id, &secret_id);
    // No token anywhere in the broker's environment.
    let b = vault_broker(
        &[("app.toml", &host_policy("app", &grants("3s")))],
        &config,
        &[],
    );
    let out = b.exec_printf("app", "DB_PASSWORD");
    assert_eq!(
        (out.code, out.stdout.as_slice()),
        (Some(0), PW),
        "{}",
        out.stderr
    );
    assert_eq!(dev.audited("update", "auth/approle/login"), 1);

    // A 3 s token lives on through renew-self at two thirds of its ttl.
    std::thread::sleep(Duration::from_secs(5));
    let renewals = dev.audited("update", "auth/token/renew-self");
    assert!(renewals >= 2, "{renewals} renewals:\n{}", b.log_text());
    kv_put(&dev, "app/db", "password", ROTATED);
    std::thread::sleep(Duration::from_millis(1100)); // past the cache age (ttl / 3)
    let out = b.exec_printf("app", "DB_PASSWORD");
    assert_eq!(
        (out.code, out.stdout.as_slice()),
        (Some(0), ROTATED),
        "{}",
        out.stderr
    );
    assert_eq!(
        dev.audited("update", "auth/approle/login"),
        1,
        "no login while renewals work"
    );

    // Revoke every token the approle issued: the broker logs in again.
    dev.must(&["token", "revoke", "-mode=path", "auth/approle/login"]);
    kv_put(&dev, "app/db", "password", PW);
    std::thread::sleep(Duration::from_millis(1100));
    let out = b.exec_printf("app", "DB_PASSWORD");
    assert_eq!(
        (out.code, out.stdout.as_slice()),
        (Some(0), PW),
        "{}\n{}",
        out.stderr,
        b.log_text()
    );
    assert!(dev.audited("update", "auth/approle/login") >= 2);

    let secret = std::fs::read(&secret_id).unwrap();
    assert!(
        files_containing(b.dir.path(), &secret).is_empty(),
        "the secret id reached a log"
    );
}

/// The one serial in `after` that is not in `before`.
fn new_serial(before: &[String], after: &[String]) -> String {
    let new: Vec<_> = after.iter().filter(|s| !before.contains(s)).collect();
    assert_eq!(new.len(), 1, "{new:?}");
    new[0].clone()
}

#[test]
fn pki_certificates_are_issued_per_lease_and_revoked_when_it_ends() {
    let dev = Dev::start();
    setup_pki(&dev.server, ROOT_TOKEN);
    let web = host_policy(
        "web",
        r#"
[[grant]]
pki = "pki/issue/web"
common_name = "web.internal"
alt_names = ["api.internal"]
ip_sans = ["127.0.0.1"]
file = "tls"
ttl = "5m"

[[grant]]
pki = "pki/issue/web"
common_name = "web.internal"
alt_names = ["api.internal"]
ip_sans = ["127.0.0.1"]
field = "private_key"
fd = "TLS_KEY_FILE"
ttl = "5m"
"#,
    );
    let batch = host_policy(
        "batch",
        r#"
[[grant]]
pki = "pki/issue/web"
common_name = "batch.internal"
field = "certificate"
file = "cert.pem"
ttl = "5s"
"#,
    );
    let token_file = dev.server.dir.join("broker-token");
    std::fs::write(&token_file, format!("{ROOT_TOKEN}\n")).unwrap();
    let config = format!(
        "[vault]\naddress = {:?}\n\n[vault.auth]\nmethod = \"token\"\ntoken_file = {:?}\n",
        dev.server.addr,
        token_file.display().to_string()
    );
    let b = vault_broker(&[("web.toml", &web), ("batch.toml", &batch)], &config, &[]);

    // A sidecar's lease: the certificate as a directory.
    let before = dev.serials();
    let secrets = shm_dir("vault-pki");
    let mut sidecar = b.spawn_sidecar("web", secrets.path());
    let cert = secrets.path().join("tls/cert.pem");
    assert!(wait_for(DEADLINE, || cert.exists()), "{}", b.log_text());
    let pem = std::fs::read_to_string(&cert).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    let key = std::fs::read_to_string(secrets.path().join("tls/key.pem")).unwrap();
    assert!(key.contains("PRIVATE KEY-----"));
    assert!(secrets.path().join("tls/ca.pem").exists());
    let serial = new_serial(&before, &dev.serials());
    let issued = dev.json(&["read", "-format=json", &format!("pki/cert/{serial}")]);
    assert_eq!(
        issued["data"]["certificate"].as_str().unwrap().trim(),
        pem.trim()
    );
    assert_eq!(dev.revocation_time(&serial), 0);

    // The sidecar exits: its lease is revoked, and with it the certificate.
    sigterm(&mut sidecar);
    assert!(
        wait_for(DEADLINE, || dev.revocation_time(&serial) > 0),
        "certificate {serial} not revoked:\n{}",
        b.log_text()
    );
    assert!(
        b.audit_text()
            .contains(&format!("certificate {}", serial.replace('-', ":")))
            || b.audit_text().contains(&serial)
    );

    // An fd grant of one field: its own lease, its own certificate.
    let before = dev.serials();
    let out = output(b.cmd().args([
        "exec",
        "--workload",
        "web",
        "--",
        "sh",
        "-c",
        "cat \"$TLS_KEY_FILE\"",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("PRIVATE KEY-----"));
    new_serial(&before, &dev.serials());

    // A lease nobody renews: the certificate is revoked at expiry.
    let before = dev.serials();
    let once = shm_dir("vault-pki-once");
    let out = output(
        b.cmd()
            .args(["sidecar", "--workload", "batch", "--once", "--dir"])
            .arg(once.path()),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let serial = new_serial(&before, &dev.serials());
    assert_eq!(dev.revocation_time(&serial), 0);
    assert!(
        wait_for(DEADLINE, || dev.revocation_time(&serial) > 0),
        "expired lease's certificate {serial} not revoked:\n{}",
        b.log_text()
    );
    assert!(
        files_containing(b.dir.path(), key.trim().lines().nth(1).unwrap().as_bytes()).is_empty()
    );
}

#[test]
fn a_vault_policy_without_dynamic_grants_refuses_them_on_the_memory_store() {
    // The memory store names what to do instead of failing obscurely.
    let policy = host_policy(
        "web",
        "[[grant]]\npki = \"pki/issue/web\"\ncommon_name = \"web.internal\"\nfile = \"tls\"\n",
    );
    let b = Broker::start(&[("web.toml", &policy)]);
    let dir = shm_dir("memory-pki");
    let out = output(
        b.cmd()
            .args(["sidecar", "--workload", "web", "--once", "--dir"])
            .arg(dir.path()),
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--store vault"),
        "{}",
        text(&out.stderr)
    );
}
