//! The Crypt store (`--store crypt`): configuration that Crypt
//! (xordataexchange/crypt, spf13/viper's remote config) keeps in etcd.
//!
//! - A value at an etcd key is `base64(OpenPGP-encrypt(gzip(value)))` for
//!   the keys of an armored public keyring, exactly as Crypt's
//!   `secconf.Encode` writes it; the broker decrypts it with the matching
//!   armored secret keyring (`[crypt] secret_keyring`, a private file
//!   checked like the store key, [`super::key::open_private`]).
//! - A grant's `secret` is the etcd key: `prefix` + secret (`prefix` is
//!   "/" unless configured, so `app/config` is `/app/config`, the form
//!   Crypt's CLI and etcd v2 use). A value that is a JSON object or a TOML
//!   table exposes its top-level fields as keys (strings as their text,
//!   other values in the document's own syntax); any other value is the
//!   one key `value`.
//! - etcd through its JSON gateway over reqwest (already linked for
//!   Vault), so no gRPC stack: v3 `/v3/kv/range` and `/v3/watch`, v2
//!   `/v2/keys/KEY` and `?wait=true`. A version is the key's
//!   `mod_revision` (v2: `modifiedIndex`).
//! - Reads go through the sealed single-flight [`Cache`]. The first read of
//!   a key starts an etcd watch on it; an event, or a watch that broke,
//!   drops the cached copy, so the next renewal reads the new version.
//! - Read-only: Crypt's values are written with `crypt set` (encrypted to
//!   the public keyring); `unbaked secret put` and `rm` are refused.
//!
//! **Invariant:** a decrypted value exists only in zeroizing buffers and
//! [`Secret`]s; errors name the endpoint, the etcd key and the reason,
//! never a value (a JSON or TOML parse error never surfaces: such a value
//! is simply the key `value`).

use super::cache::Cache;
use super::key::{open_private, PrivateFileError};
use super::{BoxFuture, Store, StoreError, Versioned, VersionedData};
use base64::Engine as _;
use pgp::composed::{Deserializable, Esk, Message, SignedSecretKey};
use pgp::types::{KeyDetails, Password};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use unbaked_api::Secret;
use zeroize::Zeroizing;

const STORE: &str = "crypt";
/// The whole time one read may take, failover over the endpoints
/// included (as the Vault store's budget).
pub const BUDGET: Duration = Duration::from_millis(1500);
/// The oldest cached copy ever served; a caller asks for less (a third of
/// its grant's ttl), and a watch event drops the copy at once.
pub const CACHE_CEILING: Duration = Duration::from_secs(5);
/// How soon a broken watch is started again.
const WATCH_RETRY: Duration = Duration::from_secs(1);
/// Keys watched at most; past it a key is served from reads alone (the
/// cache age still bounds how stale).
const MAX_WATCHES: usize = 4096;
/// The largest value read: the etcd answer, the decrypted message and the
/// gunzipped value each (etcd's own request limit is 1.5 MiB).
const MAX_VALUE: usize = 4 << 20;
/// The largest secret keyring file read.
const MAX_KEYRING: u64 = 1 << 20;
pub use super::value_fields::{fields, WHOLE_VALUE_KEY};

/// Which etcd API the values are under (v2 and v3 are separate key spaces).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EtcdApi {
    /// The keys API Crypt was written for (`etcd --enable-v2`).
    V2,
    /// What current etcd serves (Crypt's etcdv3 backend).
    #[default]
    V3,
}

/// The validated `[crypt]` configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptConfig {
    /// etcd's client URLs, `http://` or `https://` (system roots), without
    /// a trailing slash.
    pub endpoints: Vec<String>,
    /// The armored OpenPGP secret keyring (`gpg --export-secret-keys --armor`).
    pub secret_keyring: PathBuf,
    pub api: EtcdApi,
    /// Put before a grant's `secret` to make the etcd key.
    pub prefix: String,
    /// One read's budget, failover included.
    pub timeout: Duration,
}

