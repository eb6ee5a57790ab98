mod util;

use std::time::Duration;
use unbaked_api::exit;
use unbaked_api::wire::{DeliveryKind, ErrorCode, FetchRequest, PutSecret, SecretMeta};
use unbaked_api::Secret;
use unbaked_sidecar::client::{Client, ClientError};
use util::{api_error, file_item, lease, FakeBroker};

fn fetch_req() -> FetchRequest {
    FetchRequest {
        workload: "billing".into(),
        kinds: vec![DeliveryKind::File],
    }
}

#[tokio::test]
async fn fetch_round_trips_a_lease() {
    let broker = FakeBroker::start(|_| {
        lease(
            "l1",
            60,
            vec![file_item("file:db", "db", 3, 60, b"s3cr3t\x00\xff")],
        )
    });
    let got = Client::new(&broker.socket)
        .fetch(&fetch_req())
        .await
        .unwrap();
    assert_eq!(got.lease_id, "l1");
    assert_eq!(got.items[0].value.expose_secret(), b"s3cr3t\x00\xff");
    assert_eq!(got.items[0].version, 3);
    let seen = broker.seen();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].uri.as_str()),
        ("POST", "/v1/fetch")
    );
    assert_eq!(
        (seen[0].host.as_str(), seen[0].content_type.as_str()),
        ("unbaked", "application/json")
    );
    let sent: FetchRequest = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(sent, fetch_req());
}

