//! The seam between the broker's core and a container platform: who a
//! caller is beyond its peer credentials (the container it runs in), what
//! that container's live setup allows (`[isolation]`), and what the platform
//! does around a fetch (file grants written into a launched container) and a
//! launch (`unbaked run`). Docker implements it in the `unbaked-docker`
//! crate; a broker without one ([`HostOnly`]) serves host processes.
//!
//! The core decides and the platform supplies facts: every refusal a
//! platform makes comes back as a [`Refusal`], or goes through
//! [`Core::deny`], so it is audited, logged and counted like any other.
//! A platform sees the broker only as [`Core`]: what it may ask of it.

use crate::attest::container::{Attestation, ConnectionMemo, Evidence};
use crate::audit::{ActionRef, Audit, ContainerRef};
use crate::request::{Ctx, PlatformError, Refusal, ServiceError};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::task::JoinHandle;
use unbaked_api::wire::{DeliveryKind, LaunchPlan, LaunchRequest, Lease};
use unbaked_policy::{Policy, PolicySet};

/// A future a [`Platform`] method returns (the trait is used as `dyn`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a launched container's file grants go: the platform's own handle,
/// opaque to the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesTarget(pub String);

/// The broker as a platform sees it (`service::Broker` implements it).
pub trait Core: Send + Sync {
    /// Refuse `ctx`'s request: audited, logged and counted with its rule.
    fn deny(&self, ctx: &Ctx, workload: &str, refusal: Refusal) -> ServiceError;
    /// End a lease on the broker's own decision, audited with `reason`.
    fn end_lease(&self, lease_id: &str, reason: &str) -> bool;
    /// Renew a lease for `ctx` (every check made again).
    fn renew<'a>(
        &'a self,
        ctx: &'a Ctx,
        lease_id: &'a str,
    ) -> BoxFuture<'a, Result<Lease, ServiceError>>;
    fn audit(&self) -> &Audit;
    fn policies(&self) -> Arc<PolicySet>;
    /// A change action the platform ran on a container (or tried to):
    /// audited ([`crate::audit::Event::Action`]) and counted
    /// (`unbaked_actions_total`). After the fact: the action cannot wait
    /// for an audit sink, so a failed write is logged.
    fn action_done(&self, report: ActionReport);
    /// What the platform kept at the previous run's last save
    /// ([`Platform::keep`]; empty: nothing), or `None` when this broker
    /// keeps nothing across a restart (no store directory and key).
    fn kept_platform(&self) -> Option<Vec<u8>> {
        None
    }
}

/// One change action as a platform reports it: never a value.
#[derive(Debug, Clone)]
pub struct ActionReport {
    pub workload: String,
    /// The lease whose content changed.
    pub lease: String,
    pub container: ContainerRef,
    /// `signal`, `command` or `restart`: the metric's label.
    pub kind: &'static str,
    pub action: ActionRef,
    /// The request and caller that asked for it (`POST /v1/action`);
    /// `None` when the broker acted on its own (a renewal's change).
    pub asked_by: Option<crate::audit::Record>,
}

/// Why a named container was not signalled.
#[derive(Debug)]
pub enum SignalError {
    /// It is not one the workload may signal: a denial, with its rule.
    Refused(Refusal),
    /// It may be, but the platform failed (engine away, not running).
    Failed(String),
}

