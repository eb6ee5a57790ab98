//! Dynamic credentials held for workload leases: a PKI certificate or
//! database credentials issued for one lease, delivered again while they
//! outlive the next lease period, renewed or re-issued when they do not,
//! and handed back for revocation when the lease ends.
//!
//! A credential is issued (or renewed) for twice the grant's ttl, and kept
//! while it outlives the next lease period by [`LEASE_END_SLACK`]: so it is
//! still valid when its lease ends and the broker revokes it (Vault refuses
//! to revoke an expired certificate), and one certificate serves about every
//! other renewal. A certificate cannot be renewed, so then a fresh one
//! replaces it and the old one is revoked; a renewable Vault lease
//! (database credentials) is renewed instead, and re-issued only when Vault
//! stops extending it (its max ttl). Either way a credential the broker
//! fails to revoke ends at most one grant ttl after its lease.
//!
//! **Invariant:** values are sealed at rest, bound to lease, path, field and
//! version; the table keeps handles and deadlines in the clear.

use super::memory::{Sealed, Sealer};
use super::{IssueRequest, Issued, IssuedHandle, Store, StoreError};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use unbaked_api::wire::{Delivery, Item};
use unbaked_api::Secret;
use unbaked_policy::{Dynamic, Grant, PKI_FIELDS};

/// A credential must outlive its lease by this much: the expiry sweep runs
/// every second, and the revocation takes a round trip.
pub const LEASE_END_SLACK: Duration = Duration::from_secs(2);

struct Held {
    request: IssueRequest,
    handle: IssuedHandle,
    version: u64,
    valid_until: Instant,
    renewable: bool,
    fields: BTreeMap<String, Sealed>,
}

/// A credential as delivered: its fields opened for one answer.
#[derive(Debug)]
pub struct Credential {
    /// Changes whenever a new credential replaces the old one, so the
    /// sidecar rewrites its files.
    pub version: u64,
    pub handle: IssuedHandle,
    /// How long it stays valid from now.
    pub remaining: Duration,
    pub fields: BTreeMap<String, Secret>,
}

/// A credential to revoke because its lease ended or it was replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    pub path: String,
    pub handle: IssuedHandle,
}

pub struct IssuedTable {
    sealer: Sealer,
    next_version: AtomicU64,
    by_lease: Mutex<HashMap<String, Vec<Held>>>,
    /// Bumped by every change, so the lease keeper saves only after one.
    changes: AtomicU64,
}

/// One held credential with its fields open, to keep across a restart
/// (`crate::lease_keep`, sealed on disk under the operator key).
#[derive(Debug)]
pub struct Exported {
    pub lease: String,
    pub request: IssueRequest,
    pub handle: IssuedHandle,
    pub version: u64,
    pub valid_until: std::time::SystemTime,
    pub renewable: bool,
    pub fields: BTreeMap<String, Secret>,
}

impl std::fmt::Debug for IssuedTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedTable")
            .field("leases", &self.lock().len())
            .finish_non_exhaustive()
    }
}

fn aad(lease: &str, path: &str, field: &str, version: u64) -> Vec<u8> {
    format!("issued\0{lease}\0{path}\0{field}\0{version}").into_bytes()
}

impl IssuedTable {
    pub fn new() -> Result<IssuedTable, ring::error::Unspecified> {
        Ok(IssuedTable {
            sealer: Sealer::new()?,
            next_version: AtomicU64::new(1),
            by_lease: Mutex::new(HashMap::new()),
            changes: AtomicU64::new(0),
        })
    }

