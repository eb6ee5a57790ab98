//! `--store file`: secrets survive restarts and crashes, sealed on disk
//! under the operator's key; a wrong, missing or loose key is refused with
//! nothing changed on disk.
mod util;
use std::ffi::OsStr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use unbaked_broker::store::file::{FileStore, LOG};
use unbaked_broker::store::key;
use util::*;

const TOKEN: &[u8] = b"file-store-token-7d41c2";

impl StoreDir {
    fn broker(&self, policies: &[(&str, &str)]) -> Broker {
        Broker::start_with_args(policies, &self.args())
    }
}

fn get(b: &Broker, path: &str, key: &str) -> Option<Vec<u8>> {
    let out = output(b.cmd().args(["secret", "get", path, key]));
    out.status.success().then_some(out.stdout)
}

fn api_policy() -> String {
    host_policy(
        "api",
        "[[grant]]\nsecret = \"app/api\"\nkey = \"token\"\nenv = \"API_TOKEN\"\n",
    )
}

#[test]
fn secrets_survive_a_restart_sealed_on_disk() {
    let s = StoreDir::new("unbaked-file-store-");
    let meta = std::fs::metadata(&s.key).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o400, "init-key writes 0400");
    let policy = api_policy();
    let mut b = s.broker(&[("api.toml", &policy)]);
    b.put("app/api", "token", b"first-version-of-the-token");
    b.put("app/api", "token", TOKEN);
    b.put_many(
        "app/db",
        &[("user", b"dbuser-3a9f"), ("password", b"dbpass-51c2e8")],
    );
    b.stop();
    assert_eq!(
        std::fs::metadata(&s.dir).unwrap().mode() & 0o777,
        0o700,
        "the store directory is the broker's alone"
    );

    let b = s.broker(&[("api.toml", &policy)]);
    assert_eq!(get(&b, "app/api", "token").as_deref(), Some(TOKEN));
    assert_eq!(
        get(&b, "app/db", "password").as_deref(),
        Some(&b"dbpass-51c2e8"[..])
    );
    let meta = output(b.cmd().args(["secret", "get", "app/api"]));
    assert!(
        text(&meta.stdout).contains("version 2"),
        "{}",
        text(&meta.stdout)
    );
    // A workload gets the value through the ordinary grant path.
    let out = output(b.cmd().args([
        "exec",
        "--workload",
        "api",
        "--",
        "sh",
        "-c",
        "printf %s \"$API_TOKEN\"",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout, TOKEN);
    assert!(
        b.log_text().contains("file store opened"),
        "{}",
        b.log_text()
    );

    // Nothing the broker wrote holds a value, a key name or a path in clear.
    for needle in [
        TOKEN,
        b"first-version-of-the-token",
        b"dbpass-51c2e8",
        b"dbuser-3a9f",
        b"app/api",
        b"password",
    ] {
        assert_eq!(
            files_containing(&s.dir, needle),
            Vec::<PathBuf>::new(),
            "{} in clear",
            text(needle)
        );
    }
    // The control: the search finds what is there
    // (on tmpfs: a value in clear never goes to disk, not even a test's).
    let shm = shm_dir("file-store-control");
    let plain = shm.path().join("plain");
    std::fs::write(&plain, TOKEN).unwrap();
    assert_eq!(files_containing(shm.path(), TOKEN), vec![plain]);
}

fn refs(v: &[std::ffi::OsString]) -> Vec<&OsStr> {
    v.iter().map(|a| a.as_os_str()).collect()
}

/// Every file in `dir` with its bytes, mode, and modification time.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>, u32, i64, i64)> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let bytes = if m.is_file() {
                std::fs::read(&p).unwrap()
            } else {
                vec![]
            };
            out.push((p, bytes, m.mode(), m.mtime(), m.mtime_nsec()));
        }
    }
    out.sort();
    out
}

