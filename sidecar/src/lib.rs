//! The clients of the broker: the API [`client`], the tmpfs [`sidecar`]
//! (through [`writer`]) and the [`exec`] shim.
//!
//! **Invariant:** every mount, statfs, memfd, fcntl and prctl call lives in
//! [`sys`], through nix's safe wrappers; this crate has no `unsafe`.
//! **Invariant:** no log line, error message or `Debug` output of this crate
//! holds a secret value; values stay in [`unbaked_api::Secret`] or
//! `Zeroizing` buffers until they are written to their destination.
//! **Invariant:** the secrets directory is looked up by path once, in
//! [`SecretsDir::open`], which checks it (not a symlink, owner, mode,
//! tmpfs) through the descriptor it keeps; every later write, wipe, listing
//! and unmount starts from that descriptor.
#![forbid(unsafe_code)]

pub mod actions;
pub mod client;
pub mod exec;
mod jitter;
pub mod sidecar;
mod supervise;
pub mod sys;
pub mod writer;

pub use client::{Client, ClientError};
pub use exec::{ExecConfig, ExecError, Prepared};
pub use sidecar::{SidecarConfig, SidecarError};
pub use writer::{DirProblem, SecretsDir};
