//! The launch plan of `unbaked run`: the user's `docker run` arguments,
//! checked against the workload's `[isolation]`, hardened, and wrapped
//! around the exec shim.
//!
//! **Invariant:** pure. [`parse`] and [`plan`] do no I/O (the broker
//! inspects the image and resolves bind sources first and hands the answers
//! in as [`Facts`]), so both can be fuzzed and unit-tested.
//! **Invariant:** a plan holds names, paths and labels, never a value: the
//! shim fetches values at run time over the broker socket.
//!
//! The refusals here are a courtesy to the user (fail before anything
//! starts, with the rule named); the guarantee is the check at issuance
//! ([`crate::isolation`]), which also covers containers started any other way.

use crate::isolation::{exposed_socket, lexical_path, normalize_cap, weakening_security_opt};
use std::collections::BTreeMap;
use unbaked_policy::{GrantDelivery, Policy};

/// Where the static `unbaked` binary is mounted inside the container.
pub const SHIM_PATH: &str = "/run/unbaked/bin/unbaked";
/// Where the broker socket is mounted inside the container.
pub const SOCKET_PATH: &str = "/run/unbaked/broker.sock";
/// Where the file grants appear inside the container.
pub const SECRETS_PATH: &str = "/run/secrets";
/// Labels `unbaked run` sets; users may not set them.
pub const LABEL_PREFIX: &str = "io.unbaked.";
pub const LABEL_WORKLOAD: &str = "io.unbaked.workload";
pub const LABEL_LAUNCH: &str = "io.unbaked.launch";

/// `docker run` options that take a value. Anything else starting with `-`
/// is a boolean flag from [`BOOL_FLAGS`] or unknown.
const VALUE_FLAGS: &[&str] = &[
    "add-host",
    "annotation",
    "attach",
    "blkio-weight",
    "blkio-weight-device",
    "cap-add",
    "cap-drop",
    "cgroup-parent",
    "cgroupns",
    "cidfile",
    "cpu-count",
    "cpu-percent",
    "cpu-period",
    "cpu-quota",
    "cpu-rt-period",
    "cpu-rt-runtime",
    "cpu-shares",
    "cpus",
    "cpuset-cpus",
    "cpuset-mems",
    "detach-keys",
    "device",
    "device-cgroup-rule",
    "device-read-bps",
    "device-read-iops",
    "device-write-bps",
    "device-write-iops",
    "dns",
    "dns-opt",
    "dns-option",
    "dns-search",
    "domainname",
    "entrypoint",
    "env",
    "env-file",
    "expose",
    "gpus",
    "group-add",
    "health-cmd",
    "health-interval",
    "health-retries",
    "health-start-interval",
    "health-start-period",
    "health-timeout",
    "hostname",
    "io-maxbandwidth",
    "io-maxiops",
    "ip",
    "ip6",
    "ipc",
    "isolation",
    "kernel-memory",
    "label",
    "label-file",
    "link",
    "link-local-ip",
    "log-driver",
    "log-opt",
    "mac-address",
    "memory",
    "memory-reservation",
    "memory-swap",
    "memory-swappiness",
    "mount",
    "name",
    "network",
    "network-alias",
    "oom-score-adj",
    "pid",
    "pids-limit",
    "platform",
    "publish",
    "pull",
    "restart",
    "runtime",
    "security-opt",
    "shm-size",
    "stop-signal",
    "stop-timeout",
    "storage-opt",
    "sysctl",
    "tmpfs",
    "ulimit",
    "user",
    "userns",
    "uts",
    "volume",
    "volume-driver",
    "volumes-from",
    "workdir",
];

const BOOL_FLAGS: &[&str] = &[
    "detach",
    "disable-content-trust",
    "help",
    "init",
    "interactive",
    "no-healthcheck",
    "oom-kill-disable",
    "privileged",
    "publish-all",
    "quiet",
    "read-only",
    "rm",
    "sig-proxy",
    "tty",
    "use-api-socket",
];

/// Short forms, as docker's flag parser knows them.
fn short(c: char) -> Option<&'static str> {
    Some(match c {
        'a' => "attach",
        'c' => "cpu-shares",
        'd' => "detach",
        'e' => "env",
        'h' => "hostname",
        'i' => "interactive",
        'l' => "label",
        'm' => "memory",
        'p' => "publish",
        'P' => "publish-all",
        'q' => "quiet",
        't' => "tty",
        'u' => "user",
        'v' => "volume",
        'w' => "workdir",
        _ => return None,
    })
}

