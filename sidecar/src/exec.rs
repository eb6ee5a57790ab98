//! `unbaked exec`: fetch env and fd grants, then replace this process with
//! the command. Nothing is written anywhere: env values live in the new
//! process's environment, fd values in sealed memfds it inherits.
//!
//! When a delivered template has an `on_change`, the shim cannot simply
//! `execve`: it stays as a small parent (`supervise.rs`) that renews the
//! lease, watches the rendered content and signals, restarts or runs a
//! command for its one child.

use crate::client::{Client, ClientError};
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use unbaked_api::exit;
use unbaked_api::wire::{Delivery, DeliveryKind, FetchRequest};
use unbaked_secretsdir::sys;

#[derive(Debug, Clone)]
pub struct ExecConfig {
    pub socket: PathBuf,
    pub workload: String,
    pub command: Vec<OsString>,
    /// A service-account token to send with the fetch (Kubernetes).
    pub token_file: Option<PathBuf>,
}

/// The command with its environment set and the memfds it will inherit.
pub struct Prepared {
    command: Command,
    program: OsString,
    /// Kept open until exec; close-on-exec is cleared on each.
    fds: Vec<OwnedFd>,
    /// Variable names only, for `Debug`.
    names: Vec<String>,
    /// Set when a template has an `on_change`: the shim supervises.
    supervise: Option<crate::supervise::Supervised>,
}

impl fmt::Debug for Prepared {
    // `Command`'s own Debug prints the environment, values included.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared")
            .field("program", &self.program)
            .field("variables", &self.names)
            .field("fds", &self.fds.len())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(
        "no command given: put it after `--`, e.g. `unbaked exec --workload NAME -- CMD [ARG...]`"
    )]
    EmptyCommand,
    #[error("{}: command not found (check the name and PATH)", program.to_string_lossy())]
    NotFound { program: OsString },
    #[error("{}: cannot execute (check that it is an executable file and its permissions)", program.to_string_lossy())]
    CannotExecute {
        program: OsString,
        source: io::Error,
    },
    #[error("cannot deliver {name}: {reason}")]
    BadItem { name: String, reason: &'static str },
    #[error("cannot create the memfd for {name}")]
    Io { name: String, source: io::Error },
    #[error("cannot supervise the command (on_change): {0}")]
    Supervise(#[source] io::Error),
}

impl ExecError {
    /// Why spawning `program` failed, like `exec` reports it.
    pub(crate) fn spawn(program: OsString, err: io::Error) -> ExecError {
        match err.kind() {
            io::ErrorKind::NotFound => ExecError::NotFound { program },
            _ => ExecError::CannotExecute {
                program,
                source: err,
            },
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            ExecError::Client(e) => e.exit_code(),
            ExecError::NotFound { .. } => exit::COMMAND_NOT_FOUND,
            ExecError::CannotExecute { .. } => exit::CANNOT_EXECUTE,
            _ => exit::FAILURE,
        }
    }
}

/// Fetch the env and fd grants and build the command around them.
pub async fn prepare(cfg: &ExecConfig) -> Result<Prepared, ExecError> {
    let (program, _) = cfg.command.split_first().ok_or(ExecError::EmptyCommand)?;
    let client = Client::new(&cfg.socket).with_token_file(cfg.token_file.clone());
    let lease = client
        .fetch(&FetchRequest {
            workload: cfg.workload.clone(),
            kinds: vec![DeliveryKind::Env, DeliveryKind::Fd],
        })
        .await?;
    let (command, fds, names) = build(&cfg.command, &lease.items)?;
    tracing::debug!(workload = %cfg.workload, lease_id = %lease.lease_id, variables = names.len(), "exec grants prepared");
    let supervise = (!lease.actions.is_empty())
        .then(|| crate::supervise::Supervised::new(client, cfg.command.clone(), lease));
    Ok(Prepared {
        command,
        program: program.clone(),
        fds,
        names,
        supervise,
    })
}

/// The command around a lease's env and fd items: the command, the memfds
/// it must inherit, and the variable names.
pub(crate) fn build(
    argv: &[OsString],
    items: &[unbaked_api::wire::Item],
) -> Result<(Command, Vec<OwnedFd>, Vec<String>), ExecError> {
    let (program, args) = argv.split_first().ok_or(ExecError::EmptyCommand)?;
    let mut command = Command::new(program);
    command.args(args);
    let (mut fds, mut names) = (Vec::new(), Vec::new());
    for item in items {
        let value = item.value.expose_secret();
        match &item.delivery {
            Delivery::Env { name } => {
                check_name(name)?;
                if value.contains(&0) {
                    return Err(ExecError::BadItem {
                        name: name.clone(),
                        reason: "its value holds a NUL byte, which an environment variable cannot carry: grant it as `fd` instead",
                    });
                }
                command.env(name, std::ffi::OsStr::from_bytes(value));
                names.push(name.clone());
            }
            Delivery::Fd { name } => {
                check_name(name)?;
                let io = |source| ExecError::Io {
                    name: name.clone(),
                    source,
                };
                let fd = sys::sealed_memfd(name, value).map_err(io)?;
                sys::clear_cloexec(fd.as_fd()).map_err(io)?;
                command.env(name, format!("/proc/self/fd/{}", fd.as_raw_fd()));
                fds.push(fd);
                names.push(name.clone());
            }
            Delivery::File { .. } => {} // not asked for; the sidecar's job
        }
    }
    Ok((command, fds, names))
}

fn check_name(name: &str) -> Result<(), ExecError> {
    if name.is_empty() || name.contains(['=', '\0']) {
        return Err(ExecError::BadItem {
            name: name.escape_debug().to_string(),
            reason: "not a valid environment variable name",
        });
    }
    Ok(())
}

impl Prepared {
    /// Replace this process with the command (PATH lookup); returns only on
    /// failure. The lease is not revoked: the command's copy lives its ttl.
    pub fn exec(mut self) -> ExecError {
        if let Some(sup) = self.supervise.take() {
            return sup.run(self.command, self.fds, self.program);
        }
        let err = self.command.exec();
        drop(self.fds);
        match err.kind() {
            io::ErrorKind::NotFound => ExecError::NotFound {
                program: self.program,
            },
            _ => ExecError::CannotExecute {
                program: self.program,
                source: err,
            },
        }
    }
}
