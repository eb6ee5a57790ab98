//! Operations: the admin listener (health, readiness, metrics) and
//! Kubernetes service-account tokens, case by case.
mod util;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use util::k8s::{Issuer, ISS};
use util::*;

const VALUE: &[u8] = b"ops-value-77d1e0";

/// A plain HTTP/1.0 GET: (status, body).
fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn the_admin_listener_serves_health_readiness_and_metrics() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let policy = host_policy(
        "a",
        "[[grant]]\nsecret = \"app/x\"\nkey = \"k\"\nenv = \"X\"\n",
    );
    let other = "workload = \"b\"\n[match]\nuids = [4242]\n";
    let b = Broker::start_with_args(
        &[("a.toml", &policy), ("b.toml", other)],
        &[OsStr::new("--admin-addr"), OsStr::new(&addr)],
    );
    b.put("app/x", "k", VALUE);
    assert_eq!(get(port, "/healthz"), (200, "ok\n".into()));
    assert_eq!(get(port, "/readyz"), (200, "ready\n".into()));
    assert!(
        output(b.cmd().args(["exec", "--workload", "a", "--", "true"]))
            .status
            .success()
    );
    assert!(
        !output(b.cmd().args(["exec", "--workload", "b", "--", "true"]))
            .status
            .success()
    );
    let (status, metrics) = get(port, "/metrics");
    assert_eq!(status, 200);
    for line in [
        "unbaked_grants_total{workload=\"a\"} 1",
        "unbaked_denials_total{workload=\"b\",rule=\"match.uids\"} 1",
        "unbaked_requests_total{endpoint=\"fetch\",status=\"200\"} 1",
        "unbaked_requests_total{endpoint=\"fetch\",status=\"403\"} 1",
        "unbaked_requests_total{endpoint=\"admin\",status=\"200\"} 1",
        "unbaked_active_leases 1",
        "unbaked_store_read_seconds_count{store=\"memory\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    assert!(!metrics.contains(std::str::from_utf8(VALUE).unwrap()));
    assert!(
        !metrics.contains("app/x"),
        "secret paths stay out of metric labels"
    );
    assert_eq!(get(port, "/nope").0, 404);
}

const POD_POLICY: &str = r#"workload = "billing"
[match]
k8s_service_accounts = ["payments/billing"]
[[grant]]
secret = "app/x"
key = "k"
env = "X"
"#;

fn k8s_broker(issuer: &Issuer, jwks_line: &str) -> (Broker, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, &issuer.jwks).unwrap();
    let config = dir.path().join("broker.toml");
    let jwks_line = jwks_line.replace("{jwks}", &jwks.display().to_string());
    std::fs::write(
        &config,
        format!("[kubernetes]\nissuer = \"{ISS}\"\naudience = \"unbaked\"\n{jwks_line}\n"),
    )
    .unwrap();
    let b = Broker::start_with_args(
        &[("billing.toml", POD_POLICY)],
        &[OsStr::new("--config"), config.as_os_str()],
    );
    b.put("app/x", "k", VALUE);
    (b, dir)
}

/// `unbaked exec` with this token: (exit code, stdout, stderr).
fn exec_with(b: &Broker, token: Option<&str>) -> (Option<i32>, String, String) {
    let shm = shm_dir("token");
    let mut cmd = b.cmd();
    cmd.args(["exec", "--workload", "billing"]);
    if let Some(t) = token {
        let f = shm.path().join("token");
        std::fs::write(&f, t).unwrap();
        cmd.arg("--token-file").arg(f);
    }
    cmd.args(["--", "sh", "-c", "printf %s \"$X\""]);
    let out = output(&mut cmd);
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn service_account_tokens_are_verified_case_by_case() {
    let issuer = Issuer::new("k1");
    let (b, _config) = k8s_broker(&issuer, "jwks_file = \"{jwks}\"");
    let good = ("payments", "billing");

    let (code, out, err) = exec_with(&b, Some(&issuer.token("k1", ISS, "unbaked", 600, good)));
    assert_eq!((code, out.as_bytes()), (Some(0), VALUE), "{err}");

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            issuer.token("k1", ISS, "unbaked", -60, good),
            "expired",
        ),
        (
            "wrong audience",
            issuer.token("k1", ISS, "vault", 600, good),
            "audience",
        ),
        (
            "wrong issuer",
            issuer.token("k1", "https://other.example", "unbaked", 600, good),
            "issuer",
        ),
        (
            "wrong key",
            Issuer::new("k1").token("k1", ISS, "unbaked", 600, good),
            "signature",
        ),
        (
            "unknown key id",
            issuer.token("k9", ISS, "unbaked", 600, good),
            "k9",
        ),
        (
            "unknown service account",
            issuer.token("k1", ISS, "unbaked", 600, ("payments", "other")),
            "payments/other is not in [match] k8s_service_accounts",
        ),
        ("not a jwt", "garbage".to_string(), "not a well-formed JWT"),
    ];
    for (name, token, reason) in &cases {
        let (code, out, err) = exec_with(&b, Some(token));
        assert_eq!(code, Some(3), "{name}: {err}");
        assert!(out.is_empty(), "{name}");
        assert!(err.contains(reason), "{name}: {err}");
        assert!(
            !err.contains(token.as_str()),
            "{name}: the token must not be echoed"
        );
    }
    let (code, _, err) = exec_with(&b, None);
    assert_eq!(code, Some(3));
    assert!(err.contains("no verified service-account token"), "{err}");

    // Every refusal is audited, and no token reaches the log or the audit.
    let audit = b.audit_text();
    assert!(
        audit.matches("\"event\":\"deny\"").count() > cases.len(),
        "{audit}"
    );
    for (_, token, _) in &cases {
        if token.len() > 40 {
            assert!(!audit.contains(&token[token.len() - 40..]));
            assert!(!b.log_text().contains(&token[token.len() - 40..]));
        }
    }
}

#[test]
fn the_jwks_can_come_from_a_url() {
    let issuer = Issuer::new("k1");
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let jwks = issuer.jwks.clone();
    std::thread::spawn(move || {
        for conn in server.incoming().flatten().take(4) {
            let mut conn = conn;
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let _ = write!(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{jwks}", jwks.len());
        }
    });
    let (b, _config) = k8s_broker(
        &issuer,
        &format!("jwks_url = \"http://127.0.0.1:{port}/openid/v1/jwks\""),
    );
    let (code, out, err) = exec_with(
        &b,
        Some(&issuer.token("k1", ISS, "unbaked", 600, ("payments", "billing"))),
    );
    assert_eq!((code, out.as_bytes()), (Some(0), VALUE), "{err}");
}

#[test]
fn a_token_sent_to_a_broker_without_kubernetes_config_is_refused() {
    let b = Broker::start(&[("billing.toml", POD_POLICY)]);
    b.put("app/x", "k", VALUE);
    let issuer = Issuer::new("k1");
    let (code, _, err) = exec_with(
        &b,
        Some(&issuer.token("k1", ISS, "unbaked", 600, ("payments", "billing"))),
    );
    assert_eq!(code, Some(3));
    assert!(err.contains("no [kubernetes] section"), "{err}");
}
