//! Isolation verified at issuance: a container's live configuration, as the
//! engine reports it, against its workload's `[isolation]`.
//!
//! **Invariant:** no I/O here. `attest::docker` inspects the container and
//! its networks and hands the facts in as a [`LiveContainer`]; [`check_protected`]
//! only judges, so every rule is unit-tested without an engine.
//!
//! Every predicate is written once, over a neutral [`Setting`] (one thing a
//! container runs with, whoever describes it): [`Judge::judge`] decides it.
//! The live check ([`check_protected`]) turns an inspected container into
//! settings; the launch plan ([`crate::launch`]) turns `docker run` options
//! into the same settings, so the two cannot drift.
//!
//! Mounts are judged by what the kernel says the source is (device and inode,
//! [`FileId`], filled in by [`crate::mount_identity`]), compared with the
//! [`Protected`] identities: the engine's socket, every directory above it,
//! its data root and every directory above that. The path text is checked
//! as well, as a second net, never as the only one.

use std::collections::BTreeMap;
use unbaked_policy::Isolation;

// The I/O half (stat, canonicalize). Declared here until `lib.rs` lists it.

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

/// A file as the kernel knows it: the device and inode `stat` reports after
/// following links. Two paths name the same file iff their ids are equal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// What no container may mount: the engine's socket, every directory above
/// it, the engine's data root and every directory above that, by identity
/// (from [`crate::mount_identity::protected`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protected {
    pub ids: Vec<FileId>,
}

impl Protected {
    pub fn contains(&self, id: &FileId) -> bool {
        self.ids.contains(id)
    }
}

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
    /// `HostConfig.UTSMode`: empty or `host`.
    pub uts_mode: String,
    /// `HostConfig.CgroupnsMode`: `private` or `host` (also the daemon's
    /// default on cgroup v1, so not judged here: see [`Namespace::Cgroup`]).
    pub cgroupns_mode: String,
    /// `HostConfig.UsernsMode`: empty or `host` (out of the daemon's remapping).
    pub userns_mode: String,
    /// What the kernel says: the user namespace of the container's init
    /// (`/proc/<pid>/ns/user`, by nsfs device and inode) is not the host's,
    /// so root in it is not the host's root. `false` when unknown.
    pub own_user_namespace: bool,
    pub readonly_rootfs: bool,
    /// As given, e.g. `NET_ADMIN` or `CAP_NET_ADMIN`.
    pub cap_add: Vec<String>,
    pub security_opt: Vec<String>,
    /// Device nodes handed in with `--device` (and `--device-cgroup-rule`s).
    pub devices: Vec<String>,
    /// `HostConfig.DeviceRequests` (`--gpus`), as `driver:capabilities`.
    pub device_requests: Vec<String>,
    /// `HostConfig.MaskedPaths`: the engine fills in its defaults at create
    /// time; `Some(empty)` is what `--security-opt systempaths=unconfined`
    /// leaves (it is not kept in `security_opt`).
    pub masked_paths: Option<Vec<String>>,
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
    /// What `source` is, by device and inode after following links
    /// ([`crate::mount_identity::file_id`]); `None` when it could not be read.
    pub source_id: Option<FileId>,
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
    pub fn isolates(&self) -> bool {
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

/// A namespace a container may share with the host or another container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    Network,
    Pid,
    Ipc,
    Uts,
    /// Judged by the launch plan only: on cgroup v1 `host` is the daemon's
    /// default, so the engine's answer cannot tell it from `--cgroupns host`.
    Cgroup,
    User,
}

impl Namespace {
    /// The `docker run` flag that sets it.
    pub fn flag(self) -> &'static str {
        match self {
            Namespace::Network => "--network",
            Namespace::Pid => "--pid",
            Namespace::Ipc => "--ipc",
            Namespace::Uts => "--uts",
            Namespace::Cgroup => "--cgroupns",
            Namespace::User => "--userns",
        }
    }

    fn word(self) -> &'static str {
        match self {
            Namespace::Network => "network",
            Namespace::Pid => "pid",
            Namespace::Ipc => "ipc",
            Namespace::Uts => "uts",
            Namespace::Cgroup => "cgroup",
            Namespace::User => "user",
        }
    }
}

