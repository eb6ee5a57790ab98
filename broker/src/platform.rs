//! The seam between the broker's core and a container platform: who a
//! caller is beyond its peer credentials (the container it runs in), what
//! that container's live setup allows (`[isolation]`), and what the platform
//! does around a fetch (file grants written into a launched container) and a
//! launch (`unbaked run`). Docker implements it in the `unbaked-docker`
//! crate; a broker without one ([`HostOnly`]) serves host processes.
//!
//! The core decides and the platform supplies facts: every refusal a
//! platform makes comes back as a [`Refusal`], or goes through
//! [`Broker::deny`], so it is audited, logged and counted like any other.

use crate::service::{Broker, Ctx, Refusal, ServiceError};
use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use tokio::task::JoinHandle;
use unbaked_api::wire::{DeliveryKind, ErrorCode, LaunchPlan, LaunchRequest, Lease};
use unbaked_policy::{ContainerInfo, Policy};

/// A future a [`Platform`] method returns (the trait is used as `dyn`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a platform learnt about the container a caller runs in. The core
/// reads the identity (for `[match]` and the audit); the platform reads its
/// own evidence back through [`Evidence::as_any`].
pub trait Evidence: std::fmt::Debug + Send + Sync + 'static {
    /// The container's full id.
    fn id(&self) -> &str;
    /// Its name, for people reading logs and the audit.
    fn name(&self) -> &str;
    /// The policy's view of it, for `[match]`.
    fn info(&self) -> ContainerInfo;
    fn as_any(&self) -> &dyn Any;
}

/// Where a caller runs, as the platform attested it for one request.
#[derive(Debug, Clone, Default)]
pub enum Attestation {
    /// Not in a container (or in the broker's own).
    #[default]
    Host,
    /// A running container, as inspected for this request.
    Container(Arc<dyn Evidence>),
    /// In a container the platform cannot vouch for; `reason` says why.
    /// Released nothing (`isolation.unverified`).
    Unverified { id: String, reason: String },
}

impl Attestation {
    /// The policy's view of the container, for `[match]`.
    pub fn container_info(&self) -> Option<ContainerInfo> {
        self.evidence().map(|e| e.info())
    }

    pub fn evidence(&self) -> Option<&Arc<dyn Evidence>> {
        match self {
            Attestation::Container(e) => Some(e),
            _ => None,
        }
    }
}

/// Facts about a pinned caller that a platform may keep for the life of
/// its connection: the container ids its cgroup names (only root moves a
/// process between cgroups, and a pinned process cannot be replaced under
/// its pid). Read once, it saves a `/proc` read per request.
#[derive(Debug, Default)]
pub struct ConnectionMemo {
    pub cgroup_ids: OnceLock<Vec<String>>,
}

/// Where a launched container's file grants go: the platform's own handle,
/// opaque to the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesTarget(pub String);

/// A platform's failure (not a refusal): its engine is away, it refused an
/// operation, or the request cannot be carried out as asked.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// The engine does not answer: try again later.
    #[error("{0}")]
    Unreachable(String),
    /// The engine refused an operation.
    #[error("{0}")]
    Refused(String),
    /// The request names something the platform does not have.
    #[error("{0}")]
    Invalid(String),
    /// The platform cannot start (its state directory, its mounts).
    #[error(transparent)]
    Setup(Box<dyn std::error::Error + Send + Sync>),
}

impl PlatformError {
    /// The wire code a request failing with this error is answered with.
    pub fn code(&self) -> ErrorCode {
        match self {
            PlatformError::Unreachable(_) => ErrorCode::StoreUnavailable,
            PlatformError::Invalid(_) => ErrorCode::BadRequest,
            PlatformError::Refused(_) | PlatformError::Setup(_) => ErrorCode::Internal,
        }
    }
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
        broker: &Broker,
        ctx: &Ctx,
        target: &FilesTarget,
        files: &Lease,
    ) -> Result<(), ServiceError>;

    /// `unbaked run`: plan the launch of `policy`'s workload (its `[launch]`
    /// already checked) and, unless a dry run, prepare it. Refusals go
    /// through [`Broker::deny`].
    fn launch<'a>(
        &'a self,
        broker: &'a Broker,
        ctx: &'a Ctx,
        policy: &'a Policy,
        req: LaunchRequest,
    ) -> BoxFuture<'a, Result<LaunchPlan, ServiceError>>;

    /// Once the socket is bound: make its state private, account for what
    /// a previous broker left (audited), start its background tasks.
    fn start(self: Arc<Self>, broker: Arc<Broker>) -> Result<Vec<JoinHandle<()>>, PlatformError>;

    /// At shutdown: wipe what the platform delivered.
    fn stop(&self);
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
        _: &Broker,
        _: &Ctx,
        _: &FilesTarget,
        _: &Lease,
    ) -> Result<(), ServiceError> {
        Ok(())
    }

    fn launch<'a>(
        &'a self,
        _: &'a Broker,
        _: &'a Ctx,
        _: &'a Policy,
        _: LaunchRequest,
    ) -> BoxFuture<'a, Result<LaunchPlan, ServiceError>> {
        Box::pin(std::future::ready(Err(ServiceError::NotFound(
            "this broker has no container platform, so no launches: `unbaked run` needs a broker started by `unbaked broker`".into(),
        ))))
    }

    fn start(self: Arc<Self>, _: Arc<Broker>) -> Result<Vec<JoinHandle<()>>, PlatformError> {
        Ok(Vec::new())
    }

    fn stop(&self) {}
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A container as a platform would describe it, for the core's tests.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct Fake {
        pub id: String,
        pub name: String,
    }

    impl Evidence for Fake {
        fn id(&self) -> &str {
            &self.id
        }
        fn name(&self) -> &str {
            &self.name
        }
        fn info(&self) -> ContainerInfo {
            ContainerInfo {
                id: self.id.clone(),
                labels: Default::default(),
                image_id: String::new(),
            }
        }
        fn as_any(&self) -> &dyn Any {
            self
        }
    }
}
