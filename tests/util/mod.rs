//! The integration harness: real `unbaked` processes, a real broker on a
//! unix socket in a temporary directory, real tmpfs mounts.
#![allow(dead_code)]

pub mod bao;
pub mod daemon;
pub mod docker;
pub mod engine2;
pub mod etcd;
pub mod k8s;
pub mod tools;

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_unbaked");

/// A `Command` for the binary, pointed at `socket`.
pub fn unbaked(socket: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env("UNBAKED_SOCKET", socket).env_remove("UNBAKED_LOG");
    c
}

pub fn uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// The deadline of a wait for something that will happen: only a hung
/// broker or client misses it (a wait never bounds how fast it happens).
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Poll `f` until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    f()
}

/// A running broker with its own socket, policies directory, audit file
/// and log, all in one temporary directory. The one way the tests start a
/// broker: [`Broker::builder`] for anything beyond a memory store with
/// policies (the Vault store, extra flags or environment, an admin
/// listener, a wrapping command such as `unshare`).
pub struct Broker {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub policies: PathBuf,
    pub audit: PathBuf,
    pub log: PathBuf,
    /// The admin listener's port (`BrokerBuilder::admin`).
    pub admin_port: Option<u16>,
    command: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    child: Option<Child>,
}

/// What a [`Broker`] starts with; [`BrokerBuilder::start`] starts it.
#[derive(Default)]
pub struct BrokerBuilder {
    policies: Vec<(String, String)>,
    audit: Option<PathBuf>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    prefix: Vec<OsString>,
    config: Vec<String>,
    files: Vec<(String, Vec<u8>)>,
    admin: bool,
}

impl BrokerBuilder {
    /// A policy file (name, content) in the broker's policies directory.
    pub fn policy(mut self, name: &str, text: &str) -> Self {
        self.policies.push((name.into(), text.into()));
        self
    }

    pub fn policies(mut self, policies: &[(&str, &str)]) -> Self {
        for (name, text) in policies {
            self = self.policy(name, text);
        }
        self
    }

    /// The audit file at `path` instead of inside the temp dir.
    pub fn audit_at(mut self, path: &Path) -> Self {
        self.audit = Some(path.to_path_buf());
        self
    }

