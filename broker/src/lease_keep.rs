//! Leases across a restart: the lease table and the dynamic credentials
//! each lease holds, kept sealed in `<store dir>/leases` (a [`FileStore`]
//! of its own: the same record format, crash-safe append and operator key
//! as `--store file`), so that a restarted broker renews its sidecars'
//! leases by their ids and still revokes their credentials when they end.
//!
//! The whole table is one record, rewritten (appended and synced) at most
//! every [`SAVE_EVERY`] after a change and once more at a clean stop; a
//! crash loses at most the changes of the last [`SAVE_EVERY`] (a lease
//! made then is unknown after the restart: its holder fetches afresh, as
//! before). Deadlines are kept as wall-clock times; a lease whose deadline
//! passed while the broker was down ends at start (audited `expire`, its
//! credentials revoked).
//!
//! Only a broker with a store directory and key keeps leases (`--store
//! file`, or the Vault store with `max_stale`); the memory store loses its
//! secrets at a restart anyway.
//!
//! The container platform's own record rides in the same sealed record
//! (`Platform::keep`: Docker's launches, metadata only), so leases and the
//! launches holding them are saved together; the platform takes it back
//! when it starts (`Core::kept_platform`).
//!
//! **Invariant:** credential values only inside the sealed record, in
//! fields of their own; the lease table and the platform's record hold no
//! value.

