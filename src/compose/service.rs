//! One compose service (as `compose config` prints it, merged and
//! interpolated) turned into the `docker run` arguments that ask for the
//! same container, so the broker's launch plan judges it with the same
//! checks and rule ids as `unbaked run`.
//!
//! Only the settings that bear on isolation, identity or the command are
//! converted; compose applies the rest itself from the user's files. An
//! `environment:` entry goes by name only: its value may be a secret of the
//! user's and never leaves compose.

use super::locate::{key, written, Located, Step};
use yaml_rust2::Yaml;

/// The label that makes a service a workload's.
pub const LABEL: &str = "io.unbaked.workload";

/// A converted service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Converted {
    /// The `docker run` arguments: options, image, command.
    pub args: Vec<String>,
    /// Each option as the plan spells it in a refusal (`--name value`),
    /// with the field it came from (under `services.NAME`).
    pub origins: Vec<(String, Vec<Step>)>,
    /// The options alone (`--name=value` or `--name`), for telling the
    /// plan's additions apart from the user's.
    pub options: Vec<(String, Option<String>)>,
}

/// Names compose gives the project's volumes and networks.
#[derive(Debug, Clone, Copy)]
pub struct Project<'a> {
    pub name: &'a str,
    pub config: &'a Yaml,
    pub files: &'a [Located],
    /// The directory relative bind sources are relative to: `None` for
    /// `compose config`'s output (already absolute), the file's own
    /// directory for a file read as written (`policy check --compose`).
    pub base: Option<&'a std::path::Path>,
}

impl Project<'_> {
    /// The engine's name of a project volume or network (`kind` is
    /// `volumes` or `networks`): its `name:`, else the key itself when
    /// external, else `<project>_<key>`.
    fn resource(&self, kind: &str, k: &str) -> String {
        let decl = &self.config[kind][k];
        if let Some(n) = decl["name"].as_str() {
            return n.to_string();
        }
        let external = &decl["external"];
        if external.as_bool() == Some(true) {
            return k.to_string();
        }
        if let Some(n) = external["name"].as_str() {
            return n.to_string();
        }
        format!("{}_{k}", self.name)
    }
}

/// The workload a service names, if any.
pub fn workload(service: &Yaml) -> Option<String> {
    label_pairs(&service["labels"])
        .into_iter()
        .find(|(k, _)| k == LABEL)
        .map(|(_, v)| v)
}