    /// Arguments after the harness's own (flags win over `--config`).
    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Environment for the broker (after the harness's `UNBAKED_LOG=debug`,
    /// so `UNBAKED_LOG` here wins). Vault's and OpenBao's variables are
    /// always cleared first: a broker sees only what its test hands it.
    pub fn env(mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((name.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    pub fn envs<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        for (k, v) in vars {
            self = self.env(k, v);
        }
        self
    }

    /// Start the broker through a command prefix that ends by exec'ing its
    /// arguments (`unshare --mount -- ...`), so [`Broker::pid`] is the
    /// broker's own once it runs.
    pub fn wrapped(mut self, prefix: &[&str]) -> Self {
        self.prefix = prefix.iter().map(OsString::from).collect();
        self
    }

    /// Text for the config file (`--config`); each call adds a part.
    /// `{dir}` in it names the broker's temp dir (see [`Self::file`]).
    pub fn config(mut self, text: &str) -> Self {
        self.config.push(text.to_string());
        self
    }

    /// A file in the broker's temp dir before it starts (a JWKS, a token).
    pub fn file(mut self, name: &str, content: &[u8]) -> Self {
        self.files.push((name.to_string(), content.to_vec()));
        self
    }

    /// The Vault store: `vault` is the `[vault]` part of the config file.
    pub fn vault(self, vault: &str) -> Self {
        self.config(&format!("[broker]\nstore = \"vault\"\n\n{vault}"))
    }

    /// `[kubernetes]` with the tests' issuer (`k8s::ISS`), audience
    /// `unbaked` and this JWKS as `jwks.json` in the broker's temp dir.
    pub fn kubernetes(self, jwks: &str) -> Self {
        self.file("jwks.json", jwks.as_bytes()).config(&format!(
            "[kubernetes]\nissuer = \"{}\"\naudience = \"unbaked\"\njwks_file = \"{{dir}}/jwks.json\"\n",
            k8s::ISS
        ))
    }

    /// The admin listener (`/metrics`, `/healthz`) on a free loopback port.
    pub fn admin(mut self) -> Self {
        self.admin = true;
        self
    }

    pub fn start(self) -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("broker.sock");
        let pdir = dir.path().join("policies");
        std::fs::create_dir(&pdir).unwrap();
        for (name, text) in &self.policies {
            std::fs::write(pdir.join(name), text).unwrap();
        }
        let audit = self.audit.unwrap_or_else(|| dir.path().join("audit.log"));
        let log = dir.path().join("broker.log");
        for (name, content) in &self.files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let mut command = self.prefix;
        command.push(BIN.into());
        command.push("broker".into());
        if !self.config.is_empty() {
            let file = dir.path().join("broker.toml");
            let text = self
                .config
                .join("\n")
                .replace("{dir}", &dir.path().display().to_string());
            std::fs::write(&file, text).unwrap();
            command.extend(["--config".into(), file.into_os_string()]);
        }
        command.extend([
            "--socket".into(),
            socket.clone().into_os_string(),
            "--policies".into(),
            pdir.clone().into_os_string(),
            "--audit".into(),
            audit.clone().into_os_string(),
        ]);
        let admin_port = self.admin.then(free_port);
        if let Some(port) = admin_port {
            command.extend(["--admin-addr".into(), format!("127.0.0.1:{port}").into()]);
        }
        command.extend(self.args);
        let mut b = Broker {
            socket,
            policies: pdir,
            audit,
            log,
            dir,
            admin_port,
            command,
            env: self.env,
            child: None,
        };
        b.spawn();
        b
    }
}

/// Variables a broker never inherits from the test's environment (with
/// their `BAO_` twins): a test names all the Vault environment it sees.
const STORE_ENV: [&str; 11] = [
    "VAULT_ADDR",
    "VAULT_TOKEN",
    "VAULT_CACERT",
    "VAULT_NAMESPACE",
    "VAULT_CAPATH",
    "VAULT_CLIENT_CERT",
    "VAULT_CLIENT_KEY",
    "VAULT_TLS_SERVER_NAME",
    "VAULT_SKIP_VERIFY",
    "VAULT_MAX_RETRIES",
    "VAULT_CLIENT_TIMEOUT",
];

impl Broker {
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder::default()
    }

    /// Start with these policy files (name, content).
    pub fn start(policies: &[(&str, &str)]) -> Broker {
        Self::builder().policies(policies).start()
    }

    /// Start with the audit file at `audit` instead of inside the temp dir.
    pub fn start_with_audit(policies: &[(&str, &str)], audit: &Path) -> Broker {
        Self::builder().policies(policies).audit_at(audit).start()
    }

    /// Start with extra arguments after the harness's own (flags win over
    /// a `--config` file among them).
    pub fn start_with_args(policies: &[(&str, &str)], args: &[&OsStr]) -> Broker {
        Self::builder().policies(policies).args(args).start()
    }

    /// [`BrokerBuilder::wrapped`].
    pub fn start_wrapped(prefix: &[&str], policies: &[(&str, &str)]) -> Broker {
        Self::builder().wrapped(prefix).policies(policies).start()
    }

    /// Start the process (again, after [`Self::kill`]: same socket,
    /// policies and audit file; the log appended to) and wait until it is
    /// fully started: it answers `/v1/health` on its socket.
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(&self.command[0]);
        cmd.args(&self.command[1..]).env("UNBAKED_LOG", "debug");
        for name in STORE_ENV {
            cmd.env_remove(name);
            cmd.env_remove(name.replacen("VAULT_", "BAO_", 1));
        }
        // No ~/.vault-token of the machine's.
        cmd.env("HOME", self.dir.path());
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("start the broker"));
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let socket = self.socket.clone();
        let log = self.log.clone();
        let child = self.child.as_mut().unwrap();
        let ok = wait_for(READY, || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "broker exited early ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            daemon::http(&socket, "GET /v1/health HTTP/1.1", b"").is_ok_and(|a| a.status == 200)
        });
        assert!(
            ok,
            "the broker did not answer /v1/health within {READY:?}:\n{}",
            self.log_text()
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the broker is running").id()
    }

    pub fn cmd(&self) -> Command {
        unbaked(&self.socket)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn audit_text(&self) -> String {
        std::fs::read_to_string(&self.audit).unwrap_or_default()
    }

    /// The audit file's records, parsed (a torn last line left out).
    pub fn audit_records(&self) -> Vec<AuditLine> {
        audit_records(&self.audit_text())
    }

    /// When the broker wrote its latest `event` record (its own clock),
    /// waiting for one to appear (a reload is asynchronous).
    pub fn audited_at(&self, event: &str) -> std::time::SystemTime {
        let mut at = None;
        let found = wait_for(Duration::from_secs(60), || {
            at = self
                .audit_records()
                .iter()
                .filter(|r| r.event == event)
                .map(|r| r.ts)
                .max();
            at.is_some()
        });
        assert!(
            found,
            "no {event} record in the audit:\n{}",
            self.audit_text()
        );
        at.unwrap()
    }

    /// The admin listener's `/metrics` text ([`BrokerBuilder::admin`]).
    pub fn metrics(&self) -> String {
        let port = self
            .admin_port
            .expect("start the broker with Broker::builder().admin()");
        metrics(port)
    }

    /// Write `value` at PATH KEY through the CLI, the value on stdin.
    pub fn put(&self, path: &str, key: &str, value: &[u8]) {
        register_secret(value);
        let out = run_stdin(
            self.cmd()
                .args(["secret", "put", path, &format!("{key}=-")]),
            value,
        );
        assert!(
            out.status.success(),
            "secret put failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Write a version with several keys, each value from a file on tmpfs.
    pub fn put_many(&self, path: &str, pairs: &[(&str, &[u8])]) {
        let dir = shm_dir("values");
        let mut cmd = self.cmd();
        cmd.args(["secret", "put", path]);
        for (key, value) in pairs {
            register_secret(value);
            let f = dir.path().join(key);
            std::fs::write(&f, value).unwrap();
            cmd.arg(format!("{key}=@{}", f.display()));
        }
        let out = output(&mut cmd);
        assert!(
            out.status.success(),
            "secret put failed: {}",
            text(&out.stderr)
        );
    }

    pub fn write_policy(&self, name: &str, text: &str) {
        // Write then rename, as an editor or a deploy would.
        let tmp = self.dir.path().join(format!(".{name}.new"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.policies.join(name)).unwrap();
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig).unwrap();
    }

    /// SIGKILL: no stop record, no cleanup, the socket file left behind.
    pub fn kill(&mut self) {
        end(&mut self.child, nix::sys::signal::Signal::SIGKILL);
    }

    /// Start again on the same socket, policies and audit file.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The broker's resident memory, KiB.
    pub fn rss_kib(&self) -> u64 {
        daemon::rss_kib(self.pid())
    }

    /// Stop with SIGTERM and wait.
    pub fn stop(&mut self) {
        end(&mut self.child, nix::sys::signal::Signal::SIGTERM);
    }

    /// `unbaked exec --workload W -- sh -c 'printf %s "$VAR"'`: what the
    /// command saw in `VAR`.
    pub fn exec_printf(&self, workload: &str, var: &str) -> Ran {
        let out = output(self.cmd().args([
            "exec",
            "--workload",
            workload,
            "--",
            "sh",
            "-c",
            &format!("printf %s \"${var}\""),
        ]));
        Ran {
            code: out.status.code(),
            stdout: out.stdout,
            stderr: text(&out.stderr),
        }
    }

    /// `unbaked sidecar --workload W --dir DIR`, logging to
    /// [`Broker::sidecar_log`]`(W)`.
    pub fn spawn_sidecar(&self, workload: &str, dir: &Path) -> Child {
        self.cmd()
            .args(["sidecar", "--workload", workload, "--dir"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.sidecar_log(workload)).unwrap())
            .spawn()
            .unwrap()
    }

    /// Where [`Broker::spawn_sidecar`] logs.
    pub fn sidecar_log(&self, workload: &str) -> PathBuf {
        self.dir.path().join(format!("sidecar-{workload}.log"))
    }
}

/// A store directory (for the broker to create) and a key made by
/// `unbaked store init-key`, in a directory on disk (not tmpfs: what
/// reaches the disk is the point).
pub struct StoreDir {
    pub tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub key: PathBuf,
}

impl StoreDir {
    pub fn new(prefix: &str) -> StoreDir {
        let tmp = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let key = tmp.path().join("store.key");
        let out = output(Command::new(BIN).args([
            OsStr::new("store"),
            "init-key".as_ref(),
            key.as_os_str(),
        ]));
        assert!(out.status.success(), "init-key: {}", text(&out.stderr));
        StoreDir {
            dir: tmp.path().join("store"),
            key,
            tmp,
        }
    }

    /// `--store file --store-dir DIR --store-key-file KEY`.
    pub fn args(&self) -> Vec<&OsStr> {
        vec![
            OsStr::new("--store"),
            OsStr::new("file"),
            OsStr::new("--store-dir"),
            self.dir.as_os_str(),
            OsStr::new("--store-key-file"),
            self.key.as_os_str(),
        ]
    }
}

/// A finished command: exit code, stdout, stderr as text.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// SIGTERM a child and reap it.
pub fn sigterm(child: &mut Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    child.wait().unwrap();
}

/// A log line without its colours.
pub fn plain(line: &str) -> String {
    let mut out = String::new();
    let mut esc = false;
    for c in line.chars() {
        match (esc, c) {
            (false, '\x1b') => esc = true,
            (true, 'm') => esc = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Send `sig` to the child, if any, and reap it.
pub fn end(child: &mut Option<Child>, sig: nix::sys::signal::Signal) {
    if let Some(mut c) = child.take() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
        let _ = c.wait();
    }
}

/// How long a broker may take to answer its first request.
const READY: Duration = Duration::from_secs(60);

/// A free TCP port on loopback (the OS's pick; closed again at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET /metrics from an admin listener on `port`, within a deadline.
pub fn metrics(port: u16) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// A counter's value in a metrics text: the sum of the lines of `name`
/// whose labels include every one of `labels` (`key="value"`).
pub fn counter(metrics: &str, name: &str, labels: &[&str]) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// One audit record: the chain fields the tests read, and the rest.
#[derive(Debug, Clone)]
pub struct AuditLine {
    pub seq: u64,
    /// When the broker wrote it (its own clock).
    pub ts: std::time::SystemTime,
    pub event: String,
    pub json: serde_json::Value,
}

impl AuditLine {
    pub fn lease(&self) -> Option<&str> {
        self.json["lease"].as_str()
    }
}

pub fn audit_records(text: &str) -> Vec<AuditLine> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|json| {
            Some(AuditLine {
                seq: json["seq"].as_u64()?,
                ts: parse_rfc3339(json["ts"].as_str()?)?,
                event: json["event"].as_str()?.to_string(),
                json,
            })
        })
        .collect()
}

/// `2026-11-30T06:11:28.123456Z` (the audit's and the log's UTC stamps).
pub fn parse_rfc3339(s: &str) -> Option<std::time::SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let nanos: u32 = format!("{frac:0<9}").get(..9)?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()?;
    Some(std::time::UNIX_EPOCH + Duration::new(secs, nanos))
}

/// The time stamp that starts a line of the binary's text log.
pub fn log_time(line: &str) -> Option<std::time::SystemTime> {
    // Colours, if any, wrap the stamp in escape sequences.
    let first = line.split_whitespace().next()?;
    let mut parts = first.split('\x1b');
    let mut plain = parts.next().unwrap_or_default().to_string();
    for part in parts {
        plain.push_str(part.split_once('m').map_or("", |(_, rest)| rest));
    }
    parse_rfc3339(plain.trim_start_matches(|c: char| !c.is_ascii_digit()))
}

/// How long after `since` the first line of `log` holding `what` stamped
/// at or after `since` was written (the product's own clock); panics with
/// the log when there is none.
pub fn logged_after(log: &str, what: &str, since: std::time::SystemTime) -> Duration {
    log.lines()
        .filter(|l| l.contains(what))
        .filter_map(log_time)
        .find(|t| *t >= since)
        .and_then(|t| t.duration_since(since).ok())
        .unwrap_or_else(|| panic!("no {what:?} logged after {since:?}:\n{log}"))
}

/// The file `scripts/test` names in `UNBAKED_TEST_SECRETS`: every secret
/// value the suite hands a broker or a store, hex-encoded (so the list
/// itself never holds the bytes), one a line, for `scripts/hygiene` to
/// search for after the run.
pub const SECRETS_LIST_ENV: &str = "UNBAKED_TEST_SECRETS";

/// Add `value` to the suite's list of secrets ([`SECRETS_LIST_ENV`]); a
/// no-op when the suite runs without the list (`cargo test` by hand).
pub fn register_secret(value: &[u8]) {
    let Some(list) = std::env::var_os(SECRETS_LIST_ENV) else {
        return;
    };
    // grep matches line by line: each line of a value is searched for.
    let mut text = String::new();
    for part in value.split(|b| *b == b'\n').filter(|p| p.len() >= 8) {
        for b in part {
            text.push_str(&format!("{b:02x}"));
        }
        text.push('\n');
    }
    // One write per value, O_APPEND: lines from parallel tests never mix.
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&list)
        .unwrap_or_else(|e| panic!("{SECRETS_LIST_ENV}={}: {e}", list.to_string_lossy()));
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("{SECRETS_LIST_ENV}={}: {e}", list.to_string_lossy()));
}

