//! A fake broker on a unix socket in a temp dir, answering from a closure.
#![allow(dead_code)] // each test binary uses its own part

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UnixListener;
use unbaked_api::wire::{to_json_zeroizing, ApiError, Delivery, ErrorCode, Item, Lease};
use unbaked_api::Secret;

/// One request as the fake broker saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub host: String,
    pub content_type: String,
    pub body: Vec<u8>,
}

pub type Answer = (u16, Vec<u8>);
type Handler = dyn Fn(&Seen) -> Answer + Send + Sync;

pub struct FakeBroker {
    pub socket: PathBuf,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    _dir: tempfile::TempDir,
}

impl FakeBroker {
    /// Start serving on the current tokio runtime.
    pub fn start(handler: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> FakeBroker {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("broker.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (handler, log) = (handler.clone(), log.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (handler, log) = (handler.clone(), log.clone());
                        async move {
                            let header = |n: &str| {
                                req.headers()
                                    .get(n)
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("")
                                    .to_owned()
                            };
                            let mut s = Seen {
                                method: req.method().to_string(),
                                uri: req.uri().to_string(),
                                host: header("host"),
                                content_type: header("content-type"),
                                body: Vec::new(),
                            };
                            s.body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes().to_vec())
                                .unwrap_or_default();
                            let (status, body) = handler(&s);
                            log.lock().unwrap().push(s);
                            let resp = Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body)))
                                .unwrap();
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakeBroker {
            socket,
            seen,
            _dir: dir,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self, uri: &str) -> usize {
        self.seen().iter().filter(|s| s.uri == uri).count()
    }
}

pub fn file_item(id: &str, path: &str, version: u64, ttl_secs: u64, value: &[u8]) -> Item {
    Item {
        id: id.into(),
        secret: "app/db".into(),
        key: "password".into(),
        delivery: Delivery::File {
            path: path.into(),
            mode: 0o440,
            uid: None,
            gid: None,
        },
        version,
        ttl_secs,
        value: Secret::from_slice(value),
    }
}

pub fn item(id: &str, delivery: Delivery, value: &[u8]) -> Item {
    Item {
        id: id.into(),
        secret: "app/api".into(),
        key: "token".into(),
        delivery,
        version: 1,
        ttl_secs: 60,
        value: Secret::from_slice(value),
    }
}

pub fn lease(id: &str, ttl_secs: u64, items: Vec<Item>) -> Answer {
    let l = Lease {
        lease_id: id.into(),
        workload: "billing".into(),
        ttl_secs,
        items,
        actions: Default::default(),
    };
    (200, to_json_zeroizing(&l).to_vec())
}

pub fn api_error(code: ErrorCode, message: &str) -> Answer {
    let e = ApiError {
        code,
        message: message.into(),
    };
    (code.http_status(), serde_json::to_vec(&e).unwrap())
}

/// Poll `cond` every 20 ms until it holds or `secs` pass.
pub async fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn read(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

/// The sidecar of these tests: workload `billing` on `socket`, into `dir`.
pub fn config(socket: &Path, dir: &Path, once: bool) -> unbaked_sidecar::sidecar::SidecarConfig {
    unbaked_sidecar::sidecar::SidecarConfig {
        token_file: None,
        socket: socket.into(),
        workload: "billing".into(),
        dir: dir.into(),
        once,
        tmpfs_size: 1 << 20,
    }
}

/// The part of test `name` that runs as `uid`. In the test as run (root):
/// a directory `uid` owns is made, `prepare` may add to it, the test runs
/// again alone as `uid` ([`rerun_as`]) and must pass, `after` checks the
/// directory from outside; `None`. In that re-run: checks it is really
/// unprivileged and returns the directory.
pub fn as_uid(
    uid: u32,
    name: &str,
    prepare: impl FnOnce(&Path),
    after: impl FnOnce(&Path),
) -> Option<PathBuf> {
    let Some(base) = child_dir() else {
        let base = shm_dir_for(uid);
        prepare(base.path());
        rerun_as(uid, name, base.path(), 60);
        after(base.path());
        return None;
    };
    assert_unprivileged(uid);
    Some(base)
}

/// `base/secrets`, mode 0700, made by the (unprivileged) sidecar's uid.
pub fn private_dir(base: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = base.join("secrets");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// The env variable a test re-run by [`rerun_as`] finds its directory in.
pub const CHILD_DIR: &str = "UNBAKED_TEST_CHILD_DIR";

/// In the re-run child of [`rerun_as`]: the directory the parent handed over.
pub fn child_dir() -> Option<PathBuf> {
    std::env::var_os(CHILD_DIR).map(PathBuf::from)
}

/// A temp dir on tmpfs, mode 0700, owned by `uid`: a place where the
/// process [`rerun_as`] starts may create things.
pub fn shm_dir_for(uid: u32) -> tempfile::TempDir {
    let t = tempfile::tempdir_in("/dev/shm").expect("temp dir on /dev/shm");
    let id = Some(nix::unistd::Uid::from_raw(uid));
    nix::unistd::chown(t.path(), id, Some(nix::unistd::Gid::from_raw(uid))).expect("chown");
    t
}

/// Run the test `name` of this test binary again, alone, as uid and gid
/// `uid` with no supplementary groups and no capabilities (util-linux
/// `setpriv`; needs root), with `dir` in [`CHILD_DIR`]. Panics with the
/// child's output unless it passed within `secs`.
pub fn rerun_as(uid: u32, name: &str, dir: &Path, secs: u64) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs part of itself as uid {uid}: run the suite as root"
    );
    let out = tempfile::NamedTempFile::new().expect("temp file");
    let log = out.reopen().expect("reopen");
    let id = uid.to_string();
    let mut child = std::process::Command::new("setpriv")
        .args(["--reuid", &id, "--regid", &id, "--clear-groups"])
        .args(["--inh-caps=-all", "--bounding-set=-all", "--"])
        .arg(std::env::current_exe().expect("the test binary"))
        .args(["--exact", name, "--test-threads=1", "--nocapture"])
        .env(CHILD_DIR, dir)
        .env("TMPDIR", "/tmp")
        .stdin(std::process::Stdio::null())
        // One open file for both, so neither overwrites the other.
        .stdout(log.try_clone().expect("dup"))
        .stderr(log)
        .spawn()
        .expect("setpriv (util-linux) runs the unprivileged half of this test");
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break Some(status);
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(out.path()).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()) && text.contains("1 passed"),
        "the part run as uid {uid} ({}):\n{text}",
        status.map_or_else(|| format!("killed after {secs} s"), |s| s.to_string())
    );
}

/// In the child: really unprivileged (root's CAP_DAC_OVERRIDE would hide
/// what the test is about).
pub fn assert_unprivileged(uid: u32) {
    assert_eq!(nix::unistd::geteuid().as_raw(), uid);
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    assert_eq!(u64::from_str_radix(eff, 16).unwrap(), 0, "CapEff {eff}");
}

/// Whether something is mounted at `path` (as /proc/self/mountinfo says).
/// `path` is compared as given, not resolved.
pub fn mounted_at(path: &Path) -> bool {
    unbaked_secretsdir::sys::mounts()
        .expect("/proc/self/mountinfo")
        .iter()
        .any(|m| Path::new(&m.mount_point) == path)
}

/// The sorted names in `dir`.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Unmounts whatever is still mounted at its path when dropped, so a test
/// that fails half-way leaves no tmpfs behind.
pub struct UnmountOnDrop(pub PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        while mounted_at(&self.0) && unbaked_secretsdir::sys::unmount(&self.0).is_ok() {}
    }
}
