//! The persistent embedded store (`--store file`): one append-only log of
//! sealed records in a directory only the broker may enter.
//!
//! ```text
//! store.log  = header record*
//! header     = "UNBKSTOR" format:u32le store_id:[16] nonce:[12] tag:[16]
//! record     = len:u32le nonce:[12] ciphertext tag:[16]      (len = 12 + ct + 16)
//! plaintext  = op:u8 path version:u64le (key value)*         (strings u32le-length-prefixed)
//! ```
//!
//! Each record is sealed with ChaCha20-Poly1305 under a key derived
//! (HKDF-SHA256, salt `store_id`) from the operator's key: the path, the
//! key names, the version and the values are all inside the ciphertext,
//! and the associated data binds the record to its file and its place in
//! it (`store_id`, sequence number), so a record moved, dropped from the
//! middle or replayed does not open. The header's tag (an empty message
//! under the same key) tells a wrong key from damage before anything is
//! read or written. Nonces are random (96 bits); every compaction starts a
//! new `store_id`, so a derived key seals at most the writes between two
//! compactions.
//!
//! Crash safety: a write is acknowledged only after its record is appended
//! and `fdatasync`ed, one record at a time under one lock, so a crash can
//! leave at most the last record torn. On open, a torn last record (short,
//! or failing its tag with nothing but zeros after it) is cut off: it was
//! never acknowledged. A record that fails in the middle is damage: the
//! store refuses to open and changes nothing. Compaction writes a complete
//! new log beside the old one, syncs it and renames it over (then syncs the
//! directory): at every moment one of the two is whole.
//!
//! Why not redb (or sled, sqlite): the access pattern is tiny (a few
//! thousand small records, all read at start into memory, sealed), writes
//! are rare, and every byte on disk must be ciphertext, paths included.
//! A B-tree crate would add a dependency and its own file format for what
//! is an append and an fsync, and its checksums would not replace the AEAD
//! tag (which detects tampering, not only tearing). This format adds no
//! dependency to the static binary.
//!
//! In memory, values are kept like [`super::memory`]'s: each sealed under a
//! per-process key with its path, key and version as associated data.
//!
//! **Invariant:** no byte of a value, a key name or a path is written to
//! the directory in clear; the operator key is never written at all.

use super::key::{self, KeyError, StoreKey};
use super::memory::{aad, Sealed, Sealer};
use super::{BoxFuture, Store, StoreError, Versioned, VersionedData};
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::fstat;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use unbaked_api::Secret;
use zeroize::Zeroizing;

pub const DEFAULT_DIR: &str = "/var/lib/unbaked/store";
/// The log's file name in the store directory.
pub const LOG: &str = "store.log";
/// A log being written (creation, compaction) before its rename.
const LOG_NEW: &str = "store.log.new";
const MAGIC: &[u8; 8] = b"UNBKSTOR";
/// The format this build writes and reads; a newer one is refused.
pub const FORMAT: u32 = 1;
const ID_LEN: usize = 16;
const TAG_LEN: usize = 16;
const HEADER_PLAIN: usize = MAGIC.len() + 4 + ID_LEN;
const HEADER_LEN: usize = HEADER_PLAIN + NONCE_LEN + TAG_LEN;
/// A request body is at most 1 MiB: a longer length field is damage (and
/// a longer record is never written).
const MAX_RECORD: usize = 8 << 20;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
/// The last record of an export: how many came before it, so an export
/// cut at a record boundary is still known to be cut.
const OP_END: u8 = 3;
/// Compact when dead records outweigh live ones and this much is dead.
const COMPACT_MIN_DEAD: u64 = 1 << 20;

/// `--store file`: where, under which key, how many versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStoreConfig {
    pub dir: PathBuf,
    pub key_file: PathBuf,
    /// Where `key_file` came from, for messages (`--store-key-file`, ...).
    pub key_from: &'static str,
    /// Versions kept per path; 0 keeps every version until the path is removed.
    pub max_versions: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum FileStoreError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("the store directory {} {reason}", .dir.display())]
    Dir { dir: PathBuf, reason: String },
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another broker uses the store in {}: one store directory serves one broker (stop the other one first)", .dir.display())]
    Locked { dir: PathBuf },
    #[error("{} is not an unbaked store log: move it away or point --store-dir at another directory; nothing was changed", .path.display())]
    NotAStore { path: PathBuf },
    #[error("{} has format version {found}, and this unbaked reads version {FORMAT}: run the unbaked that wrote it, or a newer one; nothing was changed", .path.display())]
    Format { path: PathBuf, found: u32 },
    #[error("the store key (from {from}) does not open {}: the store was sealed with another key; give the key it was created with; nothing was changed", .path.display())]
    WrongKey { path: PathBuf, from: &'static str },
    #[error("{} is damaged at byte {offset} ({reason}): restore it from a backup; nothing was changed", .path.display())]
    Damaged {
        path: PathBuf,
        offset: u64,
        reason: &'static str,
    },
}

/// The on-disk sealing key of one log.
struct DiskKey {
    key: LessSafeKey,
    store_id: [u8; ID_LEN],
}