/// Why the crypt store did not open.
#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    #[error("cannot open the secret keyring {} ([crypt] secret_keyring): {source}", .path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the secret keyring {} ([crypt] secret_keyring) is not a regular file: give the keyring itself, not a link or a directory", .path.display())]
    NotAFile { path: PathBuf },
    #[error("the secret keyring {} ([crypt] secret_keyring) is owned by uid {owner}, not root or the broker's uid {euid}: chown {euid} {}", .path.display(), .path.display())]
    Owner {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
    #[error("the secret keyring {} ([crypt] secret_keyring) may be read or written by group or others (mode {mode:04o}): chmod 0400 {}", .path.display(), .path.display())]
    Mode { path: PathBuf, mode: u32 },
    #[error("the secret keyring {} ([crypt] secret_keyring) {why}: export one with `gpg --export-secret-keys --armor KEYID`", .path.display())]
    Keyring { path: PathBuf, why: String },
    #[error("the crypt store cannot start: {0}")]
    Setup(String),
}

/// The secret keys values are decrypted with. rPGP wipes key material on
/// drop; no `Debug` of it here.
struct Keyring {
    path: PathBuf,
    keys: Vec<SignedSecretKey>,
}

impl Keyring {
    fn load(path: &std::path::Path) -> Result<Keyring, CryptError> {
        let file = open_private(path).map_err(|e| {
            let path = path.to_path_buf();
            match e {
                PrivateFileError::Open(source) => CryptError::Open { path, source },
                PrivateFileError::NotAFile => CryptError::NotAFile { path },
                PrivateFileError::Owner { owner, euid } => CryptError::Owner { path, owner, euid },
                PrivateFileError::Mode { mode } => CryptError::Mode { path, mode },
            }
        })?;
        let bad = |why: String| CryptError::Keyring {
            path: path.to_path_buf(),
            why,
        };
        let mut text = Zeroizing::new(Vec::with_capacity(64 << 10));
        file.take(MAX_KEYRING + 1)
            .read_to_end(&mut text)
            .map_err(|source| CryptError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        if text.len() as u64 > MAX_KEYRING {
            return Err(bad(format!("is larger than {MAX_KEYRING} bytes")));
        }
        let (keys, _) = SignedSecretKey::from_armor_many(&text[..])
            .map_err(|e| bad(format!("is not an armored OpenPGP secret keyring ({e})")))?;
        let keys = keys
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("holds a key that cannot be read ({e})")))?;
        if keys.is_empty() {
            return Err(bad("holds no secret key".into()));
        }
        for k in &keys {
            let protected = k.primary_key.secret_params().is_encrypted()
                || k.secret_subkeys
                    .iter()
                    .any(|s| s.key.secret_params().is_encrypted());
            if protected {
                return Err(bad(format!(
                    "holds key {} protected by a passphrase, which Crypt's keyrings are not (it reads them without one): remove it with `gpg --passwd` (empty) before exporting",
                    k.primary_key.legacy_key_id()
                )));
            }
        }
        Ok(Keyring {
            path: path.to_path_buf(),
            keys,
        })
    }

    /// Every key id of the ring, primary and subkeys, for messages.
    fn ids(&self) -> Vec<String> {
        self.keys
            .iter()
            .flat_map(|k| {
                std::iter::once(k.primary_key.legacy_key_id().to_string()).chain(
                    k.secret_subkeys
                        .iter()
                        .map(|s| s.key.legacy_key_id().to_string()),
                )
            })
            .collect()
    }
}

/// Why a value did not decode. Each names the layer, never content.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    Base64,
    NotOpenPgp(String),
    NotForUs { recipients: Vec<String> },
    Decrypt(String),
    TooLarge,
    Read(String),
    NotGzip,
}

impl DecodeError {
    fn describe(&self, keyring: &Keyring) -> String {
        let ring = keyring.path.display();
        match self {
            DecodeError::Base64 => "the value is not base64 (Crypt stores base64(OpenPGP(gzip(value))): was it written with `crypt set`?)".into(),
            DecodeError::NotOpenPgp(e) => format!("the value is not an OpenPGP message ({e})"),
            DecodeError::NotForUs { recipients } => format!(
                "the value is encrypted to key ids [{}], and the secret keyring {ring} holds [{}]: none matches (a wrong keyring, or the value was encrypted to another public keyring)",
                recipients.join(", "),
                keyring.ids().join(", ")
            ),
            DecodeError::Decrypt(e) => format!("the value cannot be decrypted with the secret keyring {ring} ({e})"),
            DecodeError::TooLarge => format!("the value is larger than {MAX_VALUE} bytes"),
            DecodeError::Read(e) => format!("the decrypted message cannot be read ({e})"),
            DecodeError::NotGzip => "the decrypted value is not gzip data (Crypt gzips a value before encrypting it)".into(),
        }
    }
}