/// The heavy tests (crash, load, restart, floods: each keeps both cores
/// busy or measures backoff and expiry) run one at a time, across test
/// binaries and concurrent `cargo test` runs on the machine: an exclusive
/// `flock` on one file, held until the guard drops.
pub fn heavy() -> HeavyGuard {
    let path = std::env::temp_dir().join("unbaked-heavy-tests.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("flock {}: {e}", path.display()));
    HeavyGuard { _lock: lock }
}

/// Holds the heavy-test lock ([`heavy`]).
pub struct HeavyGuard {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

pub fn run_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn unbaked");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

pub fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run unbaked")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A fresh directory on tmpfs (/dev/shm), removed on drop.
pub fn shm_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("unbaked-test-{tag}-"))
        .tempdir_in("/dev/shm")
        .expect("a directory under /dev/shm")
}

/// The one file scanner: which regular files under a root hold a needle.
/// Strict: a root that cannot be read, or an entry that cannot be read for
/// any reason but having gone meanwhile (another test's temp file), fails
/// the test, since a search that cannot look would pass without looking.
pub struct Scan<'a> {
    needle: &'a [u8],
    since: Option<std::time::SystemTime>,
    skip: Vec<PathBuf>,
    one_file_system: bool,
    disk_only: bool,
    skip_checkouts: bool,
}

