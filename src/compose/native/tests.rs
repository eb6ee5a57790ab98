use super::*;
use crate::compose::locate::Located;
use crate::compose::service::{self, Project};
use std::collections::BTreeMap;

fn vars(k: &str) -> Option<String> {
    match k {
        "SET" => Some("v".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

#[test]
fn interpolation_as_compose_does_it() {
    for (text, want) in [
        ("plain", "plain"),
        ("$SET/${SET}", "v/v"),
        ("a$$b $${SET}", "a$b ${SET}"),
        ("${UNSET}-", "-"),
        ("${UNSET:-d} ${EMPTY:-d} ${SET:-d}", "d d v"),
        ("${UNSET-d} ${EMPTY-d} ${SET-d}", "d  v"),
        (
            "${UNSET:-/var/run/docker.sock}:/s",
            "/var/run/docker.sock:/s",
        ),
        ("$SET.x", "v.x"),
    ] {
        assert_eq!(interpolate(text, &vars).unwrap(), want, "{text}");
    }
    // What compose refuses or v1 does not know is compose's to say.
    for text in [
        "${UNSET:?required}",
        "${UNSET?required}",
        "${SET:+alt}",
        "${UNSET:-${SET}}",
        "${unclosed",
        "$ {SET}",
        "$1",
        "${}",
    ] {
        assert!(interpolate(text, &vars).is_err(), "{text}");
    }
}

#[test]
fn scalars_yaml_1_1_reads_otherwise_are_seen() {
    for v in [
        "yes", "No", "ON", "off", "y", "22:22", "1:20:30", "010", "1_000", "0x1f", "0o17",
    ] {
        assert!(yaml11_differs(v), "{v}");
    }
    for v in [
        "true",
        "false",
        "8080:80",
        "1000:1000",
        "0",
        "0.5",
        "1000",
        "busybox:1.36",
        "/a:/b",
        "host",
        "1.5",
    ] {
        assert!(!yaml11_differs(v), "{v}");
    }
}

/// A project directory holding `files` (name, text).
fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

/// `-f` each of `names` in `dir`.
fn split_files(dir: &Path, names: &[&str]) -> (Split, Files) {
    let mut split = Split::default();
    for n in names {
        let p = dir.join(n).display().to_string();
        split.globals.extend(["-f".to_string(), p.clone()]);
        split.files.push(p);
    }
    let files = super::super::args::files(&split, |_| None).unwrap();
    (split, files)
}

fn read_in(dir: &Path, names: &[&str]) -> Result<Native, Fallback> {
    let (split, files) = split_files(dir, names);
    read(&split, &files, &|_| None)
}

const BASE: &str =
    "services:\n  web:\n    image: busybox\n    labels: {io.unbaked.workload: web}\n";

#[test]
fn what_it_does_not_implement_falls_back() {
    let cases: &[(&str, &[(&str, &str)])] = &[
        ("extends", &[("a.yml", "services:\n  web:\n    extends: {file: b.yml, service: x}\n")]),
        ("merge key", &[("a.yml", "x-base: &b {privileged: true}\nservices:\n  web:\n    <<: *b\n    image: busybox\n")]),
        ("tag", &[("a.yml", "services:\n  web:\n    image: busybox\n    volumes: !reset []\n")]),
        ("yaml 1.1 boolean", &[("a.yml", "services:\n  web:\n    image: busybox\n    privileged: yes\n")]),
        ("quoted switch", &[("a.yml", "services:\n  web:\n    image: busybox\n    privileged: 'true'\n")]),
        ("interpolated switch", &[("a.yml", "services:\n  web:\n    image: busybox\n    privileged: ${PRIV:-false}\n")]),
        ("required variable", &[("a.yml", "services:\n  web:\n    image: ${IMAGE:?set IMAGE}\n")]),
        ("include", &[("a.yml", "include: [b.yml]\nservices: {}\n")]),
        ("version 1 layout", &[("a.yml", "web:\n  image: busybox\n")]),
        ("two documents", &[("a.yml", "services: {}\n---\nservices: {}\n")]),
        ("a number as a service name", &[("a.yml", "services:\n  123:\n    image: busybox\n    labels: {io.unbaked.workload: web}\n")]),
        ("home path", &[("a.yml", "services:\n  web:\n    image: busybox\n    volumes: ['~/x:/x']\n")]),
        ("env_file", &[("a.yml", "services:\n  web:\n    image: busybox\n    env_file: [vars.env]\n")]),
        (".env quotes", &[("a.yml", BASE), (".env", "A=\"x y\"\n")]),
        (".env COMPOSE_", &[("a.yml", BASE), (".env", "COMPOSE_FILE=b.yml\n")]),
    ];
    for (what, files) in cases {
        let dir = project(files);
        assert!(
            read_in(dir.path(), &["a.yml"]).is_err(),
            "{what} was read natively"
        );
    }
    // A list written for one service in two files.
    let dir = project(&[
        (
            "a.yml",
            "services:\n  web:\n    image: busybox\n    cap_add: [NET_ADMIN]\n",
        ),
        ("b.yml", "services:\n  web:\n    cap_add: [SYS_ADMIN]\n"),
    ]);
    assert!(read_in(dir.path(), &["a.yml", "b.yml"]).is_err());
    // Control: the common case is read.
    let dir = project(&[
        ("a.yml", BASE),
        (".env", "# a comment\nIMAGE=busybox:1.36\n"),
    ]);
    assert!(read_in(dir.path(), &["a.yml"]).is_ok());
}

/// What unbaked judges of a project: per labelled service its workload,
/// the command, the environment names and the rules its plan refuses
/// (against a policy that allows nothing extra), or why it is refused.
fn judged(doc: &Yaml, base: Option<&Path>, located: &[Located]) -> BTreeMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("web.toml"),
        "workload = \"web\"\n\n[match]\ndocker_labels = { app = \"web\" }\n\n[[grant]]\nsecret = \"web/db\"\nkey = \"password\"\nfile = \"db_password\"\nttl = \"1m\"\n",
    )
    .unwrap();
    let (sources, _) = unbaked_policy::read_dir_sources(dir.path());
    let set = unbaked_policy::from_sources(&sources).unwrap();
    let policy = set.iter().next().unwrap();
    let project = Project {
        name: "p",
        config: doc,
        files: located,
        base,
    };
    let mut out = BTreeMap::new();
    for (name, svc) in doc["services"].as_hash().unwrap() {
        let name = name.as_str().unwrap();
        let Some(w) = service::workload(svc) else {
            continue;
        };
        let line = match service::convert(name, svc, project) {
            Err(u) => format!("{w}: refused {}", u.reason),
            Ok(c) => {
                let mut rules: Vec<&str> = crate::compose::check::refusals(&c, policy, &set)
                    .iter()
                    .map(|r| r.rule)
                    .collect();
                rules.sort();
                let image = c.args.iter().position(|a| !a.starts_with("--")).unwrap();
                let mut env: Vec<&String> =
                    c.args.iter().filter(|a| a.starts_with("--env=")).collect();
                env.sort();
                format!("{w}: {rules:?} {env:?} {:?}", &c.args[image..])
            }
        };
        out.insert(name.to_string(), line);
    }
    out
}

/// The same project read by unbaked and by each compose CLI judges alike:
/// interpolation with defaults and `.env`, an override file merging labels
/// and replacing the command, a service of an inactive profile, relative
/// and named mounts, `pid: service:x`.
#[test]
fn the_common_case_is_read_as_both_compose_clis_read_it() {
    let base = "\
services:
  web:
    image: ${IMAGE:-busybox:1.36}
    labels:
      io.unbaked.workload: ${WORKLOAD}
    command: sh -c 'echo \"$$HOME\"'
    environment:
      A: '1'
      B: ${B_VALUE:-x}
    volumes:
      - ./data:/data
      - cache:/cache
      - ${SOCK:-/var/run/docker.sock}:/var/run/docker.sock
  debug:
    image: busybox
    profiles: [debug]
    labels: [io.unbaked.workload=web]
    pid: service:web
    cap_add: [SYS_PTRACE]
  plain:
    image: busybox
volumes:
  cache: {}
";
    let over = "\
services:
  web:
    labels: {tier: front}
    command: [sleep, '300']
    environment: {C: '2'}
";
    let dir = project(&[
        ("a.yml", base),
        ("b.yml", over),
        (".env", "WORKLOAD=web\nSOCK=/run/docker.sock\n"),
    ]);
    let names = ["a.yml", "b.yml"];
    let native = read_in(dir.path(), &names).expect("read natively");
    let (split, files) = split_files(dir.path(), &names);
    let located: Vec<Located> = files
        .paths
        .iter()
        .map(|p| Located::parse(p, &std::fs::read_to_string(p).unwrap()))
        .collect();
    let ours = judged(&native.doc, Some(&native.base), &located);
    assert_eq!(ours.len(), 2, "{ours:?}");
    assert!(ours["web"].contains("isolation.docker_socket"), "{ours:?}");
    assert!(ours["debug"].contains("isolation.host_pid"), "{ours:?}");
    let v2 = crate::compose::tests::compose_v2();
    for cli in [vec!["docker-compose".to_string()], vec![v2]] {
        let doc = super::super::project_config(&cli, &split.globals, &[])
            .unwrap_or_else(|e| panic!("{cli:?} config: {e}"));
        assert_eq!(judged(&doc, None, &located), ours, "{cli:?}");
    }
}

/// The security review's repros: each is read by compose v2 (and
/// docker-compose 1.29 where it reads it) otherwise than a naive reading
/// would, so unbaked leaves each to `compose config`.
#[test]
fn what_compose_reads_otherwise_falls_back() {
    let base = "services:\n  web:\n    image: busybox\n    labels: {io.unbaked.workload: web}\n    privileged: true\n    tmpfs: /a\n    dns: 1.1.1.1\n";
    let two_files: &[(&str, &str)] = &[
        ("null override", "services:\n  web:\n    privileged: null\n"),
        ("Null override", "services:\n  web:\n    privileged: Null\n"),
        ("NULL override", "services:\n  web:\n    privileged: NULL\n"),
        ("~ override", "services:\n  web:\n    privileged: ~\n"),
        ("empty override", "services:\n  web:\n    privileged:\n"),
        ("tmpfs string twice", "services:\n  web:\n    tmpfs: /b\n"),
        ("dns string twice", "services:\n  web:\n    dns: 8.8.8.8\n"),
    ];
    let v2 = vec![crate::compose::tests::compose_v2()];
    for (what, over) in two_files {
        let dir = project(&[("a.yml", base), ("b.yml", over)]);
        let Err(Fallback(why)) = read_in(dir.path(), &["a.yml", "b.yml"]) else {
            panic!("{what} was read natively");
        };
        assert!(
            ["null", "two files", "yaml-rust2"]
                .iter()
                .any(|w| why.contains(w)),
            "{what}: {why}"
        );
        // What compose runs: the base's privileged stays, the lists merge.
        let (split, _) = split_files(dir.path(), &["a.yml", "b.yml"]);
        let doc = super::super::project_config(&v2, &split.globals, &[]).unwrap();
        let web = &doc["services"]["web"];
        assert_eq!(web["privileged"].as_bool(), Some(true), "{what}");
        let merged = web["tmpfs"].as_vec().unwrap().len() + web["dns"].as_vec().unwrap().len();
        assert_eq!(merged, 2 + usize::from(what.contains("twice")), "{what}");
    }
    let one_file: &[(&str, &str, &str)] = &[
        (
            "network_mode: Null",
            "    network_mode: Null\n",
            "yaml-rust2",
        ),
        ("privileged: True", "    privileged: True\n", "yaml-rust2"),
        (
            "use_api_socket string",
            "    use_api_socket: 'true'\n",
            "switch",
        ),
        (
            "use_api_socket interpolated",
            "    use_api_socket: ${E:-true}\n",
            "switch",
        ),
    ];
    for (what, line, want) in one_file {
        let dir = project(&[("a.yml", &format!("{BASE}{line}"))]);
        let Err(Fallback(why)) = read_in(dir.path(), &["a.yml"]) else {
            panic!("{what} was read natively");
        };
        assert!(why.contains(want), "{what}: {why}");
    }
    for external in ["'true'", "${E:-true}"] {
        let text =
            format!("{BASE}    networks: [ext]\nnetworks:\n  ext:\n    external: {external}\n");
        let dir = project(&[("a.yml", &text)]);
        let Err(Fallback(why)) = read_in(dir.path(), &["a.yml"]) else {
            panic!("external: {external} was read natively");
        };
        assert!(why.contains("external"), "{why}");
    }
    // Control: the same fields in their plain forms are read natively.
    let text = format!("{BASE}    use_api_socket: false\n    tmpfs: /a\n    networks: [ext]\nnetworks:\n  ext:\n    external: true\n");
    let dir = project(&[
        ("a.yml", &text),
        (
            "b.yml",
            "services:\n  web:\n    privileged: false\n    network_mode: bridge\n",
        ),
    ]);
    let n = read_in(dir.path(), &["a.yml", "b.yml"]).expect("read natively");
    assert_eq!(
        n.doc["services"]["web"]["privileged"].as_bool(),
        Some(false)
    );
}
