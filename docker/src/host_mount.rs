//! Mounting where the Docker Engine looks: the launches' tmpfs mounts are
//! made (and unmounted) in the host's mount namespace.
//!
//! The systemd unit's `ProtectSystem=`, `ProtectHome=` and `PrivateTmp=`
//! give the broker a mount namespace of its own, with slave propagation
//! from the host: a mount the broker makes there never reaches the host.
//! dockerd, in the host's namespace, would then bind-mount the empty
//! directory under a launch's tmpfs at the container's `/run/secrets`, and
//! the file grants written to the tmpfs would never arrive.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The host's mount namespace: init's.
const HOST_NS: &str = "/proc/1/ns/mnt";

/// Run `f` in the host's mount namespace and return what it returns.
///
/// Why a thread: `setns(CLONE_NEWNS)` changes the mount namespace of the
/// calling thread only, and is refused to a thread that shares its file
/// system attributes (root, cwd) with others, as every thread of the
/// broker does. So a dedicated short-lived thread first unshares those
/// (`CLONE_FS`), then enters the host's namespace, runs `f` and ends; the
/// broker's other threads never leave their namespace. A descriptor `f`
/// opens there works from any namespace, so the broker reads and writes
/// the tmpfs through it afterwards (`SecretsDir::adopt_fd`).
///
/// The host is init's namespace (`/proc/1/ns/mnt`); when that is closed to
/// the broker (a sandbox), the namespace of the process serving the
/// engine's socket, which is where bind sources are resolved. When the
/// broker already is there, or neither can be opened, `f` runs here, on the
/// calling thread, as it always did. Entering needs CAP_SYS_ADMIN and
/// CAP_SYS_CHROOT, and `RestrictNamespaces=` allowing `mnt`.
pub fn in_host<T, F>(engine_socket: &Path, f: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, String> + Send + 'static,
{
    let Some((ns, name)) = host_namespace(engine_socket) else {
        return f();
    };
    std::thread::Builder::new()
        .name("host-mount".into())
        .spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)
                .map_err(|e| format!("cannot unshare the file system attributes of a thread (unshare CLONE_FS): {e}"))?;
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNS).map_err(|e| {
                format!("cannot enter the host's mount namespace ({}): {e}: the broker needs CAP_SYS_ADMIN and CAP_SYS_CHROOT, and the unit's RestrictNamespaces= must allow mnt", name.display())
            })?;
            f()
        })
        .map_err(|e| format!("cannot start a thread to mount in the host's namespace: {e}"))?
        .join()
        .map_err(|_| "the thread mounting in the host's namespace panicked".to_string())?
}

/// The host's mount namespace, opened, when it is not the broker's own.
fn host_namespace(engine_socket: &Path) -> Option<(File, PathBuf)> {
    let own = std::fs::metadata("/proc/thread-self/ns/mnt").ok()?;
    let (ns, name) = open_ns(PathBuf::from(HOST_NS)).or_else(|| {
        let pid = engine_pid(engine_socket)?;
        open_ns(PathBuf::from(format!("/proc/{pid}/ns/mnt")))
    })?;
    let m = ns.metadata().ok()?;
    (m.dev() != own.dev() || m.ino() != own.ino()).then_some((ns, name))
}

fn open_ns(path: PathBuf) -> Option<(File, PathBuf)> {
    File::open(&path).ok().map(|f| (f, path))
}

/// The pid serving the engine's unix socket (`SO_PEERCRED`).
fn engine_pid(socket: &Path) -> Option<i32> {
    let stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    let cred =
        nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials).ok()?;
    (cred.pid() > 0).then_some(cred.pid())
}
