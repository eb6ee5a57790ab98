//! The lints: what a valid policy set does that a reviewer should see.
//! Each finding names its rule ([`crate::rules::lint`]), the field, why it
//! matters and what to write instead. User text is quoted with `{:?}`.

use crate::finding::{Finding, Limits};
use crate::locate::Locator;
use crate::rules::{lint, Level};
use crate::text::{human_duration, name_list};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use unbaked_policy::{Dynamic, Grant, GrantDelivery, Policy, PolicySet};

/// Capabilities that amount to (or lead straight to) root on the host.
const ROOT_LIKE_CAPS: &[&str] = &[
    "BPF",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "NET_ADMIN",
    "SYS_ADMIN",
    "SYS_MODULE",
    "SYS_PTRACE",
    "SYS_RAWIO",
];

/// One policy file: its path and a lazy locator over its text.
struct Site<'a> {
    file: &'a Path,
    locator: Locator<'a>,
}

impl Site<'_> {
    fn finding(
        &self,
        rule: &'static str,
        field: impl Into<String>,
        message: String,
        hint: impl Into<String>,
    ) -> Finding {
        let field = field.into();
        let (line, column) = self.locator.locate(&field);
        let level = crate::rules::get(rule).map_or(Level::Warning, |r| r.level);
        Finding {
            level,
            rule,
            file: self.file.to_path_buf(),
            line,
            column,
            field,
            message,
            hint: Some(hint.into()),
        }
    }
}

