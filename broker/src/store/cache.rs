//! Coalescing and a short, sealed cache in front of a remote store.
//!
//! Concurrent reads of one path share one fetch (single flight): a thousand
//! sidecars starting at once cost one Vault read. The answer is kept, each
//! value sealed with the memory store's [`Sealer`], for at most the age a
//! caller accepts: the broker asks for a third of the grant's ttl, capped at
//! the store's ceiling, so a rotation reaches a workload within one ttl
//! (renewal at two thirds of it, plus at most one third of cache age).
//!
//! **Invariant:** plaintext exists only in the [`Secret`]s handed out;
//! failures are shared by the callers waiting on that fetch, never cached.

use super::memory::{Sealed, Sealer};
use super::{StoreError, Versioned, VersionedData};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;
use unbaked_api::Secret;

/// Above this many paths, stale entries are dropped when a new one is added.
const SWEEP_ABOVE: usize = 1024;

/// One secret as fetched: every key sealed, bound to path, key and version.
#[derive(Debug)]
pub struct Entry {
    pub version: u64,
    values: BTreeMap<String, Sealed>,
}

#[derive(Debug)]
struct Fetched {
    at: Instant,
    outcome: Result<Option<Arc<Entry>>, StoreError>,
}

type Slot = Arc<OnceCell<Fetched>>;

pub struct Cache {
    sealer: Sealer,
    ceiling: Duration,
    slots: Mutex<HashMap<String, Slot>>,
    /// Reads asked of the cache, and the store fetches they cost.
    reads: std::sync::atomic::AtomicU64,
    fetches: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("ceiling", &self.ceiling)
            .finish_non_exhaustive()
    }
}

fn aad(path: &str, key: &str, version: u64) -> Vec<u8> {
    format!("cache\0{path}\0{key}\0{version}").into_bytes()
}

impl Cache {
    /// `ceiling`: the oldest copy ever served, whatever a caller accepts.
    pub fn new(ceiling: Duration) -> Result<Cache, ring::error::Unspecified> {
        Ok(Cache {
            sealer: Sealer::new()?,
            ceiling,
            slots: Mutex::new(HashMap::new()),
            reads: Default::default(),
            fetches: Default::default(),
        })
    }

    /// (hits, misses) since start: reads answered from a copy or a shared
    /// flight, and reads that went to the store.
    pub fn stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let fetches = self.fetches.load(Relaxed);
        (self.reads.load(Relaxed).saturating_sub(fetches), fetches)
    }

    /// The secret at `path`, from a copy at most `max_age` old, or from one
    /// `fetch` shared with every concurrent caller of the same path.
    pub async fn get<F, Fut>(
        &self,
        path: &str,
        max_age: Duration,
        fetch: F,
    ) -> Result<Option<Arc<Entry>>, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<VersionedData>, StoreError>>,
    {
        let max_age = max_age.min(self.ceiling);
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let slot = {
            let mut slots = self.lock();
            let usable = slots.get(path).filter(|s| match s.get() {
                None => true, // in flight: join it
                Some(f) => f.outcome.is_ok() && f.at.elapsed() <= max_age,
            });
            match usable {
                Some(s) => s.clone(),
                None => {
                    if slots.len() >= SWEEP_ABOVE {
                        let ceiling = self.ceiling;
                        slots.retain(|_, s| s.get().is_none_or(|f| f.at.elapsed() <= ceiling));
                    }
                    let s: Slot = Arc::default();
                    slots.insert(path.to_string(), s.clone());
                    s
                }
            }
        };
        let fetched = slot
            .get_or_init(|| async {
                self.fetches
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let outcome = fetch()
                    .await
                    .map(|found| found.map(|d| Arc::new(self.seal(path, d))));
                Fetched {
                    at: Instant::now(),
                    outcome,
                }
            })
            .await;
        fetched.outcome.clone()
    }

    /// Forget `path` (after a write through the broker).
    pub fn invalidate(&self, path: &str) {
        self.lock().remove(path);
    }

    /// One key of a cached entry.
    pub fn open(&self, path: &str, entry: &Entry, key: &str) -> Option<Versioned> {
        let sealed = entry.values.get(key)?;
        let value = self.sealer.open(&aad(path, key, entry.version), sealed)?;
        Some(Versioned {
            version: entry.version,
            value,
        })
    }

    /// Every key of a cached entry.
    pub fn open_all(&self, path: &str, entry: &Entry) -> VersionedData {
        let data: BTreeMap<String, Secret> = entry
            .values
            .keys()
            .filter_map(|k| Some((k.clone(), self.open(path, entry, k)?.value)))
            .collect();
        VersionedData {
            version: entry.version,
            data,
        }
    }

    fn seal(&self, path: &str, d: VersionedData) -> Entry {
        let values = d
            .data
            .iter()
            .map(|(k, v)| {
                let sealed = self
                    .sealer
                    .seal(&aad(path, k, d.version), v.expose_secret());
                (k.clone(), sealed)
            })
            .collect();
        Entry {
            version: d.version,
            values,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn data(version: u64, value: &[u8]) -> VersionedData {
        VersionedData {
            version,
            data: BTreeMap::from([("k".to_string(), Secret::from_slice(value))]),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reads_share_one_fetch_and_copies_expire() {
        let cache = Arc::new(Cache::new(Duration::from_secs(60)).unwrap());
        let fetches = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let (cache, fetches, gate) = (cache.clone(), fetches.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                let e = cache
                    .get("app/db", Duration::from_secs(60), || async {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        gate.notified().await;
                        Ok(Some(data(3, b"v3")))
                    })
                    .await
                    .unwrap()
                    .unwrap();
                cache.open("app/db", &e, "k").unwrap()
            }));
        }
        // Let every task join the flight, then release the one fetch.
        while fetches.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        gate.notify_one();
        for t in tasks {
            let v = t.await.unwrap();
            assert_eq!((v.version, v.value.expose_secret()), (3, &b"v3"[..]));
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);

        // A caller that accepts no age fetches anew; a later one reuses that.
        let fresh = cache
            .get("app/db", Duration::ZERO, || async {
                Ok(Some(data(4, b"v4")))
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(fresh.version, 4);
        let again = cache
            .get("app/db", Duration::from_secs(1), || async {
                panic!("cached")
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.version, 4);
    }

    #[tokio::test]
    async fn failures_are_not_kept_and_values_are_sealed() {
        let cache = Cache::new(Duration::from_secs(60)).unwrap();
        let err = cache
            .get("p", Duration::from_secs(60), || async {
                Err(StoreError::Invalid("down".into()))
            })
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "down");
        let e = cache
            .get("p", Duration::from_secs(60), || async {
                Ok(Some(data(1, b"plaintext-marker")))
            })
            .await
            .unwrap()
            .unwrap();
        assert!(!format!("{e:?}").contains("plaintext-marker"));
        assert!(cache.open("other", &e, "k").is_none(), "bound to its path");
        assert_eq!(
            cache.open_all("p", &e).data["k"].expose_secret(),
            b"plaintext-marker"
        );
        cache.invalidate("p");
        let missing = cache
            .get("p", Duration::from_secs(60), || async { Ok(None) })
            .await
            .unwrap();
        assert!(missing.is_none());
    }
}
