//! Change actions as the sidecar and the exec shim carry them out: the
//! change detection ([`Watch`]: content hashes, debounce, retries) is
//! shared with the broker's container side, in
//! [`unbaked_secretsdir::change`]; here, the command runner and signal
//! names. The sidecar runs `command` actions after writing the new
//! content, and asks the broker to signal the app container the policy
//! names (`signal_container`, [`ask_broker`]); the shim signals or
//! restarts its child (`supervise.rs`).

use crate::client::Client;
use unbaked_api::wire::ActionRequest;
pub use unbaked_secretsdir::change::{describe, Counters, Due, Watch};

/// Why an action failed: try again later, or never (a denial).
#[derive(Debug)]
pub enum Failed {
    Retry(String),
    Refused(String),
}

/// A `signal_container` action: the broker, having attested us as the
/// lease's holder, signals the container its policy names for the item
/// (we never hold the engine's socket).
pub async fn ask_broker(client: &Client, lease_id: &str, due: &Due) -> Result<(), Failed> {
    let req = ActionRequest {
        lease_id: lease_id.to_string(),
        item: due.id.clone(),
        from_version: due.from_version,
        to_version: due.to_version,
        changes: due.changes,
        attempt: due.attempts,
    };
    match client.action(&req).await {
        Ok(done) => {
            tracing::debug!(target: "unbaked::action", item = %due.id, container = %done.container, signal = %done.signal, "the broker signalled the container");
            Ok(())
        }
        Err(e) if e.is_denied() || e.is_not_found() => Err(Failed::Refused(e.to_string())),
        Err(e) => Err(Failed::Retry(e.to_string())),
    }
}

/// Run a command from the policy (argv, no shell, nothing inherited on
/// stdin); Ok when it exits 0.
pub async fn run_command(argv: &[String]) -> Result<(), String> {
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let status = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|e| format!("cannot start {program:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program:?} exited with {status}"))
    }
}

/// A signal name from the policy (`SIGHUP`) as nix's.
pub fn signal_of(name: &str) -> Result<nix::sys::signal::Signal, String> {
    name.parse::<nix::sys::signal::Signal>()
        .map_err(|_| format!("unknown signal {name:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names() {
        assert_eq!(signal_of("SIGHUP"), Ok(nix::sys::signal::Signal::SIGHUP));
        assert!(signal_of("HUP").is_err());
    }
}
