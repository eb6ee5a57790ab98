//! `--store crypt` against a real etcd (Debian's etcd-server, v3 and the v2
//! keys API) holding values the way Crypt writes them, produced by GnuPG
//! (`gzip | gpg --encrypt | base64`) and put with etcdctl: fetches through
//! `unbaked exec` and the sidecar, JSON and TOML values as fields, a
//! rotation reaching a running sidecar within one ttl, and the failures
//! (wrong keyring, corrupt value, etcd away, a loose keyring file), each
//! named with its key and reason, with no value in any log or audit.
mod util;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime};
use util::etcd::{Etcd, Gpg};
use util::*;

const PW: &[u8] = b"crypt-pw-5e1f0a9c77";
const ROTATED: &[u8] = b"crypt-pw-r0t4ted-41d";
const TOKEN: &[u8] = b"crypt-token-9b2dd3e1";
const TOML_PW: &[u8] = b"crypt-toml-pw-0c33a8";
const TOML_ROTATED: &[u8] = b"crypt-toml-r0t-7e0f2";
const WRONG: &[u8] = b"crypt-wrong-ring-55aa01";
const EMAIL: &str = "unbaked@crypt.test";
const OTHER: &str = "other@crypt.test";

fn json(pw: &[u8]) -> Vec<u8> {
    format!(
        "{{\"user\": \"billing\", \"password\": \"{}\", \"port\": 5432}}\n",
        String::from_utf8_lossy(pw)
    )
    .into_bytes()
}

fn toml_value(pw: &[u8]) -> Vec<u8> {
    format!(
        "# billing's database\nuser = \"billing\"\npassword = \"{}\"\n",
        String::from_utf8_lossy(pw)
    )
    .into_bytes()
}

/// A gpg home with our key, its secret keyring exported (mode 0400).
/// Every value of these tests, for `scripts/hygiene`'s search.
fn register_values() {
    for v in [PW, ROTATED, TOKEN, TOML_PW, TOML_ROTATED, WRONG] {
        register_secret(v);
    }
}

fn keys(dir: &Path) -> Gpg {
    register_values();
    let gpg = Gpg::new();
    gpg.generate(EMAIL);
    gpg.export_secret(EMAIL, &dir.join("secring.asc"));
    gpg
}

fn crypt_config(endpoint: &str, api: &str, keyring: &Path) -> String {
    format!(
        "[broker]\nstore = \"crypt\"\n\n[crypt]\nendpoints = [\"{endpoint}\"]\nsecret_keyring = \"{}\"\napi = \"{api}\"\n",
        keyring.display()
    )
}

fn grants(ttl: &str) -> String {
    format!(
        r#"
[[grant]]
secret = "app/db"
key = "password"
env = "DB_PASSWORD"
ttl = "{ttl}"

[[grant]]
secret = "app/db"
key = "password"
file = "db/password"
ttl = "{ttl}"

[[grant]]
secret = "app/token"
key = "value"
env = "TOKEN"
ttl = "{ttl}"
"#
    )
}

fn broker(config: &str, grants: &str) -> Broker {
    Broker::builder()
        .policy("app.toml", &host_policy("app", grants))
        .config(config)
        .start()
}

/// When the broker logged that its watch saw `key` change at `revision`.
fn watch_seen(b: &Broker, key: &str, revision: u64) -> SystemTime {
    let mut at = None;
    let found = wait_for(DEADLINE, || {
        at = b
            .log_text()
            .lines()
            .filter(|l| l.contains("etcd key changed"))
            .filter(|l| {
                let plain = strip_ansi(l);
                plain.contains(&format!("key=\"{key}\""))
                    && plain.contains(&format!("revision={revision} "))
            })
            .find_map(log_time);
        at.is_some()
    });
    assert!(
        found,
        "the broker's watch did not log {key} at revision {revision}:\n{}",
        b.log_text()
    );
    at.unwrap()
}

/// A log line without its colour escapes.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut parts = line.split('\x1b');
    out.push_str(parts.next().unwrap_or_default());
    for part in parts {
        out.push_str(part.split_once('m').map_or("", |(_, rest)| rest));
    }
    out
}