fn canonical(name: &str) -> &str {
    match name {
        "net" => "network",
        "net-alias" => "network-alias",
        other => other,
    }
}

/// One option as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opt {
    /// The long name, canonical (`net` is `network`), or the unknown name.
    pub name: String,
    /// The value; for a boolean flag only when written `--flag=value`.
    pub value: Option<String>,
    /// The argument(s) it came from, passed on unchanged.
    pub raw: Vec<String>,
    /// Not a `docker run` option this parser knows.
    pub unknown: bool,
}

/// `docker run [OPTIONS] IMAGE [COMMAND] [ARG...]`, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub options: Vec<Opt>,
    pub image: String,
    pub command: Vec<String>,
}

/// A refused argument: the rule it breaks and why, saying what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub rule: &'static str,
    pub reason: String,
}

fn refusal(rule: &'static str, reason: impl Into<String>) -> Refusal {
    Refusal {
        rule,
        reason: reason.into(),
    }
}

/// Split the arguments the way docker's flag parser does: `--flag value`,
/// `--flag=value`, short clusters (`-it`, `-dite K=V`, `-eK=V`, `-e=K=V`),
/// `--` before the image.
pub fn parse(args: &[String]) -> Result<Parsed, Vec<Refusal>> {
    let mut options = Vec::new();
    let mut errors = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" {
            i += 1;
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let name = canonical(name);
            if VALUE_FLAGS.contains(&name) {
                let mut raw = vec![arg.clone()];
                let value = match inline {
                    Some(v) => v,
                    None => match args.get(i + 1) {
                        Some(v) => {
                            raw.push(v.clone());
                            i += 1;
                            v.clone()
                        }
                        None => {
                            errors.push(refusal(
                                "launch.args",
                                format!("--{name} needs a value: give it as --{name} VALUE"),
                            ));
                            break;
                        }
                    },
                };
                options.push(Opt {
                    name: name.into(),
                    value: Some(value),
                    raw,
                    unknown: false,
                });
            } else {
                let unknown = !BOOL_FLAGS.contains(&name);
                if unknown && inline.is_none() {
                    errors.push(refusal(
                        "launch.unknown_option",
                        format!("--{name} is not a docker run option unbaked knows, so it cannot tell whether it takes a value or weakens isolation: write it as --{name}=VALUE, or leave it out"),
                    ));
                }
                options.push(Opt {
                    name: name.into(),
                    value: inline,
                    raw: vec![arg.clone()],
                    unknown,
                });
            }
            i += 1;
            continue;
        }
        if arg.len() > 1 && arg.starts_with('-') {
            let cluster: Vec<char> = arg[1..].chars().collect();
            let mut raw = vec![arg.clone()];
            let mut found = Vec::new();
            let mut j = 0;
            while j < cluster.len() {
                let c = cluster[j];
                let Some(name) = short(c) else {
                    errors.push(refusal(
                        "launch.unknown_option",
                        format!("-{c} (in {arg}) is not a docker run option: check the spelling"),
                    ));
                    break;
                };
                if BOOL_FLAGS.contains(&name) {
                    found.push((name, None));
                    j += 1;
                    continue;
                }
                // A value flag takes the rest of the cluster, or the next argument.
                let rest: String = cluster[j + 1..].iter().collect();
                let rest = rest.strip_prefix('=').map(str::to_string).unwrap_or(rest);
                let value = if !rest.is_empty() {
                    rest
                } else if let Some(v) = args.get(i + 1) {
                    raw.push(v.clone());
                    i += 1;
                    v.clone()
                } else {
                    errors.push(refusal(
                        "launch.args",
                        format!("-{c} needs a value: give it as -{c} VALUE"),
                    ));
                    break;
                };
                found.push((name, Some(value)));
                break;
            }
            // Keep the cluster as one option per letter, but pass the raw
            // arguments once (on the first).
            for (k, (name, value)) in found.into_iter().enumerate() {
                options.push(Opt {
                    name: name.into(),
                    value,
                    raw: if k == 0 {
                        std::mem::take(&mut raw)
                    } else {
                        vec![]
                    },
                    unknown: false,
                });
            }
            i += 1;
            continue;
        }
        break;
    }
    let Some(image) = args.get(i) else {
        errors.push(refusal(
            "launch.args",
            "no image given: unbaked run [--workload NAME] -- [DOCKER RUN OPTIONS] IMAGE [COMMAND]",
        ));
        return Err(errors);
    };
    // After `--` any word is the image, but the plan drops the `--`: docker
    // would then read a leading '-' as an option (found by fuzzing).
    if image.starts_with('-') {
        errors.push(refusal(
            "launch.args",
            format!("{image:?} is not an image name: an image never starts with '-'"),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Parsed {
        options,
        image: image.clone(),
        command: args[i + 1..].to_vec(),
    })
}

/// What the broker found out before planning.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The image's `Config.Entrypoint` and `Config.Cmd`.
    pub image_entrypoint: Vec<String>,
    pub image_cmd: Vec<String>,
    /// Host path of the static `unbaked` binary.
    pub shim: String,
    /// Host path of the broker socket, and its group when not root's (so a
    /// non-root container user may connect).
    pub broker_socket: String,
    pub socket_gid: Option<u32>,
    /// The host tmpfs for the file grants, when the workload has any.
    pub secrets_dir: Option<String>,
    pub launch_id: String,
    /// Where the broker keeps every container's secrets tmpfs: never mountable.
    pub containers_dir: String,
    /// Extra runtime sockets of this host (e.g. the resolved `DOCKER_HOST`).
    pub sockets: Vec<String>,
    /// Bind sources as the host resolves them (symlinks followed).
    pub resolved: BTreeMap<String, String>,
}

