//! `on_change` on plain `[[grant]]`s, and a sidecar that has the broker
//! signal the app container beside it (`signal_container`), end to end:
//!
//! - a sidecar runs a file grant's command once per change of content,
//!   never on a renewal of the same bytes, never for a grant without one;
//! - `unbaked exec` signals its child when an env grant changes;
//! - on the real Docker Engine: a rotation of the sidecar's file has the
//!   broker send SIGHUP to the app container the policy names (once); a
//!   policy naming no container, another workload's container, or a
//!   process that does not hold the lease is refused with its rule and
//!   nothing is signalled.
mod util;
use util::daemon::http;
use util::docker::*;
use util::*;

const TOKEN: &[u8] = b"grant-act-token-5d1e";
const ROTATED: &[u8] = b"grant-act-token-r0tated";
const OTHER: &[u8] = b"grant-act-other-7b2c";
const OTHER_ROTATED: &[u8] = b"grant-act-other-r0tated";

fn lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

fn renewals(b: &Broker) -> usize {
    b.audit_text().matches("\"event\":\"renew\"").count()
}

fn term(child: std::process::Child) -> String {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    text(&child.wait_with_output().unwrap().stderr)
}

/// A file grant's `on_change = "command"` runs once per change of content:
/// not on the first delivery, not on renewals of the same value. The
/// control, a grant without `on_change` beside it, rotates and runs nothing.
#[test]
fn a_file_grant_runs_its_command_once_per_change() {
    let marker_dir = shm_dir("grant-marker");
    let marker = marker_dir.path().join("ran");
    let policy = host_policy(
        "gact",
        &format!(
            r#"
[[grant]]
secret = "app/api"
key = "token"
file = "token"
ttl = "2s"
on_change = "command"
command = ["sh", "-c", "echo ran >> {}"]
debounce = "0s"

[[grant]]
secret = "app/other"
key = "token"
file = "other"
ttl = "2s"
"#,
            marker.display()
        ),
    );
    let b = Broker::start(&[("gact.toml", &policy)]);
    b.put("app/api", "token", TOKEN);
    b.put("app/other", "token", OTHER);
    let secrets = shm_dir("grant-act");
    let sidecar = b
        .cmd()
        .args(["sidecar", "--workload", "gact", "--dir"])
        .arg(secrets.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let token = secrets.path().join("token");
    let other = secrets.path().join("other");
    let delivered = wait_for(DEADLINE, || token.exists() && other.exists());
    let quiet = delivered && wait_for(DEADLINE, || renewals(&b) >= 2);
    let before = lines(&marker);
    // The control: the grant without on_change rotates, and is rewritten.
    b.put("app/other", "token", OTHER_ROTATED);
    let control = wait_for(DEADLINE, || {
        std::fs::read(&other).is_ok_and(|v| v == OTHER_ROTATED)
    });
    let after_control = lines(&marker);
    b.put("app/api", "token", ROTATED);
    let ran = wait_for(DEADLINE, || lines(&marker) == 1);
    let rewritten = std::fs::read(&token).is_ok_and(|v| v == ROTATED);
    let at = renewals(&b);
    let settled = wait_for(DEADLINE, || renewals(&b) >= at + 2);
    let after = lines(&marker);
    let log = term(sidecar);
    assert!(
        delivered && quiet && control && ran && rewritten && settled,
        "sidecar log: {log}"
    );
    assert_eq!(
        (before, after_control, after),
        (0, 0, 1),
        "sidecar log: {log}"
    );
    assert!(log.contains("content changed: action done"), "{log}");
    assert!(
        log.contains("file:token"),
        "the action names its grant: {log}"
    );
    for v in ["grant-act-token", "grant-act-other"] {
        assert!(!log.contains(v), "a value in the sidecar log");
        assert!(!b.audit_text().contains(v), "a value in the audit");
    }
}

/// `unbaked exec` supervises its child for an env grant's `on_change`: a
/// change of the variable's value is a SIGUSR1 to the same process.
#[test]
fn exec_signals_its_child_when_an_env_grant_changes() {
    let policy = host_policy(
        "gexec",
        "[[grant]]\nsecret = \"app/api\"\nkey = \"token\"\nenv = \"API_TOKEN\"\nttl = \"2s\"\non_change = \"signal\"\nsignal = \"SIGUSR1\"\ndebounce = \"0s\"\n",
    );
    let b = Broker::start(&[("gexec.toml", &policy)]);
    b.put("app/api", "token", TOKEN);
    let out_dir = shm_dir("grant-exec");
    let log = out_dir.path().join("log");
    let script = format!(
        "echo \"start $$\" >> {log}; trap 'echo \"usr1 $$\" >> {log}' USR1; trap 'exit 7' TERM; while :; do sleep 0.05; done",
        log = log.display()
    );
    let shim = b
        .cmd()
        .args(["exec", "--workload", "gexec", "--", "sh", "-c", &script])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let started = wait_for(DEADLINE, || read().contains("start"));
    let quiet = started && wait_for(DEADLINE, || renewals(&b) >= 2);
    let before = read();
    b.put("app/api", "token", ROTATED);
    let signalled = quiet && wait_for(DEADLINE, || read().contains("usr1"));
    let err = term(shim);
    let text = read();
    assert!(signalled, "child log {text:?}, shim log: {err}");
    assert!(
        !before.contains("usr1"),
        "signalled before any change: {before}"
    );
    let pids: Vec<&str> = text.lines().map(|l| l.split(' ').nth(1).unwrap()).collect();
    assert!(pids.iter().all(|p| *p == pids[0]), "the same pid: {text}");
    assert!(
        !err.contains("grant-act-token"),
        "a value in the shim's log"
    );
}

/// An app container: busybox sh as pid 1, writing `hup` to its stdout on
/// each SIGHUP.
fn app(c: &mut Cleanup, name: &str, workload: &str) -> String {
    let name = c.container(&unique(name));
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        &format!("io.unbaked.workload={workload}"),
        test_image(),
        "trap 'echo hup' HUP; echo ready; while :; do sleep 0.1; done",
    ]);
    assert!(
        eventually(60, || docker_ok(&["logs", &name]).contains("ready")),
        "{name} did not start"
    );
    name
}

