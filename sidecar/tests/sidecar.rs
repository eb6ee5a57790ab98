//! `sidecar::run` against a fake broker, without signals (see
//! sidecar_signal.rs for the SIGTERM path, in its own process).
mod util;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use unbaked_api::exit;
use unbaked_api::wire::{DeliveryKind, ErrorCode, FetchRequest};
use unbaked_sidecar::sidecar::{run, SidecarConfig, SidecarError};
use util::{api_error, file_item, lease, read, wait_for, FakeBroker};

fn config(socket: &std::path::Path, dir: &std::path::Path, once: bool) -> SidecarConfig {
    SidecarConfig {
        token_file: None,
        socket: socket.into(),
        workload: "billing".into(),
        dir: dir.into(),
        once,
        tmpfs_size: 1 << 20,
    }
}

#[tokio::test]
async fn once_writes_the_files_and_leaves_them() {
    let broker = FakeBroker::start(|_| {
        lease(
            "l1",
            60,
            vec![
                file_item("file:db", "db_password", 1, 60, b"pw1"),
                file_item("file:tls", "tls/key.pem", 1, 60, b"key"),
            ],
        )
    });
    let t = tempfile::tempdir_in("/dev/shm").unwrap();
    let dir = t.path().join("secrets");
    run(config(&broker.socket, &dir, true)).await.unwrap();
    assert_eq!(read(&dir.join("db_password")).unwrap(), b"pw1");
    assert_eq!(read(&dir.join("tls/key.pem")).unwrap(), b"key");
    let seen = broker.seen();
    assert_eq!(seen.len(), 1, "no renew, no revoke");
    let req: FetchRequest = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(req.kinds, [DeliveryKind::File]);
}

#[tokio::test]
async fn a_denied_first_fetch_ends_with_the_denied_code() {
    let broker = FakeBroker::start(|_| {
        api_error(
            ErrorCode::Denied,
            "container billing-1 runs with --privileged",
        )
    });
    let t = tempfile::tempdir_in("/dev/shm").unwrap();
    let dir = t.path().join("secrets");
    let err = run(config(&broker.socket, &dir, false)).await.unwrap_err();
    assert!(matches!(err, SidecarError::Denied(_)), "{err:?}");
    assert_eq!(err.exit_code(), exit::DENIED);
    assert!(
        err.to_string()
            .starts_with("container billing-1 runs with --privileged"),
        "{err}"
    );
    assert!(!dir.exists(), "nothing is left behind");
}

#[tokio::test]
async fn an_unknown_workload_ends_and_once_does_not_wait_for_the_broker() {
    let broker = FakeBroker::start(|_| api_error(ErrorCode::NotFound, "no workload named billing"));
    let t = tempfile::tempdir_in("/dev/shm").unwrap();
    let err = run(config(&broker.socket, &t.path().join("a"), false))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), exit::FAILURE);
    let err = run(config(
        &t.path().join("none.sock"),
        &t.path().join("b"),
        true,
    ))
    .await
    .unwrap_err();
    assert_eq!(err.exit_code(), exit::UNAVAILABLE);
}

#[tokio::test]
async fn a_file_is_wiped_at_its_ttl_while_the_broker_is_down() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let broker = FakeBroker::start(move |s| match s.uri.as_str() {
        "/v1/fetch" => lease(
            "l1",
            1,
            vec![
                file_item("file:short", "short", 1, 2, b"s"),
                file_item("file:long", "long", 1, 30, b"l"),
            ],
        ),
        _ => {
            c.fetch_add(1, Ordering::SeqCst);
            api_error(ErrorCode::StoreUnavailable, "vault is sealed")
        }
    });
    let t = tempfile::tempdir_in("/dev/shm").unwrap();
    let dir = t.path().join("secrets");
    let task = tokio::spawn(run(config(&broker.socket, &dir, false)));
    wait_for(5, "delivery", || dir.join("short").exists()).await;
    let delivered = std::time::Instant::now();
    wait_for(5, "expiry", || !dir.join("short").exists()).await;
    let lived = delivered.elapsed();
    assert!(
        lived >= Duration::from_millis(1500) && lived < Duration::from_secs(3),
        "{lived:?}"
    );
    assert!(calls.load(Ordering::SeqCst) >= 1, "renewal was attempted");
    assert_eq!(
        read(&dir.join("long")).unwrap(),
        b"l",
        "a file within its ttl stays"
    );
    assert!(!task.is_finished(), "the sidecar keeps retrying");
    task.abort();
}
