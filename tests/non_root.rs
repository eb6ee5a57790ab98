//! The shipped example policies, used the way a deployment uses them: the
//! broker as root, its clients as the ordinary uids the policies name, on
//! the host and inside an `unbaked run` container. Nobody chmods anything.
mod util;
use std::path::Path;
use std::process::Command;
use util::docker::{docker_ok, static_binary, test_image, unique, Cleanup};
use util::*;

const DB: &[u8] = b"nonroot-db-5f0a9c";
const TOKEN: &[u8] = b"nonroot-token-e2b417";
const STRIPE: &[u8] = b"nonroot-stripe-0d93aa";
const S3: &[u8] = b"nonroot-s3-77c1e0";

fn shipped(name: &str) -> (String, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("policies")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (name.to_string(), text)
}

/// The broker with the repository's policies and their secrets; its
/// socket directory is traversable like `/run/unbaked` (0755).
fn broker() -> Broker {
    let (bf, bt) = shipped("billing.toml");
    let (rf, rt) = shipped("reports.toml");
    let b = Broker::start(&[(&bf, &bt), (&rf, &rt)]);
    std::fs::set_permissions(
        b.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    b.put("app/db", "password", DB);
    b.put("app/api", "token", TOKEN);
    b.put("app/stripe", "secret_key", STRIPE);
    b.put("reports/s3", "credentials", S3);
    b
}

/// `unbaked ARGS` as `uid` (its own gid, plus `groups`), nothing else changed.
fn as_user(b: &Broker, uid: u32, groups: &[u32], args: &[&str]) -> std::process::Output {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"));
    if groups.is_empty() {
        c.arg("--clear-groups");
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        c.arg(format!("--groups={}", list.join(",")));
    }
    c.arg(BIN)
        .args(args)
        .env("UNBAKED_SOCKET", &b.socket)
        .env("UNBAKED_SHIM", static_binary())
        .env("HOME", "/")
        .current_dir("/");
    output(&mut c)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// uid 1001 runs the reports sidecar on a tmpfs it owns (as an operator's
/// unit would prepare it); uid 1000 may plan a billing launch, uid 1002
/// may not; billing's docker selector never matches a host process.
#[test]
fn the_shipped_policies_serve_their_uids_on_the_host() {
    let b = broker();
    let dir = shm_dir("nonroot-reports");
    std::os::unix::fs::chown(dir.path(), Some(1001), Some(1001)).unwrap();
    let d = dir.path().display().to_string();
    let out = as_user(
        &b,
        1001,
        &[],
        &["sidecar", "--workload", "reports", "--dir", &d, "--once"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let file = dir.path().join("s3/credentials");
    assert_eq!(std::fs::read(&file).unwrap(), S3);

    // Control: another uid is refused by the policy (not by the socket).
    let other = shm_dir("nonroot-other");
    std::os::unix::fs::chown(other.path(), Some(1002), Some(1002)).unwrap();
    let o = other.path().display().to_string();
    let out = as_user(
        &b,
        1002,
        &[],
        &["sidecar", "--workload", "reports", "--dir", &o, "--once"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("uid 1002"),
        "{}",
        text(&out.stderr)
    );

    let image = test_image();
    let plan = [
        "run",
        "--workload",
        "billing",
        "--dry-run",
        "--",
        "--rm",
        "--user",
        "1000:1000",
        image,
        "true",
    ];
    let out = as_user(&b, 1000, &[], &plan);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("docker"),
        "{}",
        text(&out.stdout)
    );
    let out = as_user(&b, 1002, &[], &plan);
    assert_eq!(out.status.code(), Some(3), "control: {}", text(&out.stderr));

    let out = as_user(
        &b,
        1000,
        &[],
        &["exec", "--workload", "billing", "--", "true"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    for s in [DB, TOKEN, STRIPE, S3] {
        assert!(!contains(&std::fs::read(&b.log).unwrap(), s));
    }
}

/// uid 1000 (in the docker group, as a developer is) starts billing with
/// `unbaked run`; the app runs as uid 1000 inside and reads its file, env
/// and fd grants.
#[test]
fn a_non_root_user_runs_billing_and_its_non_root_app_gets_every_grant() {
    let b = broker();
    let image = test_image();
    let docker_gid = nix::unistd::Group::from_name("docker")
        .unwrap()
        .expect("the docker group (the engine's socket is group docker)")
        .gid
        .as_raw();
    let mut clean = Cleanup::default();
    let name = clean.container(&unique("nonroot-billing"));
    let out = as_user(
        &b,
        1000,
        &[docker_gid],
        &[
            "run",
            "--workload",
            "billing",
            "--",
            "--rm",
            "--name",
            &name,
            "--user",
            "1000:1000",
            image,
            "cat /run/secrets/db_password; printf '|%s|' \"$API_TOKEN\"; cat \"$STRIPE_KEY_FILE\"; id -u",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = out.stdout;
    let expected = [DB, b"|", TOKEN, b"|", STRIPE, b"1000\n"].concat();
    assert_eq!(text(&stdout), text(&expected));
    let inspect = docker_ok(&["ps", "-a", "--filter", &format!("name={name}"), "-q"]);
    assert!(inspect.is_empty(), "--rm removed it: {inspect}");
}