fn hups(name: &str) -> usize {
    docker_ok(&["logs", name]).matches("hup").count()
}

fn grant(workload: &str, action: &str) -> String {
    host_policy(
        workload,
        &format!("[[grant]]\nsecret = \"app/api\"\nkey = \"token\"\nfile = \"token\"\nttl = \"2s\"\ndebounce = \"0s\"\n{action}\n"),
    )
}

fn post(b: &Broker, path: &str, body: &str) -> util::daemon::Answer {
    http(&b.socket, &format!("POST {path} HTTP/1.1"), body.as_bytes()).unwrap()
}

/// This process's own lease of `workload`'s files.
fn fetch(b: &Broker, workload: &str) -> String {
    let a = post(
        b,
        "/v1/fetch",
        &format!("{{\"workload\":\"{workload}\",\"kinds\":[\"file\"]}}"),
    );
    assert_eq!(a.status, 200, "{}", a.status);
    let lease: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    lease["lease_id"].as_str().unwrap().to_string()
}

fn action(b: &Broker, lease: &str) -> util::daemon::Answer {
    post(
        b,
        "/v1/action",
        &format!("{{\"lease_id\":\"{lease}\",\"item\":\"file:token\"}}"),
    )
}

/// The sidecar never holds the engine's socket: on a rotation it asks the
/// broker, which signals the app container the policy names, once; a
/// renewal of the same value signals nothing. Refused, each with its rule
/// and with no signal sent: a policy naming no container (the control),
/// one naming another workload's container (the attack), and a process
/// that is not the lease's holder.
#[test]
fn a_sidecar_has_the_broker_signal_the_named_app_container() {
    require_engine();
    let mut c = Cleanup::default();
    let mine = app(&mut c, "gsig-app", "gsig");
    let theirs = app(&mut c, "gsig-victim", "victim");
    let signal = |container: &str| {
        format!("on_change = \"signal\"\nsignal = \"SIGHUP\"\nsignal_container = \"{container}\"")
    };
    let b = Broker::builder()
        .policies(&[
            ("gsig.toml", &grant("gsig", &signal(&mine))),
            (
                "unnamed.toml",
                &grant("unnamed", "on_change = \"signal\"\nsignal = \"SIGHUP\""),
            ),
            ("attack.toml", &grant("attack", &signal(&theirs))),
        ])
        .admin()
        .start();
    b.put("app/api", "token", TOKEN);
    let secrets = shm_dir("gsig");
    let sidecar = b
        .cmd()
        .args(["sidecar", "--workload", "gsig", "--dir"])
        .arg(secrets.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let token = secrets.path().join("token");
    let quiet = wait_for(DEADLINE, || token.exists()) && wait_for(DEADLINE, || renewals(&b) >= 2);
    let before = hups(&mine);
    b.put("app/api", "token", ROTATED);
    let signalled = quiet && eventually(60, || hups(&mine) == 1);
    let at = renewals(&b);
    let settled = wait_for(DEADLINE, || renewals(&b) >= at + 3);
    let once = hups(&mine);

    // Not the holder: this process asks for the sidecar's lease.
    let held = b
        .audit_records()
        .iter()
        .find(|r| r.event == "grant" && r.json["workload"] == "gsig")
        .and_then(|r| r.lease().map(str::to_string))
        .unwrap();
    let not_holder = action(&b, &held);
    // The control: the policy names no container.
    let unnamed = action(&b, &fetch(&b, "unnamed"));
    // The attack: the policy names another workload's container.
    let attack = action(&b, &fetch(&b, "attack"));
    let metrics = b.metrics();
    let log = term(sidecar);

    assert!(
        signalled && settled,
        "app signalled {} times; sidecar log: {log}\nbroker log: {}",
        hups(&mine),
        b.log_text()
    );
    assert_eq!((before, once), (0, 1), "sidecar log: {log}");
    for (a, rule) in [
        (&not_holder, "action.holder"),
        (&unnamed, "action.not_named"),
        (&attack, "action.container"),
    ] {
        assert_eq!(a.status, 403, "{rule}: {}", a.body);
        assert!(a.body.contains(rule), "{rule}: {}", a.body);
    }
    assert_eq!(
        (hups(&mine), hups(&theirs)),
        (1, 0),
        "nothing more was signalled"
    );
    let denied: Vec<String> = b
        .audit_records()
        .iter()
        .filter(|r| r.event == "deny")
        .filter_map(|r| r.json["rule"].as_str().map(str::to_string))
        .collect();
    for rule in ["action.holder", "action.not_named", "action.container"] {
        assert!(
            denied.iter().any(|r| r == rule),
            "{rule} audited: {denied:?}"
        );
    }
    let id = docker_ok(&["inspect", "-f", "{{.Id}}", &mine]);
    let done: Vec<_> = b
        .audit_records()
        .into_iter()
        .filter(|r| r.event == "action")
        .collect();
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].json["container"]["id"], id.as_str());
    assert_eq!(done[0].json["action"]["item"], "file:token");
    assert_eq!(done[0].json["action"]["result"], "ok");
    // Whoever asked is on the record: the sidecar that holds the lease.
    let granted = b
        .audit_records()
        .into_iter()
        .find(|r| r.event == "grant" && r.lease() == Some(held.as_str()))
        .unwrap();
    assert!(done[0].json["caller"]["pid"]
        .as_u64()
        .is_some_and(|p| p > 0));
    assert_eq!(done[0].json["caller"], granted.json["caller"]);
    assert!(done[0].json["request_id"].is_string(), "{done:?}");
    assert_eq!(
        counter(
            &metrics,
            "unbaked_actions_total",
            &["workload=\"gsig\"", "result=\"ok\""]
        ),
        1,
        "{metrics}"
    );
    assert!(!log.contains("grant-act-token") && !b.log_text().contains("grant-act-token"));

    // Pacing on the broker's side: this process holds a gsig lease of its
    // own and asks twice in a row. The first signals; the second, within
    // the window (1 s: the grant's debounce is 0 s), is refused whatever
    // the client does. The control: once the window has passed, the same
    // ask signals again.
    let own = fetch(&b, "gsig");
    let first = action(&b, &own);
    let second = action(&b, &own);
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(second.status, 403, "{}", second.body);
    assert!(second.body.contains("action.rate"), "{}", second.body);
    assert!(eventually(60, || hups(&mine) == 2), "{}", b.log_text());
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let later = action(&b, &own);
    assert_eq!(later.status, 200, "{}", later.body);
    assert!(eventually(60, || hups(&mine) == 3), "{}", b.log_text());
    assert!(
        b.audit_records()
            .iter()
            .any(|r| r.event == "deny" && r.json["rule"] == "action.rate"),
        "action.rate audited"
    );
}