impl DiskKey {
    fn derive(master: &StoreKey, store_id: [u8; ID_LEN]) -> DiskKey {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &store_id).extract(master.bytes());
        let okm = prk
            .expand(&[b"unbaked file store v1"], &CHACHA20_POLY1305)
            .expect("a 32-byte expansion is within HKDF's limit");
        DiskKey {
            key: LessSafeKey::new(UnboundKey::from(okm)),
            store_id,
        }
    }

    fn record_aad(&self, seq: u64) -> [u8; 8 + ID_LEN + 8] {
        let mut a = [0u8; 8 + ID_LEN + 8];
        a[..8].copy_from_slice(b"UNBKREC1");
        a[8..8 + ID_LEN].copy_from_slice(&self.store_id);
        a[8 + ID_LEN..].copy_from_slice(&seq.to_le_bytes());
        a
    }

    fn header_plain(&self) -> [u8; HEADER_PLAIN] {
        let mut h = [0u8; HEADER_PLAIN];
        h[..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&FORMAT.to_le_bytes());
        h[12..].copy_from_slice(&self.store_id);
        h
    }

    /// nonce || ciphertext || tag of `plain` under `aad`.
    fn seal(&self, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| StoreError::Invalid("no system randomness for a nonce".into()))?;
        let mut buf = Zeroizing::new(Vec::with_capacity(plain.len() + TAG_LEN));
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
        Ok(out)
    }

    fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = Zeroizing::new(ct.to_vec());
        let len = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .ok()?
            .len();
        buf.truncate(len);
        Some(buf)
    }

    fn header(&self) -> Result<Vec<u8>, StoreError> {
        let plain = self.header_plain();
        let mut h = plain.to_vec();
        h.extend_from_slice(&self.seal(&plain, &[])?);
        Ok(h)
    }

    /// The framed record number `seq`; one over [`MAX_RECORD`] is refused
    /// (replay would read it as damage and the store would not open).
    fn frame(&self, seq: u64, plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        if plain.len() + NONCE_LEN + TAG_LEN > MAX_RECORD {
            return Err(StoreError::Invalid(format!(
                "a record of {} bytes is over the store's limit of {MAX_RECORD}: not written, the previous one stays",
                plain.len()
            )));
        }
        let body = self.seal(&self.record_aad(seq), plain)?;
        let mut f = Vec::with_capacity(4 + body.len());
        f.extend_from_slice(&(body.len() as u32).to_le_bytes());
        f.extend_from_slice(&body);
        Ok(f)
    }
}

/// One operation of the log, decoded.
enum Op {
    Put {
        path: String,
        version: u64,
        data: Vec<(String, Secret)>,
    },
    Delete {
        path: String,
    },
    End {
        records: u64,
    },
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s);
}

fn encode_put<'a>(
    path: &str,
    version: u64,
    data: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::new());
    out.push(OP_PUT);
    put_str(&mut out, path.as_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    for (k, v) in data {
        put_str(&mut out, k.as_bytes());
        put_str(&mut out, v);
    }
    out
}

fn encode_delete(path: &str) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::new());
    out.push(OP_DELETE);
    put_str(&mut out, path.as_bytes());
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
}

fn decode(plain: &[u8]) -> Option<Op> {
    let mut r = Reader(plain);
    match r.take(1)?[0] {
        OP_PUT => {
            let path = r.string()?;
            let version = r.u64()?;
            let mut data = Vec::new();
            while !r.0.is_empty() {
                let key = r.string()?;
                let value = Secret::from_slice(r.bytes()?);
                data.push((key, value));
            }
            Some(Op::Put {
                path,
                version,
                data,
            })
        }
        OP_DELETE => {
            let path = r.string()?;
            r.0.is_empty().then_some(Op::Delete { path })
        }
        OP_END => {
            let records = r.u64()?;
            r.0.is_empty().then_some(Op::End { records })
        }
        _ => None,
    }
}

struct Version {
    values: BTreeMap<String, Sealed>,
    /// Its record's size on disk, for the compaction arithmetic.
    frame_len: u64,
}

#[derive(Default)]
struct Entry {
    versions: BTreeMap<u64, Version>,
}

/// The paths, every kept version, sealed in memory.
#[derive(Default)]
struct Index {
    paths: HashMap<String, Entry>,
}

impl Index {
    /// Apply a put; returns the bytes of records retention made dead.
    fn put(&mut self, path: &str, version: u64, v: Version, max_versions: u32) -> u64 {
        let entry = self.paths.entry(path.to_string()).or_default();
        // A version written again (a stale copy refreshed) replaces its record.
        let mut dead = entry
            .versions
            .insert(version, v)
            .map_or(0, |old| old.frame_len);
        while max_versions > 0 && entry.versions.len() > max_versions as usize {
            if let Some((_, old)) = entry.versions.pop_first() {
                dead += old.frame_len;
            }
        }
        dead
    }

    /// Remove a path; the bytes of its records, now dead.
    fn delete(&mut self, path: &str) -> Option<u64> {
        self.paths
            .remove(path)
            .map(|e| e.versions.values().map(|v| v.frame_len).sum())
    }

    fn live_bytes(&self) -> u64 {
        self.paths
            .values()
            .flat_map(|e| e.versions.values())
            .map(|v| v.frame_len)
            .sum()
    }

    fn current(&self, path: &str) -> Option<(u64, &Version)> {
        let (n, v) = self.paths.get(path)?.versions.last_key_value()?;
        Some((*n, v))
    }
}