/// The plan: the final `docker` arguments, and what to tell the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub args: Vec<String>,
    pub warnings: Vec<String>,
    /// `Some(name)` when the plan attaches the workload's ICC-disabled network.
    pub network: Option<String>,
}

/// The workload's own network: created with inter-container traffic off.
pub fn network_name(workload: &str) -> String {
    format!("unbaked-{workload}")
}

/// Go's strconv.ParseBool, as docker reads `--flag=value`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// `type=bind,source=/x,target=/y,readonly` → (type, source, target).
fn mount_fields(spec: &str) -> (String, Option<String>, Option<String>) {
    let (mut kind, mut src, mut dst) = ("volume".to_string(), None, None);
    for field in spec.split(',') {
        let (k, v) = field.split_once('=').unwrap_or((field, ""));
        let v = v.trim_matches('"').to_string();
        match k.trim().to_ascii_lowercase().as_str() {
            "type" => kind = v,
            "source" | "src" => src = Some(v),
            "target" | "destination" | "dst" => dst = Some(v),
            _ => {}
        }
    }
    (kind, src, dst)
}

/// Check the options against the policy and build the final arguments.
/// Every refusal is reported at once.
pub fn plan(parsed: &Parsed, policy: &Policy, facts: &Facts) -> Result<Plan, Vec<Refusal>> {
    let iso = &policy.isolation;
    let w = &policy.workload;
    let own_net = network_name(w);
    let mut refused = Vec::new();
    let mut warnings = Vec::new();
    let mut passed: Vec<String> = Vec::new();
    let mut use_own_network = true;
    let mut entrypoint: Option<Vec<String>> = None;
    let allowed_caps: Vec<String> = iso.cap_add.iter().map(|c| normalize_cap(c)).collect();
    let granted_vars: Vec<&str> = policy
        .grants
        .iter()
        .filter_map(|g| match &g.delivery {
            GrantDelivery::Env(n) | GrantDelivery::Fd(n) => Some(n.as_str()),
            GrantDelivery::File(_) => None,
        })
        .collect();
    let reserved_targets = [SECRETS_PATH, "/run/unbaked"];
    let check_source = |src: &str, spelled: &str, refused: &mut Vec<Refusal>| {
        if !src.starts_with('/') {
            return; // a named volume
        }
        let real = facts.resolved.get(src).map_or(src, String::as_str);
        if !iso.docker_socket {
            if let Some(sock) =
                exposed_socket(real, &facts.sockets).or_else(|| exposed_socket(src, &facts.sockets))
            {
                refused.push(refusal(
                    "isolation.docker_socket",
                    format!("{spelled} mounts {src}, which exposes the container runtime's socket {sock}, but [isolation] docker_socket = false in workload {w:?}: remove the mount"),
                ));
            }
        }
        let base = lexical_path(&facts.containers_dir);
        let real_l = lexical_path(real);
        if real_l == base
            || real_l.starts_with(&format!("{base}/"))
            || base.starts_with(&format!("{real_l}/"))
        {
            refused.push(refusal(
                "launch.secrets_dir",
                format!("{spelled} mounts {src}, which holds the secrets of unbaked's containers: remove the mount"),
            ));
        }
    };
    let check_target = |dst: &str, spelled: &str, refused: &mut Vec<Refusal>| {
        let d = lexical_path(dst);
        if reserved_targets
            .iter()
            .any(|r| d == *r || d.starts_with(&format!("{r}/")) || r.starts_with(&format!("{d}/")))
        {
            refused.push(refusal(
                "launch.mount_target",
                format!("{spelled} mounts over {dst}, where unbaked puts the secrets and its shim: choose another path"),
            ));
        }
    };

    for o in &parsed.options {
        let v = o.value.as_deref().unwrap_or("");
        let flag = format!("--{}", o.name);
        let spelled = if v.is_empty() {
            flag.clone()
        } else {
            format!("{flag} {v}")
        };
        let mut keep = true;
        match o.name.as_str() {
            "privileged"
                if o.value.as_deref().map_or(Some(true), parse_bool) != Some(false)
                    && !iso.privileged =>
            {
                refused.push(refusal(
                    "isolation.privileged",
                    format!("--privileged gives the container every capability and device, but [isolation] privileged = false in workload {w:?}: drop it, or add only the capabilities it needs to [isolation] cap_add"),
                ));
            }
            "network" => {
                if v == "host" {
                    use_own_network = false;
                    if !iso.host_network {
                        refused.push(refusal(
                            "isolation.host_network",
                            format!("{spelled} shares the host's network namespace, but [isolation] host_network = false in workload {w:?}: drop it; unbaked run attaches the network {own_net}"),
                        ));
                    }
                } else if v == "none" {
                    use_own_network = false;
                } else if v.starts_with("container:") {
                    use_own_network = false;
                    if !iso.inter_container_traffic {
                        refused.push(refusal(
                            "isolation.icc",
                            format!("{spelled} shares another container's network namespace, but [isolation] inter_container_traffic = false in workload {w:?}: drop it; unbaked run attaches the network {own_net}"),
                        ));
                    }
                } else if iso.inter_container_traffic {
                    use_own_network = false;
                } else {
                    refused.push(refusal(
                        "isolation.icc",
                        format!("{spelled}: unbaked run attaches the network {own_net}, created with inter-container traffic disabled, because [isolation] inter_container_traffic = false in workload {w:?}: drop --network (or use --network none)"),
                    ));
                }
            }
            "link" if !iso.inter_container_traffic => {
                refused.push(refusal(
                    "isolation.icc",
                    format!("{spelled} opens traffic to another container, but [isolation] inter_container_traffic = false in workload {w:?}: drop it"),
                ));
            }
            "pid" | "ipc" => {
                let (rule, field, allowed) = if o.name == "pid" {
                    ("isolation.host_pid", "host_pid", iso.host_pid)
                } else {
                    ("isolation.host_ipc", "host_ipc", iso.host_ipc)
                };
                if (v == "host" || v.starts_with("container:")) && !allowed {
                    refused.push(refusal(
                        rule,
                        format!("{spelled} shares a {} namespace, but [isolation] {field} = false in workload {w:?}: drop it", o.name),
                    ));
                }
            }
            "userns" if v == "host" => {
                refused.push(refusal(
                    "isolation.userns",
                    format!("{spelled} turns off the daemon's user-namespace remapping, so root in the container is root on the host: drop it"),
                ));
            }
            "volume" => {
                // SRC:DST[:OPTS]; a bare DST is an anonymous volume.
                let parts: Vec<&str> = v.split(':').collect();
                if parts.len() >= 2 {
                    check_source(parts[0], &spelled, &mut refused);
                    check_target(parts[1], &spelled, &mut refused);
                } else {
                    check_target(parts[0], &spelled, &mut refused);
                }
            }
            "mount" => {
                let (kind, src, dst) = mount_fields(v);
                if kind == "bind" {
                    if let Some(src) = &src {
                        check_source(src, &spelled, &mut refused);
                    }
                }
                if let Some(dst) = &dst {
                    check_target(dst, &spelled, &mut refused);
                }
            }
            "tmpfs" => {
                let dst = v.split(':').next().unwrap_or(v);
                check_target(dst, &spelled, &mut refused);
            }
            "cap-add" => {
                for cap in v.split(',').map(normalize_cap).filter(|c| !c.is_empty()) {
                    if !allowed_caps.contains(&cap) && !allowed_caps.iter().any(|a| a == "ALL") {
                        refused.push(refusal(
                            "isolation.cap_add",
                            format!("--cap-add {cap} is not in [isolation] cap_add {allowed_caps:?} of workload {w:?}: drop it or add it to the policy"),
                        ));
                    }
                }
            }
            "security-opt" => {
                if let Some(what) = weakening_security_opt(v) {
                    refused.push(refusal(
                        "isolation.security_opt",
                        format!("{spelled} leaves the container with {what}: drop it"),
                    ));
                }
            }
            "device" | "device-cgroup-rule" => {
                refused.push(refusal(
                    "isolation.device",
                    format!("{spelled} hands a host device to the container: unbaked run does not start containers with host devices"),
                ));
            }
            "read-only"
                if o.value.as_deref().and_then(parse_bool) == Some(false)
                    && iso.read_only_rootfs =>
            {
                refused.push(refusal(
                    "isolation.read_only_rootfs",
                    format!("--read-only=false, but [isolation] read_only_rootfs = true in workload {w:?}: drop it and mount --tmpfs where the container writes"),
                ));
            }
            "env" => {
                // Only the name: the value may be a secret of the user's.
                let name = v.split('=').next().unwrap_or(v);
                if granted_vars.contains(&name) {
                    warnings.push(format!(
                        "launch.env: -e {name} is replaced inside the container by the grant of workload {w:?} to {name}"
                    ));
                }
            }
            "label" => {
                let (k, val) = v.split_once('=').unwrap_or((v, ""));
                if k.starts_with(LABEL_PREFIX) {
                    refused.push(refusal(
                        "launch.label",
                        format!("--label {k}: labels under {LABEL_PREFIX} are set by unbaked run: drop it"),
                    ));
                } else if let Some(want) = policy.matcher.docker_labels.get(k) {
                    if want != val {
                        refused.push(refusal(
                            "launch.label",
                            format!("--label {k} differs from the value [match] docker_labels of workload {w:?} requires, which unbaked run sets itself: drop it"),
                        ));
                    }
                }
            }
            "entrypoint" => {
                keep = false;
                entrypoint = Some(if v.is_empty() {
                    vec![]
                } else {
                    vec![v.to_string()]
                });
            }
            _ if o.unknown => {
                warnings.push(format!(
                    "launch.unknown_option: {flag} is not a docker run option unbaked knows; passed on unchecked (the broker still verifies the running container)"
                ));
            }
            _ => {}
        }
        if keep {
            passed.extend(o.raw.iter().cloned());
        }
    }

    // Docker: an --entrypoint override drops the image's Cmd.
    let mut argv = match &entrypoint {
        Some(ep) => ep.clone(),
        None => facts.image_entrypoint.clone(),
    };
    if !parsed.command.is_empty() {
        argv.extend(parsed.command.iter().cloned());
    } else if entrypoint.is_none() {
        argv.extend(facts.image_cmd.iter().cloned());
    }
    if argv.is_empty() {
        refused.push(refusal(
            "launch.command",
            format!(
                "image {} has no entrypoint or command: give the command after the image",
                parsed.image
            ),
        ));
    }
    for (what, path) in [
        ("the shim", &facts.shim),
        ("the broker socket", &facts.broker_socket),
    ]
    .into_iter()
    .chain(
        facts
            .secrets_dir
            .iter()
            .map(|d| ("the secrets directory", d)),
    ) {
        if !path.starts_with('/') || path.contains([',', '"', '\n']) {
            refused.push(refusal(
                "launch.path",
                format!("{what} path {path:?} must be absolute and hold no comma or quote (it goes into a --mount)"),
            ));
        }
    }
    if !refused.is_empty() {
        return Err(refused);
    }

    let mut args = vec!["run".to_string()];
    args.extend(passed);
    let mut add = |a: &[&str]| args.extend(a.iter().map(|s| s.to_string()));
    add(&["--cap-drop", "ALL", "--security-opt", "no-new-privileges"]);
    if iso.read_only_rootfs {
        add(&["--read-only"]);
    }
    if use_own_network {
        add(&["--network", &own_net]);
    }
    add(&["--label", &format!("{LABEL_WORKLOAD}={w}")]);
    add(&["--label", &format!("{LABEL_LAUNCH}={}", facts.launch_id)]);
    for (k, v) in &policy.matcher.docker_labels {
        add(&["--label", &format!("{k}={v}")]);
    }
    if let Some(gid) = facts.socket_gid.filter(|g| *g != 0) {
        add(&["--group-add", &gid.to_string()]);
    }
    add(&[
        "--mount",
        &format!("type=bind,src={},dst={SHIM_PATH},readonly", facts.shim),
    ]);
    add(&[
        "--mount",
        &format!(
            "type=bind,src={},dst={SOCKET_PATH},readonly",
            facts.broker_socket
        ),
    ]);
    if let Some(dir) = &facts.secrets_dir {
        add(&[
            "--mount",
            &format!("type=bind,src={dir},dst={SECRETS_PATH},readonly"),
        ]);
    }
    add(&["--entrypoint", SHIM_PATH, &parsed.image]);
    add(&["--socket", SOCKET_PATH, "exec", "--workload", w, "--"]);
    args.extend(argv);
    Ok(Plan {
        args,
        warnings,
        network: use_own_network.then_some(own_net),
    })
}

