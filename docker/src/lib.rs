//! Docker as unbaked's container platform: container attestation (the
//! caller's cgroup names a candidate, the engine and the kernel's
//! namespaces decide), the `[isolation]` judge over a container's live
//! setup, `unbaked run` launches with their per-container secrets tmpfs,
//! and the end of what a container held when the engine says it died.
//!
//! The broker's core (`unbaked-broker`) knows none of this: it calls the
//! [`unbaked_broker::platform::Platform`] that [`open`] returns.
//!
//! - `engine.rs`: the engine over bollard; pid → cgroup → inspected
//!   container, checked against the kernel's namespaces.
//! - `isolation.rs`: every isolation predicate once (`Judge`), used by
//!   the live check and the launch plan; `mount_identity.rs`: mounts by
//!   device and inode.
//! - `launch/`: `docker run` arguments: flags table, parse, plan (pure).
//! - `prepare.rs`: a launch's engine facts, network and tmpfs.
//! - `containers.rs`: the launches and the leases each container holds;
//!   `tmpfs.rs`: one launch's tmpfs; `host_mount.rs`: the host's mount
//!   namespace; `launch_keep.rs`: the launches across a broker restart; `renewals.rs` and `events.rs`: keeping them current;
//!   `actions.rs`: a file template's `on_change` carried out on the
//!   container through the engine.
//! - `platform.rs`: the `Platform` implementation.
#![forbid(unsafe_code)]
// Libraries report through `tracing` and errors; only the binary prints.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

mod actions;
pub mod containers;
pub mod engine;
pub mod events;
pub mod host_mount;
pub mod isolation;
pub mod launch;
mod launch_keep;
pub mod mount_identity;
mod platform;
pub mod prepare;
mod renewals;
mod tmpfs;

use std::path::PathBuf;
use std::sync::Arc;
use unbaked_broker::platform::{BoxFuture, Platform};

pub use containers::Containers;
pub use engine::{Engine, EngineError};

/// Docker as the platform of a broker whose socket is at `socket`
/// (absolute): the engine at `DOCKER_HOST` or the default socket, the
/// launches' tmpfs under `<socket dir>/containers`. Without a reachable
/// engine the broker still serves host processes; callers inside
/// containers are denied until it answers.
pub fn open(socket: PathBuf) -> BoxFuture<'static, Arc<dyn Platform>> {
    Box::pin(async move {
        let engine = Engine::from_env().await;
        Arc::new(Containers::new(engine, &socket)) as Arc<dyn Platform>
    })
}