/// The append side, one writer at a time.
struct Log {
    file: File,
    len: u64,
    /// The next record's sequence number.
    seq: u64,
    disk: DiskKey,
    dead: u64,
    /// A write failed and could not be cut back, or a compaction's rename
    /// may not be durable: no more writes until a restart re-reads the log.
    broken: Option<String>,
}

struct Inner {
    dir: PathBuf,
    master: StoreKey,
    max_versions: u32,
    sealer: Sealer,
    index: RwLock<Index>,
    log: Mutex<Log>,
    /// Held for the broker's lifetime: one broker per directory.
    _lock: Flock<File>,
}

pub struct FileStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> FileStoreError + 'a {
    move |source| FileStoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn nofollow() -> i32 {
    (OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits()
}

/// The directory exists (created 0700 if not), is a directory owned by the
/// broker's euid, and nobody else may enter it.
fn open_dir(dir: &Path) -> Result<File, FileStoreError> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("create the store directory", dir))?;
        // The new entry itself must survive a power cut, or so would not
        // the first acknowledged write.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent).map_err(io("sync", parent))?;
        }
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nofollow() | OFlag::O_DIRECTORY.bits())
        .open(dir)
        .map_err(io("open the store directory", dir))?;
    let st = fstat(&f).map_err(|e| io("inspect", dir)(e.into()))?;
    let euid = nix::unistd::geteuid().as_raw();
    let bad = |reason: String| FileStoreError::Dir {
        dir: dir.into(),
        reason,
    };
    if st.st_uid != euid {
        return Err(bad(format!(
            "is owned by uid {}, not the broker's uid {euid}: chown {euid} {}",
            st.st_uid,
            dir.display()
        )));
    }
    if st.st_mode & 0o077 != 0 {
        return Err(bad(format!(
            "may be entered by group or others (mode {:04o}): chmod 0700 {}",
            st.st_mode & 0o7777,
            dir.display()
        )));
    }
    Ok(f)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What [`replay`] found.
struct Replayed {
    index: Index,
    seq: u64,
    /// Where the whole records end; a torn tail after it is cut.
    end: u64,
    /// The sequence number of the last end-of-export record, and what it said.
    export_end: Option<(u64, u64)>,
}

/// An existing log: its header checked against the key, replayed into an
/// index; only then (the key known good) a torn tail cut and a leftover
/// compaction file removed.
fn reopen_log(
    mut file: std::fs::File,
    path: &Path,
    new: &Path,
    master: &StoreKey,
    key_from: &'static str,
    sealer: &Sealer,
    max_versions: u32,
) -> Result<(Log, Index), FileStoreError> {
    let st = fstat(&file).map_err(|e| io("inspect", path)(e.into()))?;
    if st.st_mode & libc_s_ifmt() != libc_s_ifreg() {
        return Err(FileStoreError::NotAStore { path: path.into() });
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(io("read the store log", path))?;
    let disk = check_header(&bytes, master, path, key_from)?;
    let r = replay(&bytes, &disk, sealer, max_versions, path)?;
    // Past this point the key is known good: clean up.
    if r.end < bytes.len() as u64 {
        tracing::warn!(
            log = %path.display(),
            bytes = bytes.len() as u64 - r.end,
            "cutting off a torn last record: a write that was never acknowledged"
        );
        file.set_len(r.end)
            .and_then(|()| file.sync_all())
            .map_err(io("cut the torn tail of", path))?;
    }
    let _ = std::fs::remove_file(new);
    let dead = (r.end - HEADER_LEN as u64).saturating_sub(r.index.live_bytes());
    let log = Log {
        file,
        len: r.end,
        seq: r.seq,
        disk,
        dead,
        broken: None,
    };
    Ok((log, r.index))
}

/// A new log: a fresh id, its header written and synced.
fn create_log(dir: &Path, path: &Path, master: &StoreKey) -> Result<Log, FileStoreError> {
    let disk = DiskKey::derive(master, new_id().map_err(io("create", path))?);
    let header = disk
        .header()
        .map_err(|e| io("create", path)(std::io::Error::other(e.to_string())))?;
    let file = write_new_log(dir, &[&header]).map_err(|e| match e {
        NewLogError::Before(e) | NewLogError::After(e) => io("create the store log", path)(e),
    })?;
    Ok(Log {
        file,
        len: header.len() as u64,
        seq: 0,
        disk,
        dead: 0,
        broken: None,
    })
}

impl FileStore {
    /// Load the key, then open (or create) the store. Refusals change
    /// nothing on disk: the key is checked against the log's header before
    /// anything is written, a torn tail cut or a leftover removed.
    pub fn open(cfg: &FileStoreConfig) -> Result<FileStore, FileStoreError> {
        let master = key::load(&cfg.key_file, cfg.key_from)?;
        Self::open_with_key(&cfg.dir, master, cfg.key_from, cfg.max_versions)
    }

    pub fn open_with_key(
        dir: &Path,
        master: StoreKey,
        key_from: &'static str,
        max_versions: u32,
    ) -> Result<FileStore, FileStoreError> {
        let dir_file = open_dir(dir)?;
        let lock = Flock::lock(dir_file, FlockArg::LockExclusiveNonblock)
            .map_err(|_| FileStoreError::Locked { dir: dir.into() })?;
        let path = dir.join(LOG);
        let new = dir.join(LOG_NEW);
        let sealer = Sealer::new().map_err(|_| FileStoreError::Io {
            action: "draw the in-memory sealing key for",
            path: dir.into(),
            source: std::io::Error::other("no system randomness"),
        })?;
        let (log, index) = match std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .custom_flags(nofollow())
            .open(&path)
        {
            Ok(file) => reopen_log(file, &path, &new, &master, key_from, &sealer, max_versions)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = std::fs::remove_file(&new);
                (create_log(dir, &path, &master)?, Index::default())
            }
            Err(e) => return Err(io("open the store log", &path)(e)),
        };
        Ok(FileStore {
            inner: Arc::new(Inner {
                dir: dir.into(),
                master,
                max_versions,
                sealer,
                index: RwLock::new(index),
                log: Mutex::new(log),
                _lock: lock,
            }),
        })
    }

    /// Write `data` as version `version` of `path`, replacing a kept copy
    /// of the same version; acknowledged once synced. The Vault store's
    /// stale copies keep Vault's version numbers this way. Blocking.
    pub fn put_version(
        &self,
        path: &str,
        version: u64,
        data: &BTreeMap<String, Secret>,
    ) -> Result<(), StoreError> {
        self.inner.put_sync(path, Some(version), data).map(|_| ())
    }

    /// The current version of `path`, every key. Does no I/O.
    pub fn current(&self, path: &str) -> Option<VersionedData> {
        self.inner.read_all_sync(path)
    }

    /// Remove every version of `path`; false when nothing was there.
    /// Blocking (a record is appended and synced).
    pub fn remove(&self, path: &str) -> Result<bool, StoreError> {
        self.inner.delete_sync(path)
    }

    /// Every kept version of `path`, oldest first (export, tests).
    pub fn versions(&self, path: &str) -> Vec<VersionedData> {
        let index = self.inner.index.read().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = index.paths.get(path) else {
            return Vec::new();
        };
        entry
            .versions
            .iter()
            .map(|(n, v)| VersionedData {
                version: *n,
                data: self.inner.open_all(path, *n, v),
            })
            .collect()
    }
}

