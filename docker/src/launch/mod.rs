//! The launch plan of `unbaked run`: the user's `docker run` arguments,
//! checked against the workload's `[isolation]`, hardened, and wrapped
//! around the exec shim.
//!
//! - `flags.rs`: every `docker run` option in one table ([`Flag`]).
//! - `parse.rs`: docker's argument grammar ([`parse`], [`mount_fields`]).
//! - `plan.rs`: the refusals, by concern (namespaces, mounts, capabilities,
//!   labels), and the final argv ([`plan_with`]).
//!
//! **Invariant:** pure. [`parse`] and [`plan_with`] do no I/O (the broker
//! inspects the image and the volumes, and resolves bind sources to device
//! and inode with [`crate::mount_identity`] first, and hands the
//! answers in as [`Facts`] and [`HostFacts`]), so both can be fuzzed and
//! unit-tested.
//! **Invariant:** a plan holds names, paths and labels, never a value: the
//! shim fetches values at run time over the broker socket.
//! **Invariant:** the isolation predicates are [`crate::isolation::Judge`]'s:
//! the plan only turns options into [`crate::isolation::Setting`]s.
//!
//! The refusals here fail a launch before anything starts, with the rule
//! named; the guarantee is the check at issuance ([`crate::isolation`]),
//! which also covers containers started any other way.

mod flags;
mod labels;
mod mounts;
mod parse;
mod plan;

pub use flags::{disagreements, from_help, Arity, Flag, FlagSpec, FLAGS};
pub use mounts::{host_paths, named_volumes};
pub use parse::{mount_fields, parse, Opt, Parsed, Refusal};
pub use plan::plan_with;

use crate::isolation::{FileId, Protected};
use std::collections::BTreeMap;
use unbaked_policy::{Policy, PolicySet};

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
/// The size of the per-container tmpfs a Compose service's shim fills.
pub const CONTAINER_TMPFS_SIZE: &str = "1m";

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
    /// A Compose service (`unbaked compose`): no launch label (compose
    /// starts the replicas; nobody claims a launch).
    pub compose: bool,
    /// With `compose`: the workload has file grants, so each container gets
    /// an engine tmpfs at `/run/secrets` that the shim fills (`exec --files`).
    pub container_files: bool,
    /// The engine remaps users (`userns-remap`) or runs rootless.
    pub engine_remaps_users: bool,
    /// The engine's default bridge has inter-container traffic off (a
    /// daemon started with `--icc=false`): containers stay on it, with no
    /// workload network.
    pub default_bridge_isolates: bool,
}

/// What the host's kernel and engine say, by identity rather than by name.
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    /// The engine's socket, its data root, and every directory above them
    /// ([`crate::mount_identity::protected`]).
    pub protected: Protected,
    /// `containers_dir` and every directory above it, by identity: a bind of
    /// any of them hands over every launched container's secrets.
    pub secrets_dirs: Vec<FileId>,
    /// Each path of [`host_paths`] that exists, by device and inode
    /// ([`crate::mount_identity::ids_of`]).
    pub sources: BTreeMap<String, FileId>,
    /// Each named volume of [`named_volumes`] that already exists.
    pub volumes: BTreeMap<String, Volume>,
    /// The image's own labels (`Config.Labels`): a container inherits them.
    pub image_labels: BTreeMap<String, String>,
}

/// An existing volume, as `docker volume inspect` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Volume {
    pub driver: String,
    /// The driver options (`type`, `o`, `device` for the local driver).
    pub options: BTreeMap<String, String>,
}

/// Everything a plan is made from.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The workload being launched.
    pub policy: &'a Policy,
    /// Every loaded policy (the launched one is skipped): a container must
    /// not carry labels that another workload's `[match]` selects.
    pub policies: &'a PolicySet,
    pub facts: &'a Facts,
    pub host: &'a HostFacts,
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

/// [`plan_with`] without the other policies and the host's identities:
/// mounts are judged by path text only and labels only against the
/// launched workload: the unit tests' shorthand (the broker calls
/// [`plan_with`]).
#[cfg(test)]
pub fn plan(parsed: &Parsed, policy: &Policy, facts: &Facts) -> Result<Plan, Vec<Refusal>> {
    plan_with(
        parsed,
        &Inputs {
            policy,
            policies: &PolicySet::default(),
            facts,
            host: &HostFacts::default(),
        },
    )
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
mod tests;
