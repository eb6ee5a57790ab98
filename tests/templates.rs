//! Templates end to end: a broker renders `[[template]]` items, the
//! sidecar writes them to tmpfs and `unbaked exec` hands them to a process,
//! byte for byte, with no value in a log or the audit file.
mod util;
use std::time::Duration;
use util::*;

/// Every character a .env, JSON or YAML writer must take care of.
const HARD: &[u8] = b"it's \"$HOME\" `id` \\n\nline2 <&> tmpl-pw-6a1f";
const TOKEN: &[u8] = b"tmpl-token-93c2";

fn policy(ttl: &str) -> String {
    host_policy(
        "tmpl",
        &format!(
            r#"
[[template]]
file = "app.env"
format = "env"
values = {{ DB_PASSWORD = "app/db#password", API_TOKEN = "app/api#token" }}
ttl = "{ttl}"

[[template]]
file = "conf/app.json"
format = "json"
values = {{ password = "app/db#password" }}
ttl = "{ttl}"

[[template]]
file = "app.yaml"
format = "yaml"
values = {{ password = "app/db#password" }}
ttl = "{ttl}"

[[template]]
file = "db.conf"
mode = 0o440
ttl = "{ttl}"
contents = '''
{{{{- with secret "secret/data/app/db" }}}}
{{{{- range $k, $v := .Data.data }}}}
{{{{ $k }}}}={{{{ $v }}}}
{{{{- end }}}}
json={{{{ .Data.data | toJSON }}}}
version={{{{ .Data.metadata.version }}}}
{{{{ end -}}}}
'''

[[template]]
env = "DB_URL"
contents = '{{{{ with secret "secret/data/app/db" }}}}postgres://{{{{ .Data.data.user }}}}@db/app{{{{ end }}}}'

[[template]]
fd = "CONFIG_FILE"
format = "json"
values = {{ token = "app/api#token" }}
"#
        ),
    )
}

fn broker(ttl: &str) -> Broker {
    let b = Broker::start(&[("tmpl.toml", &policy(ttl))]);
    b.put_many("app/db", &[("password", HARD), ("user", b"app")]);
    b.put("app/api", "token", TOKEN);
    b
}

fn no_value_in(b: &Broker) {
    for needle in [&b"tmpl-pw-6a1f"[..], TOKEN] {
        let n = String::from_utf8_lossy(needle);
        assert!(!b.log_text().contains(&*n), "value in the broker log");
        assert!(!b.audit_text().contains(&*n), "value in the audit file");
    }
}

