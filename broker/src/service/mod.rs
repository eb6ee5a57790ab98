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

pub use deny::{bounded_name, log_name, policy_refusal, Refusal};

use crate::attest::token::TokenVerifier;
use crate::audit::{Audit, AuditError, CallerRef, ContainerRef, Record};
use crate::lease::LeaseTable;
use crate::platform::{Attestation, HostOnly, Platform, PlatformError};
use crate::rules::DenyRule;
use crate::store::issued::IssuedTable;
use crate::store::{Store, StoreError};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use unbaked_api::wire::{ApiError, ErrorCode, Health};
use unbaked_policy::{Caller, PolicySet};

/// The ttl of a lease that delivers nothing.
const EMPTY_LEASE_TTL: Duration = Duration::from_secs(600);

/// What a request to the broker can end in. Converted to the wire's
/// [`ApiError`] only by `From<ServiceError> for ApiError`.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Refused by `rule`. `reason` is for the caller: what failed and what
    /// to do, with the caller's own facts only; the operator's version (the
    /// policy's expected values, its file) is in the audit record and the
    /// log under `request`.
    #[error("{reason} (denied by rule {rule}, see docs/deny-rules.md; the caller is {caller}; request {request})")]
    Denied {
        rule: DenyRule,
        reason: String,
        /// The caller as the broker attested it: uid, gid, pid, container.
        caller: String,
        request: String,
        code: ErrorCode,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(
        "the audit sink is failing, so nothing is released: make the audit file writable again"
    )]
    AuditFailing,
    /// The container platform failed (not a refusal).
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    /// The wire code this error is answered with.
    pub fn code(&self) -> ErrorCode {
        match self {
            ServiceError::Denied { code, .. } => *code,
            ServiceError::NotFound(_) => ErrorCode::NotFound,
            ServiceError::BadRequest(_) => ErrorCode::BadRequest,
            ServiceError::Store(StoreError::Unavailable { .. }) => ErrorCode::StoreUnavailable,
            ServiceError::Store(_) => ErrorCode::BadRequest,
            ServiceError::Audit(_) | ServiceError::AuditFailing => ErrorCode::AuditUnavailable,
            ServiceError::Platform(e) => e.code(),
            ServiceError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The rule, for a denial.
    pub fn rule(&self) -> Option<DenyRule> {
        match self {
            ServiceError::Denied { rule, .. } => Some(*rule),
            _ => None,
        }
    }
}

/// The one conversion to the wire type, where the server answers.
impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> ApiError {
        ApiError {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

/// A wire error made by the transport itself (the server's body limits,
/// routing): the service's own errors are [`ServiceError`]s.
pub fn err(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError {
        code,
        message: message.into(),
    }
}

/// One request's identity: who called, and the id that ties logs to audit.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub caller: Caller,
    pub request_id: String,
    /// The container the caller runs in, as the platform attested it for
    /// this request.
    pub attestation: Attestation,
}

impl Ctx {
    /// The audit record's caller part: the request, the peer credentials
    /// and the container (id and name) when the caller is in one.
    pub(crate) fn record(&self) -> Record {
        Record {
            request_id: Some(self.request_id.clone()),
            caller: Some(CallerRef {
                uid: self.caller.uid,
                gid: self.caller.gid,
                pid: self.caller.pid,
            }),
            container: self.container(),
            ..Record::default()
        }
    }

    fn container(&self) -> Option<ContainerRef> {
        match &self.attestation {
            Attestation::Host => None,
            Attestation::Container(c) => Some(ContainerRef {
                id: c.id().to_string(),
                name: c.name().to_string(),
                unverified: false,
            }),
            Attestation::Unverified { id, .. } => Some(ContainerRef {
                id: bounded_name(id),
                name: String::new(),
                unverified: true,
            }),
        }
    }

    /// The caller as a refused caller is told it: its own identity only.
    pub fn identity(&self) -> String {
        let c = &self.caller;
        let mut who = format!("uid {} gid {}", c.uid, c.gid);
        if let Some(pid) = c.pid {
            who.push_str(&format!(" pid {pid}"));
        }
        if let Some(r) = self.container() {
            let short = r.id.get(..12).unwrap_or(&r.id);
            who.push_str(&format!(" in container {short}"));
            if !r.name.is_empty() {
                who.push_str(&format!(" ({})", r.name));
            }
            if r.unverified {
                who.push_str(" (unverified)");
            }
        }
        if let Some(sa) = &c.service_account {
            who.push_str(&format!(
                " with service account {}/{}",
                sa.namespace, sa.name
            ));
        }
        who
    }
}

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
        }
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
    pub async fn ready(&self) -> Result<(), ServiceError> {
        if !self.audit.healthy() {
            return Err(ServiceError::AuditFailing);
        }
        // A read of a path no grant can name: only reachability matters.
        self.store.read(".unbaked-readiness", "probe").await?;
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_identities_name_the_callers_container() {
        let live = crate::platform::tests::Fake {
            id: "4f1c2b3a4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8".into(),
            name: "web-1".into(),
        };
        let ctx = Ctx {
            caller: Caller {
                uid: 1000,
                gid: 1001,
                pid: Some(42),
                container: None,
                service_account: None,
            },
            request_id: "7".into(),
            attestation: Attestation::Container(Arc::new(live.clone())),
        };
        let rec = ctx.record();
        let c = rec.container.expect("the container is recorded");
        assert_eq!(
            (c.id.as_str(), c.name.as_str(), c.unverified),
            (live.id.as_str(), "web-1", false)
        );
        assert_eq!(
            ctx.identity(),
            "uid 1000 gid 1001 pid 42 in container 4f1c2b3a4d5e (web-1)"
        );
        let host = Ctx {
            attestation: Attestation::Host,
            ..ctx
        };
        assert!(host.record().container.is_none());
        assert_eq!(host.identity(), "uid 1000 gid 1001 pid 42");
    }

    #[test]
    fn errors_convert_to_their_wire_codes() {
        let cases = [
            (ServiceError::NotFound("x".into()), ErrorCode::NotFound),
            (ServiceError::BadRequest("x".into()), ErrorCode::BadRequest),
            (ServiceError::AuditFailing, ErrorCode::AuditUnavailable),
            (
                ServiceError::Store(StoreError::Unavailable {
                    store: "vault",
                    address: "a".into(),
                    reason: "r".into(),
                }),
                ErrorCode::StoreUnavailable,
            ),
            (
                ServiceError::Platform(PlatformError::Invalid("no image i".into())),
                ErrorCode::BadRequest,
            ),
            (
                ServiceError::Platform(PlatformError::Unreachable("engine".into())),
                ErrorCode::StoreUnavailable,
            ),
        ];
        for (e, code) in cases {
            let wire = ApiError::from(e);
            assert_eq!(wire.code, code, "{}", wire.message);
        }
        let denied = ServiceError::Denied {
            rule: DenyRule::MatchUids,
            reason: "caller uid 7 is not in [match] uids of workload \"b\"".into(),
            caller: "uid 7 gid 7".into(),
            request: "1f".into(),
            code: DenyRule::MatchUids.code(),
        };
        let wire = ApiError::from(denied);
        assert_eq!(wire.code, ErrorCode::Denied);
        assert!(
            wire.message.contains("rule match.uids") && wire.message.contains("uid 7 gid 7"),
            "{}",
            wire.message
        );
    }
}
