//! Docker as the broker's container platform: what the core asks of it
//! ([`unbaked_broker::platform::Platform`]), answered from the engine, the
//! launches and the isolation judge.

use crate::containers::{Bound, Containers};
use crate::engine::live;
use crate::launch::{LABEL_LAUNCH, SECRETS_PATH};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use unbaked_api::wire::{DeliveryKind, LaunchPlan, LaunchRequest, Lease};
use unbaked_broker::attest::container::{Attestation, ConnectionMemo, Evidence};
use unbaked_broker::audit::{Event, Record};
use unbaked_broker::platform::{BoxFuture, Core, FilesTarget, Platform, SignalError};
use unbaked_broker::request::{Ctx, PlatformError, Refusal, ServiceError};
use unbaked_broker::rules::DenyRule;
use unbaked_policy::Policy;

impl Platform for Containers {
    /// pid → cgroup → container, inspected for each request (so a renewal
    /// sees the live config again); the cgroup of a pinned caller is read
    /// once per connection.
    fn attest<'a>(
        &'a self,
        pid: i32,
        pinned: bool,
        memo: &'a ConnectionMemo,
    ) -> BoxFuture<'a, Attestation> {
        Box::pin(async move {
            if let Some(ids) = memo.cgroup_ids.get() {
                return self.engine.attest_ids(pid, ids).await;
            }
            match self.engine.cgroup_ids(pid) {
                Ok(ids) if pinned => {
                    let ids = memo.cgroup_ids.get_or_init(|| ids);
                    self.engine.attest_ids(pid, ids).await
                }
                Ok(ids) => self.engine.attest_ids(pid, &ids).await,
                Err(gone) => gone,
            }
        })
    }

    /// A container that `unbaked run` started for workload X is X's and
    /// only X's, whatever labels it carries; one naming a launch this
    /// broker does not know (it restarted since) is served nothing.
    fn gate(&self, evidence: &dyn Evidence, workload: &str) -> Result<(), Refusal> {
        // A container the wrappers started names its workload: it asks for
        // that one only (a compose replica carries no launch label).
        if let Some(w) = live(evidence).and_then(|c| c.labels.get(crate::launch::LABEL_WORKLOAD)) {
            if w != workload {
                return Err(Refusal::new(
                    DenyRule::LaunchWorkload,
                    format!(
                        "this container is labelled {}={w:?} and gets only that workload's secrets",
                        crate::launch::LABEL_WORKLOAD
                    ),
                ));
            }
        }
        let Some(launch_id) = live(evidence).and_then(|c| c.labels.get(LABEL_LAUNCH)) else {
            return Ok(());
        };
        let launched_for = self.launches().get(launch_id).map(|e| e.workload.clone());
        match launched_for {
            Some(w) if w == workload => Ok(()),
            Some(w) => Err(Refusal::new(
                DenyRule::LaunchWorkload,
                format!("this container was started by unbaked run for workload {w:?} (launch {launch_id}) and gets only its secrets"),
            )),
            None => Err(Refusal::new(
                DenyRule::LaunchUnknown,
                format!("this container names launch {launch_id}, which this broker does not know (it restarted since the launch, or the label was set by hand): start it again with unbaked run"),
            )),
        }
    }

    /// The live container against `[isolation]`. Every violation is named;
    /// the first one's rule is the audited rule.
    fn isolation(&self, evidence: &dyn Evidence, policy: &Policy) -> Result<(), Refusal> {
        let Some(c) = live(evidence) else {
            // Evidence of another platform: this one cannot judge it.
            return Err(Refusal::new(
                DenyRule::IsolationUnverified,
                "the caller's container was not attested by the Docker Engine, so its isolation cannot be checked",
            ));
        };
        let sockets = vec![self.engine.socket().to_string()];
        // The engine's and runtimes' sockets, the data root, the launches'
        // tmpfs directory (every `unbaked run` container's files) and what
        // is above each: no container may mount them, however it was
        // started. Kept while those roots stay the same files.
        let protected = self.protected.get(
            Path::new(self.engine.socket()),
            self.engine.known_data_root().as_deref(),
            &self.base,
        );
        let violations =
            crate::isolation::check_protected(&policy.isolation, c, &sockets, &protected);
        let Some(first) = violations.first() else {
            return Ok(());
        };
        let reason = violations
            .iter()
            .map(|v| format!("{}: {}", v.rule, v.reason))
            .collect::<Vec<_>>()
            .join("; ");
        let told = format!(
            "workload {:?}: nothing is released to a container that breaks its [isolation]: {reason}",
            policy.workload
        );
        let detail = format!("{told} (policy {})", policy.source.display());
        Err(Refusal::new(DenyRule::of(first.rule), told).detail(detail))
    }

    /// Remember the lease (it ends with the container); for the shim of an
    /// `unbaked run` container (its fetch asks for env and fd only) whose
    /// container mounts the launch's tmpfs at /run/secrets, ask for the
    /// file grants. The files' own fetch asks for `file`, so it does not
    /// come back here for more.
    fn fetched(
        &self,
        evidence: &dyn Evidence,
        workload: &str,
        kinds: &[DeliveryKind],
        lease_id: &str,
    ) -> Result<Option<FilesTarget>, Refusal> {
        let Some(c) = live(evidence) else {
            return Ok(None);
        };
        self.track(&c.id, lease_id);
        if kinds.is_empty() || kinds.contains(&DeliveryKind::File) {
            return Ok(None);
        }
        let Some(launch_id) = c.labels.get(LABEL_LAUNCH) else {
            return Ok(None);
        };
        let launches = self.launches();
        let Some(entry) = launches.get(launch_id) else {
            return Ok(None);
        };
        let Some(dir) = &entry.dir else {
            return Ok(None);
        };
        if entry.workload != workload {
            return Ok(None);
        }
        if let Some(b) = entry.bound.as_ref().filter(|b| b.container != c.id) {
            return Err(Refusal::new(
                DenyRule::LaunchClaimed,
                format!("launch {launch_id} already belongs to container {}: start every container with its own unbaked run", b.container.get(..12).unwrap_or(&b.container)),
            ));
        }
        // The container must mount this very tmpfs at /run/secrets.
        let root = dir.root();
        let mounted = c.mounts.iter().any(|m| {
            m.kind == "bind"
                && Path::new(&m.source) == root
                && crate::isolation::lexical_path(&m.destination) == SECRETS_PATH
        });
        Ok(mounted.then(|| FilesTarget(launch_id.clone())))
    }

    /// Write the file lease into the launch's tmpfs and follow it for
    /// renewal; a lease it replaces ends.
    fn deliver_files(
        &self,
        core: &dyn Core,
        ctx: &Ctx,
        target: &FilesTarget,
        files: &Lease,
    ) -> Result<(), ServiceError> {
        let launch_id = &target.0;
        let Some(container) = ctx.attestation.evidence().map(|e| e.id().to_string()) else {
            return Ok(());
        };
        let now = Instant::now();
        let mut launches = self.launches();
        let Some(entry) = launches.get_mut(launch_id) else {
            core.end_lease(
                &files.lease_id,
                "the launch ended while its files were fetched",
            );
            return Err(ServiceError::NotFound(format!(
                "launch {launch_id} ended meanwhile: start the container again"
            )));
        };
        if let Some(old) = entry.bound.take() {
            if old.lease_id != files.lease_id {
                core.end_lease(
                    &old.lease_id,
                    "replaced by a new fetch of the same container",
                );
            }
        }
        // SO_PEERCRED already gives the caller's ids as the host knows them;
        // a grant's own owner is mapped through the container's maps.
        let owner = (ctx.caller.uid, ctx.caller.gid);
        entry.id_maps = ctx.caller.pid.and_then(|pid| self.engine.id_maps(pid));
        let written = entry.write(files, now, owner);
        // What the app starts with (or restarts with: a new lease, new
        // certificates) is the baseline, not a change.
        entry.watch.rebase(&files.items, &files.actions);
        let ttl = Duration::from_secs(files.ttl_secs.max(1));
        entry.bound = Some(Bound {
            container: container.clone(),
            caller: ctx.caller.clone(),
            lease_id: files.lease_id.clone(),
            next_renew: now + ttl * 2 / 3,
            valid_until: now + ttl,
            ttl,
            init: ctx
                .attestation
                .evidence()
                .and_then(crate::launch_keep::InitId::of_evidence),
        });
        drop(launches);
        written.map_err(|e| ServiceError::Internal(e.to_string()))?;
        tracing::info!(workload = %files.workload, launch = %launch_id, container = %container.get(..12).unwrap_or(&container), files = files.items.len(), "file grants written to the container's secrets tmpfs");
        Ok(())
    }

    fn launch<'a>(
        &'a self,
        core: &'a dyn Core,
        ctx: &'a Ctx,
        policy: &'a Policy,
        req: LaunchRequest,
    ) -> BoxFuture<'a, Result<LaunchPlan, ServiceError>> {
        Box::pin(crate::prepare::launch(self, core, ctx, policy, req))
    }

    /// The launches' directory made private; what a previous broker left
    /// zeroed, unmounted and audited; events and renewals followed.
    fn start(self: Arc<Self>, core: Arc<dyn Core>) -> Result<Vec<JoinHandle<()>>, PlatformError> {
        self.secure_base()
            .map_err(|e| PlatformError::Setup(Box::new(e)))?;
        for launch in self.take_back(&*core) {
            // A restart forgets the earlier launches' leases: say so, per launch.
            core.audit()
                .record(
                    Event::Revoke,
                    Record {
                        workload: None,
                        reason: Some(format!(
                            "launch {launch}: the previous broker stopped without wiping; its files were zeroed and unmounted, and its container is no longer served until it is started again"
                        )),
                        ..Record::default()
                    },
                )
                .map_err(|e| PlatformError::Setup(Box::new(e)))?;
        }
        Ok(vec![
            tokio::spawn(crate::events::follow(core.clone(), self.clone())),
            tokio::spawn(crate::actions::run(core.clone(), self.clone())),
            tokio::spawn(crate::renewals::renewals(core, self)),
        ])
    }

    fn stop(&self) {
        self.wipe_all();
    }

    /// The launches, for a restarted broker ([`crate::launch_keep`]).
    fn keep(&self) -> Option<Vec<u8>> {
        self.keeping
            .load(std::sync::atomic::Ordering::Relaxed)
            .then(|| self.keep_record())
    }

    /// A sidecar's `signal_container`: see [`crate::actions::signal_named`].
    fn signal_container<'a>(
        &'a self,
        workload: &'a str,
        name: &'a str,
        signal: &'a str,
    ) -> BoxFuture<'a, Result<String, SignalError>> {
        Box::pin(crate::actions::signal_named(self, workload, name, signal))
    }

    /// The launches' change actions that fail and are being retried, and
    /// the kept launches whose tmpfs is left alone.
    fn detail(&self) -> Vec<String> {
        let mut lines = crate::actions::detail(self);
        lines.extend(self.quarantine_detail());
        lines
    }
}

