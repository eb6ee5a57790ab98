//! The embedded store: secrets live only in this process's memory, each
//! value sealed with ChaCha20-Poly1305 under a key drawn at start-up, so a
//! heap dump or a stray read shows ciphertext, never a value.
//!
//! **Invariant:** plaintext exists only inside a [`Secret`] returned to the
//! caller; the sealing key never leaves [`Sealer`].

use super::{BoxFuture, Store, StoreError, Versioned, VersionedData};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use unbaked_api::Secret;
use zeroize::Zeroizing;

/// The per-process sealing key and a nonce counter (a counter, not random
/// nonces, so no nonce repeats under one key).
pub struct Sealer {
    key: LessSafeKey,
    counter: AtomicU64,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer")
    }
}

/// A sealed value: nonce then ciphertext and tag.
#[derive(Clone)]
pub struct Sealed(Vec<u8>);

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed({} bytes)", self.0.len())
    }
}

impl Sealer {
    pub fn new() -> Result<Sealer, ring::error::Unspecified> {
        let mut raw = Zeroizing::new([0u8; 32]);
        SystemRandom::new().fill(&mut raw[..])?;
        let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &raw[..])?);
        Ok(Sealer {
            key,
            counter: AtomicU64::new(0),
        })
    }

    /// `aad` binds the ciphertext to where it is stored, so a sealed value
    /// moved to another path or key does not open.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Sealed {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut nonce = [0u8; NONCE_LEN];
        nonce[4..].copy_from_slice(&n.to_be_bytes());
        let mut buf = Zeroizing::new(Vec::with_capacity(NONCE_LEN + plain.len() + 16));
        buf.extend_from_slice(plain);
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut *buf,
            )
            .expect("chacha20-poly1305 seals any length the store accepts");
        let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Sealed(out)
    }

    pub fn open(&self, aad: &[u8], sealed: &Sealed) -> Option<Secret> {
        let (nonce, ct) = sealed.0.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = Zeroizing::new(ct.to_vec());
        let len = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .ok()?
            .len();
        buf.truncate(len);
        Some(Secret::from(buf))
    }
}

struct Entry {
    version: u64,
    values: BTreeMap<String, Sealed>,
}

pub struct MemoryStore {
    sealer: Sealer,
    entries: RwLock<HashMap<String, Entry>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

pub(super) fn aad(path: &str, key: &str, version: u64) -> Vec<u8> {
    format!("{path}\0{key}\0{version}").into_bytes()
}

impl MemoryStore {
    pub fn new() -> Result<MemoryStore, ring::error::Unspecified> {
        Ok(MemoryStore {
            sealer: Sealer::new()?,
            entries: RwLock::new(HashMap::new()),
        })
    }

    fn read_sync(&self, path: &str, key: &str) -> Option<Versioned> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(path)?;
        let sealed = entry.values.get(key)?;
        let value = self.sealer.open(&aad(path, key, entry.version), sealed)?;
        Some(Versioned {
            version: entry.version,
            value,
        })
    }

    fn read_all_sync(&self, path: &str) -> Option<VersionedData> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(path)?;
        let data = entry
            .values
            .iter()
            .filter_map(|(k, s)| {
                Some((
                    k.clone(),
                    self.sealer.open(&aad(path, k, entry.version), s)?,
                ))
            })
            .collect();
        Some(VersionedData {
            version: entry.version,
            data,
        })
    }

    fn write_sync(&self, path: &str, data: BTreeMap<String, Secret>) -> u64 {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let version = entries.get(path).map_or(1, |e| e.version + 1);
        let values = data
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    self.sealer.seal(&aad(path, k, version), v.expose_secret()),
                )
            })
            .collect();
        entries.insert(path.to_string(), Entry { version, values });
        version
    }
}

impl Store for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn read(&self, path: &str, key: &str) -> BoxFuture<'_, Result<Option<Versioned>, StoreError>> {
        let r = self.read_sync(path, key);
        Box::pin(async move { Ok(r) })
    }

    fn read_all(&self, path: &str) -> BoxFuture<'_, Result<Option<VersionedData>, StoreError>> {
        let r = self.read_all_sync(path);
        Box::pin(async move { Ok(r) })
    }

    fn write(
        &self,
        path: &str,
        data: BTreeMap<String, Secret>,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        let r = self.write_sync(path, data);
        Box::pin(async move { Ok(r) })
    }

    fn delete(&self, path: &str) -> BoxFuture<'_, Result<bool, StoreError>> {
        let r = self
            .entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(path)
            .is_some();
        Box::pin(async move { Ok(r) })
    }

    fn list(&self, prefix: &str) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        let mut paths: Vec<String> = self
            .entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .filter(|p| p.starts_with(prefix))
            .cloned()
            .collect();
        paths.sort();
        Box::pin(async move { Ok(paths) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &[u8])]) -> BTreeMap<String, Secret> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Secret::from_slice(v)))
            .collect()
    }

    #[tokio::test]
    async fn versions_advance_and_values_come_back() {
        let store = MemoryStore::new().unwrap();
        assert_eq!(
            store
                .write("app/db", data(&[("password", b"one")]))
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            store
                .write("app/db", data(&[("password", b"two")]))
                .await
                .unwrap(),
            2
        );
        let v = store.read("app/db", "password").await.unwrap().unwrap();
        assert_eq!((v.version, v.value.expose_secret()), (2, &b"two"[..]));
        assert!(store.read("app/db", "user").await.unwrap().is_none());
        assert_eq!(
            store.list("app/").await.unwrap(),
            vec!["app/db".to_string()]
        );
        assert!(store.delete("app/db").await.unwrap());
        assert!(store.read("app/db", "password").await.unwrap().is_none());
    }

    #[test]
    fn values_are_sealed_at_rest_and_bound_to_their_place() {
        let store = MemoryStore::new().unwrap();
        store.write_sync("a", data(&[("k", b"plaintext-marker")]));
        let entries = store.entries.read().unwrap();
        let sealed = entries["a"].values["k"].clone();
        assert!(!sealed.0.windows(16).any(|w| w == b"plaintext-marker"));
        assert!(store.sealer.open(&aad("b", "k", 1), &sealed).is_none());
        assert!(store.sealer.open(&aad("a", "k", 1), &sealed).is_some());
    }
}
