//! The plan's tests: every refusal by its rule, the hardened argv.

use super::*;
use crate::isolation::{FileId, Protected};
use std::collections::BTreeMap;
use unbaked_policy::{Grant, GrantDelivery, Isolation, Launch, Match, DEFAULT_TTL};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn policy() -> Policy {
    let grant = |d| Grant {
        secret: "app/db".into(),
        key: "password".into(),
        dynamic: None,
        delivery: d,
        ttl: DEFAULT_TTL,
        mode: 0o400,
        uid: None,
        gid: None,
        on_change: None,
        debounce: unbaked_policy::DEFAULT_DEBOUNCE,
    };
    Policy {
        workload: "billing".into(),
        source: "policies/billing.toml".into(),
        matcher: Match {
            docker_labels: [("app".to_string(), "billing".to_string())].into(),
            ..Match::default()
        },
        launch: Launch {
            uids: vec![1000],
            gids: vec![],
        },
        isolation: Isolation {
            cap_add: vec!["NET_BIND_SERVICE".into()],
            ..Isolation::default()
        },
        grants: vec![
            grant(GrantDelivery::File("db_password".into())),
            grant(GrantDelivery::Env("API_TOKEN".into())),
            grant(GrantDelivery::Fd("KEY_FILE".into())),
        ],
        templates: vec![],
    }
}

fn facts() -> Facts {
    Facts {
        image_entrypoint: s(&["/bin/app"]),
        image_cmd: s(&["--serve"]),
        shim: "/usr/local/bin/unbaked".into(),
        broker_socket: "/run/unbaked/broker.sock".into(),
        socket_gid: Some(0),
        secrets_dir: Some("/run/unbaked/containers/abc".into()),
        launch_id: "abc".into(),
        containers_dir: "/run/unbaked/containers".into(),
        sockets: vec![],
        resolved: BTreeMap::new(),
        compose: false,
        container_files: false,
        engine_remaps_users: false,
        default_bridge_isolates: false,
    }
}

fn run(args: &[&str]) -> Result<Plan, Vec<Refusal>> {
    let parsed = parse(&s(args))?;
    plan(&parsed, &policy(), &facts())
}

fn refused(args: &[&str]) -> Vec<&'static str> {
    run(args)
        .err()
        .unwrap_or_default()
        .iter()
        .map(|r| r.rule)
        .collect()
}

