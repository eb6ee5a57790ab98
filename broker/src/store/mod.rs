//! Secret stores behind one trait. Adding a backend touches this folder.
//!
//! **Invariant:** a store hands out values only as [`Secret`]; what it keeps
//! at rest in process memory is sealed.

pub mod memory;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use unbaked_api::Secret;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One key of a secret at one version.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub version: u64,
    pub value: Secret,
}

/// Every key of a secret at one version.
#[derive(Debug, Clone)]
pub struct VersionedData {
    pub version: u64,
    pub data: BTreeMap<String, Secret>,
}

#[derive(Debug, thiserror::Error)]
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
}
