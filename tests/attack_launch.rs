//! Issue 12, items 4 and 5, attacked the way a local user with `unbaked run`
//! (or with plain `docker run`) would: every route to the engine's socket,
//! the host's namespaces, the escape settings, and labels that select
//! another workload. Each attack is refused by the launch plan (its rule in
//! the error, audited) and, where the container can be started by hand,
//! denied by the live check at issuance (its rule, audited, no secret). A
//! control per class shows the same setup without the attack succeeds.
mod util;
use std::path::Path;
use util::docker::*;
use util::*;

const TOKEN: &[u8] = b"atk-token-5e11c0de";
const PAYROLL: &[u8] = b"payroll-pw-77aa10";

/// Workload `w` (selected by `app=w`) with an env grant, and `payroll`
/// (selected by `team=payroll`), both launchable by the test's uid.
fn broker(w: &str) -> Broker {
    broker_wrapped(w, &[])
}

/// [`broker`], started under `prefix` (a command that execs the rest).
fn broker_wrapped(w: &str, prefix: &[&str]) -> Broker {
    let policy = |name: &str, selector: &str, secret: &str, var: &str| {
        format!(
            "workload = \"{name}\"\n[match]\ndocker_labels = {{ {selector} }}\n[launch]\nuids = [{uid}]\n\n\
             [[grant]]\nsecret = \"{secret}\"\nkey = \"v\"\nenv = \"{var}\"\n",
            uid = uid()
        )
    };
    let b = Broker::start_wrapped(
        prefix,
        &[
            (
                "w.toml",
                &policy(w, &format!("app = \"{w}\""), "app/api", "API_TOKEN"),
            ),
            (
                "payroll.toml",
                &policy("payroll", "team = \"payroll\"", "app/payroll", "PAYROLL_PW"),
            ),
        ],
    );
    b.put("app/api", "v", TOKEN);
    b.put("app/payroll", "v", PAYROLL);
    b
}

/// `unbaked run --dry-run --workload W -- FLAGS IMAGE`.
fn plan(b: &Broker, w: &str, flags: &[&str], image: &str) -> std::process::Output {
    let mut c = b.cmd();
    c.env("UNBAKED_SHIM", static_binary())
        .args(["run", "--dry-run", "--workload", w, "--"])
        .args(flags)
        .arg(image);
    output(&mut c)
}

/// Every route is refused by the plan with its rule, printing no command,
/// and audited; the control is planned. Every failing route is reported.
fn assert_plan_refuses(b: &Broker, w: &str, routes: &[(&[&str], &str)], control: &[&str]) {
    let image = test_image();
    let mut failures = Vec::new();
    for (flags, rule) in routes {
        let out = plan(b, w, flags, image);
        let err = text(&out.stderr);
        if out.status.code() != Some(3)
            || !err.contains(&format!("{rule}: "))
            || !out.stdout.is_empty()
        {
            failures.push(format!(
                "{flags:?} should be refused by {rule} (exit {:?}): {err}",
                out.status.code()
            ));
        }
    }
    let audit = b.audit_text();
    for (flags, rule) in routes {
        if !audit.contains(&format!("\"rule\":\"{rule}\"")) {
            failures.push(format!("{flags:?}: {rule} not audited"));
        }
    }
    let out = plan(b, w, control, image);
    assert!(
        out.status.success(),
        "the control {control:?} was refused: {}",
        text(&out.stderr)
    );
    assert!(failures.is_empty(), "{failures:#?}");
}

/// An ICC-off network for containers started by hand.
fn noicc(clean: &mut Cleanup) -> String {
    let net = clean.network(&unique("atk-noicc"));
    docker_ok(&[
        "network",
        "create",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        &net,
    ]);
    net
}

/// A container started by hand (plain `docker run`, no plan) with `w`'s
/// label, on `net`, read-only, plus `extra`; its shim asks for `w`'s token
/// and prints it reversed.
fn live(
    b: &Broker,
    w: &str,
    net: &str,
    extra: &[&str],
    clean: &mut Cleanup,
) -> std::process::Output {
    let shim = static_binary().display().to_string();
    let socket = b.socket.display().to_string();
    let name = clean.container(&unique("atk-live"));
    let script = format!(
        "/u --socket /s.sock exec --workload {w} -- /bin/sh -c 'printf %s \"$API_TOKEN\" | rev'"
    );
    let mut cmd = docker();
    cmd.args([
        "run",
        "--rm",
        "--name",
        &name,
        "--read-only",
        "--network",
        net,
    ])
    .args(["--label", &format!("app={w}")])
    .args(["--mount", &format!("type=bind,src={shim},dst=/u,readonly")])
    .args(["--mount", &format!("type=bind,src={socket},dst=/s.sock")])
    .args(extra)
    .args([test_image(), &script]);
    output(&mut cmd)
}

