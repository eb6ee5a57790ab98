//! Secret stores behind one trait. Adding a backend touches this folder.
//!
//! **Invariant:** a store hands out values only as [`Secret`]; what it keeps
//! at rest in process memory is sealed.

pub mod cache;
pub mod crypt;
pub mod file;
pub mod issued;
pub mod key;
pub mod memory;
pub mod stale;
pub mod value_fields;
pub mod vault;
pub mod vault_tls;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use unbaked_api::Secret;
use unbaked_policy::Dynamic;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One key of a secret at one version.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub version: u64,
    pub value: Secret,
}

/// A read that may have been answered from a stale copy: the value, and
/// the copy's age when it was ([`Store::read_or_stale`]).
pub type MaybeStale = Option<(Versioned, Option<Duration>)>;

/// Every key of a secret at one version.
#[derive(Debug, Clone)]
pub struct VersionedData {
    pub version: u64,
    pub data: BTreeMap<String, Secret>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the {store} store at {address} is unavailable: {reason}")]
    Unavailable {
        store: &'static str,
        address: String,
        reason: String,
    },
    #[error("the {store} store does not support {what}")]
    Unsupported { store: &'static str, what: String },
    #[error("{0}")]
    Invalid(String),
}

/// A dynamic credential to issue: a grant's `pki` or `dynamic` source.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct IssueRequest {
    /// The Vault path, e.g. `pki/issue/web` or `database/creds/billing`.
    pub path: String,
    pub kind: Dynamic,
    /// The grant's ttl, the lease period. A store issues the credential
    /// for twice this, so it outlives the lease that revokes it.
    pub ttl: Duration,
}

/// What renews or revokes an issued credential in its store. Not a secret:
/// acting on it takes the broker's own Vault token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuedHandle {
    /// A Vault lease (database credentials and other leased reads).
    Lease(String),
    /// A PKI certificate, revoked by its serial number.
    Certificate { mount: String, serial: String },
}

impl fmt::Display for IssuedHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IssuedHandle::Lease(id) => write!(f, "vault lease {id}"),
            IssuedHandle::Certificate { mount, serial } => {
                write!(f, "certificate {serial} of {mount}")
            }
        }
    }
}

/// A freshly issued credential.
#[derive(Debug)]
pub struct Issued {
    /// Every field the store answered, e.g. `certificate`, `private_key`,
    /// `issuing_ca`, or `username`, `password`.
    pub fields: BTreeMap<String, Secret>,
    pub handle: IssuedHandle,
    /// How long the store keeps it valid, from now.
    pub ttl: Duration,
    /// Whether [`Store::renew_issued`] can extend it.
    pub renewable: bool,
}

