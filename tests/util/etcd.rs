//! A real etcd (Debian's `etcd-server`) on free loopback ports with a
//! throwaway data directory, and GnuPG (`gnupg`) with a throwaway home, for
//! the crypt store's tests. Values are written the way Crypt writes them,
//! `base64(OpenPGP-encrypt(gzip(value)))`, by `gzip | gpg --encrypt | base64`
//! (never by unbaked's own code) and put with `etcdctl`. A missing `etcd`,
//! `etcdctl` or `gpg` fails the test (run scripts/install-tools).

use super::{free_port, register_secret, wait_for, DEADLINE};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

fn tool(name: &str) -> &str {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{name}` is not installed: run scripts/install-tools (Debian's etcd-server, etcd-client, gnupg)"
    );
    name
}

/// Run `cmd` with `input` on stdin; its output.
pub fn piped(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// One etcd member.
pub struct Etcd {
    pub url: String,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Etcd {
    /// Start etcd; `v2`: also serve the v2 keys API (`--enable-v2`).
    pub fn start(v2: bool) -> Etcd {
        let bin = tool("etcd");
        tool("etcdctl");
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = dir.path().join("etcd.log");
        let mut cmd = Command::new(bin);
        cmd.args([
            "--name",
            "t",
            "--data-dir",
            &dir.path().join("data").display().to_string(),
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
            "--initial-cluster",
            &format!("t={peer_url}"),
        ]);
        if v2 {
            cmd.arg("--enable-v2");
        }
        let child = cmd
            .env_remove("ETCDCTL_API")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start etcd");
        let e = Etcd {
            url,
            dir,
            log,
            child: Some(child),
        };
        let ok = wait_for(DEADLINE, || {
            super::bao::http(&e.url, "GET", "/health", None)
                .is_some_and(|(s, b)| s == 200 && b.contains("true"))
        });
        assert!(ok, "etcd did not become healthy:\n{}", e.log_text());
        e
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `etcdctl put KEY` (v3), the value on stdin; the key's new revision.
    pub fn put_v3(&self, key: &str, value: &[u8]) -> u64 {
        let out = piped(
            Command::new("etcdctl").env("ETCDCTL_API", "3").args([
                "--endpoints",
                &self.url,
                "put",
                key,
            ]),
            value,
        );
        assert!(
            out.status.success(),
            "etcdctl put: {}",
            super::text(&out.stderr)
        );
        self.revision_v3(key)
    }

    /// The key's mod_revision (v3).
    pub fn revision_v3(&self, key: &str) -> u64 {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.url, "get", key, "-w", "json"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["kvs"][0]["mod_revision"]
            .as_u64()
            .expect("the key exists")
    }

    /// `ETCDCTL_API=2 etcdctl set KEY` (the v2 keys API), the value on stdin.
    pub fn set_v2(&self, key: &str, value: &[u8]) {
        let out = piped(
            Command::new("etcdctl").env("ETCDCTL_API", "2").args([
                "--endpoints",
                &self.url,
                "set",
                key,
            ]),
            value,
        );
        assert!(
            out.status.success(),
            "etcdctl set (v2): {}",
            super::text(&out.stderr)
        );
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        super::end(&mut self.child, nix::sys::signal::Signal::SIGKILL);
    }
}

/// A GnuPG home with generated keys (no passphrase), each by e-mail.
pub struct Gpg {
    pub home: tempfile::TempDir,
}

impl Gpg {
    pub fn new() -> Gpg {
        tool("gpg");
        tool("gzip");
        tool("base64");
        let home = tempfile::tempdir().unwrap();
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        Gpg { home }
    }

    fn gpg(&self) -> Command {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", self.home.path())
            .args(["--batch", "--quiet", "--no-tty"]);
        c
    }

    /// An RSA key with an RSA encryption subkey, as Crypt's Go OpenPGP
    /// reads them.
    pub fn generate(&self, email: &str) {
        let params = format!(
            "%no-protection\nKey-Type: RSA\nKey-Length: 2048\nSubkey-Type: RSA\nSubkey-Length: 2048\nName-Real: crypt test\nName-Email: {email}\nExpire-Date: 0\n%commit\n"
        );
        let out = piped(self.gpg().args(["--gen-key"]), params.as_bytes());
        assert!(
            out.status.success(),
            "gpg --gen-key: {}",
            super::text(&out.stderr)
        );
    }

    /// An Ed25519 key with a Curve25519 (ECDH) encryption subkey, what
    /// current GnuPG makes by default.
    pub fn generate_curve25519(&self, email: &str) {
        let params = format!(
            "%no-protection\nKey-Type: EDDSA\nKey-Curve: ed25519\nSubkey-Type: ECDH\nSubkey-Curve: cv25519\nName-Real: crypt test\nName-Email: {email}\nExpire-Date: 0\n%commit\n"
        );
        let out = piped(self.gpg().args(["--gen-key"]), params.as_bytes());
        assert!(
            out.status.success(),
            "gpg --gen-key: {}",
            super::text(&out.stderr)
        );
    }

    /// `gpg --export-secret-keys --armor EMAIL` into `path`, mode 0400.
    pub fn export_secret(&self, email: &str, path: &Path) {
        let out = self
            .gpg()
            .args(["--armor", "--export-secret-keys", email])
            .output()
            .unwrap();
        assert!(
            out.status.success() && !out.stdout.is_empty(),
            "gpg --export-secret-keys: {}",
            super::text(&out.stderr)
        );
        std::fs::write(path, &out.stdout).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o400)).unwrap();
    }

    /// Crypt's encoding of `value` for `email`: `gzip | gpg --encrypt |
    /// base64`, the value on stdin; `wrap`: base64(1)'s 76-column lines
    /// (Crypt itself writes one line).
    pub fn crypt_encode(&self, email: &str, value: &[u8], wrap: bool) -> Vec<u8> {
        self.encode(email, value, wrap, "gzip -c |")
    }

    /// Like [`Self::crypt_encode`] without the gzip layer (not Crypt's format).
    pub fn encode_without_gzip(&self, email: &str, value: &[u8]) -> Vec<u8> {
        self.encode(email, value, false, "")
    }

    fn encode(&self, email: &str, value: &[u8], wrap: bool, gzip: &str) -> Vec<u8> {
        register_secret(value);
        let script = format!(
            "set -o pipefail; {gzip} gpg --batch --quiet --no-tty --trust-model always --encrypt --recipient '{email}' | base64 {}",
            if wrap { "" } else { "-w0" }
        );
        let out = piped(
            Command::new("bash")
                .args(["-c", &script])
                .env("GNUPGHOME", self.home.path()),
            value,
        );
        assert!(
            out.status.success(),
            "gzip | gpg | base64: {}",
            super::text(&out.stderr)
        );
        out.stdout
    }
}

impl Default for Gpg {
    fn default() -> Self {
        Self::new()
    }
}
