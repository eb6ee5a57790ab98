//! The Vault store's bounded-stale copies (`[vault] max_stale`): the KV v2
//! secrets the broker has read, kept sealed on disk so that an OpenBao
//! outage, or a broker restarted during one, does not stop new workloads.
//!
//! The copies are a [`FileStore`] of their own in `<store dir>/vault-copies`
//! (the same record format, key derivation, crash-safe append and checks
//! as `--store file`, under the same operator key), keeping one version
//! per path: Vault's, with the time Vault last confirmed it as a reserved
//! field (`\0fetched_at`, unix milliseconds) inside the sealed record.
//! A copy is rewritten when Vault answers a new version, and at most every
//! [`REWRITE_EVERY`] otherwise (so a copy on disk may look up to that much
//! older than it is, never younger); in memory the confirmation time of
//! this process is exact.
//!
//! Only when Vault is unreachable (connection failure, timeout, 429/5xx;
//! never a refusal or a 404) is a copy served, and only one younger than
//! `max_stale`; a 404, or a write or delete through the broker, removes
//! the copy. Dynamic credentials are never copied.
//!
//! Upkeep fails closed: a copy is marked unusable before it is rewritten or
//! removed, and the mark goes only when that succeeds; a copy whose write
//! or removal failed (disk full, I/O error, a field named like ours) is
//! never served until a later read from Vault keeps it again. The mark
//! lives in memory: a copy on disk is never younger than it says.
//! **Invariant:** no value, key name or path in clear on disk.

use super::file::{FileStore, FileStoreConfig, FileStoreError};
use super::{StoreError, Versioned, VersionedData};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use unbaked_api::Secret;

/// The copies' directory under the store directory.
pub const DIR: &str = "vault-copies";
/// The reserved field holding when Vault last confirmed a copy.
const AT: &str = "\0fetched_at";
/// A copy confirmed by Vault is rewritten (an fsync) at most this often
/// when its version has not changed.
pub const REWRITE_EVERY: Duration = Duration::from_secs(60);
/// A lease served from a stale copy lasts at most this long (or the
/// grant's ttl, if shorter), so the workload asks again soon.
pub const STALE_LEASE_TTL: Duration = Duration::from_secs(30);
/// After a failure to reach Vault, requests within this long go straight
/// to the copies instead of waiting out another failed attempt.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

struct Seen {
    version: u64,
    /// When Vault last answered this version (this process).
    confirmed: SystemTime,
    /// When the copy on disk was last written.
    written: Instant,
}

