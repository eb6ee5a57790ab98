//! `--dir` as a local attacker would choose it: a symlink to a directory of
//! their choice, or a directory they own or may write. Each is refused
//! before anything is mounted, written or asked of the broker, with a
//! message that names the directory, what is wrong and what to do; each has
//! a control, the same setup without the attack, that is accepted.
mod util;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use unbaked_api::exit;
use unbaked_secretsdir::sys;
use unbaked_secretsdir::{DirError, DirProblem, SecretsDir};
use unbaked_sidecar::sidecar::{run, SidecarConfig, SidecarError};
use util::{file_item, lease, mounted_at, names, FakeBroker};

const SIDECAR_UID: u32 = 2001;
const ATTACKER_UID: u32 = 2002;

fn config(socket: &Path, dir: &Path) -> SidecarConfig {
    util::config(socket, dir, true)
}

fn broker() -> FakeBroker {
    FakeBroker::start(|_| {
        lease(
            "l1",
            60,
            vec![file_item("file:db", "db_password", 1, 60, b"pw-secret")],
        )
    })
}

/// The directory problem behind a sidecar's or a secrets directory's error.
trait Problem {
    fn dir_error(&self) -> Option<&DirError>;
}

impl Problem for DirError {
    fn dir_error(&self) -> Option<&DirError> {
        Some(self)
    }
}

impl Problem for SidecarError {
    fn dir_error(&self) -> Option<&DirError> {
        match self {
            SidecarError::Dir(e) => Some(e),
            _ => None,
        }
    }
}

fn problem(err: &impl Problem) -> Option<&DirProblem> {
    match err.dir_error()? {
        DirError::UnsafeDir { problem, .. } => Some(problem),
        _ => None,
    }
}

/// A directory on a disk (not tmpfs), so a sidecar that may mount would
/// mount a tmpfs over it.
fn disk_dir() -> tempfile::TempDir {
    let t = tempfile::tempdir_in("/var/tmp").unwrap();
    assert!(
        !sys::is_tmpfs(t.path()).unwrap(),
        "/var/tmp must not be tmpfs for this test"
    );
    t
}

fn chown(path: &Path, uid: u32) {
    let id = nix::unistd::Uid::from_raw(uid);
    nix::unistd::chown(path, Some(id), Some(nix::unistd::Gid::from_raw(uid))).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// `--dir /run/secrets` where the attacker made /run/secrets a symlink to a
/// directory they want hidden (or written into): a root sidecar used to
/// follow it and mount its tmpfs over the target.
#[tokio::test]
async fn a_symlinked_dir_is_refused_and_its_target_is_not_mounted_over() {
    let disk = disk_dir();
    let target = disk.path().join("etc");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("passwd"), b"root:x:0:0").unwrap();
    let _cleanup = util::UnmountOnDrop(target.clone());
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let link = shm.path().join("secrets");
    symlink(&target, &link).unwrap();

    let err = SecretsDir::open(&link, 1 << 20).unwrap_err();
    assert_eq!(problem(&err), Some(&DirProblem::Symlink), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{} is a symlink", link.display()))
            && msg.contains("pass the real directory"),
        "{msg}"
    );
    assert!(!mounted_at(&target), "a tmpfs was mounted over the target");
    assert!(!sys::is_tmpfs(&target).unwrap());
    assert_eq!(names(&target), ["passwd"]);
    assert!(fs::symlink_metadata(&link).unwrap().is_symlink());
    // A trailing slash (which makes the kernel follow a final symlink) or
    // `/.` changes nothing.
    for spelled in [
        format!("{}/", link.display()),
        format!("{}/.", link.display()),
    ] {
        let err = SecretsDir::open(Path::new(&spelled), 1 << 20).unwrap_err();
        assert_eq!(problem(&err), Some(&DirProblem::Symlink), "{spelled}");
        assert!(!mounted_at(&target), "{spelled}");
    }

    // The whole sidecar: refused before it asks the broker for anything.
    let b = broker();
    let err = run(config(&b.socket, &link)).await.unwrap_err();
    assert_eq!(problem(&err), Some(&DirProblem::Symlink));
    assert_eq!(err.exit_code(), exit::FAILURE);
    assert!(
        b.seen().is_empty(),
        "no request before the directory is checked"
    );
    assert!(!mounted_at(&target));
    assert_eq!(names(&target), ["passwd"]);

    // A link to a tmpfs directory (nothing to mount) is refused too: the
    // secrets would land wherever the link's owner points it.
    let elsewhere = shm.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let link2 = shm.path().join("secrets2");
    symlink(&elsewhere, &link2).unwrap();
    let err = run(config(&b.socket, &link2)).await.unwrap_err();
    assert_eq!(problem(&err), Some(&DirProblem::Symlink));
    assert!(names(&elsewhere).is_empty());
    // A dangling one is not created through.
    let link3 = shm.path().join("secrets3");
    symlink(shm.path().join("missing"), &link3).unwrap();
    let err = SecretsDir::open(&link3, 1 << 20).unwrap_err();
    assert_eq!(problem(&err), Some(&DirProblem::Symlink));
    assert!(!shm.path().join("missing").exists());

    // CONTROL: the same directory passed as itself is accepted, and gets a
    // tmpfs mounted on it (which is what the symlink would have caused).
    let mut dir = SecretsDir::open(&target, 1 << 20).unwrap();
    assert!(dir.mounted());
    assert!(mounted_at(&target) && sys::is_tmpfs(&target).unwrap());
    dir.write("db_password", b"pw-secret", 0o400, None, None)
        .unwrap();
    assert_eq!(names(&target), ["db_password"]);
    dir.wipe_all().unwrap();
    assert!(!mounted_at(&target), "unmounted on the way out");
    assert_eq!(names(&target), ["passwd"]);
    assert!(b.seen().is_empty());
}