/// Start a broker that must refuse; its stderr.
fn refused(s: &StoreDir, args: &[&OsStr], env: &[(&str, &OsStr)]) -> String {
    let policies = s.tmp.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    let socket = s.tmp.path().join("refused.sock");
    let mut child = Command::new(BIN)
        .arg("broker")
        .arg("--socket")
        .arg(&socket)
        .arg("--policies")
        .arg(&policies)
        .args(args)
        .env_remove("UNBAKED_STORE_KEY_FILE")
        .env_remove("CREDENTIALS_DIRECTORY")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("the broker did not refuse to start: {}", text(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(1), "{}", text(&out.stderr));
    assert!(!socket.exists(), "a refused broker does not listen");
    text(&out.stderr)
}

#[test]
fn a_wrong_missing_or_loose_key_is_refused_and_nothing_changes() {
    let s = StoreDir::new("unbaked-file-store-");
    let mut b = s.broker(&[]);
    b.put("app/api", "token", TOKEN);
    b.stop();
    let before = snapshot(&s.dir);
    assert!(before.iter().any(|(p, ..)| p.ends_with(LOG)));
    let with_key = |k: &Path| -> Vec<std::ffi::OsString> {
        vec![
            "--store".into(),
            "file".into(),
            "--store-dir".into(),
            s.dir.clone().into(),
            "--store-key-file".into(),
            k.into(),
        ]
    };

    // Another key.
    let other = s.tmp.path().join("other.key");
    assert!(output(Command::new(BIN).args([
        OsStr::new("store"),
        "init-key".as_ref(),
        other.as_os_str()
    ]))
    .status
    .success());
    let e = refused(&s, &refs(&with_key(&other)), &[]);
    assert!(
        e.contains("does not open")
            && e.contains("another key")
            && e.contains("nothing was changed"),
        "{e}"
    );
    assert_eq!(snapshot(&s.dir), before);

    // A key file that is not there.
    let e = refused(&s, &refs(&with_key(&s.tmp.path().join("absent.key"))), &[]);
    assert!(e.contains("absent.key") && e.contains("init-key"), "{e}");
    assert_eq!(snapshot(&s.dir), before);

    // No key at all.
    let no_key: Vec<&OsStr> = vec![
        "--store".as_ref(),
        "file".as_ref(),
        "--store-dir".as_ref(),
        s.dir.as_os_str(),
    ];
    let e = refused(&s, &no_key, &[]);
    assert!(
        e.contains("has no key") && e.contains("UNBAKED_STORE_KEY_FILE"),
        "{e}"
    );
    assert_eq!(snapshot(&s.dir), before);

    // The right key, readable by others.
    std::fs::set_permissions(&s.key, std::fs::Permissions::from_mode(0o444)).unwrap();
    let e = refused(&s, &refs(&with_key(&s.key)), &[]);
    assert!(e.contains("chmod 0400") && e.contains("0444"), "{e}");
    assert_eq!(snapshot(&s.dir), before);
    std::fs::set_permissions(&s.key, std::fs::Permissions::from_mode(0o400)).unwrap();

    // The right key, owned by another ordinary user.
    nix::unistd::chown(&s.key, Some(nix::unistd::Uid::from_raw(1000)), None).unwrap();
    let e = refused(&s, &refs(&with_key(&s.key)), &[]);
    assert!(e.contains("owned by uid 1000"), "{e}");
    assert_eq!(snapshot(&s.dir), before);
    nix::unistd::chown(&s.key, Some(nix::unistd::Uid::from_raw(0)), None).unwrap();

    // A fresh directory with a missing key is not even created.
    let fresh = s.tmp.path().join("fresh-store");
    let e = refused(
        &s,
        &[
            "--store".as_ref(),
            "file".as_ref(),
            "--store-dir".as_ref(),
            fresh.as_os_str(),
            "--store-key-file".as_ref(),
            s.tmp.path().join("absent.key").as_os_str(),
        ],
        &[],
    );
    assert!(e.contains("init-key"), "{e}");
    assert!(!fresh.exists());

    // The control: the right key, back in shape, opens it unchanged.
    let b = s.broker(&[]);
    assert_eq!(get(&b, "app/api", "token").as_deref(), Some(TOKEN));
}

/// `UNBAKED_STORE_KEY_FILE` and `$CREDENTIALS_DIRECTORY/unbaked-store-key`
/// each name the key when no flag does.
#[test]
fn the_key_from_the_environment_or_a_systemd_credential() {
    let s = StoreDir::new("unbaked-file-store-");
    let mut b = s.broker(&[]);
    b.put("app/api", "token", TOKEN);
    b.stop();
    let creds = s.tmp.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    std::fs::copy(&s.key, creds.join("unbaked-store-key")).unwrap();
    std::fs::set_permissions(
        creds.join("unbaked-store-key"),
        std::fs::Permissions::from_mode(0o400),
    )
    .unwrap();
    for (var, value) in [
        ("UNBAKED_STORE_KEY_FILE", s.key.as_os_str()),
        ("CREDENTIALS_DIRECTORY", creds.as_os_str()),
    ] {
        let socket = s.tmp.path().join("env.sock");
        let policies = s.tmp.path().join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        let mut child = Command::new(BIN)
            .args(["broker", "--store", "file", "--store-dir"])
            .arg(&s.dir)
            .arg("--socket")
            .arg(&socket)
            .arg("--policies")
            .arg(&policies)
            .env_remove("UNBAKED_STORE_KEY_FILE")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env(var, value)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let up = wait_for(Duration::from_secs(15), || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
                || child.try_wait().ok().flatten().is_some()
        });
        let got = output(unbaked(&socket).args(["secret", "get", "app/api", "token"]));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let out = child.wait_with_output().unwrap();
        assert!(up, "{var}: the broker did not start: {}", text(&out.stderr));
        assert_eq!(
            got.stdout,
            TOKEN,
            "{var}: {}{}",
            text(&got.stderr),
            text(&out.stderr)
        );
    }
}

