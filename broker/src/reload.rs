//! Policy reloads on SIGHUP and on any change in the policies directory.
//! A broken set is rejected whole and the old one keeps serving, and so is
//! a set with a file another user could have written (sshd's `StrictModes`:
//! [`unbaked_policy::Strictness::Strict`]). A chmod is a change too, so
//! making a policy file writable by others triggers the reload that refuses
//! it, and the rejection is audited with the file and the fix.

use crate::audit::{Event, Record};
use crate::service::Broker;
use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use unbaked_policy::PolicySet;

/// Edits arrive as bursts of events (editors write, rename, chmod); one
/// reload after the burst settles is enough.
const SETTLE: Duration = Duration::from_millis(200);

/// What to add to every loaded set (the `--dev` demo workload).
pub type Extra = Arc<dyn Fn(&mut PolicySet) + Send + Sync>;

/// Load the directory (if any), strictly, and add the extras.
pub fn load(dir: Option<&Path>, extra: &Extra) -> Result<PolicySet, unbaked_policy::Diagnostics> {
    let mut set = match dir {
        Some(dir) => unbaked_policy::load_dir_with(dir, unbaked_policy::Strictness::Strict)?,
        None => PolicySet::default(),
    };
    extra(&mut set);
    Ok(set)
}

/// Reload once; the outcome is logged and audited.
pub fn reload(broker: &Broker, dir: Option<&Path>, extra: &Extra, why: &str) -> bool {
    match load(dir, extra) {
        Ok(set) => {
            let n = set.len();
            broker.replace_policies(set);
            broker.metrics().reload(true);
            tracing::info!(workloads = n, trigger = why, "policies reloaded");
            let record = Record {
                reason: Some(format!("{why}: {n} workloads")),
                ..Record::default()
            };
            if let Err(e) = broker.audit().record(Event::Reload, record) {
                tracing::error!(error = %e, "could not audit a reload");
            }
            true
        }
        Err(diags) => {
            broker.metrics().reload(false);
            for d in &diags.0 {
                tracing::error!(diagnostic = %d, "policy reload rejected");
            }
            tracing::error!(
                errors = diags.0.len(),
                trigger = why,
                "policy reload rejected: the previous policies keep serving; fix the errors above"
            );
            let record = Record {
                reason: Some(format!(
                    "{why}: {} errors, first: {}",
                    diags.0.len(),
                    diags.0.first().map(|d| d.to_string()).unwrap_or_default()
                )),
                ..Record::default()
            };
            if let Err(e) = broker.audit().record(Event::ReloadRejected, record) {
                tracing::error!(error = %e, "could not audit a rejected reload");
            }
            false
        }
    }
}

/// What triggers a reload: SIGHUP and changes in the policies directory.
/// Set up before the socket exists, so that a SIGHUP or an edit right
/// after the broker answers is queued for [`watch`], never lost (a SIGHUP
/// caught by no stream yet would be dropped).
pub struct Triggers {
    rx: mpsc::Receiver<&'static str>,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl std::fmt::Debug for Triggers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Triggers")
            .field("watching", &self._watcher.is_some())
            .finish()
    }
}

/// Install the SIGHUP handler and the directory watch. A directory that
/// cannot be watched (inotify limits) is logged and leaves SIGHUP.
pub fn triggers(dir: Option<&Path>) -> std::io::Result<Triggers> {
    let (tx, rx) = mpsc::channel::<&'static str>(16);
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let watcher = dir.and_then(|dir| {
        let tx = tx.clone();
        let watched = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if ev.is_ok_and(|e| !e.kind.is_access()) {
                let _ = tx.try_send("policies directory changed");
            }
        })
        .and_then(|mut w| w.watch(dir, RecursiveMode::NonRecursive).map(|()| w));
        match watched {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the policies directory: reload with SIGHUP");
                None
            }
        }
    });
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let _ = tx.send("SIGHUP").await;
        }
    });
    Ok(Triggers {
        rx,
        _watcher: watcher,
    })
}

/// Reload on every trigger until the task is dropped.
pub async fn watch(
    broker: Arc<Broker>,
    dir: Option<PathBuf>,
    extra: Extra,
    mut triggers: Triggers,
) {
    while let Some(mut why) = triggers.rx.recv().await {
        tokio::time::sleep(SETTLE).await;
        while let Ok(next) = triggers.rx.try_recv() {
            if next == "SIGHUP" {
                why = next;
            }
        }
        reload(&broker, dir.as_deref(), &extra, why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_broker_loads_strictly() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.toml");
        std::fs::write(&file, "workload = \"a\"\n[match]\nuids = [1]\n").unwrap();
        let none: Extra = Arc::new(|_| {});
        assert_eq!(load(Some(dir.path()), &none).unwrap().len(), 1);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        let diags = load(Some(dir.path()), &none).unwrap_err();
        assert!(
            diags
                .to_string()
                .contains("writable by group and others (mode 0666) (hint: chmod 0644"),
            "{diags}"
        );
        // Tools read the same directory as data.
        assert!(unbaked_policy::load_dir(dir.path()).is_ok());
    }
}
