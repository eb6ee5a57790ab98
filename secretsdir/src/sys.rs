//! The OS seam: mounts, statfs, memfd, fcntl and prctl, through nix's safe
//! wrappers only (the crate forbids `unsafe`).
//!
//! The `*_fd` variants act on what a descriptor is open on, never on a path
//! looked up again: the sidecar checks its directory once, through the
//! descriptor, and mounts, unmounts and writes through that same descriptor.

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, SealFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::statfs::{self, fstatfs, statfs, FsType};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Whether `dir` is on a tmpfs (memory-backed, so nothing reaches a disk).
pub fn is_tmpfs(dir: &Path) -> io::Result<bool> {
    Ok(statfs(dir)?.filesystem_type() == statfs::TMPFS_MAGIC)
}

/// Whether the open file or directory `fd` is on a tmpfs: asked of the
/// descriptor, so a path swapped after it was opened changes nothing.
pub fn is_tmpfs_fd(fd: BorrowedFd) -> io::Result<bool> {
    Ok(fstatfs(fd)?.filesystem_type() == statfs::TMPFS_MAGIC)
}

/// A readable name of the file system `dir` is on, for error messages.
pub fn fs_type_name(dir: &Path) -> String {
    statfs(dir).map_or_else(|_| "unknown".into(), |st| type_name(st.filesystem_type()))
}

/// [`fs_type_name`] of the file system the open `fd` is on.
pub fn fs_type_name_fd(fd: BorrowedFd) -> String {
    fstatfs(fd).map_or_else(|_| "unknown".into(), |st| type_name(st.filesystem_type()))
}

fn type_name(t: FsType) -> String {
    let known: [(FsType, &str); 10] = [
        (statfs::TMPFS_MAGIC, "tmpfs"),
        (statfs::EXT4_SUPER_MAGIC, "ext4"), // also ext2/ext3: same magic
        (statfs::XFS_SUPER_MAGIC, "xfs"),
        (statfs::BTRFS_SUPER_MAGIC, "btrfs"),
        (statfs::OVERLAYFS_SUPER_MAGIC, "overlay"),
        (statfs::NFS_SUPER_MAGIC, "nfs"),
        (statfs::FUSE_SUPER_MAGIC, "fuse"),
        (statfs::F2FS_SUPER_MAGIC, "f2fs"),
        (statfs::PROC_SUPER_MAGIC, "proc"),
        (statfs::SYSFS_MAGIC, "sysfs"),
    ];
    known
        .iter()
        .find(|(magic, _)| *magic == t)
        .map_or_else(|| format!("file system 0x{:x}", t.0), |(_, n)| (*n).into())
}

/// Mount a size-limited tmpfs at `dir`: nosuid, nodev, noexec, mode 0711 (the
/// workload may reach its files by name but not list them).
pub fn mount_tmpfs(dir: &Path, size_bytes: u64) -> Result<(), nix::Error> {
    let opts = format!("size={size_bytes},mode=0711,nr_inodes=4096");
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(opts.as_str()),
    )
}

/// [`mount_tmpfs`] on the directory `dir` is open on, wherever its path now
/// leads: the mount goes through `/proc/self/fd/N`, so a directory renamed
/// or replaced by a symlink after it was checked does not redirect it.
pub fn mount_tmpfs_fd(dir: BorrowedFd, size_bytes: u64) -> Result<(), nix::Error> {
    mount_tmpfs(&fd_path(dir), size_bytes)
}

/// Detach the mount at `dir`; a workload still holding a file open keeps its
/// copy, but the name disappears at once. A symlink at `dir` is not
/// followed (`UMOUNT_NOFOLLOW`): whoever swapped one in cannot point the
/// unmount elsewhere.
pub fn unmount(dir: &Path) -> nix::Result<()> {
    umount2(dir, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW)
}

/// Detach the file system whose root `dir` is open on (through
/// `/proc/self/fd/N`, the one link that must be followed, not a path
/// someone could have swapped).
pub fn unmount_fd(dir: BorrowedFd) -> nix::Result<()> {
    umount2(&fd_path(dir), MntFlags::MNT_DETACH)
}