/// The first audit record releasing `secret` at `version`: its time.
fn released_at(b: &Broker, secret: &str, version: u64) -> SystemTime {
    let mut at = None;
    let found = wait_for(DEADLINE, || {
        at = b
            .audit_records()
            .iter()
            .filter(|r| r.event == "grant" || r.event == "renew")
            .filter(|r| {
                r.json["secrets"].as_array().is_some_and(|s| {
                    s.iter()
                        .any(|s| s["secret"] == secret && s["version"].as_u64() == Some(version))
                })
            })
            .map(|r| r.ts)
            .min();
        at.is_some()
    });
    assert!(
        found,
        "no grant or renew of {secret} version {version}:\n{}",
        b.audit_text()
    );
    at.unwrap()
}

fn assert_no_values(b: &Broker, extra: &Path, values: &[&[u8]]) {
    for needle in values {
        for dir in [b.dir.path(), extra] {
            let hits = files_containing(dir, needle);
            assert!(
                hits.is_empty(),
                "a value ({}) reached {hits:?}",
                String::from_utf8_lossy(needle)
            );
        }
    }
}

#[test]
fn v3_values_reach_exec_and_the_sidecar_and_a_rotation_arrives_within_one_ttl() {
    let etcd = Etcd::start(false);
    let work = tempfile::tempdir().unwrap();
    let gpg = keys(work.path());
    etcd.put_v3("/app/db", &gpg.crypt_encode(EMAIL, &json(PW), false));
    etcd.put_v3("/app/token", &gpg.crypt_encode(EMAIL, TOKEN, false));
    let b = broker(
        &crypt_config(&etcd.url, "v3", &work.path().join("secring.asc")),
        &grants("3s"),
    );

    // A JSON value's fields are keys; a plain value is the key `value`.
    let Ran {
        code,
        stdout: out,
        stderr: err,
    } = b.exec_printf("app", "DB_PASSWORD");
    assert_eq!(code, Some(0), "{err}\n{}", b.log_text());
    assert_eq!(out, PW);
    let Ran {
        code,
        stdout: out,
        stderr: err,
    } = b.exec_printf("app", "TOKEN");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, TOKEN);

    // A running sidecar gets the file, then the rotation within one ttl
    // (3 s) of the broker's watch seeing it, by the product's own clocks:
    // the watch's log stamp, the audit's release of the new version, the
    // sidecar's "secrets updated".
    let secrets = shm_dir("crypt-rotate");
    let file = secrets.path().join("db/password");
    let mut sidecar = b.spawn_sidecar("app", secrets.path());
    let sidecar_log = b.sidecar_log("app");
    assert!(
        wait_for(DEADLINE, || std::fs::read(&file).is_ok_and(|v| v == PW)),
        "no delivery:\n{}\n--- broker:\n{}",
        std::fs::read_to_string(&sidecar_log).unwrap_or_default(),
        b.log_text()
    );
    let revision = etcd.put_v3("/app/db", &gpg.crypt_encode(EMAIL, &json(ROTATED), false));
    assert!(
        wait_for(DEADLINE, || std::fs::read(&file)
            .is_ok_and(|v| v == ROTATED)),
        "rotation not seen:\n{}",
        b.log_text()
    );
    let changed = watch_seen(&b, "/app/db", revision);
    let released = released_at(&b, "app/db", revision);
    let took = released.duration_since(changed).unwrap_or_default();
    assert!(
        took <= Duration::from_secs(3),
        "the new version was released {took:?} after the watch saw it (ttl 3s):\n{}",
        b.audit_text()
    );
    let log = std::fs::read_to_string(&sidecar_log).unwrap();
    let took = logged_after(&log, "secrets updated", changed);
    assert!(
        took <= Duration::from_secs(3) + Duration::from_secs(1),
        "the rotation reached the sidecar {took:?} after the watch saw it (ttl 3s):\n{log}"
    );
    sigterm(&mut sidecar);

    // Read-only: Crypt's values are written with `crypt set`.
    let out = run_stdin(
        b.cmd().args(["secret", "put", "app/other", "password=-"]),
        b"never-stored-1f",
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("crypt set"),
        "{}",
        text(&out.stderr)
    );

    assert_no_values(&b, etcd.dir.path(), &[PW, ROTATED, TOKEN]);
}