use crate::lease::LeaseRecord;
use crate::store::file::{FileStore, FileStoreConfig, FileStoreError};
use crate::store::issued::Exported;
use crate::store::{IssueRequest, IssuedHandle, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use unbaked_api::wire::DeliveryKind;
use unbaked_api::Secret;
use unbaked_policy::{Dynamic, PkiIssue};
use zeroize::Zeroizing;

/// The leases' directory under the store directory.
pub const DIR: &str = "leases";
/// The one path of the record.
const PATH: &str = "leases";
/// How often a changed table is saved.
pub const SAVE_EVERY: Duration = Duration::from_secs(1);
/// Credential fields ride under this prefix, `f/<n>/<field>`.
const FIELD: &str = "f/";
/// The platform's record (JSON, no values).
const PLATFORM: &str = "platform";
/// The platform's record is at most this long: a longer one is not saved
/// (the previous one stays), so the whole record stays under the store's
/// record limit and the next start reads it.
pub const MAX_PLATFORM: usize = 4 << 20;

#[derive(Serialize, Deserialize)]
struct LeaseMeta {
    id: String,
    workload: String,
    uid: u32,
    gid: u32,
    pid: Option<i32>,
    kinds: Vec<DeliveryKind>,
    ttl_ms: u64,
    expires_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct PkiMeta {
    mount: String,
    role: String,
    common_name: String,
    alt_names: Vec<String>,
    ip_sans: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct IssuedMeta {
    lease: String,
    path: String,
    /// `None`: a leased read (`dynamic`).
    pki: Option<PkiMeta>,
    ttl_ms: u64,
    /// A Vault lease id, or a certificate's serial with its mount.
    vault_lease: Option<String>,
    cert: Option<(String, String)>,
    version: u64,
    valid_until_ms: u64,
    renewable: bool,
}

/// What a restarted broker takes back.
#[derive(Debug, Default)]
pub struct Kept {
    /// With their deadlines; some may have passed.
    pub leases: Vec<(LeaseRecord, SystemTime)>,
    pub issued: Vec<Exported>,
}

pub struct LeaseKeeper {
    store: FileStore,
    version: AtomicU64,
    /// `changes` of the lease and credential tables, and a hash of the
    /// platform's record, at the last save.
    saved: Mutex<Option<(u64, u64)>>,
    /// The platform's record as last loaded or saved: handed to the
    /// platform at start, and kept as it was by a save that has none.
    platform: Mutex<Vec<u8>>,
}

impl std::fmt::Debug for LeaseKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseKeeper").finish_non_exhaustive()
    }
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

impl LeaseKeeper {
    /// Open (or create) the kept leases under `store.dir` with the
    /// operator key; a wrong key is refused with nothing changed.
    pub fn open(store: &FileStoreConfig) -> Result<LeaseKeeper, FileStoreError> {
        let key = crate::store::key::load(&store.key_file, store.key_from)?;
        let fs = FileStore::open_with_key(&store.dir.join(DIR), key, store.key_from, 1)?;
        Ok(Self::with(fs))
    }

    pub fn with(store: FileStore) -> LeaseKeeper {
        let current = store.current(PATH);
        let version = current.as_ref().map_or(0, |d| d.version);
        let platform = current
            .as_ref()
            .and_then(|d| d.data.get(PLATFORM))
            .map(|v| v.expose_secret().to_vec())
            .unwrap_or_default();
        LeaseKeeper {
            store,
            version: AtomicU64::new(version),
            saved: Mutex::new(None),
            platform: Mutex::new(platform),
        }
    }

    /// What the platform kept at the last save (empty: nothing).
    pub fn kept_platform(&self) -> Vec<u8> {
        self.platform
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether the tables or the platform's record changed since the last
    /// save (`changes`: the tables' counts summed; `platform`: the
    /// platform's record, `None` when it keeps none).
    pub fn due(&self, changes: u64, platform: Option<&[u8]>) -> bool {
        *self.saved.lock().unwrap_or_else(|e| e.into_inner())
            != Some(fingerprint(changes, platform))
    }

    /// Save the tables and the platform's record (blocking: an append and
    /// an fsync); `None` keeps the platform's record as it was. `changes`
    /// and `platform` are what [`Self::due`] was given.
    pub fn save(
        &self,
        changes: u64,
        leases: &[LeaseRecord],
        issued: &[Exported],
        platform: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let metas: Vec<LeaseMeta> = leases
            .iter()
            .map(|l| LeaseMeta {
                id: l.id.clone(),
                workload: l.workload.clone(),
                uid: l.uid,
                gid: l.gid,
                pid: l.pid,
                kinds: l.kinds.clone(),
                ttl_ms: l.ttl.as_millis() as u64,
                expires_ms: ms(wall + l.expires_at.saturating_duration_since(now)),
            })
            .collect();
        let mut data = BTreeMap::new();
        data.insert("leases".to_string(), json(&metas));
        let mut imetas = Vec::new();
        for (n, e) in issued.iter().enumerate() {
            let (vault_lease, cert) = match &e.handle {
                IssuedHandle::Lease(id) => (Some(id.clone()), None),
                IssuedHandle::Certificate { mount, serial } => {
                    (None, Some((mount.clone(), serial.clone())))
                }
            };
            imetas.push(IssuedMeta {
                lease: e.lease.clone(),
                path: e.request.path.clone(),
                pki: match &e.request.kind {
                    Dynamic::Pki(p) => Some(PkiMeta {
                        mount: p.mount.clone(),
                        role: p.role.clone(),
                        common_name: p.common_name.clone(),
                        alt_names: p.alt_names.clone(),
                        ip_sans: p.ip_sans.clone(),
                    }),
                    Dynamic::Leased => None,
                },
                ttl_ms: e.request.ttl.as_millis() as u64,
                vault_lease,
                cert,
                version: e.version,
                valid_until_ms: ms(e.valid_until),
                renewable: e.renewable,
            });
            for (f, v) in &e.fields {
                data.insert(format!("{FIELD}{n}/{f}"), v.clone());
            }
        }
        data.insert("issued".to_string(), json(&imetas));
        let mut kept = self.platform.lock().unwrap_or_else(|e| e.into_inner());
        match platform {
            Some(p) if p.len() > MAX_PLATFORM => {
                tracing::error!(bytes = p.len(), limit = MAX_PLATFORM, "the platform's record is over its limit: not saved, the previous one stays (launches since are not kept across a restart)");
            }
            Some(p) => p.clone_into(&mut kept),
            None => {}
        }
        data.insert(PLATFORM.to_string(), Secret::from_slice(&kept));
        drop(kept);
        let version = self.version.fetch_add(1, Ordering::Relaxed) + 1;
        self.store.put_version(PATH, version, &data)?;
        *self.saved.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(fingerprint(changes, platform));
        Ok(())
    }

    /// What the last save kept; `Err` names what could not be read.
    pub fn load(&self) -> Result<Kept, String> {
        let Some(d) = self.store.current(PATH) else {
            return Ok(Kept::default());
        };
        let parse = |k: &str| -> Result<serde_json::Value, String> {
            let v = d.data.get(k).ok_or_else(|| format!("no {k}"))?;
            serde_json::from_slice(v.expose_secret()).map_err(|e| format!("{k}: {e}"))
        };
        let metas: Vec<LeaseMeta> =
            serde_json::from_value(parse("leases")?).map_err(|e| format!("leases: {e}"))?;
        let imetas: Vec<IssuedMeta> =
            serde_json::from_value(parse("issued")?).map_err(|e| format!("issued: {e}"))?;
        let (now, wall) = (Instant::now(), SystemTime::now());
        let leases = metas
            .into_iter()
            .map(|m| {
                let deadline = at(m.expires_ms);
                // Never past one ttl from now: a clock set back while the
                // broker was down must not stretch a lease (a removed grant
                // still goes within one ttl).
                let left = deadline
                    .duration_since(wall)
                    .unwrap_or_default()
                    .min(Duration::from_millis(m.ttl_ms));
                (
                    LeaseRecord {
                        id: m.id,
                        workload: m.workload,
                        uid: m.uid,
                        gid: m.gid,
                        pid: m.pid,
                        kinds: m.kinds,
                        ttl: Duration::from_millis(m.ttl_ms),
                        expires_at: now + left,
                    },
                    deadline,
                )
            })
            .collect();
        let mut issued = Vec::new();
        for (n, m) in imetas.into_iter().enumerate() {
            let prefix = format!("{FIELD}{n}/");
            let fields: BTreeMap<String, Secret> = d
                .data
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_string(), v.clone())))
                .collect();
            let handle = match (m.vault_lease, m.cert) {
                (Some(id), _) => IssuedHandle::Lease(id),
                (None, Some((mount, serial))) => IssuedHandle::Certificate { mount, serial },
                (None, None) => return Err(format!("issued credential {n} has no handle")),
            };
            issued.push(Exported {
                lease: m.lease,
                request: IssueRequest {
                    path: m.path,
                    kind: match m.pki {
                        Some(p) => Dynamic::Pki(PkiIssue {
                            mount: p.mount,
                            role: p.role,
                            common_name: p.common_name,
                            alt_names: p.alt_names,
                            ip_sans: p.ip_sans,
                        }),
                        None => Dynamic::Leased,
                    },
                    ttl: Duration::from_millis(m.ttl_ms),
                },
                handle,
                version: m.version,
                valid_until: at(m.valid_until_ms),
                renewable: m.renewable,
                fields,
            });
        }
        Ok(Kept { leases, issued })
    }
}