fn unsupported<'a, T: Send + 'a>(store: &'static str) -> BoxFuture<'a, Result<T, StoreError>> {
    Box::pin(async move {
        Err(StoreError::Unsupported {
            store,
            what: "dynamic secrets (pki and dynamic grants): run the broker with --store vault"
                .into(),
        })
    })
}

pub trait Store: Send + Sync + 'static {
    /// A short name for messages and health answers: "memory", "vault".
    fn name(&self) -> &'static str;

    /// The current version of one key; `None` when the path or key is absent.
    fn read(&self, path: &str, key: &str) -> BoxFuture<'_, Result<Option<Versioned>, StoreError>>;

    /// Every key of the current version (the admin API).
    fn read_all(&self, path: &str) -> BoxFuture<'_, Result<Option<VersionedData>, StoreError>>;

    /// Write a new version holding exactly `data`; returns the version.
    fn write(
        &self,
        path: &str,
        data: BTreeMap<String, Secret>,
    ) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Remove every version; false when nothing was there.
    fn delete(&self, path: &str) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Paths under `prefix`, sorted.
    fn list(&self, prefix: &str) -> BoxFuture<'_, Result<Vec<String>, StoreError>>;

    /// Like [`Store::read`], but a store that caches may answer from a copy
    /// no older than `max_age` (the broker passes a third of the grant's
    /// ttl, so a rotation still reaches the workload within one ttl).
    fn read_fresh(
        &self,
        path: &str,
        key: &str,
        _max_age: Duration,
    ) -> BoxFuture<'_, Result<Option<Versioned>, StoreError>> {
        self.read(path, key)
    }

    /// Like [`Store::read_fresh`], but when the store cannot be reached a
    /// store with bounded-stale copies (`[vault] max_stale`) may answer
    /// from one younger than its bound: then also the copy's age. Only a
    /// caller that audits the answer as stale and shortens its lease asks
    /// this way.
    fn read_or_stale(
        &self,
        path: &str,
        key: &str,
        max_age: Duration,
    ) -> BoxFuture<'_, Result<MaybeStale, StoreError>> {
        let read = self.read_fresh(path, key, max_age);
        Box::pin(async move { Ok(read.await?.map(|v| (v, None))) })
    }

    /// The oldest copy the store would serve while unreachable, if it
    /// keeps copies, and how many it has served since start.
    fn stale_window(&self) -> Option<(Duration, u64)> {
        None
    }

    /// (hits, misses) of the store's read cache, if it has one.
    fn cache_stats(&self) -> Option<(u64, u64)> {
        None
    }

    /// Issue a dynamic credential (a certificate, database credentials).
    fn issue(&self, _req: &IssueRequest) -> BoxFuture<'_, Result<Issued, StoreError>> {
        unsupported(self.name())
    }

    /// Extend a renewable credential by about `increment`; the lifetime
    /// the store granted (possibly shorter, at its max ttl).
    fn renew_issued(
        &self,
        _handle: &IssuedHandle,
        _increment: Duration,
    ) -> BoxFuture<'_, Result<Duration, StoreError>> {
        unsupported(self.name())
    }

    /// Revoke a credential in the store, so it stops working now.
    fn revoke_issued(&self, _handle: &IssuedHandle) -> BoxFuture<'_, Result<(), StoreError>> {
        unsupported(self.name())
    }
}

/// Why the broker's store did not open; nothing was served.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("--store vault without a [vault] configuration")]
    NoVault,
    #[error("--store file without a store directory and key")]
    NoFile,
    #[error("--store crypt without a [crypt] configuration")]
    NoCrypt,
    #[error(transparent)]
    Crypt(#[from] crypt::CryptError),
    #[error(transparent)]
    File(#[from] file::FileStoreError),
    #[error(transparent)]
    Vault(StoreError),
    #[error("no system randomness for the sealing key")]
    Random,
    #[error(
        "[vault] max_stale needs the store directory and key (--store-dir, --store-key-file): {0}"
    )]
    StaleCopies(file::FileStoreError),
}

/// Open the store the configuration names. Must run inside the runtime:
/// the Vault store starts its token keeper, the crypt store its watches.
pub fn open(cfg: &crate::config::BrokerConfig) -> Result<Arc<dyn Store>, OpenError> {
    use crate::config::StoreKind;
    Ok(match cfg.store {
        StoreKind::Vault => {
            let vault = cfg.vault.clone().ok_or(OpenError::NoVault)?;
            // The stale copies are opened (the key checked) before Vault is
            // asked anything: a broker restarted during an outage serves them.
            let copies = match (vault.max_stale, cfg.file_store.as_ref()) {
                (Some(max), Some(f)) => {
                    let copies =
                        stale::StaleCopies::open(f, max).map_err(OpenError::StaleCopies)?;
                    tracing::info!(dir = %f.dir.join(stale::DIR).display(), key_from = f.key_from, max_stale = ?max, "vault stale copies opened");
                    Some(Arc::new(copies))
                }
                (Some(_), None) => return Err(OpenError::NoFile),
                (None, _) => None,
            };
            let store = vault::VaultStore::with_copies(vault, copies).map_err(OpenError::Vault)?;
            // Renews the broker's token and logs in again when it is refused.
            store.spawn_token_keeper();
            store
        }
        StoreKind::File => {
            let f = cfg.file_store.as_ref().ok_or(OpenError::NoFile)?;
            let store = file::FileStore::open(f)?;
            tracing::info!(dir = %f.dir.display(), key_from = f.key_from, "file store opened");
            Arc::new(store)
        }
        StoreKind::Crypt => {
            let c = cfg.crypt.clone().ok_or(OpenError::NoCrypt)?;
            crypt::CryptStore::open(c)?
        }
        StoreKind::Memory => Arc::new(memory::MemoryStore::new().map_err(|_| OpenError::Random)?),
    })
}