pub struct StaleCopies {
    copies: FileStore,
    max_stale: Duration,
    seen: Mutex<HashMap<String, Seen>>,
    served: AtomicU64,
    /// When Vault last failed to answer, unless it has answered since.
    down_since: Mutex<Option<Instant>>,
    /// Copies whose upkeep failed or is under way: never served.
    unusable: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for StaleCopies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaleCopies")
            .field("max_stale", &self.max_stale)
            .finish_non_exhaustive()
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl StaleCopies {
    /// Load the operator key and open (or create) the copies under
    /// `store.dir`. A wrong or missing key is refused with nothing changed
    /// on disk; Vault is not asked anything.
    pub fn open(store: &FileStoreConfig, max_stale: Duration) -> Result<Self, FileStoreError> {
        let key = super::key::load(&store.key_file, store.key_from)?;
        let copies = FileStore::open_with_key(&store.dir.join(DIR), key, store.key_from, 1)?;
        Ok(Self::with(copies, max_stale))
    }

    pub fn with(copies: FileStore, max_stale: Duration) -> Self {
        StaleCopies {
            copies,
            max_stale,
            seen: Mutex::new(HashMap::new()),
            served: AtomicU64::new(0),
            down_since: Mutex::new(None),
            unusable: Mutex::new(HashSet::new()),
        }
    }

    fn unusable(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.unusable.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run one upkeep of `path`'s copy with the copy marked unusable, and
    /// lift the mark only when it succeeded (a panic keeps it too).
    fn upkeep(
        &self,
        path: &str,
        f: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.unusable().insert(path.to_string());
        let done = f();
        match &done {
            Ok(()) => {
                self.unusable().remove(path);
            }
            Err(e) => {
                tracing::warn!(error = %e, "vault: a stale copy could not be kept up to date: it is not served until vault answers for it again")
            }
        }
        done
    }

    pub fn max_stale(&self) -> Duration {
        self.max_stale
    }

    /// Copies served since start.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Vault answered: note it; true when the copy on disk must be
    /// (re)written, which [`Self::keep`] does (blocking).
    pub fn confirmed(&self, path: &str, version: u64) -> bool {
        *self.down_since.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let now = SystemTime::now();
        if self.unusable().contains(path) {
            return true; // the last upkeep failed: write it again
        }
        let mut seen = self.seen();
        match seen.get_mut(path) {
            Some(s) if s.version == version && s.written.elapsed() < REWRITE_EVERY => {
                s.confirmed = now;
                false
            }
            _ => true,
        }
    }

    /// Write the copy of `path` Vault just answered. Blocking (fsync).
    /// On failure the copy is not served until a later keep succeeds.
    pub fn keep(&self, path: &str, d: &VersionedData) -> Result<(), StoreError> {
        self.upkeep(path, || self.write_copy(path, d))
    }

    fn write_copy(&self, path: &str, d: &VersionedData) -> Result<(), StoreError> {
        if d.data.keys().any(|k| k.starts_with('\0')) {
            // A field named like ours: not kept rather than misread, and
            // the older copy is not served either.
            return Err(StoreError::Invalid(format!(
                "{path} has a field whose name starts with NUL: no copy is kept"
            )));
        }
        let now = SystemTime::now();
        let mut data: BTreeMap<String, Secret> = d.data.clone();
        data.insert(
            AT.to_string(),
            Secret::from_slice(unix_ms(now).to_string().as_bytes()),
        );
        // The store keeps the highest version of a path: a lower one
        // (the secret deleted and made again in Vault) would be dropped
        // and the older copy served in an outage. Forget it first.
        if self
            .copies
            .current(path)
            .is_some_and(|kept| kept.version > d.version)
        {
            self.copies.remove(path)?;
        }
        self.copies.put_version(path, d.version, &data)?;
        self.seen().insert(
            path.to_string(),
            Seen {
                version: d.version,
                confirmed: now,
                written: Instant::now(),
            },
        );
        Ok(())
    }

    /// Whether a copy of `path` is kept (no I/O).
    pub fn has(&self, path: &str) -> bool {
        self.copies.current(path).is_some()
    }

    /// Vault says `path` is gone: so is its copy. Blocking. On failure the
    /// copy is not served until a later keep succeeds.
    pub fn forget(&self, path: &str) -> Result<(), StoreError> {
        self.seen().remove(path);
        self.upkeep(path, || self.copies.remove(path).map(|_| ()))
    }

    /// Vault could not be reached (just now).
    pub fn unreachable(&self) {
        *self.down_since.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Vault failed within [`RETRY_AFTER`] and has not answered since.
    pub fn recently_down(&self) -> bool {
        self.down_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t.elapsed() < RETRY_AFTER)
    }

    /// The copy of `key` of `path` and its age, if one is kept (whatever
    /// its age: the caller judges it against [`Self::max_stale`]).
    /// A copy whose upkeep failed is never returned.
    pub fn lookup(&self, path: &str, key: &str) -> Option<(Versioned, Duration)> {
        if self.unusable().contains(path) {
            tracing::warn!(
                key,
                "vault: the kept copy is not served: its last update failed"
            );
            return None;
        }
        let mut d = self.copies.current(path)?;
        let on_disk = d
            .data
            .remove(AT)
            .and_then(|s| {
                std::str::from_utf8(s.expose_secret())
                    .ok()?
                    .parse::<u64>()
                    .ok()
            })
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))?;
        let confirmed = match self.seen().get(path) {
            Some(s) if s.version == d.version => s.confirmed.max(on_disk),
            _ => on_disk,
        };
        // A confirmation in the future (a clock set back, a host booted
        // before NTP) says nothing about the copy's age: never fresh.
        let age = SystemTime::now()
            .duration_since(confirmed)
            .unwrap_or(Duration::MAX);
        let value = d.data.remove(key)?;
        Some((
            Versioned {
                version: d.version,
                value,
            },
            age,
        ))
    }

