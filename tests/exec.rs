//! `unbaked exec`: env and sealed-memfd grants, then the command's own exit code.
mod util;
use util::*;

const TOKEN: &[u8] = b"exec-token-51c0de";
const KEY: &[u8] = b"exec-fd-key-9e77aa";

fn broker() -> Broker {
    let grants = r#"
[[grant]]
secret = "app/api"
key = "token"
env = "API_TOKEN"

[[grant]]
secret = "app/api"
key = "signing"
fd = "SIGNING_KEY_FILE"

[[grant]]
secret = "app/api"
key = "token"
file = "not_for_exec"
"#;
    let b = Broker::start(&[("api.toml", &host_policy("api", grants))]);
    b.put_many("app/api", &[("token", TOKEN), ("signing", KEY)]);
    b
}

#[test]
fn env_and_fd_grants_reach_the_command_and_nothing_else() {
    let b = broker();
    let out = output(b.cmd().args([
        "exec",
        "--workload",
        "api",
        "--",
        "sh",
        "-c",
        r#"printf '%s|' "$API_TOKEN"; cat "$SIGNING_KEY_FILE"; printf '|%s' "$SIGNING_KEY_FILE"; [ -z "$not_for_exec" ]"#,
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let parts: Vec<&str> = stdout.split('|').collect();
    assert_eq!(parts[0].as_bytes(), TOKEN);
    assert_eq!(parts[1].as_bytes(), KEY);
    assert!(parts[2].starts_with("/proc/self/fd/"), "{stdout}");
    // No file was written and no value reached the broker's log or audit.
    assert!(files_containing(b.dir.path(), TOKEN).is_empty());
    assert!(files_containing(b.dir.path(), KEY).is_empty());
}

#[test]
fn the_memfd_is_sealed_against_writes() {
    let b = broker();
    let out = output(b.cmd().args([
        "exec",
        "--workload",
        "api",
        "--",
        "sh",
        "-c",
        r#"printf x >> "$SIGNING_KEY_FILE" && exit 10; printf x > "$SIGNING_KEY_FILE" && exit 11; cat "$SIGNING_KEY_FILE""#,
    ]));
    assert!(
        out.status.success(),
        "status {:?}: {}",
        out.status,
        text(&out.stderr)
    );
    assert_eq!(out.stdout, KEY);
}

#[test]
fn the_exit_code_is_the_commands_own() {
    let b = broker();
    let out = output(
        b.cmd()
            .args(["exec", "--workload", "api", "--", "sh", "-c", "exit 7"]),
    );
    assert_eq!(out.status.code(), Some(7));
    let out = output(
        b.cmd()
            .args(["exec", "--workload", "api", "--", "/nonexistent/cmd"]),
    );
    assert_eq!(out.status.code(), Some(127));
}

#[test]
fn a_denied_exec_runs_nothing_and_says_why() {
    let policy = "workload = \"other\"\n[match]\nuids = [4242]\n[[grant]]\nsecret = \"app/api\"\nkey = \"token\"\nenv = \"T\"\n";
    let b = Broker::start(&[("other.toml", policy)]);
    b.put("app/api", "token", TOKEN);
    let out = output(
        b.cmd()
            .args(["exec", "--workload", "other", "--", "sh", "-c", "echo ran"]),
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    // The rule and the caller's own uid; the policy's uids only in the audit.
    assert!(err.contains("match.uids") && !err.contains("4242"), "{err}");
    let audit = b.audit_text();
    assert!(
        audit.contains("\"event\":\"deny\"")
            && audit.contains("match.uids")
            && audit.contains("4242"),
        "{audit}"
    );
}