#[test]
fn each_isolation_breaking_flag_is_refused_with_its_rule() {
    let cases: &[(&[&str], &str)] = &[
        (&["--privileged", "img"], "isolation.privileged"),
        (&["--privileged=true", "img"], "isolation.privileged"),
        (&["--network", "host", "img"], "isolation.host_network"),
        (&["--net=host", "img"], "isolation.host_network"),
        (&["--network=container:abc", "img"], "isolation.icc"),
        (&["--network", "bridge", "img"], "isolation.icc"),
        (&["--link", "db:db", "img"], "isolation.icc"),
        (&["--pid", "host", "img"], "isolation.host_pid"),
        (&["--pid=container:x", "img"], "isolation.host_pid"),
        (&["--ipc", "host", "img"], "isolation.host_ipc"),
        (&["--userns=host", "img"], "isolation.userns"),
        (
            &["-v", "/var/run/docker.sock:/var/run/docker.sock", "img"],
            "isolation.docker_socket",
        ),
        (
            &["-v/var/run/docker.sock:/d:ro", "img"],
            "isolation.docker_socket",
        ),
        (
            &["--volume=/var/run/../run/docker.sock:/d", "img"],
            "isolation.docker_socket",
        ),
        (
            &["--mount", "type=bind,src=/run/docker.sock,dst=/d", "img"],
            "isolation.docker_socket",
        ),
        (
            &[
                "--mount=type=bind,source=/var/run/docker.sock,target=/d,readonly",
                "img",
            ],
            "isolation.docker_socket",
        ),
        (&["--cap-add", "SYS_ADMIN", "img"], "isolation.cap_add"),
        (&["--cap-add=ALL", "img"], "isolation.cap_add"),
        (
            &["--security-opt", "seccomp=unconfined", "img"],
            "isolation.security_opt",
        ),
        (
            &["--security-opt=apparmor:unconfined", "img"],
            "isolation.security_opt",
        ),
        (
            &["--security-opt", "no-new-privileges=false", "img"],
            "isolation.security_opt",
        ),
        (&["--device", "/dev/kmsg", "img"], "isolation.device"),
        (
            &["--device-cgroup-rule=c 1:3 mr", "img"],
            "isolation.device",
        ),
        (&["--read-only=false", "img"], "isolation.read_only_rootfs"),
        (
            &["--label", "io.unbaked.launch=other", "img"],
            "launch.label",
        ),
        (&["-l", "app=reports", "img"], "launch.label"),
        (
            &["-v", "/run/unbaked/containers:/steal", "img"],
            "launch.secrets_dir",
        ),
        (&["-v", "/run/unbaked:/steal", "img"], "launch.secrets_dir"),
        (&["--tmpfs", "/run/secrets", "img"], "launch.mount_target"),
        (
            &["-v", "data:/run/unbaked/bin", "img"],
            "launch.mount_target",
        ),
    ];
    for (args, rule) in cases {
        assert_eq!(refused(args), [*rule], "{args:?}");
    }
    // /run holds the docker socket and every container's secrets.
    assert_eq!(
        refused(&["-v/run:/host-run:ro", "img"]),
        ["isolation.docker_socket", "launch.secrets_dir"]
    );
    assert_eq!(
        refused(&["--mount=type=bind,source=/var/run,target=/d", "img"]),
        ["isolation.docker_socket", "launch.secrets_dir"]
    );
    // All at once: every refusal reported.
    assert_eq!(
        refused(&[
            "--privileged",
            "--pid",
            "host",
            "--cap-add",
            "NET_ADMIN",
            "img"
        ])
        .len(),
        3
    );
    let r = run(&["--privileged", "img"]).unwrap_err();
    assert!(
        r[0].reason.starts_with("--privileged: ")
            && r[0].reason.contains("[isolation] privileged = false"),
        "{}",
        r[0].reason
    );
}

#[test]
fn allowed_weakenings_pass() {
    let mut p = policy();
    p.isolation = Isolation {
        inter_container_traffic: true,
        privileged: true,
        host_network: true,
        host_pid: true,
        host_ipc: true,
        docker_socket: true,
        read_only_rootfs: false,
        user_namespace: false,
        cap_add: vec!["ALL".into()],
    };
    let parsed = parse(&s(&[
        "--privileged",
        "--network",
        "host",
        "--pid",
        "host",
        "--ipc=host",
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        "--cap-add",
        "SYS_ADMIN",
        "--read-only=false",
        "img",
    ]))
    .unwrap();
    let plan = plan(&parsed, &p, &facts()).unwrap();
    assert_eq!(plan.network, None);
    assert!(!plan.args.contains(&"--read-only".to_string()));
    // Safe flags pass untouched.
    assert!(refused(&[
        "--cap-add",
        "net_bind_service",
        "--network",
        "none",
        "--security-opt",
        "no-new-privileges:true",
        "-v",
        "data:/data",
        "-v",
        "/srv/x:/x:ro",
        "img"
    ])
    .is_empty());
}

#[test]
fn the_plan_hardens_wraps_and_keeps_the_users_flags() {
    let plan = run(&[
        "--rm",
        "-it",
        "-e",
        "API_TOKEN=mine",
        "-p",
        "80:80",
        "img:1",
        "serve",
        "--port",
        "80",
    ])
    .unwrap();
    let a = plan.args.join(" ");
    assert_eq!(
        a,
        "run --rm -it -e API_TOKEN=mine -p 80:80 --cap-drop ALL --security-opt no-new-privileges --read-only --cgroupns private \
         --network unbaked-billing --label io.unbaked.workload=billing --label io.unbaked.launch=abc --label app=billing \
         --mount type=bind,src=/usr/local/bin/unbaked,dst=/run/unbaked/bin/unbaked,readonly \
         --mount type=bind,src=/run/unbaked/broker.sock,dst=/run/unbaked/broker.sock,readonly \
         --mount type=bind,src=/run/unbaked/containers/abc,dst=/run/secrets,readonly \
         --entrypoint /run/unbaked/bin/unbaked img:1 --socket /run/unbaked/broker.sock exec --workload billing -- /bin/app serve --port 80"
    );
    assert_eq!(plan.network.as_deref(), Some("unbaked-billing"));
    // The warning names the variable, never the user's value.
    assert_eq!(plan.warnings.len(), 1);
    assert!(plan.warnings[0].contains("API_TOKEN") && !plan.warnings[0].contains("mine"));
}

