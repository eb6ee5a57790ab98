//! `sidecar::run` against a fake broker, without signals (see
//! sidecar_signal.rs for the SIGTERM path, in its own process).
mod util;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use unbaked_api::exit;
use unbaked_api::wire::{DeliveryKind, ErrorCode, FetchRequest};
use unbaked_sidecar::sidecar::{run, SidecarError};
use util::{api_error, config, file_item, lease, read, wait_for, FakeBroker};

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

/// CLOCK_BOOTTIME in ms: the clock of the sidecar's state file.
fn boottime_ms() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).unwrap();
    t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000
}

/// The sidecar's own record of its files' deadlines (`.unbaked-sidecar`:
/// relative path -> CLOCK_BOOTTIME ms), and when it last wrote it.
fn state(
    dir: &std::path::Path,
) -> (
    std::collections::BTreeMap<String, u64>,
    std::time::SystemTime,
) {
    let path = dir.join(".unbaked-sidecar");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let files = v["files"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    (files, std::fs::metadata(&path).unwrap().modified().unwrap())
}

/// The file is wiped at its ttl, judged by the sidecar's own records: the
/// deadline it wrote down (between the request and the delivery, plus the
/// ttl), never passed early by any observation, and the state it rewrote
/// when it wiped (no later than the deadline and a late timer's second).
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
    let before = boottime_ms();
    let task = tokio::spawn(run(config(&broker.socket, &dir, false)));
    wait_for(60, "delivery", || dir.join("short").exists()).await;
    let delivered = boottime_ms();
    let (files, _) = state(&dir);
    let deadline = files["short"];
    // The state file holds whole milliseconds: the clock read and the time
    // left are each truncated, so the deadline may read up to 2 ms early.
    assert!(
        (before + 2000 - 2..=delivered + 2000).contains(&deadline),
        "deadline {deadline} outside the request ({before}) and the delivery ({delivered}) plus the 2 s ttl"
    );
    assert!(
        files["long"].abs_diff(deadline + 28_000) <= delivered - before + 1,
        "{files:?}"
    );
    // Never gone before its deadline: an observation that finds it gone
    // was made no earlier than the wipe.
    wait_for(60, "expiry", || {
        let gone = !dir.join("short").exists();
        let now = boottime_ms();
        assert!(
            !gone || now + 1 >= deadline,
            "wiped {} ms early",
            deadline - now
        );
        gone
    })
    .await;
    // When it wiped: its state rewritten without the file (no renewal
    // succeeds, so nothing else rewrites it), on the wall clock mapped to
    // CLOCK_BOOTTIME.
    let (files, written) = state(&dir);
    assert!(!files.contains_key("short"), "{files:?}");
    let offset = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        - boottime_ms();
    let wiped = written
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        - offset;
    assert!(
        wiped <= deadline + 1000,
        "wiped {} ms after its deadline",
        wiped.saturating_sub(deadline)
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
