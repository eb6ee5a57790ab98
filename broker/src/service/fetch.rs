//! Fetch, renew, revoke and the end of leases: authorize the caller
//! (token, name, attestation, `[match]`, `[isolation]`), read the store,
//! audit, lease.

use super::deny::policy_refusal;
use super::{Broker, Ctx, ServiceError, EMPTY_LEASE_TTL};
use crate::attest::container::Attestation;
use crate::audit::{CallerRef, Event, Record, SecretRef};
use crate::lease::{new_lease_id, LeaseRecord};
use crate::names::{bounded_name, valid_workload};
use crate::platform::FilesTarget;
use crate::request::Refusal;
use crate::rules::DenyRule;
use crate::store::issued::{self, Released};
use crate::store::stale::STALE_LEASE_TTL;
use std::time::{Duration, Instant};
use unbaked_api::wire::{ApiError, DeliveryKind, ErrorCode, FetchRequest, Item, Lease};
use unbaked_policy::{Policy, PolicySet};

pub(super) mod action;
mod render;

impl Broker {
    /// Add what a bearer token proves to the caller. Without a token the
    /// caller is what the socket says; a token that does not verify is a
    /// denial (audited), never a silent downgrade to the socket identity.
    /// The wire error, for the server, which calls it before routing.
    pub fn attest_token(&self, ctx: &mut Ctx, token: Option<&str>) -> Result<(), ApiError> {
        self.check_token(ctx, token).map_err(ApiError::from)
    }

    fn check_token(&self, ctx: &mut Ctx, token: Option<&str>) -> Result<(), ServiceError> {
        let Some(token) = token else {
            return Ok(());
        };
        let Some(verifier) = self.tokens.as_ref() else {
            return Err(self.deny(
                ctx,
                "",
                Refusal::new(
                    DenyRule::TokenUnconfigured,
                    "a service-account token was sent, but this broker has no [kubernetes] section to verify it: configure issuer, audience and jwks, or drop --token-file",
                ),
            ));
        };
        let sa = verifier
            .verify(token)
            .map_err(|e| self.deny(ctx, "", Refusal::new(DenyRule::Token, e.to_string())))?;
        // A token copied out of one pod and replayed from another.
        let pod = crate::attest::token::caller_pod(ctx.caller.pid);
        if let Err(reason) = crate::attest::token::check_pod_binding(&sa, pod.as_deref()) {
            return Err(self.deny(ctx, "", Refusal::new(DenyRule::TokenPod, reason)));
        }
        ctx.caller.service_account = Some(unbaked_policy::ServiceAccount {
            namespace: sa.namespace,
            name: sa.name,
        });
        Ok(())
    }

    /// The process that opened the connection has exited, so its pid (and
    /// what `/proc` says of it) may now belong to another process: refused
    /// and audited (rule `attest.exited`).
    pub fn deny_exited_peer(&self, ctx: &Ctx) -> ApiError {
        let reason = format!(
            "the process that opened this connection (pid {}) has exited, so the broker cannot tell who is asking: send requests from the process that connects",
            ctx.caller.pid.unwrap_or(0)
        );
        self.deny(ctx, "", Refusal::new(DenyRule::AttestExited, reason))
            .into()
    }

    /// Write a record that must exist before anything is released.
    pub(super) fn audit_or_withhold(
        &self,
        event: Event,
        record: Record,
    ) -> Result<(), ServiceError> {
        self.audit_all_or_withhold([(event, record)])
    }

    /// Records that must exist before anything is released, in one append.
    fn audit_all_or_withhold(
        &self,
        records: impl IntoIterator<Item = (Event, Record)>,
    ) -> Result<(), ServiceError> {
        self.audit.record_all(records).map_err(|e| {
            tracing::error!(error = %e, "audit sink failed: withholding secrets");
            ServiceError::Audit(e)
        })
    }

    /// A name the caller chose is checked before anything records it.
    pub(crate) fn check_name(&self, ctx: &Ctx, workload: &str) -> Result<(), ServiceError> {
        if valid_workload(workload) {
            return Ok(());
        }
        let reason = format!(
            "workload name {} is not valid: use 1 to 63 lowercase letters, digits, `_`, `.` or `-`, starting with a letter or digit",
            bounded_name(workload)
        );
        Err(self.deny(
            ctx,
            workload,
            Refusal::new(DenyRule::WorkloadInvalid, reason),
        ))
    }

