//! Isolation verified at issuance: a container's live configuration, as the
//! engine reports it, against its workload's `[isolation]`.
//!
//! **Invariant:** no I/O here. `attest::docker` inspects the container and
//! its networks and hands the facts in as a [`LiveContainer`]; [`check`]
//! only judges, so every rule is unit-tested without an engine.

use std::collections::BTreeMap;
use unbaked_policy::Isolation;

/// The Docker Engine's socket paths (and the container runtime's): a mount of
/// any of them, or of a directory above one, hands over the host.
pub const RUNTIME_SOCKETS: &[&str] = &[
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/var/run/containerd/containerd.sock",
    "/run/containerd/containerd.sock",
];

/// The bridge driver option that turns inter-container traffic off.
pub const ICC_OPTION: &str = "com.docker.network.bridge.enable_icc";

/// A running container as the engine reports it (docker inspect), with the
/// networks it is attached to (docker network inspect).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveContainer {
    /// The full 64-hex id.
    pub id: String,
    /// Without docker's leading `/`.
    pub name: String,
    pub running: bool,
    /// The pid of its first process, as the host sees it.
    pub pid: Option<i64>,
    pub labels: BTreeMap<String, String>,
    /// `sha256:...`
    pub image_id: String,
    pub privileged: bool,
    /// `HostConfig.NetworkMode`: `default`, `bridge`, `host`, `none`,
    /// `container:<id>` or a network name.
    pub network_mode: String,
    /// `HostConfig.PidMode`: empty, `host` or `container:<id>`.
    pub pid_mode: String,
    /// `HostConfig.IpcMode`: `private`, `shareable`, `host`, `container:<id>`, ...
    pub ipc_mode: String,
    pub readonly_rootfs: bool,
    /// As given, e.g. `NET_ADMIN` or `CAP_NET_ADMIN`.
    pub cap_add: Vec<String>,
    pub security_opt: Vec<String>,
    /// Device nodes handed in with `--device`.
    pub devices: Vec<String>,
    pub mounts: Vec<LiveMount>,
    pub networks: Vec<LiveNetwork>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveMount {
    /// `bind`, `volume`, `tmpfs`, ...
    pub kind: String,
    /// Host path for binds (the volume's data path for volumes).
    pub source: String,
    pub destination: String,
    pub rw: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveNetwork {
    pub name: String,
    pub id: String,
    /// `bridge`, `null` (the `none` network), `host`, `overlay`, ...
    pub driver: String,
    /// The driver options (`com.docker.network.bridge.enable_icc`, ...).
    pub options: BTreeMap<String, String>,
}

impl LiveNetwork {
    /// Whether this network lets other containers reach this one.
    fn isolates(&self) -> bool {
        self.driver == "null"
            || self.name == "none"
            || (self.driver == "bridge"
                && self.options.get(ICC_OPTION).map(String::as_str) == Some("false"))
    }
}

/// One broken rule: `rule` is a stable id (`isolation.icc`, ...), `reason`
/// a sentence saying what is wrong and what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub rule: &'static str,
    pub reason: String,
}

/// A capability name as Docker and the policy write it: upper case, no `CAP_`.
pub fn normalize_cap(cap: &str) -> String {
    let up = cap.trim().to_ascii_uppercase();
    up.strip_prefix("CAP_").map_or(up.clone(), str::to_string)
}

/// Collapse `//`, `.` and `..` and read `/var/run` as `/run` (a symlink on
/// every current distribution), without touching the file system.
pub fn lexical_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut out = format!("/{}", parts.join("/"));
    if out == "/var/run" || out.starts_with("/var/run/") {
        out = out["/var".len()..].to_string();
    }
    out
}

/// The runtime socket that mounting `source` exposes (the socket itself or a
/// directory above it), if any. `extra` adds sockets of this host (e.g. the
/// resolved `DOCKER_HOST`).
pub fn exposed_socket(source: &str, extra: &[String]) -> Option<String> {
    let src = lexical_path(source);
    RUNTIME_SOCKETS
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
        .find(|sock| {
            let sock = lexical_path(sock);
            src == sock || src == "/" || sock.starts_with(&format!("{src}/"))
        })
        .map(str::to_string)
}

