//! Templates in the answer path: each `[[template]]` of the requested
//! kinds becomes one rendered item, so the sidecar, `unbaked exec` and the
//! `unbaked run` shim receive it like any grant, with no template code of
//! their own. The secrets it reads are the ones the policy names (the
//! template's literal references), read under the same authorization,
//! audit and lease as grants; PKI certificates are held per lease in
//! `store/issued.rs` like a `pki` grant's.
//!
//! **Invariant:** the rendered bytes exist only in zeroizing buffers and
//! the answer; a render error names the template and position, never a
//! value.

use super::super::{Broker, Ctx, ServiceError};
use crate::audit::Record;
use crate::request::Refusal;
use crate::rules::DenyRule;
use crate::store::issued::LEASE_END_SLACK;
use crate::store::IssueRequest;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use unbaked_api::wire::{ChangeAction, DeliveryKind, Item};
use unbaked_api::Secret;
use unbaked_policy::{Dynamic, Policy, Template, TemplateBody, TemplateSource};
use unbaked_template::{format, Resolved};

/// What one source read answered.
enum Fetched {
    Kv {
        version: u64,
        data: BTreeMap<String, Secret>,
    },
    Pki {
        version: u64,
        fields: BTreeMap<String, Secret>,
        remaining: Duration,
    },
}

impl Fetched {
    fn version(&self) -> u64 {
        match self {
            Fetched::Kv { version, .. } | Fetched::Pki { version, .. } => *version,
        }
    }
}

/// The issue request of a template's certificate.
fn issue_request(t: &Template, src: &TemplateSource) -> Option<IssueRequest> {
    match src {
        TemplateSource::Pki { path, issue } => Some(IssueRequest {
            path: path.clone(),
            kind: Dynamic::Pki(issue.clone()),
            ttl: t.ttl,
        }),
        TemplateSource::Kv { .. } => None,
    }
}

/// The certificates the templates of `kinds` hold: a renewal keeps these
/// (anything else the lease held is revoked as withdrawn).
pub(super) fn issue_requests(policy: &Policy, kinds: &[DeliveryKind]) -> Vec<IssueRequest> {
    policy
        .templates_of(kinds)
        .flat_map(|t| {
            t.sources()
                .into_iter()
                .filter_map(move |s| issue_request(t, &s))
        })
        .collect()
}

/// The `on_change` of each grant and template of `kinds`, by its id (a
/// directory grant's covers the items under it).
pub(super) fn actions(policy: &Policy, kinds: &[DeliveryKind]) -> BTreeMap<String, ChangeAction> {
    let grants = policy
        .grants_of(kinds)
        .filter_map(|g| g.action().map(|a| (g.id(), a)));
    let templates = policy
        .templates_of(kinds)
        .filter_map(|t| t.action().map(|a| (t.id(), a)));
    grants.chain(templates).collect()
}

/// The item's version: a digest of every source's path and version, so it
/// changes when any source does, and says nothing of a value.
fn version_of(sources: &BTreeMap<TemplateSource, Fetched>) -> u64 {
    let mut text = String::new();
    for (s, f) in sources {
        text.push_str(&s.describe());
        text.push('@');
        text.push_str(&f.version().to_string());
        text.push('\n');
    }
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_ref()[..8]);
    // Within JSON's exact integers, for clients that read it as a double.
    u64::from_be_bytes(b) >> 11
}

/// Renders `t` from what was read: the bytes, or why not (no value in it).
fn render(t: &Template, read: &BTreeMap<TemplateSource, Fetched>) -> Result<Secret, String> {
    match &t.body {
        TemplateBody::Values { format: f, values } => {
            let mut pairs = Vec::with_capacity(values.len());
            for v in values {
                let src = TemplateSource::Kv {
                    secret: v.secret.clone(),
                    key: v.key.clone(),
                };
                let Some(Fetched::Kv { data, .. }) = read.get(&src) else {
                    return Err(format!("{} was not read", src.describe()));
                };
                let value = data.get(&v.key).cloned().unwrap_or_default();
                pairs.push((v.name.clone(), value));
            }
            format::render(*f, &pairs)
                .map(unbaked_template::Buf::into_secret)
                .map_err(|e| e.to_string())
        }
        TemplateBody::Text(text) => {
            let mut resolved = Resolved::default();
            for r in text.parsed.references() {
                let src = unbaked_policy::Template::source_of(r);
                let value = match read.get(&src) {
                    Some(Fetched::Kv { version, data }) => Resolved::kv(*version, data),
                    Some(Fetched::Pki { fields, .. }) => Resolved::pki(&r.function, fields),
                    None => return Err(format!("{} was not read", src.describe())),
                };
                resolved.insert(r, value);
            }
            text.parsed
                .render(&resolved)
                .map(unbaked_template::Buf::into_secret)
                .map_err(|e| e.to_string())
        }
    }
}