    /// A count that changes whenever the table does.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::Relaxed);
    }

    /// Every held credential, fields open, to keep across a restart.
    pub fn export(&self) -> Vec<Exported> {
        let (now, wall) = (Instant::now(), std::time::SystemTime::now());
        let leases = self.lock();
        let mut out = Vec::new();
        for (lease, held) in leases.iter() {
            for h in held {
                let fields = h
                    .fields
                    .iter()
                    .filter_map(|(f, s)| {
                        let v = self
                            .sealer
                            .open(&aad(lease, &h.request.path, f, h.version), s)?;
                        Some((f.clone(), v))
                    })
                    .collect();
                out.push(Exported {
                    lease: lease.clone(),
                    request: h.request.clone(),
                    handle: h.handle.clone(),
                    version: h.version,
                    valid_until: wall + h.valid_until.saturating_duration_since(now),
                    renewable: h.renewable,
                    fields,
                });
            }
        }
        out
    }

    /// Take back what [`Self::export`] gave (a restart): same versions, so
    /// a workload is not made to rewrite what it has.
    pub fn import(&self, kept: Vec<Exported>) {
        let (now, wall) = (Instant::now(), std::time::SystemTime::now());
        let mut leases = self.lock();
        for e in kept {
            let fields = e
                .fields
                .iter()
                .map(|(f, v)| {
                    let aad = aad(&e.lease, &e.request.path, f, e.version);
                    (f.clone(), self.sealer.seal(&aad, v.expose_secret()))
                })
                .collect();
            self.next_version
                .fetch_max(e.version + 1, Ordering::Relaxed);
            let longest = e.request.ttl * 2;
            leases.entry(e.lease).or_default().push(Held {
                request: e.request,
                handle: e.handle,
                version: e.version,
                // At most the twice-the-ttl it is issued for, whatever the
                // wall clock did while the broker was down.
                valid_until: now
                    + e.valid_until
                        .duration_since(wall)
                        .unwrap_or_default()
                        .min(longest),
                renewable: e.renewable,
                fields,
            });
        }
        self.changed();
    }

    /// The credential `lease` holds for `req`, valid for at least the
    /// request's ttl from now: the held one, renewed if it must be, or a
    /// fresh one (and then the one it replaces, to revoke).
    pub async fn obtain(
        &self,
        store: &dyn Store,
        lease: &str,
        req: &IssueRequest,
    ) -> Result<(Credential, Option<Released>), StoreError> {
        let now = Instant::now();
        let need = now + req.ttl + LEASE_END_SLACK;
        if let Some((valid_until, renewable, handle)) = self.held(lease, req) {
            if valid_until >= need {
                return Ok((self.open(lease, req, now).expect("held above"), None));
            }
            if renewable {
                match store.renew_issued(&handle, req.ttl * 2).await {
                    Ok(granted) if now + granted >= need => {
                        self.extend(lease, req, now + granted);
                        if let Some(c) = self.open(lease, req, now) {
                            return Ok((c, None));
                        }
                    }
                    Ok(granted) => {
                        tracing::info!(%handle, granted = ?granted, "vault extends the credential no further: issuing a fresh one");
                    }
                    Err(e) => {
                        tracing::warn!(%handle, error = %e, "cannot renew the credential: issuing a fresh one");
                    }
                }
            }
        }
        let issued = store.issue(req).await?;
        Ok(self.put(lease, req, issued, now))
    }

    /// Keep only the credentials `lease` still uses; the rest, to revoke.
    pub fn retain(&self, lease: &str, used: &[IssueRequest]) -> Vec<Released> {
        let mut leases = self.lock();
        let Some(held) = leases.get_mut(lease) else {
            return Vec::new();
        };
        self.changed();
        let (keep, drop): (Vec<Held>, Vec<Held>) = std::mem::take(held)
            .into_iter()
            .partition(|h| used.contains(&h.request));
        *held = keep;
        if held.is_empty() {
            leases.remove(lease);
        }
        drop.into_iter().map(released).collect()
    }

    /// Every credential of a lease that ended, to revoke.
    pub fn release(&self, lease: &str) -> Vec<Released> {
        self.changed();
        self.lock()
            .remove(lease)
            .unwrap_or_default()
            .into_iter()
            .map(released)
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn held(&self, lease: &str, req: &IssueRequest) -> Option<(Instant, bool, IssuedHandle)> {
        let leases = self.lock();
        let h = leases.get(lease)?.iter().find(|h| &h.request == req)?;
        Some((h.valid_until, h.renewable, h.handle.clone()))
    }

    fn extend(&self, lease: &str, req: &IssueRequest, until: Instant) {
        let mut leases = self.lock();
        if let Some(h) = leases
            .get_mut(lease)
            .and_then(|held| held.iter_mut().find(|h| &h.request == req))
        {
            h.valid_until = until;
        }
        self.changed();
    }

    fn open(&self, lease: &str, req: &IssueRequest, now: Instant) -> Option<Credential> {
        let leases = self.lock();
        let h = leases.get(lease)?.iter().find(|h| &h.request == req)?;
        let fields = h
            .fields
            .iter()
            .filter_map(|(f, s)| {
                let value = self.sealer.open(&aad(lease, &req.path, f, h.version), s)?;
                Some((f.clone(), value))
            })
            .collect();
        Some(Credential {
            version: h.version,
            handle: h.handle.clone(),
            remaining: h.valid_until.saturating_duration_since(now),
            fields,
        })
    }

    fn put(
        &self,
        lease: &str,
        req: &IssueRequest,
        issued: Issued,
        now: Instant,
    ) -> (Credential, Option<Released>) {
        let version = self.next_version.fetch_add(1, Ordering::Relaxed);
        let fields = issued
            .fields
            .iter()
            .map(|(f, v)| {
                let sealed = self
                    .sealer
                    .seal(&aad(lease, &req.path, f, version), v.expose_secret());
                (f.clone(), sealed)
            })
            .collect();
        let held = Held {
            request: req.clone(),
            handle: issued.handle.clone(),
            version,
            valid_until: now + issued.ttl,
            renewable: issued.renewable,
            fields,
        };
        self.changed();
        let mut leases = self.lock();
        let list = leases.entry(lease.to_string()).or_default();
        let replaced = match list.iter_mut().find(|h| h.request == *req) {
            Some(slot) => Some(released(std::mem::replace(slot, held))),
            None => {
                list.push(held);
                None
            }
        };
        let credential = Credential {
            version,
            handle: issued.handle,
            remaining: issued.ttl,
            fields: issued.fields,
        };
        (credential, replaced)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Held>>> {
        self.by_lease.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn released(h: Held) -> Released {
    Released {
        path: h.request.path,
        handle: h.handle,
    }
}

/// The issue request of a dynamic grant; `None` for a stored secret.
pub fn request_for(grant: &Grant) -> Option<IssueRequest> {
    Some(IssueRequest {
        path: grant.secret.clone(),
        kind: grant.dynamic.clone()?,
        ttl: grant.ttl,
    })
}

/// The items one dynamic grant delivers from its credential: one value, or
/// a directory with a file per field (`cert.pem`, `key.pem`, `ca.pem` for a
/// certificate). `Err` says which field is missing.
pub fn items(grant: &Grant, cred: &Credential) -> Result<Vec<Item>, String> {
    // A lease never outlives its credential (Vault may cap the ttl).
    let ttl_secs = grant
        .ttl
        .min(cred.remaining.saturating_sub(LEASE_END_SLACK))
        .as_secs()
        .max(1);
    let item = |id: String, key: &str, delivery: Delivery, value: &Secret| Item {
        id,
        secret: grant.secret.clone(),
        key: key.to_string(),
        delivery,
        version: cred.version,
        ttl_secs,
        value: value.clone(),
    };
    if !grant.is_directory() {
        let value = cred.fields.get(&grant.key).ok_or_else(|| {
            format!(
                "the credential issued by {} has no field {:?} (it has {}): fix `field` of the grant",
                grant.secret,
                grant.key,
                cred.fields.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        return Ok(vec![item(
            grant.id(),
            &grant.key,
            grant.wire_delivery(),
            value,
        )]);
    }
    let dir = grant.delivery.target();
    let pki = matches!(grant.dynamic, Some(Dynamic::Pki(_)));
    let mut out = Vec::new();
    for (field, value) in &cred.fields {
        let name = if pki {
            match PKI_FIELDS.iter().find(|(f, _)| f == field) {
                Some((_, file)) => file.to_string(),
                None => continue,
            }
        } else if field_as_file(field) {
            field.clone()
        } else {
            tracing::warn!(path = %grant.secret, field, "field is not a usable file name: not delivered");
            continue;
        };
        let path = format!("{dir}/{name}");
        let delivery = Delivery::File {
            path: path.clone(),
            mode: grant.mode,
            uid: grant.uid,
            gid: grant.gid,
        };
        out.push(item(format!("file:{path}"), field, delivery, value));
    }
    Ok(out)
}

/// A field name that is safe as one file name in the secrets directory.
fn field_as_file(field: &str) -> bool {
    !field.is_empty()
        && field.len() <= 100
        && !field.starts_with('.')
        && field
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// Revoke released credentials in the store, retrying briefly: one that
/// cannot be revoked still ends at its own ttl in Vault (the grant's).
pub async fn revoke_all(store: &dyn Store, released: Vec<Released>, why: &str) {
    for r in released {
        let mut wait = Duration::from_millis(200);
        for attempt in 1..=4 {
            match store.revoke_issued(&r.handle).await {
                Ok(()) => {
                    tracing::info!(path = %r.path, handle = %r.handle, why, "vault credential revoked");
                    break;
                }
                Err(e) if attempt == 4 => {
                    tracing::error!(path = %r.path, handle = %r.handle, error = %e, "could not revoke a vault credential: it ends at its own ttl");
                }
                Err(_) => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BoxFuture, Versioned, VersionedData};
    use std::sync::atomic::AtomicUsize;
    use unbaked_policy::{GrantDelivery, PkiIssue};

    /// Issues numbered credentials; renews by `renew_to` when set.
    struct Fake {
        issued: AtomicUsize,
        renew_to: Option<Duration>,
        ttl: Duration,
    }

    impl Store for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn read(&self, _: &str, _: &str) -> BoxFuture<'_, Result<Option<Versioned>, StoreError>> {
            Box::pin(async { Ok(None) })
        }
        fn read_all(&self, _: &str) -> BoxFuture<'_, Result<Option<VersionedData>, StoreError>> {
            Box::pin(async { Ok(None) })
        }
        fn write(
            &self,
            _: &str,
            _: BTreeMap<String, Secret>,
        ) -> BoxFuture<'_, Result<u64, StoreError>> {
            Box::pin(async { Ok(1) })
        }
        fn delete(&self, _: &str) -> BoxFuture<'_, Result<bool, StoreError>> {
            Box::pin(async { Ok(false) })
        }
        fn list(&self, _: &str) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
            Box::pin(async { Ok(vec![]) })
        }
        fn issue(&self, _: &IssueRequest) -> BoxFuture<'_, Result<Issued, StoreError>> {
            let n = self.issued.fetch_add(1, Ordering::SeqCst);
            let ttl = self.ttl;
            let renewable = self.renew_to.is_some();
            Box::pin(async move {
                Ok(Issued {
                    fields: BTreeMap::from([(
                        "password".to_string(),
                        Secret::from_slice(format!("pw{n}").as_bytes()),
                    )]),
                    handle: IssuedHandle::Lease(format!("l{n}")),
                    ttl,
                    renewable,
                })
            })
        }
        fn renew_issued(
            &self,
            _: &IssuedHandle,
            _: Duration,
        ) -> BoxFuture<'_, Result<Duration, StoreError>> {
            let to = self.renew_to.unwrap_or_default();
            Box::pin(async move { Ok(to) })
        }
    }

    fn req(ttl: u64) -> IssueRequest {
        IssueRequest {
            path: "database/creds/app".into(),
            kind: Dynamic::Leased,
            ttl: Duration::from_secs(ttl),
        }
    }

    #[test]
    fn a_directory_grant_expands_into_files() {
        let pki = Dynamic::Pki(PkiIssue {
            mount: "pki".into(),
            role: "web".into(),
            common_name: "web.internal".into(),
            alt_names: vec![],
            ip_sans: vec![],
        });
        let mut grant = Grant {
            secret: "pki/issue/web".into(),
            key: String::new(),
            dynamic: Some(pki),
            delivery: GrantDelivery::File("tls".into()),
            ttl: Duration::from_secs(600),
            mode: 0o440,
            uid: Some(7),
            gid: None,
            on_change: None,
            debounce: unbaked_policy::DEFAULT_DEBOUNCE,
        };
        let cred = Credential {
            version: 9,
            handle: IssuedHandle::Certificate {
                mount: "pki".into(),
                serial: "01".into(),
            },
            remaining: Duration::from_secs(300),
            fields: ["certificate", "private_key", "issuing_ca", "serial_number"]
                .iter()
                .map(|f| (f.to_string(), Secret::from_slice(f.as_bytes())))
                .collect(),
        };
        let got = items(&grant, &cred).unwrap();
        let files: Vec<_> = got
            .iter()
            .map(|i| (i.id.as_str(), i.key.as_str(), i.ttl_secs, i.version))
            .collect();
        assert_eq!(
            files,
            [
                ("file:tls/cert.pem", "certificate", 298, 9),
                ("file:tls/ca.pem", "issuing_ca", 298, 9),
                ("file:tls/key.pem", "private_key", 298, 9),
            ]
        );
        assert!(
            matches!(&got[2].delivery, Delivery::File { path, mode: 0o440, uid: Some(7), .. } if path == "tls/key.pem")
        );
        assert_eq!(got[2].value.expose_secret(), b"private_key");

        grant.key = "private_key".into();
        grant.delivery = GrantDelivery::Fd("TLS_KEY_FILE".into());
        let one = items(&grant, &cred).unwrap();
        assert_eq!((one.len(), one[0].id.as_str()), (1, "fd:TLS_KEY_FILE"));
        grant.key = "password".into();
        let e = items(&grant, &cred).unwrap_err();
        assert!(e.contains("no field \"password\""), "{e}");
    }

    #[tokio::test]
    async fn reuse_renew_reissue_and_release() {
        let table = IssuedTable::new().unwrap();
        let long = Fake {
            issued: AtomicUsize::new(0),
            renew_to: None,
            ttl: Duration::from_secs(600),
        };
        let (a, none) = table.obtain(&long, "L", &req(60)).await.unwrap();
        assert!(none.is_none());
        assert_eq!(a.fields["password"].expose_secret(), b"pw0");
        // Valid well past the next period: the same credential, same version.
        let (b, none) = table.obtain(&long, "L", &req(60)).await.unwrap();
        assert!(none.is_none());
        assert_eq!(
            (b.version, b.fields["password"].expose_secret()),
            (a.version, &b"pw0"[..])
        );

        // A credential that would not outlive the period is replaced, and the
        // old one comes back for revocation.
        let short = Fake {
            issued: AtomicUsize::new(1),
            renew_to: None,
            ttl: Duration::from_secs(60),
        };
        let (c, old) = table.obtain(&short, "M", &req(60)).await.unwrap();
        assert!(old.is_none());
        let (d, old) = table.obtain(&short, "M", &req(60)).await.unwrap();
        assert_ne!(c.version, d.version);
        assert_eq!(old.unwrap().handle, IssuedHandle::Lease("l1".into()));

        // A renewable one is renewed in place.
        let renewable = Fake {
            issued: AtomicUsize::new(5),
            renew_to: Some(Duration::from_secs(120)),
            ttl: Duration::from_secs(60),
        };
        let (e, _) = table.obtain(&renewable, "N", &req(60)).await.unwrap();
        let (f, old) = table.obtain(&renewable, "N", &req(60)).await.unwrap();
        assert!(old.is_none());
        assert_eq!(e.version, f.version);
        assert!(f.remaining > Duration::from_secs(100));

        assert!(table.retain("L", &[req(60)]).is_empty());
        assert_eq!(table.retain("L", &[]).len(), 1);
        assert_eq!(
            table.release("M"),
            vec![Released {
                path: "database/creds/app".into(),
                handle: IssuedHandle::Lease("l2".into())
            }]
        );
        assert!(table.release("M").is_empty());
        assert!(!table.is_empty(), "N still holds one");
    }
}