    /// Find the workload's policy and check the caller against it: name,
    /// attestation, `[match]`, `[isolation]`.
    fn authorize<'p>(
        &self,
        ctx: &Ctx,
        set: &'p PolicySet,
        workload: &str,
    ) -> Result<&'p Policy, ServiceError> {
        self.check_name(ctx, workload)?;
        let Some(policy) = set.get(workload) else {
            let reason = format!("no policy for workload {workload:?}: check the name, or add a policy file with workload = {workload:?}");
            return Err(self.deny(
                ctx,
                workload,
                Refusal::new(DenyRule::WorkloadUnknown, reason),
            ));
        };
        self.attestation_gate(ctx, workload)?;
        policy
            .authorize(&ctx.caller)
            .map_err(|d| self.deny(ctx, workload, policy_refusal(d, ctx, workload)))?;
        self.check_isolation(ctx, policy)?;
        Ok(policy)
    }

    /// Before `[match]`: a caller in a container the platform cannot vouch
    /// for is released nothing, whatever its policy says; nor is a container
    /// the platform keeps for another workload.
    fn attestation_gate(&self, ctx: &Ctx, workload: &str) -> Result<(), ServiceError> {
        let refusal = match &ctx.attestation {
            Attestation::Host => return Ok(()),
            Attestation::Container(e) => match self.platform.gate(&**e, workload) {
                Ok(()) => return Ok(()),
                Err(r) => r,
            },
            Attestation::Unverified { id, reason } => {
                let short = id.get(..12).unwrap_or(id);
                Refusal::new(
                    DenyRule::IsolationUnverified,
                    format!("the caller runs in container {short}, whose isolation cannot be verified: {reason}"),
                )
            }
        };
        Err(self.deny(ctx, workload, refusal))
    }

    /// After `[match]`: the live container against `[isolation]`.
    fn check_isolation(&self, ctx: &Ctx, policy: &Policy) -> Result<(), ServiceError> {
        let Some(e) = ctx.attestation.evidence() else {
            return Ok(());
        };
        self.platform
            .isolation(&**e, policy)
            .map_err(|r| self.deny(ctx, &policy.workload, r))
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
    ) -> Result<(Vec<Item>, Stale), ServiceError> {
        let mut items = Vec::new();
        let mut stale = Stale::new();
        for grant in policy.grants_of(kinds) {
            if let Some(req) = issued::request_for(grant) {
                let (cred, replaced) = self.issued.obtain(&*self.store, lease_id, &req).await?;
                self.revoke_released(
                    lease_id,
                    replaced.into_iter().collect(),
                    "replaced by a fresh one",
                );
                let dynamic = issued::items(grant, &cred).map_err(|m| {
                    let refusal = Refusal::new(DenyRule::SecretMissing, m);
                    self.deny_after(ctx, auth, &policy.workload, refusal)
                })?;
                items.extend(dynamic);
                continue;
            }
            // A cached copy at most a third of the ttl old: with renewal at
            // two thirds, a rotation reaches the workload within one ttl.
            // With the store unreachable, a kept copy younger than its
            // max_stale, on a short lease (so the workload asks again soon),
            // audited as stale.
            let started = Instant::now();
            let found = self
                .store
                .read_or_stale(&grant.secret, &grant.key, grant.ttl / 3)
                .await?;
            self.metrics
                .store_read(self.store.name(), started.elapsed());
            let Some((v, age)) = found else {
                let refusal = self.missing(policy, &grant.secret, &grant.key);
                return Err(self.deny_after(ctx, auth, &policy.workload, refusal));
            };
            let mut ttl = grant.ttl;
            if let Some(age) = age {
                ttl = ttl.min(STALE_LEASE_TTL);
                stale.push((items.len(), age));
                self.metrics
                    .workload(&self.metrics.stale_served, &policy.workload);
            }
            items.push(Item {
                id: grant.id(),
                secret: grant.secret.clone(),
                key: grant.key.clone(),
                delivery: grant.wire_delivery(),
                version: v.version,
                ttl_secs: ttl.as_secs().max(1),
                value: v.value,
            });
        }
        // Templates, rendered here so every client receives them as items.
        let rendered = self
            .deliver_templates(ctx, policy, kinds, lease_id, auth)
            .await?;
        items.extend(rendered);
        Ok((items, stale))
    }

    /// A granted secret the store lacks: the policy file is named only to
    /// the operator.
    fn missing(&self, policy: &Policy, secret: &str, key: &str) -> Refusal {
        let store = self.store.name();
        let w = &policy.workload;
        let reason = format!("secret {secret:?} key {key:?}, granted to workload {w:?}, is not in the {store} store: write it (unbaked secret put {secret} {key}=-) or fix the grant");
        let detail = format!("{reason} in {}", policy.source.display());
        Refusal::new(DenyRule::SecretMissing, reason).detail(detail)
    }

    /// A fetch: the lease, and for a container what its platform does
    /// after one (an `unbaked run` shim's fetch first has the container's
    /// file grants written into its secrets tmpfs, as a lease of their own
    /// with the same checks and audit).
    pub async fn fetch(&self, ctx: &Ctx, req: FetchRequest) -> Result<Lease, ServiceError> {
        let kinds = req.kinds.clone();
        let lease = self.grant(ctx, req).await?;
        let Some(e) = ctx.attestation.evidence() else {
            return Ok(lease);
        };
        let target = self
            .platform
            .fetched(&**e, &lease.workload, &kinds, &lease.lease_id)
            .map_err(|r| self.deny(ctx, &lease.workload, r));
        match target {
            Ok(None) => Ok(lease),
            Ok(Some(target)) => {
                self.deliver_files(ctx, &lease, &target).await?;
                Ok(lease)
            }
            Err(e) => {
                self.end_lease(&lease.lease_id, "the container's file grants were refused");
                Err(e)
            }
        }
    }

    /// The file grants of `lease`'s workload, fetched for `ctx` and handed
    /// to the platform; `lease` ends if they cannot be.
    async fn deliver_files(
        &self,
        ctx: &Ctx,
        lease: &Lease,
        target: &FilesTarget,
    ) -> Result<(), ServiceError> {
        let files = FetchRequest {
            workload: lease.workload.clone(),
            kinds: vec![DeliveryKind::File],
        };
        let delivered = match self.grant(ctx, files).await {
            Ok(files) => self.platform.deliver_files(self, ctx, target, &files),
            Err(e) => Err(e),
        };
        delivered.inspect_err(|_| {
            self.end_lease(
                &lease.lease_id,
                "the container's file grants could not be delivered",
            );
        })
    }

    /// One lease: authorize, read, audit, hold.
    async fn grant(&self, ctx: &Ctx, req: FetchRequest) -> Result<Lease, ServiceError> {
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
        let items = self
            .deliver_audited(ctx, policy, &req, &id, &mut auth)
            .await
            .inspect_err(|_| {
                // Nothing was released: credentials issued on the way go back.
                self.release_issued(&id, "the fetch failed");
            })?;
        let ttl = self.hold(ctx, &req, &id, &items);
        // Debug, not info: the audit record and the grants counter already
        // hold every grant, and this line (JSON, with the request span) was
        // a third of the broker's instructions per fetch.
        tracing::debug!(workload = %req.workload, lease = %id, items = items.len(), "granted");
        self.metrics.workload(&self.metrics.grants, &req.workload);
        Ok(Lease {
            lease_id: id,
            workload: req.workload,
            ttl_secs: ttl.as_secs(),
            items,
            actions: render::actions(policy, &req.kinds),
        })
    }

    /// [`Broker::deliver`], then the authenticate and grant records in one
    /// append (nothing is released unless both are written).
    async fn deliver_audited(
        &self,
        ctx: &Ctx,
        policy: &Policy,
        req: &FetchRequest,
        id: &str,
        auth: &mut Option<Record>,
    ) -> Result<Vec<Item>, ServiceError> {
        match self.deliver(ctx, policy, &req.kinds, id, auth).await {
            Ok((items, stale)) => {
                let grant = Record {
                    workload: Some(req.workload.clone()),
                    lease: Some(id.to_string()),
                    secrets: secret_refs(&items, &stale),
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
        }
    }

    /// Enter the lease in the table (ending the holder's oldest past the
    /// limit); its ttl.
    fn hold(&self, ctx: &Ctx, req: &FetchRequest, id: &str, items: &[Item]) -> Duration {
        let ttl = lease_ttl(items);
        let evicted = self.leases.insert(LeaseRecord {
            id: id.to_string(),
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
        ttl
    }

    /// Renewal re-evaluates everything against the current policy and store:
    /// a withdrawn grant is absent from the answer, a denied caller loses
    /// the lease.
    pub async fn renew(&self, ctx: &Ctx, lease_id: &str) -> Result<Lease, ServiceError> {
        let lease = self.owned_lease(ctx, lease_id)?;
        let set = self.policies();
        let policy = match self.authorize(ctx, &set, &lease.workload) {
            Ok(p) => p,
            Err(e) => {
                self.leases.remove(lease_id);
                self.release_issued(lease_id, "renewal denied");
                // An unknown workload is a denial for a lease holder.
                return Err(match e {
                    ServiceError::Denied {
                        rule,
                        reason,
                        caller,
                        request,
                        ..
                    } => ServiceError::Denied {
                        rule,
                        reason,
                        caller,
                        request,
                        code: ErrorCode::Denied,
                    },
                    other => other,
                });
            }
        };
        let (items, stale) = self
            .deliver(ctx, policy, &lease.kinds, lease_id, &mut None)
            .await?;
        // Credentials of grants withdrawn since the last answer go back.
        let used: Vec<_> = policy
            .grants_of(&lease.kinds)
            .filter_map(issued::request_for)
            .chain(render::issue_requests(policy, &lease.kinds))
            .collect();
        let withdrawn = self.issued.retain(lease_id, &used);
        self.revoke_released(lease_id, withdrawn, "grant withdrawn");
        let ttl = lease_ttl(&items);
        self.audit_or_withhold(
            Event::Renew,
            Record {
                workload: Some(lease.workload.clone()),
                lease: Some(lease.id.clone()),
                secrets: secret_refs(&items, &stale),
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
            actions: render::actions(policy, &lease.kinds),
        })
    }

    pub fn revoke(&self, ctx: &Ctx, lease_id: &str) -> Result<(), ServiceError> {
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
    fn owned_lease(&self, ctx: &Ctx, lease_id: &str) -> Result<LeaseRecord, ServiceError> {
        let lease = self
            .leases
            .get(lease_id, Instant::now())
            .ok_or_else(|| lease_gone(lease_id))?;
        let owner = lease.uid == ctx.caller.uid && lease.gid == ctx.caller.gid;
        if !owner && !self.is_admin(&ctx.caller) {
            let reason = format!("lease {lease_id} belongs to another uid or gid than the caller's: renew or revoke it from the process that fetched it");
            let detail = format!(
                "lease {lease_id} belongs to uid {} gid {}, not to the caller (uid {} gid {})",
                lease.uid, lease.gid, ctx.caller.uid, ctx.caller.gid
            );
            let refusal = Refusal::new(DenyRule::LeaseOwner, reason).detail(detail);
            return Err(self.deny(ctx, &lease.workload, refusal));
        }
        Ok(lease)
    }

    /// Take back the leases a previous run kept (before serving): live ones
    /// into the table with their credentials; those whose deadline passed
    /// while the broker was stopped end now (audited `expire`, their
    /// credentials revoked). (live, ended).
    pub fn restore_leases(&self, kept: crate::lease_keep::Kept) -> (usize, usize) {
        let holders: std::collections::BTreeSet<String> =
            kept.issued.iter().map(|e| e.lease.clone()).collect();
        self.issued.import(kept.issued);
        let wall = std::time::SystemTime::now();
        let (live, ended): (Vec<_>, Vec<_>) = kept
            .leases
            .into_iter()
            .partition(|(_, deadline)| *deadline > wall);
        let live: Vec<LeaseRecord> = live.into_iter().map(|(l, _)| l).collect();
        let ended: Vec<LeaseRecord> = ended.into_iter().map(|(l, _)| l).collect();
        for lease in &live {
            // The table held at most the limit per holder; should it not
            // have, the oldest end as they would have then.
            let evicted = self.leases.insert(lease.clone());
            self.end_leases(&evicted, "the holder held more leases than the limit");
        }
        self.end_leases(&ended, "ttl passed while the broker was stopped");
        // Credentials whose lease was not kept: revoked.
        for id in holders {
            if !live.iter().any(|l| l.id == id) && !ended.iter().any(|l| l.id == id) {
                self.release_issued(&id, "its lease was not kept");
            }
        }
        (live.len(), ended.len())
    }

    /// Drop leases past their deadline and audit each; write the
    /// aggregated denials whose window ended.
    pub fn expire(&self, now: Instant) -> usize {
        let expired = self.leases.drain_expired(now);
        self.end_leases(&expired, "ttl passed without renewal");
        self.flush_denials(false);
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
                    ..SecretRef::default()
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
}

/// The lease id is bounded: it is the caller's string.
fn lease_gone(lease_id: &str) -> ServiceError {
    ServiceError::NotFound(format!(
        "lease {} is unknown or expired: fetch the workload's secrets again",
        bounded_name(lease_id)
    ))
}

fn lease_ttl(items: &[Item]) -> Duration {
    items
        .iter()
        .map(|i| Duration::from_secs(i.ttl_secs))
        .min()
        .unwrap_or(EMPTY_LEASE_TTL)
}

/// Which items (by index) were answered from a stale copy, and its age.
type Stale = Vec<(usize, Duration)>;

fn secret_refs(items: &[Item], stale: &Stale) -> Vec<SecretRef> {
    items
        .iter()
        .enumerate()
        .map(|(n, i)| {
            let age = stale.iter().find(|(at, _)| *at == n).map(|(_, a)| *a);
            SecretRef {
                id: i.id.clone(),
                secret: i.secret.clone(),
                key: i.key.clone(),
                version: i.version,
                stale: age.is_some(),
                age_secs: age.map(|a| a.as_secs()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease_keep::{Kept, LeaseKeeper};
    use crate::store::file::FileStore;
    use crate::store::issued::Exported;
    use crate::store::key::StoreKey;
    use crate::store::{IssueRequest, IssuedHandle};
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::SystemTime;
    use unbaked_api::Secret;
    use unbaked_policy::Dynamic;

    fn broker(audit: &std::path::Path, keep: &std::path::Path) -> Broker {
        let policies = unbaked_policy::from_sources(&[(
            "web.toml".into(),
            "workload = \"web\"\n[match]\nuids = [1000]\n".into(),
        )])
        .unwrap();
        let keeper = LeaseKeeper::with(
            FileStore::open_with_key(keep, StoreKey::from_bytes([9; 32]), "test", 1).unwrap(),
        );
        Broker::new(
            policies,
            Arc::new(crate::store::memory::MemoryStore::new().unwrap()),
            crate::audit::Audit::open(audit).unwrap(),
            0,
        )
        .with_keeper(keeper)
    }

    fn lease(id: &str, ttl: Duration) -> LeaseRecord {
        LeaseRecord {
            id: id.into(),
            workload: "web".into(),
            uid: 1000,
            gid: 1000,
            pid: Some(42),
            kinds: vec![DeliveryKind::File],
            ttl,
            expires_at: Instant::now() + ttl,
        }
    }

    fn credential(lease: &str) -> Exported {
        Exported {
            lease: lease.into(),
            request: IssueRequest {
                path: "database/creds/web".into(),
                kind: Dynamic::Leased,
                ttl: Duration::from_secs(60),
            },
            handle: IssuedHandle::Lease(format!("database/creds/web/{lease}")),
            version: 3,
            valid_until: SystemTime::now() + Duration::from_secs(120),
            renewable: true,
            fields: BTreeMap::from([("password".to_string(), Secret::from_slice(b"pw"))]),
        }
    }

    /// A broker's saved leases come back in the next one: a live lease by
    /// its id, with its credential; one whose deadline passed while the
    /// broker was stopped ends at start, audited, its credential revoked.
    #[tokio::test]
    async fn kept_leases_come_back_and_past_deadlines_end_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let (audit, keep) = (dir.path().join("audit.log"), dir.path().join("leases"));
        let first = broker(&audit, &keep);
        first.leases.insert(lease("live", Duration::from_secs(60)));
        first
            .leases
            .insert(lease("short", Duration::from_millis(200)));
        first
            .issued
            .import(vec![credential("live"), credential("short")]);
        assert!(first.save_leases().unwrap());
        assert!(!first.save_leases().unwrap(), "nothing changed: not saved");
        drop(first);
        std::thread::sleep(Duration::from_millis(300));

        let second = broker(&audit, &keep);
        let kept: Kept = second.keeper.as_ref().unwrap().load().unwrap();
        assert_eq!(kept.leases.len(), 2);
        assert_eq!(second.restore_leases(kept), (1, 1));
        assert!(second.leases.get("live", Instant::now()).is_some());
        assert!(second.leases.get("short", Instant::now()).is_none());
        let exported = second.issued.export();
        assert_eq!(exported.len(), 1);
        assert_eq!(
            (exported[0].lease.as_str(), exported[0].version),
            ("live", 3)
        );
        let text = std::fs::read_to_string(&audit).unwrap();
        assert!(
            text.contains("\"expire\"") && text.contains("short"),
            "{text}"
        );
        assert!(
            text.contains("database/creds/web/short") && !text.contains("database/creds/web/live"),
            "{text}"
        );
    }
}