/// Start a [`Scan`] for `needle`.
pub fn scan(needle: &[u8]) -> Scan<'_> {
    assert!(!needle.is_empty(), "a scan for nothing finds everything");
    Scan {
        needle,
        since: None,
        skip: vec![],
        one_file_system: false,
        disk_only: false,
        skip_checkouts: false,
    }
}

impl Scan<'_> {
    /// Only files modified at or after `t`.
    pub fn since(mut self, t: std::time::SystemTime) -> Self {
        self.since = Some(t);
        self
    }

    /// Leave out these directories (and what is under them).
    pub fn skip(mut self, dirs: &[PathBuf]) -> Self {
        self.skip.extend_from_slice(dirs);
        self
    }

    /// Stay on the root's file system (a tmpfs mounted below is where a
    /// secret belongs).
    pub fn one_file_system(mut self) -> Self {
        self.one_file_system = true;
        self
    }

    /// Files on disk only: memory file systems (a running container's
    /// tmpfs volume of another test) left out.
    pub fn disk_only(mut self) -> Self {
        self.disk_only = true;
        self
    }

    /// Leave out cargo build output and checkouts of this repository:
    /// they hold the test sources and binaries, so the literals.
    pub fn skip_checkouts(mut self) -> Self {
        self.skip_checkouts = true;
        self
    }

    /// The files under `root` holding the needle.
    pub fn under(&self, root: &Path) -> Vec<PathBuf> {
        use std::io::ErrorKind::NotFound;
        use std::os::unix::fs::MetadataExt;
        let dev = std::fs::metadata(root)
            .map(|m| m.dev())
            .unwrap_or_else(|e| panic!("cannot search {}: {e}", root.display()));
        // Gone meanwhile is no finding; any other error fails the search.
        fn ok<T>(r: std::io::Result<T>, p: &Path) -> Option<T> {
            match r {
                Ok(v) => Some(v),
                Err(e) if e.kind() == NotFound => None,
                Err(e) => panic!("cannot search {}: {e}", p.display()),
            }
        }
        let mut hits = vec![];
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            if self.skip.iter().any(|s| d.starts_with(s)) {
                continue;
            }
            if self.one_file_system && std::fs::symlink_metadata(&d).is_ok_and(|m| m.dev() != dev) {
                continue;
            }
            if self.skip_checkouts
                && (d.join("CACHEDIR.TAG").exists() || d.join("tests/hygiene.rs").exists())
            {
                continue;
            }
            let Some(entries) = ok(std::fs::read_dir(&d), &d) else {
                continue;
            };
            for e in entries {
                let Some(e) = ok(e, &d) else { continue };
                let p = e.path();
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_dir() {
                    stack.push(p);
                    continue;
                }
                if !ft.is_file() {
                    continue;
                }
                if let Some(since) = self.since {
                    match ok(e.metadata().and_then(|m| m.modified()), &p) {
                        Some(t) if t >= since => {}
                        _ => continue,
                    }
                }
                let Some(bytes) = ok(std::fs::read(&p), &p) else {
                    continue;
                };
                if !bytes.windows(self.needle.len()).any(|w| w == self.needle) {
                    continue;
                }
                if self.disk_only
                    && nix::sys::statfs::statfs(p.as_path())
                        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
                {
                    continue;
                }
                hits.push(p);
            }
        }
        hits
    }
}