#[cfg(test)]
mod tests {
    use crate::isolation::LiveContainer;
    use std::sync::Arc;
    use unbaked_api::wire::{ErrorCode, FetchRequest};
    use unbaked_broker::attest::container::{Attestation, Evidence};
    use unbaked_broker::rules::DenyRule;
    use unbaked_broker::service::{Broker, Ctx};
    use unbaked_policy::Caller;

    const POLICY: &str = "workload = \"web\"\n[match]\ndocker_labels = { app = \"web\" }\n";

    /// A broker on Docker's platform (no engine needed: the judge works on
    /// the inspected container it is given).
    async fn broker(dir: &std::path::Path) -> Broker {
        let policies = unbaked_policy::from_sources(&[("web.toml".into(), POLICY.into())]).unwrap();
        let store = Arc::new(unbaked_broker::store::memory::MemoryStore::new().unwrap());
        let audit = unbaked_broker::audit::Audit::open(&dir.join("audit.log")).unwrap();
        let platform = crate::open(dir.join("broker.sock")).await;
        Broker::new(policies, store, audit, 0).with_platform(platform)
    }

    fn in_container(live: LiveContainer) -> Ctx {
        let attestation = Attestation::Container(Arc::new(live) as Arc<dyn Evidence>);
        Ctx {
            caller: Caller {
                uid: 1000,
                gid: 1000,
                pid: Some(42),
                container: attestation.container_info(),
                service_account: None,
            },
            request_id: "1".into(),
            attestation,
        }
    }