/// Every rule the container breaks; empty means it may receive secrets.
/// `sockets` are extra runtime socket paths of this host.
pub fn check(iso: &Isolation, c: &LiveContainer, sockets: &[String]) -> Vec<Violation> {
    let mut v = Vec::new();
    let short = c.id.get(..12).unwrap_or(&c.id);
    let who = if c.name.is_empty() {
        format!("container {short}")
    } else {
        format!("container {short} ({})", c.name)
    };
    let mut push = |rule: &'static str, reason: String| v.push(Violation { rule, reason });

    if !c.running {
        push(
            "isolation.running",
            format!("{who} is not running: only a running container can be verified"),
        );
    }
    if c.privileged && !iso.privileged {
        push(
            "isolation.privileged",
            format!("{who} runs privileged but [isolation] privileged = false: start it without --privileged"),
        );
    }
    let host_net = c.network_mode == "host" || c.networks.iter().any(|n| n.driver == "host");
    if host_net && !iso.host_network {
        push(
            "isolation.host_network",
            format!("{who} uses the host's network namespace but [isolation] host_network = false: start it without --network host"),
        );
    }
    if !iso.inter_container_traffic {
        if let Some(other) = c.network_mode.strip_prefix("container:") {
            push(
                "isolation.icc",
                format!(
                    "{who} shares the network namespace of container {} but [isolation] inter_container_traffic = false: start it on its own network",
                    other.get(..12).unwrap_or(other)
                ),
            );
        }
        for n in c
            .networks
            .iter()
            .filter(|n| n.driver != "host" && !n.isolates())
        {
            push(
                "isolation.icc",
                format!(
                    "{who} is attached to network {:?}, which allows inter-container traffic, but [isolation] inter_container_traffic = false: attach it only to networks created with -o {ICC_OPTION}=false (as `unbaked run` does) or to none",
                    n.name
                ),
            );
        }
    }
    for (field, mode, allowed, flag) in [
        ("host_pid", &c.pid_mode, iso.host_pid, "--pid"),
        ("host_ipc", &c.ipc_mode, iso.host_ipc, "--ipc"),
    ] {
        let rule = if field == "host_pid" {
            "isolation.host_pid"
        } else {
            "isolation.host_ipc"
        };
        if allowed {
            continue;
        }
        if mode == "host" {
            push(
                rule,
                format!("{who} uses the host's {} namespace but [isolation] {field} = false: start it without {flag} host", &field[5..]),
            );
        } else if let Some(other) = mode.strip_prefix("container:") {
            push(
                rule,
                format!(
                    "{who} shares the {} namespace of container {} but [isolation] {field} = false: start it without {flag} container:...",
                    &field[5..],
                    other.get(..12).unwrap_or(other)
                ),
            );
        }
    }
    if !iso.docker_socket {
        for m in &c.mounts {
            if m.kind != "bind" {
                continue;
            }
            if let Some(sock) = exposed_socket(&m.source, sockets) {
                push(
                    "isolation.docker_socket",
                    format!(
                        "{who} mounts {} at {}, which exposes the container runtime's socket {sock}, but [isolation] docker_socket = false: remove that mount",
                        m.source, m.destination
                    ),
                );
            }
        }
    }
    if iso.read_only_rootfs && !c.readonly_rootfs {
        push(
            "isolation.read_only_rootfs",
            format!("{who} has a writable root filesystem but [isolation] read_only_rootfs = true: start it with --read-only (and --tmpfs for the paths it writes)"),
        );
    }
    let allowed: Vec<String> = iso.cap_add.iter().map(|c| normalize_cap(c)).collect();
    for cap in &c.cap_add {
        let n = normalize_cap(cap);
        if !allowed.contains(&n) && !allowed.iter().any(|a| a == "ALL") {
            push(
                "isolation.cap_add",
                format!(
                    "{who} adds capability {n}, which [isolation] cap_add {allowed:?} does not allow: drop --cap-add {n} or add it to the policy"
                ),
            );
        }
    }
    for opt in &c.security_opt {
        if let Some(what) = weakening_security_opt(opt) {
            push(
                "isolation.security_opt",
                format!("{who} runs with --security-opt {opt} ({what}): remove it"),
            );
        }
    }
    if !c.devices.is_empty() {
        push(
            "isolation.device",
            format!(
                "{who} has host devices {:?} handed in: start it without --device",
                c.devices
            ),
        );
    }
    v
}