/// Read all of `r` into a zeroizing buffer, at most `limit` bytes. The
/// buffer grows by copying into a new zeroizing one, so no reallocation
/// leaves plaintext behind in freed memory.
fn read_zeroizing(mut r: impl Read, limit: usize) -> Result<Zeroizing<Vec<u8>>, DecodeError> {
    let mut out = Zeroizing::new(Vec::with_capacity(4096));
    let mut chunk = Zeroizing::new([0u8; 4096]);
    loop {
        let n = r
            .read(&mut chunk[..])
            .map_err(|e| DecodeError::Read(e.kind().to_string()))?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() + n > limit {
            return Err(DecodeError::TooLarge);
        }
        if out.len() + n > out.capacity() {
            let mut bigger =
                Zeroizing::new(Vec::with_capacity((out.capacity() * 2).max(out.len() + n)));
            bigger.extend_from_slice(&out);
            out = bigger;
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// Crypt's `secconf.Decode`: base64, OpenPGP decrypt, gunzip.
fn decode(stored: &[u8], keyring: &Keyring) -> Result<Zeroizing<Vec<u8>>, DecodeError> {
    // Go's base64 decoder skips line breaks; so does this (GnuPG users
    // pipe through base64(1), which wraps at 76 columns).
    let text: Vec<u8> = stored
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let binary = base64::engine::general_purpose::STANDARD
        .decode(&text)
        .map_err(|_| DecodeError::Base64)?;
    let message =
        Message::from_bytes(&binary[..]).map_err(|e| DecodeError::NotOpenPgp(e.to_string()))?;
    let recipients: Vec<String> = match &message {
        Message::Encrypted { esk, .. } => esk
            .iter()
            .filter_map(|e| match e {
                Esk::PublicKeyEncryptedSessionKey(p) => p.id().ok().map(|id| id.to_string()),
                Esk::SymKeyEncryptedSessionKey(_) => None,
            })
            .collect(),
        _ => return Err(DecodeError::NotOpenPgp("not an encrypted message".into())),
    };
    let empty = Password::empty();
    let message = message
        .decrypt_with_keys(
            keyring.keys.iter().map(|_| &empty).collect(),
            keyring.keys.iter().collect(),
        )
        .map_err(|e| match e {
            pgp::errors::Error::MissingKey => DecodeError::NotForUs {
                recipients: recipients.clone(),
            },
            other => DecodeError::Decrypt(other.to_string()),
        })?;
    let mut message = if message.is_compressed() {
        message
            .decompress()
            .map_err(|e| DecodeError::Read(e.to_string()))?
    } else {
        message
    };
    let gz = read_zeroizing(&mut message, MAX_VALUE)?;
    if !gz.starts_with(&[0x1f, 0x8b]) {
        return Err(DecodeError::NotGzip);
    }
    read_zeroizing(flate2::read::GzDecoder::new(&gz[..]), MAX_VALUE).map_err(|e| match e {
        DecodeError::Read(_) => DecodeError::NotGzip,
        other => other,
    })
}

/// What a store read found at one endpoint.
struct Found {
    /// The stored text (Crypt's base64), if the key exists.
    value: Option<(u64, Vec<u8>)>,
    /// Where a watch starts: the revision (v3) or index (v2) after the read.
    watch_from: u64,
}

enum Attempt {
    /// Try the next endpoint.
    Unreachable(String),
    Invalid(String),
}

/// What the store and its watch tasks share.
struct Shared {
    cfg: CryptConfig,
    http: reqwest::Client,
    /// Without an overall timeout: a watch is one long answer.
    watch_http: reqwest::Client,
    /// Index of the endpoint that answered last.
    active: AtomicUsize,
    cache: Cache,
}

pub struct CryptStore {
    shared: Arc<Shared>,
    keyring: Arc<Keyring>,
    watched: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for CryptStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CryptStore")
            .field("endpoints", &self.shared.cfg.endpoints)
            .field("api", &self.shared.cfg.api)
            .field("secret_keyring", &self.keyring.path)
            .finish_non_exhaustive()
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// An int64 of etcd's JSON gateway: a string, or a number.
fn int(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

impl Shared {
    fn key(&self, path: &str) -> String {
        format!("{}{path}", self.cfg.prefix)
    }

    /// The v2 URL of `key` (v2 keys are rooted at `/`).
    fn v2_url(endpoint: &str, key: &str) -> String {
        let key = key.trim_start_matches('/');
        format!("{endpoint}/v2/keys/{key}")
    }

    fn unavailable(&self, endpoint: &str, key: &str, reason: String) -> StoreError {
        StoreError::Unavailable {
            store: STORE,
            address: format!("{endpoint} (etcd key {key})"),
            reason,
        }
    }

    /// Read `key` from the endpoints in turn, within the budget.
    async fn read_key(&self, key: &str) -> Result<Found, StoreError> {
        let n = self.cfg.endpoints.len();
        let start = self.active.load(Ordering::Relaxed) % n;
        let mut last = String::new();
        let attempt = async {
            for i in 0..n {
                let idx = (start + i) % n;
                let endpoint = &self.cfg.endpoints[idx];
                let result = match self.cfg.api {
                    EtcdApi::V3 => self.range_v3(endpoint, key).await,
                    EtcdApi::V2 => self.get_v2(endpoint, key).await,
                };
                match result {
                    Ok(found) => {
                        self.active.store(idx, Ordering::Relaxed);
                        return Ok(found);
                    }
                    Err(Attempt::Unreachable(why)) => {
                        tracing::warn!(endpoint = %endpoint, key, reason = %why, "etcd endpoint failed: trying the next");
                        last = format!("{endpoint}: {why}");
                    }
                    Err(Attempt::Invalid(why)) => {
                        return Err(self.unavailable(endpoint, key, why));
                    }
                }
            }
            Err(StoreError::Unavailable {
                store: STORE,
                address: format!("{} (etcd key {key})", self.cfg.endpoints.join(", ")),
                reason: format!("no etcd endpoint answered; last: {last}"),
            })
        };
        match tokio::time::timeout(self.cfg.timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable {
                store: STORE,
                address: format!("{} (etcd key {key})", self.cfg.endpoints.join(", ")),
                reason: format!("no answer within {:?}", self.cfg.timeout),
            }),
        }
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(u16, reqwest::header::HeaderMap, bytes::Bytes), Attempt> {
        let resp = req
            .send()
            .await
            .map_err(|e| Attempt::Unreachable(error_chain(&e)))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = bounded_body(resp).await.map_err(|e| match e {
            BodyError::Read(e) => Attempt::Unreachable(error_chain(&e)),
            BodyError::TooLong => Attempt::Invalid(format!(
                "etcd answered more than {} bytes, more than a value may hold",
                MAX_VALUE * 2
            )),
        })?;
        Ok((status, headers, body))
    }

    async fn range_v3(&self, endpoint: &str, key: &str) -> Result<Found, Attempt> {
        let body = serde_json::json!({ "key": b64(key.as_bytes()) }).to_string();
        let (status, _, body) = self
            .send(self.http.post(format!("{endpoint}/v3/kv/range")).body(body))
            .await?;
        if status >= 500 || status == 429 {
            return Err(Attempt::Unreachable(format!("etcd answered {status}")));
        }
        let v: Value = serde_json::from_slice(&body)
            .map_err(|_| Attempt::Invalid(format!("etcd answered {status} with a body that is not JSON: is this etcd's v3 gateway (api = \"v3\")?")))?;
        if status != 200 {
            let msg = v
                .get("error")
                .or(v.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("");
            return Err(Attempt::Invalid(format!(
                "etcd refused the read ({status}): {msg}"
            )));
        }
        let revision = v.pointer("/header/revision").and_then(int).unwrap_or(0);
        let kv = v
            .get("kvs")
            .and_then(Value::as_array)
            .and_then(|a| a.first());
        let value = match kv {
            None => None,
            Some(kv) => {
                let rev = kv
                    .get("mod_revision")
                    .and_then(int)
                    .ok_or_else(|| Attempt::Invalid("etcd's answer has no mod_revision".into()))?;
                let text = match kv.get("value").and_then(Value::as_str) {
                    // An empty value is left out of the JSON.
                    None => Vec::new(),
                    Some(t) => base64::engine::general_purpose::STANDARD
                        .decode(t)
                        .map_err(|_| {
                            Attempt::Invalid("etcd's answer has a value that is not base64".into())
                        })?,
                };
                Some((rev, text))
            }
        };
        Ok(Found {
            value,
            watch_from: revision + 1,
        })
    }

    async fn get_v2(&self, endpoint: &str, key: &str) -> Result<Found, Attempt> {
        let (status, headers, body) = self
            .send(self.http.get(Self::v2_url(endpoint, key)))
            .await?;
        if status >= 500 || status == 429 {
            return Err(Attempt::Unreachable(format!("etcd answered {status}")));
        }
        let index = headers
            .get("x-etcd-index")
            .and_then(|h| h.to_str().ok())
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        let v: Value = serde_json::from_slice(&body).map_err(|_| {
            Attempt::Invalid(format!(
                "etcd answered {status} with a body that is not JSON: does it serve the v2 API (etcd --enable-v2)?"
            ))
        })?;
        if status == 404 && v.get("errorCode").and_then(Value::as_u64) == Some(100) {
            return Ok(Found {
                value: None,
                watch_from: index + 1,
            });
        }
        if status != 200 {
            let msg = v.get("message").and_then(Value::as_str).unwrap_or("");
            return Err(Attempt::Invalid(format!(
                "etcd refused the read ({status}): {msg}"
            )));
        }
        let node = v
            .get("node")
            .ok_or_else(|| Attempt::Invalid("etcd's answer has no node".into()))?;
        if node.get("dir").and_then(Value::as_bool) == Some(true) {
            return Err(Attempt::Invalid(
                "the key is a directory, not a value".into(),
            ));
        }
        let rev = node
            .get("modifiedIndex")
            .and_then(int)
            .ok_or_else(|| Attempt::Invalid("etcd's answer has no modifiedIndex".into()))?;
        let text = node
            .get("value")
            .and_then(Value::as_str)
            .unwrap_or("")
            .as_bytes()
            .to_vec();
        Ok(Found {
            value: Some((rev, text)),
            watch_from: index.max(rev) + 1,
        })
    }

    /// Follow `key` from `from` on, dropping `path`'s cached copy on every
    /// change, for as long as the broker runs.
    async fn watch(self: Arc<Self>, path: String, key: String, mut from: u64) {
        let n = self.cfg.endpoints.len();
        loop {
            let endpoint = self.cfg.endpoints[self.active.load(Ordering::Relaxed) % n].clone();
            let ended = match self.cfg.api {
                EtcdApi::V3 => self.watch_v3(&endpoint, &path, &key, &mut from).await,
                EtcdApi::V2 => self.watch_v2(&endpoint, &path, &key, &mut from).await,
            };
            // Whatever happened meanwhile is unknown: read afresh next time.
            self.cache.invalidate(&path);
            tracing::debug!(endpoint = %endpoint, key = %key, reason = %ended, "etcd watch ended: starting again");
            tokio::time::sleep(WATCH_RETRY).await;
        }
    }

    fn changed(&self, path: &str, key: &str, revision: u64, what: &str) {
        self.cache.invalidate(path);
        tracing::info!(
            key,
            revision,
            event = what,
            "crypt: etcd key changed: the next read fetches it"
        );
    }

    /// One v3 watch stream; why it ended.
    async fn watch_v3(&self, endpoint: &str, path: &str, key: &str, from: &mut u64) -> String {
        let body = serde_json::json!({
            "create_request": { "key": b64(key.as_bytes()), "start_revision": from.to_string() }
        })
        .to_string();
        let mut resp = match self
            .watch_http
            .post(format!("{endpoint}/v3/watch"))
            .body(body)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => return format!("etcd answered {}", r.status()),
            Err(e) => return error_chain(&e),
        };
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => return "etcd closed the watch".into(),
                Err(e) => return error_chain(&e),
            };
            buf.extend_from_slice(&chunk);
            if buf.len() > 2 * MAX_VALUE {
                return "a watch message too large".into();
            }
            while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                let Some(result) = v.get("result") else {
                    return "etcd ended the watch with an error".into();
                };
                if let Some(c) = result
                    .get("compact_revision")
                    .and_then(int)
                    .filter(|c| *c > 0)
                {
                    *from = c;
                    self.changed(path, key, c, "compacted");
                }
                for ev in result
                    .get("events")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let rev = ev
                        .pointer("/kv/mod_revision")
                        .and_then(int)
                        .unwrap_or(*from);
                    *from = (*from).max(rev + 1);
                    let what = ev.get("type").and_then(Value::as_str).unwrap_or("PUT");
                    self.changed(path, key, rev, what);
                }
                if result.get("canceled").and_then(Value::as_bool) == Some(true) {
                    return "etcd canceled the watch".into();
                }
            }
        }
    }

    /// One v2 long poll; why it ended (a change, or a failure).
    async fn watch_v2(&self, endpoint: &str, path: &str, key: &str, from: &mut u64) -> String {
        loop {
            let url = format!("{}?wait=true&waitIndex={from}", Self::v2_url(endpoint, key));
            let resp = match self.watch_http.get(url).send().await {
                Ok(r) => r,
                Err(e) => return error_chain(&e),
            };
            let status = resp.status().as_u16();
            let index = resp
                .headers()
                .get("x-etcd-index")
                .and_then(|h| h.to_str().ok())
                .and_then(|s| s.parse::<u64>().ok());
            let body = match bounded_body(resp).await {
                Ok(b) => b,
                // etcd ends an idle long poll now and then.
                Err(BodyError::Read(e)) => return error_chain(&e),
                Err(BodyError::TooLong) => {
                    return format!(
                        "etcd answered a watch with more than {} bytes",
                        MAX_VALUE * 2
                    )
                }
            };
            let Ok(v) = serde_json::from_slice::<Value>(&body) else {
                return format!("etcd answered {status} with a body that is not JSON");
            };
            if status == 200 {
                let rev = v
                    .pointer("/node/modifiedIndex")
                    .and_then(int)
                    .unwrap_or(*from);
                *from = (*from).max(rev + 1);
                let what = v.get("action").and_then(Value::as_str).unwrap_or("set");
                self.changed(path, key, rev, what);
                continue;
            }
            // 401: the index was cleared from etcd's history; go on from now.
            if v.get("errorCode").and_then(Value::as_u64) == Some(401) {
                if let Some(i) = index {
                    *from = i + 1;
                }
                self.changed(path, key, *from, "history cleared");
                continue;
            }
            return format!("etcd answered {status}");
        }
    }
}

enum BodyError {
    Read(reqwest::Error),
    TooLong,
}

/// An answer's body, read chunk by chunk and refused past twice the
/// largest value (a declared larger length unread): an endpoint that
/// streams without end cannot fill the broker's memory.
async fn bounded_body(mut resp: reqwest::Response) -> Result<bytes::Bytes, BodyError> {
    let cap = MAX_VALUE * 2;
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Err(BodyError::TooLong);
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Read)? {
        if body.len() + chunk.len() > cap {
            return Err(BodyError::TooLong);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// A reqwest error and its causes on one line (the URL names the etcd
/// endpoint and key, never a value).
fn error_chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl CryptStore {
    /// Load and check the keyring and build the clients; etcd is not asked
    /// yet, so the broker starts while etcd is away.
    pub fn open(cfg: CryptConfig) -> Result<Arc<CryptStore>, CryptError> {
        if cfg.endpoints.is_empty() {
            return Err(CryptError::Setup("[crypt] endpoints is empty: give etcd's client URLs, e.g. [\"http://127.0.0.1:2379\"]".into()));
        }
        let keyring = Keyring::load(&cfg.secret_keyring)?;
        // TLS through ring, as for Vault; a second call finds it installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let all_http = cfg.endpoints.iter().all(|e| e.starts_with("http://"));
        let build = |timeout: Option<Duration>| {
            // etcd never redirects: a redirect is someone else answering.
            let mut b = reqwest::ClientBuilder::new()
                .tls_backend_rustls()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(cfg.timeout);
            match timeout {
                Some(t) => b = b.timeout(t),
                // A watch idles for hours: keepalives find a dead peer.
                None => b = b.tcp_keepalive(Duration::from_secs(30)),
            }
            if all_http {
                b = b.tls_certs_only(Vec::new());
            }
            b.build()
                .map_err(|e| CryptError::Setup(format!("the HTTP client: {e}")))
        };
        let shared = Shared {
            http: build(Some(cfg.timeout))?,
            watch_http: build(None)?,
            cfg,
            active: AtomicUsize::new(0),
            cache: Cache::new(CACHE_CEILING).map_err(|_| {
                CryptError::Setup("no system randomness for the cache's sealing key".into())
            })?,
        };
        tracing::info!(
            endpoints = ?shared.cfg.endpoints,
            api = ?shared.cfg.api,
            secret_keyring = %keyring.path.display(),
            keys = ?keyring.ids(),
            "crypt store opened"
        );
        Ok(Arc::new(CryptStore {
            shared: Arc::new(shared),
            keyring: Arc::new(keyring),
            watched: Mutex::new(HashSet::new()),
        }))
    }

    /// Start a watch on `path` unless one runs.
    fn ensure_watch(&self, path: &str, key: &str, from: u64) {
        let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        if watched.contains(path) {
            return;
        }
        if watched.len() >= MAX_WATCHES {
            tracing::warn!(
                key,
                "crypt: {MAX_WATCHES} etcd keys watched already: this one is re-read by age only"
            );
            return;
        }
        watched.insert(path.to_string());
        tokio::spawn(
            self.shared
                .clone()
                .watch(path.to_string(), key.to_string(), from),
        );
    }

    /// Read, decrypt and split the value at `path` now.
    async fn fetch(&self, path: String) -> Result<Option<VersionedData>, StoreError> {
        let key = self.shared.key(&path);
        let found = self.shared.read_key(&key).await?;
        self.ensure_watch(&path, &key, found.watch_from);
        let Some((version, stored)) = found.value else {
            return Ok(None);
        };
        let keyring = self.keyring.clone();
        let decoded = tokio::task::spawn_blocking(move || decode(&stored, &keyring).map(fields))
            .await
            .map_err(|_| StoreError::Invalid(format!("decrypting etcd key {key} failed")))?;
        let endpoint = &self.shared.cfg.endpoints
            [self.shared.active.load(Ordering::Relaxed) % self.shared.cfg.endpoints.len()];
        match decoded {
            Ok(data) => Ok(Some(VersionedData { version, data })),
            Err(e) => {
                let reason = e.describe(&self.keyring);
                Err(self.shared.unavailable(endpoint, &key, reason))
            }
        }
    }
}

fn read_only<'a, T: Send + 'a>(what: &str) -> BoxFuture<'a, Result<T, StoreError>> {
    let what = format!("{what}: Crypt's values are written with `crypt set` (encrypted to the public keyring), which unbaked does not hold");
    Box::pin(async move { Err(StoreError::Unsupported { store: STORE, what }) })
}

impl Store for CryptStore {
    fn name(&self) -> &'static str {
        STORE
    }

    fn cache_stats(&self) -> Option<(u64, u64)> {
        Some(self.shared.cache.stats())
    }

    fn read(&self, path: &str, key: &str) -> BoxFuture<'_, Result<Option<Versioned>, StoreError>> {
        self.read_fresh(path, key, CACHE_CEILING)
    }

    fn read_fresh(
        &self,
        path: &str,
        key: &str,
        max_age: Duration,
    ) -> BoxFuture<'_, Result<Option<Versioned>, StoreError>> {
        let (path, key) = (path.to_string(), key.to_string());
        Box::pin(async move {
            let entry = self
                .shared
                .cache
                .get(&path, max_age, || self.fetch(path.clone()))
                .await?;
            Ok(entry.and_then(|e| self.shared.cache.open(&path, &e, &key)))
        })
    }

    fn read_all(&self, path: &str) -> BoxFuture<'_, Result<Option<VersionedData>, StoreError>> {
        Box::pin(self.fetch(path.to_string()))
    }

    fn write(
        &self,
        _path: &str,
        _data: BTreeMap<String, Secret>,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        read_only("writing")
    }

    fn delete(&self, _path: &str) -> BoxFuture<'_, Result<bool, StoreError>> {
        read_only("removing")
    }

    fn list(&self, _prefix: &str) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            Err(StoreError::Unsupported {
                store: STORE,
                what: "listing: `etcdctl get --prefix --keys-only` lists Crypt's keys".into(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_grows_without_limit_overrun() {
        let data = vec![7u8; 10_000];
        assert_eq!(read_zeroizing(&data[..], 10_000).unwrap().len(), 10_000);
        assert_eq!(
            read_zeroizing(&data[..], 9_999).unwrap_err(),
            DecodeError::TooLarge
        );
    }

    #[test]
    fn the_keyring_file_is_judged_like_a_store_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secring.asc");
        std::fs::write(&path, "not a keyring").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Keyring::load(&path).err().unwrap().to_string();
        assert!(
            e.contains("chmod 0400") && e.contains("secret_keyring"),
            "{e}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        let e = Keyring::load(&path).err().unwrap().to_string();
        assert!(e.contains("not an armored OpenPGP secret keyring"), "{e}");
    }
}
