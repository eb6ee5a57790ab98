//! The plan: each option turned into the [`Setting`]s it asks for and
//! judged by [`Judge`] (the same predicates as the live check), grouped by
//! concern: namespaces, mounts, capabilities, labels, and the final argv.

use super::flags::Flag;
use super::parse::{mount_fields, refusal, Opt, Parsed, Refusal};
use super::{
    network_name, Inputs, Plan, LABEL_LAUNCH, LABEL_WORKLOAD, SECRETS_PATH, SHIM_PATH, SOCKET_PATH,
};
use crate::isolation::{parse_bool, Judge, Namespace, Setting};
use std::collections::BTreeMap;
use unbaked_policy::GrantDelivery;

/// A plan being made: what has been refused, warned and kept so far.
pub(super) struct Planner<'a> {
    pub(super) inputs: Inputs<'a>,
    pub(super) judge: Judge<'a>,
    pub(super) refused: Vec<Refusal>,
    pub(super) warnings: Vec<String>,
    pub(super) passed: Vec<String>,
    pub(super) use_own_network: bool,
    pub(super) cgroupns_given: bool,
    /// `--userns host`: out of the engine's remapping.
    pub(super) userns_host: bool,
    pub(super) entrypoint: Option<Vec<String>>,
    /// Labels the user gave (`--label`), in order.
    pub(super) labels: BTreeMap<String, String>,
    /// `--user`, for the owner of a Compose service's secrets tmpfs.
    pub(super) user: Option<String>,
}

/// Check the options against the policy and build the final arguments.
/// Every refusal is reported at once.
pub fn plan_with(parsed: &Parsed, inputs: &Inputs<'_>) -> Result<Plan, Vec<Refusal>> {
    let mut p = Planner {
        inputs: *inputs,
        judge: Judge {
            iso: &inputs.policy.isolation,
            sockets: &inputs.facts.sockets,
            protected: &inputs.host.protected,
            live: false,
        },
        refused: Vec::new(),
        warnings: Vec::new(),
        passed: Vec::new(),
        // A daemon-wide --icc=false: the default bridge already isolates.
        use_own_network: !inputs.facts.default_bridge_isolates,
        cgroupns_given: false,
        userns_host: parsed
            .options
            .iter()
            .any(|o| matches!(o.flag, Some(Flag::Userns)) && o.value.as_deref() == Some("host")),
        entrypoint: None,
        labels: BTreeMap::new(),
        user: None,
    };
    // The policy's own demand first: a launch is denied by its first rule.
    p.user_namespace();
    for o in &parsed.options {
        if p.option(o) {
            p.passed.extend(o.raw.iter().cloned());
        }
    }
    p.no_other_workload_matches();
    let argv = p.command(parsed);
    p.host_paths_fit_a_mount();
    if !p.refused.is_empty() {
        return Err(p.refused);
    }
    Ok(p.finish(parsed, argv))
}

/// A Compose service's `/run/secrets`: an engine tmpfs per container
/// (in memory, gone with the container), owned by the container's user
/// when `--user` names it by number, 0711 so only that user may write
/// (the shim's `SecretsDir` refuses one others could write).
fn container_tmpfs(user: Option<&str>) -> String {
    let mut opts = format!(
        "{SECRETS_PATH}:mode=0711,size={},nosuid,nodev,noexec",
        super::CONTAINER_TMPFS_SIZE
    );
    let (uid, gid) = user
        .map(|u| u.split_once(':').unwrap_or((u, "")))
        .unwrap_or(("", ""));
    if !uid.is_empty() && uid.bytes().all(|b| b.is_ascii_digit()) {
        opts.push_str(&format!(",uid={uid}"));
        if !gid.is_empty() && gid.bytes().all(|b| b.is_ascii_digit()) {
            opts.push_str(&format!(",gid={gid}"));
        }
    }
    opts
}

/// How an option is written back in a message: `--flag value`.
pub(super) fn spelled(o: &Opt) -> String {
    match o.value.as_deref() {
        None | Some("") => format!("--{}", o.name),
        Some(v) => format!("--{} {v}", o.name),
    }
}

/// A switch given as `--flag` or `--flag=true`.
pub(super) fn switched_on(o: &Opt) -> bool {
    o.value.as_deref().map_or(Some(true), parse_bool) != Some(false)
}

