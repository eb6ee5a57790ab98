//! The broker's decisions, independent of the transport: attest, authorize,
//! read, lease, audit. The server turns HTTP into calls on [`Broker`].
//!
//! - `fetch.rs`: tokens, authorize, deliver, fetch, renew, revoke, lease ends.
//! - `admin.rs`: the admin API (`unbaked secret put|get|list|rm`).
//! - `deny.rs`: the one deny path (audit, log, count) for every origin,
//!   the bounded forms of caller-chosen names, repeated-denial aggregation.
//!
//! Errors are [`ServiceError`]; the wire's [`ApiError`] is made from one in
//! one place, `impl From<ServiceError> for ApiError`, where the server
//! answers.
//!
//! **Invariant:** nothing is released, and no admin change is made, before
//! its audit record is written (fail closed); every denial goes through
//! [`Broker::deny`], so it is audited, logged and counted with its
//! [`DenyRule`].
//! **Invariant:** an error message never carries a secret value, and a
//! denial's message carries no other workload's selector values and no
//! policy file path (those go to the audit log and the broker's log).

mod admin;
mod deny;
mod fetch;
mod launch;

pub use crate::names::{bounded_name, log_name};
pub use crate::request::{err, Ctx, Refusal, ServiceError};
pub use deny::policy_refusal;

use crate::attest::token::TokenVerifier;
use crate::audit::Audit;
use crate::lease::LeaseTable;
use crate::platform::{Core, HostOnly, Platform};
use crate::store::issued::IssuedTable;
use crate::store::Store;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use unbaked_api::wire::Health;
use unbaked_policy::{Caller, PolicySet};

/// The ttl of a lease that delivers nothing.
const EMPTY_LEASE_TTL: Duration = Duration::from_secs(600);

pub struct Broker {
    policies: RwLock<Arc<PolicySet>>,
    store: Arc<dyn Store>,
    leases: LeaseTable,
    audit: Audit,
    /// The admin API answers to root and to this uid.
    admin_uid: u32,
    /// Dynamic credentials (certificates, database credentials) per lease,
    /// revoked in the store when the lease ends.
    issued: IssuedTable,
    /// The container platform (Docker), or [`HostOnly`].
    platform: Arc<dyn Platform>,
    metrics: crate::metrics::Metrics,
    /// Verifies pods' service-account tokens; `None` without [kubernetes].
    tokens: Option<TokenVerifier>,
    /// Repeated identical denials, aggregated in the audit log.
    repeats: deny::Repeats,
    /// Keeps the lease and credential tables across a restart.
    keeper: Option<crate::lease_keep::LeaseKeeper>,
    /// When each lease's item last had a `/v1/action` carried out.
    action_pace: fetch::action::Pace,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("store", &self.store.name())
            .field("leases", &self.leases.len())
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// A broker with no container platform and no token verifier; add them
    /// with [`Broker::with_platform`] and [`Broker::with_tokens`] before it
    /// serves.
    pub fn new(policies: PolicySet, store: Arc<dyn Store>, audit: Audit, admin_uid: u32) -> Broker {
        Broker {
            policies: RwLock::new(Arc::new(policies)),
            store,
            leases: LeaseTable::default(),
            audit,
            admin_uid,
            issued: IssuedTable::new().expect("the system random source works"),
            platform: Arc::new(HostOnly),
            metrics: crate::metrics::Metrics::new(),
            tokens: None,
            repeats: deny::Repeats::default(),
            keeper: None,
            action_pace: Default::default(),
        }
    }

    /// Keep leases across restarts with `k` ([`Broker::save_leases`]).
    pub fn with_keeper(mut self, k: crate::lease_keep::LeaseKeeper) -> Broker {
        self.keeper = Some(k);
        self
    }

    /// Save the lease and credential tables, and the platform's record
    /// (`Platform::keep`: the launches), if they changed since the last
    /// save (blocking: an fsync); true when saved.
    pub fn save_leases(&self) -> Result<bool, crate::store::StoreError> {
        let Some(k) = &self.keeper else {
            return Ok(false);
        };
        let changes = self.leases.changes().wrapping_add(self.issued.changes());
        let platform = self.platform.keep();
        if !k.due(changes, platform.as_deref()) {
            return Ok(false);
        }
        let leases = self.leases.snapshot();
        let issued = self.issued.export();
        k.save(changes, &leases, &issued, platform.as_deref())?;
        tracing::debug!(
            leases = leases.len(),
            credentials = issued.len(),
            platform_bytes = platform.as_ref().map_or(0, Vec::len),
            "leases kept"
        );
        Ok(true)
    }