#[test]
fn v2_keys_api_curve25519_keys_toml_values_and_their_rotation() {
    let etcd = Etcd::start(true);
    let work = tempfile::tempdir().unwrap();
    // Current GnuPG's kind of key here (the v3 test uses RSA, as Crypt's
    // Go library made them).
    register_values();
    let gpg = Gpg::new();
    gpg.generate_curve25519(EMAIL);
    gpg.export_secret(EMAIL, &work.path().join("secring.asc"));
    // base64(1)'s wrapped lines, as a shell user would store them.
    etcd.set_v2(
        "/app/db",
        &gpg.crypt_encode(EMAIL, &toml_value(TOML_PW), true),
    );
    etcd.set_v2("/app/token", &gpg.crypt_encode(EMAIL, TOKEN, true));
    let b = broker(
        &crypt_config(&etcd.url, "v2", &work.path().join("secring.asc")),
        &grants("3s"),
    );
    let Ran {
        code,
        stdout: out,
        stderr: err,
    } = b.exec_printf("app", "DB_PASSWORD");
    assert_eq!(code, Some(0), "{err}\n{}", b.log_text());
    assert_eq!(out, TOML_PW);
    let Ran {
        code,
        stdout: out,
        stderr: err,
    } = b.exec_printf("app", "TOKEN");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, TOKEN);

    // The v2 watch (?wait=true) drops the cached copy: a later exec sees
    // the new value.
    let secrets = shm_dir("crypt-v2");
    let file = secrets.path().join("db/password");
    let mut sidecar = b.spawn_sidecar("app", secrets.path());
    assert!(
        wait_for(DEADLINE, || std::fs::read(&file)
            .is_ok_and(|v| v == TOML_PW)),
        "no delivery:\n{}",
        b.log_text()
    );
    etcd.set_v2(
        "/app/db",
        &gpg.crypt_encode(EMAIL, &toml_value(TOML_ROTATED), true),
    );
    assert!(
        wait_for(DEADLINE, || std::fs::read(&file)
            .is_ok_and(|v| v == TOML_ROTATED)),
        "rotation not seen:\n{}",
        b.log_text()
    );
    assert!(
        b.log_text()
            .lines()
            .any(|l| strip_ansi(l).contains("etcd key changed")
                && strip_ansi(l).contains("event=\"set\"")),
        "the v2 watch logged no change:\n{}",
        b.log_text()
    );
    sigterm(&mut sidecar);
    let Ran {
        code,
        stdout: out,
        stderr: _,
    } = b.exec_printf("app", "DB_PASSWORD");
    assert_eq!((code, out.as_slice()), (Some(0), TOML_ROTATED));
    assert_no_values(&b, etcd.dir.path(), &[TOML_PW, TOML_ROTATED, TOKEN]);
}

/// One grant of `secret` key `value` as env VALUE.
fn one_grant(secret: &str) -> String {
    format!("[[grant]]\nsecret = \"{secret}\"\nkey = \"value\"\nenv = \"VALUE\"\nttl = \"30s\"\n")
}

