//! `unbaked compose` on the real engine with Debian's docker-compose 1.29
//! and with Compose v2 (Debian trixie's, as the `docker compose` plugin):
//! the example project (examples/compose) comes up with each workload
//! service attested, isolated and served its own secrets; a service that
//! breaks its workload's isolation, or a `compose run`/`exec` line that
//! would, is refused before any container exists.
//!
//! Inside containers the tests print secrets reversed (`rev`), and search
//! every output, the override, `docker inspect` and the broker's files for
//! the real bytes.
mod util;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use util::docker::*;
use util::tools::venv_bin;
use util::*;

const BILLING_DB: &[u8] = b"bill-db-5e1f0a77c3";
const BILLING_API: &[u8] = b"bill-api-9d2b44e1aa";
const REPORTS_DB: &[u8] = b"rep-db-31c7f0be90";
const REPORTS_API: &[u8] = b"rep-api-77aa0c5e12";
const ALL: [&[u8]; 4] = [BILLING_DB, BILLING_API, REPORTS_DB, REPORTS_API];

/// The compose specification's JSON schema, as Debian's docker-compose ships it.
const COMPOSE_SPEC: &str = "/usr/lib/python3/dist-packages/compose/config/compose_spec.json";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A workload matched by `app=W` (launchable by the test's uid) with a
/// file grant and an env grant of its own secrets.
fn policy(w: &str) -> String {
    label_policy(
        w,
        "",
        &format!(
            "[[grant]]\nsecret = \"{w}/db\"\nkey = \"password\"\nfile = \"db_password\"\nttl = \"1m\"\n\n\
             [[grant]]\nsecret = \"{w}/api\"\nkey = \"token\"\nenv = \"API_TOKEN\"\nttl = \"1m\"\n"
        ),
    )
}

fn assert_no_secret_in(what: &str, hay: &[u8]) {
    for s in ALL {
        assert!(
            !hay.windows(s.len()).any(|w| w == s),
            "{what} holds a secret value"
        );
    }
}

/// A compose CLI as a user has it.
struct Cli {
    name: &'static str,
    /// `UNBAKED_COMPOSE` (`None`: the wrapper's own choice, docker-compose).
    command: Option<&'static str>,
    /// A `DOCKER_CONFIG` whose `cliPluginsExtraDirs` holds the v2 plugin.
    docker_config: Option<tempfile::TempDir>,
}

/// Compose v2, extracted by scripts/install-docker-deps (missing: a
/// failure, not a skip).
const COMPOSE_V2_DIR: &str = "/var/cache/unbaked/compose-v2";

impl Cli {
    fn v1() -> Cli {
        Cli {
            name: "docker-compose 1.29",
            command: None,
            docker_config: None,
        }
    }

    /// `docker compose`, the plugin found through the docker CLI's config.
    fn v2() -> Cli {
        let plugin = Path::new(COMPOSE_V2_DIR).join("docker-compose");
        assert!(
            plugin.is_file(),
            "{} missing: scripts/install-docker-deps fetches Compose v2 from Debian trixie",
            plugin.display()
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            serde_json::json!({ "cliPluginsExtraDirs": [COMPOSE_V2_DIR] }).to_string(),
        )
        .unwrap();
        let cli = Cli {
            name: "compose v2 plugin",
            command: Some("docker compose"),
            docker_config: Some(dir),
        };
        let v = output(&mut cli.plain(&["version"]));
        assert!(
            text(&v.stdout).contains("v2") || text(&v.stdout).contains(" 2."),
            "{}{}",
            text(&v.stdout),
            text(&v.stderr)
        );
        cli
    }

    fn env(&self, c: &mut Command) {
        if let Some(cmd) = self.command {
            c.env("UNBAKED_COMPOSE", cmd);
        }
        if let Some(d) = &self.docker_config {
            c.env("DOCKER_CONFIG", d.path());
        }
    }

    /// The CLI itself, without unbaked.
    fn plain(&self, args: &[&str]) -> Command {
        let words: Vec<&str> = self
            .command
            .unwrap_or("docker-compose")
            .split(' ')
            .collect();
        let mut c = Command::new(words[0]);
        c.args(&words[1..])
            .args(args)
            .env("APP_IMAGE", test_image());
        self.env(&mut c);
        c
    }
}

/// `unbaked compose ARGS` with the static shim and the test image.
fn compose(b: &Broker, args: &[&str]) -> Command {
    compose_with(&Cli::v1(), b, args)
}

fn compose_with(cli: &Cli, b: &Broker, args: &[&str]) -> Command {
    let mut c = b.cmd();
    c.env("UNBAKED_SHIM", static_binary())
        .env("APP_IMAGE", test_image())
        .env_remove("COMPOSE_FILE")
        .arg("compose")
        .args(args);
    cli.env(&mut c);
    c
}

/// Removes a project's containers and networks, pass or fail.
struct Project {
    name: String,
    networks: Vec<String>,
}

impl Drop for Project {
    fn drop(&mut self) {
        let label = format!("label=com.docker.compose.project={}", self.name);
        if let Ok(o) = docker().args(["ps", "-aq", "--filter", &label]).output() {
            for id in text(&o.stdout).split_whitespace() {
                let _ = docker().args(["rm", "-f", id]).output();
            }
        }
        for n in self
            .networks
            .iter()
            .cloned()
            .chain([format!("{}_default", self.name)])
        {
            let _ = docker().args(["network", "rm", &n]).output();
        }
    }
}

/// The containers of a project's service, by name.
fn containers(project: &str, service: &str) -> Vec<String> {
    let out = docker_ok(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
        "--filter",
        &format!("label=com.docker.compose.service={service}"),
        "--format",
        "{{.Names}}",
    ]);
    let mut v: Vec<String> = out.split_whitespace().map(str::to_string).collect();
    v.sort();
    v
}