    /// Serve containers through `platform` (attestation, isolation, launches).
    pub fn with_platform(mut self, platform: Arc<dyn Platform>) -> Broker {
        self.platform = platform;
        self
    }

    /// Accept service-account tokens, verified by `v`.
    pub fn with_tokens(mut self, v: TokenVerifier) -> Broker {
        self.tokens = Some(v);
        self
    }

    pub fn platform(&self) -> &Arc<dyn Platform> {
        &self.platform
    }

    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// The Prometheus text, with the gauges and the store's counters
    /// brought up to date first (not on the request path).
    pub fn render_metrics(&self) -> String {
        self.metrics.active_leases.set(self.leases.len() as i64);
        if let Some((hits, misses)) = self.store.cache_stats() {
            self.metrics.cache_counts(self.store.name(), hits, misses);
        }
        self.metrics.render()
    }

    /// Ready to serve: the audit sink takes records and the store answers.
    /// Ready: `Ok(None)`; ready but degraded (the store is unreachable
    /// and stale copies are served, `[vault] max_stale`): `Ok(Some(why))`.
    pub async fn ready(&self) -> Result<Option<String>, ServiceError> {
        if !self.audit.healthy() {
            return Err(ServiceError::AuditFailing);
        }
        // A read of a path no grant can name: only reachability matters.
        match self.store.read(".unbaked-readiness", "probe").await {
            Ok(_) => Ok(None),
            Err(e @ crate::store::StoreError::Unavailable { .. }) => {
                let Some((max, served)) = self.store.stale_window() else {
                    return Err(e.into());
                };
                Ok(Some(format!(
                    "{e}; serving kept copies up to {} old ({served} stale answers since start)",
                    humantime::format_duration(max)
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// What `/readyz` shows beside its verdict: the platform's failing
    /// change actions.
    pub fn ready_detail(&self) -> Vec<String> {
        self.platform.detail()
    }

    pub fn policies(&self) -> Arc<PolicySet> {
        self.policies
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Swap in a new, already validated, policy set at once.
    pub fn replace_policies(&self, set: PolicySet) {
        *self.policies.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
    }

    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    pub fn health(&self) -> Health {
        let audit_ok = self.audit.healthy();
        Health {
            status: if audit_ok { "ok" } else { "audit_failing" }.into(),
            store: self.store.name().into(),
            workloads: self.policies().len(),
            leases: self.leases.len(),
            audit_ok,
        }
    }

    fn is_admin(&self, caller: &Caller) -> bool {
        caller.uid == 0 || caller.uid == self.admin_uid
    }
}

/// What a container platform may ask of the broker.
impl Core for Broker {
    fn deny(&self, ctx: &Ctx, workload: &str, refusal: Refusal) -> ServiceError {
        Broker::deny(self, ctx, workload, refusal)
    }

    fn end_lease(&self, lease_id: &str, reason: &str) -> bool {
        Broker::end_lease(self, lease_id, reason)
    }

    fn renew<'a>(
        &'a self,
        ctx: &'a Ctx,
        lease_id: &'a str,
    ) -> crate::platform::BoxFuture<'a, Result<unbaked_api::wire::Lease, ServiceError>> {
        Box::pin(Broker::renew(self, ctx, lease_id))
    }

    fn audit(&self) -> &Audit {
        &self.audit
    }

    fn policies(&self) -> Arc<PolicySet> {
        Broker::policies(self)
    }

    fn kept_platform(&self) -> Option<Vec<u8>> {
        self.keeper.as_ref().map(|k| k.kept_platform())
    }

    fn action_done(&self, report: crate::platform::ActionReport) {
        let result = if report.action.error.is_none() {
            "ok"
        } else {
            "failed"
        };
        self.metrics
            .actions
            .get_or_create(&crate::metrics::ActionLabels {
                workload: report.workload.clone(),
                action: report.kind,
                result,
            })
            .inc();
        let asked_by = report.asked_by.unwrap_or_default();
        let record = crate::audit::Record {
            workload: Some(report.workload),
            lease: Some(report.lease),
            container: Some(report.container),
            action: Some(crate::audit::ActionRef {
                result: result.into(),
                ..report.action
            }),
            request_id: asked_by.request_id,
            caller: asked_by.caller,
            ..crate::audit::Record::default()
        };
        if let Err(e) = self.audit.record(crate::audit::Event::Action, record) {
            tracing::error!(error = %e, "could not audit a change action");
        }
    }
}