fn libc_s_ifmt() -> u32 {
    nix::sys::stat::SFlag::S_IFMT.bits()
}
fn libc_s_ifreg() -> u32 {
    nix::sys::stat::SFlag::S_IFREG.bits()
}

fn new_id() -> std::io::Result<[u8; ID_LEN]> {
    let mut id = [0u8; ID_LEN];
    SystemRandom::new()
        .fill(&mut id)
        .map_err(|_| std::io::Error::other("no system randomness"))?;
    Ok(id)
}

/// Why [`write_new_log`] failed: before the rename (the old log is intact
/// and in use) or after it (the rename may not be durable).
enum NewLogError {
    Before(std::io::Error),
    After(std::io::Error),
}

/// `LOG_NEW` with these chunks, synced, renamed over `LOG`, the directory
/// synced; the returned handle appends to it.
fn write_new_log(dir: &Path, chunks: &[&[u8]]) -> Result<File, NewLogError> {
    let new = dir.join(LOG_NEW);
    let _ = std::fs::remove_file(&new);
    let written = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nofollow())
        .open(&new)
        .and_then(|mut f| {
            chunks.iter().try_for_each(|c| f.write_all(c))?;
            f.sync_all()?;
            std::fs::rename(&new, dir.join(LOG))?;
            Ok(f)
        });
    match written {
        Err(e) => {
            let _ = std::fs::remove_file(&new);
            Err(NewLogError::Before(e))
        }
        Ok(f) => sync_dir(dir).map(|()| f).map_err(NewLogError::After),
    }
}

fn check_header(
    bytes: &[u8],
    master: &StoreKey,
    path: &Path,
    key_from: &'static str,
) -> Result<DiskKey, FileStoreError> {
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
        return Err(FileStoreError::NotAStore { path: path.into() });
    }
    let found = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if found != FORMAT {
        return Err(FileStoreError::Format {
            path: path.into(),
            found,
        });
    }
    let mut id = [0u8; ID_LEN];
    id.copy_from_slice(&bytes[12..HEADER_PLAIN]);
    let disk = DiskKey::derive(master, id);
    match disk.open(&bytes[..HEADER_PLAIN], &bytes[HEADER_PLAIN..HEADER_LEN]) {
        Some(_) => Ok(disk),
        None => Err(FileStoreError::WrongKey {
            path: path.into(),
            from: key_from,
        }),
    }
}

