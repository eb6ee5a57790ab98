//! One `unbaked run` launch's tmpfs: mounted in the host's mount namespace
//! (where the engine bind-mounts it from, [`crate::host_mount`]), written
//! through the descriptor opened there, zeroed, unmounted and removed when
//! its container is gone. A restarted broker reopens the one it mounted
//! ([`reopen_secrets_dir`]) only if the kernel says it is that very tmpfs.

use crate::launch_keep::TmpfsId;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use unbaked_secretsdir::{sys, SecretsDir};

/// Size of a container's secrets tmpfs.
const TMPFS_BYTES: u64 = 1 << 20;

/// Overwrite every regular file under `dir` (to `depth` levels: a PKI
/// grant is a directory) with zeros, in place: the bytes a container may
/// still map go, not only the names. Links are never followed.
pub(crate) fn zero_tree(dir: &Path, depth: u8) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() && depth > 0 {
            zero_tree(&e.path(), depth - 1);
        } else if t.is_file() {
            let opened = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
                .open(e.path());
            if let (Ok(mut f), Ok(meta)) = (opened, e.metadata()) {
                let zeros = vec![0u8; usize::try_from(meta.len()).unwrap_or(0)];
                if f.write_all(&zeros).and_then(|()| f.sync_all()).is_err() {
                    tracing::warn!(file = %e.path().display(), "could not zero a leftover secrets file");
                }
            }
        }
    }
}

/// Wipe a launch's tmpfs (through its descriptor), then unmount and remove
/// it in the host's mount namespace, where it was mounted.
///
/// The unmount goes through the descriptor checked when the tmpfs was
/// mounted or reopened, not its path: hours later, whatever now sits at
/// that path is not what gets unmounted.
pub(crate) fn release_dir(engine_socket: &Path, launch_id: &str, dir: Option<SecretsDir>) {
    let Some(mut dir) = dir else { return };
    if let Err(e) = dir.wipe_all() {
        tracing::error!(launch = launch_id, error = %e, "could not wipe a container's secrets");
    }
    let root = dir.root().to_path_buf();
    let fd = dir.root_fd().try_clone_to_owned();
    drop(dir);
    let released = fd
        .map_err(|e| format!("cannot duplicate its descriptor: {e}"))
        .and_then(|fd| {
            let path = root.clone();
            crate::host_mount::in_host(engine_socket, move || {
                let unmounted = sys::unmount_fd(fd.as_fd()).map_err(|e| e.to_string());
                drop(fd);
                let _ = remove_empty_dir(&path);
                unmounted
            })
        });
    if let Err(e) = released {
        tracing::error!(launch = launch_id, dir = %root.display(), error = %e, "could not unmount a container's secrets tmpfs")
    }
}

/// Remove the (now empty) directory a tmpfs was mounted on, by its name
/// in its parent opened without following links: a link swapped in for the
/// parent directory is refused, not followed.
pub(crate) fn remove_empty_dir(path: &Path) -> Result<(), String> {
    use nix::fcntl::OFlag;
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(format!("{} has no parent directory", path.display()));
    };
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let p = nix::fcntl::open(parent, flags, nix::sys::stat::Mode::empty())
        .map_err(|e| format!("cannot open {}: {e}", parent.display()))?;
    nix::unistd::unlinkat(&p, name, nix::unistd::UnlinkatFlags::RemoveDir)
        .map_err(|e| format!("cannot remove {}: {e}", path.display()))
}

/// Unmount a launch's tmpfs (by a path it just mounted, never followed
/// through a link) and remove its directory, in the host's mount namespace
/// ([`crate::host_mount`]).
fn unmount_secrets_dir(engine_socket: &Path, root: PathBuf) -> Result<(), String> {
    crate::host_mount::in_host(engine_socket, move || {
        let unmounted = sys::unmount(&root).map_err(|e| e.to_string());
        let _ = remove_empty_dir(&root);
        unmounted
    })
}

/// A fresh, size-limited tmpfs of our own for one container's files, in
/// the 0700 base directory (`Containers::secure_base`), mounted in the
/// host's mount namespace, where the engine bind-mounts it from
/// ([`crate::host_mount`]); written through the descriptor opened there.
/// Returns it with its root's identity, which a restarted broker checks.
pub(crate) fn mount_secrets_dir(
    engine_socket: &Path,
    dir: &Path,
) -> Result<(SecretsDir, TmpfsId), String> {
    let path = dir.to_path_buf();
    let fd = crate::host_mount::in_host(engine_socket, move || {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let dir = path.as_path();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        sys::mount_tmpfs(dir, TMPFS_BYTES).map_err(|e| {
            let _ = std::fs::remove_dir(dir);
            format!("cannot mount a tmpfs at {} for the container's file grants ({e}): run the broker as root (it needs CAP_SYS_ADMIN to mount)", dir.display())
        })?;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
            .open(dir)
            .map(std::os::fd::OwnedFd::from)
            .map_err(|e| {
                let _ = sys::unmount(dir);
                let _ = std::fs::remove_dir(dir);
                format!("cannot open the tmpfs mounted at {}: {e}", dir.display())
            })
    })?;
    let id = TmpfsId::of(fd.as_fd());
    let opened = id.and_then(|id| {
        SecretsDir::adopt_fd(dir, fd)
            .map(|d| (d, id))
            .map_err(|e| e.to_string())
    });
    opened.inspect_err(|_| {
        let _ = unmount_secrets_dir(engine_socket, dir.to_path_buf());
    })
}

/// Open again, in the host's mount namespace, the tmpfs a previous run of
/// the broker mounted at `dir`: only if the directory there is the root
/// `id` names (device, inode, birth time) and on a tmpfs (statfs magic), since
/// anyone who replaced the path meanwhile must not be written to. Returns
/// it adopted (owner and mode checked too) with a second descriptor on its
/// root; `Err` says why it is not ours.
pub(crate) fn reopen_secrets_dir(
    engine_socket: &Path,
    dir: &Path,
    id: TmpfsId,
) -> Result<(SecretsDir, OwnedFd), String> {
    let path = dir.to_path_buf();
    let fd = crate::host_mount::in_host(engine_socket, move || {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        Ok(OwnedFd::from(f))
    })?;
    id.check(&TmpfsId::of(fd.as_fd())?)
        .map_err(|why| format!("{}: {why}", dir.display()))?;
    if !sys::is_tmpfs_fd(fd.as_fd()).map_err(|e| format!("cannot statfs {}: {e}", dir.display()))? {
        return Err(format!(
            "{} is on {}, not on a tmpfs",
            dir.display(),
            sys::fs_type_name_fd(fd.as_fd())
        ));
    }
    let second = fd
        .try_clone()
        .map_err(|e| format!("cannot duplicate a descriptor: {e}"))?;
    let adopted = SecretsDir::adopt_fd(dir, fd).map_err(|e| e.to_string())?;
    Ok((adopted, second))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link swapped in for the launches' directory is refused, not
    /// followed: the directory it points at keeps its entry. The control
    /// removes the same name through the real directory.
    #[test]
    fn the_empty_dir_goes_only_through_a_real_parent() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real");
        std::fs::create_dir_all(real.join("launch")).unwrap();
        std::os::unix::fs::symlink(&real, t.path().join("swapped")).unwrap();
        let err = remove_empty_dir(&t.path().join("swapped/launch")).unwrap_err();
        assert!(err.contains("cannot open"), "{err}");
        assert!(real.join("launch").is_dir(), "followed the link");
        remove_empty_dir(&real.join("launch")).unwrap();
        assert!(!real.join("launch").exists(), "control: not removed");
    }
}
