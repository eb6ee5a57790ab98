//! One request as the core sees it: who asks ([`Ctx`]), why it may be
//! refused ([`Refusal`]), and what it can end in ([`ServiceError`],
//! converted to the wire's [`ApiError`] in one place, where the server
//! answers).

use crate::attest::container::Attestation;
use crate::audit::{AuditError, CallerRef, ContainerRef, Record};
use crate::names::bounded_name;
use crate::rules::DenyRule;
use crate::store::StoreError;
use unbaked_api::wire::{ApiError, ErrorCode};
use unbaked_policy::Caller;

/// Why a request is refused, as its origin states it.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub rule: DenyRule,
    /// For the caller: its own facts, the rule, what to do.
    pub reason: String,
    /// For the operator (audit, log) when it says more than `reason`:
    /// expected values of the policy, its file.
    pub detail: Option<String>,
}

impl Refusal {
    pub fn new(rule: DenyRule, reason: impl Into<String>) -> Refusal {
        Refusal {
            rule,
            reason: reason.into(),
            detail: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Refusal {
        self.detail = Some(detail.into());
        self
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn records_and_identities_name_the_callers_container() {
        let live = crate::attest::container::tests::Fake {
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