#[test]
fn entrypoint_and_cmd_follow_docker() {
    let tail = |args: &[&str]| {
        let p = run(args).unwrap();
        let at = p.args.iter().position(|a| a == "--").unwrap();
        p.args[at + 1..].join(" ")
    };
    assert_eq!(tail(&["img"]), "/bin/app --serve");
    assert_eq!(tail(&["img", "x"]), "/bin/app x");
    assert_eq!(tail(&["--entrypoint", "/bin/sh", "img"]), "/bin/sh");
    assert_eq!(
        tail(&["--entrypoint=/bin/sh", "img", "-c", "id"]),
        "/bin/sh -c id"
    );
    assert_eq!(tail(&["--entrypoint", "", "img", "/bin/true"]), "/bin/true");
    assert!(!run(&["--entrypoint=/x", "img"])
        .unwrap()
        .args
        .iter()
        .any(|a| a == "--entrypoint=/x"));
    let mut f = facts();
    f.image_entrypoint.clear();
    f.image_cmd.clear();
    let p = parse(&s(&["img"])).unwrap();
    assert_eq!(
        plan(&p, &policy(), &f).unwrap_err()[0].rule,
        "launch.command"
    );
}

#[test]
fn resolved_sources_and_socket_group() {
    let mut f = facts();
    f.resolved
        .insert("/srv/link".into(), "/run/docker.sock".into());
    f.socket_gid = Some(998);
    f.secrets_dir = None;
    let p = parse(&s(&["-v", "/srv/link:/d", "img"])).unwrap();
    assert_eq!(
        plan(&p, &policy(), &f).unwrap_err()[0].rule,
        "isolation.docker_socket"
    );
    let p = plan(&parse(&s(&["img"])).unwrap(), &policy(), &f).unwrap();
    let a = p.args.join(" ");
    assert!(a.contains("--group-add 998"), "{a}");
    assert!(!a.contains("/run/secrets"), "{a}");
    f.shim = "/x,y".into();
    assert_eq!(
        plan(&parse(&s(&["img"])).unwrap(), &policy(), &f).unwrap_err()[0].rule,
        "launch.path"
    );
}

#[test]
fn shell_quoting_round_trips_simple_words() {
    assert_eq!(
        shell_quote(&s(&["docker", "run", "a b", "it's", ""])),
        "docker run 'a b' 'it'\\''s' ''"
    );
}

fn host() -> HostFacts {
    HostFacts {
        protected: Protected {
            ids: vec![FileId { dev: 9, ino: 1 }, FileId { dev: 9, ino: 2 }],
        },
        secrets_dirs: vec![FileId { dev: 9, ino: 3 }],
        ..HostFacts::default()
    }
}

fn others() -> PolicySet {
    let mut set = PolicySet::default();
    let mut payroll = policy();
    payroll.workload = "payroll".into();
    payroll.source = "policies/payroll.toml".into();
    payroll.matcher.docker_labels = [("team".to_string(), "payroll".to_string())].into();
    set.insert(payroll);
    set.insert(policy());
    set
}

fn run_with(args: &[&str], host: &HostFacts) -> Result<Plan, Vec<Refusal>> {
    let parsed = parse(&s(args))?;
    let (p, set, f) = (policy(), others(), facts());
    plan_with(
        &parsed,
        &Inputs {
            policy: &p,
            policies: &set,
            facts: &f,
            host,
        },
    )
}

fn refused_with(args: &[&str], host: &HostFacts) -> Vec<&'static str> {
    run_with(args, host)
        .err()
        .unwrap_or_default()
        .iter()
        .map(|r| r.rule)
        .collect()
}

