//! The Vault / OpenBao store (`--store vault`), through vaultrs.
//!
//! - KV v2 under `kv_mount`: a grant's `secret` is a path there, `key` a
//!   field; reads go through the single-flight, sealed [`Cache`].
//! - Dynamic credentials: `pki` grants POST `MOUNT/issue/ROLE` and are
//!   revoked by serial; `dynamic` grants read a path answered with a Vault
//!   lease (`database/creds/ROLE`) and revoke that lease.
//! - The broker's own token: given (`token`, `token_file`) or from an
//!   AppRole login, renewed at two thirds of its ttl, and replaced by a new
//!   login when Vault refuses it (revoked, expired).
//! - Several addresses (an HA cluster): requests go to the node that last
//!   answered and move to the next on a connection failure, a sealed or
//!   standby node (429, 5xx). Every operation, failover and re-login
//!   included, has one budget ([`BUDGET`] unless `VAULT_CLIENT_TIMEOUT`
//!   says otherwise), so a request with Vault away fails fast;
//!   `VAULT_MAX_RETRIES` adds passes over the nodes within it.
//! - TLS (CAs, client certificate, server name) in [`super::vault_tls`];
//!   the `cert` auth method logs in with the client certificate.
//!
//! **Invariant:** errors name the store, the address and Vault's own error
//! strings, never a value or a token. Values leave only as [`Secret`].
//! vaultrs keeps the token and response bodies in plain `String`s; the
//! token copies it holds are zeroized when a session is dropped.

use super::cache::Cache;
use super::stale::StaleCopies;
pub use super::vault_tls::VaultTls;
use super::{
    BoxFuture, IssueRequest, Issued, IssuedHandle, MaybeStale, Store, StoreError, Versioned,
    VersionedData,
};
use rustify::endpoint::Endpoint;
use rustify::enums::{RequestMethod, RequestType, ResponseType};
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use unbaked_api::Secret;
use unbaked_policy::Dynamic;
use vaultrs::client::{Client as _, VaultClient};
use vaultrs::error::ClientError;
use zeroize::{Zeroize, Zeroizing};

const STORE: &str = "vault";
/// The whole time one store operation may take, failover and re-login
/// included: with Vault away a request fails within 2 s end to end.
pub const BUDGET: Duration = Duration::from_millis(1500);
/// The oldest cached KV copy ever served. A caller asks for less (a third
/// of its grant's ttl); this bounds how stale any answer can be.
pub const CACHE_CEILING: Duration = Duration::from_secs(5);
/// How soon to retry a renewal that failed because Vault was away.
const RENEW_RETRY: Duration = Duration::from_secs(1);
/// How soon to retry a login Vault refused.
const RELOGIN_RETRY: Duration = Duration::from_secs(5);
/// How often to look at a token that does not expire (root, periodic).
const IDLE_CHECK: Duration = Duration::from_secs(60);
/// A folder listing stops after this many paths.
const MAX_LIST: usize = 10_000;

/// The validated `[vault]` configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultConfig {
    /// One address, or every node of an HA cluster.
    pub addresses: Vec<String>,
    pub kv_mount: String,
    pub namespace: Option<String>,
    /// CAs, client certificate, server name, verification.
    pub tls: VaultTls,
    /// Extra passes over the nodes after a failure to reach any
    /// (`VAULT_MAX_RETRIES`), within [`Self::timeout`].
    pub max_retries: u32,
    /// The whole time one store operation may take, failover, retries and
    /// re-login included (`VAULT_CLIENT_TIMEOUT`; default [`BUDGET`]).
    pub timeout: Duration,
    pub auth: VaultAuth,
    /// `[vault] max_stale`: keep sealed copies of KV reads on disk and
    /// serve ones younger than this while Vault is unreachable.
    pub max_stale: Option<Duration>,
}

/// How the broker gets its own Vault token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultAuth {
    Token(Secret),
    /// Read at start and again whenever Vault refuses the token.
    TokenFile(PathBuf),
    /// Both files are read at each login, so a rotated secret id is used.
    AppRole {
        mount: String,
        role_id_file: PathBuf,
        secret_id_file: PathBuf,
    },
    /// TLS certificate auth: the client certificate of [`VaultTls`] logs
    /// in at `auth/MOUNT/login`, as the role `name` (any matching role
    /// when `None`).
    Cert {
        mount: String,
        name: Option<String>,
    },
}

impl VaultAuth {
    fn method(&self) -> &'static str {
        match self {
            VaultAuth::Token(_) => "token",
            VaultAuth::TokenFile(_) => "token_file",
            VaultAuth::AppRole { .. } => "approle",
            VaultAuth::Cert { .. } => "cert",
        }
    }
}

/// One node's client. vaultrs keeps the token in plain strings; wipe them.
struct Node {
    address: String,
    client: VaultClient,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.client.settings.token.zeroize();
        self.client.middle.token.zeroize();
    }
}

/// The clients for one token.
struct Session {
    nodes: Vec<Arc<Node>>,
    /// Bumped by every login, so concurrent refusals log in once.
    generation: u64,
    has_token: bool,
    /// The token's ttl when it was issued or last renewed; `None`: no expiry.
    ttl: Option<Duration>,
    renewable: bool,
    /// The ttl of the login that made it (re-login when renewals shrink far below).
    login_ttl: Option<Duration>,
    /// When `ttl` was granted: the two-thirds clock starts here.
    since: Instant,
}