/// `labels:` as a mapping or a list of `KEY=VALUE`.
fn label_pairs(y: &Yaml) -> Vec<(String, String)> {
    match y {
        Yaml::Hash(h) => h
            .iter()
            .filter_map(|(k, v)| Some((scalar(k)?, scalar(v).unwrap_or_default())))
            .collect(),
        Yaml::Array(a) => a
            .iter()
            .filter_map(|i| {
                let s = scalar(i)?;
                let (k, v) = s.split_once('=').unwrap_or((&s, ""));
                Some((k.to_string(), v.to_string()))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A scalar as text (compose writes numbers and booleans unquoted).
pub fn scalar(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A list field, or a single string (compose allows both for some).
fn list(y: &Yaml) -> Vec<(usize, &Yaml)> {
    match y {
        Yaml::Array(a) => a.iter().enumerate().collect(),
        Yaml::BadValue | Yaml::Null => Vec::new(),
        other => vec![(0, other)],
    }
}

/// A command or entrypoint: a list, or one string split like a shell.
fn words(y: &Yaml, field: &str) -> Result<Option<Vec<String>>, String> {
    match y {
        Yaml::BadValue | Yaml::Null => Ok(None),
        Yaml::Array(a) => a
            .iter()
            .map(|w| scalar(w).ok_or_else(|| format!("{field}: every item must be a string")))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        other => {
            let s = scalar(other).ok_or_else(|| format!("{field}: a string or a list"))?;
            shlex::split(&s)
                .map(Some)
                .ok_or_else(|| format!("{field}: unbalanced quotes in {s:?}"))
        }
    }
}

/// A conversion under way.
struct Out {
    c: Converted,
}

impl Out {
    /// Add option `--name[=value]`, from the field at `at`.
    fn opt(&mut self, name: &str, value: Option<String>, at: Vec<Step>) {
        let spelled = match value.as_deref() {
            None | Some("") => format!("--{name}"),
            Some(v) => format!("--{name} {v}"),
        };
        self.c.args.push(match &value {
            None => format!("--{name}"),
            Some(v) => format!("--{name}={v}"),
        });
        self.c.origins.push((spelled, at));
        self.c.options.push((name.to_string(), value));
    }
}

/// Why a service cannot be converted, and the field (under
/// `services.NAME`) that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unconvertible {
    pub reason: String,
    pub at: Vec<Step>,
}

fn refuse<T>(reason: impl Into<String>, at: Vec<Step>) -> Result<T, Unconvertible> {
    Err(Unconvertible {
        reason: reason.into(),
        at,
    })
}

/// The service fields that ask nothing of the container's isolation (or
/// whose `docker run` option `unbaked run` passes unjudged too): compose
/// applies them from the user's files. A field on neither this list nor
/// the converted ones is refused, like an option `unbaked run` does not
/// know.
const PASSIVE: &[&str] = &[
    "annotations",
    "attach",
    "blkio_config",
    "build",
    "cgroup_parent",
    "container_name",
    "cpu_count",
    "cpu_percent",
    "cpu_period",
    "cpu_quota",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "cpu_shares",
    "cpus",
    "cpuset",
    "credential_spec",
    "depends_on",
    "develop",
    "dns",
    "dns_opt",
    "dns_search",
    "domainname",
    "env_file",
    "expose",
    "extra_hosts",
    "group_add",
    "healthcheck",
    "hostname",
    "isolation",
    "logging",
    "mac_address",
    "mem_limit",
    "mem_reservation",
    "mem_swappiness",
    "memswap_limit",
    "oom_kill_disable",
    "oom_score_adj",
    "pids_limit",
    "platform",
    "ports",
    "profiles",
    "pull_policy",
    "restart",
    "runtime",
    "scale",
    "shm_size",
    "stdin_open",
    "stop_grace_period",
    "stop_signal",
    "storage_opt",
    "sysctls",
    "tty",
    "ulimits",
    "working_dir",
];

/// The service fields `convert` turns into `docker run` options (or
/// refuses itself).
const CONVERTED: &[&str] = &[
    "image",
    "privileged",
    "read_only",
    "pid",
    "ipc",
    "uts",
    "userns_mode",
    "cgroup",
    "user",
    "network_mode",
    "networks",
    "cap_add",
    "cap_drop",
    "security_opt",
    "device_cgroup_rules",
    "tmpfs",
    "links",
    "external_links",
    "volumes_from",
    "devices",
    "init",
    "volumes",
    "labels",
    "environment",
    "entrypoint",
    "command",
    "configs",
    "secrets",
    "post_start",
    "pre_stop",
    "gpus",
    "deploy",
    "use_api_socket",
    "volume_driver",
];

/// The `docker run` arguments of service `name`, in the order `docker run`
/// would be written: options, image, command.
pub fn convert(name: &str, svc: &Yaml, project: Project<'_>) -> Result<Converted, Unconvertible> {
    let Some(image) = svc["image"].as_str() else {
        return refuse("has no image: a workload service must name its image (build it first and give it `image:`), so its entrypoint and command can be wrapped", vec![]);
    };
    known_fields(svc)?;
    if !svc["secrets"].is_badvalue() {
        return refuse("compose.secrets: compose's secrets are files on the host bind-mounted in (over the /run/secrets unbaked fills): give the workload a [[grant]] instead", field("secrets"));
    }
    let mut out = Out {
        c: Converted::default(),
    };
    single_settings(&mut out, svc);
    networks(&mut out, svc, name, project);
    list_settings(&mut out, svc);
    devices(&mut out, svc);
    if svc["init"].as_bool() == Some(true) {
        out.opt("init", None, field("init"));
    }
    for (i, v) in list(&svc["volumes"]) {
        let (flag, value) = volume(v, project).map_err(|reason| Unconvertible {
            reason,
            at: item("volumes", i),
        })?;
        out.opt(flag, Some(value), item("volumes", i));
    }
    configs(&mut out, svc, project)?;
    hooks_and_requests(&mut out, svc);
    labels(&mut out, svc);
    // Names only: the plan warns when a grant replaces one.
    for env_name in env_names(&svc["environment"]) {
        out.opt("env", Some(env_name), field("environment"));
    }
    command(&mut out, svc, image).map_err(|reason| Unconvertible { reason, at: vec![] })?;
    Ok(out.c)
}

/// Every field of the service is converted or passive.
fn known_fields(svc: &Yaml) -> Result<(), Unconvertible> {
    for k in svc.as_hash().into_iter().flat_map(|h| h.keys()) {
        let k = k.as_str().unwrap_or_default();
        if !(PASSIVE.contains(&k) || CONVERTED.contains(&k) || k.starts_with("x-")) {
            return refuse(
                format!("compose.unknown_field: {k}: not a field unbaked compose knows, so it cannot tell whether it weakens isolation: leave it out of a workload service"),
                field(k),
            );
        }
    }
    Ok(())
}

/// `configs:` as the read-only bind mounts compose makes of them (a
/// `file:` config; `content:` and `environment:` ones are written inside
/// the container and mount nothing of the host's). An `external` config
/// is Swarm's: refused.
fn configs(out: &mut Out, svc: &Yaml, project: Project<'_>) -> Result<(), Unconvertible> {
    for (i, c) in list(&svc["configs"]) {
        let at = item("configs", i);
        let (source, target) = match c {
            Yaml::Hash(_) => (scalar(&c["source"]), scalar(&c["target"])),
            other => (scalar(other), None),
        };
        let Some(source) = source else {
            return refuse("configs: an entry without its source", at);
        };
        let decl = &project.config["configs"][source.as_str()];
        let target = target.unwrap_or_else(|| format!("/{source}"));
        if let Some(file) = scalar(&decl["file"]) {
            let file = absolute(project, &file);
            out.opt(
                "mount",
                Some(format!("type=bind,source={file},target={target},readonly")),
                at,
            );
        } else if decl["content"].is_badvalue() && decl["environment"].is_badvalue() {
            return refuse(format!("compose.configs: config {source:?} is neither a file, content nor environment (an external config is Swarm's): declare it with file: or content:"), at);
        }
    }
    Ok(())
}

/// Lifecycle hooks (`post_start`, `pre_stop`: commands compose runs in the
/// container with `docker exec`) judged as the privileges they ask for,
/// and device requests (`gpus`, `deploy.resources.reservations.devices`)
/// and `use_api_socket` as their `docker run` options.
fn hooks_and_requests(out: &mut Out, svc: &Yaml) {
    for hook in ["post_start", "pre_stop"] {
        for (i, h) in list(&svc[hook]) {
            if h["privileged"].as_bool() == Some(true) {
                out.opt(
                    "privileged",
                    None,
                    vec![key(hook), Step::Index(i), key("privileged")],
                );
            }
        }
    }
    if !matches!(svc["gpus"], Yaml::BadValue | Yaml::Null) {
        out.opt("gpus", Some("all".into()), field("gpus"));
    }
    let requests = &svc["deploy"]["resources"]["reservations"]["devices"];
    if !matches!(requests, Yaml::BadValue | Yaml::Null) {
        let at = vec![
            key("deploy"),
            key("resources"),
            key("reservations"),
            key("devices"),
        ];
        out.opt("gpus", Some("all".into()), at);
    }
    if svc["use_api_socket"].as_bool() == Some(true) {
        out.opt("use-api-socket", None, field("use_api_socket"));
    }
    if let Some(d) = scalar(&svc["volume_driver"]) {
        out.opt("volume-driver", Some(d), field("volume_driver"));
    }
}

/// `services.NAME.<field>`, as a path under the service.
fn field(name: &str) -> Vec<Step> {
    vec![key(name)]
}

/// `services.NAME.<field>[i]`, as a path under the service.
fn item(name: &str, i: usize) -> Vec<Step> {
    vec![key(name), Step::Index(i)]
}

/// The single-valued settings: privileged, read-only, the namespaces, the
/// user, and `network_mode` (`service:x` and `container:x` share another
/// container's network namespace, which `docker run` spells `container:`).
fn single_settings(out: &mut Out, svc: &Yaml) {
    if svc["privileged"].as_bool() == Some(true) {
        out.opt("privileged", None, field("privileged"));
    }
    if let Some(ro) = svc["read_only"].as_bool() {
        out.opt("read-only", Some(ro.to_string()), field("read_only"));
    }
    // `service:x` shares another container's namespace, which `docker
    // run` spells `container:x` (and the plan judges as shared).
    for (name, flag) in [("pid", "pid"), ("ipc", "ipc")] {
        if let Some(v) = scalar(&svc[name]) {
            let v = match v.strip_prefix("service:") {
                Some(s) => format!("container:{s}"),
                None => v,
            };
            out.opt(flag, Some(v), field(name));
        }
    }
    for (name, flag) in [
        ("uts", "uts"),
        ("userns_mode", "userns"),
        ("cgroup", "cgroupns"),
        ("user", "user"),
    ] {
        if let Some(v) = scalar(&svc[name]) {
            out.opt(flag, Some(v), field(name));
        }
    }
    if let Some(mode) = scalar(&svc["network_mode"]) {
        let v = match mode.strip_prefix("service:") {
            Some(s) => format!("container:{s}"),
            None => mode,
        };
        out.opt("network", Some(v), field("network_mode"));
    }
}

/// The list settings that map one item to one repeated option
/// (`cap_add: [A, B]` is `--cap-add=A --cap-add=B`).
fn list_settings(out: &mut Out, svc: &Yaml) {
    for (name, flag) in [
        ("cap_add", "cap-add"),
        ("cap_drop", "cap-drop"),
        ("security_opt", "security-opt"),
        ("device_cgroup_rules", "device-cgroup-rule"),
        ("tmpfs", "tmpfs"),
        ("links", "link"),
        ("external_links", "link"),
        ("volumes_from", "volumes-from"),
    ] {
        for (i, v) in list(&svc[name]) {
            if let Some(v) = scalar(v) {
                out.opt(flag, Some(v), item(name, i));
            }
        }
    }
}

/// `devices:`, short (`SRC:DST:PERM`) or long (`source`, `target`,
/// `permissions`), as `--device SRC:DST[:PERM]`.
fn devices(out: &mut Out, svc: &Yaml) {
    for (i, d) in list(&svc["devices"]) {
        let v = match d {
            Yaml::Hash(_) => {
                let src = scalar(&d["source"]).unwrap_or_default();
                let dst = scalar(&d["target"]).unwrap_or_else(|| src.clone());
                match scalar(&d["permissions"]) {
                    Some(p) => format!("{src}:{dst}:{p}"),
                    None => format!("{src}:{dst}"),
                }
            }
            other => scalar(other).unwrap_or_default(),
        };
        out.opt("device", Some(v), item("devices", i));
    }
}

/// The service's labels but the workload label itself (the plan adds its
/// own), each as `--label KEY=VALUE`.
fn labels(out: &mut Out, svc: &Yaml) {
    for (k, v) in label_pairs(&svc["labels"]) {
        if k != LABEL {
            out.opt(
                "label",
                Some(format!("{k}={v}")),
                vec![key("labels"), key(&k)],
            );
        }
    }
}

/// `--entrypoint`, then the image and the command. docker's
/// `--entrypoint` is one program, so the rest of a compose `entrypoint:`
/// goes first in the command (docker drops the image's Cmd either way).
fn command(out: &mut Out, svc: &Yaml, image: &str) -> Result<(), String> {
    let entrypoint = words(&svc["entrypoint"], "entrypoint")?;
    let command = words(&svc["command"], "command")?;
    let mut tail = Vec::new();
    if let Some(ep) = entrypoint {
        let mut ep = ep.into_iter();
        out.opt(
            "entrypoint",
            Some(ep.next().unwrap_or_default()),
            field("entrypoint"),
        );
        tail.extend(ep);
    }
    tail.extend(command.unwrap_or_default());
    out.c.args.push(image.to_string());
    out.c.args.extend(tail);
    Ok(())
}

/// The service's networks by engine name. Compose v2 lists the project's
/// `default` network for every service that names none; only a network the
/// user's files name is judged (the override replaces an implicit default).
fn networks(out: &mut Out, svc: &Yaml, name: &str, project: Project<'_>) {
    let nets: Vec<String> = match &svc["networks"] {
        Yaml::Hash(h) => h.keys().filter_map(scalar).collect(),
        Yaml::Array(a) => a.iter().filter_map(scalar).collect(),
        _ => Vec::new(),
    };
    let declared = written(
        project.files,
        &[key("services"), key(name), key("networks")],
    );
    for n in nets {
        if n == "default" && !declared {
            continue;
        }
        out.opt(
            "network",
            Some(project.resource("networks", &n)),
            vec![key("networks"), key(&n)],
        );
    }
}

/// `environment:` variable names (mapping or `NAME=VALUE` list).
fn env_names(y: &Yaml) -> Vec<String> {
    match y {
        Yaml::Hash(h) => h.keys().filter_map(scalar).collect(),
        Yaml::Array(a) => a
            .iter()
            .filter_map(scalar)
            .map(|s| s.split('=').next().unwrap_or_default().to_string())
            .collect(),
        _ => Vec::new(),
    }
}

/// A relative host path from the project directory, made absolute and
/// cleaned of `.` and `..` as compose does (`compose config`'s are
/// absolute already).
fn absolute(project: Project<'_>, src: &str) -> String {
    use std::path::Component;
    match project.base {
        Some(base) if !src.starts_with(['/', '~']) && !src.is_empty() => {
            let mut out = std::path::PathBuf::new();
            for c in base.join(src).components() {
                match c {
                    Component::CurDir => {}
                    Component::ParentDir => {
                        out.pop();
                    }
                    other => out.push(other),
                }
            }
            out.display().to_string()
        }
        _ => src.to_string(),
    }
}

/// A `volumes:` entry: the short form as `--volume`, the long form as
/// `--mount`; a named volume by its engine name.
fn volume(v: &Yaml, project: Project<'_>) -> Result<(&'static str, String), String> {
    let named =
        |src: &str| !src.is_empty() && !src.starts_with(['/', '.', '~']) && !src.contains('/');
    let absolute = |src: &str| absolute(project, src);
    if let Some(s) = scalar(v) {
        let mut parts: Vec<String> = s.split(':').map(str::to_string).collect();
        if parts.len() >= 2 && named(&parts[0]) {
            parts[0] = project.resource("volumes", &parts[0]);
        } else if parts.len() >= 2 {
            parts[0] = absolute(&parts[0]);
        }
        return Ok(("volume", parts.join(":")));
    }
    let kind = scalar(&v["type"]).unwrap_or_else(|| "volume".into());
    let target = scalar(&v["target"]).ok_or("volumes: a long-form entry without target")?;
    let mut src = scalar(&v["source"]).unwrap_or_default();
    if kind == "volume" && named(&src) {
        src = project.resource("volumes", &src);
    } else if kind == "bind" {
        src = absolute(&src);
    }
    let mut fields = vec![format!("type={kind}")];
    if !src.is_empty() {
        fields.push(format!("source={src}"));
    }
    fields.push(format!("target={target}"));
    if v["read_only"].as_bool() == Some(true) {
        fields.push("readonly".into());
    }
    Ok(("mount", fields.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use yaml_rust2::YamlLoader;

    fn load(s: &str) -> Yaml {
        YamlLoader::load_from_str(s).unwrap().remove(0)
    }

    #[test]
    fn a_service_becomes_docker_run_arguments() {
        let config = load(
            "\
services:
  web:
    image: app:1
    privileged: true
    user: '1000:1000'
    labels: {io.unbaked.workload: web, tier: front}
    volumes:
      - data:/data:rw
      - /var/run/docker.sock:/var/run/docker.sock:rw
      - {type: bind, source: /srv, target: /srv, read_only: true}
    cap_add: [NET_ADMIN]
    environment: {DB_PASSWORD: hunter2}
    entrypoint: [/bin/sh, -c]
    command: echo 'hi there'
    networks: {default: null}
volumes:
  data: {}
",
        );
        let svc = &config["services"]["web"];
        assert_eq!(workload(svc).as_deref(), Some("web"));
        let c = convert(
            "web",
            svc,
            Project {
                name: "proj",
                config: &config,
                files: &[],
                base: None,
            },
        )
        .unwrap();
        assert_eq!(
            c.args,
            [
                "--privileged",
                "--user=1000:1000",
                "--cap-add=NET_ADMIN",
                "--volume=proj_data:/data:rw",
                "--volume=/var/run/docker.sock:/var/run/docker.sock:rw",
                "--mount=type=bind,source=/srv,target=/srv,readonly",
                "--label=tier=front",
                "--env=DB_PASSWORD",
                "--entrypoint=/bin/sh",
                "app:1",
                "-c",
                "echo",
                "hi there",
            ]
        );
        assert!(!c.args.iter().any(|a| a.contains("hunter2")));
        let (spelled, at) = &c.origins[4];
        assert_eq!(
            spelled,
            "--volume /var/run/docker.sock:/var/run/docker.sock:rw"
        );
        assert_eq!(at, &vec![key("volumes"), Step::Index(1)]);
        // An implicit default network is not judged; a declared one is.
        assert!(!c.args.iter().any(|a| a.starts_with("--network")));
    }

    #[test]
    fn a_service_without_image_is_refused() {
        let config = load("services:\n  web:\n    build: .\n");
        let e = convert(
            "web",
            &config["services"]["web"],
            Project {
                name: "p",
                config: &config,
                files: &[],
                base: None,
            },
        )
        .unwrap_err();
        assert!(e.reason.contains("has no image"), "{e:?}");
    }
}