    /// The live check's denials go through the core's one deny path:
    /// audited (with the policy file, for the operator), counted, and the
    /// caller told its own container only.
    #[tokio::test]
    async fn isolation_denials_are_audited_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path()).await;
        let fetch = || FetchRequest {
            workload: "web".into(),
            kinds: vec![],
        };
        let web = |privileged| LiveContainer {
            id: "cd".repeat(32),
            name: "web-1".into(),
            privileged,
            labels: [("app".to_string(), "web".to_string())].into(),
            ..crate::isolation::tests::compliant()
        };
        let e = b
            .fetch(&in_container(web(true)), fetch())
            .await
            .unwrap_err();
        assert_eq!(e.rule(), Some(DenyRule::IsolationPrivileged));
        assert_eq!(e.code(), ErrorCode::Denied);
        let message = unbaked_api::wire::ApiError::from(e).message;
        assert!(
            message.contains("in container cdcdcdcdcdcd (web-1)"),
            "{message}"
        );
        assert!(!message.contains("web.toml"), "{message}");
        // Control: the same container, not privileged, is served.
        b.fetch(&in_container(web(false)), fetch())
            .await
            .expect("an isolated container is served");

        let m = b.render_metrics();
        let line = "unbaked_denials_total{workload=\"web\",rule=\"isolation.privileged\"} 1";
        assert!(m.contains(line), "{line} missing:\n{m}");
        let text = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
        assert!(text.contains("\"rule\":\"isolation.privileged\""), "{text}");
        assert!(text.contains("\"name\":\"web-1\""), "{text}");
        assert!(
            text.contains("web.toml"),
            "the operator's record names the policy: {text}"
        );
    }
}
