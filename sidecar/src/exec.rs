//! `unbaked exec`: fetch env and fd grants, then replace this process with
//! the command. Nothing is written anywhere: env values live in the new
//! process's environment, fd values in sealed memfds it inherits.
//!
//! When a delivered template has an `on_change`, the shim cannot simply
//! `execve`: it stays as a small parent (`supervise.rs`) that renews the
//! lease, watches the rendered content and signals, restarts or runs a
//! command for its one child.

use crate::child::build;
pub use crate::child::ExecError;
use crate::client::Client;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use unbaked_api::wire::{DeliveryKind, FetchRequest, Lease};

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

/// The workload's env and fd grants, and the client that fetched them
/// (it renews the lease when the shim stays the command's parent).
async fn fetch_variables(cfg: &ExecConfig) -> Result<(Client, Lease), ExecError> {
    let client = Client::new(&cfg.socket).with_token_file(cfg.token_file.clone());
    let lease = client
        .fetch(&FetchRequest {
            workload: cfg.workload.clone(),
            kinds: vec![DeliveryKind::Env, DeliveryKind::Fd],
        })
        .await?;
    Ok((client, lease))
}

/// Fetch the env and fd grants and build the command around them.
pub async fn prepare(cfg: &ExecConfig) -> Result<Prepared, ExecError> {
    let (program, _) = cfg.command.split_first().ok_or(ExecError::EmptyCommand)?;
    let (client, lease) = fetch_variables(cfg).await?;
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

/// `unbaked exec --files DIR`, the shim of a Compose service: the file
/// grants go into `files.dir` (the container's own tmpfs) first, then the
/// env and fd grants are fetched and the command started as a child; the
/// shim stays its parent, renewing both leases (files rewritten on
/// rotation, wiped when withdrawn), forwarding signals, and when the
/// command exits it wipes the files, revokes, and returns its status.
pub async fn run_with_files(
    cfg: &ExecConfig,
    files: crate::sidecar::SidecarConfig,
) -> Result<i32, ExecError> {
    use tokio::sync::oneshot;
    let (ready_tx, ready_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel();
    let task = tokio::spawn(crate::sidecar::run_until(files, ready_tx, stop_rx));
    let stopped =
        |r: Result<Result<(), crate::sidecar::SidecarError>, tokio::task::JoinError>| match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ExecError::Files(Box::new(e))),
            Err(e) => Err(ExecError::Supervise(io::Error::other(e))),
        };
    if ready_rx.await.is_err() {
        // The sidecar ended before its first delivery: say why.
        stopped(task.await)?;
        return Err(ExecError::Supervise(io::Error::other(
            "the file grants' delivery stopped before the first delivery",
        )));
    }
    let outcome = async {
        let (program, _) = cfg.command.split_first().ok_or(ExecError::EmptyCommand)?;
        let (client, lease) = fetch_variables(cfg).await?;
        let (command, fds, _) = build(&cfg.command, &lease.items)?;
        crate::supervise::Supervised::new(client, cfg.command.clone(), lease)
            .serve(command, fds, program.clone())
            .await
    }
    .await;
    let _ = stop_tx.send(());
    let wiped = stopped(task.await);
    let code = outcome?;
    wiped?;
    Ok(code)
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