/// A tiny deterministic generator: the seed is printed, so a failing run
/// can be replayed with `UNBAKED_CRASH_SEED`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The CI run; `scripts/crash-store` runs 1,000 (`UNBAKED_STORE_KILLS`).
const DEFAULT_KILLS: usize = 60;

#[test]
fn a_broker_killed_at_random_moments_during_puts_loses_no_acknowledged_version() {
    let kills: usize = std::env::var("UNBAKED_STORE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_KILLS);
    let seed: u64 = std::env::var("UNBAKED_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("UNBAKED_CRASH_SEED={seed} UNBAKED_STORE_KILLS={kills}");
    let mut rng = Rng(seed);
    let s = StoreDir::new("unbaked-file-store-");
    let values = shm_dir("crash-values");
    // Every value ever sent carries this marker: one search finds any in clear.
    const MARK: &str = "CRASHVAL";
    let mut attempted: Vec<(String, String)> = vec![];
    let mut acked: Vec<(u64, String, String)> = vec![];
    let mut n = 0u64;
    for round in 0..kills {
        let b = s.broker(&[]);
        // The version the store holds must never go back past an acknowledged one.
        if let Some(&(last, ref a, _)) = acked.last() {
            let now = output(b.cmd().args(["secret", "get", "crash/rot"]));
            let line = text(&now.stdout);
            let v: u64 = line
                .split("version ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| {
                    panic!(
                        "round {round}: no version in {line:?}: {}",
                        text(&now.stderr)
                    )
                });
            assert!(
                v >= last,
                "round {round}: version {v} after acknowledged {last}"
            );
            if v == last {
                assert_eq!(get(&b, "crash/rot", "a").as_deref(), Some(a.as_bytes()));
            }
        }
        let pid = nix::unistd::Pid::from_raw(b.pid() as i32);
        let kill_after = Duration::from_millis(rng.next() % 250);
        let started = Instant::now();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(kill_after);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        });
        loop {
            n += 1;
            let a = format!("{MARK}-a-{n}-{:016x}", rng.next());
            let bv = format!("{MARK}-b-{n}-{:016x}", rng.next());
            let fa = values.path().join("a");
            let fb = values.path().join("b");
            std::fs::write(&fa, &a).unwrap();
            std::fs::write(&fb, &bv).unwrap();
            attempted.push((a.clone(), bv.clone()));
            let out = output(
                b.cmd()
                    .args(["secret", "put", "crash/rot"])
                    .arg(format!("a=@{}", fa.display()))
                    .arg(format!("b=@{}", fb.display())),
            );
            if !out.status.success() {
                break;
            }
            let line = text(&out.stdout);
            let v: u64 = line
                .split("version ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no version in {line:?}"));
            acked.push((v, a, bv));
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the broker was never killed"
            );
        }
        killer.join().unwrap();
        drop(b);
    }
    assert!(
        acked.len() >= kills / 2,
        "too few acknowledged puts to mean anything: {}",
        acked.len()
    );

    // Every acknowledged version is there, whole; every version there is
    // one that was sent, both keys of the same put; nothing in clear.
    let kept = check_versions(&s.dir, &s.key, &acked, &attempted).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        files_containing(&s.dir, MARK.as_bytes()),
        Vec::<PathBuf>::new()
    );
    // The controls: a log cut in the middle fails the check; the values
    // are where they were written in clear.
    let cut = s.tmp.path().join("cut");
    std::fs::DirBuilder::new().mode(0o700).create(&cut).unwrap();
    let log = std::fs::read(s.dir.join(LOG)).unwrap();
    std::fs::write(cut.join(LOG), &log[..log.len() / 2]).unwrap();
    let e = check_versions(&cut, &s.key, &acked, &attempted).unwrap_err();
    assert!(e.contains("is gone"), "{e}");
    // The control: the values are where they were written in clear.
    assert!(!files_containing(values.path(), MARK.as_bytes()).is_empty());
    eprintln!(
        "{kills} kills, {} puts sent, {} acknowledged, {} versions kept",
        attempted.len(),
        acked.len(),
        kept
    );
}