/// `/proc/self/fd/N`: opening, mounting on or chmodding this path reaches
/// the very file `fd` is open on, whatever its name is now.
pub fn fd_path(fd: BorrowedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// The id of the mount `fd` is on (`mnt_id` in `/proc/self/fdinfo/N`, the
/// first field of `/proc/self/mountinfo`).
pub fn mount_id(fd: BorrowedFd) -> io::Result<u64> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?;
    info.lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::other("no mnt_id in /proc/self/fdinfo (Linux 3.15 or later)"))
}

/// One line of `/proc/self/mountinfo`, the fields the sidecar checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub id: u64,
    pub parent: u64,
    /// Where it is mounted, as this process sees it (octal escapes kept).
    pub mount_point: String,
    pub fs_type: String,
}

/// Every mount of this process's mount namespace.
pub fn mounts() -> io::Result<Vec<MountInfo>> {
    Ok(std::fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .filter_map(parse_mountinfo)
        .collect())
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw`: id,
/// parent, device, root, mount point, options, optional fields, `-`, type.
fn parse_mountinfo(line: &str) -> Option<MountInfo> {
    let mut f = line.split(' ');
    let id = f.next()?.parse().ok()?;
    let parent = f.next()?.parse().ok()?;
    let mount_point = f.nth(2)?.to_owned();
    let fs_type = f.skip_while(|x| *x != "-").nth(1)?.to_owned();
    Some(MountInfo {
        id,
        parent,
        mount_point,
        fs_type,
    })
}

/// Whether a mount failure means "this process may not mount" (so the sidecar
/// refuses with advice) rather than an unexpected error.
pub fn refusal_for(err: Errno) -> bool {
    matches!(err, Errno::EPERM | Errno::EACCES)
}

/// A memfd holding `bytes`, sealed so neither we nor the exec'd command can
/// change or resize it. Close-on-exec until [`clear_cloexec`].
pub fn sealed_memfd(name: &str, bytes: &[u8]) -> io::Result<OwnedFd> {
    let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?;
    let mut file = File::from(fd);
    file.write_all(bytes)?;
    let seals = SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_WRITE
        | SealFlag::F_SEAL_SEAL;
    fcntl(&file, FcntlArg::F_ADD_SEALS(seals))?;
    Ok(OwnedFd::from(file))
}

/// Let `fd` alone survive exec.
pub fn clear_cloexec(fd: BorrowedFd) -> io::Result<()> {
    let flags = FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD)?);
    fcntl(fd, FcntlArg::F_SETFD(flags - FdFlag::FD_CLOEXEC))?;
    Ok(())
}

/// No core dump and no ptrace attach by other processes of the same uid:
/// the process holds secrets in memory.
pub fn disable_core_dumps() -> io::Result<()> {
    nix::sys::prctl::set_dumpable(false)?;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)?;
    Ok(())
}

/// Milliseconds on CLOCK_BOOTTIME: shared by every process since boot
/// (suspend included), so one sidecar's deadline means the same to its
/// successor; a reboot empties the tmpfs anyway.
pub fn boottime_ms() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_BOOTTIME).map_or(0, |t| {
        u64::try_from(t.tv_sec()).unwrap_or(0) * 1000
            + u64::try_from(t.tv_nsec()).unwrap_or(0) / 1_000_000
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_are_parsed() {
        let l = "36 35 98:0 /mnt1 /mnt\\040x rw,noatime master:1 shared:2 - ext3 /dev/root rw";
        assert_eq!(
            parse_mountinfo(l),
            Some(MountInfo {
                id: 36,
                parent: 35,
                mount_point: "/mnt\\040x".into(),
                fs_type: "ext3".into(),
            })
        );
        assert_eq!(
            parse_mountinfo("25 1 0:22 / /dev/shm rw - tmpfs tmpfs rw").map(|m| m.fs_type),
            Some("tmpfs".into())
        );
        assert_eq!(parse_mountinfo("garbage"), None);
    }
}
