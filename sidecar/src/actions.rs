//! Change actions as the sidecar and the exec shim carry them out: the
//! change detection ([`Watch`]: content hashes, debounce, retries) is
//! shared with the broker's container side, in
//! [`unbaked_secretsdir::change`]; here, the command runner and signal
//! names. The sidecar runs `command` actions after writing the new
//! content; the shim signals or restarts its child (`supervise.rs`).

pub use unbaked_secretsdir::change::{describe, Counters, Due, Watch};

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
