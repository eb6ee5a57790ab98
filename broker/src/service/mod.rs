//! The broker's decisions, independent of the transport: attest, authorize,
//! read, lease, audit. The server turns HTTP into calls on [`Broker`].
//!
//! **Invariant:** nothing is released before its audit record is written
//! (fail closed), and every denial is audited with its reason.
//! **Invariant:** an error message never carries a secret value.

use crate::audit::{Audit, CallerRef, Event, Record, SecretRef};
use crate::lease::{new_lease_id, LeaseRecord, LeaseTable};
use crate::store::issued::{self, IssuedTable, Released};
use crate::store::{Store, StoreError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use unbaked_api::wire::{
    ApiError, DeliveryKind, ErrorCode, FetchRequest, Health, Item, Lease, PutSecret, SecretData,
    SecretList, SecretMeta,
};
use unbaked_policy::{Caller, Denial, Policy, PolicySet};

/// The ttl of a lease that delivers nothing.
const EMPTY_LEASE_TTL: Duration = Duration::from_secs(600);

/// One request's identity: who called, and the id that ties logs to audit.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub caller: Caller,
    pub request_id: String,
    /// The container the caller runs in, as inspected for this connection.
    pub attestation: crate::attest::docker::Attestation,
}

impl Ctx {
    fn record(&self) -> Record {
        Record {
            request_id: Some(self.request_id.clone()),
            caller: Some(CallerRef {
                uid: self.caller.uid,
                gid: self.caller.gid,
                pid: self.caller.pid,
            }),
            ..Record::default()
        }
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
    /// The Docker side (engine, launches); unset without Docker support.
    containers: std::sync::OnceLock<Arc<crate::containers::Containers>>,
    metrics: crate::metrics::Metrics,
    /// Verifies pods' service-account tokens; unset without [kubernetes].
    tokens: std::sync::OnceLock<crate::attest::token::TokenVerifier>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("store", &self.store.name())
            .field("leases", &self.leases.len())
            .finish_non_exhaustive()
    }
}

pub fn err(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError {
        code,
        message: message.into(),
    }
}

fn store_error(e: StoreError) -> ApiError {
    let code = match e {
        StoreError::Unavailable { .. } => ErrorCode::StoreUnavailable,
        StoreError::Unsupported { .. } | StoreError::Invalid(_) => ErrorCode::BadRequest,
    };
    err(code, e.to_string())
}

impl Broker {
    pub fn new(policies: PolicySet, store: Arc<dyn Store>, audit: Audit, admin_uid: u32) -> Broker {
        Broker {
            policies: RwLock::new(Arc::new(policies)),
            store,
            leases: LeaseTable::default(),
            audit,
            admin_uid,
            issued: IssuedTable::new().expect("the system random source works"),
            containers: std::sync::OnceLock::new(),
            metrics: crate::metrics::Metrics::new(),
            tokens: std::sync::OnceLock::new(),
        }
    }

    /// Accept service-account tokens, verified by `v`; set once at startup.
    pub fn set_token_verifier(&self, v: crate::attest::token::TokenVerifier) {
        let _ = self.tokens.set(v);
    }

    /// Add what a bearer token proves to the caller. Without a token the
    /// caller is what the socket says; a token that does not verify is a
    /// denial (audited), never a silent downgrade to the socket identity.
    pub fn attest_token(&self, ctx: &mut Ctx, token: Option<&str>) -> Result<(), ApiError> {
        let Some(token) = token else {
            return Ok(());
        };
        let Some(verifier) = self.tokens.get() else {
            return Err(self.deny(
                ctx,
                "",
                "token.unconfigured",
                err(
                    ErrorCode::Denied,
                    "a service-account token was sent, but this broker has no [kubernetes] section to verify it: configure issuer, audience and jwks, or drop --token-file",
                ),
            ));
        };
        match verifier.verify(token) {
            Ok(sa) => {
                // A token copied out of one pod and replayed from another.
                let pod = crate::attest::token::caller_pod(ctx.caller.pid);
                if let Err(reason) = crate::attest::token::check_pod_binding(&sa, pod.as_deref()) {
                    return Err(self.deny(ctx, "", "token.pod", err(ErrorCode::Denied, reason)));
                }
                ctx.caller.service_account = Some(unbaked_policy::ServiceAccount {
                    namespace: sa.namespace,
                    name: sa.name,
                });
                Ok(())
            }
            Err(e) => Err(self.deny(ctx, "", "token", err(ErrorCode::Denied, e.to_string()))),
        }
    }

