//! The Vault/OpenBao CLI's TLS and client conventions, against a real
//! OpenBao with a TLS listener (`bao server -dev -dev-tls`): the `cert`
//! auth method with a client certificate the test issues from the server's
//! own PKI mount (and a certificate of the same CA the role refuses), the
//! environment an env file shared with the `bao` CLI carries
//! (`VAULT_CAPATH`, `VAULT_CLIENT_CERT`/`KEY`, `VAULT_TLS_SERVER_NAME`,
//! `~/.vault-token`, `VAULT_SKIP_VERIFY` with its warning and metric), each
//! with a control that fails.
mod util;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use util::bao::{bao_bin, free_port, vault_broker, BROKER_POLICY, ROOT_TOKEN};
use util::*;

const VALUE: &[u8] = b"tls-vault-value-4c2e9b";

/// A dev server with a TLS listener; its CA, cert and key in `dir`.
struct TlsDev {
    addr: String,
    dir: tempfile::TempDir,
    child: Child,
}

impl TlsDev {
    fn start() -> TlsDev {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("bao.log");
        let child = Command::new(bao_bin())
            .args([
                "server",
                "-dev",
                "-dev-tls",
                &format!("-dev-tls-cert-dir={}", dir.path().display()),
                &format!("-dev-root-token-id={ROOT_TOKEN}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("start bao server -dev -dev-tls");
        let d = TlsDev {
            addr: format!("https://127.0.0.1:{port}"),
            dir,
            child,
        };
        let up = wait_for(Duration::from_secs(30), || {
            d.ca().is_file() && d.cli(&["status"], None).status.success()
        });
        assert!(
            up,
            "bao -dev-tls did not come up:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        d
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("vault-ca.pem")
    }

    fn cli(&self, args: &[&str], input: Option<&[u8]>) -> std::process::Output {
        let mut child = Command::new(bao_bin())
            .args(args)
            .env_clear()
            .env("BAO_ADDR", &self.addr)
            .env("BAO_CACERT", self.ca())
            .env("BAO_TOKEN", ROOT_TOKEN)
            .env("HOME", self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        if let Some(input) = input {
            stdin.write_all(input).unwrap();
        }
        drop(stdin);
        child.wait_with_output().unwrap()
    }

    fn must(&self, args: &[&str], input: Option<&[u8]>) -> String {
        let out = self.cli(args, input);
        assert!(out.status.success(), "bao {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    }

    /// A client certificate for `cn` from the server's PKI mount:
    /// (cert file, key file).
    fn issue(&self, cn: &str) -> (PathBuf, PathBuf) {
        let out = self.must(
            &[
                "write",
                "-format=json",
                "pki/issue/client",
                &format!("common_name={cn}"),
            ],
            None,
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        let cert = self.dir.path().join(format!("{cn}.crt"));
        let key = self.dir.path().join(format!("{cn}.key"));
        std::fs::write(&cert, v["data"]["certificate"].as_str().unwrap()).unwrap();
        std::fs::write(&key, v["data"]["private_key"].as_str().unwrap()).unwrap();
        (cert, key)
    }
}

impl Drop for TlsDev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn policy() -> String {
    host_policy(
        "app",
        "[[grant]]\nsecret = \"app/x\"\nkey = \"k\"\nenv = \"X\"\n",
    )
}

fn metrics(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The broker must serve the value; `what` says which setup.
fn serves(b: &Broker, what: &str) {
    let Ran {
        code,
        stdout,
        stderr,
    } = b.exec_printf("app", "X");
    assert_eq!(
        (code, stdout.as_slice()),
        (Some(0), VALUE),
        "{what}: {stderr}\nbroker log:\n{}",
        b.log_text()
    );
}

/// The broker must not serve it, and say why in its log.
fn refuses(b: &Broker, what: &str, log_says: &str) {
    let Ran {
        code,
        stdout,
        stderr,
    } = b.exec_printf("app", "X");
    assert_ne!(code, Some(0), "{what}: served anyway");
    assert!(!stdout.windows(VALUE.len()).any(|w| w == VALUE));
    let log = b.log_text();
    assert!(
        log.contains(log_says) || stderr.contains(log_says),
        "{what}: expected {log_says:?} in:\n{stderr}\n{log}"
    );
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn cert_auth_and_the_clis_tls_environment_against_openbao() {
    let dev = TlsDev::start();
    dev.must(&["secrets", "enable", "pki"], None);
    dev.must(&["secrets", "tune", "-max-lease-ttl=24h", "pki"], None);
    let ca = dev.must(
        &[
            "write",
            "-field=certificate",
            "pki/root/generate/internal",
            "common_name=unbaked test client CA",
            "ttl=24h",
        ],
        None,
    );
    let client_ca = dev.dir.path().join("client-ca.pem");
    std::fs::write(&client_ca, ca).unwrap();
    dev.must(
        &[
            "write",
            "pki/roles/client",
            "allow_any_name=true",
            "client_flag=true",
            "server_flag=false",
            "ttl=1h",
        ],
        None,
    );
    dev.must(&["auth", "enable", "cert"], None);
    dev.must(
        &["policy", "write", "broker", "-"],
        Some(BROKER_POLICY.as_bytes()),
    );
    dev.must(
        &[
            "write",
            "auth/cert/certs/broker",
            &format!("certificate=@{}", path(&client_ca)),
            "allowed_common_names=unbaked-broker",
            "token_policies=broker",
            "token_ttl=1h",
        ],
        None,
    );
    dev.must(&["kv", "put", "secret/app/x", "k=-"], Some(VALUE));
    let (cert, key) = dev.issue("unbaked-broker");
    let (intruder_cert, intruder_key) = dev.issue("intruder");
    let pol = policy();
    let policies = [("app.toml", pol.as_str())];

    // 1. [vault.auth] method = "cert", everything from the config file.
    let config = |cert: &Path, key: &Path| {
        format!(
            "[vault]\naddress = \"{}\"\nca_cert = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n\n[vault.auth]\nmethod = \"cert\"\nname = \"broker\"\n",
            dev.addr,
            path(&dev.ca()),
            path(cert),
            path(key)
        )
    };
    let b = vault_broker(&policies, &config(&cert, &key), &[]);
    serves(&b, "cert auth");
    assert!(
        b.log_text().contains("vault: logged in"),
        "{}",
        b.log_text()
    );
    drop(b);
    // Control: a certificate of the same CA that the role does not allow.
    let b = vault_broker(&policies, &config(&intruder_cert, &intruder_key), &[]);
    refuses(&b, "a refused certificate", "cert login");
    drop(b);

    // 2. The CLI's environment: CA directory, client certificate, server
    //    name, and the token from ~/.vault-token (no VAULT_TOKEN).
    let capath = dev.dir.path().join("cas");
    std::fs::create_dir(&capath).unwrap();
    std::fs::copy(dev.ca(), capath.join("bao.pem")).unwrap();
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join(".vault-token"), format!("{ROOT_TOKEN}\n")).unwrap();
    let env = |server_name: &str| {
        vec![
            ("VAULT_ADDR", dev.addr.clone()),
            ("VAULT_CAPATH", path(&capath)),
            ("VAULT_CLIENT_CERT", path(&cert)),
            ("VAULT_CLIENT_KEY", path(&key)),
            ("VAULT_TLS_SERVER_NAME", server_name.to_string()),
            ("HOME", path(home.path())),
        ]
    };
    let refs = |e: &[(&'static str, String)]| -> Vec<(&'static str, String)> { e.to_vec() };
    // The machine's host name is on the dev certificate (`bao server
    // -dev-tls` adds it); 127.0.0.1 is where it listens.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let good = refs(&env(host.trim()));
    let good: Vec<(&str, &str)> = good.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let b = vault_broker(&policies, "", &good);
    serves(
        &b,
        "VAULT_CAPATH, VAULT_CLIENT_CERT/KEY, VAULT_TLS_SERVER_NAME, ~/.vault-token",
    );
    drop(b);
    // Control: the certificate is checked for the server name given.
    let wrong = refs(&env("wrong.example"));
    let wrong: Vec<(&str, &str)> = wrong.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let b = vault_broker(&policies, "", &wrong);
    refuses(
        &b,
        "a server name the certificate does not carry",
        "wrong.example",
    );
    drop(b);

    // 3. VAULT_SKIP_VERIFY: accepted, loudly, and counted.
    let port = free_port();
    let admin = format!("admin_addr = \"127.0.0.1:{port}\"\n");
    let skip = [
        ("VAULT_ADDR", dev.addr.as_str()),
        ("VAULT_TOKEN", ROOT_TOKEN),
        ("VAULT_SKIP_VERIFY", "true"),
    ];
    let b = vault_broker(&policies, &admin, &skip);
    serves(&b, "VAULT_SKIP_VERIFY");
    assert!(
        b.log_text().contains("NOT checked"),
        "no warning:\n{}",
        b.log_text()
    );
    assert!(
        metrics(port).contains("unbaked_vault_tls_verify_disabled 1"),
        "{}",
        metrics(port)
    );
    drop(b);
    // Control: without it (and without the CA) the server is not trusted.
    let port = free_port();
    let admin = format!("admin_addr = \"127.0.0.1:{port}\"\n");
    let b = vault_broker(
        &policies,
        &admin,
        &[
            ("VAULT_ADDR", dev.addr.as_str()),
            ("VAULT_TOKEN", ROOT_TOKEN),
        ],
    );
    refuses(&b, "an untrusted server", "certificate");
    assert!(metrics(port).contains("unbaked_vault_tls_verify_disabled 0"));
    drop(b);

    // 4. Values the CLI would refuse are refused at start, by name.
    for (var, value, says) in [
        ("VAULT_SKIP_VERIFY", "maybe", "VAULT_SKIP_VERIFY"),
        ("VAULT_MAX_RETRIES", "two", "VAULT_MAX_RETRIES"),
        ("VAULT_CLIENT_TIMEOUT", "soon", "VAULT_CLIENT_TIMEOUT"),
        ("VAULT_CLIENT_CERT", "/nonexistent.crt", "VAULT_CLIENT_KEY"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = output(
            Command::new(BIN)
                .args(["broker", "--store", "vault", "--socket"])
                .arg(dir.path().join("s.sock"))
                .arg("--policies")
                .arg(dir.path())
                .env("VAULT_ADDR", &dev.addr)
                .env("VAULT_TOKEN", ROOT_TOKEN)
                .env(var, value),
        );
        assert_eq!(out.status.code(), Some(1), "{var}={value}");
        let err = text(&out.stderr);
        assert!(
            err.contains(says) && !err.contains(ROOT_TOKEN),
            "{var}: {err}"
        );
    }
}