fn logs(c: &str) -> String {
    let out = output(docker().args(["logs", c]));
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

fn files_under(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        }
        out.insert(p);
    }
    out
}

/// What the example runs, printing the values reversed so the test can
/// check them (the example itself only says they are there).
const TEST_COMMANDS: &str = r#"services:
  billing:
    command:
      - |
        printf 'file=%s\n' "$$(rev /run/secrets/db_password)"
        printf 'env=%s\n' "$$(printf %s "$$API_TOKEN" | rev)"
        exec nc -ll -p 8080 -e echo billing
  reports:
    command:
      - |
        printf 'file=%s\n' "$$(rev /run/secrets/db_password)"
        printf 'env=%s\n' "$$(printf %s "$$API_TOKEN" | rev)"
        exec nc -ll -p 8080 -e echo reports
"#;

/// With each compose CLI in turn (they share the workloads' networks).
#[test]
fn the_example_project_comes_up_attested_isolated_and_leaves_no_lease() {
    // Both are required: a missing v2 fails here, before v1 runs.
    let clis = [Cli::v1(), Cli::v2()];
    for cli in &clis {
        eprintln!("== {}", cli.name);
        example_project(cli);
    }
}

fn example_project(cli: &Cli) {
    let compose = |b: &Broker, args: &[&str]| compose_with(cli, b, args);
    let image = test_image();
    let b = Broker::start(&[
        ("billing.toml", &policy("billing")),
        ("reports.toml", &policy("reports")),
    ]);
    b.put("billing/db", "password", BILLING_DB);
    b.put("billing/api", "token", BILLING_API);
    b.put("reports/db", "password", REPORTS_DB);
    b.put("reports/api", "token", REPORTS_API);
    let example_dir = root().join("examples/compose");
    let before = files_under(&example_dir);
    let tmp = tempfile::tempdir().unwrap();
    let test_file = tmp.path().join("test.yml");
    std::fs::write(&test_file, TEST_COMMANDS).unwrap();
    let p = unique("ucompose");
    let _project = Project {
        name: p.clone(),
        networks: vec!["unbaked-billing".into(), "unbaked-reports".into()],
    };
    let example = example_dir.join("docker-compose.yml");
    let (ex, tf) = (
        example.display().to_string(),
        test_file.display().to_string(),
    );
    let globals = ["-p", p.as_str(), "-f", ex.as_str(), "-f", tf.as_str()];
    let with = |rest: &[&str]| -> Vec<String> {
        globals.iter().chain(rest).map(|s| s.to_string()).collect()
    };

    // The dry run prints the override: the shim, the network, the tmpfs,
    // the hardening; no value, and valid for the compose spec.
    let dry = output(compose(&b, &["--dry-run", "--"]).args(with(&["up", "-d"])));
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    let overlay = text(&dry.stdout);
    assert_no_secret_in("the override", &dry.stdout);
    let doc: serde_json::Value = serde_json::from_str(&overlay).unwrap();
    let billing = &doc["services"]["billing"];
    assert_eq!(billing["entrypoint"][0], "/run/unbaked/bin/unbaked");
    assert_eq!(
        billing["networks"],
        serde_json::json!({"unbaked-billing": {}})
    );
    assert_eq!(billing["labels"]["app"], "billing");
    assert!(billing["cap_drop"]
        .as_array()
        .unwrap()
        .contains(&"ALL".into()));
    let tmpfs = billing["tmpfs"][0].as_str().unwrap();
    assert!(tmpfs.starts_with("/run/secrets:mode=0711"), "{tmpfs}");
    assert!(
        doc["services"].get("web").is_none(),
        "web is not a workload's"
    );
    let cmd = billing["command"].as_array().unwrap();
    assert!(
        cmd.windows(2)
            .any(|w| w[0] == "--files" && w[1] == "/run/secrets"),
        "{cmd:?}"
    );
    let overlay_file = tmp.path().join("override.json");
    std::fs::write(&overlay_file, &overlay).unwrap();
    // The compose-spec schema: for docker-compose 1.29 the one its Debian
    // package ships (check-jsonschema 0.29 vendors none), for v2 the one
    // compose v2 embeds (`config -q` validates the project with it).
    let spec = Path::new(COMPOSE_SPEC);
    assert!(
        spec.is_file(),
        "{COMPOSE_SPEC} missing: scripts/install-docker-deps installs docker-compose"
    );
    let schema = |file: &Path| match cli.command {
        None => output(
            Command::new(venv_bin("check-jsonschema"))
                .arg("--schemafile")
                .arg(spec)
                .arg(file),
        ),
        Some(_) => {
            let (ex, f) = (example.display().to_string(), file.display().to_string());
            output(&mut cli.plain(&["-p", &p, "-f", &ex, "-f", &f, "config", "-q"]))
        }
    };
    let out = schema(&overlay_file);
    assert!(
        out.status.success(),
        "the override breaks the compose spec: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // Control: the schema rejects a field compose does not know.
    let broken = tmp.path().join("broken.json");
    std::fs::write(
        &broken,
        overlay.replacen("\"cap_drop\"", "\"cap_dropped\"", 1),
    )
    .unwrap();
    assert!(
        !schema(&broken).status.success(),
        "a broken override passed"
    );

    // Up, with billing scaled to two replicas.
    let up = output(compose(&b, &["--"]).args(with(&["up", "-d", "--scale", "billing=2"])));
    assert!(
        up.status.success(),
        "{}{}\n{}",
        text(&up.stdout),
        text(&up.stderr),
        b.log_text()
    );
    let billing = containers(&p, "billing");
    let reports = containers(&p, "reports");
    let web = containers(&p, "web");
    assert_eq!((billing.len(), reports.len(), web.len()), (2, 1, 1));

    // Each reads its own secrets, file and env.
    for (c, db, api) in billing
        .iter()
        .map(|c| (c, BILLING_DB, BILLING_API))
        .chain(reports.iter().map(|c| (c, REPORTS_DB, REPORTS_API)))
    {
        assert!(
            eventually(60, || logs(c).contains("env=")),
            "{c} never started its app: {}\n{}",
            logs(c),
            b.log_text()
        );
        let l = logs(c);
        assert!(l.contains(&format!("file={}\n", rev(db))), "{c}: {l}");
        assert!(l.contains(&format!("env={}\n", rev(api))), "{c}: {l}");
        assert_no_secret_in("a container's log", l.as_bytes());
    }
    // ... and cannot fetch the other workload's; its own it can (control).
    let shim = |c: &str, w: &str| {
        output(docker().args([
            "exec",
            c,
            "/run/unbaked/bin/unbaked",
            "--socket",
            "/run/unbaked/broker.sock",
            "exec",
            "--workload",
            w,
            "--",
            "/bin/sh",
            "-c",
            "printf %s \"$API_TOKEN\" | rev",
        ]))
    };
    let other = shim(&billing[0], "reports");
    assert_eq!(other.status.code(), Some(3), "{}", text(&other.stderr));
    assert_no_secret_in("a denied fetch", &other.stdout);
    let own = shim(&billing[0], "billing");
    assert!(own.status.success(), "{}", text(&own.stderr));
    assert_eq!(text(&own.stdout), rev(BILLING_API));
    let other = shim(&reports[0], "billing");
    assert_eq!(other.status.code(), Some(3), "{}", text(&other.stderr));

    // Each replica holds its own lease.
    let granted: BTreeSet<String> = b
        .audit_records()
        .iter()
        .filter(|r| r.event == "grant" && r.json["workload"] == "billing")
        .filter_map(|r| r.json["container"]["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(granted.len(), 2, "{}", b.audit_text());

    // Workload replicas cannot reach each other, nor the other workload;
    // a control pair on the project's plain network can.
    let reach = |from: &str, ip: &str| {
        let out = output(docker().args([
            "exec",
            from,
            "sh",
            "-c",
            &format!("nc -w 3 {ip} 8080 </dev/null; echo rc=$?"),
        ]));
        text(&out.stdout)
    };
    let got = reach(&billing[0], &ip_of(&billing[1], "unbaked-billing"));
    assert!(
        !got.contains("billing"),
        "replicas reached each other: {got}"
    );
    let got = reach(&billing[0], &ip_of(&reports[0], "unbaked-reports"));
    assert!(!got.contains("reports"), "billing reached reports: {got}");
    let default_net = format!("{p}_default");
    let web_ip = ip_of(&web[0], &default_net);
    let got = docker_ok(&[
        "run",
        "--rm",
        "--network",
        &default_net,
        image,
        &format!("nc -w 3 {web_ip} 8080 </dev/null"),
    ]);
    assert!(got.contains("web"), "the control pair did not reach: {got}");

    // A replica killed outright (its shim cannot revoke) loses its leases
    // through the engine's events: audited `revoke`, the death as reason.
    let held: BTreeSet<String> = b
        .audit_records()
        .iter()
        .filter(|r| r.event == "grant" && r.json["container"]["name"] == billing[1].as_str())
        .filter_map(|r| r.lease().map(str::to_string))
        .collect();
    assert_eq!(
        held.len(),
        2,
        "a file lease and an env lease: {}",
        b.audit_text()
    );
    docker_ok(&["kill", &billing[1]]);
    let died = || -> BTreeSet<String> {
        b.audit_records()
            .iter()
            .filter(|r| {
                r.event == "revoke"
                    && r.json["reason"]
                        .as_str()
                        .is_some_and(|x| x.contains("the container died"))
            })
            .filter_map(|r| r.lease().map(str::to_string))
            .collect()
    };
    assert!(
        eventually(60, || held.is_subset(&died())),
        "the killed replica's leases did not end: {}",
        b.audit_text()
    );

    // override), in the broker's log or audit, or in the project directory.
    for c in billing.iter().chain(&reports).chain(&web) {
        let out = output(docker().args(["inspect", c]));
        assert!(out.status.success());
        assert_no_secret_in("docker inspect", &out.stdout);
    }
    let plain_args = with(&["config"]);
    let plain_args: Vec<&str> = plain_args.iter().map(String::as_str).collect();
    let plain = output(&mut cli.plain(&plain_args));
    assert!(plain.status.success(), "{}", text(&plain.stderr));
    assert_no_secret_in("docker-compose config", &plain.stdout);
    let merged = output(compose(&b, &["--"]).args(with(&["config"])));
    assert!(merged.status.success(), "{}", text(&merged.stderr));
    assert!(text(&merged.stdout).contains("unbaked-billing"));
    assert_no_secret_in("compose config with the override", &merged.stdout);
    assert_eq!(
        files_under(&example_dir),
        before,
        "files appeared in the project"
    );

    // ps works through the wrapper; down ends every lease, audited.
    let ps = output(compose(&b, &["--"]).args(with(&["ps"])));
    assert!(ps.status.success(), "{}", text(&ps.stderr));
    assert!(
        text(&ps.stdout).contains(&billing[0]),
        "{}",
        text(&ps.stdout)
    );
    let down = output(compose(&b, &["--"]).args(with(&["down"])));
    assert!(down.status.success(), "{}", text(&down.stderr));
    assert!(containers(&p, "billing").is_empty());
    let leases: BTreeSet<String> = b
        .audit_records()
        .iter()
        .filter(|r| r.event == "grant")
        .filter_map(|r| r.lease().map(str::to_string))
        .collect();
    assert!(leases.len() >= 6, "{}", b.audit_text());
    let ended = || -> BTreeSet<String> {
        b.audit_records()
            .iter()
            .filter(|r| r.event == "revoke")
            .filter_map(|r| r.lease().map(str::to_string))
            .collect()
    };
    assert!(
        eventually(60, || leases.is_subset(&ended())),
        "leases left after down: {:?}\n{}",
        leases.difference(&ended()).collect::<Vec<_>>(),
        b.audit_text()
    );
    let health = daemon::http(&b.socket, "GET /v1/health HTTP/1.1", b"").unwrap();
    let health: serde_json::Value = serde_json::from_str(&health.body).unwrap();
    assert_eq!(health["leases"], 0, "{health}");
    assert!(
        mounts_under(b.dir.path()).is_empty(),
        "a host mount is left"
    );
    assert_no_secret_in("the broker's log", b.log_text().as_bytes());
    assert_no_secret_in("the audit file", b.audit_text().as_bytes());
}

#[test]
fn a_service_that_breaks_isolation_is_refused_before_any_container_exists() {
    let image = test_image();
    let w = unique("crefuse");
    let mut b = Broker::start(&[("w.toml", &policy(&w))]);
    b.put(&format!("{w}/db"), "password", BILLING_DB);
    b.put(&format!("{w}/api"), "token", BILLING_API);
    let tmp = tempfile::tempdir().unwrap();
    let p = unique("ucrefuse");
    let _project = Project {
        name: p.clone(),
        networks: vec![format!("unbaked-{w}")],
    };
    let ok = format!(
        "services:\n  ok:\n    image: {image}\n    labels:\n      io.unbaked.workload: {w}\n    command: [\"exec sleep 300\"]\n"
    );
    let bad = format!(
        "{ok}  bad:\n    image: {image}\n    labels:\n      io.unbaked.workload: {w}\n    privileged: true\n    command: [\"exec sleep 300\"]\n  \
         sock:\n    image: {image}\n    labels:\n      io.unbaked.workload: {w}\n    volumes:\n      - ./data:/data\n      - /var/run/docker.sock:/var/run/docker.sock\n    command: [\"exec sleep 300\"]\n"
    );
    let file = tmp.path().join("docker-compose.yml");
    std::fs::write(&file, &bad).unwrap();
    let f = file.display().to_string();
    let out = output(&mut compose(&b, &["--", "-p", &p, "-f", &f, "up", "-d"]));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    // Named: the service, the rule, the file and line of the field.
    assert!(
        err.contains(&format!(
            "{f}:11: service \"bad\" (workload \"{w}\"): isolation.privileged: --privileged"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{f}:19: service \"sock\" (workload \"{w}\"): isolation.docker_socket:"
        )),
        "{err}"
    );
    assert!(!err.contains("service \"ok\""), "{err}");
    let label = format!("label=com.docker.compose.project={p}");
    assert_eq!(docker_ok(&["ps", "-aq", "--filter", &label]), "");
    assert!(
        !output(docker().args(["network", "inspect", &format!("unbaked-{w}")]))
            .status
            .success(),
        "a refused project created the workload's network"
    );

    // Control: without those two the same project starts.
    std::fs::write(&file, &ok).unwrap();
    let out = output(&mut compose(&b, &["--", "-p", &p, "-f", &f, "up", "-d"]));
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        b.log_text()
    );
    let ok_c = containers(&p, "ok");
    assert_eq!(ok_c.len(), 1);
    assert!(eventually(60, || running(&ok_c[0])), "{}", logs(&ok_c[0]));
    // `down` works while the broker is away (it plans nothing); `up` does not.
    b.kill();
    let out = output(&mut compose(&b, &["--", "-p", &p, "-f", &f, "up", "-d"]));
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let out = output(&mut compose(&b, &["--", "-p", &p, "-f", &f, "down"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("without the override"));
    assert!(containers(&p, "ok").is_empty());
}

fn text_of(b: &[u8]) -> String {
    text(b)
}

/// The 1-based line of the first line of `text` that holds `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in the fixture"))
        + 1
}

/// What a service can ask of the engine past the launch plan's options:
/// another service's pid or ipc namespace, compose's own secrets, a config
/// that is a host file, a privileged lifecycle hook, labels from a file, a
/// field unbaked does not know, a service of an inactive profile. Each is
/// refused (with its rule and `file:line`) before anything starts.
#[test]
fn service_fields_past_the_plan_are_refused_each_at_its_line() {
    let image = test_image();
    let w = unique("cfields");
    let b = Broker::start(&[("w.toml", &policy(&w))]);
    let tmp = tempfile::tempdir().unwrap();
    let p = unique("ucfields");
    let _project = Project {
        name: p.clone(),
        networks: vec![format!("unbaked-{w}")],
    };
    let svc = |name: &str, extra: &str| {
        format!("  {name}:\n    image: {image}\n    labels:\n      io.unbaked.workload: {w}\n    command: [\"exec sleep 300\"]\n{extra}")
    };
    let text = [
        "services:\n".to_string(),
        svc("ok", ""),
        svc("pidshare", "    pid: service:ok\n"),
        svc("ipcshare", "    ipc: \"service:ok\"\n"),
        svc("sec", "    secrets: [token]\n"),
        svc(
            "cfg",
            "    configs:\n      - source: engine\n        target: /engine.sock\n",
        ),
        svc(
            "hook",
            "    post_start:\n      - command: id\n        privileged: true\n",
        ),
        svc("unknown", "    provider: {type: model}\n"),
        svc("dbg", "    profiles: [debug]\n    privileged: true\n"),
        format!("  lbl:\n    image: {image}\n    label_file: ./labels\n"),
        "secrets:\n  token: {file: ./token}\nconfigs:\n  engine: {file: /var/run/docker.sock}\n"
            .to_string(),
    ]
    .concat();
    let file = tmp.path().join("docker-compose.yml");
    std::fs::write(&file, &text).unwrap();
    let f = file.display().to_string();
    let out = output(&mut compose(&b, &["--", "-p", &p, "-f", &f, "up", "-d"]));
    let err = text_of(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    // (a line of the field, lines below it, the service, the rule)
    let expected: [(&str, usize, &str, &str); 8] = [
        (
            "pid: service:ok",
            0,
            "pidshare",
            "isolation.host_pid: --pid container:ok",
        ),
        (
            "ipc: \"service:ok\"",
            0,
            "ipcshare",
            "isolation.host_ipc: --ipc container:ok",
        ),
        ("secrets: [token]", 0, "sec", "compose.secrets:"),
        (
            "- source: engine",
            0,
            "cfg",
            "isolation.docker_socket: --mount type=bind,source=/var/run/docker.sock",
        ),
        (
            "        privileged: true",
            0,
            "hook",
            "isolation.privileged: --privileged",
        ),
        ("provider:", 0, "unknown", "compose.unknown_field: provider"),
        (
            "profiles: [debug]",
            1,
            "dbg",
            "isolation.privileged: --privileged",
        ),
        ("label_file:", 0, "lbl", "compose.label_file:"),
    ];
    for (needle, below, service, rule) in expected {
        let want = format!(
            "{f}:{}: service {service:?}",
            line_of(&text, needle) + below
        );
        assert!(
            err.lines()
                .any(|l| l.starts_with(&want) && l.contains(rule)),
            "{want} ... {rule} not in:\n{err}"
        );
    }
    assert!(!err.contains(": service \"ok\""), "{err}");
    let label = format!("label=com.docker.compose.project={p}");
    assert_eq!(docker_ok(&["ps", "-aq", "--filter", &label]), "");
    // policy check --compose finds the same (by the file as written).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.toml"), policy(&w)).unwrap();
    let check = output(
        unbaked(Path::new("/nonexistent.sock"))
            .args(["policy", "check"])
            .arg(dir.path())
            .arg("--compose")
            .arg(&file),
    );
    let human = text_of(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{human}");
    for needle in [
        "secrets: [token]",
        "- source: engine",
        "        privileged: true",
        "provider:",
    ] {
        assert!(
            human.contains(&format!(
                "{f}:{}:1: error[compose-service]",
                line_of(&text, needle)
            )),
            "{needle}: {human}"
        );
    }
}

/// `compose run`/`exec` options are judged like the service's own fields
/// (`run -v` the engine socket, `exec --privileged`), `run --entrypoint`
/// (it would replace the shim) and unknown options are refused; a `run`
/// with a command of its own still goes through the shim (control).
#[test]
fn run_and_exec_lines_are_judged_and_a_run_command_gets_its_secrets() {
    let image = test_image();
    let w = unique("crun");
    let b = Broker::start(&[("w.toml", &policy(&w))]);
    b.put(&format!("{w}/db"), "password", BILLING_DB);
    b.put(&format!("{w}/api"), "token", BILLING_API);
    let tmp = tempfile::tempdir().unwrap();
    let p = unique("ucrun");
    let _project = Project {
        name: p.clone(),
        networks: vec![format!("unbaked-{w}")],
    };
    let file = tmp.path().join("docker-compose.yml");
    std::fs::write(
        &file,
        format!("services:\n  app:\n    image: {image}\n    labels:\n      io.unbaked.workload: {w}\n    command: [\"exec sleep 300\"]\n"),
    )
    .unwrap();
    let f = file.display().to_string();
    let run = |rest: &[&str]| {
        let mut args = vec!["--", "-p", p.as_str(), "-f", f.as_str()];
        args.extend(rest);
        output(&mut compose(&b, &args))
    };
    for (rest, want) in [
        (
            &[
                "run",
                "--rm",
                "-T",
                "-v",
                "/var/run/docker.sock:/s",
                "app",
                "true",
            ][..],
            "isolation.docker_socket: --volume /var/run/docker.sock:/s",
        ),
        (
            &["run", "--rm", "-T", "--cap-add", "SYS_ADMIN", "app", "true"][..],
            "--cap-add SYS_ADMIN",
        ),
        (
            &["run", "--rm", "-T", "--entrypoint", "sh", "app"][..],
            "compose.run_entrypoint",
        ),
        (
            &["run", "--frobnicate", "app"][..],
            "not an option unbaked compose knows",
        ),
        (
            &["exec", "-T", "--privileged", "app", "id"][..],
            "isolation.privileged: --privileged",
        ),
    ] {
        let out = run(rest);
        let err = text_of(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{rest:?}: {err}");
        assert!(err.contains(want), "{rest:?}: {want} not in {err}");
    }
    let label = format!("label=com.docker.compose.project={p}");
    assert_eq!(docker_ok(&["ps", "-aq", "--filter", &label]), "");
    // Control: a run with its own command, through the shim: the file
    // grant is there, the env grant set.
    let out = run(&[
        "run",
        "--rm",
        "-T",
        "app",
        "test -s /run/secrets/db_password && test -n \"$API_TOKEN\" && echo run-got-both",
    ]);
    assert!(
        out.status.success() && text_of(&out.stdout).contains("run-got-both"),
        "{}{}\n{}",
        text_of(&out.stdout),
        text_of(&out.stderr),
        b.log_text()
    );
    assert_no_secret_in("compose run's output", &out.stdout);
}

/// `policy check DIR --compose FILE`: the services `unbaked compose` would
/// refuse, found before anyone runs it, with SARIF locations in the file.
#[test]
fn policy_check_reports_compose_services_that_break_their_isolation() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("web.toml"), policy("web")).unwrap();
    let file = dir.path().join("docker-compose.yml");
    let bad = "\
services:
  web:
    image: app:1
    labels:
      io.unbaked.workload: web
    privileged: true
    volumes:
      - ./data:/data
      - /var/run/docker.sock:/var/run/docker.sock
  other:
    image: app:1
    labels: [io.unbaked.workload=nobody]
  plain:
    image: app:1
    privileged: true
";
    std::fs::write(&file, bad).unwrap();
    let check = |format: &str| {
        output(
            unbaked(Path::new("/nonexistent.sock"))
                .args(["policy", "check"])
                .arg(&policies)
                .arg("--compose")
                .arg(&file)
                .args(["--format", format]),
        )
    };
    let out = check("human");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let human = text(&out.stdout);
    let f = file.display();
    for want in [
        format!("{f}:6:1: error[compose-service]: services.web.privileged: service \"web\" (workload \"web\"): isolation.privileged:"),
        format!("{f}:9:1: error[compose-service]: services.web.volumes[1]: service \"web\" (workload \"web\"): isolation.docker_socket:"),
        format!("{f}:12:1: error[compose-service]: services.other.labels: service \"other\" names workload \"nobody\""),
    ] {
        assert!(human.contains(&want), "{want}\nnot in:\n{human}");
    }
    // The relative bind and the unlabelled service are fine.
    assert_eq!(human.matches("compose-service").count(), 3, "{human}");
    let sarif: serde_json::Value = serde_json::from_slice(&check("sarif").stdout).unwrap();
    let lines: Vec<u64> = sarif["runs"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["ruleId"] == "compose-service")
        .map(|r| {
            let loc = &r["locations"][0]["physicalLocation"];
            assert!(loc["artifactLocation"]["uri"]
                .as_str()
                .unwrap()
                .ends_with("docker-compose.yml"));
            loc["region"]["startLine"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(lines, [6, 9, 12]);
    // Control: the same file without the breaches passes.
    let fixed = bad
        .replace("    privileged: true\n    volumes", "    volumes")
        .replace("      - /var/run/docker.sock:/var/run/docker.sock\n", "")
        .replace("nobody", "web");
    std::fs::write(&file, fixed).unwrap();
    let out = check("human");
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(!text(&out.stdout).contains("compose-service"));
}

/// A developer (uid 1000 in the docker group, not root) runs a project
/// whose workload service runs as a non-root user: the tmpfs is that
/// user's, the shim writes the files as it, the app reads them. The file
/// says `version: "2.4"`: the override carries the same version.
#[test]
fn a_non_root_developer_runs_a_service_with_a_non_root_user() {
    use std::os::unix::fs::PermissionsExt;
    const DEV: u32 = 1000;
    let image = test_image();
    let w = unique("cuser");
    let pol = policy(&w).replace(
        &format!("[launch]\nuids = [{}]", uid()),
        &format!("[launch]\nuids = [{DEV}]"),
    );
    assert!(pol.contains(&format!("uids = [{DEV}]")), "{pol}");
    let b = Broker::start(&[("w.toml", &pol)]);
    std::fs::set_permissions(b.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    b.put(&format!("{w}/db"), "password", REPORTS_DB);
    b.put(&format!("{w}/api"), "token", REPORTS_API);
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = tmp.path().join("docker-compose.yml");
    std::fs::write(
        &file,
        format!(
            "version: \"2.4\"\nservices:\n  app:\n    image: {image}\n    user: \"{DEV}:{DEV}\"\n    labels:\n      io.unbaked.workload: {w}\n    command:\n      - |\n        \
             printf 'file=%s\\n' \"$$(rev /run/secrets/db_password)\"\n        \
             printf 'env=%s\\n' \"$$(printf %s \"$$API_TOKEN\" | rev)\"\n        \
             ls -ln /run/secrets/db_password\n        \
             exec sleep 300\n"
        ),
    )
    .unwrap();
    let p = unique("ucuser");
    let _project = Project {
        name: p.clone(),
        networks: vec![format!("unbaked-{w}")],
    };
    let docker_gid = nix::unistd::Group::from_name("docker")
        .unwrap()
        .expect("the docker group (scripts/install-docker-deps)")
        .gid
        .as_raw();
    let as_dev = |rest: &[&str]| {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={DEV}"))
            .arg(format!("--regid={DEV}"))
            .arg(format!("--groups={docker_gid}"))
            .arg(BIN)
            .arg("compose")
            .arg("--")
            .args(["-p", &p, "-f"])
            .arg(&file)
            .args(rest)
            .env("UNBAKED_SOCKET", &b.socket)
            .env("UNBAKED_SHIM", static_binary())
            .env("HOME", tmp.path())
            .current_dir(tmp.path());
        output(&mut c)
    };
    let up = as_dev(&["up", "-d"]);
    assert!(
        up.status.success(),
        "{}\n{}",
        text(&up.stderr),
        b.log_text()
    );
    let app = containers(&p, "app");
    assert_eq!(app.len(), 1);
    assert!(
        eventually(60, || logs(&app[0]).contains("db_password")),
        "{}\n{}",
        logs(&app[0]),
        b.log_text()
    );
    let l = logs(&app[0]);
    assert!(l.contains(&format!("file={}\n", rev(REPORTS_DB))), "{l}");
    assert!(l.contains(&format!("env={}\n", rev(REPORTS_API))), "{l}");
    assert!(
        l.contains(&format!("-r--------    1 {DEV}     {DEV}")),
        "{l}"
    );
    let down = as_dev(&["down"]);
    assert!(down.status.success(), "{}", text(&down.stderr));
    assert!(containers(&p, "app").is_empty());
}