/// Read every record after the header into an index.
fn replay(
    bytes: &[u8],
    disk: &DiskKey,
    sealer: &Sealer,
    max_versions: u32,
    path: &Path,
) -> Result<Replayed, FileStoreError> {
    let mut index = Index::default();
    let mut off = HEADER_LEN;
    let mut seq = 0u64;
    let mut export_end = None;
    let damaged = |offset: usize, reason| FileStoreError::Damaged {
        path: path.into(),
        offset: offset as u64,
        reason,
    };
    while off < bytes.len() {
        let rest = &bytes[off..];
        let torn = Replayed {
            index: Index::default(),
            seq,
            end: off as u64,
            export_end,
        };
        if rest.len() < 4 {
            return Ok(Replayed { index, ..torn });
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if !(NONCE_LEN + TAG_LEN..=MAX_RECORD).contains(&len) {
            // A power loss can leave zeros where the last record was going.
            if rest.iter().all(|&b| b == 0) {
                return Ok(Replayed { index, ..torn });
            }
            return Err(damaged(off, "a record length out of range"));
        }
        if rest.len() < 4 + len {
            return Ok(Replayed { index, ..torn });
        }
        let Some(plain) = disk.open(&disk.record_aad(seq), &rest[4..4 + len]) else {
            if rest[4 + len..].iter().all(|&b| b == 0) {
                return Ok(Replayed { index, ..torn });
            }
            return Err(damaged(off, "a record fails its authentication tag"));
        };
        let frame_len = (4 + len) as u64;
        match decode(&plain) {
            Some(Op::Put {
                path,
                version,
                data,
            }) => {
                let values = data
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            sealer.seal(&aad(&path, k, version), v.expose_secret()),
                        )
                    })
                    .collect();
                index.put(&path, version, Version { values, frame_len }, max_versions);
            }
            Some(Op::Delete { path }) => {
                index.delete(&path);
            }
            // Meaningful to an import only; a store log copied from an
            // export carries one, harmlessly.
            Some(Op::End { records }) => export_end = Some((seq, records)),
            None => return Err(damaged(off, "a record this unbaked cannot decode")),
        }
        off += 4 + len;
        seq += 1;
    }
    Ok(Replayed {
        index,
        seq,
        end: off as u64,
        export_end,
    })
}

/// One version of one path, as an export carries it.
pub struct Exported {
    pub path: String,
    pub version: u64,
    pub data: BTreeMap<String, Secret>,
}

impl std::fmt::Debug for Exported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exported")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// `unbaked secret export`: the versions as a store log of their own,
/// sealed under `master` (so an export is also a store directory's
/// `store.log`, should a restore by copying be wanted).
pub fn seal_export(master: &StoreKey, versions: &[Exported]) -> Result<Vec<u8>, StoreError> {
    let disk = DiskKey::derive(
        master,
        new_id().map_err(|e| StoreError::Invalid(e.to_string()))?,
    );
    let mut out = disk.header()?;
    for (seq, v) in versions.iter().enumerate() {
        let plain = encode_put(
            &v.path,
            v.version,
            v.data.iter().map(|(k, v)| (k.as_str(), v.expose_secret())),
        );
        out.extend_from_slice(&disk.frame(seq as u64, &plain)?);
    }
    let n = versions.len() as u64;
    let mut end = Zeroizing::new(vec![OP_END]);
    end.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&disk.frame(n, &end)?);
    Ok(out)
}

/// `unbaked secret import`: every version of an export (or of a store
/// log), oldest first per path, paths sorted. `name` names the input in
/// messages. A truncated export is refused: an import is all or nothing.
pub fn open_export(
    master: &StoreKey,
    bytes: &[u8],
    name: &Path,
    key_from: &'static str,
) -> Result<Vec<Exported>, FileStoreError> {
    let disk = check_header(bytes, master, name, key_from)?;
    let sealer = Sealer::new().map_err(|_| FileStoreError::Io {
        action: "draw the in-memory sealing key for",
        path: name.into(),
        source: std::io::Error::other("no system randomness"),
    })?;
    let r = replay(bytes, &disk, &sealer, 0, name)?;
    let last = r.seq.checked_sub(1);
    if r.end != bytes.len() as u64 || r.export_end != last.map(|l| (l, l)) {
        return Err(FileStoreError::Damaged {
            path: name.into(),
            offset: r.end,
            reason: "it does not end with its end-of-export record: the export was cut short",
        });
    }
    let mut paths: Vec<(&String, &Entry)> = r.index.paths.iter().collect();
    paths.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = vec![];
    for (path, entry) in paths {
        for (n, v) in &entry.versions {
            let data = v
                .values
                .iter()
                .filter_map(|(k, s)| Some((k.clone(), sealer.open(&aad(path, k, *n), s)?)))
                .collect();
            out.push(Exported {
                path: path.clone(),
                version: *n,
                data,
            });
        }
    }
    Ok(out)
}

impl Inner {
    fn unavailable(&self, reason: String) -> StoreError {
        StoreError::Unavailable {
            store: "file",
            address: self.dir.display().to_string(),
            reason,
        }
    }

    fn open_all(&self, path: &str, version: u64, v: &Version) -> BTreeMap<String, Secret> {
        v.values
            .iter()
            .filter_map(|(k, s)| Some((k.clone(), self.sealer.open(&aad(path, k, version), s)?)))
            .collect()
    }

    /// Append one record and sync it; on failure cut the file back so the
    /// next record does not follow a torn one.
    fn append(&self, log: &mut Log, plain: &[u8]) -> Result<u64, StoreError> {
        if let Some(why) = &log.broken {
            return Err(self.unavailable(why.clone()));
        }
        let frame = log.disk.frame(log.seq, plain)?;
        let done = log
            .file
            .write_all(&frame)
            .and_then(|()| log.file.sync_data());
        if let Err(e) = done {
            let cut = log
                .file
                .set_len(log.len)
                .and_then(|()| log.file.sync_data());
            if let Err(e2) = cut {
                log.broken = Some(format!(
                    "a write failed ({e}) and could not be cut back ({e2}): restart the broker to re-read the log"
                ));
            }
            return Err(self.unavailable(format!("cannot write the store log: {e}")));
        }
        log.len += frame.len() as u64;
        log.seq += 1;
        Ok(frame.len() as u64)
    }

    fn write_sync(&self, path: &str, data: BTreeMap<String, Secret>) -> Result<u64, StoreError> {
        self.put_sync(path, None, &data)
    }

