mod util;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use unbaked_api::exit;
use unbaked_api::wire::{Delivery, DeliveryKind, FetchRequest};
use unbaked_sidecar::exec::{prepare, ExecConfig, ExecError};
use util::{item, lease, FakeBroker};

const CHILD: &str = "UNBAKED_TEST_EXEC_SOCKET";

fn grants() -> util::Answer {
    lease(
        "l1",
        60,
        vec![
            item(
                "env:API_TOKEN",
                Delivery::Env {
                    name: "API_TOKEN".into(),
                },
                b"tok\xffen",
            ),
            item(
                "fd:DB_FILE",
                Delivery::Fd {
                    name: "DB_FILE".into(),
                },
                b"db-secret",
            ),
        ],
    )
}

fn config(socket: impl Into<std::path::PathBuf>, command: &[&str]) -> ExecConfig {
    ExecConfig {
        token_file: None,
        socket: socket.into(),
        workload: "billing".into(),
        command: command.iter().map(OsString::from).collect(),
    }
}

/// The command sees the env value byte for byte, reads the fd grant through
/// `/proc/self/fd/N`, and cannot write to it. The exec happens in a child
/// copy of this test binary, which the command replaces.
#[tokio::test]
async fn the_command_gets_env_and_sealed_fd_grants() {
    if let Some(socket) = std::env::var_os(CHILD) {
        let script = r#"printf '%s|' "$API_TOKEN"; cat "$DB_FILE"; printf '|'
            case "$DB_FILE" in /proc/self/fd/*) echo fdpath;; esac
            (printf x >> "$DB_FILE") 2>/dev/null && echo WRITABLE; echo END"#;
        let prepared = prepare(&config(socket, &["sh", "-c", script]))
            .await
            .unwrap();
        let err = prepared.exec();
        panic!("exec returned: {err}");
    }
    let broker = FakeBroker::start(|_| grants());
    let exe = std::env::current_exe().unwrap();
    let socket = broker.socket.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe)
            .args([
                "--exact",
                "the_command_gets_env_and_sealed_fd_grants",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, socket)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = out.stdout;
    let has = |needle: &[u8]| stdout.windows(needle.len()).any(|w| w == needle);
    assert!(
        has(b"tok\xffen|db-secret|fdpath\nEND\n"),
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!has(b"WRITABLE"));
    assert!(out.status.success());
    let req: FetchRequest = serde_json::from_slice(&broker.seen()[0].body).unwrap();
    assert_eq!(req.kinds, [DeliveryKind::Env, DeliveryKind::Fd]);
    assert_eq!(broker.seen().len(), 1, "no revoke");
}

#[tokio::test]
async fn exec_failures_map_to_126_and_127() {
    let broker = FakeBroker::start(|_| grants());
    let err = prepare(&config(&broker.socket, &["unbaked-no-such-command-x"]))
        .await
        .unwrap()
        .exec();
    assert!(matches!(err, ExecError::NotFound { .. }), "{err:?}");
    assert_eq!(err.exit_code(), exit::COMMAND_NOT_FOUND);

    let t = tempfile::tempdir_in("/tmp").unwrap();
    let script = t.path().join("not-executable");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = prepare(&config(&broker.socket, &[script.to_str().unwrap()]))
        .await
        .unwrap()
        .exec();
    assert!(matches!(err, ExecError::CannotExecute { .. }), "{err:?}");
    assert_eq!(err.exit_code(), exit::CANNOT_EXECUTE);
}

#[tokio::test]
async fn prepare_refuses_what_it_cannot_deliver() {
    let err = prepare(&config("/nonexistent.sock", &[]))
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::EmptyCommand));
    let err = prepare(&config("/nonexistent.sock", &["true"]))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), exit::UNAVAILABLE);

    let broker = FakeBroker::start(|_| {
        lease(
            "l1",
            60,
            vec![item("env:X", Delivery::Env { name: "X".into() }, b"a\0b")],
        )
    });
    let err = prepare(&config(&broker.socket, &["true"]))
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::BadItem { .. }), "{err:?}");
    assert!(err.to_string().contains("NUL") && !err.to_string().contains("a\0b"));
    let broker = FakeBroker::start(|_| grants());
    let dbg = format!(
        "{:?}",
        prepare(&config(&broker.socket, &["true"])).await.unwrap()
    );
    assert!(dbg.contains("API_TOKEN") && !dbg.contains("tok"), "{dbg}");
}