/// What a save is judged by: the tables' change count and a hash of the
/// platform's record.
fn fingerprint(changes: u64, platform: Option<&[u8]>) -> (u64, u64) {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    platform.hash(&mut h);
    (changes, h.finish())
}

/// JSON of metadata (no values) as a field of the sealed record.
fn json<T: Serialize>(v: &T) -> Secret {
    let bytes = Zeroizing::new(serde_json::to_vec(v).expect("plain data serializes"));
    Secret::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::key::StoreKey;

    /// The keeper's store under `dir`, with a fixed test key.
    fn open_store(dir: &std::path::Path) -> FileStore {
        FileStore::open_with_key(&dir.join(DIR), StoreKey::from_bytes([3; 32]), "test", 1).unwrap()
    }

    /// A platform record over [`MAX_PLATFORM`] is not saved: the previous
    /// one stays, and the record still opens at the next start.
    #[test]
    fn a_platform_record_over_its_limit_keeps_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let open = || open_store(dir.path());
        let k = LeaseKeeper::with(open());
        k.save(1, &[], &[], Some(b"{\"small\":1}")).unwrap();
        let big = vec![b' '; MAX_PLATFORM + 1];
        k.save(2, &[], &[], Some(&big)).unwrap();
        assert_eq!(k.kept_platform(), b"{\"small\":1}");
        // Control: at the limit it is saved.
        let at = vec![b' '; MAX_PLATFORM];
        k.save(3, &[], &[], Some(&at)).unwrap();
        drop(k);
        let k = LeaseKeeper::with(open());
        assert_eq!(k.kept_platform().len(), MAX_PLATFORM);
    }

    #[test]
    fn leases_and_credentials_come_back_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let open = || open_store(dir.path());
        let k = LeaseKeeper::with(open());
        let now = Instant::now();
        let lease = LeaseRecord {
            id: "l1".into(),
            workload: "web".into(),
            uid: 1000,
            gid: 1000,
            pid: Some(42),
            kinds: vec![DeliveryKind::File],
            ttl: Duration::from_secs(60),
            expires_at: now + Duration::from_secs(60),
        };
        let cred = Exported {
            lease: "l1".into(),
            request: IssueRequest {
                path: "pki/issue/web".into(),
                kind: Dynamic::Pki(PkiIssue {
                    mount: "pki".into(),
                    role: "web".into(),
                    common_name: "web.internal".into(),
                    alt_names: vec!["a.internal".into()],
                    ip_sans: vec![],
                }),
                ttl: Duration::from_secs(60),
            },
            handle: IssuedHandle::Certificate {
                mount: "pki".into(),
                serial: "aa:bb".into(),
            },
            version: 7,
            valid_until: SystemTime::now() + Duration::from_secs(120),
            renewable: false,
            fields: BTreeMap::from([(
                "private_key".to_string(),
                Secret::from_slice(b"kept-private-key-marker"),
            )]),
        };
        assert!(k.due(5, None));
        let launches = br#"{"launches":["container-marker"]}"#;
        k.save(
            5,
            std::slice::from_ref(&lease),
            std::slice::from_ref(&cred),
            Some(launches),
        )
        .unwrap();
        assert!(!k.due(5, Some(launches)));
        assert!(k.due(5, Some(b"{}")), "a changed platform record is saved");
        drop(k);
        let bytes = std::fs::read(dir.path().join(DIR).join(crate::store::file::LOG)).unwrap();
        for needle in [
            &b"kept-private-key-marker"[..],
            b"web.internal",
            b"aa:bb",
            b"container-marker",
        ] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle));
        }
        let k = LeaseKeeper::with(open());
        assert_eq!(k.kept_platform(), launches);
        // A save without a platform record keeps the one there was.
        k.save(
            6,
            std::slice::from_ref(&lease),
            std::slice::from_ref(&cred),
            None,
        )
        .unwrap();
        drop(k);
        let k = LeaseKeeper::with(open());
        assert_eq!(k.kept_platform(), launches);
        let kept = k.load().unwrap();
        let (l, _) = &kept.leases[0];
        assert_eq!((l.id.as_str(), l.pid, l.ttl), ("l1", Some(42), lease.ttl));
        assert!(l.expires_at > now + Duration::from_secs(55));
        let c = &kept.issued[0];
        assert_eq!(
            (&c.request, &c.handle, c.version),
            (&cred.request, &cred.handle, 7)
        );
        assert_eq!(
            c.fields["private_key"].expose_secret(),
            b"kept-private-key-marker"
        );
    }

    /// 1,000 leases saved again and again (the whole record, sealed,
    /// appended, fdatasync'd, as the sweeper does while leases renew) all
    /// come back at the next start. How long a save took is printed, not
    /// judged (BENCHMARKS.md, "Kept leases"; `--release --nocapture` for
    /// the figure).
    #[test]
    fn a_thousand_leases_saved_repeatedly_all_come_back() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap(); // on disk: fdatasync counts
        let k = LeaseKeeper::with(open_store(dir.path()));
        let now = Instant::now();
        let leases: Vec<LeaseRecord> = (0..1000)
            .map(|i| LeaseRecord {
                id: format!("{i:032x}"),
                workload: format!("workload-{}", i % 20),
                uid: 1000 + i % 50,
                gid: 1000,
                pid: Some(10_000 + i as i32),
                kinds: vec![DeliveryKind::File],
                ttl: Duration::from_secs(60),
                expires_at: now + Duration::from_secs(60),
            })
            .collect();
        let n = 20u64;
        let started = Instant::now();
        for i in 0..n {
            k.save(i, &leases, &[], Some(b"{}")).unwrap();
        }
        let each = started.elapsed() / n as u32;
        let log = std::fs::metadata(dir.path().join(DIR).join(crate::store::file::LOG))
            .unwrap()
            .len();
        println!("save of 1,000 leases: {each:?} each; log after {n} saves: {log} bytes");
        drop(k);
        let kept = LeaseKeeper::with(open_store(dir.path())).load().unwrap();
        let mut ids: Vec<&str> = kept.leases.iter().map(|(l, _)| l.id.as_str()).collect();
        ids.sort_unstable();
        let want: Vec<String> = (0..1000).map(|i| format!("{i:032x}")).collect();
        assert_eq!(ids, want.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(kept
            .leases
            .iter()
            .all(|(l, _)| l.ttl == Duration::from_secs(60)));
    }
}