#[test]
fn every_spelling_docker_accepts_is_refused() {
    let h = host();
    let cases: &[(&[&str], &str)] = &[
        (&["--mount", r#""type=bind","source=/var/run/docker.sock",target=/d"#, "img"], "isolation.docker_socket"),
        (&["--mount", "TYPE=bind,SRC=/run/docker.sock,DST=/d", "img"], "isolation.docker_socket"),
        (&["--mount", "type=bind,destination=/d,bind-propagation=rshared,Source=/var/run/docker.sock", "img"], "isolation.docker_socket"),
        (&["--mount", "type=volume,src=v,dst=/d,volume-opt=type=none,volume-opt=o=bind,volume-opt=device=/var/run/docker.sock", "img"], "isolation.docker_socket"),
        (&["--use-api-socket", "img"], "isolation.docker_socket"),
        (&["--use-api-socket=true", "img"], "isolation.docker_socket"),
        (&["-dv/var/run/docker.sock:/d", "img"], "isolation.docker_socket"),
        (&["--label-file", "/tmp/labels", "img"], "launch.label_file"),
        (&["--gpus", "all", "img"], "isolation.device"),
        (&["--volumes-from", "other", "img"], "launch.volumes_from"),
        (&["--uts", "host", "img"], "isolation.host_uts"),
        (&["--cgroupns=host", "img"], "isolation.host_cgroupns"),
        (&["--userns", "host", "img"], "isolation.userns"),
        (&["--security-opt", "seccomp=/etc/lax.json", "img"], "isolation.security_opt"),
        (&["--security-opt", "seccomp:unconfined", "img"], "isolation.security_opt"),
        (&["--security-opt=apparmor=unconfined", "img"], "isolation.security_opt"),
        (&["--security-opt", "systempaths=unconfined", "img"], "isolation.security_opt"),
        (&["--security-opt", "label=type:spc_t", "img"], "isolation.security_opt"),
        (&["--privileged=1", "img"], "isolation.privileged"),
        (&["--privileged=True", "img"], "isolation.privileged"),
        (&["--network", "name=host", "img"], "isolation.host_network"),
        (&["--network", "name=container:abc,alias=x", "img"], "isolation.icc"),
        (&["--volume-driver", "flocker", "-v", "x:/x", "img"], "launch.volume_driver"),
        (&["--mount", "type=volume,src=x,dst=/x,volume-driver=evil", "img"], "launch.volume_driver"),
        (&["-v", "./run:/x", "img"], "launch.args"),
        (&["--mount", "type=bind,src=../run,dst=/x", "img"], "launch.args"),
        (&["--mount", "type=bind,src=/srv,dst=/x,bind-create-src=1", "img"], "launch.args"),
        (&["--frobnicate=1", "img"], "launch.unknown_option"),
        (&["-l", "team=payroll", "img"], "launch.other_workload"),
    ];
    for (args, rule) in cases {
        assert_eq!(refused_with(args, &h), [*rule], "{args:?}");
    }
    // The same switches turned off, and safe values, pass.
    assert!(refused_with(
        &[
            "--privileged=false",
            "--use-api-socket=0",
            "--cgroupns",
            "private",
            "--uts=",
            "--security-opt",
            "apparmor=docker-default",
            "--mount",
            "type=tmpfs,dst=/tmp",
            "-l",
            "team=billing",
            "img"
        ],
        &h
    )
    .is_empty());
}

#[test]
fn host_paths_are_judged_by_identity() {
    let mut h = host();
    h.sources
        .insert("/srv/innocent".into(), FileId { dev: 9, ino: 2 });
    h.sources
        .insert("/srv/unbaked".into(), FileId { dev: 9, ino: 3 });
    h.sources
        .insert("/srv/data".into(), FileId { dev: 9, ino: 4 });
    for args in [
        &["-v", "/srv/innocent:/x", "img"][..],
        &["--mount", "type=bind,src=/srv/innocent,dst=/x", "img"],
    ] {
        let r = run_with(args, &h).unwrap_err();
        assert_eq!(r[0].rule, "isolation.docker_socket", "{args:?}");
        assert!(r[0].reason.contains("device and inode"), "{}", r[0].reason);
        // Without the identities the text alone lets it through: the control.
        assert!(refused_with(args, &HostFacts::default()).is_empty());
    }
    assert_eq!(
        refused_with(&["-v", "/srv/unbaked:/x", "img"], &h),
        ["launch.secrets_dir"]
    );
    assert!(refused_with(&["-v", "/srv/data:/x", "img"], &h).is_empty());
    // A named volume that binds a protected directory, or of another driver.
    h.volumes.insert(
        "sock".into(),
        Volume {
            driver: "local".into(),
            options: [("o", "bind"), ("type", "none"), ("device", "/srv/innocent")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
        },
    );
    h.volumes.insert(
        "plug".into(),
        Volume {
            driver: "rexray".into(),
            options: BTreeMap::new(),
        },
    );
    h.volumes.insert(
        "plain".into(),
        Volume {
            driver: "local".into(),
            options: BTreeMap::new(),
        },
    );
    assert_eq!(
        refused_with(&["-v", "sock:/x", "img"], &h),
        ["isolation.docker_socket"]
    );
    assert_eq!(
        refused_with(&["--mount", "src=sock,dst=/x", "img"], &h),
        ["isolation.docker_socket"]
    );
    assert_eq!(
        refused_with(&["-v", "plug:/x", "img"], &h),
        ["launch.volume_driver"]
    );
    assert!(refused_with(&["-v", "plain:/x", "-v", "fresh:/y", "img"], &h).is_empty());
    // What the broker must resolve and inspect for these arguments.
    let p = parse(&s(&[
        "-v",
        "sock:/x",
        "-v",
        "/a:/a",
        "--mount",
        "type=volume,src=n,dst=/n,volume-opt=device=/b",
        "img",
    ]))
    .unwrap();
    assert_eq!(named_volumes(&p), ["n", "sock"]);
    assert_eq!(host_paths(&p, &h.volumes), ["/a", "/b", "/srv/innocent"]);
}

#[test]
fn labels_never_select_another_workload() {
    let h = host();
    let r = run_with(&["--label", "team=payroll", "img"], &h).unwrap_err();
    assert_eq!(r[0].rule, "launch.other_workload");
    // The caller learns its label, not the other workload; the operator does.
    assert!(!r[0].reason.contains("payroll"), "{}", r[0].reason);
    assert!(r[0].reason.contains("\"team\""), "{}", r[0].reason);
    assert!(r[0].detail.as_deref().unwrap().contains("payroll"));
    // Through the image's own labels.
    let mut img = host();
    img.image_labels.insert("team".into(), "payroll".into());
    assert_eq!(refused_with(&["img"], &img), ["launch.other_workload"]);
    // Another value, or the control: passes.
    assert!(refused_with(&["--label", "team=billing", "img"], &h).is_empty());
    assert!(refused_with(&["img"], &h).is_empty());
    // Policies that overlap: the workload's own labels select another.
    let mut set = others();
    let mut wide = policy();
    wide.workload = "wide".into();
    set.insert(wide);
    let (p, f) = (policy(), facts());
    let parsed = parse(&s(&["img"])).unwrap();
    let r = plan_with(
        &parsed,
        &Inputs {
            policy: &p,
            policies: &set,
            facts: &f,
            host: &h,
        },
    )
    .unwrap_err();
    assert_eq!(r[0].rule, "launch.other_workload");
    assert!(r[0].reason.contains("overlap"), "{}", r[0].reason);
}

/// `unbaked compose`: no launch label and no host tmpfs (compose starts the
/// replicas); each container gets its own tmpfs, owned by its `--user`,
/// which the shim fills (`--files`).
#[test]
fn a_compose_service_gets_a_tmpfs_of_its_own_and_no_launch_label() {
    let compose = Facts {
        secrets_dir: None,
        compose: true,
        container_files: true,
        ..facts()
    };
    let parsed = parse(&s(&["--user=1000:1000", "img"])).unwrap();
    let p = plan(&parsed, &policy(), &compose).unwrap();
    let line = p.args.join(" ");
    assert!(
        line.contains(
            "--tmpfs /run/secrets:mode=0711,size=1m,nosuid,nodev,noexec,uid=1000,gid=1000"
        ),
        "{line}"
    );
    assert!(
        line.contains("exec --workload billing --files /run/secrets -- /bin/app --serve"),
        "{line}"
    );
    assert!(!line.contains(LABEL_LAUNCH), "{line}");
    assert!(!line.contains("dst=/run/secrets"), "{line}");
    // A named user: the tmpfs stays root's (the shim then says why it cannot write).
    let parsed = parse(&s(&["--user=app", "img"])).unwrap();
    let line = plan(&parsed, &policy(), &compose).unwrap().args.join(" ");
    assert!(
        line.contains("--tmpfs /run/secrets:mode=0711,size=1m,nosuid,nodev,noexec --entrypoint"),
        "{line}"
    );
    // Control: `unbaked run` keeps its launch label and host tmpfs.
    let line = plan(&parsed, &policy(), &facts()).unwrap().args.join(" ");
    assert!(
        line.contains(LABEL_LAUNCH) && !line.contains("--tmpfs"),
        "{line}"
    );
}

#[test]
fn user_namespace_is_refused_unless_the_engine_remaps_and_nobody_opts_out() {
    let mut p = policy();
    p.isolation.user_namespace = true;
    let plan_on = |remaps: bool, args: &[&str]| {
        let f = Facts {
            engine_remaps_users: remaps,
            ..facts()
        };
        plan(&parse(&s(args)).unwrap(), &p, &f)
    };
    // An engine that does not remap: refused, the engine named.
    let err = plan_on(false, &["img"]).unwrap_err();
    assert_eq!(
        err.iter().map(|r| r.rule).collect::<Vec<_>>(),
        ["isolation.user_namespace"]
    );
    assert!(err[0].reason.starts_with("the engine"), "{}", err[0].reason);
    // A remapping engine: planned.
    assert!(plan_on(true, &["img"]).is_ok());
    // ... unless the container opts out.
    let err = plan_on(true, &["--userns", "host", "img"]).unwrap_err();
    assert_eq!(
        err.iter().map(|r| r.rule).collect::<Vec<_>>(),
        ["isolation.user_namespace", "isolation.userns"]
    );
    assert!(
        err[0].reason.starts_with("--userns host"),
        "{}",
        err[0].reason
    );
    // The control: a policy that does not ask plans on any engine.
    assert!(run(&["img"]).is_ok());
}

#[test]
fn a_daemon_wide_icc_false_keeps_the_default_bridge() {
    let f = Facts {
        default_bridge_isolates: true,
        ..facts()
    };
    let planned = plan(&parse(&s(&["img"])).unwrap(), &policy(), &f).unwrap();
    assert_eq!(planned.network, None);
    assert!(
        !planned.args.iter().any(|a| a == "--network"),
        "{:?}",
        planned.args
    );
    let planned = plan(
        &parse(&s(&["--network", "bridge", "img"])).unwrap(),
        &policy(),
        &f,
    )
    .unwrap();
    assert_eq!(planned.network, None);
    // Another ICC network is still refused.
    let err = plan(
        &parse(&s(&["--network", "mynet", "img"])).unwrap(),
        &policy(),
        &f,
    )
    .unwrap_err();
    assert_eq!(err[0].rule, "isolation.icc");
    // The control: on an ordinary engine the workload network is attached,
    // and the default bridge is refused.
    let planned = run(&["img"]).unwrap();
    assert_eq!(planned.network.as_deref(), Some("unbaked-billing"));
    assert_eq!(refused(&["--network", "bridge", "img"]), ["isolation.icc"]);
}

/// `unbaked compose` on a daemon started with --icc=false: the service is
/// put on the default bridge (compose would otherwise attach its project
/// network, where inter-container traffic is on); a service that names its
/// network keeps it (and is judged like any network).
#[test]
fn a_compose_service_on_an_isolating_default_bridge_is_put_on_it() {
    let f = Facts {
        compose: true,
        default_bridge_isolates: true,
        ..facts()
    };
    let planned = plan(&parse(&s(&["img"])).unwrap(), &policy(), &f).unwrap();
    let line = planned.args.join(" ");
    assert!(line.contains("--network bridge"), "{line}");
    assert_eq!(planned.network, None);
    let planned = plan(
        &parse(&s(&["--network", "bridge", "img"])).unwrap(),
        &policy(),
        &f,
    )
    .unwrap();
    assert_eq!(planned.args.iter().filter(|a| *a == "--network").count(), 1);
    // Control: `unbaked run` on the same daemon adds nothing (docker's
    // default is the bridge already).
    let run = Facts {
        default_bridge_isolates: true,
        ..facts()
    };
    let planned = plan(&parse(&s(&["img"])).unwrap(), &policy(), &run).unwrap();
    assert!(
        !planned.args.iter().any(|a| a == "--network"),
        "{:?}",
        planned.args
    );
}
