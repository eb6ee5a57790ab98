//! User namespaces and a daemon-wide `--icc=false`, on a second Docker
//! Engine (`scripts/engine2`: `--userns-remap=default --icc=false`, in a
//! network namespace of its own), with controls on this machine's engine,
//! which runs with the defaults and is left so.
//!
//! Inside containers the tests print secrets reversed (`rev`), as
//! tests/docker.rs does.
mod util;
use util::docker::*;
use util::engine2::Engine2;
use util::*;

const DB: &[u8] = b"db-pw-userns-51c9e0";
const TOKEN: &[u8] = b"api-tok-userns-9d27aa";
const OWN: &[u8] = b"own-userns-77b1f4";

/// A workload matched by `app=W`: a file for whoever the container's
/// process is, a file owned by uid 1000 *inside* the container, one owned
/// by uid 2000 inside it, and an env var.
fn policy(w: &str, isolation: &str) -> String {
    label_policy(
        w,
        isolation,
        &format!(
            "{DB_FILE_GRANT}\n[[grant]]\nsecret = \"app/own\"\nkey = \"v\"\nfile = \"mine\"\nuid = 1000\ngid = 1000\nttl = \"1m\"\n\n\
             [[grant]]\nsecret = \"app/own\"\nkey = \"v\"\nfile = \"theirs\"\nuid = 2000\ngid = 2000\nttl = \"1m\"\n\n\
             [[grant]]\nsecret = \"app/api\"\nkey = \"token\"\nenv = \"API_TOKEN\"\n"
        ),
    )
}

const STRICT: &str = "[isolation]\nuser_namespace = true\n";

fn broker(host: Option<&str>, policies: &[(&str, &str)]) -> Broker {
    let mut b = Broker::builder().policies(policies);
    if let Some(h) = host {
        b = b.env("DOCKER_HOST", h);
    }
    let b = b.start();
    b.put("app/db", "password", DB);
    b.put("app/api", "token", TOKEN);
    b.put("app/own", "v", OWN);
    b
}

fn holds_secret(hay: &[u8]) -> bool {
    [DB, TOKEN, OWN]
        .iter()
        .any(|s| hay.windows(s.len()).any(|w| w == *s))
}

/// A container started by plain `docker run` (not `unbaked run`) whose
/// command is the shim asking for the env grant at fetch time.
fn plain(
    docker: std::process::Command,
    b: &Broker,
    w: &str,
    extra: &[&str],
) -> std::process::Output {
    let mut cmd = docker;
    let shim = static_binary().display().to_string();
    let socket = b.socket.display().to_string();
    cmd.args(["run", "--rm", "--read-only", "--label", &format!("app={w}")])
        .args(["--mount", &format!("type=bind,src={shim},dst=/u,readonly")])
        .args(["--mount", &format!("type=bind,src={socket},dst=/s.sock")])
        .args(extra)
        .args([
            IMAGE,
            &format!("/u --socket /s.sock exec --workload {w} -- /bin/sh -c 'printf %s \"$API_TOKEN\" | rev'"),
        ]);
    output(&mut cmd)
}

fn denied_by(b: &Broker, out: &std::process::Output, rule: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}\n{}", b.log_text());
    assert!(err.contains(rule), "{rule} not named: {err}");
    assert!(!holds_secret(&out.stdout) && !holds_secret(&out.stderr));
    assert!(
        b.audit_text().contains(&format!("\"rule\":\"{rule}\"")),
        "no denial audited with {rule}:\n{}",
        b.audit_text()
    );
}