#[test]
fn sidecar_writes_every_format_byte_for_byte() {
    let b = broker("10m");
    let secrets = shm_dir("tmpl-once");
    let out = output(
        b.cmd()
            .args(["sidecar", "--workload", "tmpl", "--once", "--dir"])
            .arg(secrets.path()),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let read = |p: &str| std::fs::read(secrets.path().join(p)).unwrap();

    let mut env = b"API_TOKEN='tmpl-token-93c2'\nDB_PASSWORD='it'\\''s \"$HOME\" `id` \\n\nline2 <&> tmpl-pw-6a1f'\n".to_vec();
    assert_eq!(text(&read("app.env")), text(&env));
    // The shell reads the values back exactly.
    let sourced = output(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(". \"$1\"; printf %s \"$DB_PASSWORD\"")
            .arg("sh")
            .arg(secrets.path().join("app.env")),
    );
    assert_eq!(sourced.stdout, HARD);
    env.clear();

    let json: serde_json::Value = serde_json::from_slice(&read("conf/app.json")).unwrap();
    assert_eq!(json["password"].as_str().unwrap().as_bytes(), HARD);
    assert!(text(&read("conf/app.json")).contains("\\u003c\\u0026\\u003e"));
    assert_eq!(
        text(&read("app.yaml")),
        "\"password\": \"it's \\\"$HOME\\\" `id` \\\\n\\nline2 <&> tmpl-pw-6a1f\"\n"
    );
    assert_eq!(
        text(&read("db.conf")),
        "\npassword=it's \"$HOME\" `id` \\n\nline2 <&> tmpl-pw-6a1f\nuser=app\n\
         json={\"password\":\"it's \\\"$HOME\\\" `id` \\\\n\\nline2 \\u003c\\u0026\\u003e tmpl-pw-6a1f\",\"user\":\"app\"}\n\
         version=1\n"
    );
    use std::os::unix::fs::MetadataExt;
    let mode = std::fs::metadata(secrets.path().join("db.conf"))
        .unwrap()
        .mode();
    assert_eq!(mode & 0o777, 0o440);
    // Env and fd templates are not the sidecar's.
    let mut names: Vec<String> = std::fs::read_dir(secrets.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["app.env", "app.yaml", "conf", "db.conf"]);
    // The audit names each template's secrets and version, never a value.
    let audit = b.audit_text();
    assert!(audit.contains("\"id\":\"file:app.env\""), "{audit}");
    assert!(audit.contains("app/api#token, app/db#password"), "{audit}");
    no_value_in(&b);
}

#[test]
fn exec_receives_env_and_fd_templates() {
    let b = broker("10m");
    let out = output(b.cmd().args([
        "exec",
        "--workload",
        "tmpl",
        "--",
        "sh",
        "-c",
        "printf '%s|' \"$DB_URL\"; cat \"$CONFIG_FILE\"",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "postgres://app@db/app|{\n  \"token\": \"tmpl-token-93c2\"\n}\n"
    );
    no_value_in(&b);
}

#[test]
fn a_rotation_rerenders_within_the_ttl() {
    let b = broker("2s");
    let secrets = shm_dir("tmpl-rotate");
    let sidecar = b
        .cmd()
        .args(["sidecar", "--workload", "tmpl", "--dir"])
        .arg(secrets.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let env = secrets.path().join("app.env");
    let has = |needle: &str| {
        std::fs::read(&env)
            .map(|b| text(&b).contains(needle))
            .unwrap_or(false)
    };
    let first = wait_for(Duration::from_secs(10), || has("tmpl-token-93c2"));
    b.put("app/api", "token", b"tmpl-token-r0tated");
    let rotated = first && wait_for(Duration::from_secs(10), || has("tmpl-token-r0tated"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sidecar.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = sidecar.wait_with_output().unwrap();
    assert!(first && rotated, "sidecar log: {}", text(&out.stderr));
    assert!(!env.exists(), "wiped on SIGTERM");
}

#[test]
fn a_missing_secret_is_a_denial_naming_the_template() {
    let b = Broker::start(&[("tmpl.toml", &policy("10m"))]);
    b.put("app/api", "token", TOKEN);
    let secrets = shm_dir("tmpl-missing");
    let out = output(
        b.cmd()
            .args(["sidecar", "--workload", "tmpl", "--once", "--dir"])
            .arg(secrets.path()),
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("read by template file:app.env"), "{err}");
    assert!(err.contains("secret.missing"), "{err}");
}

/// `on_change = "command"` runs once per change of content: not on the
/// first delivery, not on a renewal that renders the same bytes.
#[test]
fn a_change_runs_the_command_once_and_an_identical_render_does_not() {
    let marker_dir = shm_dir("tmpl-marker");
    let marker = marker_dir.path().join("ran");
    let policy = host_policy(
        "act",
        &format!(
            r#"
[[template]]
file = "app.env"
format = "env"
values = {{ API_TOKEN = "app/api#token" }}
ttl = "2s"
on_change = "command"
command = ["sh", "-c", "echo ran >> {}"]
debounce = "0s"
"#,
            marker.display()
        ),
    );
    let b = Broker::start(&[("act.toml", &policy)]);
    b.put("app/api", "token", TOKEN);
    let secrets = shm_dir("tmpl-act");
    let sidecar = b
        .cmd()
        .args(["sidecar", "--workload", "act", "--dir"])
        .arg(secrets.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let renewals = || b.audit_text().matches("\"event\":\"renew\"").count();
    let lines = || {
        std::fs::read_to_string(&marker)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let env = secrets.path().join("app.env");
    let delivered = wait_for(Duration::from_secs(10), || env.exists());
    // Two renewals with the same content: nothing runs.
    let quiet = delivered && wait_for(Duration::from_secs(10), || renewals() >= 2);
    let before = lines();
    b.put("app/api", "token", b"tmpl-token-r0tated");
    let ran = wait_for(Duration::from_secs(10), || lines() == 1);
    let at = renewals();
    let settled = wait_for(Duration::from_secs(10), || renewals() >= at + 2);
    let after = lines();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sidecar.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = sidecar.wait_with_output().unwrap();
    let log = text(&out.stderr);
    assert!(delivered && quiet && ran && settled, "sidecar log: {log}");
    assert_eq!((before, after), (0, 1), "sidecar log: {log}");
    assert!(log.contains("content changed: action done"), "{log}");
    assert!(!log.contains("tmpl-token"), "a value in the sidecar log");
    assert!(!b.audit_text().contains("tmpl-token"));
}

fn exec_policy(action: &str) -> String {
    host_policy(
        "ex",
        &format!(
            r#"
[[template]]
env = "API_TOKEN"
contents = '{{{{ with secret "secret/data/app/api" }}}}{{{{ .Data.data.token }}}}{{{{ end }}}}'
ttl = "2s"
debounce = "0s"
{action}
"#
        ),
    )
}

/// `unbaked exec` stays the parent: on a change it signals its child (same
/// pid) or restarts it with the new value; SIGTERM reaches the child.
#[test]
fn exec_signals_or_restarts_its_child_on_a_change() {
    for (action, restart) in [
        ("on_change = \"signal\"\nsignal = \"SIGUSR1\"", false),
        ("on_change = \"restart\"", true),
    ] {
        let b = Broker::start(&[("ex.toml", &exec_policy(action))]);
        b.put("app/api", "token", TOKEN);
        let out_dir = shm_dir("tmpl-exec");
        let log = out_dir.path().join("log");
        // Each start appends "start PID TOKEN"; each SIGUSR1 "usr1 PID".
        let script = format!(
            "echo \"start $$ $API_TOKEN\" >> {log}; trap 'echo \"usr1 $$\" >> {log}' USR1; trap 'exit 7' TERM; while :; do sleep 0.05; done",
            log = log.display()
        );
        let mut shim = b
            .cmd()
            .args(["exec", "--workload", "ex", "--", "sh", "-c", &script])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let lines = || std::fs::read_to_string(&log).unwrap_or_default();
        let started = wait_for(Duration::from_secs(10), || lines().contains("start"));
        b.put("app/api", "token", b"tmpl-token-r0tated");
        let want = if restart {
            "tmpl-token-r0tated"
        } else {
            "usr1"
        };
        let acted = started && wait_for(Duration::from_secs(10), || lines().contains(want));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(shim.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = shim.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(shim.stderr.as_mut().unwrap(), &mut err).unwrap();
        let text = lines();
        assert!(acted, "{action}: child log {text:?}, shim log: {err}");
        let pids: Vec<&str> = text.lines().map(|l| l.split(' ').nth(1).unwrap()).collect();
        if restart {
            assert_eq!(text.matches("start").count(), 2, "{text}");
            assert_ne!(pids[0], pids[1], "restarted: a new process");
        } else {
            assert_eq!(text.matches("start").count(), 1, "{text}");
            assert!(
                pids.iter().all(|p| *p == pids[0]),
                "signalled: the same pid: {text}"
            );
        }
        // SIGTERM was forwarded; the shim exits with the child's status.
        assert_eq!(status.code(), Some(7), "{action}: {err}");
        assert!(!err.contains("tmpl-token"), "a value in the shim's log");
    }
}