/// Why one attempt on one node failed.
enum Failure {
    /// Try the next node.
    Unavailable(String),
    /// Vault refused the token.
    Denied(String),
    NotFound,
    Invalid(String),
}

pub struct VaultStore {
    cfg: VaultConfig,
    session: RwLock<Arc<Session>>,
    login: tokio::sync::Mutex<()>,
    generation: AtomicU64,
    /// Index of the node that answered last.
    active: AtomicUsize,
    cache: Cache,
    /// `[vault] max_stale`: the sealed copies on disk.
    copies: Option<Arc<StaleCopies>>,
}

impl std::fmt::Debug for VaultStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultStore")
            .field("addresses", &self.cfg.addresses)
            .field("kv_mount", &self.cfg.kv_mount)
            .field("auth", &self.cfg.auth.method())
            .finish_non_exhaustive()
    }
}

fn invalid(message: String) -> StoreError {
    StoreError::Invalid(message)
}

impl VaultStore {
    /// Build the clients; no request is made yet, so the broker starts even
    /// while Vault is away (and serves once it is back).
    pub fn new(cfg: VaultConfig) -> Result<Arc<VaultStore>, StoreError> {
        Self::with_copies(cfg, None)
    }

    /// [`Self::new`], keeping bounded-stale copies in `copies`.
    pub fn with_copies(
        cfg: VaultConfig,
        copies: Option<Arc<StaleCopies>>,
    ) -> Result<Arc<VaultStore>, StoreError> {
        // TLS through ring; a second call finds it installed, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        if cfg.addresses.is_empty() {
            return Err(invalid(
                "the vault store has no address: set VAULT_ADDR or [vault] address".into(),
            ));
        }
        super::vault_tls::warn_skip_verify(&cfg.tls);
        let cache = Cache::new(CACHE_CEILING)
            .map_err(|_| invalid("no system randomness for the cache's sealing key".into()))?;
        let token = match &cfg.auth {
            VaultAuth::Token(t) => Some(Zeroizing::new(token_text(t.expose_secret())?)),
            _ => None,
        };
        let nodes = build_nodes(&cfg, token.as_deref().map(String::as_str))?;
        let has_token = token.is_some();
        Ok(Arc::new(VaultStore {
            session: RwLock::new(Arc::new(Session {
                nodes,
                generation: 0,
                has_token,
                ttl: None,
                renewable: false,
                login_ttl: None,
                since: Instant::now(),
            })),
            cfg,
            login: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            cache,
            copies,
        }))
    }

    /// Keep the broker's token alive: renew at two thirds of its ttl, log in
    /// again when Vault refuses it. Runs until the store is dropped.
    pub fn spawn_token_keeper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut wait = Duration::ZERO;
            loop {
                tokio::time::sleep(wait).await;
                let Some(store) = weak.upgrade() else { return };
                wait = store.keep_token().await;
            }
        })
    }

    /// One turn of the keeper: how long to sleep before the next.
    async fn keep_token(&self) -> Duration {
        let session = self.current();
        if !session.has_token {
            return match self
                .relogin(session.generation, Instant::now() + self.cfg.timeout)
                .await
            {
                Ok(()) => Duration::ZERO,
                Err(e) => {
                    tracing::warn!(error = %e, "vault login failed: retrying");
                    RENEW_RETRY
                }
            };
        }
        let Some(ttl) = session.ttl else {
            // A given token: learn its ttl once, then renew it like a login's.
            return match self.lookup_ttl().await {
                Ok(()) => Duration::ZERO,
                Err(Failure::Denied(why)) => {
                    tracing::error!(reason = %why, "vault refused the broker's token");
                    self.after_refusal(session.generation).await
                }
                Err(_) => RENEW_RETRY,
            };
        };
        if ttl.is_zero() || !session.renewable {
            return IDLE_CHECK;
        }
        // Renew at two thirds of the ttl; the sleep that led here was that.
        let due = session.ttl.map(|t| t * 2 / 3).unwrap_or(IDLE_CHECK);
        let age = session.since.elapsed();
        if age < due {
            return due - age;
        }
        match self.renew_token(&session).await {
            Ok(granted) => {
                let login_ttl = session.login_ttl.unwrap_or(granted);
                if matches!(
                    self.cfg.auth,
                    VaultAuth::AppRole { .. } | VaultAuth::Cert { .. }
                ) && granted < login_ttl / 3
                {
                    // At its max ttl: a fresh login before it runs out.
                    tracing::info!(granted = ?granted, "vault token near its max ttl: logging in again");
                    let _ = self
                        .relogin(session.generation, Instant::now() + self.cfg.timeout)
                        .await;
                    return Duration::ZERO;
                }
                granted * 2 / 3
            }
            Err(Failure::Denied(why)) => {
                tracing::warn!(reason = %why, "vault refused to renew the broker's token: logging in again");
                self.after_refusal(session.generation).await
            }
            Err(Failure::Unavailable(why)) | Err(Failure::Invalid(why)) => {
                tracing::warn!(reason = %why, "cannot renew the broker's vault token: retrying");
                RENEW_RETRY
            }
            Err(Failure::NotFound) => RENEW_RETRY,
        }
    }

    async fn after_refusal(&self, generation: u64) -> Duration {
        match self
            .relogin(generation, Instant::now() + self.cfg.timeout)
            .await
        {
            Ok(()) => Duration::ZERO,
            Err(e) => {
                tracing::error!(error = %e, "vault login failed: retrying");
                RELOGIN_RETRY
            }
        }
    }

    fn current(&self) -> Arc<Session> {
        self.session
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn addresses(&self) -> String {
        self.cfg.addresses.join(", ")
    }

    fn unavailable(&self, reason: String) -> StoreError {
        StoreError::Unavailable {
            store: STORE,
            address: self.addresses(),
            reason,
        }
    }

    /// Run `op` on the active node, then the others, within `deadline`.
    async fn on_nodes<T, F, Fut>(
        &self,
        session: &Session,
        deadline: Instant,
        op: &F,
    ) -> Result<T, Failure>
    where
        F: Fn(Arc<Node>) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let n = session.nodes.len();
        let start = self.active.load(Ordering::Relaxed) % n;
        let mut why = Vec::new();
        for i in 0..n {
            let idx = (start + i) % n;
            let node = session.nodes[idx].clone();
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            // Share what is left among the nodes not yet tried, so one
            // hung node does not use up the others' time.
            let slice = (remaining / (n - i) as u32)
                .max(Duration::from_millis(300))
                .min(remaining);
            let address = node.address.clone();
            match tokio::time::timeout(slice, op(node)).await {
                Ok(Ok(v)) => {
                    if idx != start {
                        tracing::info!(%address, "vault: now using this node");
                    }
                    self.active.store(idx, Ordering::Relaxed);
                    return Ok(v);
                }
                Ok(Err(e)) => match classify(e) {
                    Failure::Unavailable(reason) => why.push(format!("{address}: {reason}")),
                    other => return Err(other),
                },
                Err(_) => why.push(format!("{address}: no answer within {slice:?}")),
            }
        }
        if why.is_empty() {
            why.push(format!("no answer within {:?}", self.cfg.timeout));
        }
        Err(Failure::Unavailable(why.join("; ")))
    }

    /// An operation with failover, and one re-login if Vault refuses the
    /// token. `Ok(None)` when Vault answers 404.
    async fn call<T, F, Fut>(&self, what: &str, op: F) -> Result<Option<T>, StoreError>
    where
        F: Fn(Arc<Node>) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let deadline = Instant::now() + self.cfg.timeout;
        let mut relogged = false;
        let mut retried = 0u32;
        loop {
            let session = self.current();
            if !session.has_token {
                self.relogin(session.generation, deadline).await?;
                relogged = true;
                continue;
            }
            match self.on_nodes(&session, deadline, &op).await {
                Ok(v) => return Ok(Some(v)),
                Err(Failure::NotFound) => return Ok(None),
                Err(Failure::Denied(reason)) if !relogged && self.can_relogin() => {
                    tracing::warn!(%reason, "vault refused the broker's token: logging in again");
                    self.relogin(session.generation, deadline).await?;
                    relogged = true;
                }
                Err(Failure::Denied(reason)) => {
                    return Err(invalid(format!(
                        "the vault store at {} refused {what}: {reason}: check the broker's vault policy and token ({} auth)",
                        self.addresses(),
                        self.cfg.auth.method()
                    )))
                }
                Err(Failure::Unavailable(reason)) => {
                    // VAULT_MAX_RETRIES: another pass over the nodes after a
                    // short pause, while the budget lasts.
                    let pause = Duration::from_millis(100 << retried.min(4));
                    if retried < self.cfg.max_retries && Instant::now() + pause < deadline {
                        retried += 1;
                        tracing::debug!(%reason, retried, "vault unreachable: retrying");
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                    return Err(self.unavailable(reason));
                }
                Err(Failure::Invalid(reason)) => {
                    return Err(invalid(format!(
                        "the vault store at {} could not {what}: {reason}",
                        self.addresses()
                    )))
                }
            }
        }
    }

    fn can_relogin(&self) -> bool {
        !matches!(self.cfg.auth, VaultAuth::Token(_))
    }

    /// Get a new token (unless a concurrent caller already did, after the
    /// session `seen` failed) and swap in clients carrying it.
    async fn relogin(&self, seen: u64, deadline: Instant) -> Result<(), StoreError> {
        let _one = self.login.lock().await;
        if self.current().generation != seen {
            return Ok(());
        }
        let (token, ttl, renewable) = match &self.cfg.auth {
            VaultAuth::Token(_) => {
                return Err(invalid(format!(
                    "the vault store at {} refused the broker's token: give it a valid one (VAULT_TOKEN or [vault.auth] token), or use token_file or approle so it can get a new one",
                    self.addresses()
                )))
            }
            VaultAuth::TokenFile(path) => {
                let text = read_secret_file(path, "token_file")?;
                (Zeroizing::new(token_text(text.as_bytes())?), None, false)
            }
            VaultAuth::AppRole {
                mount,
                role_id_file,
                secret_id_file,
            } => {
                let role_id = read_secret_file(role_id_file, "role_id_file")?;
                let secret_id = read_secret_file(secret_id_file, "secret_id_file")?;
                let session = self.current();
                let mount = mount.clone();
                let auth = self
                    .on_nodes(&session, deadline, &|node: Arc<Node>| {
                        let (mount, role_id, secret_id) =
                            (mount.clone(), role_id.clone(), secret_id.clone());
                        async move {
                            vaultrs::auth::approle::login(&node.client, &mount, &role_id, &secret_id)
                                .await
                        }
                    })
                    .await;
                self.logged_in(auth, "approle", &mount, "check role_id_file and secret_id_file")?
            }
            VaultAuth::Cert { mount, name } => {
                let session = self.current();
                let (mount, name) = (mount.clone(), name.clone().unwrap_or_default());
                let auth = self
                    .on_nodes(&session, deadline, &|node: Arc<Node>| {
                        let (mount, name) = (mount.clone(), name.clone());
                        async move { vaultrs::auth::cert::login(&node.client, &mount, &name).await }
                    })
                    .await;
                self.logged_in(
                    auth,
                    "cert",
                    &mount,
                    "check the client certificate (VAULT_CLIENT_CERT / [vault] client_cert) and the role's certificate",
                )?
            }
        };
        let nodes = build_nodes(&self.cfg, Some(&token))?;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *self.session.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Session {
            nodes,
            generation,
            has_token: true,
            ttl,
            renewable,
            login_ttl: ttl,
            since: Instant::now(),
        });
        tracing::info!(
            method = self.cfg.auth.method(),
            ttl = ?ttl,
            "vault: logged in"
        );
        Ok(())
    }

    /// A login's answer as (token, ttl, renewable), or the error that says
    /// what to check (`hint`) when `method` at `mount` refused or is absent.
    fn logged_in(
        &self,
        auth: Result<vaultrs::api::AuthInfo, Failure>,
        method: &str,
        mount: &str,
        hint: &str,
    ) -> Result<(Zeroizing<String>, Option<Duration>, bool), StoreError> {
        let mut auth = match auth {
            Ok(a) => a,
            Err(Failure::Unavailable(reason)) => return Err(self.unavailable(reason)),
            Err(Failure::Denied(r) | Failure::Invalid(r)) => {
                return Err(invalid(format!(
                    "{method} login at {} (mount {mount}) was refused: {r}: {hint}",
                    self.addresses()
                )))
            }
            Err(Failure::NotFound) => {
                return Err(invalid(format!(
                    "{method} login at {}: no {method} auth mounted at {mount}: enable it or set [vault.auth] mount",
                    self.addresses()
                )))
            }
        };
        let token = Zeroizing::new(std::mem::take(&mut auth.client_token));
        let ttl = Duration::from_secs(auth.lease_duration);
        Ok((token, Some(ttl), auth.renewable))
    }

    /// Learn a given token's ttl (lookup-self).
    async fn lookup_ttl(&self) -> Result<(), Failure> {
        let session = self.current();
        let looked = self
            .on_nodes(
                &session,
                Instant::now() + self.cfg.timeout,
                &|node: Arc<Node>| async move {
                    let mut r = node.client.lookup().await?;
                    r.id.zeroize();
                    Ok((r.ttl, r.renewable.unwrap_or(false)))
                },
            )
            .await?;
        self.update_session(&session, Duration::from_secs(looked.0), looked.1, true);
        Ok(())
    }

    /// renew-self; the ttl Vault granted.
    async fn renew_token(&self, session: &Arc<Session>) -> Result<Duration, Failure> {
        let mut auth = self
            .on_nodes(session, Instant::now() + self.cfg.timeout, &|node: Arc<
                Node,
            >| async move {
                node.client.renew(None).await
            })
            .await?;
        auth.client_token.zeroize();
        let granted = Duration::from_secs(auth.lease_duration);
        self.update_session(session, granted, auth.renewable, false);
        tracing::debug!(granted = ?granted, "vault token renewed");
        Ok(granted)
    }

    /// Same clients, new ttl (renewal restarts the two-thirds clock).
    fn update_session(&self, seen: &Arc<Session>, ttl: Duration, renewable: bool, first: bool) {
        let mut slot = self.session.write().unwrap_or_else(|e| e.into_inner());
        if slot.generation != seen.generation {
            return;
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *slot = Arc::new(Session {
            nodes: seen.nodes.clone(),
            generation,
            has_token: true,
            ttl: Some(ttl),
            renewable,
            login_ttl: if first { Some(ttl) } else { seen.login_ttl },
            since: Instant::now(),
        });
    }

    async fn fetch_kv(&self, path: String) -> Result<Option<VersionedData>, StoreError> {
        let mount = self.cfg.kv_mount.clone();
        let found = self
            .call(&format!("read {mount}/{path}"), |node: Arc<Node>| {
                let (mount, path) = (mount.clone(), path.clone());
                async move {
                    let endpoint = vaultrs::api::kv2::requests::ReadSecretRequest::builder()
                        .mount(mount)
                        .path(path)
                        .build()
                        .expect("mount and path are set");
                    vaultrs::api::exec_with_result(&node.client, endpoint).await
                }
            })
            .await?;
        Ok(found.and_then(|r| {
            let data = fields(r.data)?;
            Some(VersionedData {
                version: r.metadata.version,
                data,
            })
        }))
    }

    /// [`Self::fetch_kv`], keeping the answer's copy when copies are kept:
    /// a new version (or one not rewritten for a while) is written before
    /// the answer is used; a 404 removes the copy.
    async fn fetch_kv_kept(&self, path: String) -> Result<Option<VersionedData>, StoreError> {
        let Some(copies) = self.copies.clone() else {
            return self.fetch_kv(path).await;
        };
        let found = self.fetch_kv(path.clone()).await;
        let copy = self.copy_path(&path);
        let blocking = |f: Box<dyn FnOnce() -> Result<(), StoreError> + Send>| async move {
            match tokio::task::spawn_blocking(f).await {
                Ok(Err(e)) => tracing::warn!(error = %e, "vault: could not update a stale copy"),
                Err(e) => tracing::warn!(error = %e, "vault: could not update a stale copy"),
                Ok(Ok(())) => {}
            }
        };
        match &found {
            Ok(Some(d)) => {
                if copies.confirmed(&copy, d.version) {
                    let d = d.clone();
                    blocking(Box::new(move || copies.keep(&copy, &d))).await;
                }
            }
            Ok(None) => {
                if copies.has(&copy) {
                    blocking(Box::new(move || copies.forget(&copy))).await;
                }
            }
            Err(StoreError::Unavailable { .. }) => copies.unreachable(),
            Err(_) => {}
        }
        found
    }

    /// A write or a delete through the broker: the kept copy, now
    /// outdated, is not served while Vault is away (the next read keeps the
    /// new version).
    async fn drop_copy(&self, path: &str) {
        let Some(copies) = self.copies.clone() else {
            return;
        };
        let copy = self.copy_path(path);
        if !copies.has(&copy) {
            return;
        }
        match tokio::task::spawn_blocking(move || copies.forget(&copy)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "vault: could not drop a stale copy"),
            Err(e) => tracing::warn!(error = %e, "vault: could not drop a stale copy"),
        }
    }

    /// A copy's path: the KV mount and the secret's path.
    fn copy_path(&self, path: &str) -> String {
        format!("{}/{path}", self.cfg.kv_mount)
    }

    /// Vault was unreachable (`err`): the copy of `path`'s `key` if one
    /// younger than `max_stale` is kept, else `err`, saying why not.
    fn stale_answer(
        &self,
        copies: &StaleCopies,
        path: &str,
        key: &str,
        err: StoreError,
    ) -> Result<MaybeStale, StoreError> {
        let StoreError::Unavailable { reason, .. } = &err else {
            return Err(err);
        };
        let max = copies.max_stale();
        match copies.lookup(&self.copy_path(path), key) {
            Some((v, age)) if age <= max => {
                copies.note_served();
                tracing::warn!(
                    secret = path,
                    key,
                    version = v.version,
                    age = ?Duration::from_secs(age.as_secs()),
                    "vault unreachable: serving a stale copy"
                );
                Ok(Some((v, Some(age))))
            }
            Some((_, age)) => Err(self.unavailable(format!(
                "{reason}; the kept copy of {path} is {} old, past max_stale {}: nothing is served until vault answers",
                humantime::format_duration(Duration::from_secs(age.as_secs())),
                humantime::format_duration(max)
            ))),
            None => Err(self.unavailable(format!(
                "{reason}; no copy of {path} key {key} was kept (the broker never read it from vault)"
            ))),
        }
    }

    async fn issue_pki(
        &self,
        req: &IssueRequest,
        pki: &unbaked_policy::PkiIssue,
    ) -> Result<Issued, StoreError> {
        // Twice the lease period: see `IssueRequest::ttl`.
        let ttl = format!("{}s", req.ttl.as_secs() * 2);
        let what = format!("issue a certificate from {}", req.path);
        let pki = pki.clone();
        let generated = self
            .call(&what, |node: Arc<Node>| {
                let (pki, ttl) = (pki.clone(), ttl.clone());
                async move {
                    let mut b = vaultrs::api::pki::requests::GenerateCertificateRequest::builder();
                    b.common_name(pki.common_name.clone()).ttl(ttl);
                    if !pki.alt_names.is_empty() {
                        b.alt_names(pki.alt_names.join(","));
                    }
                    if !pki.ip_sans.is_empty() {
                        b.ip_sans(pki.ip_sans.join(","));
                    }
                    vaultrs::pki::cert::generate(&node.client, &pki.mount, &pki.role, Some(&mut b))
                        .await
                }
            })
            .await?
            .ok_or_else(|| invalid(format!("{} does not exist in the vault store at {}: enable the pki engine and create the role", req.path, self.addresses())))?;
        let mut g = generated;
        let remaining = g
            .expiration
            .and_then(|exp| exp.checked_sub(unix_now()))
            .map_or(req.ttl * 2, Duration::from_secs);
        let fields = BTreeMap::from([
            ("certificate".to_string(), take_secret(&mut g.certificate)),
            ("private_key".to_string(), take_secret(&mut g.private_key)),
            ("issuing_ca".to_string(), take_secret(&mut g.issuing_ca)),
        ]);
        Ok(Issued {
            fields,
            handle: IssuedHandle::Certificate {
                mount: pki.mount.clone(),
                serial: g.serial_number.clone(),
            },
            ttl: remaining,
            renewable: false,
        })
    }

    async fn issue_leased(&self, req: &IssueRequest) -> Result<Issued, StoreError> {
        let path = req.path.clone();
        let answer = self
            .call(&format!("read {path}"), |node: Arc<Node>| {
                let path = path.clone();
                async move { raw(&node.client, RequestMethod::GET, &path, None).await }
            })
            .await?
            .ok_or_else(|| {
                invalid(format!(
                    "{path} does not exist in the vault store at {}: enable the engine and create the role",
                    self.addresses()
                ))
            })?;
        let Some(data) = answer.data.and_then(fields) else {
            return Err(invalid(format!("{path} answered with no data")));
        };
        if answer.lease_id.is_empty() {
            return Err(invalid(format!(
                "{path} answered without a lease, so it cannot be revoked: use `secret` for a stored value"
            )));
        }
        Ok(Issued {
            fields: data,
            handle: IssuedHandle::Lease(answer.lease_id),
            ttl: Duration::from_secs(answer.lease_duration.into()),
            renewable: answer.renewable,
        })
    }

    async fn list_all(&self, prefix: String) -> Result<Vec<String>, StoreError> {
        let mount = self.cfg.kv_mount.clone();
        // List the folder the prefix lies in, then walk down.
        let folder = match prefix.rfind('/') {
            Some(i) => prefix[..=i].to_string(),
            None => String::new(),
        };
        let mut out = Vec::new();
        let mut stack = vec![folder];
        while let Some(dir) = stack.pop() {
            let keys = self
                .call(&format!("list {mount}/{dir}"), |node: Arc<Node>| {
                    let (mount, dir) = (mount.clone(), dir.clone());
                    async move { vaultrs::kv2::list(&node.client, &mount, &dir).await }
                })
                .await?
                .unwrap_or_default();
            for k in keys {
                let full = format!("{dir}{k}");
                if !full.starts_with(&prefix) && !prefix.starts_with(&full) {
                    continue;
                }
                if full.ends_with('/') {
                    stack.push(full);
                } else if full.starts_with(&prefix) {
                    out.push(full);
                }
            }
            if out.len() >= MAX_LIST {
                break;
            }
        }
        out.sort();
        Ok(out)
    }
}

