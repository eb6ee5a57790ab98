//! `unbaked exec` with change actions: the shim stays as the parent of
//! the command instead of `execve`ing it, because a new value cannot be put
//! into a running process's environment or sealed memfd.
//!
//! - It renews the lease at 55-67% of its ttl and watches each item with an
//!   `on_change` by content ([`crate::actions::Watch`]): debounced,
//!   retried, logged under `unbaked::action`.
//! - `signal`: sent to the child (its own pid, held in the `Child`, so a
//!   recycled pid is never signalled: the child is not reaped until we
//!   have seen it exit). The child keeps its old env and fds, so a signal
//!   suits apps that re-read a sidecar file, not exec's own deliveries.
//! - `restart`: SIGTERM, up to [`STOP_GRACE`], SIGKILL, then the command
//!   again with the renewed values (fresh env and sealed memfds).
//! - `command`: run (argv, no shell) beside the child.
//!
//! pid 1: in a container the shim is now pid 1 and the app its child. The
//! shim forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to
//! the child, exits with the child's status (128+N for a signal), and
//! revokes the lease on the way out. It reaps only its own child: an app
//! that leaves orphans behind wants `docker run --init` as well.

use crate::actions::{run_command, signal_of, Watch};
use crate::child::{build, ExecError};
use crate::client::Client;
use crate::jitter::Backoff;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;
use std::time::Instant;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};
use unbaked_api::wire::{ChangeAction, Item, Lease, OnChange};

/// How long a restarted child may take to stop before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// What the supervisor needs from the first fetch.
pub struct Supervised {
    client: Client,
    argv: Vec<OsString>,
    lease_id: String,
    ttl_secs: u64,
    items: Vec<Item>,
    actions: BTreeMap<String, ChangeAction>,
}

impl std::fmt::Debug for Supervised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervised")
            .field("lease_id", &self.lease_id)
            .field("items", &self.items.len())
            .finish_non_exhaustive()
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// Renew between 55% and two thirds of the ttl, like the sidecar.
fn renew_after(ttl_secs: u64) -> Duration {
    let full = Duration::from_millis(ttl_secs.saturating_mul(2000) / 3);
    let early = full.mul_f64(0.175 * crate::jitter::unit());
    (full - early).max(Duration::from_secs(1))
}

impl Supervised {
    pub(crate) fn new(client: Client, argv: Vec<OsString>, lease: Lease) -> Supervised {
        Supervised {
            client,
            argv,
            lease_id: lease.lease_id,
            ttl_secs: lease.ttl_secs,
            items: lease.items,
            actions: lease.actions,
        }
    }

