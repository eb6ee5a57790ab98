mod util;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, SealFlag};
use std::io::{Read, Seek, Write};
use std::os::fd::AsFd;
use unbaked_secretsdir::sys;

#[test]
fn sealed_memfd_holds_the_bytes_and_refuses_changes() {
    let fd = sys::sealed_memfd("API_TOKEN_FILE", b"t0ken\x00").unwrap();
    let seals = SealFlag::from_bits_truncate(fcntl(fd.as_fd(), FcntlArg::F_GET_SEALS).unwrap());
    assert!(seals.contains(
        SealFlag::F_SEAL_WRITE
            | SealFlag::F_SEAL_SHRINK
            | SealFlag::F_SEAL_GROW
            | SealFlag::F_SEAL_SEAL
    ));
    let mut f = std::fs::File::from(fd);
    f.rewind().unwrap();
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).unwrap();
    assert_eq!(buf, b"t0ken\x00");
    f.rewind().unwrap();
    assert_eq!(
        f.write(b"x").unwrap_err().raw_os_error(),
        Some(Errno::EPERM as i32)
    );
    assert_eq!(nix::unistd::ftruncate(&f, 0), Err(Errno::EPERM));
    assert_eq!(nix::unistd::ftruncate(&f, 100), Err(Errno::EPERM));
    assert_eq!(
        fcntl(&f, FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK)),
        Err(Errno::EPERM)
    );
    // A fresh writable open of the same memfd cannot write either.
    let mut again = std::fs::OpenOptions::new()
        .write(true)
        .open(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&f)
        ))
        .unwrap();
    assert!(again.write(b"x").is_err());
    assert_eq!(
        std::fs::read(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&f)
        ))
        .unwrap(),
        b"t0ken\x00"
    );
}

#[test]
fn clear_cloexec_clears_only_that_flag() {
    let fd = sys::sealed_memfd("X", b"").unwrap();
    let flags = |fd| FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD).unwrap());
    assert!(flags(fd.as_fd()).contains(FdFlag::FD_CLOEXEC));
    sys::clear_cloexec(fd.as_fd()).unwrap();
    assert!(!flags(fd.as_fd()).contains(FdFlag::FD_CLOEXEC));
}

#[test]
fn tmpfs_detection() {
    assert!(sys::is_tmpfs(std::path::Path::new("/dev/shm")).unwrap());
    assert_eq!(sys::fs_type_name(std::path::Path::new("/dev/shm")), "tmpfs");
    assert!(sys::is_tmpfs(std::path::Path::new("/nonexistent/x")).is_err());
}

#[test]
fn core_dumps_are_disabled() {
    sys::disable_core_dumps().unwrap();
    assert!(!nix::sys::prctl::get_dumpable().unwrap());
    let (soft, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_CORE).unwrap();
    assert_eq!((soft, hard), (0, 0));
}

/// The mount goes on the directory the descriptor is open on, even after an
/// attacker renamed it away and put a symlink to another directory at its
/// name. CONTROL: mounting by the path, the same swap redirects the mount.
#[test]
fn a_tmpfs_is_mounted_on_the_checked_directory_even_after_a_swap() {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    let disk = tempfile::tempdir_in("/var/tmp").unwrap();
    assert!(!sys::is_tmpfs(disk.path()).unwrap());
    let (dir, moved, victim) = (
        disk.path().join("secrets"),
        disk.path().join("moved"),
        disk.path().join("victim"),
    );
    std::fs::create_dir(&dir).unwrap();
    std::fs::create_dir(&victim).unwrap();
    let _cleanup = [moved.clone(), victim.clone()].map(util::UnmountOnDrop);
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let checked = open(&dir, flags, Mode::empty()).unwrap();
    std::fs::rename(&dir, &moved).unwrap();
    std::os::unix::fs::symlink(&victim, &dir).unwrap();

    sys::mount_tmpfs_fd(checked.as_fd(), 1 << 20).unwrap();
    let mounted_at = |p: &std::path::Path| {
        sys::mounts()
            .unwrap()
            .iter()
            .any(|m| std::path::Path::new(&m.mount_point) == p)
    };
    assert!(mounted_at(&moved), "on the checked directory");
    assert!(!mounted_at(&victim) && !mounted_at(&dir));
    let root = open(&moved, flags, Mode::empty()).unwrap();
    assert!(sys::is_tmpfs_fd(root.as_fd()).unwrap());
    assert_ne!(
        sys::mount_id(root.as_fd()).unwrap(),
        sys::mount_id(checked.as_fd()).unwrap()
    );
    sys::unmount_fd(root.as_fd()).unwrap();
    assert!(!mounted_at(&moved));

    // CONTROL: the path now leads to the victim, and a mount by path lands there.
    sys::mount_tmpfs(&dir, 1 << 20).unwrap();
    let redirected = mounted_at(&victim);
    sys::unmount(&victim).unwrap();
    assert!(redirected);
}

/// An unmount by path does not follow a link swapped in at the path: the
/// mount the link points at stays. CONTROL: the same unmount by the real
/// path detaches it.
#[test]
fn an_unmount_by_path_does_not_follow_a_link() {
    let disk = tempfile::tempdir_in("/var/tmp").unwrap();
    let (victim, link) = (disk.path().join("victim"), disk.path().join("link"));
    std::fs::create_dir(&victim).unwrap();
    let _cleanup = util::UnmountOnDrop(victim.clone());
    sys::mount_tmpfs(&victim, 1 << 20).unwrap();
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    assert!(sys::unmount(&link).is_err(), "followed the link");
    assert!(sys::is_tmpfs(&victim).unwrap(), "the victim was unmounted");
    sys::unmount(&victim).unwrap();
    assert!(!sys::is_tmpfs(&victim).unwrap(), "control: still mounted");
}
