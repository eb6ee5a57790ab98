use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use unbaked_secretsdir::sys;
use unbaked_secretsdir::DirError;
use unbaked_secretsdir::SecretsDir;

fn shm() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm").unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into())
        .collect();
    v.sort();
    v
}

#[test]
fn write_is_atomic_with_mode_and_owner_and_leaves_no_temp_file() {
    let t = shm();
    let root = t.path().join("secrets");
    let mut dir = SecretsDir::open(&root, 1 << 20).unwrap();
    assert!(!dir.mounted(), "/dev/shm is tmpfs already");
    assert_eq!(
        fs::metadata(&root).unwrap().permissions().mode() & 0o7777,
        0o711
    );
    let (uid, gid) = if nix::unistd::geteuid().is_root() {
        (1234, 5678)
    } else {
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    };
    dir.write(
        "db/password",
        b"s3cr3t\x00\xff",
        0o440,
        Some(uid),
        Some(gid),
    )
    .unwrap();
    let path = root.join("db/password");
    let meta = fs::symlink_metadata(&path).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"s3cr3t\x00\xff");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o440);
    assert_eq!((meta.uid(), meta.gid()), (uid, gid));
    assert_eq!(
        fs::metadata(root.join("db")).unwrap().permissions().mode() & 0o7777,
        0o711
    );
    // A rewrite replaces the content; nothing else is left in the directory.
    dir.write("db/password", b"v2", 0o400, None, None).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"v2");
    assert_eq!(names(&root.join("db")), ["password"]);
    assert_eq!(dir.files().collect::<Vec<_>>(), ["db/password"]);
}

#[test]
fn a_rewrite_zeroes_the_old_version_after_a_grace_for_readers() {
    let t = shm();
    let mut dir = SecretsDir::open(t.path(), 1 << 20).unwrap();
    dir.write("k", b"old-secret", 0o600, None, None).unwrap();
    let read = |f: &mut fs::File| {
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).unwrap();
        buf
    };
    let mut old = fs::File::open(t.path().join("k")).unwrap();
    dir.write("k", b"new", 0o600, None, None).unwrap();
    // A reader that opened the old version just before the rename reads it whole.
    assert_eq!(read(&mut old), b"old-secret");
    let mut old = fs::File::open(t.path().join("k")).unwrap();
    dir.write("k", b"newer", 0o600, None, None).unwrap();
    std::thread::sleep(unbaked_secretsdir::writer::RETIRE_GRACE);
    dir.write("k", b"newest", 0o600, None, None).unwrap();
    assert_eq!(read(&mut old), vec![0; 3], "zeroed after the grace");
    // wipe_all zeroes a replaced version at once.
    let mut old = fs::File::open(t.path().join("k")).unwrap();
    dir.write("k", b"last", 0o600, None, None).unwrap();
    dir.wipe_all().unwrap();
    assert_eq!(read(&mut old), vec![0; 6]);
}

#[test]
fn a_symlink_at_the_target_is_replaced_not_followed() {
    let t = shm();
    let root = t.path().join("secrets");
    let outside = t.path().join("outside");
    fs::write(&outside, b"keep").unwrap();
    let mut dir = SecretsDir::open(&root, 1 << 20).unwrap();
    symlink(&outside, root.join("token")).unwrap();
    dir.write("token", b"new", 0o400, None, None).unwrap();
    assert_eq!(fs::read(&outside).unwrap(), b"keep");
    assert!(fs::symlink_metadata(root.join("token")).unwrap().is_file());
    // Wiping a planted symlink removes the link only.
    symlink(&outside, root.join("other")).unwrap();
    dir.wipe("other").unwrap();
    assert!(fs::symlink_metadata(root.join("other")).is_err());
    assert_eq!(fs::read(&outside).unwrap(), b"keep");
}

#[test]
fn a_symlinked_parent_is_refused() {
    let t = shm();
    let root = t.path().join("secrets");
    let outside = t.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("cert"), b"keep").unwrap();
    let mut dir = SecretsDir::open(&root, 1 << 20).unwrap();
    symlink(&outside, root.join("tls")).unwrap();
    let err = dir
        .write("tls/cert", b"new", 0o400, None, None)
        .unwrap_err();
    assert!(matches!(err, DirError::BadPath { .. }), "{err:?}");
    assert!(dir.wipe("tls/cert").is_err());
    assert_eq!(fs::read(outside.join("cert")).unwrap(), b"keep");
    assert_eq!(names(&outside), ["cert"]);
}