impl Broker {
    /// One rendered item per template of `kinds`, after the grants'.
    pub(super) async fn deliver_templates(
        &self,
        ctx: &Ctx,
        policy: &Policy,
        kinds: &[DeliveryKind],
        lease_id: &str,
        auth: &mut Option<Record>,
    ) -> Result<Vec<Item>, ServiceError> {
        let mut items = Vec::new();
        for t in policy.templates_of(kinds) {
            let mut read = BTreeMap::new();
            let mut ttl = t.ttl;
            for src in t.sources() {
                let fetched = self
                    .read_source(ctx, policy, t, &src, lease_id, auth)
                    .await?;
                if let Fetched::Pki { remaining, .. } = &fetched {
                    // A lease never outlives its certificate.
                    ttl = ttl.min(remaining.saturating_sub(LEASE_END_SLACK));
                }
                read.insert(src, fetched);
            }
            let value = render(t, &read).map_err(|why| {
                ServiceError::Internal(format!(
                    "template {} of workload {:?} cannot be rendered: {why}: fix it in {} (check it with unbaked policy check)",
                    t.id(),
                    policy.workload,
                    policy.source.display()
                ))
            })?;
            let secrets: Vec<String> = read.keys().map(TemplateSource::describe).collect();
            items.push(Item {
                id: t.id(),
                secret: secrets.join(", "),
                key: String::new(),
                delivery: t.wire_delivery(),
                version: version_of(&read),
                ttl_secs: ttl.as_secs().max(1),
                value,
            });
        }
        Ok(items)
    }

    async fn read_source(
        &self,
        ctx: &Ctx,
        policy: &Policy,
        t: &Template,
        src: &TemplateSource,
        lease_id: &str,
        auth: &mut Option<Record>,
    ) -> Result<Fetched, ServiceError> {
        let (secret, key) = match src {
            TemplateSource::Kv { secret, key } => (secret, key),
            TemplateSource::Pki { .. } => {
                let req = issue_request(t, src).ok_or_else(|| {
                    ServiceError::Internal("a pki source without its issue".into())
                })?;
                let (cred, replaced) = self.issued.obtain(&*self.store, lease_id, &req).await?;
                self.revoke_released(
                    lease_id,
                    replaced.into_iter().collect(),
                    "replaced by a fresh one",
                );
                return Ok(Fetched::Pki {
                    version: cred.version,
                    fields: cred.fields,
                    remaining: cred.remaining,
                });
            }
        };
        let started = Instant::now();
        let found = if key.is_empty() {
            self.store
                .read_all(secret)
                .await?
                .map(|d| (d.version, d.data))
        } else {
            self.store
                .read_fresh(secret, key, t.ttl / 3)
                .await?
                .map(|v| (v.version, BTreeMap::from([(key.clone(), v.value)])))
        };
        self.metrics
            .store_read(self.store.name(), started.elapsed());
        match found {
            Some((version, data)) => Ok(Fetched::Kv { version, data }),
            None => {
                let store = self.store.name();
                let w = &policy.workload;
                let what = src.describe();
                let reason = format!("secret {what:?}, read by template {} of workload {w:?}, is not in the {store} store: write it (unbaked secret put {secret} KEY=-) or fix the template", t.id());
                let detail = format!("{reason} in {}", policy.source.display());
                let refusal = Refusal::new(DenyRule::SecretMissing, reason).detail(detail);
                Err(self.deny_after(ctx, auth, &policy.workload, refusal))
            }
        }
    }
}