/// Every acknowledged put of the crash test is in the store at `dir`
/// whole, and every version there is one that was sent, both its keys from
/// the same put; the versions are contiguous. The number kept.
fn check_versions(
    dir: &Path,
    key_file: &Path,
    acked: &[(u64, String, String)],
    attempted: &[(String, String)],
) -> Result<usize, String> {
    let key = key::load(key_file, "test").map_err(|e| e.to_string())?;
    let store = FileStore::open_with_key(dir, key, "test", 0).map_err(|e| e.to_string())?;
    let mut by_version = std::collections::BTreeMap::new();
    for v in store.versions("crash/rot") {
        let (Some(a), Some(b), 2) = (v.data.get("a"), v.data.get("b"), v.data.len()) else {
            return Err(format!(
                "version {} has keys {:?}",
                v.version,
                v.data.keys()
            ));
        };
        by_version.insert(
            v.version,
            (a.expose_secret().to_vec(), b.expose_secret().to_vec()),
        );
    }
    for (v, a, b) in acked {
        let got = by_version
            .get(v)
            .ok_or_else(|| format!("acknowledged version {v} is gone"))?;
        if (&got.0[..], &got.1[..]) != (a.as_bytes(), b.as_bytes()) {
            return Err(format!("version {v} is not what was acknowledged"));
        }
    }
    let sent: std::collections::HashSet<(Vec<u8>, Vec<u8>)> = attempted
        .iter()
        .map(|(a, b)| (a.clone().into_bytes(), b.clone().into_bytes()))
        .collect();
    for (v, pair) in &by_version {
        if !sent.contains(pair) {
            return Err(format!(
                "version {v} holds a pair that was never sent together"
            ));
        }
    }
    let numbers: Vec<u64> = by_version.keys().copied().collect();
    if numbers != (1..=numbers.len() as u64).collect::<Vec<_>>() {
        return Err(format!("versions are not contiguous: {numbers:?}"));
    }
    Ok(numbers.len())
}

