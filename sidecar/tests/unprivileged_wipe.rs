//! A sidecar that is not root wipes its own files: they are delivered 0400,
//! so opening one for writing fails with EACCES, and a wipe that gave up
//! there left every secret behind and recorded nothing left to wipe. Each
//! test re-runs itself as uid 2001 without capabilities (root's
//! CAP_DAC_OVERRIDE would open the file anyway and hide the bug); the
//! SIGTERM goes to that child process alone.
mod util;

use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use unbaked_api::wire::{Delivery, ErrorCode, Item};
use unbaked_secretsdir::writer::STATE_FILE;
use unbaked_secretsdir::SecretsDir;
use unbaked_sidecar::sidecar::{run, SidecarConfig};
use util::{api_error, file_item, lease, names, read, wait_for, FakeBroker};

const SIDECAR_UID: u32 = 2001;

fn read_only(id: &str, path: &str, version: u64, ttl_secs: u64, value: &[u8]) -> Item {
    let mut item = file_item(id, path, version, ttl_secs, value);
    item.delivery = Delivery::File {
        path: path.into(),
        mode: 0o400,
        uid: None,
        gid: None,
    };
    item
}

fn config(socket: &Path, dir: &Path) -> SidecarConfig {
    util::config(socket, dir, false)
}

/// The relative paths the state file lists; `None` without a state file.
fn state_names(dir: &Path) -> Option<Vec<String>> {
    let text = std::fs::read(dir.join(STATE_FILE)).ok()?;
    let state: serde_json::Value = serde_json::from_slice(&text).expect("state is JSON");
    Some(
        state["files"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect(),
    )
}

/// All of the file `f` is open on, from offset 0 (it may be unlinked).
fn contents(f: &std::fs::File) -> Vec<u8> {
    let mut buf = vec![0xAA; f.metadata().unwrap().len() as usize];
    f.read_exact_at(&mut buf, 0).unwrap();
    buf
}

fn zeroed(f: &std::fs::File) -> bool {
    let c = contents(f);
    !c.is_empty() && c.iter().all(|b| *b == 0)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn sigterm_and_wait(
    task: tokio::task::JoinHandle<Result<(), unbaked_sidecar::SidecarError>>,
) -> Result<(), unbaked_sidecar::SidecarError> {
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the sidecar ends within 5 s of SIGTERM")
        .unwrap()
}

const ISSUED: usize = 0;
const ROTATED: usize = 1;
const DENIED: usize = 2;
const RESTORED: usize = 3;

/// Rotation, withdrawal and SIGTERM each wipe (zero, then unlink) the 0400
/// files of a sidecar running as uid 2001; the state file then lists
/// nothing, and a second sidecar on the directory has nothing to wipe.
#[test]
fn a_sidecar_that_is_not_root_zeroes_and_unlinks_its_read_only_files() {
    let name = "a_sidecar_that_is_not_root_zeroes_and_unlinks_its_read_only_files";
    // Seen from outside too: nothing of the secrets is left.
    let outside = |base: &Path| assert_eq!(names(&base.join("secrets")), Vec::<String>::new());
    let Some(base) = util::as_uid(SIDECAR_UID, name, |_| {}, outside) else {
        return;
    };
    let dir = util::private_dir(&base);
    runtime().block_on(async {
        let phase = Arc::new(AtomicUsize::new(ISSUED));
        let p = phase.clone();
        let broker = FakeBroker::start(move |s| match p.load(Ordering::SeqCst) {
            ISSUED => lease(
                "l1",
                1,
                vec![
                    read_only("file:db", "db_password", 1, 30, b"pw-one"),
                    read_only("file:key", "tls/key.pem", 1, 30, b"key-one"),
                ],
            ),
            ROTATED => lease(
                "l1",
                1,
                vec![
                    read_only("file:db", "db_password", 2, 30, b"pw-two"),
                    read_only("file:key", "tls/key.pem", 1, 30, b"key-one"),
                ],
            ),
            DENIED => api_error(ErrorCode::Denied, "grant withdrawn"),
            _ if s.uri == "/v1/renew" && s.body.windows(2).any(|w| w == b"l1") => {
                api_error(ErrorCode::NotFound, "unknown lease")
            }
            _ => lease(
                "l2",
                1,
                vec![
                    read_only("file:db", "db_password", 3, 30, b"pw-three"),
                    read_only("file:key", "tls/key.pem", 1, 30, b"key-one"),
                ],
            ),
        });
        let task = tokio::spawn(run(config(&broker.socket, &dir)));
        let (db, key) = (dir.join("db_password"), dir.join("tls/key.pem"));
        let both = vec!["db_password".to_string(), "tls/key.pem".to_string()];

        wait_for(60, "first delivery", || read(&key).is_some()).await;
        assert_eq!(read(&db).unwrap(), b"pw-one");
        for f in [&db, &key] {
            let m = std::fs::metadata(f).unwrap();
            assert_eq!((m.mode() & 0o7777, m.uid()), (0o400, SIDECAR_UID), "{f:?}");
        }
        wait_for(60, "the state file", || {
            state_names(&dir) == Some(both.clone())
        })
        .await;

        // Rotation: the replaced version is zeroed after the grace.
        let old = std::fs::File::open(&db).unwrap();
        phase.store(ROTATED, Ordering::SeqCst);
        wait_for(60, "rotation", || read(&db).as_deref() == Some(b"pw-two")).await;
        assert_eq!(contents(&old), b"pw-one", "readable through the grace");
        wait_for(60, "the replaced version zeroed", || zeroed(&old)).await;

        // Withdrawal: every file zeroed and unlinked, the state says so.
        let held = std::fs::File::open(&key).unwrap();
        phase.store(DENIED, Ordering::SeqCst);
        wait_for(60, "wipe on withdrawal", || {
            read(&db).is_none() && read(&key).is_none()
        })
        .await;
        assert!(zeroed(&held), "zeroed before it was unlinked");
        wait_for(60, "an empty state", || state_names(&dir) == Some(vec![])).await;

        // SIGTERM: the same, and the state file goes.
        phase.store(RESTORED, Ordering::SeqCst);
        wait_for(60, "restored delivery", || {
            read(&db).as_deref() == Some(b"pw-three") && read(&key).is_some()
        })
        .await;
        let held = std::fs::File::open(&db).unwrap();
        assert!(!task.is_finished());
        let ended = sigterm_and_wait(task).await;
        assert!(ended.is_ok(), "{ended:?}");
        assert!(zeroed(&held), "zeroed before it was unlinked");
        assert_eq!(
            names(&dir),
            Vec::<String>::new(),
            "files, tls/ and state gone"
        );
        assert_eq!(broker.seen().last().unwrap().uri, "/v1/revoke");
    });

    // A second sidecar on the same directory has nothing left to wipe.
    let mut second = SecretsDir::open(&dir, 1 << 20).unwrap();
    assert!(second.inherited().is_empty());
    assert_eq!(second.files().count(), 0);
    second.wipe_all().unwrap();
    assert_eq!(names(&dir), Vec::<String>::new());
}

/// A file whose name cannot be removed (its directory lost the sidecar's
/// write permission) is still zeroed, the wipe reports the failure, and the
/// state file keeps listing that file alone, so the next sidecar on the
/// directory wipes it at once. The control is the file beside it, which
/// goes, and leaves the list.
#[test]
fn a_file_that_cannot_be_unlinked_stays_listed_until_a_successor_wipes_it() {
    let name = "a_file_that_cannot_be_unlinked_stays_listed_until_a_successor_wipes_it";
    let Some(base) = util::as_uid(SIDECAR_UID, name, |_| {}, |_| {}) else {
        return;
    };
    let dir = util::private_dir(&base);
    let (db, key) = (dir.join("db_password"), dir.join("tls/key.pem"));
    runtime().block_on(async {
        let broker = FakeBroker::start(|_| {
            lease(
                "l1",
                30,
                vec![
                    read_only("file:db", "db_password", 1, 30, b"pw-one"),
                    read_only("file:key", "tls/key.pem", 1, 30, b"key-one"),
                ],
            )
        });
        let task = tokio::spawn(run(config(&broker.socket, &dir)));
        let both = vec!["db_password".to_string(), "tls/key.pem".to_string()];
        wait_for(60, "delivery and state", || {
            state_names(&dir) == Some(both.clone())
        })
        .await;
        let held = std::fs::File::open(&key).unwrap();
        let tls = dir.join("tls");
        std::fs::set_permissions(&tls, std::fs::Permissions::from_mode(0o500)).unwrap();

        let err = sigterm_and_wait(task).await.unwrap_err().to_string();
        assert!(
            err.contains("tls/key.pem") && !err.contains("key-one"),
            "{err}"
        );
        assert!(read(&db).is_none(), "the other file is still wiped");
        assert!(zeroed(&held), "zeroed though not unlinked");
        assert_eq!(state_names(&dir), Some(vec!["tls/key.pem".to_string()]));
        std::fs::set_permissions(&tls, std::fs::Permissions::from_mode(0o711)).unwrap();
    });

    let mut second = SecretsDir::open(&dir, 1 << 20).unwrap();
    assert!(
        std::fs::symlink_metadata(&key).is_err(),
        "due at once: wiped on open"
    );
    assert_eq!(second.files().count(), 0);
    assert!(second.inherited().is_empty());
    second.wipe_all().unwrap();
    assert_eq!(state_names(&dir), None);
    let mut third = SecretsDir::open(&dir, 1 << 20).unwrap();
    assert_eq!(third.files().count(), 0);
    third.wipe_all().unwrap();
}

/// Withdrawal with a file whose name cannot be removed: the others go, that
/// one is zeroed and stays in the state file (it used to be rewritten as
/// empty), and the running sidecar tries again until it is gone.
#[test]
fn a_withdrawn_file_that_cannot_be_unlinked_is_retried_and_stays_listed() {
    let name = "a_withdrawn_file_that_cannot_be_unlinked_is_retried_and_stays_listed";
    let Some(base) = util::as_uid(SIDECAR_UID, name, |_| {}, |_| {}) else {
        return;
    };
    let dir = util::private_dir(&base);
    runtime().block_on(async {
        let phase = Arc::new(AtomicUsize::new(ISSUED));
        let p = phase.clone();
        let broker = FakeBroker::start(move |_| match p.load(Ordering::SeqCst) {
            ISSUED => lease(
                "l1",
                1,
                vec![
                    read_only("file:db", "db_password", 1, 30, b"pw-one"),
                    read_only("file:key", "tls/key.pem", 1, 30, b"key-one"),
                ],
            ),
            _ => api_error(ErrorCode::Denied, "grant withdrawn"),
        });
        let task = tokio::spawn(run(config(&broker.socket, &dir)));
        let (db, key, tls) = (
            dir.join("db_password"),
            dir.join("tls/key.pem"),
            dir.join("tls"),
        );
        let both = vec!["db_password".to_string(), "tls/key.pem".to_string()];
        wait_for(60, "delivery and state", || {
            state_names(&dir) == Some(both.clone())
        })
        .await;
        let held = std::fs::File::open(&key).unwrap();
        std::fs::set_permissions(&tls, std::fs::Permissions::from_mode(0o500)).unwrap();

        phase.store(DENIED, Ordering::SeqCst);
        wait_for(60, "the other file wiped", || read(&db).is_none()).await;
        wait_for(60, "the state listing the file left", || {
            state_names(&dir) == Some(vec!["tls/key.pem".to_string()])
        })
        .await;
        assert!(zeroed(&held), "zeroed though not unlinked");
        // Still listed a few retries later.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(state_names(&dir), Some(vec!["tls/key.pem".to_string()]));
        assert!(std::fs::symlink_metadata(&key).is_ok());

        std::fs::set_permissions(&tls, std::fs::Permissions::from_mode(0o711)).unwrap();
        wait_for(60, "the retry wiping it", || {
            std::fs::symlink_metadata(&key).is_err()
        })
        .await;
        wait_for(60, "an empty state", || state_names(&dir) == Some(vec![])).await;
        assert!(!task.is_finished(), "the sidecar keeps asking");
        assert!(sigterm_and_wait(task).await.is_ok());
        assert!(names(&dir).is_empty(), "{:?}", names(&dir));
    });
}
