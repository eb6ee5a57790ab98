//! The catalogue of runtime denial rules: every rule id the broker puts in
//! a denial's answer, its audit record, its log line and the
//! `unbaked_denials_total{rule=...}` counter. `docs/deny-rules.md` is
//! generated from it (`UPDATE_EXPECT=1 cargo test -p unbaked-broker
//! rules::`), and a test fails when the page is stale.
//!
//! **Invariant:** ids are never renamed or reused: dashboards, alerts and
//! audit queries key on them. A new rule is a new variant.
//! **Invariant:** a denial names exactly one of these. Code that still
//! carries ids as strings (`launch.rs`, `isolation.rs`, the policy crate's
//! `Denial`) maps them with [`DenyRule::from_id`]; a test checks that every
//! such literal in the broker's sources is in the catalogue.

use std::fmt;
use std::str::FromStr;
use unbaked_api::wire::ErrorCode;

/// Where a rule is decided, for grouping in the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Request,
    Attestation,
    Token,
    Match,
    Isolation,
    Launch,
    Lease,
    Admin,
}

impl Origin {
    fn title(self) -> &'static str {
        match self {
            Origin::Request => "Request",
            Origin::Attestation => "Attestation",
            Origin::Token => "Service-account tokens",
            Origin::Match => "[match]",
            Origin::Isolation => "[isolation]",
            Origin::Launch => "[launch] and `unbaked run`",
            Origin::Lease => "Leases and deliveries",
            Origin::Admin => "Admin API",
        }
    }
}

macro_rules! deny_rules {
    ($( $(#[$doc:meta])* $variant:ident = $id:literal, $origin:ident, $summary:literal, $action:literal; )*) => {
        /// A rule that refused a request. `id()` is the stable string.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum DenyRule {
            $( $(#[$doc])* $variant, )*
        }

        impl DenyRule {
            /// Every rule, in catalogue order.
            pub const ALL: &'static [DenyRule] = &[$( DenyRule::$variant, )*];

            /// The stable id, e.g. `isolation.docker_socket`.
            pub fn id(&self) -> &'static str {
                match self { $( DenyRule::$variant => $id, )* }
            }

            /// One line: what the rule refuses.
            pub fn summary(&self) -> &'static str {
                match self { $( DenyRule::$variant => $summary, )* }
            }

            /// What the refused caller (or its operator) can do about it.
            pub fn action(&self) -> &'static str {
                match self { $( DenyRule::$variant => $action, )* }
            }

            pub fn origin(&self) -> Origin {
                match self { $( DenyRule::$variant => Origin::$origin, )* }
            }

            /// The rule with this id, if the catalogue has it.
            pub fn from_id(id: &str) -> Option<DenyRule> {
                match id { $( $id => Some(DenyRule::$variant), )* _ => None }
            }
        }
    };
}