#[tokio::test]
async fn renew_revoke_and_admin_calls_use_their_routes() {
    let broker = FakeBroker::start(|s| match (s.method.as_str(), s.uri.as_str()) {
        ("POST", "/v1/renew") => lease("l1", 60, vec![]),
        ("POST", "/v1/revoke") | ("DELETE", _) => (204, vec![]),
        ("PUT", "/v1/admin/secrets/app/db%20x") => {
            let meta = SecretMeta {
                path: "app/db x".into(),
                version: 2,
                keys: vec!["pw".into()],
            };
            (200, serde_json::to_vec(&meta).unwrap())
        }
        ("GET", "/v1/admin/list?prefix=app/a%26b%3Dc") => {
            (200, br#"{"paths":["app/db"]}"#.to_vec())
        }
        ("GET", "/v1/health") => (
            200,
            br#"{"status":"ok","store":"memory","workloads":1,"leases":0,"audit_ok":true}"#
                .to_vec(),
        ),
        _ => api_error(ErrorCode::NotFound, "no such route"),
    });
    let c = Client::new(&broker.socket);
    assert_eq!(c.renew("l1").await.unwrap().lease_id, "l1");
    c.revoke("l1").await.unwrap();
    let put = PutSecret {
        data: [("pw".to_owned(), Secret::from_slice(b"hunter2"))].into(),
    };
    assert_eq!(c.put_secret("app/db x", &put).await.unwrap().version, 2);
    c.delete_secret("app/db").await.unwrap();
    assert_eq!(c.list_secrets("app/a&b=c").await.unwrap().paths, ["app/db"]);
    assert!(c.health().await.unwrap().audit_ok);
    let seen = broker.seen();
    assert_eq!(
        String::from_utf8_lossy(&seen[1].body),
        r#"{"lease_id":"l1"}"#
    );
    // The secret travels base64-encoded, never as plain text.
    assert!(!String::from_utf8_lossy(&seen[2].body).contains("hunter2"));
    assert_eq!(seen[3].uri, "/v1/admin/secrets/app/db");
}

#[tokio::test]
async fn a_403_maps_to_denied() {
    let broker = FakeBroker::start(|_| {
        api_error(
            ErrorCode::Denied,
            "workload billing: container runs privileged",
        )
    });
    let err = Client::new(&broker.socket)
        .fetch(&fetch_req())
        .await
        .unwrap_err();
    assert!(err.is_denied() && !err.is_not_found());
    assert_eq!(err.exit_code(), exit::DENIED);
    assert_eq!(
        err.to_string(),
        "workload billing: container runs privileged"
    );
}

#[tokio::test]
async fn a_404_maps_to_not_found() {
    let broker = FakeBroker::start(|_| api_error(ErrorCode::NotFound, "unknown lease"));
    let err = Client::new(&broker.socket).renew("l9").await.unwrap_err();
    assert!(err.is_not_found());
    assert_eq!(err.exit_code(), exit::FAILURE);
}

#[tokio::test]
async fn a_missing_socket_is_unavailable_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody-here.sock");
    let err = Client::new(&socket).health().await.unwrap_err();
    assert!(matches!(err, ClientError::Unavailable { .. }), "{err:?}");
    assert_eq!(err.exit_code(), exit::UNAVAILABLE);
    let msg = err.to_string();
    assert!(msg.contains(&socket.display().to_string()), "{msg}");
    assert!(
        msg.contains("UNBAKED_SOCKET") && msg.contains("--socket"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_silent_broker_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("silent.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    // Accept and hold connections without ever answering.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    // The client's own error says which timeout ended the wait; the outer
    // deadline only catches a client that never gives up.
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        Client::new(&socket)
            .with_timeout(Duration::from_millis(200))
            .fetch(&fetch_req()),
    )
    .await
    .expect("the client gave up on a silent broker")
    .unwrap_err();
    assert!(
        matches!(err, ClientError::Timeout { after, .. } if after == Duration::from_millis(200)),
        "{err:?}"
    );
    assert_eq!(err.exit_code(), exit::UNAVAILABLE);
}

#[tokio::test]
async fn unexpected_bodies_are_protocol_errors_that_do_not_quote_them() {
    let broker = FakeBroker::start(|s| match s.uri.as_str() {
        "/v1/health" => (500, b"oops hunter2".to_vec()),
        _ => (200, br#"{"lease_id":"hunter2","items":"hunter2"}"#.to_vec()),
    });
    let c = Client::new(&broker.socket);
    for err in [
        c.health().await.unwrap_err(),
        c.fetch(&fetch_req()).await.unwrap_err(),
    ] {
        assert!(matches!(err, ClientError::Protocol(_)), "{err:?}");
        assert_eq!(err.exit_code(), exit::FAILURE);
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}

#[tokio::test]
async fn an_oversized_answer_is_refused() {
    let broker = FakeBroker::start(|_| (200, vec![b' '; 5 << 20]));
    let err = Client::new(&broker.socket).health().await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Protocol(m) if m.contains("larger than")),
        "{err:?}"
    );
}

/// A broker past its queue closes connections unanswered: the client tries
/// again (the request was never read), and gives up with "unavailable"
/// after its attempts when every connection is closed (the control).
#[tokio::test]
async fn a_connection_closed_unanswered_is_tried_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("closing.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let closes_first = |n: usize| {
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        (count.clone(), move || {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < n
        })
    };
    let (accepted, close_this) = closes_first(2);
    let server = tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            if close_this() {
                drop(s);
                continue;
            }
            let mut buf = vec![0u8; 4096];
            let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
            let body =
                br#"{"status":"ok","store":"memory","workloads":1,"leases":0,"audit_ok":true}"#;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            tokio::io::AsyncWriteExt::write_all(&mut s, head.as_bytes())
                .await
                .unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut s, body)
                .await
                .unwrap();
        }
    });
    let health = Client::new(&path).health().await;
    assert!(health.unwrap().audit_ok, "served on the third connection");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    server.abort();

    let path2 = dir.path().join("always-closing.sock");
    let listener = tokio::net::UnixListener::bind(&path2).unwrap();
    let server = tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            drop(s);
        }
    });
    let err = Client::new(&path2).health().await.unwrap_err();
    assert_eq!(err.exit_code(), exit::UNAVAILABLE, "{err}");
    server.abort();
}