impl Store for VaultStore {
    fn name(&self) -> &'static str {
        STORE
    }

    fn cache_stats(&self) -> Option<(u64, u64)> {
        Some(self.cache.stats())
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
                .cache
                .get(&path, max_age, || self.fetch_kv_kept(path.clone()))
                .await?;
            Ok(entry.and_then(|e| self.cache.open(&path, &e, &key)))
        })
    }

    fn read_or_stale(
        &self,
        path: &str,
        key: &str,
        max_age: Duration,
    ) -> BoxFuture<'_, Result<MaybeStale, StoreError>> {
        let (path, key) = (path.to_string(), key.to_string());
        Box::pin(async move {
            let Some(copies) = self.copies.as_deref() else {
                return Ok(self
                    .read_fresh(&path, &key, max_age)
                    .await?
                    .map(|v| (v, None)));
            };
            // Vault failed a moment ago: the kept copy (as fresh as the
            // cache's, whose confirmation time it shares), without waiting
            // out another failed attempt.
            if copies.recently_down() {
                let down = self.unavailable("it did not answer a moment ago".into());
                return self.stale_answer(copies, &path, &key, down);
            }
            match self.read_fresh(&path, &key, max_age).await {
                Ok(v) => Ok(v.map(|v| (v, None))),
                Err(e) => self.stale_answer(copies, &path, &key, e),
            }
        })
    }

    fn stale_window(&self) -> Option<(Duration, u64)> {
        self.copies.as_deref().map(|c| (c.max_stale(), c.served()))
    }

    fn read_all(&self, path: &str) -> BoxFuture<'_, Result<Option<VersionedData>, StoreError>> {
        let path = path.to_string();
        // The admin API reads the store as it is now.
        Box::pin(async move { self.fetch_kv(path).await })
    }

    fn write(
        &self,
        path: &str,
        data: BTreeMap<String, Secret>,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        let path = path.to_string();
        Box::pin(async move {
            let mut text: BTreeMap<String, &str> = BTreeMap::new();
            for (k, v) in &data {
                let s = std::str::from_utf8(v.expose_secret()).map_err(|_| {
                    invalid(format!(
                        "key {k:?} of {path} is not UTF-8 text, and Vault KV stores text: encode it (e.g. base64) first"
                    ))
                })?;
                text.insert(k.clone(), s);
            }
            let text = &text;
            let mount = self.cfg.kv_mount.clone();
            let meta = self
                .call(&format!("write {mount}/{path}"), |node: Arc<Node>| {
                    let (mount, path) = (mount.clone(), path.clone());
                    async move { vaultrs::kv2::set(&node.client, &mount, &path, text).await }
                })
                .await?
                .ok_or_else(|| invalid(format!("no kv v2 engine at {}", self.cfg.kv_mount)))?;
            self.cache.invalidate(&path);
            self.drop_copy(&path).await;
            Ok(meta.version)
        })
    }

    fn delete(&self, path: &str) -> BoxFuture<'_, Result<bool, StoreError>> {
        let path = path.to_string();
        Box::pin(async move {
            let mount = self.cfg.kv_mount.clone();
            let exists = self
                .call(&format!("read metadata of {mount}/{path}"), |node: Arc<Node>| {
                    let (mount, path) = (mount.clone(), path.clone());
                    async move { vaultrs::kv2::read_metadata(&node.client, &mount, &path).await }
                })
                .await?
                .is_some();
            if exists {
                self.call(&format!("delete {mount}/{path}"), |node: Arc<Node>| {
                    let (mount, path) = (mount.clone(), path.clone());
                    async move { vaultrs::kv2::delete_metadata(&node.client, &mount, &path).await }
                })
                .await?;
            }
            self.cache.invalidate(&path);
            self.drop_copy(&path).await;
            Ok(exists)
        })
    }

    fn list(&self, prefix: &str) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(self.list_all(prefix.to_string()))
    }

    fn issue(&self, req: &IssueRequest) -> BoxFuture<'_, Result<Issued, StoreError>> {
        let req = req.clone();
        Box::pin(async move {
            match &req.kind {
                Dynamic::Pki(pki) => self.issue_pki(&req, pki).await,
                Dynamic::Leased => self.issue_leased(&req).await,
            }
        })
    }

    fn renew_issued(
        &self,
        handle: &IssuedHandle,
        increment: Duration,
    ) -> BoxFuture<'_, Result<Duration, StoreError>> {
        let handle = handle.clone();
        Box::pin(async move {
            let IssuedHandle::Lease(id) = handle else {
                return Err(StoreError::Unsupported {
                    store: STORE,
                    what: "renewing a certificate: a fresh one is issued instead".into(),
                });
            };
            let body = serde_json::json!({ "lease_id": id, "increment": increment.as_secs() });
            let answer = self
                .call("renew a lease", |node: Arc<Node>| {
                    let body = body.to_string().into_bytes();
                    async move {
                        raw(
                            &node.client,
                            RequestMethod::PUT,
                            "sys/leases/renew",
                            Some(body),
                        )
                        .await
                    }
                })
                .await?
                .ok_or_else(|| invalid(format!("lease {id} is unknown to vault")))?;
            Ok(Duration::from_secs(answer.lease_duration.into()))
        })
    }

    fn revoke_issued(&self, handle: &IssuedHandle) -> BoxFuture<'_, Result<(), StoreError>> {
        let handle = handle.clone();
        Box::pin(async move {
            match handle {
                IssuedHandle::Lease(id) => {
                    let body = serde_json::json!({ "lease_id": id }).to_string();
                    self.call("revoke a lease", |node: Arc<Node>| {
                        let body = body.clone().into_bytes();
                        async move {
                            let ep = Raw {
                                method: RequestMethod::PUT,
                                path: "sys/leases/revoke".into(),
                                body: Some(body),
                            };
                            ep.with_middleware(node.client.middle())
                                .exec(node.client.http())
                                .await
                                .map(drop)
                                .map_err(api_error)
                        }
                    })
                    .await?;
                }
                IssuedHandle::Certificate { mount, serial } => {
                    let answer = self
                        .call("revoke a certificate", |node: Arc<Node>| {
                            let (mount, serial) = (mount.clone(), serial.clone());
                            async move {
                                vaultrs::pki::cert::revoke(&node.client, &mount, &serial)
                                    .await
                                    .map(drop)
                            }
                        })
                        .await?;
                    // Vault answers without a revocation time for a
                    // certificate that has already expired: nothing to do.
                    if answer.is_none() {
                        tracing::info!(%serial, "vault had no live certificate to revoke: it has expired");
                    }
                }
            }
            Ok(())
        })
    }
}