deny_rules! {
    WorkloadInvalid = "workload.invalid", Request,
        "the requested workload name is not a valid workload name",
        "Ask for the workload by the name its policy declares: 1 to 63 lowercase letters, digits, `_`, `.` or `-`.";
    WorkloadUnknown = "workload.unknown", Request,
        "no policy declares the requested workload",
        "Check the name (`unbaked policy check` lists the workloads), or add a policy file with `workload = \"NAME\"`.";
    AttestExited = "attest.exited", Attestation,
        "the process that opened the connection exited before its request was decided",
        "Send requests from the process that connects; a pid that outlives its process may name another one.";
    Token = "token", Token,
        "the bearer token is not a valid service-account token for this broker",
        "Mount a fresh projected token with audience `unbaked` from the issuer in `[kubernetes]`, and pass it with --token-file.";
    TokenUnconfigured = "token.unconfigured", Token,
        "a token was sent to a broker without a `[kubernetes]` section",
        "Configure `[kubernetes]` issuer, audience and jwks on the broker, or drop --token-file.";
    TokenPod = "token.pod", Token,
        "a pod-bound token was presented from another pod's cgroup",
        "Use the token mounted into the calling pod; a token copied out of another pod is refused.";
    Match = "match", Match,
        "the workload's `[match]` has no selector, so it matches nobody",
        "Add uids, gids, docker_labels, image or k8s selectors to the workload's `[match]`.";
    MatchUids = "match.uids", Match,
        "the caller's uid is not one `[match] uids` allows",
        "Run the client as an allowed uid, or ask the policy's owner to add this uid.";
    MatchGids = "match.gids", Match,
        "the caller's gid is not one `[match] gids` allows",
        "Run the client with an allowed gid, or ask the policy's owner to add this gid.";
    MatchDockerLabels = "match.docker_labels", Match,
        "the caller is not in a container, or its container lacks a label value `[match] docker_labels` requires",
        "Start the container with the labels the policy names (`unbaked run` sets them), or ask the policy's owner.";
    MatchImage = "match.image", Match,
        "the caller is not in a container of the image `[match] image` pins",
        "Run the pinned image, or ask the policy's owner to update the pin.";
    MatchK8s = "match.k8s", Match,
        "the workload matches pods only, and the caller presented no verified service-account token",
        "Run the client with --token-file pointing at a projected token with audience `unbaked`.";
    MatchK8sServiceAccounts = "match.k8s_service_accounts", Match,
        "the token's service account is not one `[match] k8s_service_accounts` allows",
        "Run the pod as an allowed service account, or ask the policy's owner to add this one.";
    MatchK8sNamespaces = "match.k8s_namespaces", Match,
        "the token's namespace is not one `[match] k8s_namespaces` allows",
        "Run the pod in an allowed namespace, or ask the policy's owner to add this one.";
    IsolationUnverified = "isolation.unverified", Isolation,
        "the caller runs in a container the engine cannot vouch for (not running, unknown, engine down)",
        "Run the client in a running container of the engine the broker watches; if the engine is down, start it.";
    IsolationRunning = "isolation.running", Isolation,
        "the caller's container is not running",
        "Only a running container can be verified: start the container again.";
    IsolationPrivileged = "isolation.privileged", Isolation,
        "the container runs privileged, which `[isolation]` does not allow",
        "Start it without --privileged.";
    IsolationHostNetwork = "isolation.host_network", Isolation,
        "the container uses the host's network namespace, which `[isolation]` does not allow",
        "Start it without --network host.";
    IsolationIcc = "isolation.icc", Isolation,
        "the container can talk to other containers, which `[isolation] inter_container_traffic = false` forbids",
        "Attach it only to networks created with ICC disabled (as `unbaked run` does), or to none.";
    IsolationHostPid = "isolation.host_pid", Isolation,
        "the container shares the host's or another container's pid namespace",
        "Start it without --pid host or --pid container:....";
    IsolationHostIpc = "isolation.host_ipc", Isolation,
        "the container shares the host's or another container's ipc namespace",
        "Start it without --ipc host or --ipc container:....";
    IsolationUserns = "isolation.userns", Isolation,
        "the container would run in the host's user namespace",
        "Drop --userns=host.";
    IsolationUserNamespace = "isolation.user_namespace", Isolation,
        "`[isolation] user_namespace = true`, but root in the container is the host's root (the engine does not remap users, or the container runs with --userns host)",
        "Run the engine with userns-remap (or rootless) and start the container without --userns host.";
    IsolationDockerSocket = "isolation.docker_socket", Isolation,
        "the container mounts the container runtime's socket (or a directory above it)",
        "Remove that mount: a container with the engine's socket controls the host.";
    IsolationReadOnlyRootfs = "isolation.read_only_rootfs", Isolation,
        "the container's root filesystem is writable, but `[isolation] read_only_rootfs = true`",
        "Start it with --read-only (and --tmpfs for the paths it writes).";
    IsolationCapAdd = "isolation.cap_add", Isolation,
        "the container adds a capability `[isolation] cap_add` does not allow",
        "Drop that --cap-add, or ask the policy's owner to allow it.";
    IsolationSecurityOpt = "isolation.security_opt", Isolation,
        "the container runs with a --security-opt that weakens its confinement",
        "Remove the option (seccomp/apparmor unconfined, label disable, systempaths unconfined, no-new-privileges false).";
    IsolationDevice = "isolation.device", Isolation,
        "the container has host devices handed in",
        "Start it without --device or --device-cgroup-rule.";
    IsolationHostUts = "isolation.host_uts", Isolation,
        "the container shares the host's UTS namespace (--uts host)",
        "Start it without --uts host.";
    IsolationHostCgroupns = "isolation.host_cgroupns", Isolation,
        "the container shares the host's cgroup namespace (--cgroupns host)",
        "Start it without --cgroupns host (unbaked run adds --cgroupns private).";
    LaunchOtherWorkload = "launch.other_workload", Launch,
        "a label (from --label, -l or the image) would make the container match another workload's selector",
        "Drop the label, or launch the other workload with its own `unbaked run --workload`.";
    LaunchLabelFile = "launch.label_file", Launch,
        "--label-file: the wrapper cannot vet labels it does not see",
        "Pass each label with --label instead.";
    LaunchVolumesFrom = "launch.volumes_from", Launch,
        "--volumes-from inherits another container's mounts, which the plan cannot judge",
        "Name each volume or bind mount with --mount or -v instead.";
    LaunchVolumeDriver = "launch.volume_driver", Launch,
        "a volume of a driver other than `local`, whose mounts the plan cannot judge",
        "Use a local volume or a bind mount the policy allows.";
    Launch = "launch", Launch,
        "the workload lists no `[launch]` uids or gids, so nobody may launch it",
        "Ask the policy's owner to add your uid or gid under `[launch]`.";
    LaunchUids = "launch.uids", Launch,
        "the caller's uid may not launch the workload (`[launch] uids`)",
        "Launch it as an allowed uid, or ask the policy's owner to add this one.";
    LaunchGids = "launch.gids", Launch,
        "the caller's gid may not launch the workload (`[launch] gids`)",
        "Launch it with an allowed gid, or ask the policy's owner to add this one.";
    LaunchArgs = "launch.args", Launch,
        "the `docker run` arguments do not parse",
        "Give `unbaked run` the arguments `docker run` takes: options, then the image, then the command.";
    LaunchUnknownOption = "launch.unknown_option", Launch,
        "a `docker run` option `unbaked run` does not know, so cannot judge",
        "Drop the option, or ask for it to be added to the launch flag table.";
    LaunchSecretsDir = "launch.secrets_dir", Launch,
        "a mount would expose the broker's directory or another container's secrets",
        "Remove the mount of the broker's socket directory.";
    LaunchMountTarget = "launch.mount_target", Launch,
        "a mount would cover the secrets directory the broker provides",
        "Mount nothing at /run/secrets: the broker puts the file grants there.";
    LaunchLabel = "launch.label", Launch,
        "a label the broker sets itself, or one that would make the container match another workload",
        "Drop the label; `unbaked run` labels the container for its workload.";
    LaunchCommand = "launch.command", Launch,
        "the image has no command to run under the exec shim",
        "Give a command after the image, or use an image with an ENTRYPOINT or CMD.";
    LaunchPath = "launch.path", Launch,
        "a path the launch needs is not usable (the shim, the socket, a mount source)",
        "Check the path named in the reason exists and is absolute.";
    LaunchClaimed = "launch.claimed", Launch,
        "another container already claimed this launch's secrets",
        "Start every container with its own `unbaked run`.";
    LaunchLimit = "launch.limit", Launch,
        "the caller already holds as many unclaimed launches as one uid may",
        "Start the containers of earlier launches (or let them lapse), then launch again.";
    LaunchWorkload = "launch.workload", Launch,
        "a container started by `unbaked run` or `unbaked compose` for one workload (its launch or its `io.unbaked.workload` label) asked for another's secrets, whatever its other labels",
        "Start a container for the other workload with its own `unbaked run --workload`, or label the compose service with that workload.";
    LaunchUnknown = "launch.unknown", Launch,
        "the container carries a launch label this broker does not know (the broker restarted since, or the label was set by hand)",
        "Start the container again with `unbaked run`.";
    SecretMissing = "secret.missing", Lease,
        "a granted secret is not in the store",
        "Ask the operator to write it (`unbaked secret put PATH KEY=-`) or to fix the grant.";
    LeaseOwner = "lease.owner", Lease,
        "the lease belongs to another uid or gid",
        "Renew or revoke a lease from the uid and gid that fetched it.";
    ActionHolder = "action.holder", Lease,
        "a change action was asked for by another process than the one holding the lease",
        "Ask from the sidecar that fetched the lease; a lease id alone does not let another process act.";
    ActionNotNamed = "action.not_named", Lease,
        "the policy names no container to signal for this grant or template (its `on_change` is not a signal with `signal_container`)",
        "Add on_change = \"signal\", signal = \"SIGHUP\" and signal_container = \"NAME\" to the grant or template, or use on_change = \"command\".";
    ActionRate = "action.rate", Lease,
        "the same lease asked for the same item's action again within its debounce (at least 1 s): the broker acts at most once per window, whatever a client asks",
        "Nothing to do for a sidecar (it coalesces changes itself); a client asking in a loop is refused until the window has passed.";
    ActionContainer = "action.container", Lease,
        "the container the policy names is not the workload's: it does not exist, or is not labelled `io.unbaked.workload` with this workload (or was started by `unbaked run` for another)",
        "Start the app container with --label io.unbaked.workload=WORKLOAD (or with `unbaked run` for this workload), or name the right container in signal_container.";
    Admin = "admin", Admin,
        "the admin API is for root and the broker's own uid",
        "Run `unbaked secret ...` as root or as the broker's uid.";
    Uncatalogued = "uncatalogued", Request,
        "a rule this catalogue does not list yet (a bug: the reason names the precise rule)",
        "Read the reason for the precise rule, and report the missing catalogue entry.";
}