/// Every route started by hand is denied by the live check with its rule
/// and audited, without the secret; the control gets it.
fn assert_live_denies(b: &Broker, w: &str, routes: &[(Vec<String>, &str)], control: &[&str]) {
    let mut clean = Cleanup::default();
    let net = noicc(&mut clean);
    let mut failures = Vec::new();
    for (extra, rule) in routes {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let out = live(b, w, &net, &extra, &mut clean);
        let err = text(&out.stderr);
        if out.status.code() != Some(3) || !err.contains(rule) || !out.stdout.is_empty() {
            failures.push(format!(
                "{extra:?} should be denied by {rule} (exit {:?}, printed {} bytes): {err}",
                out.status.code(),
                out.stdout.len()
            ));
        }
    }
    let audit = b.audit_text();
    for (extra, rule) in routes {
        if !audit.contains(&format!("\"rule\":\"{rule}\"")) {
            failures.push(format!("{extra:?}: {rule} not audited"));
        }
    }
    assert!(!audit.contains(&*String::from_utf8_lossy(TOKEN)));
    let out = live(b, w, &net, control, &mut clean);
    assert!(
        out.status.success(),
        "the control {control:?} was denied: {}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), rev(TOKEN));
    assert!(failures.is_empty(), "{failures:#?}");
}

fn owned(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A local volume whose data is a bind of `device` (`o=bind`).
fn bind_volume(device: &str, clean: &mut Cleanup) -> String {
    let v = clean.volume(&unique("atk-vol"));
    let device = format!("device={device}");
    docker_ok(&[
        "volume",
        "create",
        "--driver",
        "local",
        "-o",
        "type=none",
        "-o",
        "o=bind",
        "-o",
        &device,
        &v,
    ]);
    v
}

/// A stopped container holding the engine's socket, for `--volumes-from`.
fn socket_holder(clean: &mut Cleanup) -> String {
    let name = clean.container(&unique("atk-holder"));
    docker_ok(&[
        "create",
        "--name",
        &name,
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        test_image(),
        "true",
    ]);
    name
}

/// A symlink in `dir` to `target`.
fn link_to(dir: &Path, target: &str) -> String {
    let link = dir.join(unique("to"));
    std::os::unix::fs::symlink(target, &link).unwrap();
    link.display().to_string()
}

#[test]
fn the_plan_refuses_every_route_to_the_engine_socket() {
    let w = unique("atk-sock");
    let b = broker(&w);
    let mut clean = Cleanup::default();
    let tmp = tempfile::tempdir().unwrap();
    let sym = format!("{}:/x", link_to(tmp.path(), "/run"));
    let by_vol = format!("{}:/x", bind_volume("/run", &mut clean));
    let holder = socket_holder(&mut clean);
    let quoted = r#""type=bind","source=/var/run",target=/x"#;
    let routes: &[(&[&str], &str)] = &[
        (&["-v", "/var/run:/x"], "isolation.docker_socket"),
        (&["-v/var/run/docker.sock:/x:ro"], "isolation.docker_socket"),
        (&["-dv", "/:/host"], "isolation.docker_socket"),
        (
            &["--mount", "type=bind,SRC=/run/docker.sock,dst=/x"],
            "isolation.docker_socket",
        ),
        (&["--mount", quoted], "isolation.docker_socket"),
        (
            &[
                "--mount",
                "Type=bind,Destination=/x,bind-propagation=rslave,Source=/var/run/docker.sock",
            ],
            "isolation.docker_socket",
        ),
        (
            &[
                "--mount",
                "type=volume,src=fresh,dst=/x,volume-opt=type=none,volume-opt=o=bind,volume-opt=device=/var/run/docker.sock",
            ],
            "isolation.docker_socket",
        ),
        (&["-v", &sym], "isolation.docker_socket"),
        (&["--use-api-socket"], "isolation.docker_socket"),
        (&["--volumes-from", &holder], "launch.volumes_from"),
        // Needs the volume's options passed to the plan (HostFacts::volumes).
        (&["-v", &by_vol], "isolation.docker_socket"),
        // Needs the identities passed to the plan (HostFacts::protected).
        (&["-v", "/var/lib/docker:/x:ro"], "isolation.docker_socket"),
    ];
    let data = tempfile::tempdir().unwrap();
    let control = format!("{}:/x:ro", data.path().display());
    assert_plan_refuses(&b, &w, routes, &["-v", &control, "-v", "plainvol:/y"]);
}

#[test]
fn the_live_check_denies_every_route_to_the_engine_socket() {
    let w = unique("atk-live-sock");
    let b = broker(&w);
    let mut clean = Cleanup::default();
    let tmp = tempfile::tempdir().unwrap();
    let sym = format!("{}:/x:ro", link_to(tmp.path(), "/run"));
    let by_vol = format!("{}:/x:ro", bind_volume("/run", &mut clean));
    let holder = socket_holder(&mut clean);
    let routes = vec![
        (owned(&["-v", "/var/run:/x:ro"]), "isolation.docker_socket"),
        (
            owned(&["--mount", "type=bind,src=/run,dst=/x,readonly"]),
            "isolation.docker_socket",
        ),
        (
            owned(&["--volumes-from", &holder]),
            "isolation.docker_socket",
        ),
        // These three need each live mount's source_id (attest/docker.rs)
        // and the Protected set passed to the check.
        (owned(&["-v", &sym]), "isolation.docker_socket"),
        (owned(&["-v", &by_vol]), "isolation.docker_socket"),
        (
            owned(&["-v", "/var/lib/docker:/x:ro"]),
            "isolation.docker_socket",
        ),
    ];
    let data = tempfile::tempdir().unwrap();
    let control = format!("{}:/x:ro", data.path().display());
    assert_live_denies(&b, &w, &routes, &["-v", &control]);
}

/// A broker whose mount namespace receives none of the engine's later
/// mounts (private propagation, as in a container handed the engine's
/// socket): the engine mounts a bind volume of `/run` where the broker
/// sees only an empty directory. The live check must judge the source
/// where the engine mounted it. Without the hop into the host's mount
/// namespace (`mount_identity::as_engine_sees`) this route got the token.
#[test]
fn the_live_check_judges_mount_sources_where_the_engine_mounts_them() {
    let w = unique("atk-live-priv");
    let b = broker_wrapped(
        &w,
        &["unshare", "--mount", "--propagation", "private", "--"],
    );
    let own = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
    assert_ne!(
        own(&b.pid().to_string()),
        own("self"),
        "the broker is not in a mount namespace of its own: the test proves nothing"
    );
    let mut clean = Cleanup::default();
    let by_vol = format!("{}:/x:ro", bind_volume("/run", &mut clean));
    let routes = vec![(owned(&["-v", &by_vol]), "isolation.docker_socket")];
    let data = tempfile::tempdir().unwrap();
    let control = format!("{}:/x:ro", data.path().display());
    assert_live_denies(&b, &w, &routes, &["-v", &control]);
}

#[test]
fn the_plan_refuses_host_namespaces_and_escape_settings() {
    let w = unique("atk-ns");
    let b = broker(&w);
    let tmp = tempfile::tempdir().unwrap();
    let profile = tmp.path().join("allow-all.json");
    std::fs::write(&profile, r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#).unwrap();
    let custom = format!("seccomp={}", profile.display());
    let routes: &[(&[&str], &str)] = &[
        (&["--uts", "host"], "isolation.host_uts"),
        (&["--cgroupns=host"], "isolation.host_cgroupns"),
        (&["--userns", "host"], "isolation.userns"),
        (&["--pid=host"], "isolation.host_pid"),
        (&["--ipc", "host"], "isolation.host_ipc"),
        (&["--network", "name=host"], "isolation.host_network"),
        (&["--net=host"], "isolation.host_network"),
        (
            &["--security-opt", "seccomp=unconfined"],
            "isolation.security_opt",
        ),
        (&["--security-opt", &custom], "isolation.security_opt"),
        (
            &["--security-opt=apparmor=unconfined"],
            "isolation.security_opt",
        ),
        (
            &["--security-opt", "systempaths=unconfined"],
            "isolation.security_opt",
        ),
        (&["--privileged=true"], "isolation.privileged"),
        (&["--gpus", "all"], "isolation.device"),
        (&["--device=/dev/null"], "isolation.device"),
        (&["--cap-add", "sys_admin"], "isolation.cap_add"),
    ];
    let control: &[&str] = &[
        "--cgroupns",
        "private",
        "--privileged=false",
        "--security-opt",
        "no-new-privileges=true",
    ];
    assert_plan_refuses(&b, &w, routes, control);
}

#[test]
fn the_live_check_denies_host_namespaces_and_escape_settings() {
    let w = unique("atk-live-ns");
    let b = broker(&w);
    let tmp = tempfile::tempdir().unwrap();
    let profile = tmp.path().join("allow-all.json");
    std::fs::write(&profile, r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#).unwrap();
    let custom = format!("seccomp={}", profile.display());
    let routes = vec![
        (owned(&["--uts", "host"]), "isolation.host_uts"),
        (owned(&["--userns", "host"]), "isolation.userns"),
        (
            owned(&["--security-opt", "systempaths=unconfined"]),
            "isolation.security_opt",
        ),
        (
            owned(&["--security-opt", &custom]),
            "isolation.security_opt",
        ),
        (
            owned(&["--security-opt", "seccomp=unconfined"]),
            "isolation.security_opt",
        ),
    ];
    assert_live_denies(&b, &w, &routes, &["--cgroupns", "private"]);
}

#[test]
fn the_plan_refuses_labels_that_select_another_workload() {
    let w = unique("atk-label");
    let b = broker(&w);
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("labels");
    std::fs::write(&file, "team=payroll\n").unwrap();
    let file = file.display().to_string();
    let routes: &[(&[&str], &str)] = &[
        // These three need the loaded policies passed to the plan.
        (&["--label", "team=payroll"], "launch.other_workload"),
        (&["-l", "team=payroll"], "launch.other_workload"),
        (&["-dlteam=payroll"], "launch.other_workload"),
        (&["--label-file", &file], "launch.label_file"),
        (&["--label", "io.unbaked.workload=payroll"], "launch.label"),
    ];
    assert_plan_refuses(&b, &w, routes, &["--label", "team=billing"]);

    // Through the image's own labels (needs HostFacts::image_labels too).
    let tagged = format!("unbaked-test/{}:1", unique("payroll-labelled"));
    let ctx = tempfile::tempdir().unwrap();
    let dockerfile = format!("FROM {}\nLABEL team=payroll\n", test_image());
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    docker_ok(&[
        "build",
        "-q",
        "-t",
        &tagged,
        &ctx.path().display().to_string(),
    ]);
    let out = plan(&b, &w, &[], &tagged);
    let _ = docker().args(["rmi", "-f", &tagged]).output();
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "the labelled image was planned: {err}"
    );
    assert!(err.contains("launch.other_workload: "), "{err}");
    // The caller is not told which workload its labels would have matched.
    assert!(!err.contains("payroll.toml"), "{err}");
}

/// A loop of launches nobody starts a container for: each would mount a
/// tmpfs. Past 128 unclaimed ones the uid is refused (`launch.limit`),
/// audited; the 128 before were planned (the control), and a stopped
/// broker unmounts every one of them.
#[test]
fn a_loop_of_unclaimed_launches_is_bounded() {
    let w = unique("atk-limit");
    let policy = format!(
        "workload = \"{w}\"\n[match]\ndocker_labels = {{ app = \"{w}\" }}\n[launch]\nuids = [{}]\n\
         [isolation]\ninter_container_traffic = true\nread_only_rootfs = false\n\
         [[grant]]\nsecret = \"app/f\"\nkey = \"v\"\nfile = \"f\"\n",
        uid()
    );
    let mut b = Broker::start(&[("w.toml", &policy)]);
    let image = test_image();
    let body = serde_json::json!({
        "workload": w,
        "args": ["--rm", image, "true"],
        "shim": static_binary().display().to_string(),
    })
    .to_string();
    let head = "POST /v1/launch HTTP/1.1\r\nContent-Type: application/json";
    let mut statuses = Vec::new();
    for _ in 0..129 {
        let a = util::daemon::http(&b.socket, head, body.as_bytes()).expect("the broker answers");
        statuses.push((a.status, a.body));
    }
    let planned = statuses.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(
        planned, 128,
        "the control: launches up to the bound are planned"
    );
    let (last, body) = statuses.last().unwrap();
    assert_eq!(*last, 403, "{body}");
    assert!(body.contains("launch.limit"), "{body}");
    assert!(b.audit_text().contains("\"rule\":\"launch.limit\""));
    let base = b.dir.path().join("containers");
    assert_eq!(
        mounts_under(&base).len(),
        128,
        "one tmpfs per planned launch"
    );
    b.stop();
    assert!(
        mounts_under(&base).is_empty(),
        "a stopped broker unmounts them"
    );
}
