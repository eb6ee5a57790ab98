//! The admin API behind `unbaked secret put|get|list|rm`, and who may use it.
mod util;
use util::*;

const VALUE: &[u8] = b"admin-secret-7f3a9c";

#[test]
fn put_get_list_rm_round_trip_without_leaking_the_value() {
    let b = Broker::start(&[]);
    b.put("app/db", "password", VALUE);

    let out = output(b.cmd().args(["secret", "get", "app/db", "password"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout, VALUE);

    let out = output(b.cmd().args(["secret", "get", "app/db"]));
    assert_eq!(text(&out.stdout).trim(), "app/db: version 1 (password)");

    b.put("app/db", "password", b"second");
    let out = output(b.cmd().args(["secret", "get", "app/db"]));
    assert!(text(&out.stdout).contains("version 2"));

    b.put("app/api", "token", b"t");
    let out = output(b.cmd().args(["secret", "list", "app/"]));
    assert_eq!(text(&out.stdout), "app/api\napp/db\n");

    let out = output(b.cmd().args(["secret", "rm", "app/api"]));
    assert!(out.status.success());
    let out = output(b.cmd().args(["secret", "get", "app/api"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no secret at app/api"),
        "{}",
        text(&out.stderr)
    );

    // The audit names paths and versions, never values; so does the log.
    let audit = b.audit_text();
    assert!(audit.contains("\"event\":\"secret_write\""));
    assert!(audit.contains("\"path\":\"app/db\""));
    assert!(files_containing(b.dir.path(), VALUE).is_empty());
    let out = output(b.cmd().args(["audit", "verify"]).arg(&b.audit));
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn an_inline_value_works_but_is_warned_about() {
    let b = Broker::start(&[]);
    let out = output(b.cmd().args(["secret", "put", "a/b", "k=inline-value"]));
    assert!(out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("warning") && err.contains("k=-"), "{err}");
    assert!(!err.contains("inline-value"));
}

#[test]
fn bad_paths_and_pairs_are_refused_with_reasons() {
    let b = Broker::start(&[]);
    let out = run_stdin(b.cmd().args(["secret", "put", "../etc", "k=-"]), b"v");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("secret path \"../etc\""),
        "{}",
        text(&out.stderr)
    );

    let out = output(
        b.cmd()
            .args(["secret", "put", "a/b", "k=1", "oops-a-value"]),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(!text(&out.stderr).contains("oops-a-value"));
}

#[test]
fn only_root_and_the_broker_uid_may_use_the_admin_api() {
    let b = Broker::start(&[]);
    b.put("app/db", "password", VALUE);
    // Let any uid reach the socket so the broker, not the file mode, decides.
    std::fs::set_permissions(
        &b.socket,
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let out = output(unbaked_as(65534, &b.socket).args(["secret", "get", "app/db", "password"]));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("for root and the broker's uid"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    let audit = b.audit_text();
    assert!(
        audit.contains("\"event\":\"deny\"") && audit.contains("\"uid\":65534"),
        "{audit}"
    );
}

#[test]
fn an_unreachable_broker_is_a_distinct_exit_code_naming_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("none.sock");
    let out = output(unbaked(&socket).args(["secret", "list"]));
    assert_eq!(out.status.code(), Some(4));
    assert!(
        text(&out.stderr).contains(&socket.display().to_string()),
        "{}",
        text(&out.stderr)
    );
}
