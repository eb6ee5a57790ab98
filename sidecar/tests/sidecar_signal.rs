//! The whole sidecar life, ended by SIGTERM. Alone in its test binary: the
//! signal goes to the whole process.
mod util;

use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use unbaked_api::wire::ErrorCode;
use unbaked_sidecar::sidecar::{run, SidecarConfig};
use util::{api_error, file_item, lease, read, wait_for, FakeBroker};

const ISSUED: usize = 0;
const ROTATED: usize = 1;
const DENIED: usize = 2;
const RESTORED: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_rotate_withdraw_restore_and_wipe_on_sigterm() {
    let phase = Arc::new(AtomicUsize::new(ISSUED));
    let p = phase.clone();
    let broker = FakeBroker::start(move |s| {
        let renew = s.uri == "/v1/renew";
        match p.load(Ordering::SeqCst) {
            ISSUED => lease(
                "l1",
                1,
                vec![
                    file_item("file:keep", "keep", 1, 30, b"same"),
                    file_item("file:a", "a", 1, 30, b"alpha1"),
                    file_item("file:b", "b", 1, 30, b"beta"),
                ],
            ),
            ROTATED => lease(
                "l1",
                1,
                vec![
                    file_item("file:keep", "keep", 1, 30, b"same"),
                    file_item("file:a", "a", 2, 30, b"alpha2"),
                    file_item("file:c", "sub/c", 1, 30, b"gamma"),
                ],
            ),
            DENIED => api_error(ErrorCode::Denied, "grant withdrawn"),
            // The broker restarted: it knows no lease, a fetch works again.
            _ if renew => api_error(ErrorCode::NotFound, "unknown lease"),
            _ => lease(
                "l2",
                1,
                vec![file_item("file:keep", "keep", 1, 30, b"same")],
            ),
        }
    });
    let t = tempfile::tempdir_in("/dev/shm").unwrap();
    let dir = t.path().join("secrets");
    let cfg = SidecarConfig {
        token_file: None,
        socket: broker.socket.clone(),
        workload: "billing".into(),
        dir: dir.clone(),
        once: false,
        tmpfs_size: 1 << 20,
    };
    let task = tokio::spawn(run(cfg));
    let file = |n: &str| read(&dir.join(n));
    let inode = |n: &str| std::fs::metadata(dir.join(n)).map(|m| m.ino()).ok();

    wait_for(60, "first delivery", || {
        file("b").as_deref() == Some(b"beta")
    })
    .await;
    assert_eq!(file("a").unwrap(), b"alpha1");
    let keep_ino = inode("keep");

    phase.store(ROTATED, Ordering::SeqCst);
    wait_for(60, "rotation", || {
        file("a").as_deref() == Some(b"alpha2") && file("sub/c").is_some() && file("b").is_none()
    })
    .await;
    assert_eq!(
        inode("keep"),
        keep_ino,
        "an unchanged file is not rewritten"
    );

    phase.store(DENIED, Ordering::SeqCst);
    wait_for(60, "wipe on denial", || {
        ["keep", "a", "sub/c"].iter().all(|n| file(n).is_none())
    })
    .await;
    let fetches = broker.count("/v1/fetch");

    phase.store(RESTORED, Ordering::SeqCst);
    wait_for(60, "restored delivery", || file("keep").is_some()).await;
    assert!(
        broker.count("/v1/fetch") > fetches,
        "denied sidecars fetch anew"
    );
    let keep_ino = inode("keep");
    let seen = broker.seen().len();
    wait_for(60, "renew answered 404, then a fresh fetch", || {
        let s = broker.seen();
        s.len() > seen + 1
            && s[seen..].iter().any(|r| r.uri == "/v1/renew")
            && s.last().is_some_and(|r| r.uri == "/v1/fetch")
    })
    .await;
    assert_eq!(
        inode("keep"),
        keep_ino,
        "a re-fetch of the same version is not rewritten"
    );
    assert!(!task.is_finished());

    nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).unwrap();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert!(ended.is_ok(), "{ended:?}");
    assert!(
        !dir.exists(),
        "files wiped and the directory we created removed"
    );
    let last = broker.seen().into_iter().last().unwrap();
    assert_eq!(
        (
            last.uri.as_str(),
            String::from_utf8_lossy(&last.body).as_ref()
        ),
        ("/v1/revoke", r#"{"lease_id":"l2"}"#)
    );
}
