//! The OS seam: mounts, statfs, memfd, fcntl and prctl, through nix's safe
//! wrappers only (the crate forbids `unsafe`).

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, SealFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::statfs::{self, statfs, FsType};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

/// Whether `dir` is on a tmpfs (memory-backed, so nothing reaches a disk).
pub fn is_tmpfs(dir: &Path) -> io::Result<bool> {
    Ok(statfs(dir)?.filesystem_type() == statfs::TMPFS_MAGIC)
}

/// A readable name of the file system `dir` is on, for error messages.
pub fn fs_type_name(dir: &Path) -> String {
    let Ok(st) = statfs(dir) else {
        return "unknown".into();
    };
    let t = st.filesystem_type();
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

/// Detach the mount at `dir`; a workload still holding a file open keeps its
/// copy, but the name disappears at once.
pub fn unmount(dir: &Path) -> nix::Result<()> {
    umount2(dir, MntFlags::MNT_DETACH)
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