/// One thing a container runs with, as `docker run` asks for it or as the
/// engine reports it: the neutral description every predicate judges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting<'a> {
    Privileged,
    /// A namespace mode: `host`, `container:<id>`, `private`, empty, ...
    Namespace(Namespace, &'a str),
    /// Attached to a network; `isolates`: ICC off (or the `none` network).
    Network {
        name: &'a str,
        isolates: bool,
    },
    /// `--link`: traffic opened to another container.
    Link(&'a str),
    /// Something of the host's mounted in: a bind source, or the device of a
    /// volume with bind options; `id` what the kernel says it is.
    Mount {
        kind: &'a str,
        source: &'a str,
        id: Option<FileId>,
    },
    /// `--use-api-socket`: the engine's socket mounted in by the CLI.
    ApiSocket,
    WritableRootfs,
    CapAdd(&'a str),
    SecurityOpt(&'a str),
    /// A host device node (`--device`, `--device-cgroup-rule`).
    Device(&'a str),
    /// A device request (`--gpus`).
    DeviceRequest(&'a str),
    /// Whether root in the container is someone other than the host's root:
    /// `own` when the engine remaps users (or is rootless), the container
    /// does not opt out (`--userns host`) and, live, the kernel puts its
    /// init in a user namespace other than the host's.
    UserNamespace {
        own: bool,
    },
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
/// directory above it), if any, by path text. `extra` adds sockets of this
/// host (e.g. the resolved `DOCKER_HOST`). A second net behind the identity
/// check ([`Protected`]), never the only one.
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

/// Go's strconv.ParseBool, as docker reads `--flag=value` and option values.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Why a `--security-opt` value weakens isolation, if it does. Docker takes
/// both `key=value` and the old `key:value`. Fail closed: only settings
/// known to keep Docker's defaults pass. A custom seccomp profile is refused
/// whatever it holds (proving it at least as strict as Docker's default is
/// not worth the risk of getting it wrong); so is any AppArmor profile but
/// `docker-default` and any SELinux label but a `level`.
pub fn weakening_security_opt(opt: &str) -> Option<&'static str> {
    let (k, val) = opt.split_once(['=', ':']).unwrap_or((opt, ""));
    let (k, val) = (k.trim(), val.trim());
    match k {
        "no-new-privileges" if val.is_empty() || parse_bool(val) == Some(true) => None,
        "no-new-privileges" => Some("setuid binaries may gain privileges"),
        "seccomp" if val == "unconfined" => Some("no seccomp filter"),
        "seccomp" => Some(
            "a custom seccomp profile, which unbaked does not accept in place of Docker's default",
        ),
        "apparmor" if val == "docker-default" => None,
        "apparmor" if val == "unconfined" => Some("no AppArmor profile"),
        "apparmor" => Some("an AppArmor profile other than docker-default"),
        "label" if val == "disable" => Some("no SELinux labelling"),
        "label" if val.starts_with("level") => None,
        "label" => Some("an SELinux user, role or type of its own choosing"),
        "systempaths" => Some("the kernel's /proc and /sys paths unmasked"),
        "writable-cgroups" if parse_bool(val) == Some(false) => None,
        "writable-cgroups" => Some("a writable cgroup file system"),
        _ => Some("an option unbaked does not know, so it cannot tell it is safe"),
    }
}

/// Judges [`Setting`]s against one workload's `[isolation]` on this host.
#[derive(Debug, Clone, Copy)]
pub struct Judge<'a> {
    pub iso: &'a Isolation,
    /// Extra runtime socket paths of this host (e.g. the resolved `DOCKER_HOST`).
    pub sockets: &'a [String],
    pub protected: &'a Protected,
    /// The live side with identities looked up: a bind or volume source
    /// whose identity is unknown is refused (the plan judges sources that
    /// may not exist yet, and so does not).
    pub live: bool,
}

fn broken(rule: &'static str, reason: String) -> Option<Violation> {
    Some(Violation { rule, reason })
}

fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

impl Judge<'_> {
    /// The rule `s` breaks, if any. The reason has no subject: the caller
    /// puts the container (live) or the flag (plan) in front of it.
    pub fn judge(&self, s: &Setting<'_>) -> Option<Violation> {
        let iso = self.iso;
        match *s {
            Setting::Privileged if !iso.privileged => broken(
                "isolation.privileged",
                "privileged mode gives the container every capability and device, but [isolation] privileged = false: start it without --privileged, or add only the capabilities it needs to [isolation] cap_add".into(),
            ),
            Setting::Namespace(ns, mode) => self.namespace(ns, mode),
            Setting::Network { name, isolates } if !isolates && !iso.inter_container_traffic => broken(
                "isolation.icc",
                format!("attached to network {name:?}, which allows inter-container traffic, but [isolation] inter_container_traffic = false: attach it only to networks created with -o {ICC_OPTION}=false (as `unbaked run` does) or to none"),
            ),
            Setting::Link(other) if !iso.inter_container_traffic => broken(
                "isolation.icc",
                format!("a link to {other:?} opens traffic to another container, but [isolation] inter_container_traffic = false: drop --link"),
            ),
            Setting::Mount { kind, source, id } => self.mount(kind, source, id),
            Setting::ApiSocket if !iso.docker_socket => broken(
                "isolation.docker_socket",
                "--use-api-socket mounts the engine's socket into the container, but [isolation] docker_socket = false: drop it".into(),
            ),
            Setting::WritableRootfs if iso.read_only_rootfs => broken(
                "isolation.read_only_rootfs",
                "a writable root filesystem, but [isolation] read_only_rootfs = true: start it with --read-only (and --tmpfs for the paths it writes)".into(),
            ),
            Setting::CapAdd(cap) => self.cap(cap),
            Setting::SecurityOpt(opt) => weakening_security_opt(opt).and_then(|what| {
                broken(
                    "isolation.security_opt",
                    format!("--security-opt {opt} leaves it with {what}: remove it"),
                )
            }),
            Setting::Device(d) => broken(
                "isolation.device",
                format!("host device {d:?} handed in: start it without --device or --device-cgroup-rule"),
            ),
            Setting::DeviceRequest(d) => broken(
                "isolation.device",
                format!("host devices requested ({d}): start it without --gpus"),
            ),
            Setting::UserNamespace { own: false } if iso.user_namespace => broken(
                "isolation.user_namespace",
                "root in the container is the host's root (no user namespace of its own), but [isolation] user_namespace = true: run the engine with userns-remap (or rootless) and start the container without --userns host".into(),
            ),
            _ => None,
        }
    }

    fn namespace(&self, ns: Namespace, mode: &str) -> Option<Violation> {
        let iso = self.iso;
        let (flag, word) = (ns.flag(), ns.word());
        let other = mode.strip_prefix("container:");
        let shared = mode == "host" || other.is_some();
        let what = match other {
            Some(o) => format!("shares the {word} namespace of container {}", short_id(o)),
            None => format!("uses the host's {word} namespace"),
        };
        let (rule, field) = match ns {
            Namespace::Network if other.is_some() && !iso.inter_container_traffic => {
                ("isolation.icc", "inter_container_traffic")
            }
            Namespace::Network if mode == "host" || other.is_some() => {
                if iso.host_network {
                    return None;
                }
                ("isolation.host_network", "host_network")
            }
            Namespace::Network => return None,
            Namespace::Pid if shared && !iso.host_pid => ("isolation.host_pid", "host_pid"),
            Namespace::Ipc if shared && !iso.host_ipc => ("isolation.host_ipc", "host_ipc"),
            Namespace::Pid | Namespace::Ipc => return None,
            Namespace::Uts | Namespace::Cgroup | Namespace::User
                if matches!(mode, "" | "private") =>
            {
                return None
            }
            Namespace::Uts => ("isolation.host_uts", ""),
            Namespace::Cgroup => ("isolation.host_cgroupns", ""),
            Namespace::User => ("isolation.userns", ""),
        };
        let why = match (ns, field) {
            (Namespace::User, _) => format!("{flag} {mode} turns off the daemon's user-namespace remapping, so root in the container is root on the host: start it without {flag}"),
            (_, "") => format!("{what}, which no workload may: start it without {flag} {mode}"),
            (_, field) => format!("{what}, but [isolation] {field} = false: start it without {flag} {mode}"),
        };
        broken(rule, why)
    }

    fn mount(&self, kind: &str, source: &str, id: Option<FileId>) -> Option<Violation> {
        if self.iso.docker_socket {
            return None;
        }
        let why = if id.is_some_and(|id| self.protected.contains(&id)) {
            "is (by device and inode) the engine's socket, a directory above it, or the engine's data root or a directory above that".to_string()
        } else if id.is_none()
            && !source.is_empty()
            && self.live
            && matches!(kind, "bind" | "volume")
        {
            // Fail closed: what cannot be identified cannot be cleared.
            "could not be identified by device and inode (gone, unreadable, or a hung file system)"
                .to_string()
        } else if kind != "volume" {
            let sock = exposed_socket(source, self.sockets)?;
            format!("exposes the container runtime's socket {sock}")
        } else {
            return None;
        };
        broken(
            "isolation.docker_socket",
            format!("mounts {source} ({kind}), which {why}, but [isolation] docker_socket = false: remove that mount"),
        )
    }

    fn cap(&self, cap: &str) -> Option<Violation> {
        let n = normalize_cap(cap);
        let allowed: Vec<String> = self.iso.cap_add.iter().map(|c| normalize_cap(c)).collect();
        if n.is_empty() || allowed.iter().any(|a| *a == n || a == "ALL") {
            return None;
        }
        broken(
            "isolation.cap_add",
            format!("adds capability {n}, which [isolation] cap_add {allowed:?} does not allow: drop --cap-add {n} or add it to the policy"),
        )
    }
}

/// The settings a live container runs with, in the order rules are reported.
fn live_settings(c: &LiveContainer) -> Vec<Setting<'_>> {
    let mut s = Vec::new();
    if c.privileged {
        s.push(Setting::Privileged);
    }
    let host_driver = c.networks.iter().any(|n| n.driver == "host");
    let net_mode = if host_driver { "host" } else { &c.network_mode };
    s.push(Setting::Namespace(Namespace::Network, net_mode));
    for n in c.networks.iter().filter(|n| n.driver != "host") {
        s.push(Setting::Network {
            name: &n.name,
            isolates: n.isolates(),
        });
    }
    s.push(Setting::Namespace(Namespace::Pid, &c.pid_mode));
    s.push(Setting::Namespace(Namespace::Ipc, &c.ipc_mode));
    s.push(Setting::Namespace(Namespace::Uts, &c.uts_mode));
    // The policy's own demand first: a denial names the first rule broken.
    s.push(Setting::UserNamespace {
        own: c.own_user_namespace && c.userns_mode != "host",
    });
    s.push(Setting::Namespace(Namespace::User, &c.userns_mode));
    for m in &c.mounts {
        s.push(Setting::Mount {
            kind: &m.kind,
            source: &m.source,
            id: m.source_id,
        });
    }
    if !c.readonly_rootfs {
        s.push(Setting::WritableRootfs);
    }
    s.extend(c.cap_add.iter().map(|x| Setting::CapAdd(x)));
    s.extend(c.security_opt.iter().map(|x| Setting::SecurityOpt(x)));
    if !c.privileged && c.masked_paths.as_ref().is_some_and(Vec::is_empty) {
        s.push(Setting::SecurityOpt("systempaths=unconfined"));
    }
    s.extend(c.devices.iter().map(|x| Setting::Device(x)));
    s.extend(c.device_requests.iter().map(|x| Setting::DeviceRequest(x)));
    s
}

/// [`check_protected`] without identities: mounts judged by path text only.
/// The unit tests' shorthand (the broker calls [`check_protected`]).
#[cfg(test)]
pub fn check(iso: &Isolation, c: &LiveContainer, sockets: &[String]) -> Vec<Violation> {
    check_protected(iso, c, sockets, &Protected::default())
}

/// Every rule the container breaks; empty means it may receive secrets.
/// `sockets` are extra runtime socket paths of this host; `protected` what
/// no mount may be (by device and inode).
pub fn check_protected(
    iso: &Isolation,
    c: &LiveContainer,
    sockets: &[String],
    protected: &Protected,
) -> Vec<Violation> {
    let who = if c.name.is_empty() {
        format!("container {}", short_id(&c.id))
    } else {
        format!("container {} ({})", short_id(&c.id), c.name)
    };
    let mut v = Vec::new();
    if !c.running {
        v.push(Violation {
            rule: "isolation.running",
            reason: format!("{who} is not running: only a running container can be verified"),
        });
    }
    let judge = Judge {
        iso,
        sockets,
        protected,
        live: !protected.ids.is_empty(),
    };
    v.extend(live_settings(c).iter().filter_map(|s| {
        judge.judge(s).map(|x| Violation {
            rule: x.rule,
            reason: format!("{who}: {}", x.reason),
        })
    }));
    v
}

#[cfg(test)]
pub(crate) mod tests {
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
    pub(crate) fn compliant() -> LiveContainer {
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
                source_id: Some(FileId { dev: 1, ino: 99 }),
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
                source_id: None,
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
            source_id: None,
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
    fn mounts_are_judged_by_identity_whatever_the_path_says() {
        let sock = FileId { dev: 5, ino: 10 };
        let run = FileId { dev: 5, ino: 2 };
        let protected = Protected {
            ids: vec![sock, run, FileId { dev: 1, ino: 2 }],
        };
        for (kind, source, id) in [
            ("bind", "/srv/innocent", Some(run)),
            ("bind", "/home/u/link-to-socket", Some(sock)),
            // A local volume with o=bind,device=/run: its data path is /run.
            ("volume", "/var/lib/docker/volumes/v/_data", Some(run)),
        ] {
            let mut c = compliant();
            c.mounts.push(LiveMount {
                kind: kind.into(),
                source: source.into(),
                destination: "/x".into(),
                rw: true,
                source_id: id,
            });
            let v = check_protected(&Isolation::default(), &c, &[], &protected);
            assert_eq!(v.len(), 1, "{source}: {v:?}");
            assert_eq!(v[0].rule, "isolation.docker_socket");
            assert!(v[0].reason.contains("device and inode"), "{}", v[0].reason);
            // Without identities the path text alone does not catch these.
            assert!(check(&Isolation::default(), &c, &[]).is_empty(), "{source}");
            let allow = Isolation {
                docker_socket: true,
                ..Isolation::default()
            };
            assert!(check_protected(&allow, &c, &[], &protected).is_empty());
        }
        // Another file on the same device is not protected.
        let mut c = compliant();
        c.mounts[0].source_id = Some(FileId { dev: 5, ino: 11 });
        assert!(check_protected(&Isolation::default(), &c, &[], &protected).is_empty());
    }

    #[test]
    fn every_host_namespace_and_escape_setting_is_named() {
        let mut c = compliant();
        c.uts_mode = "host".into();
        c.userns_mode = "host".into();
        // cgroup v1 reports `host` by default: not judged on the live side.
        c.cgroupns_mode = "host".into();
        c.device_requests = vec!["nvidia:gpu".into()];
        c.masked_paths = Some(vec![]);
        c.security_opt = vec![
            "systempaths=unconfined".into(),
            "seccomp={\"defaultAction\":\"SCMP_ACT_ALLOW\"}".into(),
            "apparmor=my-lax-profile".into(),
            "label=type:spc_t".into(),
            "writable-cgroups=true".into(),
            "apparmor=docker-default".into(),
            "label=level:s0:c100,c200".into(),
            "no-new-privileges=true".into(),
        ];
        assert_eq!(
            rules(&Isolation::default(), &c),
            [
                "isolation.host_uts",
                "isolation.userns",
                "isolation.security_opt",
                "isolation.security_opt",
                "isolation.security_opt",
                "isolation.security_opt",
                "isolation.security_opt",
                "isolation.security_opt",
                "isolation.device"
            ]
        );
        c.masked_paths = Some(vec!["/proc/kcore".into()]);
        c.uts_mode.clear();
        c.userns_mode.clear();
        c.security_opt.truncate(0);
        c.device_requests.clear();
        assert!(rules(&Isolation::default(), &c).is_empty());
    }

    #[test]
    fn user_namespace_needs_the_kernels_word_and_no_opt_out() {
        let strict = Isolation {
            user_namespace: true,
            ..Isolation::default()
        };
        // The kernel puts its init in the host's user namespace.
        let c = compliant();
        assert_eq!(rules(&strict, &c), ["isolation.user_namespace"]);
        let v = check(&strict, &c, &[]);
        assert!(v[0].reason.contains("host's root"), "{}", v[0].reason);
        // The control: the default policy does not ask.
        assert!(rules(&Isolation::default(), &c).is_empty());
        // Remapped by the engine, not opted out: released.
        let mut remapped = compliant();
        remapped.own_user_namespace = true;
        assert!(rules(&strict, &remapped).is_empty());
        // `--userns host` is refused whatever the kernel fact says.
        remapped.userns_mode = "host".into();
        assert_eq!(
            rules(&strict, &remapped),
            ["isolation.user_namespace", "isolation.userns"]
        );
    }

    #[test]
    fn a_shared_network_namespace_may_be_the_hosts() {
        let mut c = compliant();
        c.network_mode = format!("container:{ID}");
        c.networks.clear();
        let icc_ok = Isolation {
            inter_container_traffic: true,
            ..Isolation::default()
        };
        assert_eq!(rules(&icc_ok, &c), ["isolation.host_network"]);
        let both = Isolation {
            host_network: true,
            ..icc_ok
        };
        assert!(rules(&both, &c).is_empty());
    }

    #[test]
    fn the_judge_is_the_one_both_sides_call() {
        let iso = Isolation::default();
        let p = Protected::default();
        let j = Judge {
            iso: &iso,
            sockets: &[],
            protected: &p,
            live: false,
        };
        let rule = |s: Setting<'_>| j.judge(&s).map(|v| v.rule);
        assert_eq!(rule(Setting::Privileged), Some("isolation.privileged"));
        assert_eq!(rule(Setting::ApiSocket), Some("isolation.docker_socket"));
        assert_eq!(
            rule(Setting::Namespace(Namespace::Cgroup, "host")),
            Some("isolation.host_cgroupns")
        );
        assert_eq!(rule(Setting::Namespace(Namespace::Cgroup, "private")), None);
        assert_eq!(rule(Setting::Namespace(Namespace::Network, "mynet")), None);
        assert_eq!(rule(Setting::Link("db")), Some("isolation.icc"));
        assert_eq!(
            rule(Setting::CapAdd("cap_sys_admin")),
            Some("isolation.cap_add")
        );
        assert_eq!(rule(Setting::CapAdd(" ")), None);
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