    /// Append `data` as `version` of `path` (the next one when `None`).
    fn put_sync(
        &self,
        path: &str,
        version: Option<u64>,
        data: &BTreeMap<String, Secret>,
    ) -> Result<u64, StoreError> {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        // Only writers change the index, and they hold `log`.
        let version = version.unwrap_or_else(|| {
            self.index
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .current(path)
                .map_or(1, |(n, _)| n + 1)
        });
        let plain = encode_put(
            path,
            version,
            data.iter().map(|(k, v)| (k.as_str(), v.expose_secret())),
        );
        let frame_len = self.append(&mut log, &plain)?;
        let values = data
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    self.sealer.seal(&aad(path, k, version), v.expose_secret()),
                )
            })
            .collect();
        let dead = self.index.write().unwrap_or_else(|e| e.into_inner()).put(
            path,
            version,
            Version { values, frame_len },
            self.max_versions,
        );
        log.dead += dead;
        self.maybe_compact(&mut log);
        Ok(version)
    }

    fn delete_sync(&self, path: &str) -> Result<bool, StoreError> {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if self
            .index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .current(path)
            .is_none()
        {
            return Ok(false);
        }
        let frame_len = self.append(&mut log, &encode_delete(path))?;
        let dead = self
            .index
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .delete(path)
            .unwrap_or(0);
        log.dead += dead + frame_len;
        self.maybe_compact(&mut log);
        Ok(true)
    }

    fn maybe_compact(&self, log: &mut Log) {
        let live = log.len - HEADER_LEN as u64 - log.dead;
        if log.dead < COMPACT_MIN_DEAD || log.dead < live {
            return;
        }
        if let Err(e) = self.compact(log) {
            tracing::error!(dir = %self.dir.display(), error = %e, "store compaction failed; the old log stays in use");
        }
    }

    /// A new log with only the live versions, under a new `store_id`.
    fn compact(&self, log: &mut Log) -> Result<(), String> {
        let disk = DiskKey::derive(&self.master, new_id().map_err(|e| e.to_string())?);
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        let mut chunks = vec![disk.header().map_err(|e| e.to_string())?];
        let mut seq = 0u64;
        let mut paths: Vec<&String> = index.paths.keys().collect();
        paths.sort();
        for path in paths {
            for (n, v) in &index.paths[path].versions {
                let data = self.open_all(path, *n, v);
                let plain = encode_put(
                    path,
                    *n,
                    data.iter().map(|(k, v)| (k.as_str(), v.expose_secret())),
                );
                chunks.push(disk.frame(seq, &plain).map_err(|e| e.to_string())?);
                seq += 1;
            }
        }
        drop(index);
        let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let file = write_new_log(&self.dir, &refs).map_err(|e| match e {
            NewLogError::Before(e) => e.to_string(),
            NewLogError::After(e) => {
                // Appends to the new file might not survive a power loss.
                log.broken = Some(format!(
                    "a compaction could not sync {} ({e}): restart the broker",
                    self.dir.display()
                ));
                e.to_string()
            }
        })?;
        let len: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        tracing::info!(dir = %self.dir.display(), before = log.len, after = len, "store log compacted");
        *log = Log {
            file,
            len,
            seq,
            disk,
            dead: 0,
            broken: None,
        };
        Ok(())
    }

    fn read_sync(&self, path: &str, key: &str) -> Option<Versioned> {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        let (version, v) = index.current(path)?;
        let value = self
            .sealer
            .open(&aad(path, key, version), v.values.get(key)?)?;
        Some(Versioned { version, value })
    }

    fn read_all_sync(&self, path: &str) -> Option<VersionedData> {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        let (version, v) = index.current(path)?;
        Some(VersionedData {
            version,
            data: self.open_all(path, version, v),
        })
    }
}

/// Run a blocking write (an fsync) off the async workers.
fn blocking<'a, T: Send + 'static>(
    inner: &Arc<Inner>,
    f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
) -> BoxFuture<'a, Result<T, StoreError>> {
    let inner = inner.clone();
    Box::pin(async move {
        let dir = inner.dir.display().to_string();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Unavailable {
                store: "file",
                address: dir,
                reason: format!("the write task failed: {e}"),
            })?
    })
}