    /// One copy was served.
    pub fn note_served(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::key::StoreKey;

    fn data(version: u64, v: &[u8]) -> VersionedData {
        VersionedData {
            version,
            data: BTreeMap::from([("password".to_string(), Secret::from_slice(v))]),
        }
    }

    #[test]
    fn copies_survive_reopening_sealed_with_their_age_and_versions() {
        let dir = tempfile::tempdir().unwrap();
        let open = |b: u8| {
            FileStore::open_with_key(
                &dir.path().join(DIR),
                StoreKey::from_bytes([b; 32]),
                "test",
                1,
            )
        };
        let s = StaleCopies::with(open(7).unwrap(), Duration::from_secs(3600));
        assert!(s.confirmed("secret/app/db", 3));
        s.keep("secret/app/db", &data(3, b"stale-copy-marker-3"))
            .unwrap();
        assert!(!s.confirmed("secret/app/db", 3), "unchanged: not rewritten");
        assert!(s.confirmed("secret/app/db", 4), "a new version is");
        s.keep("secret/app/db", &data(4, b"stale-copy-marker-4"))
            .unwrap();
        let (v, age) = s.lookup("secret/app/db", "password").unwrap();
        assert_eq!(
            (v.version, v.value.expose_secret()),
            (4, &b"stale-copy-marker-4"[..])
        );
        assert!(age < Duration::from_secs(60));
        assert!(s.lookup("secret/app/db", "other").is_none());
        drop(s);

        // Nothing in clear: values, key names, paths.
        let bytes = std::fs::read(dir.path().join(DIR).join(super::super::file::LOG)).unwrap();
        for needle in [
            &b"stale-copy-marker"[..],
            b"password",
            b"app/db",
            b"fetched_at",
        ] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} in clear",
                String::from_utf8_lossy(needle)
            );
        }

        // A wrong key is refused, and changes nothing.
        assert!(matches!(open(8), Err(FileStoreError::WrongKey { .. })));
        let after = std::fs::read(dir.path().join(DIR).join(super::super::file::LOG)).unwrap();
        assert_eq!(bytes, after);

        // Reopened: only the latest version, with its age from disk.
        let s = StaleCopies::with(open(7).unwrap(), Duration::from_secs(3600));
        let (v, _) = s.lookup("secret/app/db", "password").unwrap();
        assert_eq!(v.version, 4);
        s.forget("secret/app/db").unwrap();
        assert!(s.lookup("secret/app/db", "password").is_none());
    }

    /// A tmpfs of `size` for the copies (the unit tests run as root), so a
    /// write can fail for want of space.
    struct Small(tempfile::TempDir);

    impl Small {
        fn mount(size: &str) -> Small {
            let d = tempfile::tempdir().unwrap();
            nix::mount::mount(
                Some("tmpfs"),
                d.path(),
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some(format!("size={size}").as_str()),
            )
            .expect("mount a small tmpfs (the unit tests run as root)");
            Small(d)
        }
    }

    impl Drop for Small {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
        }
    }

    /// Fill the file system under `dir` to the last byte.
    fn fill(dir: &std::path::Path) -> std::path::PathBuf {
        use std::io::Write;
        let p = dir.join("ballast");
        let mut f = std::fs::File::create(&p).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        while f.write_all(&[0]).is_ok() {}
        let _ = f.sync_all();
        p
    }

    /// Keep a padding copy sized so that the log ends one byte short of a
    /// page: tmpfs allocates whole pages, so the next record needs a new
    /// one. (A record's size is its fixed framing plus its value.)
    fn pad_to_page_end(s: &StaleCopies, dir: &std::path::Path) {
        let log = || {
            std::fs::metadata(dir.join(DIR).join(super::super::file::LOG))
                .unwrap()
                .len()
        };
        let before = log();
        s.keep("pad", &data(1, b"p")).unwrap();
        let framing = log() - before - 1;
        let want = (4095 + 4096 - (log() + framing) % 4096) % 4096;
        let pad = vec![b'p'; usize::try_from(want).unwrap()];
        s.keep("pad", &data(1, &pad)).unwrap();
        assert_eq!(log() % 4096, 4095, "the padding missed");
    }

    #[test]
    fn a_copy_whose_upkeep_failed_is_never_served_until_refreshed() {
        let fs = Small::mount("256k");
        let copies = FileStore::open_with_key(
            &fs.0.path().join(DIR),
            StoreKey::from_bytes([9; 32]),
            "test",
            1,
        )
        .unwrap();
        let s = StaleCopies::with(copies, Duration::from_secs(3600));
        let path = "secret/app/db";
        s.keep(path, &data(1, b"upkeep-v1")).unwrap();
        assert_eq!(s.lookup(path, "password").unwrap().0.version, 1);

        // A new version does not fit: the write fails, and the older copy
        // still on disk is not served in its place.
        let big = vec![b'x'; 512 << 10];
        assert!(s.confirmed(path, 2));
        assert!(s.keep(path, &data(2, &big)).is_err());
        assert_eq!(
            s.copies.current(path).unwrap().version,
            1,
            "v1 still on disk"
        );
        assert!(
            s.lookup(path, "password").is_none(),
            "served after a failed write"
        );
        assert!(s.confirmed(path, 1), "a failed copy is written again");

        // A refresh that succeeds makes it servable again.
        s.keep(path, &data(3, b"upkeep-v3")).unwrap();
        let (v, _) = s.lookup(path, "password").unwrap();
        assert_eq!((v.version, v.value.expose_secret()), (3, &b"upkeep-v3"[..]));

        // Vault says it is gone, but the removal cannot be written (the
        // log's last page full, no page left): not served either.
        pad_to_page_end(&s, fs.0.path());
        let ballast = fill(fs.0.path());
        assert!(s.forget(path).is_err());
        assert!(s.copies.current(path).is_some(), "still on disk");
        assert!(
            s.lookup(path, "password").is_none(),
            "served after a failed removal"
        );

        // Control: space again, a successful refresh serves it.
        std::fs::remove_file(ballast).unwrap();
        assert!(s.confirmed(path, 3));
        s.keep(path, &data(3, b"upkeep-v3")).unwrap();
        assert_eq!(s.lookup(path, "password").unwrap().0.version, 3);

        // A field named like the reserved one: not kept, and the older
        // copy is not served in its place.
        let mut odd = data(4, b"upkeep-v4");
        odd.data.insert("\0x".into(), Secret::from_slice(b"y"));
        assert!(s.keep(path, &odd).is_err());
        assert!(s.lookup(path, "password").is_none());
    }
}