#[test]
fn on_a_remapping_icc_false_engine_secrets_reach_only_remapped_isolated_containers() {
    // Checked before the engine starts: a missing binary fails first.
    let _ = static_binary();
    let mut e = Engine2::start();
    let w = unique("userns");
    let b = broker(Some(&e.host), &[("w.toml", &policy(&w, STRICT))]);
    let run2 = |args: &[&str]| {
        let mut c = run(&b, &w);
        c.env("DOCKER_HOST", &e.host).arg("--").args(args);
        output(&mut c)
    };

    // The engine remaps: root in its containers is uid 100000 on the host.
    let info = e.docker_ok(&["info", "--format", "{{json .SecurityOptions}}"]);
    assert!(info.contains("name=userns"), "{info}");

    // 1. Released under userns-remap, to a non-root user of the container:
    // its own file, and the file the policy gives uid 1000 (the container's
    // uid 1000, mapped through its uid_map); not uid 2000's (the control).
    let script = r#"echo "uid=$(id -u)"
printf 'map=%s\n' "$(cat /proc/self/uid_map | tr -s ' ')"
printf 'file=%s\n' "$(rev /run/secrets/db_password)"
printf 'mine=%s\n' "$(rev /run/secrets/mine)"
printf 'mine-owner=%s\n' "$(stat -c %u:%g /run/secrets/mine)"
if cat /run/secrets/theirs >/dev/null 2>&1; then echo theirs-readable; fi
printf 'theirs-owner=%s\n' "$(stat -c %u /run/secrets/theirs)"
printf 'env=%s\n' "$(printf %s "$API_TOKEN" | rev)""#;
    let out = run2(&["--rm", "--user", "1000:1000", IMAGE, script]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n{}",
        text(&out.stderr),
        b.log_text()
    );
    for want in [
        "uid=1000\n".to_string(),
        " 0 100000 65536\n".to_string(),
        format!("file={}\n", rev(DB)),
        format!("mine={}\n", rev(OWN)),
        "mine-owner=1000:1000\n".to_string(),
        "theirs-owner=2000\n".to_string(),
        format!("env={}\n", rev(TOKEN)),
    ] {
        assert!(stdout.contains(&want), "{want:?} not in:\n{stdout}");
    }
    assert!(!stdout.contains("theirs-readable"), "{stdout}");

    // 2. Refused at launch: --userns host leaves the remapping.
    let out = run2(&["--rm", "--userns", "host", IMAGE, "true"]);
    denied_by(&b, &out, "isolation.user_namespace");

    // 3. At fetch time, a container started by plain docker: the control
    // (remapped) gets its secret; with --userns host it gets nothing.
    let ok = plain(e.docker(), &b, &w, &[]);
    assert!(
        ok.status.success(),
        "{}\n{}",
        text(&ok.stderr),
        b.log_text()
    );
    assert_eq!(text(&ok.stdout), rev(TOKEN));
    let out = plain(e.docker(), &b, &w, &["--userns", "host"]);
    denied_by(&b, &out, "isolation.user_namespace");

    // 4. The daemon's --icc=false: `unbaked run` keeps containers on the
    // default bridge (no workload network), and they cannot reach each other.
    assert_eq!(
        e.docker_ok(&[
            "network",
            "inspect",
            "-f",
            "{{index .Options \"com.docker.network.bridge.enable_icc\"}}",
            "bridge"
        ]),
        "false"
    );
    let server = "exec nc -ll -p 8080 -e echo hello";
    let client = |ip: &str| format!("nc -w 3 {ip} 8080 </dev/null; echo rc=$?");
    let srv = unique("srv");
    let out = run2(&["-d", "--rm", "--name", &srv, IMAGE, server]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        wait_for(DEADLINE, || e.running(&srv)),
        "not within {DEADLINE:?}:\n{}",
        b.log_text()
    );
    let nets = e.docker_ok(&["inspect", "-f", "{{json .NetworkSettings.Networks}}", &srv]);
    assert!(
        nets.starts_with("{\"bridge\":") && !nets.contains("unbaked-"),
        "{nets}"
    );
    let ls = e.docker_ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(!ls.contains(&format!("unbaked-{w}")), "{ls}");
    let ip = e.docker_ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", &srv]);
    let out = run2(&["--rm", IMAGE, &client(&ip)]);
    let got = text(&out.stdout);
    assert!(out.status.success(), "{got}\n{}", text(&out.stderr));
    assert!(
        !got.contains("hello") && got.contains("rc=1"),
        "launched containers reached each other: {got}"
    );
    // The control: a pair on an ordinary network of the same engine reaches.
    e.docker_ok(&["network", "create", "ctl"]);
    e.docker_ok(&[
        "run",
        "-d",
        "--rm",
        "--name",
        "ctlsrv",
        "--network",
        "ctl",
        IMAGE,
        server,
    ]);
    assert!(wait_for(DEADLINE, || e.running("ctlsrv")), "{}", e.log());
    let ip = e.docker_ok(&[
        "inspect",
        "-f",
        "{{(index .NetworkSettings.Networks \"ctl\").IPAddress}}",
        "ctlsrv",
    ]);
    let got = e.docker_ok(&["run", "--rm", "--network", "ctl", IMAGE, &client(&ip)]);
    assert!(
        got.contains("hello"),
        "the control pair did not reach: {got}"
    );
    e.docker_ok(&["rm", "-f", &srv, "ctlsrv"]);

    // 5. Stopped, it leaves nothing; the main engine kept its defaults.
    drop(b);
    e.stop();
    assert_eq!(Engine2::leftovers(), Vec::<String>::new());
    require_engine();
    assert_eq!(
        docker_ok(&[
            "network",
            "inspect",
            "-f",
            "{{index .Options \"com.docker.network.bridge.enable_icc\"}}",
            "bridge"
        ]),
        "true"
    );
}

/// The control on this machine's engine (no remapping): a policy asking for
/// a user namespace is refused at launch and at fetch time; the same
/// container under a policy that does not ask gets its secret.
#[test]
fn on_an_engine_without_remapping_user_namespace_is_refused() {
    let _ = test_image();
    let (w, lax) = (unique("strict"), unique("lax"));
    let b = broker(
        None,
        &[
            ("strict.toml", &policy(&w, STRICT)),
            ("lax.toml", &policy(&lax, "")),
        ],
    );
    let out = output(run(&b, &w).args(["--", "--rm", "--network", "none", IMAGE, "true"]));
    denied_by(&b, &out, "isolation.user_namespace");
    assert!(
        text(&out.stderr).contains("neither remaps users"),
        "{}",
        text(&out.stderr)
    );
    let out = plain(docker(), &b, &w, &["--network", "none"]);
    denied_by(&b, &out, "isolation.user_namespace");
    let ok = plain(docker(), &b, &lax, &["--network", "none"]);
    assert!(
        ok.status.success(),
        "{}\n{}",
        text(&ok.stderr),
        b.log_text()
    );
    assert_eq!(text(&ok.stdout), rev(TOKEN));
    // This engine's default bridge lets containers talk: `unbaked run`
    // still puts them on the workload's own ICC-off network.
    let dry = output(run(&b, &lax).args(["--dry-run", "--", "--rm", IMAGE, "true"]));
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    assert!(
        text(&dry.stdout).contains(&format!("--network unbaked-{lax} ")),
        "{}",
        text(&dry.stdout)
    );
}