/// A command line a shell reads back as the same words (for `--dry-run`).
pub fn shell_quote(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            let plain = !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b));
            if plain {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use unbaked_policy::{Grant, Isolation, Launch, Match, DEFAULT_TTL};

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
    fn parse_long_short_and_clusters() {
        let p = parse(&s(&[
            "-it",
            "--rm",
            "-e",
            "A=1",
            "--name=x",
            "-dve=B",
            "-p8080:80",
            "-e=C=3",
            "--net",
            "none",
            "img:1",
            "sh",
            "-c",
            "--privileged",
        ]))
        .unwrap();
        assert_eq!(p.image, "img:1");
        assert_eq!(p.command, s(&["sh", "-c", "--privileged"]));
        let names: Vec<(&str, Option<&str>)> = p
            .options
            .iter()
            .map(|o| (o.name.as_str(), o.value.as_deref()))
            .collect();
        assert_eq!(
            names,
            [
                ("interactive", None),
                ("tty", None),
                ("rm", None),
                ("env", Some("A=1")),
                ("name", Some("x")),
                ("detach", None),
                ("volume", Some("e=B")),
                ("publish", Some("8080:80")),
                ("env", Some("C=3")),
                ("network", Some("none")),
            ]
        );
        // `--` ends the options, but no image starts with '-' (the plan
        // drops the `--`, so docker would read it as an option).
        let e = parse(&s(&["--rm", "--", "-weird", "x"])).unwrap_err();
        assert_eq!(e[0].rule, "launch.args");
    }

    #[test]
    fn parse_errors_name_their_rule() {
        assert_eq!(parse(&s(&["--rm"])).unwrap_err()[0].rule, "launch.args");
        assert_eq!(parse(&s(&["--env"])).unwrap_err()[0].rule, "launch.args");
        assert_eq!(
            parse(&s(&["-z", "img"])).unwrap_err()[0].rule,
            "launch.unknown_option"
        );
        assert_eq!(
            parse(&s(&["--frobnicate", "img"])).unwrap_err()[0].rule,
            "launch.unknown_option"
        );
        // With its value attached, an unknown option is unambiguous.
        let p = parse(&s(&["--frobnicate=1", "img"])).unwrap();
        assert!(p.options[0].unknown);
        let plan = plan(&p, &policy(), &facts()).unwrap();
        assert!(
            plan.warnings[0].starts_with("launch.unknown_option"),
            "{:?}",
            plan.warnings
        );
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
            r[0].reason
                .contains("[isolation] privileged = false in workload \"billing\""),
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
            "run --rm -it -e API_TOKEN=mine -p 80:80 --cap-drop ALL --security-opt no-new-privileges --read-only \
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
}