impl DenyRule {
    /// The wire code of a denial by this rule: a name that does not exist
    /// is 404, a malformed one 400, everything else 403.
    pub fn code(&self) -> ErrorCode {
        match self {
            DenyRule::WorkloadUnknown | DenyRule::SecretMissing => ErrorCode::NotFound,
            DenyRule::WorkloadInvalid => ErrorCode::BadRequest,
            _ => ErrorCode::Denied,
        }
    }

    /// The rule for an id that code outside the catalogue produced (the
    /// policy crate, `launch.rs`, `isolation.rs`). An id the catalogue lacks
    /// is still a denial: it counts as [`DenyRule::Uncatalogued`], logged.
    pub fn of(id: &str) -> DenyRule {
        DenyRule::from_id(id).unwrap_or_else(|| {
            tracing::error!(
                rule = id,
                "a rule id missing from broker/src/rules.rs: counted as uncatalogued"
            );
            DenyRule::Uncatalogued
        })
    }
}

impl fmt::Display for DenyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// The id is not in the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a rule id of docs/deny-rules.md")]
pub struct UnknownRule(String);

impl FromStr for DenyRule {
    type Err = UnknownRule;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DenyRule::from_id(s).ok_or_else(|| UnknownRule(s.chars().take(64).collect()))
    }
}