impl Store for FileStore {
    fn name(&self) -> &'static str {
        "file"
    }

    fn read(&self, path: &str, key: &str) -> BoxFuture<'_, Result<Option<Versioned>, StoreError>> {
        let r = self.inner.read_sync(path, key);
        Box::pin(async move { Ok(r) })
    }

    fn read_all(&self, path: &str) -> BoxFuture<'_, Result<Option<VersionedData>, StoreError>> {
        let r = self.inner.read_all_sync(path);
        Box::pin(async move { Ok(r) })
    }

    fn write(
        &self,
        path: &str,
        data: BTreeMap<String, Secret>,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        let path = path.to_string();
        blocking(&self.inner, move |i| i.write_sync(&path, data))
    }

    fn delete(&self, path: &str) -> BoxFuture<'_, Result<bool, StoreError>> {
        let path = path.to_string();
        blocking(&self.inner, move |i| i.delete_sync(&path))
    }

    fn list(&self, prefix: &str) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        let mut paths: Vec<String> = self
            .inner
            .index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .paths
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

    fn key(b: u8) -> StoreKey {
        StoreKey::from_bytes([b; 32])
    }

    fn open(dir: &Path, k: u8) -> Result<FileStore, FileStoreError> {
        FileStore::open_with_key(dir, key(k), "test", 0)
    }

    fn store_dir() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("store");
        (t, d)
    }

    fn put(s: &FileStore, path: &str, k: &str, v: &[u8]) -> u64 {
        s.inner
            .write_sync(
                path,
                BTreeMap::from([(k.to_string(), Secret::from_slice(v))]),
            )
            .unwrap()
    }

    fn value(s: &FileStore, path: &str, k: &str) -> Option<(u64, Vec<u8>)> {
        s.inner
            .read_sync(path, k)
            .map(|v| (v.version, v.value.expose_secret().to_vec()))
    }

    /// Every file in `dir` and its bytes.
    fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let b = std::fs::read(&p).unwrap();
                (p, b)
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn versions_survive_reopening_and_nothing_is_in_clear() {
        let (_t, dir) = store_dir();
        let s = open(&dir, 1).unwrap();
        assert_eq!(put(&s, "app/db", "password", b"first-marker-value"), 1);
        assert_eq!(put(&s, "app/db", "password", b"second-marker-value"), 2);
        assert_eq!(put(&s, "app/api", "token", b"third-marker-value"), 1);
        assert!(s.inner.delete_sync("app/api").unwrap());
        assert!(!s.inner.delete_sync("app/api").unwrap());
        drop(s);
        let s = open(&dir, 1).unwrap();
        assert_eq!(
            value(&s, "app/db", "password"),
            Some((2, b"second-marker-value".to_vec()))
        );
        assert_eq!(s.versions("app/db").len(), 2);
        assert!(value(&s, "app/api", "token").is_none());
        assert_eq!(
            put(&s, "app/api", "token", b"fourth"),
            1,
            "a removed path starts again"
        );
        let bytes = std::fs::read(dir.join(LOG)).unwrap();
        for needle in [&b"marker-value"[..], b"app/db", b"password"] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle));
        }
    }

    /// A record the next start could not read (over [`MAX_RECORD`]) is
    /// never written: the previous version stays and the store reopens.
    #[test]
    fn a_record_over_the_limit_is_refused_and_the_store_still_opens() {
        let (_t, dir) = store_dir();
        let s = open(&dir, 1).unwrap();
        assert_eq!(put(&s, "app/db", "password", b"before"), 1);
        let big = vec![b'x'; MAX_RECORD];
        let refused = s.inner.write_sync(
            "app/db",
            BTreeMap::from([("password".to_string(), Secret::from_slice(&big))]),
        );
        assert!(
            matches!(&refused, Err(StoreError::Invalid(m)) if m.contains("over the store's limit")),
            "{refused:?}"
        );
        // Control: just under the limit is written, and reads back.
        let under = vec![b'y'; MAX_RECORD - 1024];
        assert_eq!(put(&s, "app/big", "v", &under), 1);
        drop(s);
        let s = open(&dir, 1).unwrap();
        assert_eq!(
            value(&s, "app/db", "password"),
            Some((1, b"before".to_vec()))
        );
        assert_eq!(value(&s, "app/big", "v").unwrap().1.len(), under.len());
    }

    #[test]
    fn a_wrong_key_a_second_broker_and_a_newer_format_are_refused_unchanged() {
        let (_t, dir) = store_dir();
        let s = open(&dir, 1).unwrap();
        put(&s, "a", "k", b"v");
        assert!(matches!(open(&dir, 1), Err(FileStoreError::Locked { .. })));
        drop(s);
        let before = snapshot(&dir);
        let e = open(&dir, 2).err().unwrap();
        assert!(matches!(e, FileStoreError::WrongKey { .. }), "{e}");
        assert!(e.to_string().contains("nothing was changed"), "{e}");
        assert_eq!(snapshot(&dir), before);
        let mut bytes = std::fs::read(dir.join(LOG)).unwrap();
        bytes[8] = 2;
        std::fs::write(dir.join(LOG), &bytes).unwrap();
        let e = open(&dir, 1).err().unwrap();
        assert!(matches!(e, FileStoreError::Format { found: 2, .. }), "{e}");
    }

    #[test]
    fn a_log_cut_at_any_byte_keeps_every_whole_record() {
        let (_t, dir) = store_dir();
        let s = open(&dir, 7).unwrap();
        let mut ends = vec![];
        for i in 1..=4u64 {
            put(&s, "p", "k", format!("value-{i}").as_bytes());
            ends.push(std::fs::metadata(dir.join(LOG)).unwrap().len());
        }
        drop(s);
        let full = std::fs::read(dir.join(LOG)).unwrap();
        for cut in HEADER_LEN..=full.len() {
            let (_t2, d2) = store_dir();
            std::fs::DirBuilder::new().mode(0o700).create(&d2).unwrap();
            std::fs::write(d2.join(LOG), &full[..cut]).unwrap();
            let whole = ends.iter().filter(|&&e| e as usize <= cut).count() as u64;
            let s = open(&d2, 7).unwrap();
            let got = value(&s, "p", "k").map(|(v, _)| v).unwrap_or(0);
            assert_eq!(got, whole, "cut at {cut}");
            // The next write follows the last whole record and survives.
            assert_eq!(put(&s, "p", "k", b"after"), whole + 1);
            drop(s);
            let s = open(&d2, 7).unwrap();
            assert_eq!(value(&s, "p", "k"), Some((whole + 1, b"after".to_vec())));
        }
    }

    #[test]
    fn zeros_after_the_last_record_are_cut_damage_in_the_middle_is_refused() {
        let (_t, dir) = store_dir();
        let s = open(&dir, 3).unwrap();
        put(&s, "p", "k", b"one");
        put(&s, "p", "k", b"two");
        drop(s);
        let full = std::fs::read(dir.join(LOG)).unwrap();
        let mut zeros = full.clone();
        zeros.extend_from_slice(&[0u8; 4096]);
        std::fs::write(dir.join(LOG), &zeros).unwrap();
        let s = open(&dir, 3).unwrap();
        assert_eq!(value(&s, "p", "k"), Some((2, b"two".to_vec())));
        drop(s);
        assert_eq!(std::fs::read(dir.join(LOG)).unwrap(), full);

        let mut flipped = full.clone();
        flipped[HEADER_LEN + 10] ^= 1; // inside the first record
        std::fs::write(dir.join(LOG), &flipped).unwrap();
        let e = open(&dir, 3).err().unwrap();
        assert!(matches!(e, FileStoreError::Damaged { .. }), "{e}");
        assert_eq!(std::fs::read(dir.join(LOG)).unwrap(), flipped);
    }

    #[test]
    fn records_cannot_be_reordered() {
        let (_t, dir) = store_dir();
        let s = open(&dir, 3).unwrap();
        let a = put(&s, "p", "k", b"one");
        let _ = a;
        let first_end = std::fs::metadata(dir.join(LOG)).unwrap().len() as usize;
        put(&s, "p", "k", b"two");
        drop(s);
        let full = std::fs::read(dir.join(LOG)).unwrap();
        let mut swapped = full[..HEADER_LEN].to_vec();
        swapped.extend_from_slice(&full[first_end..]);
        swapped.extend_from_slice(&full[HEADER_LEN..first_end]);
        std::fs::write(dir.join(LOG), &swapped).unwrap();
        assert!(matches!(open(&dir, 3), Err(FileStoreError::Damaged { .. })));
    }

    #[test]
    fn retention_drops_old_versions_and_compaction_keeps_the_rest() {
        let (_t, dir) = store_dir();
        let s = FileStore::open_with_key(&dir, key(4), "test", 3).unwrap();
        let big = vec![b'x'; 64 * 1024];
        for _ in 0..40 {
            put(&s, "p", "k", &big);
        }
        assert_eq!(
            s.versions("p")
                .iter()
                .map(|v| v.version)
                .collect::<Vec<_>>(),
            [38, 39, 40]
        );
        let len = std::fs::metadata(dir.join(LOG)).unwrap().len();
        assert!(len < 30 * 64 * 1024, "compacted: {len} bytes");
        drop(s);
        let s = FileStore::open_with_key(&dir, key(4), "test", 3).unwrap();
        assert_eq!(
            s.versions("p")
                .iter()
                .map(|v| v.version)
                .collect::<Vec<_>>(),
            [38, 39, 40]
        );
        assert_eq!(put(&s, "p", "k", b"next"), 41);
        assert!(!dir.join(LOG_NEW).exists());
    }

    #[test]
    fn an_export_opens_under_its_key_only_and_whole() {
        let versions = vec![
            Exported {
                path: "a/b".into(),
                version: 3,
                data: BTreeMap::from([("k".into(), Secret::from_slice(b"export-marker"))]),
            },
            Exported {
                path: "c".into(),
                version: 1,
                data: BTreeMap::from([("x".into(), Secret::from_slice(b"y"))]),
            },
        ];
        let sealed = seal_export(&key(5), &versions).unwrap();
        assert!(!sealed.windows(13).any(|w| w == b"export-marker"));
        let name = Path::new("<stdin>");
        let back = open_export(&key(5), &sealed, name, "test").unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!((back[0].path.as_str(), back[0].version), ("a/b", 3));
        assert_eq!(back[0].data["k"].expose_secret(), b"export-marker");
        assert!(matches!(
            open_export(&key(6), &sealed, name, "test"),
            Err(FileStoreError::WrongKey { .. })
        ));
        for cut in [1, 4 + 12 + 9 + 16] {
            assert!(matches!(
                open_export(&key(5), &sealed[..sealed.len() - cut], name, "test"),
                Err(FileStoreError::Damaged { .. })
            ));
        }
    }

    #[test]
    fn an_export_copied_in_as_the_log_is_a_store() {
        let versions = vec![Exported {
            path: "p".into(),
            version: 4,
            data: BTreeMap::from([("k".into(), Secret::from_slice(b"v4"))]),
        }];
        let (_t, dir) = store_dir();
        std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        std::fs::write(dir.join(LOG), seal_export(&key(9), &versions).unwrap()).unwrap();
        let s = open(&dir, 9).unwrap();
        assert_eq!(value(&s, "p", "k"), Some((4, b"v4".to_vec())));
        assert_eq!(put(&s, "p", "k", b"v5"), 5);
        drop(s);
        assert_eq!(
            value(&open(&dir, 9).unwrap(), "p", "k"),
            Some((5, b"v5".to_vec()))
        );
    }

    #[test]
    fn a_loose_directory_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let (_t, dir) = store_dir();
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = open(&dir, 1).err().unwrap();
        assert!(e.to_string().contains("chmod 0700"), "{e}");
        assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
    }
}