#[test]
fn escaping_paths_are_refused() {
    let t = shm();
    let mut dir = SecretsDir::open(&t.path().join("s"), 1 << 20).unwrap();
    for rel in ["../x", "/etc/x", "a/../../x", ""] {
        assert!(
            matches!(
                dir.write(rel, b"v", 0o400, None, None),
                Err(DirError::BadPath { .. })
            ),
            "{rel}"
        );
    }
    assert!(!t.path().join("x").exists());
}

#[test]
fn wipe_zeroes_then_unlinks() {
    let t = shm();
    let mut dir = SecretsDir::open(t.path(), 1 << 20).unwrap();
    dir.write("a/b/c", b"0123456789", 0o400, None, None)
        .unwrap();
    let mut held = fs::File::open(t.path().join("a/b/c")).unwrap();
    dir.wipe("a/b/c").unwrap();
    assert!(!t.path().join("a/b/c").exists());
    let mut buf = Vec::new();
    held.read_to_end(&mut buf).unwrap();
    assert_eq!(buf, vec![0; 10]);
    dir.wipe("a/b/c").unwrap(); // missing is fine
    dir.wipe("never/written").unwrap();
    assert_eq!(dir.files().count(), 0);
}

#[test]
fn wipe_all_removes_our_files_and_directories() {
    let t = shm();
    let root = t.path().join("s");
    let mut dir = SecretsDir::open(&root, 1 << 20).unwrap();
    dir.write("x/y/z", b"1", 0o400, None, None).unwrap();
    dir.write("top", b"2", 0o400, None, None).unwrap();
    dir.wipe_all().unwrap();
    assert!(!root.exists(), "we created the root, so it goes too");
}

#[test]
fn open_mounts_a_tmpfs_on_a_disk_directory() {
    let t = tempfile::tempdir_in("/tmp").unwrap();
    let root = t.path().join("secrets");
    let was_tmpfs = sys::is_tmpfs(t.path()).unwrap();
    let mut dir = SecretsDir::open(&root, 1 << 20).unwrap();
    assert!(sys::is_tmpfs(&root).unwrap());
    assert_eq!(dir.mounted(), !was_tmpfs);
    dir.write("db", b"v", 0o400, None, None).unwrap();
    dir.wipe_all().unwrap();
    assert!(!dir.mounted());
    assert!(!root.exists());
}

/// The real refusal: re-run this test in a child without CAP_SYS_ADMIN in
/// its bounding set (util-linux `setpriv`), where mounting fails with EPERM.
#[test]
fn open_refuses_a_disk_directory_without_cap_sys_admin() {
    let t = tempfile::tempdir_in("/tmp").unwrap();
    let root = t.path().join("secrets");
    if std::env::var_os("UNBAKED_TEST_NO_SYS_ADMIN").is_some() {
        let err = SecretsDir::open(&root, 1 << 20).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DirError::NotTmpfs { .. }), "{err:?}");
        assert!(
            msg.contains("is not on tmpfs") && msg.contains("CAP_SYS_ADMIN"),
            "{msg}"
        );
        assert!(!root.exists(), "nothing is left behind");
        return;
    }
    let out = std::process::Command::new("setpriv")
        .args(["--bounding-set=-sys_admin", "--inh-caps=-sys_admin", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "open_refuses_a_disk_directory_without_cap_sys_admin",
            "--test-threads=1",
        ])
        .env("UNBAKED_TEST_NO_SYS_ADMIN", "1")
        .output()
        .expect("setpriv (util-linux) runs the unprivileged half of this test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn refusal_is_decided_by_errno() {
    use nix::errno::Errno;
    assert!(sys::refusal_for(Errno::EPERM) && sys::refusal_for(Errno::EACCES));
    assert!(!sys::refusal_for(Errno::EBUSY) && !sys::refusal_for(Errno::ENOENT));
}