/// Every file under `dir` whose bytes contain `needle` ([`Scan`]).
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    scan(needle).under(dir)
}

/// Files on disk under `dir` holding `needle` ([`Scan::disk_only`]).
pub fn disk_files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    scan(needle).disk_only().under(dir)
}

/// A small tmpfs (an audit sink that fills up), unmounted on drop.
pub struct TinyFs(tempfile::TempDir);

impl TinyFs {
    /// A tmpfs of `size` (mount's `size=`: `64k`); the tests run as root.
    pub fn mount(size: &str) -> TinyFs {
        let fs = TinyFs(tempfile::tempdir().unwrap());
        nix::mount::mount(
            Some("tmpfs"),
            fs.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size}").as_str()),
        )
        .expect("mount a small tmpfs (the tests run as root)");
        fs
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// `program` run as `uid` (and gid `uid`) with no supplementary groups,
/// through util-linux `setpriv`: a client as a user would run it.
pub fn as_user(uid: u32, program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg(program);
    c
}

/// The binary as `uid` ([`as_user`]), pointed at `socket`.
pub fn unbaked_as(uid: u32, socket: &Path) -> Command {
    let mut c = as_user(uid, BIN);
    c.env("UNBAKED_SOCKET", socket).env_remove("UNBAKED_LOG");
    c
}

/// A policy for a host process of the current uid.
pub fn host_policy(workload: &str, grants: &str) -> String {
    format!(
        "workload = \"{workload}\"\n\n[match]\nuids = [{}]\n\n{grants}",
        uid()
    )
}