    /// Runs the command under supervision; exits the process with the
    /// child's status, or returns why it could not start.
    pub fn run(
        self,
        command: std::process::Command,
        fds: Vec<OwnedFd>,
        program: OsString,
    ) -> ExecError {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return ExecError::Supervise(e),
        };
        match rt.block_on(self.serve(command, fds, program)) {
            Ok(code) => std::process::exit(code),
            Err(e) => e,
        }
    }

    pub(crate) async fn serve(
        mut self,
        command: std::process::Command,
        fds: Vec<OwnedFd>,
        program: OsString,
    ) -> Result<i32, ExecError> {
        let mut forward = Vec::new();
        for kind in [
            SignalKind::terminate(),
            SignalKind::interrupt(),
            SignalKind::hangup(),
            SignalKind::quit(),
            SignalKind::user_defined1(),
            SignalKind::user_defined2(),
        ] {
            forward.push((kind, signal(kind).map_err(ExecError::Supervise)?));
        }
        let mut child = Command::from(command)
            .spawn()
            .map_err(|e| ExecError::spawn(program.clone(), e))?;
        drop(fds); // the child holds them now
        let mut watch = Watch::new();
        watch.observe_items(&self.items, &self.actions, Instant::now());
        let mut next_renew = Instant::now() + renew_after(self.ttl_secs);
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let code = loop {
            let due = watch.next_due();
            tokio::select! {
                status = child.wait() => {
                    let status = status.map_err(ExecError::Supervise)?;
                    break exit_code(status);
                }
                sig = recv_any(&mut forward) => {
                    if let (Some(pid), Ok(sig)) = (child.id(), Signal::try_from(sig)) {
                        let _ = kill(Pid::from_raw(pid as i32), sig);
                    }
                }
                _ = tokio::time::sleep_until(next_renew.into()) => {
                    let sent = Instant::now();
                    match self.client.renew(&self.lease_id).await {
                        Ok(lease) => {
                            backoff.reset();
                            watch.observe(&lease, Instant::now());
                            next_renew = sent + renew_after(lease.ttl_secs);
                            self.items = lease.items;
                            self.actions = lease.actions;
                        }
                        Err(e) => {
                            let wait = backoff.next_wait();
                            tracing::warn!(error = %e, retry_in = ?wait, "cannot renew the lease: the command keeps its values");
                            next_renew = Instant::now() + wait;
                        }
                    }
                }
                _ = sleep_opt(due) => {
                    for d in watch.take_due(Instant::now()) {
                        self.act(&mut watch, &mut child, &d).await;
                    }
                }
            }
        };
        let client = self.client.clone().with_timeout(Duration::from_secs(1));
        if let Err(e) = client.revoke(&self.lease_id).await {
            tracing::warn!(error = %e, "could not revoke the lease: it ends at its ttl");
        }
        Ok(code)
    }

    /// Carry out one due action and report it to `watch`.
    async fn act(&self, watch: &mut Watch, child: &mut Child, d: &crate::actions::Due) {
        use crate::actions::Failed;
        let result = match &d.action {
            OnChange::Signal {
                signal,
                container: None,
            } => signal_child(child, signal),
            OnChange::Signal {
                container: Some(_), ..
            } => match crate::actions::ask_broker(&self.client, &self.lease_id, d).await {
                Ok(()) => Ok(()),
                Err(Failed::Retry(e)) => Err(e),
                Err(Failed::Refused(e)) => return watch.abandon(d, &e),
            },
            OnChange::Command { command } => run_command(command).await,
            OnChange::Restart => match self.restart(child).await {
                Ok(new) => {
                    *child = new;
                    Ok(())
                }
                Err(e) => Err(e),
            },
        };
        watch.done(d, result, Instant::now());
    }

    /// Stop the child and start the command again with the current values.
    async fn restart(&self, child: &mut Child) -> Result<Child, String> {
        if let Some(pid) = child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        if tokio::time::timeout(STOP_GRACE, child.wait())
            .await
            .is_err()
        {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        let (command, fds, _) = build(&self.argv, &self.items).map_err(|e| e.to_string())?;
        let new = Command::from(command)
            .spawn()
            .map_err(|e| format!("cannot start the command again: {e}"))?;
        drop(fds);
        Ok(new)
    }
}

fn signal_child(child: &Child, name: &str) -> Result<(), String> {
    let sig = signal_of(name)?;
    let pid = child.id().ok_or("the command has exited")?;
    kill(Pid::from_raw(pid as i32), sig).map_err(|e| format!("cannot signal the command: {e}"))
}

async fn recv_any(signals: &mut [(SignalKind, tokio::signal::unix::Signal)]) -> i32 {
    let futs = signals.iter_mut().map(|(kind, s)| {
        let n = kind.as_raw_value();
        Box::pin(async move {
            s.recv().await;
            n
        })
    });
    futures_select_all(futs).await
}

/// The first of several futures to finish (no extra dependency).
async fn futures_select_all<F: std::future::Future<Output = i32> + Unpin>(
    futs: impl Iterator<Item = F>,
) -> i32 {
    let mut futs: Vec<F> = futs.collect();
    std::future::poll_fn(move |cx| {
        for f in futs.iter_mut() {
            if let std::task::Poll::Ready(v) = std::pin::Pin::new(f).poll(cx) {
                return std::task::Poll::Ready(v);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

async fn sleep_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell() {
        use std::process::ExitStatus;
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 128 + 15);
    }

    #[test]
    fn renewal_within_two_thirds_of_the_ttl() {
        for _ in 0..20 {
            let d = renew_after(60);
            assert!(
                d >= Duration::from_secs(33) && d <= Duration::from_secs(40),
                "{d:?}"
            );
        }
        assert_eq!(renew_after(1), Duration::from_secs(1));
    }
}