fn build_nodes(cfg: &VaultConfig, token: Option<&str>) -> Result<Vec<Arc<Node>>, StoreError> {
    cfg.addresses
        .iter()
        .map(|address| {
            check_address(address)?;
            let client = super::vault_tls::client(
                address,
                &cfg.tls,
                cfg.timeout,
                token.unwrap_or_default(),
                cfg.namespace.as_deref(),
            )
            .map_err(|e| invalid(format!("cannot set up the vault client for {address}: {e}")))?;
            Ok(Arc::new(Node {
                address: address.clone(),
                client,
            }))
        })
        .collect()
}

/// An `http://` or `https://` URL (vaultrs panics on anything else).
pub fn check_address(address: &str) -> Result<(), StoreError> {
    let ok = address
        .parse::<hyper::Uri>()
        .ok()
        .is_some_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "vault address {address:?} is not an http:// or https:// URL: write e.g. https://vault.internal:8200"
        )))
    }
}

/// A token from a file or variable: trimmed, printable ASCII (it goes in a
/// header). The message never echoes it.
fn token_text(raw: &[u8]) -> Result<String, StoreError> {
    let text = std::str::from_utf8(raw).unwrap_or_default().trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "the vault token is empty or has characters a token never has: check VAULT_TOKEN or the token file".into(),
        ));
    }
    Ok(text.to_string())
}