/// `--dir` pre-created by another user: they own it, or it lets them
/// write, so they could swap the files the workload reads. Refused, naming
/// the reason; the attacker's planted file is left as it is.
#[tokio::test]
async fn a_dir_another_user_owns_or_may_write_is_refused() {
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let euid = nix::unistd::geteuid().as_raw();
    let cases = [
        // (owner, mode, expected problem, words of the message)
        (
            ATTACKER_UID,
            0o777,
            DirProblem::Owner {
                uid: ATTACKER_UID,
                euid,
            },
            vec!["is owned by uid 2002".to_string(), format!("chown {euid} ")],
        ),
        (
            ATTACKER_UID,
            0o700,
            DirProblem::Owner {
                uid: ATTACKER_UID,
                euid,
            },
            vec!["is owned by uid 2002".into()],
        ),
        (
            euid,
            0o777,
            DirProblem::Writable { mode: 0o777 },
            vec![
                "writable by its group or others (mode 0777)".into(),
                "chmod 0711 ".into(),
            ],
        ),
        (
            euid,
            0o730,
            DirProblem::Writable { mode: 0o730 },
            vec!["(mode 0730)".into()],
        ),
        (
            euid,
            0o1777,
            DirProblem::Writable { mode: 0o1777 },
            vec!["(mode 1777)".into()],
        ),
    ];
    let b = broker();
    for (i, (owner, mode, want, words)) in cases.into_iter().enumerate() {
        let dir = shm.path().join(format!("case{i}"));
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("db_password"), b"attacker's").unwrap();
        chown(&dir, owner);
        chmod(&dir, mode);

        let err = SecretsDir::open(&dir, 1 << 20).unwrap_err();
        assert_eq!(problem(&err), Some(&want), "case {i}: {err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&dir.display().to_string()), "{msg}");
        for w in &words {
            assert!(msg.contains(w.as_str()), "case {i}: {w:?} not in {msg}");
        }
        let err = run(config(&b.socket, &dir)).await.unwrap_err();
        assert_eq!(problem(&err), Some(&want), "case {i}");
        assert_eq!(err.exit_code(), exit::FAILURE);
        assert_eq!(fs::read(dir.join("db_password")).unwrap(), b"attacker's");
        assert_eq!(names(&dir), ["db_password"], "case {i}: nothing written");
        assert!(!mounted_at(&dir), "case {i}");
    }
    assert!(
        b.seen().is_empty(),
        "no request before the directory is checked"
    );

    // CONTROL: the same directory, 0700 and owned by the sidecar's uid, on
    // tmpfs, is accepted and gets the secret.
    let dir = shm.path().join("ours");
    fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o700);
    run(config(&b.socket, &dir)).await.unwrap();
    assert_eq!(fs::read(dir.join("db_password")).unwrap(), b"pw-secret");
    assert!(!mounted_at(&dir), "already tmpfs: nothing mounted");
    assert_eq!(b.seen().len(), 1);
}

/// The same as a sidecar that is not root (uid 2001): a directory of uid
/// 2002 is refused; its own 0700 directory (control) is accepted.
#[test]
fn a_sidecar_that_is_not_root_refuses_another_users_dir_and_accepts_its_own() {
    let name = "a_sidecar_that_is_not_root_refuses_another_users_dir_and_accepts_its_own";
    let theirs_of = |base: &Path| {
        let theirs = base.join("theirs");
        fs::create_dir(&theirs).unwrap();
        chown(&theirs, ATTACKER_UID);
        chmod(&theirs, 0o755);
    };
    let Some(base) = util::as_uid(SIDECAR_UID, name, theirs_of, |_| {}) else {
        return;
    };
    let theirs = base.join("theirs");
    let err = SecretsDir::open(&theirs, 1 << 20).unwrap_err();
    assert_eq!(
        problem(&err),
        Some(&DirProblem::Owner {
            uid: ATTACKER_UID,
            euid: SIDECAR_UID
        })
    );
    let msg = err.to_string();
    assert!(
        msg.contains("not by this sidecar's uid 2001 or root")
            && msg.contains(&format!("chown 2001 {}", theirs.display())),
        "{msg}"
    );
    // CONTROL.
    let ours = base.join("ours");
    fs::create_dir(&ours).unwrap();
    chmod(&ours, 0o700);
    let mut dir = SecretsDir::open(&ours, 1 << 20).unwrap();
    dir.write("db_password", b"pw-secret", 0o400, None, None)
        .unwrap();
    dir.wipe_all().unwrap();
    assert!(names(&ours).is_empty());
}

/// A Kubernetes `emptyDir` is root-owned 0777 and empty: taken over (made
/// 0711) and used. The same with anything in it is refused (the control:
/// `a_dir_another_user_owns_or_may_write_is_refused`), and a sticky shared
/// directory is never taken over.
#[tokio::test]
async fn an_empty_world_writable_dir_like_an_emptydir_is_closed_then_used() {
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let dir = shm.path().join("emptydir");
    fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o777);
    let opened = SecretsDir::open(&dir, 1 << 20).expect("an empty emptyDir is taken over");
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o7777,
        0o711
    );
    drop(opened);

    let sticky = shm.path().join("sticky");
    fs::create_dir(&sticky).unwrap();
    chmod(&sticky, 0o1777);
    let err = SecretsDir::open(&sticky, 1 << 20).unwrap_err();
    assert_eq!(problem(&err), Some(&DirProblem::Writable { mode: 0o1777 }));
    assert_eq!(
        fs::metadata(&sticky).unwrap().permissions().mode() & 0o7777,
        0o1777
    );
}
