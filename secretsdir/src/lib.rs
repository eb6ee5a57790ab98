//! The secrets directory and the OS seam under it, shared by the sidecar
//! and the broker's container side: a tmpfs checked once through a
//! descriptor ([`SecretsDir`]), atomic writes and zero-then-unlink wipes
//! ([`writer`]), a lease's files brought in line with what is on disk
//! ([`apply`]), and every mount, statfs, memfd, fcntl and prctl call
//! ([`sys`]). Also shared: [`change`], the change detection behind
//! `on_change` (content hashes, debounce, retries), and [`jitter`].
//!
//! **Invariant:** every such system call lives in [`sys`], through nix's
//! safe wrappers; this crate has no `unsafe`.
//! **Invariant:** the directory is looked up by path once, in
//! [`SecretsDir::open`] (or handed over as a descriptor to
//! [`SecretsDir::adopt_fd`]); every later write, wipe, listing and unmount
//! starts from that descriptor.
//! **Invariant:** no error, log line or `Debug` output holds a value.
#![forbid(unsafe_code)]
// Libraries report through `tracing` and errors; only the binary prints.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

pub mod apply;
pub mod change;
pub mod jitter;
pub mod sys;
pub mod writer;

use std::io;
use std::path::PathBuf;

pub use apply::{apply, apply_mapped, Applied, Delivered};
pub use writer::{DirProblem, SecretsDir};

/// What can go wrong with a secrets directory; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error(
        "{} is not on tmpfs (it is {fs_type}) and this process may not mount one there (that needs CAP_SYS_ADMIN): mount a tmpfs at {} (e.g. docker --tmpfs or emptyDir medium: Memory) or run the sidecar with CAP_SYS_ADMIN",
        dir.display(), dir.display()
    )]
    NotTmpfs { dir: PathBuf, fs_type: String },
    #[error(
        "cannot mount a tmpfs at {}: mount one there yourself (e.g. docker --tmpfs or emptyDir medium: Memory)",
        dir.display()
    )]
    Mount { dir: PathBuf, source: nix::Error },
    #[error("refusing the secrets directory: {}", .problem.explain(.dir))]
    UnsafeDir { dir: PathBuf, problem: DirProblem },
    #[error("cannot update {} in the secrets directory: check its permissions and free space", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("refusing to write {path}: {reason}")]
    BadPath { path: String, reason: &'static str },
}
