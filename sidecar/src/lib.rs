//! The clients of the broker: the API [`client`], the tmpfs [`sidecar`]
//! (through `unbaked-secretsdir`) and the [`exec`] shim.
//!
//! **Invariant:** every mount, statfs, memfd, fcntl and prctl call lives in
//! `unbaked_secretsdir::sys`, through nix's safe wrappers; this crate has
//! no `unsafe`.
//! **Invariant:** no log line, error message or `Debug` output of this crate
//! holds a secret value; values stay in [`unbaked_api::Secret`] or
//! `Zeroizing` buffers until they are written to their destination.
#![forbid(unsafe_code)]
// Libraries report through `tracing` and errors; only the binary prints.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

pub mod actions;
mod child;
pub mod client;
pub mod exec;
use unbaked_secretsdir::jitter;
pub mod sidecar;
mod supervise;

pub use client::{Client, ClientError};
pub use exec::{ExecConfig, ExecError, Prepared};
pub use sidecar::{SidecarConfig, SidecarError};
pub use unbaked_secretsdir::{sys, DirError, DirProblem, SecretsDir};