fn read_secret_file(path: &PathBuf, what: &str) -> Result<Zeroizing<String>, StoreError> {
    let raw = Zeroizing::new(std::fs::read(path).map_err(|e| {
        invalid(format!(
            "cannot read [vault.auth] {what} {}: {e}: check the path and that the broker's user may read it",
            path.display()
        ))
    })?);
    let text = std::str::from_utf8(&raw).unwrap_or_default().trim();
    if text.is_empty() {
        return Err(invalid(format!(
            "[vault.auth] {what} {} is empty or not text: write the value into it",
            path.display()
        )));
    }
    Ok(Zeroizing::new(text.to_string()))
}

/// A KV or credential `data` object as secrets. Strings move into the
/// secret without a copy; other JSON values become their JSON text.
fn fields(data: Value) -> Option<BTreeMap<String, Secret>> {
    let Value::Object(map) = data else {
        return None;
    };
    Some(
        map.into_iter()
            .map(|(k, v)| {
                let secret = match v {
                    Value::String(s) => Secret::new(s.into_bytes()),
                    other => {
                        let text = Zeroizing::new(other.to_string());
                        Secret::from_slice(text.as_bytes())
                    }
                };
                (k, secret)
            })
            .collect(),
    )
}

fn take_secret(s: &mut String) -> Secret {
    Secret::new(std::mem::take(s).into_bytes())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A Vault endpoint vaultrs does not cover, through the same client:
/// leased reads (`database/creds/ROLE`) and `sys/leases/*`.
struct Raw {
    method: RequestMethod,
    path: String,
    body: Option<Vec<u8>>,
}

impl Endpoint for Raw {
    type Response = Value;
    const REQUEST_BODY_TYPE: RequestType = RequestType::JSON;
    const RESPONSE_BODY_TYPE: ResponseType = ResponseType::JSON;

    fn path(&self) -> String {
        self.path.clone()
    }

    fn method(&self) -> RequestMethod {
        self.method.clone()
    }

    fn body(&self) -> Result<Option<Vec<u8>>, rustify::errors::ClientError> {
        Ok(self.body.clone())
    }
}

/// Execute a [`Raw`] endpoint and keep the lease fields of the answer.
async fn raw(
    client: &VaultClient,
    method: RequestMethod,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<vaultrs::api::EndpointResult<Value>, ClientError> {
    let ep = Raw {
        method,
        path: path.to_string(),
        body,
    };
    ep.with_middleware(client.middle())
        .exec(client.http())
        .await
        .map_err(api_error)?
        .wrap::<vaultrs::api::EndpointResult<Value>>()
        .map_err(ClientError::from)
}

/// vaultrs's conversion of an error answer (its own is private).
fn api_error(e: rustify::errors::ClientError) -> ClientError {
    if let rustify::errors::ClientError::ServerResponseError {
        code,
        content: Some(c),
    } = &e
    {
        if let Ok(v) = serde_json::from_str::<Value>(c) {
            let errors = v["errors"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            return ClientError::APIError {
                code: *code,
                errors,
            };
        }
    }
    ClientError::from(e)
}

/// Sort an error into what to do about it. Reasons are Vault's own error
/// strings or the transport's, never a response body.
fn classify(e: ClientError) -> Failure {
    use rustify::errors::ClientError as Rest;
    let errors = |errs: &[String], code: u16| {
        if errs.is_empty() {
            format!("HTTP {code}")
        } else {
            format!("HTTP {code}: {}", errs.join("; "))
        }
    };
    match e {
        ClientError::APIError { code: 404, .. } => Failure::NotFound,
        ClientError::APIError {
            code: 403,
            errors: e,
        } => Failure::Denied(errors(&e, 403)),
        ClientError::APIError { code, errors: e } if code == 429 || code >= 500 => {
            Failure::Unavailable(errors(&e, code))
        }
        ClientError::APIError { code, errors: e } => Failure::Invalid(errors(&e, code)),
        ClientError::RestClientError { source } => match source {
            Rest::ServerResponseError { code: 404, .. } => Failure::NotFound,
            Rest::ServerResponseError { code: 403, .. } => Failure::Denied("HTTP 403".into()),
            Rest::ServerResponseError { code, .. } if code == 429 || code >= 500 => {
                Failure::Unavailable(format!("HTTP {code}"))
            }
            Rest::ServerResponseError { code, .. } => Failure::Invalid(format!("HTTP {code}")),
            Rest::RequestError { source, .. } | Rest::ResponseError { source } => {
                Failure::Unavailable(transport_reason(source.as_ref()))
            }
            other => Failure::Invalid(other.to_string().to_lowercase()),
        },
        ClientError::ResponseEmptyError | ClientError::ResponseDataEmptyError => Failure::NotFound,
        other => Failure::Invalid(other.to_string().to_lowercase()),
    }
}

/// The innermost cause of a transport error, e.g. "connection refused".
fn transport_reason(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner: &dyn std::error::Error = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    let msg = inner.to_string();
    let msg = msg.split(" (os error").next().unwrap_or(&msg);
    format!("cannot connect: {}", msg.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_tokens_are_checked_without_echoing_tokens() {
        assert!(check_address("http://127.0.0.1:8200").is_ok());
        assert!(check_address("https://vault.internal").is_ok());
        for bad in ["127.0.0.1:8200", "ftp://x", "", "http://"] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
        assert_eq!(token_text(b" s.abc\n").unwrap(), "s.abc");
        let e = token_text(b"s.secret\x01value").unwrap_err().to_string();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn errors_sort_into_failover_refusal_and_mistakes() {
        let api = |code, errors: &[&str]| ClientError::APIError {
            code,
            errors: errors.iter().map(|s| s.to_string()).collect(),
        };
        assert!(matches!(classify(api(404, &[])), Failure::NotFound));
        assert!(
            matches!(classify(api(403, &["permission denied"])), Failure::Denied(r) if r.contains("permission denied"))
        );
        assert!(
            matches!(classify(api(503, &["Vault is sealed"])), Failure::Unavailable(r) if r == "HTTP 503: Vault is sealed")
        );
        assert!(matches!(classify(api(429, &[])), Failure::Unavailable(_)));
        assert!(matches!(
            classify(api(400, &["common name not allowed"])),
            Failure::Invalid(_)
        ));
    }

    #[test]
    fn fields_move_strings_and_render_other_values() {
        let v = serde_json::json!({"password": "pw", "port": 5432});
        let f = fields(v).unwrap();
        assert_eq!(f["password"].expose_secret(), b"pw");
        assert_eq!(f["port"].expose_secret(), b"5432");
        assert!(fields(Value::Null).is_none());
    }
}