/// A broker of an ordinary uid keeps its store in a directory of its own;
/// the control: it cannot open root's.
#[test]
fn a_non_root_broker_keeps_its_own_store() {
    let s = StoreDir::new("unbaked-file-store-");
    let user = s.tmp.path().join("user");
    std::fs::create_dir(&user).unwrap();
    std::fs::set_permissions(s.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    nix::unistd::chown(
        &user,
        Some(nix::unistd::Uid::from_raw(1000)),
        Some(nix::unistd::Gid::from_raw(1000)),
    )
    .unwrap();
    let as_1000 = |args: &[&OsStr]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=1000", "--regid=1000", "--clear-groups"])
            .arg(BIN)
            .args(args)
            .env("HOME", "/")
            .env_remove("UNBAKED_STORE_KEY_FILE")
            .current_dir("/");
        c
    };
    let key = user.join("store.key");
    let out = output(&mut as_1000(&[
        "store".as_ref(),
        "init-key".as_ref(),
        key.as_os_str(),
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::metadata(&key).unwrap().uid(), 1000);
    let dir = user.join("store");
    let socket = user.join("broker.sock");
    let policies = user.join("policies");
    std::fs::create_dir(&policies).unwrap();
    let start = |store_dir: &Path| {
        as_1000(&[
            "broker".as_ref(),
            "--socket".as_ref(),
            socket.as_os_str(),
            "--policies".as_ref(),
            policies.as_os_str(),
            "--store".as_ref(),
            "file".as_ref(),
            "--store-dir".as_ref(),
            store_dir.as_os_str(),
            "--store-key-file".as_ref(),
            key.as_os_str(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let client = |args: &[&str], input: &[u8]| {
        let mut c = as_1000(&[]);
        c.args(args).env("UNBAKED_SOCKET", &socket);
        run_stdin(&mut c, input)
    };
    for round in 0..2 {
        let mut child = start(&dir);
        let up = wait_for(Duration::from_secs(15), || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
                || child.try_wait().ok().flatten().is_some()
        });
        if round == 0 {
            let out = client(&["secret", "put", "app/api", "token=-"], TOKEN);
            assert!(out.status.success(), "{}", text(&out.stderr));
        }
        let got = client(&["secret", "get", "app/api", "token"], b"");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let out = child.wait_with_output().unwrap();
        assert!(up, "{}", text(&out.stderr));
        assert_eq!(got.stdout, TOKEN, "round {round}: {}", text(&got.stderr));
        let _ = std::fs::remove_file(&socket);
    }
    assert_eq!(std::fs::metadata(&dir).unwrap().uid(), 1000);

    // Root's store directory is not the user's to open.
    let mut root_broker = s.broker(&[]);
    root_broker.put("app/api", "token", TOKEN);
    root_broker.stop();
    let mut child = start(&s.dir);
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "a non-root broker opened root's store"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let e = text(&out.stderr);
    assert!(
        !out.status.success() && e.contains(&s.dir.display().to_string()),
        "{e}"
    );
}

/// `unbaked secret export` from one broker and `import` into another:
/// OpenBao's KV v2 into the file store and back out into another OpenBao;
/// the export is sealed, a wrong key imports nothing.
#[test]
fn export_and_import_move_secrets_between_vault_and_the_file_store() {
    use util::bao::{vault_broker, Dev};
    let s = StoreDir::new("unbaked-file-store-");
    let values: [(&str, &str, &[u8]); 3] = [
        ("app/api", "token", b"migrate-token-41d9e3"),
        ("app/db", "password", b"migrate-dbpass-8c20ff"),
        ("other/x", "y", b"migrate-not-under-the-prefix"),
    ];
    let dev = Dev::start();
    let vault_env = |d: &Dev| {
        vec![
            ("VAULT_ADDR".to_string(), d.server.addr.clone()),
            ("VAULT_TOKEN".to_string(), "root".to_string()),
        ]
    };
    let env1 = vault_env(&dev);
    let env1: Vec<(&str, &str)> = env1.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let from = vault_broker(&[], "", &env1);
    for (p, k, v) in values {
        from.put(p, k, v);
    }
    let export = |b: &Broker, key: &Path| {
        output(
            b.cmd()
                .args(["secret", "export", "app/", "--key-file"])
                .arg(key),
        )
    };
    let out = export(&from, &s.key);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sealed = out.stdout;
    for (_, _, v) in values {
        assert!(
            !sealed.windows(v.len()).any(|w| w == v),
            "{} in clear",
            text(v)
        );
    }
    assert!(
        text(&out.stderr).contains("exported 2 secret(s)"),
        "{}",
        text(&out.stderr)
    );

    let mut to = s.broker(&[]);
    let other = s.tmp.path().join("other.key");
    assert!(output(Command::new(BIN).args([
        OsStr::new("store"),
        "init-key".as_ref(),
        other.as_os_str()
    ]))
    .status
    .success());
    let out = run_stdin(
        to.cmd()
            .args(["secret", "import", "--key-file"])
            .arg(&other),
        &sealed,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("another key"),
        "{}",
        text(&out.stderr)
    );
    let cut = run_stdin(
        to.cmd()
            .args(["secret", "import", "--key-file"])
            .arg(&s.key),
        &sealed[..sealed.len() - 41],
    );
    assert!(
        text(&cut.stderr).contains("cut short"),
        "{}",
        text(&cut.stderr)
    );
    assert!(
        text(&output(to.cmd().args(["secret", "list"])).stdout)
            .trim()
            .is_empty(),
        "nothing imported"
    );

    let out = run_stdin(
        to.cmd()
            .args(["secret", "import", "--key-file"])
            .arg(&s.key),
        &sealed,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("app/db: version 1"),
        "{}",
        text(&out.stdout)
    );
    to.stop();
    let to = s.broker(&[]);
    for (p, k, v) in &values[..2] {
        assert_eq!(get(&to, p, k).as_deref(), Some(*v), "{p} after a restart");
    }
    assert!(get(&to, "other/x", "y").is_none(), "only the prefix moved");

    // And out again, into another OpenBao.
    let out = export(&to, &s.key);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dev2 = Dev::start();
    let env2 = vault_env(&dev2);
    let env2: Vec<(&str, &str)> = env2.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let back = vault_broker(&[], "", &env2);
    let imported = run_stdin(
        back.cmd()
            .args(["secret", "import", "--key-file"])
            .arg(&s.key),
        &out.stdout,
    );
    assert!(imported.status.success(), "{}", text(&imported.stderr));
    let got = dev2.must(&["kv", "get", "-field=token", "secret/app/api"]);
    assert_eq!(got.trim().as_bytes(), values[0].2);
}
