//! The integration harness: real `unbaked` processes, a real broker on a
//! unix socket in a temporary directory, real tmpfs mounts.
#![allow(dead_code)]

pub mod bao;
pub mod daemon;
pub mod docker;
pub mod k8s;
pub mod tools;

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
/// and log, all in one temporary directory.
pub struct Broker {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub policies: PathBuf,
    pub audit: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Broker {
    /// Start with these policy files (name, content).
    pub fn start(policies: &[(&str, &str)]) -> Broker {
        Self::start_inner(policies, None)
    }

    /// Start with the audit file at `audit` instead of inside the temp dir.
    pub fn start_with_audit(policies: &[(&str, &str)], audit: &Path) -> Broker {
        Self::start_inner(policies, Some(audit))
    }

    /// Start with extra arguments after the harness's own (flags win over
    /// a `--config` file among them).
    pub fn start_with_args(policies: &[(&str, &str)], args: &[&std::ffi::OsStr]) -> Broker {
        Self::start_full(policies, None, args)
    }

    /// Start the broker through a command prefix that ends by exec'ing its
    /// arguments (`unshare --mount -- ...`), so [`Self::pid`] is the
    /// broker's own once it runs.
    pub fn start_wrapped(prefix: &[&str], policies: &[(&str, &str)]) -> Broker {
        Self::start_prefixed(prefix, policies, None, &[])
    }

    fn start_inner(policies: &[(&str, &str)], audit_at: Option<&Path>) -> Broker {
        Self::start_full(policies, audit_at, &[])
    }

    fn start_full(
        policies: &[(&str, &str)],
        audit_at: Option<&Path>,
        args: &[&std::ffi::OsStr],
    ) -> Broker {
        Self::start_prefixed(&[], policies, audit_at, args)
    }

    fn start_prefixed(
        prefix: &[&str],
        policies: &[(&str, &str)],
        audit_at: Option<&Path>,
        args: &[&std::ffi::OsStr],
    ) -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("broker.sock");
        let pdir = dir.path().join("policies");
        std::fs::create_dir(&pdir).unwrap();
        for (name, text) in policies {
            std::fs::write(pdir.join(name), text).unwrap();
        }
        let audit = audit_at.map_or_else(|| dir.path().join("audit.log"), Path::to_path_buf);
        let log = dir.path().join("broker.log");
        let mut b = Broker {
            socket,
            policies: pdir,
            audit,
            log,
            dir,
            child: None,
        };
        let mut cmd = match prefix.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        cmd.arg("broker")
            .arg("--socket")
            .arg(&b.socket)
            .arg("--policies")
            .arg(&b.policies)
            .arg("--audit")
            .arg(&b.audit)
            .args(args)
            .env("UNBAKED_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&b.log).unwrap());
        b.child = Some(cmd.spawn().expect("start the broker"));
        b.wait_ready();
        b
    }

    fn wait_ready(&mut self) {
        let socket = self.socket.clone();
        let child = self.child.as_mut().unwrap();
        let ok = wait_for(Duration::from_secs(15), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "broker exited early ({status}):\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
        assert!(ok, "broker did not listen:\n{}", self.log_text());
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
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

    /// Write `value` at PATH KEY through the CLI, the value on stdin.
    pub fn put(&self, path: &str, key: &str, value: &[u8]) {
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

    /// Stop with SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
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

/// Every file under `dir` (recursively) whose bytes contain `needle`.
/// Files on disk under `dir` (memory file systems, such as a running
/// container's tmpfs volume of another test, skipped) holding `needle`.
pub fn disk_files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files_containing(dir, needle)
        .into_iter()
        .filter(|p| {
            nix::sys::statfs::statfs(p.as_path())
                .map(|s| s.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC)
                .unwrap_or(true)
        })
        .collect()
}

pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                if let Ok(bytes) = std::fs::read(&p) {
                    if bytes.windows(needle.len()).any(|w| w == needle) {
                        hits.push(p);
                    }
                }
            }
        }
    }
    hits
}

/// A policy for a host process of the current uid.
pub fn host_policy(workload: &str, grants: &str) -> String {
    format!(
        "workload = \"{workload}\"\n\n[match]\nuids = [{}]\n\n{grants}",
        uid()
    )
}
