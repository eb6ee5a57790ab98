//! The child a shim starts: its command with a lease's env and fd items
//! (sealed memfds), and what can go wrong building it. Shared by `exec`
//! (which becomes the child) and `supervise` (which stays its parent).

use crate::client::ClientError;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::process::Command;
use unbaked_api::exit;
use unbaked_api::wire::Delivery;
use unbaked_secretsdir::sys;

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
    /// `exec --files`: the file grants could not be delivered.
    #[error(transparent)]
    Files(Box<crate::sidecar::SidecarError>),
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
            ExecError::Files(e) => e.exit_code(),
            _ => exit::FAILURE,
        }
    }
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