pub(crate) fn lint(
    set: &PolicySet,
    sources: &[(PathBuf, String)],
    limits: &Limits,
    out: &mut Vec<Finding>,
) {
    let texts: HashMap<&Path, &str> = sources
        .iter()
        .map(|(p, t)| (p.as_path(), t.as_str()))
        .collect();
    let sites: Vec<(&Policy, Site<'_>)> = set
        .iter()
        .map(|p| {
            let text = texts.get(p.source.as_path()).copied().unwrap_or_default();
            let site = Site {
                file: p.source.as_path(),
                locator: Locator::new(text),
            };
            (p, site)
        })
        .collect();
    for (policy, site) in &sites {
        matcher(policy, site, limits, out);
        launch(policy, site, out);
        isolation(policy, site, out);
        grants(policy, site, limits, out);
        templates(policy, site, limits, out);
    }
    shared_secrets(&sites, limits, out);
}

fn is_container_workload(p: &Policy) -> bool {
    !p.matcher.docker_labels.is_empty() || p.matcher.image.is_some()
}

fn matcher(p: &Policy, site: &Site<'_>, limits: &Limits, out: &mut Vec<Finding>) {
    let m = &p.matcher;
    for (name, ids, who) in [
        ("uids", &m.uids, "process running as root"),
        ("gids", &m.gids, "process running with group root"),
    ] {
        if let Some(i) = ids.iter().position(|&id| id == 0) {
            let singular = &name[..name.len() - 1];
            out.push(site.finding(
                lint::BROAD_MATCH,
                format!("match.{name}[{i}]"),
                format!("{singular} 0 matches every {who} on the host, and every container that runs as root without a user namespace"),
                format!("match the workload's own non-root {singular}: run it under a dedicated user"),
            ));
        }
        if ids.len() > limits.max_match_ids {
            out.push(site.finding(
                lint::BROAD_MATCH,
                format!("match.{name}"),
                format!(
                    "[match] lists {} {name}, more than {}: every one of them may claim the workload",
                    ids.len(),
                    limits.max_match_ids
                ),
                "run the workload under one dedicated uid or group and match that",
            ));
        }
    }
    if !m.docker_labels.is_empty() {
        let labels = m
            .docker_labels
            .iter()
            .map(|(k, v)| format!("--label {k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        let only_labels = m.uids.is_empty()
            && m.gids.is_empty()
            && m.image.is_none()
            && m.k8s_service_accounts.is_empty()
            && m.k8s_namespaces.is_empty();
        if only_labels {
            out.push(site.finding(
                lint::BROAD_MATCH,
                "match.docker_labels",
                format!("only docker labels select this workload, and anyone who may start a container can set them ({labels:?})"),
                "pin the image with image = \"sha256:...\", or add the uids the container runs as",
            ));
        } else if m.image.is_none() {
            out.push(site.finding(
                lint::UNPINNED_IMAGE,
                "match.docker_labels",
                "the image is not pinned: any image started with these labels and ids matches".into(),
                "add image = \"sha256:...\" from `docker image inspect --format '{{.Id}}' IMAGE` once releases are reproducible",
            ));
        }
    }
    if !m.k8s_namespaces.is_empty() && m.k8s_service_accounts.is_empty() {
        out.push(site.finding(
            lint::BROAD_MATCH,
            "match.k8s_namespaces",
            "a namespace selector matches every pod of the namespace, whatever its service account".into(),
            "match the workload's own service account with k8s_service_accounts = [\"NAMESPACE/NAME\"]",
        ));
    }
}

fn launch(p: &Policy, site: &Site<'_>, out: &mut Vec<Finding>) {
    if is_container_workload(p) && p.launch.uids.is_empty() && p.launch.gids.is_empty() {
        out.push(site.finding(
            lint::LAUNCH_MISSING,
            "launch",
            "no [launch] uids or gids: nobody may start this container workload with `unbaked run`".into(),
            "add [launch] uids = [...] for whoever starts it with `unbaked run`; ignore this if a sidecar or an orchestrator starts it",
        ));
    }
}

fn isolation(p: &Policy, site: &Site<'_>, out: &mut Vec<Finding>) {
    let i = &p.isolation;
    if is_container_workload(p) && !site.locator.has("isolation") {
        out.push(site.finding(
            lint::ISOLATION_MISSING,
            "isolation",
            "no [isolation] table: the safe defaults apply, but a reviewer cannot see them".into(),
            "spell out [isolation] with its defaults, so a later weakening stands out in review",
        ));
    }
    if is_container_workload(p) && !i.user_namespace {
        out.push(site.finding(
            lint::USER_NAMESPACE_OFF,
            "isolation.user_namespace",
            "user_namespace is false: secrets are released to containers whose root is the host's root".into(),
            "run the engine with userns-remap (or rootless) and set [isolation] user_namespace = true",
        ));
    }
    for (weak, field, message, hint) in weakened(i) {
        if weak {
            out.push(site.finding(
                lint::ISOLATION_WEAKENED,
                format!("isolation.{field}"),
                message.into(),
                hint,
            ));
        }
    }
    for (k, cap) in i.cap_add.iter().enumerate() {
        let message = if ROOT_LIKE_CAPS.contains(&cap.as_str()) {
            format!("capability {cap:?} is added, and it is close to root on the host")
        } else {
            format!("capability {cap:?} is added to the container")
        };
        out.push(site.finding(
            lint::ISOLATION_WEAKENED,
            format!("isolation.cap_add[{k}]"),
            message,
            "remove it unless the workload cannot run without it",
        ));
    }
}

/// Each weakening `[isolation]` setting: (weakened here, field, message, hint).
fn weakened(
    i: &unbaked_policy::Isolation,
) -> [(bool, &'static str, &'static str, &'static str); 7] {
    [
        (
            i.inter_container_traffic,
            "inter_container_traffic",
            "inter_container_traffic = true lets other containers on the network reach this one, and this one reach them",
            "set it to false and publish only the ports clients need",
        ),
        (
            i.privileged,
            "privileged",
            "privileged = true releases secrets to a container with every capability and the host's devices: whatever runs in it can take the host",
            "set it to false and add only the capabilities the workload needs to cap_add",
        ),
        (
            i.host_network,
            "host_network",
            "host_network = true shares the host's network stack: the container reaches every service bound to the host's loopback",
            "set it to false and publish ports instead",
        ),
        (
            i.host_pid,
            "host_pid",
            "host_pid = true shows the container every host process, and lets root in it read their environment and memory",
            "set it to false",
        ),
        (
            i.host_ipc,
            "host_ipc",
            "host_ipc = true shares the host's shared memory and semaphores with the container",
            "set it to false",
        ),
        (
            i.docker_socket,
            "docker_socket",
            "docker_socket = true lets the container drive the Docker daemon, which is root on the host",
            "set it to false; a container that must start containers belongs on a host of its own",
        ),
        (
            !i.read_only_rootfs,
            "read_only_rootfs",
            "read_only_rootfs = false lets the workload write its root filesystem, where a copied secret outlives the tmpfs",
            "set it to true and mount a tmpfs where the application must write",
        ),
    ]
}

fn grants(p: &Policy, site: &Site<'_>, limits: &Limits, out: &mut Vec<Finding>) {
    for (k, g) in p.grants.iter().enumerate() {
        let what = describe(g);
        match &g.delivery {
            GrantDelivery::Env(name) => out.push(site.finding(
                lint::ENV_DELIVERY,
                format!("grant[{k}].env"),
                format!("{what} is delivered in the environment variable {name:?}, readable in /proc/PID/environ by every process of the same uid and inherited by child processes"),
                format!("deliver it with fd = \"{name}_FILE\" (a sealed memfd: the _FILE convention) or as a file"),
            )),
            GrantDelivery::File(_) => {
                let mode = g.mode;
                if mode & 0o007 != 0 {
                    out.push(site.finding(
                        lint::FILE_MODE_OTHER,
                        format!("grant[{k}].mode"),
                        format!("mode 0o{mode:03o} gives every other user access to {what}"),
                        "use 0o400, or 0o440 with a gid for the group that needs it",
                    ));
                } else if mode & 0o070 != 0 {
                    let group = g.gid.map_or_else(
                        || "the file's group".to_owned(),
                        |gid| format!("group {gid}"),
                    );
                    out.push(site.finding(
                        lint::FILE_MODE_GROUP,
                        format!("grant[{k}].mode"),
                        format!("mode 0o{mode:03o} gives every member of {group} access to {what}"),
                        "keep the group to the processes that need the secret, or use 0o400",
                    ));
                }
            }
            GrantDelivery::Fd(_) => {}
        }
        if g.ttl > limits.max_ttl {
            out.push(site.finding(
                lint::LONG_TTL,
                format!("grant[{k}].ttl"),
                format!(
                    "ttl {} of {what} is above {}: a leaked copy stays valid, and a withdrawn grant stays delivered, that long",
                    human_duration(g.ttl),
                    human_duration(limits.max_ttl)
                ),
                format!(
                    "renewal is automatic, so a short ttl costs little: use at most \"{}\", e.g. \"10m\"",
                    human_duration(limits.max_ttl)
                ),
            ));
        }
    }
}

/// The same delivery lints for templates: env delivery, open modes, ttl.
fn templates(p: &Policy, site: &Site<'_>, limits: &Limits, out: &mut Vec<Finding>) {
    for (k, t) in p.templates.iter().enumerate() {
        let reads: Vec<String> = t.sources().iter().map(|s| s.describe()).collect();
        let what = format!("template {} (reading {})", t.id(), reads.join(", "));
        match &t.delivery {
            GrantDelivery::Env(name) => out.push(site.finding(
                lint::ENV_DELIVERY,
                format!("template[{k}].env"),
                format!("{what} is delivered in the environment variable {name:?}, readable in /proc/PID/environ by every process of the same uid and inherited by child processes"),
                format!("deliver it with fd = \"{name}_FILE\" (a sealed memfd) or as a file"),
            )),
            GrantDelivery::File(_) if t.mode & 0o007 != 0 => out.push(site.finding(
                lint::FILE_MODE_OTHER,
                format!("template[{k}].mode"),
                format!("mode 0o{:03o} gives every other user access to {what}", t.mode),
                "use 0o400, or 0o440 with a gid for the group that needs it",
            )),
            _ => {}
        }
        if t.ttl > limits.max_ttl {
            out.push(site.finding(
                lint::LONG_TTL,
                format!("template[{k}].ttl"),
                format!(
                    "ttl {} of {what} is above {}: a leaked copy stays valid that long",
                    human_duration(t.ttl),
                    human_duration(limits.max_ttl)
                ),
                format!(
                    "use at most \"{}\", e.g. \"10m\"",
                    human_duration(limits.max_ttl)
                ),
            ));
        }
    }
}

fn shared_secrets(sites: &[(&Policy, Site<'_>)], limits: &Limits, out: &mut Vec<Finding>) {
    // secret -> (workload, its site, index of its first grant of the secret)
    let mut by_secret: BTreeMap<&str, Vec<(usize, usize)>> = BTreeMap::new();
    for (s, (policy, _)) in sites.iter().enumerate() {
        // A dynamic grant issues a fresh credential per lease: nothing shared.
        for (k, g) in policy
            .grants
            .iter()
            .enumerate()
            .filter(|(_, g)| g.dynamic.is_none())
        {
            let users = by_secret.entry(g.secret.as_str()).or_default();
            if users.last().is_none_or(|&(last, _)| last != s) {
                users.push((s, k));
            }
        }
    }
    for (secret, users) in by_secret {
        if users.len() < limits.shared_secret.max(2) {
            continue;
        }
        let names: Vec<&str> = users
            .iter()
            .map(|&(s, _)| sites[s].0.workload.as_str())
            .collect();
        for &(s, k) in &users {
            out.push(sites[s].1.finding(
                lint::SHARED_SECRET,
                format!("grant[{k}].secret"),
                format!(
                    "secret {secret:?} is granted to {} workloads ({}): a leak from any of them exposes it, and revoking it from one means rotating it for all",
                    names.len(),
                    name_list(&names)
                ),
                format!("give each workload its own secret, e.g. \"{secret}/{}\"", sites[s].0.workload),
            ));
        }
    }
}

/// `secret "app/db" key "password"`, `the certificate from "pki/issue/web"`.
fn describe(g: &Grant) -> String {
    let field = if g.key.is_empty() {
        String::new()
    } else {
        format!(" field {:?}", g.key)
    };
    match &g.dynamic {
        None => format!("secret {:?} key {:?}", g.secret, g.key),
        Some(Dynamic::Pki(_)) => format!("the certificate from {:?}{field}", g.secret),
        Some(Dynamic::Leased) => format!("the credential from {:?}{field}", g.secret),
    }
}

#[cfg(test)]
mod tests {
    use crate::check::{check_sources, Limits};
    use std::path::{Path, PathBuf};

    fn rules(files: &[(&str, &str)], limits: &Limits) -> Vec<(String, usize, &'static str)> {
        let sources: Vec<(PathBuf, String)> = files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect();
        check_sources(Path::new("p"), &sources, Default::default(), limits)
            .findings
            .into_iter()
            .map(|f| (f.file.display().to_string(), f.line, f.rule))
            .collect()
    }

    #[test]
    fn a_host_workload_with_safe_defaults_is_clean() {
        let p = "workload = \"a\"\nmatch = { uids = [1] }\n[[grant]]\nsecret = \"s\"\nkey = \"k\"\nfile = \"f\"\n";
        assert!(rules(&[("a.toml", p)], &Limits::default()).is_empty());
    }

    #[test]
    fn templates_get_the_delivery_lints_on_their_own_lines() {
        let p = "workload = \"a\"\nmatch = { uids = [1] }\n[[template]]\nenv = \"DB\"\ncontents = '{{ with secret \"secret/data/app/db\" }}{{ .Data.data.p }}{{ end }}'\n[[template]]\nfile = \"f\"\nmode = 0o444\nttl = \"12h\"\ncontents = 'x'\n";
        assert_eq!(
            rules(&[("a.toml", p)], &Limits::default()),
            [
                ("a.toml".into(), 4, "env-delivery"),
                ("a.toml".into(), 8, "file-mode-other"),
                ("a.toml".into(), 9, "long-ttl"),
            ]
        );
    }

    #[test]
    fn shared_secret_counts_workloads_not_grants() {
        let p = |w: &str, n: usize| {
            let grants = "[[grant]]\nsecret = \"s\"\nkey = \"k\"\nfile = \"f\"\n[[grant]]\nsecret = \"s\"\nkey = \"j\"\nfile = \"g\"\n";
            format!("workload = \"{w}\"\n[match]\nuids = [{n}]\n{grants}")
        };
        let (a, b, c) = (p("a", 1), p("b", 2), p("c", 3));
        let two = rules(&[("a.toml", &a), ("b.toml", &b)], &Limits::default());
        assert!(two.is_empty(), "{two:?}");
        let three = rules(
            &[("a.toml", &a), ("b.toml", &b), ("c.toml", &c)],
            &Limits::default(),
        );
        assert_eq!(
            three,
            [
                ("a.toml".into(), 5, "shared-secret"),
                ("b.toml".into(), 5, "shared-secret"),
                ("c.toml".into(), 5, "shared-secret"),
            ]
        );
    }

    #[test]
    fn a_namespace_alone_is_broad_a_service_account_is_not() {
        let p = |m: &str| format!("workload = \"a\"\n[match]\n{m}\n");
        let ns = p("k8s_namespaces = [\"pay\"]");
        assert_eq!(
            rules(&[("a.toml", &ns)], &Limits::default()),
            [("a.toml".into(), 3, "broad-match")]
        );
        let sa = p("k8s_service_accounts = [\"pay/billing\"]\nk8s_namespaces = [\"pay\"]");
        assert!(rules(&[("a.toml", &sa)], &Limits::default()).is_empty());
    }

    #[test]
    fn limits_are_configurable() {
        let p = "workload = \"a\"\n[match]\nuids = [1, 2, 3]\n[[grant]]\nsecret = \"s\"\nkey = \"k\"\nfd = \"F\"\nttl = \"20m\"\n";
        assert!(rules(&[("a.toml", p)], &Limits::default()).is_empty());
        let strict = Limits {
            max_ttl: std::time::Duration::from_secs(600),
            shared_secret: 3,
            max_match_ids: 2,
        };
        assert_eq!(
            rules(&[("a.toml", p)], &strict),
            [
                ("a.toml".into(), 3, "broad-match"),
                ("a.toml".into(), 8, "long-ttl"),
            ]
        );
    }
}