impl Planner<'_> {
    pub(super) fn workload(&self) -> &str {
        &self.inputs.policy.workload
    }

    /// Judge `s`; a violation is refused, named after the option.
    pub(super) fn judge(&mut self, spelled: &str, s: Setting<'_>) {
        if let Some(v) = self.judge.judge(&s) {
            self.refused
                .push(refusal(v.rule, format!("{spelled}: {}", v.reason)));
        }
    }

    pub(super) fn refuse(&mut self, rule: &'static str, reason: String) {
        self.refused.push(refusal(rule, reason));
    }

    /// One option, dispatched to its concern; whether it is passed on.
    fn option(&mut self, o: &Opt) -> bool {
        let v = o.value.as_deref().unwrap_or("");
        let Some(flag) = o.flag else {
            self.refuse(
                "launch.unknown_option",
                format!("--{} is not a docker run option unbaked knows, so it cannot tell whether it weakens isolation: leave it out", o.name),
            );
            return false;
        };
        match flag {
            Flag::Network
            | Flag::Link
            | Flag::Pid
            | Flag::Ipc
            | Flag::Uts
            | Flag::Cgroupns
            | Flag::Userns => self.namespaces(flag, v, &spelled(o)),
            Flag::Volume
            | Flag::Mount
            | Flag::Tmpfs
            | Flag::VolumesFrom
            | Flag::VolumeDriver
            | Flag::UseApiSocket => self.mounts(flag, o, v),
            Flag::Privileged
            | Flag::CapAdd
            | Flag::SecurityOpt
            | Flag::Device
            | Flag::DeviceCgroupRule
            | Flag::Gpus
            | Flag::ReadOnly => self.capabilities(flag, o, v),
            Flag::Label | Flag::LabelFile => self.label(flag, v),
            Flag::Entrypoint => {
                self.entrypoint = Some(if v.is_empty() { vec![] } else { vec![v.into()] });
                false
            }
            Flag::Env => {
                self.env(v);
                true
            }
            Flag::User => {
                self.user = Some(v.to_string());
                true
            }
            _ => true,
        }
    }

    // ---- namespaces ----

    fn namespaces(&mut self, flag: Flag, v: &str, spelled: &str) -> bool {
        let ns = match flag {
            Flag::Network => return self.network(v, spelled),
            Flag::Link => {
                self.judge(spelled, Setting::Link(v));
                return true;
            }
            Flag::Pid => Namespace::Pid,
            Flag::Ipc => Namespace::Ipc,
            Flag::Uts => Namespace::Uts,
            Flag::Cgroupns => {
                self.cgroupns_given = true;
                Namespace::Cgroup
            }
            _ => Namespace::User,
        };
        self.judge(spelled, Setting::Namespace(ns, v));
        true
    }

    /// Root in the container is not the host's root only when the engine
    /// remaps users and the container does not opt out.
    fn user_namespace(&mut self) {
        let remaps = self.inputs.facts.engine_remaps_users;
        let own = remaps && !self.userns_host;
        let spelled = if self.userns_host {
            "--userns host"
        } else {
            "the engine (it neither remaps users nor runs rootless)"
        };
        self.judge(spelled, Setting::UserNamespace { own });
    }

    /// `--network NAME` or docker's long form `--network name=NAME,alias=...`.
    fn network(&mut self, v: &str, spelled: &str) -> bool {
        let name = if v.contains('=') {
            let name = mount_fields(v).ok().and_then(|f| {
                f.into_iter()
                    .rev()
                    .find(|(k, _)| k == "name")
                    .map(|(_, v)| v)
            });
            let Some(name) = name else {
                self.refuse(
                    "launch.args",
                    format!("{spelled}: no network name=: give it as --network NAME"),
                );
                return true;
            };
            name
        } else {
            v.to_string()
        };
        if name == "host" || name == "none" || name.starts_with("container:") {
            self.use_own_network = false;
            self.judge(spelled, Setting::Namespace(Namespace::Network, &name));
        } else if matches!(name.as_str(), "bridge" | "default")
            && self.inputs.facts.default_bridge_isolates
        {
            // The daemon runs with --icc=false: the default bridge isolates.
            self.use_own_network = false;
            self.judge(
                spelled,
                Setting::Network {
                    name: &name,
                    isolates: true,
                },
            );
        } else if self.inputs.policy.isolation.inter_container_traffic {
            self.use_own_network = false;
        } else {
            let own = network_name(self.workload());
            let why = format!(
                "{spelled} (unbaked run attaches {own}, created with inter-container traffic off)"
            );
            self.judge(
                &why,
                Setting::Network {
                    name: &name,
                    isolates: false,
                },
            );
        }
        true
    }

    // ---- capabilities and devices ----

    fn capabilities(&mut self, flag: Flag, o: &Opt, v: &str) -> bool {
        let spelled = spelled(o);
        match flag {
            Flag::Privileged if switched_on(o) => self.judge(&spelled, Setting::Privileged),
            Flag::CapAdd => {
                for cap in v.split(',') {
                    self.judge(&spelled, Setting::CapAdd(cap));
                }
            }
            Flag::SecurityOpt => self.judge(&spelled, Setting::SecurityOpt(v)),
            Flag::Device | Flag::DeviceCgroupRule => self.judge(&spelled, Setting::Device(v)),
            Flag::Gpus => self.judge(&spelled, Setting::DeviceRequest(v)),
            Flag::ReadOnly if o.value.as_deref().and_then(parse_bool) == Some(false) => {
                self.judge(&spelled, Setting::WritableRootfs)
            }
            _ => {}
        }
        true
    }

    // ---- argv ----

    /// Only the name: the value may be a secret of the user's.
    fn env(&mut self, v: &str) {
        let name = v.split('=').next().unwrap_or(v);
        let granted = self.inputs.policy.grants.iter().any(
            |g| matches!(&g.delivery, GrantDelivery::Env(n) | GrantDelivery::Fd(n) if n == name),
        );
        if granted {
            self.warnings.push(format!(
                "launch.env: -e {name} is replaced inside the container by the grant of workload {:?} to {name}",
                self.workload()
            ));
        }
    }

    /// Docker: an --entrypoint override drops the image's Cmd.
    fn command(&mut self, parsed: &Parsed) -> Vec<String> {
        let facts = self.inputs.facts;
        let mut argv = self
            .entrypoint
            .clone()
            .unwrap_or_else(|| facts.image_entrypoint.clone());
        if !parsed.command.is_empty() {
            argv.extend(parsed.command.iter().cloned());
        } else if self.entrypoint.is_none() {
            argv.extend(facts.image_cmd.iter().cloned());
        }
        if argv.is_empty() {
            self.refuse(
                "launch.command",
                format!(
                    "image {} has no entrypoint or command: give the command after the image",
                    parsed.image
                ),
            );
        }
        argv
    }

    /// The host paths the plan puts into `--mount` values.
    fn host_paths_fit_a_mount(&mut self) {
        let facts = self.inputs.facts;
        let paths = [
            ("the shim", &facts.shim),
            ("the broker socket", &facts.broker_socket),
        ]
        .into_iter()
        .chain(
            facts
                .secrets_dir
                .iter()
                .map(|d| ("the secrets directory", d)),
        );
        for (what, path) in paths {
            if !path.starts_with('/') || path.contains([',', '"', '\n']) {
                self.refused.push(refusal(
                    "launch.path",
                    format!("{what} path {path:?} must be absolute and hold no comma or quote (it goes into a --mount)"),
                ));
            }
        }
    }

    /// The final arguments: the user's, the hardening, the labels, the
    /// mounts and the shim around the command.
    fn finish(self, parsed: &Parsed, argv: Vec<String>) -> Plan {
        let (policy, facts) = (self.inputs.policy, self.inputs.facts);
        let w = &policy.workload;
        let own_net = network_name(w);
        let mut args = vec!["run".to_string()];
        args.extend(self.passed);
        let mut add = |a: &[&str]| args.extend(a.iter().map(|s| s.to_string()));
        add(&["--cap-drop", "ALL", "--security-opt", "no-new-privileges"]);
        if policy.isolation.read_only_rootfs {
            add(&["--read-only"]);
        }
        if !self.cgroupns_given {
            add(&["--cgroupns", "private"]);
        }
        if self.use_own_network {
            add(&["--network", &own_net]);
        } else if facts.compose
            && facts.default_bridge_isolates
            && !parsed
                .options
                .iter()
                .any(|o| matches!(o.flag, Some(Flag::Network)))
        {
            // Compose would put the service on its project's network (inter-
            // container traffic on); the daemon's default bridge isolates.
            add(&["--network", "bridge"]);
        }
        add(&["--label", &format!("{LABEL_WORKLOAD}={w}")]);
        if !facts.compose {
            add(&["--label", &format!("{LABEL_LAUNCH}={}", facts.launch_id)]);
        }
        for (k, v) in &policy.matcher.docker_labels {
            add(&["--label", &format!("{k}={v}")]);
        }
        if let Some(gid) = facts.socket_gid.filter(|g| *g != 0) {
            add(&["--group-add", &gid.to_string()]);
        }
        let bind = |src: &str, dst: &str| format!("type=bind,src={src},dst={dst},readonly");
        add(&["--mount", &bind(&facts.shim, SHIM_PATH)]);
        add(&["--mount", &bind(&facts.broker_socket, SOCKET_PATH)]);
        if let Some(dir) = &facts.secrets_dir {
            add(&["--mount", &bind(dir, SECRETS_PATH)]);
        }
        let files_here = facts.compose && facts.container_files;
        if files_here {
            add(&["--tmpfs", &container_tmpfs(self.user.as_deref())]);
        }
        add(&["--entrypoint", SHIM_PATH, &parsed.image]);
        add(&["--socket", SOCKET_PATH, "exec", "--workload", w]);
        if files_here {
            add(&["--files", SECRETS_PATH]);
        }
        add(&["--"]);
        args.extend(argv);
        Plan {
            args,
            warnings: self.warnings,
            network: self.use_own_network.then_some(own_net),
        }
    }
}