/// `docs/deny-rules.md`: every rule with what it refuses and what to do.
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "# Runtime denial rules\n\n\
         Every refusal of the broker names one of these rules: in the answer the\n\
         caller gets, in its `deny` audit record (`\"rule\"`), in the broker's log\n\
         and in the `unbaked_denials_total{rule=...}` counter. The rules of\n\
         `unbaked policy check` are in [policy-rules.md](policy-rules.md).\n\
         Generated from `broker/src/rules.rs` by\n\
         `UPDATE_EXPECT=1 cargo test -p unbaked-broker rules::`.\n\n\
         A refused caller is told the rule, its own identity (uid, gid, pid, its\n\
         container's id and name) and the request id; the expected values of the\n\
         policy (uids, labels, image pins) and the policy file's path go only to\n\
         the audit log and the broker's log, under that request id.\n\n\
         A denial repeated within 10 s (same uid, container, workload, rule and\n\
         reason) is written to the audit log once; its repeats follow in one\n\
         `deny` record whose `count` says how many it stands for. The counter\n\
         counts every one. A workload name no policy declares is counted under\n\
         `workload=\"unknown\"`; one that is not a valid name is audited as an\n\
         escaped prefix with its length and a hash.\n\n\
         | rule | answer | refuses |\n| --- | --- | --- |\n",
    );
    for r in DenyRule::ALL {
        out.push_str(&format!(
            "| [`{}`](#{}) | {} | {} |\n",
            r.id(),
            anchor(r.id()),
            r.code().http_status(),
            r.summary()
        ));
    }
    let mut origin = None;
    for r in DenyRule::ALL {
        if origin != Some(r.origin()) {
            origin = Some(r.origin());
            out.push_str(&format!("\n## {}\n", r.origin().title()));
        }
        out.push_str(&format!(
            "\n### {}\n\nRefuses: {}.\n\n{}\n",
            r.id(),
            r.summary(),
            r.action()
        ));
    }
    out
}