#[test]
fn a_wrong_keyring_a_corrupt_value_and_etcd_away_each_name_the_key_and_the_reason() {
    let etcd = Etcd::start(false);
    let work = tempfile::tempdir().unwrap();
    let gpg = keys(work.path());
    gpg.generate(OTHER);
    // Encrypted to another key than the broker's keyring holds.
    etcd.put_v3("/app/wrong", &gpg.crypt_encode(OTHER, WRONG, false));
    // Not base64; base64 but not OpenPGP; a valid message whose content is not gzip.
    etcd.put_v3("/app/garbage", b"%%% not base64 %%%");
    etcd.put_v3("/app/notpgp", b"aGVsbG8gd29ybGQ=");
    etcd.put_v3("/app/nogzip", &gpg.encode_without_gzip(EMAIL, WRONG));
    let config = crypt_config(&etcd.url, "v3", &work.path().join("secring.asc"));
    let cases = [
        ("app/wrong", "none matches"),
        ("app/garbage", "not base64"),
        ("app/notpgp", "not an OpenPGP message"),
        ("app/nogzip", "not gzip"),
    ];
    for (secret, reason) in cases {
        let key = format!("/{secret}");
        let b = broker(&config, &one_grant(secret));
        let Ran {
            code,
            stdout: out,
            stderr: err,
        } = b.exec_printf("app", "VALUE");
        assert_eq!(code, Some(unbaked_api::exit::UNAVAILABLE), "{err}");
        assert!(out.is_empty());
        assert!(
            err.contains(&format!("etcd key {key}")) && err.contains(reason),
            "the error names neither the key nor why: {err}"
        );
        assert!(err.contains(&etcd.url), "{err}");
        assert_no_values(&b, etcd.dir.path(), &[WRONG]);
    }
    // Control: the same broker and keyring read a value encrypted to them.
    etcd.put_v3("/app/wrong", &gpg.crypt_encode(EMAIL, WRONG, false));
    let b = broker(&config, &one_grant("app/wrong"));
    let Ran {
        code,
        stdout: out,
        stderr: err,
    } = b.exec_printf("app", "VALUE");
    assert_eq!((code, out.as_slice()), (Some(0), WRONG), "{err}");

    // etcd away: a port nobody listens on.
    let away = format!("http://127.0.0.1:{}", free_port());
    let b = broker(
        &crypt_config(&away, "v3", &work.path().join("secring.asc")),
        &one_grant("app/wrong"),
    );
    let Ran {
        code,
        stdout: _,
        stderr: err,
    } = b.exec_printf("app", "VALUE");
    assert_eq!(code, Some(unbaked_api::exit::UNAVAILABLE), "{err}");
    assert!(
        err.contains("etcd key /app/wrong")
            && err.contains(&away)
            && err.contains("no etcd endpoint answered"),
        "{err}"
    );
}

#[test]
fn a_keyring_others_may_read_is_refused_at_start() {
    let work = tempfile::tempdir().unwrap();
    let _gpg = keys(work.path());
    let ring = work.path().join("secring.asc");
    let config = work.path().join("broker.toml");
    // Nothing listens there: the keyring is judged before etcd is asked.
    std::fs::write(
        &config,
        crypt_config(&format!("http://127.0.0.1:{}", free_port()), "v3", &ring),
    )
    .unwrap();
    let start = || {
        let dir = tempfile::tempdir().unwrap();
        let pol = dir.path().join("policies");
        std::fs::create_dir(&pol).unwrap();
        std::fs::write(
            pol.join("app.toml"),
            host_policy("app", &one_grant("app/x")),
        )
        .unwrap();
        let mut child = std::process::Command::new(BIN)
            .arg("broker")
            .arg("--config")
            .arg(&config)
            .arg("--socket")
            .arg(dir.path().join("s.sock"))
            .arg("--policies")
            .arg(&pol)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let socket = dir.path().join("s.sock");
        let settled = wait_for(DEADLINE, || {
            matches!(child.try_wait(), Ok(Some(_)))
                || daemon::http(&socket, "GET /v1/health HTTP/1.1", b"")
                    .is_ok_and(|a| a.status == 200)
        });
        assert!(settled, "the broker neither exited nor answered");
        match child.try_wait().unwrap() {
            Some(status) => {
                let mut err = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
                (status.code(), err)
            }
            None => {
                end(&mut Some(child), nix::sys::signal::Signal::SIGTERM);
                (None, String::new())
            }
        }
    };
    // Control: mode 0400 starts.
    let (code, err) = start();
    assert_eq!(
        code, None,
        "the broker did not start with a 0400 keyring: {err}"
    );
    std::fs::set_permissions(&ring, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (code, err) = start();
    assert_eq!(code, Some(unbaked_api::exit::FAILURE), "{err}");
    assert!(
        err.contains(&ring.display().to_string()) && err.contains("chmod 0400"),
        "{err}"
    );
    // Owned by someone else.
    std::fs::set_permissions(&ring, std::fs::Permissions::from_mode(0o400)).unwrap();
    nix::unistd::chown(&ring, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let (code, err) = start();
    assert_eq!(code, Some(unbaked_api::exit::FAILURE), "{err}");
    assert!(err.contains("owned by uid 65534"), "{err}");
}