/// A container platform, as the core calls it. Each method says when.
pub trait Platform: std::fmt::Debug + Send + Sync {
    /// Per request, before anything is decided: the container (if any)
    /// that the caller with `pid` runs in. `pinned`: the connecting process
    /// is pinned, so `memo` may keep what is read about it.
    fn attest<'a>(
        &'a self,
        pid: i32,
        pinned: bool,
        memo: &'a ConnectionMemo,
    ) -> BoxFuture<'a, Attestation>;

    /// Before `[match]`: may this container be served as `workload` at all
    /// (a container launched for one workload is that workload's only).
    fn gate(&self, evidence: &dyn Evidence, workload: &str) -> Result<(), Refusal>;

    /// After `[match]`: the container's live setup against the policy's
    /// `[isolation]`.
    fn isolation(&self, evidence: &dyn Evidence, policy: &Policy) -> Result<(), Refusal>;

    /// After a fetch by a container was granted: remember the lease (it
    /// ends with the container). `Some` when the container's file grants
    /// are to be fetched as a lease of their own and handed to
    /// [`Platform::deliver_files`] before the fetch is answered.
    fn fetched(
        &self,
        evidence: &dyn Evidence,
        workload: &str,
        kinds: &[DeliveryKind],
        lease_id: &str,
    ) -> Result<Option<FilesTarget>, Refusal>;

    /// Put the file lease `files` where `target` says, for `ctx`'s caller.
    fn deliver_files(
        &self,
        core: &dyn Core,
        ctx: &Ctx,
        target: &FilesTarget,
        files: &Lease,
    ) -> Result<(), ServiceError>;

    /// `unbaked run`: plan the launch of `policy`'s workload (its `[launch]`
    /// already checked) and, unless a dry run, prepare it. Refusals go
    /// through [`Core::deny`].
    fn launch<'a>(
        &'a self,
        core: &'a dyn Core,
        ctx: &'a Ctx,
        policy: &'a Policy,
        req: LaunchRequest,
    ) -> BoxFuture<'a, Result<LaunchPlan, ServiceError>>;

    /// Once the socket is bound: make its state private, account for what
    /// a previous broker left (audited), start its background tasks.
    fn start(self: Arc<Self>, core: Arc<dyn Core>) -> Result<Vec<JoinHandle<()>>, PlatformError>;

    /// At shutdown: wipe what the platform delivered (unless it keeps it
    /// for the next start, [`Platform::keep`]).
    fn stop(&self);

    /// What to keep across a restart, sealed with the kept leases and
    /// saved whenever it changes (metadata only, never a value); handed
    /// back at the next start by [`Core::kept_platform`]. `None`: nothing
    /// to keep (the last record stays as it was).
    fn keep(&self) -> Option<Vec<u8>> {
        None
    }

    /// Lines for `/readyz` (the change actions failing now, ...): shown,
    /// but not a reason to stop serving.
    fn detail(&self) -> Vec<String> {
        Vec::new()
    }

    /// A lease holder's `signal_container` action (its lease, item and the
    /// policy's action already checked): `signal` to the container `name`,
    /// if it is `workload`'s. Ok: the container's id.
    fn signal_container<'a>(
        &'a self,
        workload: &'a str,
        name: &'a str,
        signal: &'a str,
    ) -> BoxFuture<'a, Result<String, SignalError>> {
        let _ = (workload, signal);
        let refusal = Refusal::new(
            crate::rules::DenyRule::ActionContainer,
            format!("this broker has no container platform, so it cannot signal container {name:?}: run it with `unbaked broker` beside the Docker Engine"),
        );
        Box::pin(std::future::ready(Err(SignalError::Refused(refusal))))
    }
}

/// No container platform: every caller is a host process, nothing is
/// launched. For a broker embedded without one (benchmarks, the fuzz
/// harness, core tests); `unbaked broker` always has Docker's.
#[derive(Debug, Default)]
pub struct HostOnly;

impl Platform for HostOnly {
    fn attest<'a>(&'a self, _: i32, _: bool, _: &'a ConnectionMemo) -> BoxFuture<'a, Attestation> {
        Box::pin(std::future::ready(Attestation::Host))
    }

    fn gate(&self, _: &dyn Evidence, _: &str) -> Result<(), Refusal> {
        Ok(())
    }

    fn isolation(&self, _: &dyn Evidence, _: &Policy) -> Result<(), Refusal> {
        Ok(())
    }

    fn fetched(
        &self,
        _: &dyn Evidence,
        _: &str,
        _: &[DeliveryKind],
        _: &str,
    ) -> Result<Option<FilesTarget>, Refusal> {
        Ok(None)
    }

    fn deliver_files(
        &self,
        _: &dyn Core,
        _: &Ctx,
        _: &FilesTarget,
        _: &Lease,
    ) -> Result<(), ServiceError> {
        Ok(())
    }

    fn launch<'a>(
        &'a self,
        _: &'a dyn Core,
        _: &'a Ctx,
        _: &'a Policy,
        _: LaunchRequest,
    ) -> BoxFuture<'a, Result<LaunchPlan, ServiceError>> {
        Box::pin(std::future::ready(Err(ServiceError::NotFound(
            "this broker has no container platform, so no launches: `unbaked run` needs a broker started by `unbaked broker`".into(),
        ))))
    }

    fn start(self: Arc<Self>, _: Arc<dyn Core>) -> Result<Vec<JoinHandle<()>>, PlatformError> {
        Ok(Vec::new())
    }

    fn stop(&self) {}
}