/// GitHub's heading anchor for an id: dots dropped.
fn anchor(id: &str) -> String {
    id.chars().filter(|c| *c != '.').collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn ids_are_unique_round_trip_and_are_documented() {
        let mut seen = std::collections::BTreeSet::new();
        for r in DenyRule::ALL {
            assert!(seen.insert(r.id()), "duplicate id {}", r.id());
            assert_eq!(r.id().parse::<DenyRule>(), Ok(*r));
            assert_eq!(r.to_string(), r.id());
            assert!(
                r.id()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._".contains(c)),
                "{}",
                r.id()
            );
            assert!(!r.summary().ends_with('.'), "{}", r.id());
            assert!(r.action().ends_with('.'), "{}", r.id());
        }
        assert!("nope".parse::<DenyRule>().is_err());
        assert_eq!(DenyRule::of("not.a.rule"), DenyRule::Uncatalogued);
    }

    /// `docs/deny-rules.md` is what the catalogue generates. Regenerate
    /// with `UPDATE_EXPECT=1 cargo test -p unbaked-broker rules::`.
    #[test]
    fn the_reference_page_is_current() {
        let path = root().join("docs/deny-rules.md");
        let want = reference_markdown();
        if std::env::var_os("UPDATE_EXPECT").is_some() {
            std::fs::write(&path, &want).unwrap();
            return;
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{} is stale: run UPDATE_EXPECT=1 cargo test -p unbaked-broker rules::",
            path.display()
        );
    }

    /// Rule ids still written as string literals (launch.rs, isolation.rs,
    /// the policy crate's evaluation) are all in the catalogue, so none is
    /// counted as `uncatalogued`.
    #[test]
    fn every_rule_literal_in_the_sources_is_catalogued() {
        let mut files = vec![root().join("policy/src/eval.rs")];
        let mut dirs = vec![root().join("broker/src"), root().join("docker/src")];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    files.push(p);
                }
            }
        }
        let mut checked = 0;
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for id in rule_literals(&text) {
                assert!(
                    DenyRule::from_id(id).is_some(),
                    "{}: rule id {id:?} is not in broker/src/rules.rs",
                    f.display()
                );
                checked += 1;
            }
        }
        assert!(checked > 50, "{checked} literals found");
    }

    /// Quoted dotted ids of the rule families (isolation, launch, match,
    /// ...); other strings are not rules.
    fn rule_literals(text: &str) -> Vec<&str> {
        const FAMILIES: &[&str] = &[
            "isolation.",
            "launch.",
            "match.",
            "token.",
            "attest.",
            "workload.",
            "lease.",
        ];
        let mut out = Vec::new();
        for (at, _) in text.match_indices('"') {
            let rest = &text[at + 1..];
            let Some(end) = rest.find('"') else { break };
            let s = &rest[..end];
            let ok = FAMILIES
                .iter()
                .any(|f| s.starts_with(f) && s.len() > f.len())
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._".contains(c));
            if ok {
                out.push(s);
            }
        }
        out
    }
}