/// Why a `--security-opt` value weakens isolation, if it does. Docker takes
/// both `key=value` and the old `key:value`.
pub fn weakening_security_opt(opt: &str) -> Option<&'static str> {
    let (k, val) = opt.split_once(['=', ':']).unwrap_or((opt, ""));
    match (k.trim(), val.trim()) {
        ("seccomp", "unconfined") => Some("no seccomp filter"),
        ("apparmor", "unconfined") => Some("no AppArmor profile"),
        ("label", "disable") => Some("no SELinux labelling"),
        ("systempaths", "unconfined") => Some("the kernel's /proc and /sys paths unmasked"),
        ("no-new-privileges", "false") => Some("setuid binaries may gain privileges"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1c2b3a4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";

    fn net(name: &str, driver: &str, icc: Option<&str>) -> LiveNetwork {
        LiveNetwork {
            name: name.into(),
            id: format!("{name}-id"),
            driver: driver.into(),
            options: icc
                .map(|v| BTreeMap::from([(ICC_OPTION.to_string(), v.to_string())]))
                .unwrap_or_default(),
        }
    }

    /// A container that passes the default (strictest) isolation.
    fn compliant() -> LiveContainer {
        LiveContainer {
            id: ID.into(),
            name: "billing-1".into(),
            running: true,
            pid: Some(4242),
            image_id: "sha256:00".into(),
            network_mode: "unbaked-billing".into(),
            ipc_mode: "private".into(),
            readonly_rootfs: true,
            networks: vec![net("unbaked-billing", "bridge", Some("false"))],
            mounts: vec![LiveMount {
                kind: "bind".into(),
                source: "/run/unbaked/broker.sock".into(),
                destination: "/run/unbaked/broker.sock".into(),
                rw: false,
            }],
            ..LiveContainer::default()
        }
    }

    fn rules(iso: &Isolation, c: &LiveContainer) -> Vec<&'static str> {
        check(iso, c, &[]).into_iter().map(|v| v.rule).collect()
    }

    #[test]
    fn a_compliant_container_passes() {
        assert_eq!(
            rules(&Isolation::default(), &compliant()),
            Vec::<&str>::new()
        );
        let mut none = compliant();
        none.network_mode = "none".into();
        none.networks = vec![net("none", "null", None)];
        assert!(rules(&Isolation::default(), &none).is_empty());
    }

    #[test]
    fn every_icc_network_is_named() {
        let mut c = compliant();
        c.networks.push(net("bridge", "bridge", Some("true")));
        c.networks.push(net("custom", "bridge", None));
        c.networks.push(net("ov", "overlay", None));
        let v = check(&Isolation::default(), &c, &[]);
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(v.iter().all(|v| v.rule == "isolation.icc"));
        assert!(
            v[0].reason.contains("network \"bridge\""),
            "{}",
            v[0].reason
        );
        assert!(v[0]
            .reason
            .starts_with("container 4f1c2b3a4d5e (billing-1)"));
        let allow = Isolation {
            inter_container_traffic: true,
            ..Isolation::default()
        };
        assert!(rules(&allow, &c).is_empty());
    }

    #[test]
    fn shared_network_namespace_is_icc() {
        let mut c = compliant();
        c.network_mode = format!("container:{ID}");
        c.networks.clear();
        assert_eq!(rules(&Isolation::default(), &c), ["isolation.icc"]);
    }

    #[test]
    fn privileged_host_namespaces_and_caps() {
        let mut c = compliant();
        c.privileged = true;
        c.network_mode = "host".into();
        c.networks = vec![net("host", "host", None)];
        c.pid_mode = "host".into();
        c.ipc_mode = format!("container:{ID}");
        c.cap_add = vec!["CAP_NET_ADMIN".into(), "net_bind_service".into()];
        let iso = Isolation {
            cap_add: vec!["NET_BIND_SERVICE".into()],
            ..Isolation::default()
        };
        assert_eq!(
            rules(&iso, &c),
            [
                "isolation.privileged",
                "isolation.host_network",
                "isolation.host_pid",
                "isolation.host_ipc",
                "isolation.cap_add"
            ]
        );
        let v = check(&iso, &c, &[]);
        assert!(
            v[4].reason.contains("capability NET_ADMIN"),
            "{}",
            v[4].reason
        );
        assert!(
            v[3].reason.contains("shares the ipc namespace"),
            "{}",
            v[3].reason
        );
        let lax = Isolation {
            privileged: true,
            host_network: true,
            host_pid: true,
            host_ipc: true,
            cap_add: vec!["all".into()],
            ..Isolation::default()
        };
        assert!(rules(&lax, &c).is_empty());
    }

    #[test]
    fn docker_socket_mounts_are_found_through_parents_and_spellings() {
        for source in [
            "/var/run/docker.sock",
            "/run/docker.sock",
            "/var/run",
            "/run/",
            "/",
            "//var/./run/../run/docker.sock",
            "/run/containerd",
        ] {
            let mut c = compliant();
            c.mounts.push(LiveMount {
                kind: "bind".into(),
                source: source.into(),
                destination: "/x".into(),
                rw: true,
            });
            assert_eq!(
                rules(&Isolation::default(), &c),
                ["isolation.docker_socket"],
                "{source}"
            );
            let allow = Isolation {
                docker_socket: true,
                ..Isolation::default()
            };
            assert!(rules(&allow, &c).is_empty());
        }
        let mut c = compliant();
        c.mounts.push(LiveMount {
            kind: "bind".into(),
            source: "/srv/docker.sock".into(),
            destination: "/x".into(),
            rw: true,
        });
        assert!(rules(&Isolation::default(), &c).is_empty());
        let extra = vec!["/srv/docker.sock".to_string()];
        assert_eq!(check(&Isolation::default(), &c, &extra).len(), 1);
        // A volume is not a host path.
        c.mounts[1].kind = "volume".into();
        assert!(check(&Isolation::default(), &c, &extra).is_empty());
    }

    #[test]
    fn writable_rootfs_security_opts_devices_and_stopped() {
        let mut c = compliant();
        c.readonly_rootfs = false;
        c.security_opt = vec![
            "seccomp=unconfined".into(),
            "apparmor:unconfined".into(),
            "no-new-privileges".into(),
        ];
        c.devices = vec!["/dev/kmsg".into()];
        c.running = false;
        assert_eq!(
            rules(&Isolation::default(), &c),
            [
                "isolation.running",
                "isolation.read_only_rootfs",
                "isolation.security_opt",
                "isolation.security_opt",
                "isolation.device"
            ]
        );
        let rw_ok = Isolation {
            read_only_rootfs: false,
            ..Isolation::default()
        };
        c.security_opt.clear();
        c.devices.clear();
        c.running = true;
        assert!(rules(&rw_ok, &c).is_empty());
    }

    #[test]
    fn helpers() {
        assert_eq!(normalize_cap(" cap_sys_admin "), "SYS_ADMIN");
        assert_eq!(lexical_path("/var/run/../run//x/."), "/run/x");
        assert_eq!(lexical_path("/../.."), "/");
        assert_eq!(weakening_security_opt("no-new-privileges:true"), None);
        assert!(weakening_security_opt("label=disable").is_some());
    }
}