    /// The process that opened the connection has exited, so its pid (and
    /// what `/proc` says of it) may now belong to another process: refused
    /// and audited (rule `attest.exited`).
    pub fn deny_exited_peer(&self, ctx: &Ctx) -> ApiError {
        self.deny(
            ctx,
            "",
            "attest.exited",
            err(
                ErrorCode::Denied,
                format!(
                    "the process that opened this connection (pid {}) has exited, so the broker cannot tell who is asking: send requests from the process that connects",
                    ctx.caller.pid.unwrap_or(0)
                ),
            ),
        )
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
    pub async fn ready(&self) -> Result<(), String> {
        if !self.audit.healthy() {
            return Err("the audit sink is failing, so nothing is released".into());
        }
        // A read of a path no grant can name: only reachability matters.
        match self.store.read(".unbaked-readiness", "probe").await {
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Attach the Docker side once, at startup.
    pub fn set_containers(&self, c: Arc<crate::containers::Containers>) {
        let _ = self.containers.set(c);
    }

    pub fn containers(&self) -> Option<&Arc<crate::containers::Containers>> {
        self.containers.get()
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

    /// Audit a denial (best effort: the request is refused either way) and
    /// hand back the error to answer with.
    fn deny(&self, ctx: &Ctx, workload: &str, rule: &str, e: ApiError) -> ApiError {
        self.deny_after(ctx, &mut None, workload, rule, e)
    }

    /// [`Broker::deny`], writing a fetch's deferred authenticate record
    /// first, in the same append.
    fn deny_after(
        &self,
        ctx: &Ctx,
        auth: &mut Option<Record>,
        workload: &str,
        rule: &str,
        e: ApiError,
    ) -> ApiError {
        let record = Record {
            workload: Some(workload.into()),
            rule: Some(rule.into()),
            reason: Some(e.message.clone()),
            ..ctx.record()
        };
        let records = auth.take().map(|a| (Event::Authenticate, a));
        let written = self
            .audit
            .record_all(records.into_iter().chain([(Event::Deny, record)]));
        if let Err(audit_err) = written {
            tracing::error!(error = %audit_err, "could not audit a denial");
        }
        tracing::warn!(workload, rule, reason = %e.message, "denied");
        self.metrics.denied(workload, rule);
        e
    }

    /// Write a record that must exist before anything is released.
    fn audit_or_withhold(&self, event: Event, record: Record) -> Result<(), ApiError> {
        self.audit_all_or_withhold([(event, record)])
    }

    /// Records that must exist before anything is released, in one append.
    fn audit_all_or_withhold(
        &self,
        records: impl IntoIterator<Item = (Event, Record)>,
    ) -> Result<(), ApiError> {
        self.audit.record_all(records).map_err(|e| {
            tracing::error!(error = %e, "audit sink failed: withholding secrets");
            err(ErrorCode::AuditUnavailable, e.to_string())
        })
    }

    /// Find the workload's policy and check the caller against its [match].
    fn authorize<'p>(
        &self,
        ctx: &Ctx,
        set: &'p PolicySet,
        workload: &str,
    ) -> Result<&'p Policy, ApiError> {
        let policy = set.get(workload).ok_or_else(|| {
            self.deny(
                ctx,
                workload,
                "workload.unknown",
                err(
                    ErrorCode::NotFound,
                    format!("no policy for workload {workload:?}: check the name, or add a policy file with workload = {workload:?}"),
                ),
            )
        })?;
        self.attestation_gate(ctx, workload)?;
        policy
            .authorize(&ctx.caller)
            .map_err(|Denial { rule, reason }| {
                self.deny(ctx, workload, rule, err(ErrorCode::Denied, reason))
            })?;
        self.check_isolation(ctx, policy)?;
        Ok(policy)
    }

    /// Read every grant of `kinds` as the store has it now; a dynamic
    /// grant's credential is the one `lease_id` holds, renewed or re-issued
    /// when it would not outlive the next lease period. `auth`, a fetch's
    /// deferred authenticate record, goes out with a denial here.
    async fn deliver(
        &self,
        ctx: &Ctx,
        policy: &Policy,
        kinds: &[DeliveryKind],
        lease_id: &str,
        auth: &mut Option<Record>,
    ) -> Result<Vec<Item>, ApiError> {
        let mut items = Vec::new();
        for grant in policy.grants_of(kinds) {
            if let Some(req) = issued::request_for(grant) {
                let (cred, replaced) = self
                    .issued
                    .obtain(&*self.store, lease_id, &req)
                    .await
                    .map_err(store_error)?;
                self.revoke_released(
                    lease_id,
                    replaced.into_iter().collect(),
                    "replaced by a fresh one",
                );
                let dynamic = issued::items(grant, &cred).map_err(|m| {
                    self.deny_after(
                        ctx,
                        auth,
                        &policy.workload,
                        "secret.missing",
                        err(ErrorCode::NotFound, m),
                    )
                })?;
                items.extend(dynamic);
                continue;
            }
            // A cached copy at most a third of the ttl old: with renewal at
            // two thirds, a rotation reaches the workload within one ttl.
            let started = Instant::now();
            let found = self
                .store
                .read_fresh(&grant.secret, &grant.key, grant.ttl / 3)
                .await
                .map_err(store_error)?;
            self.metrics
                .store_read(self.store.name(), started.elapsed());
            let Some(v) = found else {
                return Err(self.deny_after(
                    ctx,
                    auth,
                    &policy.workload,
                    "secret.missing",
                    err(
                        ErrorCode::NotFound,
                        format!(
                            "secret {:?} key {:?}, granted to workload {:?}, is not in the {} store: write it (unbaked secret put {} {}=-) or fix the grant in {}",
                            grant.secret,
                            grant.key,
                            policy.workload,
                            self.store.name(),
                            grant.secret,
                            grant.key,
                            policy.source.display()
                        ),
                    ),
                ));
            };
            items.push(Item {
                id: grant.id(),
                secret: grant.secret.clone(),
                key: grant.key.clone(),
                delivery: grant.wire_delivery(),
                version: v.version,
                ttl_secs: grant.ttl.as_secs(),
                value: v.value,
            });
        }
        Ok(items)
    }

    pub async fn fetch(&self, ctx: &Ctx, req: FetchRequest) -> Result<Lease, ApiError> {
        let set = self.policies();
        let policy = self.authorize(ctx, &set, &req.workload)?;
        // The authenticate record goes out in one append with the record
        // that follows it (the grant, or a denial): an append per record
        // was a third of a fetch's cost. A sink that last failed is tried
        // alone first, so a broken audit file still stops the fetch before
        // the store is touched.
        let mut auth = Some(Record {
            workload: Some(req.workload.clone()),
            ..ctx.record()
        });
        if !self.audit.healthy() {
            if let Some(a) = auth.take() {
                self.audit_or_withhold(Event::Authenticate, a)?;
            }
        }
        let id = new_lease_id();
        let delivered = match self.deliver(ctx, policy, &req.kinds, &id, &mut auth).await {
            Ok(items) => {
                let grant = Record {
                    workload: Some(req.workload.clone()),
                    lease: Some(id.clone()),
                    secrets: secret_refs(&items),
                    ..ctx.record()
                };
                let first = auth.take().map(|a| (Event::Authenticate, a));
                self.audit_all_or_withhold(first.into_iter().chain([(Event::Grant, grant)]))
                    .map(|()| items)
            }
            Err(e) => {
                // The store failed: the authentication is on record still.
                if let Some(a) = auth.take() {
                    if let Err(audit_err) = self.audit.record(Event::Authenticate, a) {
                        tracing::error!(error = %audit_err, "could not audit an authentication");
                    }
                }
                Err(e)
            }
        };
        let items = delivered.inspect_err(|_| {
            // Nothing was released: credentials issued on the way go back.
            self.release_issued(&id, "the fetch failed");
        })?;
        let ttl = lease_ttl(&items);
        let evicted = self.leases.insert(LeaseRecord {
            id: id.clone(),
            workload: req.workload.clone(),
            uid: ctx.caller.uid,
            gid: ctx.caller.gid,
            pid: ctx.caller.pid,
            kinds: req.kinds.clone(),
            ttl,
            expires_at: Instant::now() + ttl,
        });
        if !evicted.is_empty() {
            self.end_leases(
                &evicted,
                &format!(
                    "the process holds more leases of this workload than the limit ({}): its oldest ended",
                    crate::lease::MAX_LEASES_PER_HOLDER
                ),
            );
        }
        // Debug, not info: the audit record and the grants counter already
        // hold every grant, and this line (JSON, with the request span) was
        // a third of the broker's instructions per fetch.
        tracing::debug!(workload = %req.workload, lease = %id, items = items.len(), "granted");
        self.metrics.workload(&self.metrics.grants, &req.workload);
        // A container's leases end with it; an `unbaked run` shim's fetch
        // first puts the file grants into the container's secrets tmpfs.
        self.container_fetched(ctx, &req.workload, &req.kinds, &id)
            .await?;
        Ok(Lease {
            lease_id: id,
            workload: req.workload,
            ttl_secs: ttl.as_secs(),
            items,
        })
    }

    /// Renewal re-evaluates everything against the current policy and store:
    /// a withdrawn grant is absent from the answer, a denied caller loses
    /// the lease.
    pub async fn renew(&self, ctx: &Ctx, lease_id: &str) -> Result<Lease, ApiError> {
        let lease = self.owned_lease(ctx, lease_id)?;
        let set = self.policies();
        let policy = match self.authorize(ctx, &set, &lease.workload) {
            Ok(p) => p,
            Err(mut e) => {
                self.leases.remove(lease_id);
                self.release_issued(lease_id, "renewal denied");
                // An unknown workload is a denial for a lease holder.
                e.code = ErrorCode::Denied;
                return Err(e);
            }
        };
        let items = self
            .deliver(ctx, policy, &lease.kinds, lease_id, &mut None)
            .await?;
        // Credentials of grants withdrawn since the last answer go back.
        let used: Vec<_> = policy
            .grants_of(&lease.kinds)
            .filter_map(issued::request_for)
            .collect();
        let withdrawn = self.issued.retain(lease_id, &used);
        self.revoke_released(lease_id, withdrawn, "grant withdrawn");
        let ttl = lease_ttl(&items);
        self.audit_or_withhold(
            Event::Renew,
            Record {
                workload: Some(lease.workload.clone()),
                lease: Some(lease.id.clone()),
                secrets: secret_refs(&items),
                ..ctx.record()
            },
        )?;
        if !self.leases.extend(lease_id, ttl, Instant::now()) {
            self.release_issued(lease_id, "lease ended during renewal");
            return Err(lease_gone(lease_id));
        }
        self.metrics
            .workload(&self.metrics.renewals, &lease.workload);
        Ok(Lease {
            lease_id: lease.id,
            workload: lease.workload,
            ttl_secs: ttl.as_secs(),
            items,
        })
    }

    pub fn revoke(&self, ctx: &Ctx, lease_id: &str) -> Result<(), ApiError> {
        let lease = self.owned_lease(ctx, lease_id)?;
        self.leases.remove(lease_id);
        self.release_issued(lease_id, "revoked by its holder");
        let record = Record {
            workload: Some(lease.workload),
            lease: Some(lease.id),
            reason: Some("revoked by its holder".into()),
            ..ctx.record()
        };
        if let Err(e) = self.audit.record(Event::Revoke, record) {
            tracing::error!(error = %e, "could not audit a revocation");
        }
        Ok(())
    }

    /// End a lease on the broker's own decision (its container died), audited
    /// as a revocation; false if it was already gone.
    pub fn end_lease(&self, lease_id: &str, reason: &str) -> bool {
        let Some(lease) = self.leases.remove(lease_id) else {
            return false;
        };
        self.release_issued(lease_id, "lease ended");
        let record = Record {
            workload: Some(lease.workload),
            lease: Some(lease.id),
            caller: Some(CallerRef {
                uid: lease.uid,
                gid: lease.gid,
                pid: lease.pid,
            }),
            reason: Some(reason.into()),
            ..Record::default()
        };
        if let Err(e) = self.audit.record(Event::Revoke, record) {
            tracing::error!(error = %e, "could not audit a revocation");
        }
        true
    }

    /// The lease, if it exists and belongs to the caller (or the caller is admin).
    fn owned_lease(&self, ctx: &Ctx, lease_id: &str) -> Result<LeaseRecord, ApiError> {
        let lease = self
            .leases
            .get(lease_id, Instant::now())
            .ok_or_else(|| lease_gone(lease_id))?;
        let owner = lease.uid == ctx.caller.uid && lease.gid == ctx.caller.gid;
        if !owner && !self.is_admin(&ctx.caller) {
            return Err(self.deny(
                ctx,
                &lease.workload,
                "lease.owner",
                err(
                    ErrorCode::Denied,
                    format!(
                        "lease {lease_id} belongs to uid {} gid {}, not to the caller (uid {} gid {})",
                        lease.uid, lease.gid, ctx.caller.uid, ctx.caller.gid
                    ),
                ),
            ));
        }
        Ok(lease)
    }

    /// Drop leases past their deadline and audit each.
    pub fn expire(&self, now: Instant) -> usize {
        let expired = self.leases.drain_expired(now);
        self.end_leases(&expired, "ttl passed without renewal");
        expired.len()
    }

    /// Leases already out of the table: revoke their credentials and audit
    /// each as expired, with `why`.
    fn end_leases(&self, ended: &[LeaseRecord], why: &str) {
        for lease in ended {
            self.release_issued(&lease.id, "lease expired");
            let record = Record {
                workload: Some(lease.workload.clone()),
                lease: Some(lease.id.clone()),
                caller: Some(CallerRef {
                    uid: lease.uid,
                    gid: lease.gid,
                    pid: lease.pid,
                }),
                reason: Some(why.into()),
                ..Record::default()
            };
            if let Err(e) = self.audit.record(Event::Expire, record) {
                tracing::error!(error = %e, "could not audit a lease expiry");
            }
        }
    }

    /// Revoke what a lease held in the store (it ended, or never began).
    fn release_issued(&self, lease_id: &str, why: &'static str) {
        let released = self.issued.release(lease_id);
        self.revoke_released(lease_id, released, why);
    }

    /// Audit, then revoke in the background: a lease's end does not wait
    /// on Vault, and a credential Vault cannot revoke now ends at its ttl.
    fn revoke_released(&self, lease_id: &str, released: Vec<Released>, why: &'static str) {
        if released.is_empty() {
            return;
        }
        let record = Record {
            lease: Some(lease_id.to_string()),
            secrets: released
                .iter()
                .map(|r| SecretRef {
                    id: r.handle.to_string(),
                    secret: r.path.clone(),
                    key: String::new(),
                    version: 0,
                })
                .collect(),
            reason: Some(format!("revoking dynamic credentials in the store: {why}")),
            ..Record::default()
        };
        if let Err(e) = self.audit.record(Event::Revoke, record) {
            tracing::error!(error = %e, "could not audit a credential revocation");
        }
        let store = self.store.clone();
        tokio::spawn(async move { issued::revoke_all(&*store, released, why).await });
    }

    fn is_admin(&self, caller: &Caller) -> bool {
        caller.uid == 0 || caller.uid == self.admin_uid
    }

    fn require_admin(&self, ctx: &Ctx, what: &str) -> Result<(), ApiError> {
        if self.is_admin(&ctx.caller) {
            return Ok(());
        }
        Err(self.deny(
            ctx,
            "",
            "admin",
            err(
                ErrorCode::Denied,
                format!(
                    "{what} is for root and the broker's uid {}; the caller is uid {}: run it as one of those",
                    self.admin_uid, ctx.caller.uid
                ),
            ),
        ))
    }

    pub async fn put_secret(
        &self,
        ctx: &Ctx,
        path: &str,
        body: PutSecret,
    ) -> Result<SecretMeta, ApiError> {
        self.require_admin(ctx, "writing secrets")?;
        check_store_path(path)?;
        if body.data.is_empty() {
            return Err(err(
                ErrorCode::BadRequest,
                format!("no keys given for {path}: give at least one KEY=VALUE"),
            ));
        }
        if let Some(bad) = body.data.keys().find(|k| !valid_key(k)) {
            return Err(err(
                ErrorCode::BadRequest,
                format!(
                    "key {bad:?} of {path} is not valid: use letters, digits, '_', '-' and '.'"
                ),
            ));
        }
        let keys: Vec<String> = body.data.keys().cloned().collect();
        let version = self
            .store
            .write(path, body.data)
            .await
            .map_err(store_error)?;
        let record = Record {
            path: Some(path.into()),
            reason: Some(format!("version {version}, keys {}", keys.join(","))),
            ..ctx.record()
        };
        if let Err(e) = self.audit.record(Event::SecretWrite, record) {
            tracing::error!(error = %e, "could not audit a secret write");
        }
        Ok(SecretMeta {
            path: path.into(),
            version,
            keys,
        })
    }

    pub async fn get_secret(&self, ctx: &Ctx, path: &str) -> Result<SecretData, ApiError> {
        self.require_admin(ctx, "reading secrets")?;
        check_store_path(path)?;
        let data = self
            .store
            .read_all(path)
            .await
            .map_err(store_error)?
            .ok_or_else(|| err(ErrorCode::NotFound, format!("no secret at {path}")))?;
        self.audit_or_withhold(
            Event::SecretRead,
            Record {
                path: Some(path.into()),
                ..ctx.record()
            },
        )?;
        Ok(SecretData {
            path: path.into(),
            version: data.version,
            data: data.data,
        })
    }

    pub async fn delete_secret(&self, ctx: &Ctx, path: &str) -> Result<(), ApiError> {
        self.require_admin(ctx, "deleting secrets")?;
        check_store_path(path)?;
        if !self.store.delete(path).await.map_err(store_error)? {
            return Err(err(ErrorCode::NotFound, format!("no secret at {path}")));
        }
        let record = Record {
            path: Some(path.into()),
            ..ctx.record()
        };
        if let Err(e) = self.audit.record(Event::SecretDelete, record) {
            tracing::error!(error = %e, "could not audit a secret deletion");
        }
        Ok(())
    }

    pub async fn list_secrets(&self, ctx: &Ctx, prefix: &str) -> Result<SecretList, ApiError> {
        self.require_admin(ctx, "listing secrets")?;
        let paths = self.store.list(prefix).await.map_err(store_error)?;
        Ok(SecretList { paths })
    }
}

fn lease_gone(lease_id: &str) -> ApiError {
    err(
        ErrorCode::NotFound,
        format!("lease {lease_id} is unknown or expired: fetch the workload's secrets again"),
    )
}

fn lease_ttl(items: &[Item]) -> Duration {
    items
        .iter()
        .map(|i| Duration::from_secs(i.ttl_secs))
        .min()
        .unwrap_or(EMPTY_LEASE_TTL)
}

fn secret_refs(items: &[Item]) -> Vec<SecretRef> {
    items
        .iter()
        .map(|i| SecretRef {
            id: i.id.clone(),
            secret: i.secret.clone(),
            key: i.key.clone(),
            version: i.version,
        })
        .collect()
}

fn check_store_path(path: &str) -> Result<(), ApiError> {
    unbaked_policy::check_secret_path(path).map_err(|why| {
        err(
            ErrorCode::BadRequest,
            format!("secret path {path:?}: {why}"),
        )
    })
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 128
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}
