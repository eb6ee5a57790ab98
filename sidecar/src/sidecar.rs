//! `unbaked sidecar`: deliver a workload's file grants into a tmpfs, keep
//! them current while the lease is renewed, wipe them when withdrawn,
//! expired or on SIGTERM/SIGINT.

use crate::actions::Watch;
use crate::client::{Client, ClientError};
use crate::jitter::Backoff;
use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;
use tokio::signal::unix::{signal, Signal, SignalKind};
use unbaked_api::exit;
use unbaked_api::wire::{Delivery, DeliveryKind, ErrorCode, FetchRequest, Lease};
use unbaked_secretsdir::{apply, Applied, Delivered, DirError, SecretsDir};

/// Default size of the tmpfs the sidecar mounts: plenty for secret files.
pub const DEFAULT_TMPFS_SIZE: u64 = 1 << 20;
const REVOKE_TIMEOUT: Duration = Duration::from_secs(1);
/// How soon a file whose wipe failed is tried again.
const WIPE_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct SidecarConfig {
    pub socket: PathBuf,
    pub workload: String,
    pub dir: PathBuf,
    pub once: bool,
    pub tmpfs_size: u64,
    /// A service-account token to send with every request (Kubernetes).
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    /// The secrets directory: its checks, mount and writes.
    #[error(transparent)]
    Dir(#[from] DirError),
    #[error("cannot install the SIGTERM/SIGINT handlers that wipe the secrets on exit")]
    Signal(#[source] io::Error),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}: the first fetch was denied, so the sidecar stops; check the workload's policy ([match] and [isolation]) with `unbaked policy test`")]
    Denied(String),
}

impl SidecarError {
    pub fn exit_code(&self) -> i32 {
        match self {
            SidecarError::Client(e) => e.exit_code(),
            SidecarError::Denied(_) => exit::DENIED,
            _ => exit::FAILURE,
        }
    }
}

/// Runs until SIGTERM/SIGINT (or, with `once`, after the first delivery).
pub async fn run(cfg: SidecarConfig) -> Result<(), SidecarError> {
    // Handlers first, so a SIGTERM from here on wipes instead of killing us
    // with a tmpfs mounted.
    let signals = Signals::new().map_err(SidecarError::Signal)?;
    serve(cfg, Stop::Signals(signals), None).await
}

/// The file half of `unbaked exec --files DIR` (a Compose service's shim):
/// like [`run`], but `ready` is told once the first delivery is on disk,
/// and it stops (wiping and revoking) when `stop` is told or dropped, not
/// on signals: the shim forwards those to the app and stops this once the
/// app has exited.
pub async fn run_until(
    cfg: SidecarConfig,
    ready: tokio::sync::oneshot::Sender<()>,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> Result<(), SidecarError> {
    serve(cfg, Stop::Told(stop), Some(ready)).await
}

async fn serve(
    cfg: SidecarConfig,
    mut signals: Stop,
    ready: Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<(), SidecarError> {
    // Refuse a non-tmpfs directory before any network call.
    let mut dir = SecretsDir::open(&cfg.dir, cfg.tmpfs_size)?;
    let mut sidecar = Sidecar {
        client: Client::new(&cfg.socket).with_token_file(cfg.token_file.clone()),
        state: inherited(&dir, Instant::now()),
        cfg,
        lease_id: None,
        watch: Watch::new(),
        ready,
    };
    if !sidecar.state.is_empty() {
        tracing::warn!(
            files = sidecar.state.len(),
            "a previous sidecar left files here: they are replaced by this delivery or wiped at their ttl"
        );
    }
    let outcome = sidecar.serve(&mut dir, &mut signals).await;
    if let Ok(Exit::Once) = outcome {
        return Ok(()); // the files stay for the workload
    }
    let wiped = dir.wipe_all();
    if let Some(id) = sidecar.lease_id.take() {
        let client = sidecar.client.clone().with_timeout(REVOKE_TIMEOUT);
        if let Err(e) = client.revoke(&id).await {
            tracing::warn!(error = %e, lease_id = %id, "could not revoke the lease: it ends at its ttl");
        }
    }
    let workload = &sidecar.cfg.workload;
    match &wiped {
        Ok(()) => tracing::info!(%workload, "secrets wiped"),
        Err(e) => {
            let left = dir.files().count();
            tracing::error!(%workload, error = %e, files_left = left, "could not wipe every secret file: the next sidecar on this directory wipes the rest");
        }
    }
    outcome.and(wiped.map_err(SidecarError::from)).map(drop)
}

enum Exit {
    Once,
    Shutdown,
}

/// A killed predecessor's files, as placeholders that no lease item
/// matches: a delivery rewrites or wipes each, else it expires on time.
fn inherited(dir: &SecretsDir, now: Instant) -> Applied {
    dir.inherited()
        .iter()
        .map(|(path, left)| {
            let delivered = Delivered {
                path: path.clone(),
                version: u64::MAX,
                delivery: Delivery::File {
                    path: path.clone(),
                    mode: 0,
                    uid: None,
                    gid: None,
                },
                expires: now + *left,
            };
            (format!("inherited:{path}"), delivered)
        })
        .collect()
}

/// When to call the broker next, and how far the backoffs have grown.
struct Pace {
    next_call: Instant,
    transient: Backoff,
    denied: Backoff,
    /// Something was delivered since the start.
    delivered: bool,
}

struct Sidecar {
    cfg: SidecarConfig,
    client: Client,
    /// Item id -> what is on disk for it.
    state: Applied,
    lease_id: Option<String>,
    /// Templates' `on_change`: content hashes and pending actions.
    watch: Watch,
    /// Told after the first delivery (`exec --files`).
    ready: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Sidecar {
    async fn serve(
        &mut self,
        dir: &mut SecretsDir,
        signals: &mut Stop,
    ) -> Result<Exit, SidecarError> {
        let req = FetchRequest {
            workload: self.cfg.workload.clone(),
            kinds: vec![DeliveryKind::File],
        };
        let mut pace = Pace {
            next_call: Instant::now(),
            transient: Backoff::new(Duration::from_millis(250), Duration::from_secs(30)),
            denied: Backoff::new(Duration::from_secs(1), Duration::from_secs(30)),
            delivered: false,
        };
        loop {
            let expiry = self.state.values().map(|d| d.expires).min();
            let action_due = self.watch.next_due();
            let renewing = self.lease_id.is_some();
            let next_call = pace.next_call;
            let answer = tokio::select! {
                _ = signals.recv() => return Ok(Exit::Shutdown),
                _ = sleep_until_opt(expiry) => None,
                _ = sleep_until_opt(action_due) => {
                    self.run_actions().await;
                    continue;
                }
                r = async {
                    sleep_until(next_call).await;
                    let sent = Instant::now();
                    let r = match &self.lease_id {
                        Some(id) => self.client.renew(id).await,
                        None => self.client.fetch(&req).await,
                    };
                    (sent, r)
                } => Some(r),
            };
            let now = Instant::now();
            match answer {
                None => {
                    self.expire(dir, now);
                    self.persist(dir);
                }
                Some((sent, Ok(lease))) => {
                    if let Some(exit) = self.delivered(dir, &lease, sent, now, &mut pace)? {
                        return Ok(exit);
                    }
                }
                Some((_, Err(e))) => self.failed(dir, e, renewing, now, &mut pace)?,
            }
        }
    }

    /// A lease arrived: files brought in line, actions noted, the next
    /// renewal planned. `Some` when the sidecar is done (`--once`).
    fn delivered(
        &mut self,
        dir: &mut SecretsDir,
        lease: &Lease,
        sent: Instant,
        now: Instant,
        pace: &mut Pace,
    ) -> Result<Option<Exit>, SidecarError> {
        let workload = self.cfg.workload.clone();
        let new_lease =
            !pace.delivered || self.lease_id.as_deref() != Some(lease.lease_id.as_str());
        // Ours from here: revoked on the way out even if a write fails.
        self.lease_id = Some(lease.lease_id.clone());
        let (written, wiped) = self.apply(dir, lease, sent)?;
        // After the new content is in place.
        self.watch.observe(lease, now);
        pace.transient.reset();
        pace.denied.reset();
        let files = self.state.len();
        if new_lease {
            tracing::info!(%workload, lease_id = %lease.lease_id, files, "secrets delivered");
        } else if written + wiped > 0 {
            tracing::info!(%workload, lease_id = %lease.lease_id, files, written, wiped, "secrets updated");
        } else {
            tracing::debug!(%workload, lease_id = %lease.lease_id, "lease renewed");
        }
        pace.delivered = true;
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(());
        }
        if self.cfg.once {
            // Nobody renews these: no deadline for a successor to enforce.
            dir.forget_state();
            return Ok(Some(Exit::Once));
        }
        self.persist(dir);
        // From when the request left, like the expiry: a slow answer does
        // not push the next renewal towards it.
        pace.next_call = sent + renew_after(lease.ttl_secs, crate::jitter::unit());
        Ok(None)
    }

    /// A fetch or renewal failed: wipe on a withdrawal, stop on a denial
    /// before anything was delivered, else try again with backoff.
    fn failed(
        &mut self,
        dir: &mut SecretsDir,
        e: ClientError,
        renewing: bool,
        now: Instant,
        pace: &mut Pace,
    ) -> Result<(), SidecarError> {
        let workload = self.cfg.workload.clone();
        let withdrawn = e.is_denied() || (!renewing && e.is_not_found());
        if withdrawn && pace.delivered {
            let left = self.wipe_files(dir);
            self.persist(dir);
            self.lease_id = None;
            if left == 0 {
                tracing::warn!(%workload, reason = %e, "the broker withdrew the secrets: files wiped, retrying");
            } else {
                tracing::error!(%workload, reason = %e, files_left = left, "the broker withdrew the secrets: not every file could be wiped, trying again");
            }
            pace.next_call = now + pace.denied.next_wait();
        } else if e.is_denied() {
            return Err(SidecarError::Denied(match e {
                ClientError::Api(a) => a.message,
                other => other.to_string(),
            }));
        } else if renewing && e.is_not_found() {
            tracing::info!(%workload, "the broker does not know the lease (restarted?): fetching anew");
            self.lease_id = None;
            pace.next_call = now;
        } else if !pace.delivered && (self.cfg.once || !transient_error(&e)) {
            return Err(SidecarError::Client(e));
        } else {
            let wait = pace.transient.next_wait();
            tracing::warn!(%workload, error = %e, retry_in = ?wait, "cannot reach the broker: files stay until their ttl");
            pace.next_call = now + wait;
        }
        Ok(())
    }

    /// Carry out the change actions whose debounce window closed. The
    /// sidecar runs commands, and has the broker signal the app container
    /// the policy names; it has no process of its own to signal or restart
    /// (that is `unbaked exec`'s, or the engine's for `unbaked run`).
    async fn run_actions(&mut self) {
        use crate::actions::Failed;
        use unbaked_api::wire::OnChange;
        for due in self.watch.take_due(Instant::now()) {
            match &due.action {
                OnChange::Command { command } => {
                    let r = crate::actions::run_command(command).await;
                    self.watch.done(&due, r, Instant::now());
                }
                OnChange::Signal {
                    container: Some(_), ..
                } => {
                    let Some(lease) = self.lease_id.clone() else {
                        self.watch.done(&due, Err("no lease to act for".into()), Instant::now());
                        continue;
                    };
                    match crate::actions::ask_broker(&self.client, &lease, &due).await {
                        Ok(()) => self.watch.done(&due, Ok(()), Instant::now()),
                        Err(Failed::Retry(e)) => self.watch.done(&due, Err(e), Instant::now()),
                        Err(Failed::Refused(e)) => self.watch.abandon(&due, &e),
                    }
                }
                _ => self.watch.abandon(
                    &due,
                    "the sidecar has no app process to signal or restart: use on_change = \"command\", name the app container with signal_container, or run the app under unbaked exec",
                ),
            }
        }
    }

    /// Bring the directory in line with a lease answer; (written, wiped).
    fn apply(
        &mut self,
        dir: &mut SecretsDir,
        lease: &Lease,
        sent: Instant,
    ) -> Result<(usize, usize), SidecarError> {
        let (state, changes) = apply(dir, &self.state, lease, sent, None)?;
        self.state = state;
        Ok((changes.written, changes.wiped))
    }

    /// Record what is on disk and until when, for a successor if we are killed.
    fn persist(&self, dir: &mut SecretsDir) {
        let now = Instant::now();
        let mut ttls: BTreeMap<String, Duration> = BTreeMap::new();
        for d in self.state.values() {
            let left = d.expires.saturating_duration_since(now);
            let e = ttls.entry(d.path.clone()).or_default();
            *e = (*e).max(left);
        }
        if let Err(e) = dir.save_state(&ttls) {
            tracing::warn!(error = %e, "cannot record the delivered files: a sidecar restarted after a crash would not know their ttl");
        }
    }

    /// Wipe the files whose ttl ran out without a renewal.
    fn expire(&mut self, dir: &mut SecretsDir, now: Instant) {
        let expired: Vec<String> = self
            .state
            .iter()
            .filter(|(_, d)| d.expires <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            if let Some(d) = self.state.remove(&id) {
                let path = d.path.clone();
                if self.wipe_or_retry(dir, d, now) {
                    tracing::warn!(workload = %self.cfg.workload, %path, "secret file expired without renewal: wiped");
                }
            }
        }
    }

    /// Wipe every file; how many are still there (to be tried again).
    fn wipe_files(&mut self, dir: &mut SecretsDir) -> usize {
        let now = Instant::now();
        std::mem::take(&mut self.state)
            .into_values()
            .filter(|d| !self.wipe_or_retry(dir, d.clone(), now))
            .count()
    }

    /// Wipe `d`'s file. If its name is still there, it stays in the state
    /// (and so in the state file) as a placeholder no lease item matches,
    /// due again in [`WIPE_RETRY`]: a file leaves the record only once gone.
    fn wipe_or_retry(&mut self, dir: &mut SecretsDir, d: Delivered, now: Instant) -> bool {
        match dir.wipe(&d.path) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, path = %d.path, "could not wipe a secret file: trying again");
                let retry = Delivered {
                    version: u64::MAX,
                    expires: now + WIPE_RETRY,
                    ..d
                };
                self.state.insert(format!("unwiped:{}", retry.path), retry);
                false
            }
        }
    }
}

/// Worth retrying: the broker or its store may come back.
fn transient_error(e: &ClientError) -> bool {
    match e {
        ClientError::Unavailable { .. } | ClientError::Timeout { .. } => true,
        ClientError::Api(a) => matches!(
            a.code,
            ErrorCode::StoreUnavailable
                | ErrorCode::AuditUnavailable
                | ErrorCode::Overloaded
                | ErrorCode::Internal
        ),
        ClientError::Protocol(_) => false,
        // The kubelet swaps projected tokens in place; the next read works.
        ClientError::Token { .. } => true,
    }
}

/// Renew between 55% and two thirds of the ttl (`jitter` 1 to 0), at least
/// a second apart: sidecars started together (a deploy) drift apart
/// instead of renewing in bursts, and every renewal comes within two
/// thirds of the ttl, so a rotation still arrives within one ttl.
fn renew_after(ttl_secs: u64, jitter: f64) -> Duration {
    let full = Duration::from_millis(ttl_secs.saturating_mul(2000) / 3);
    let early = full.mul_f64((2.0 / 3.0 - 0.55) / (2.0 / 3.0) * jitter.clamp(0.0, 1.0));
    (full - early).max(Duration::from_secs(1))
}

/// Sleep until `t` (a std instant: the secrets directory's deadlines are).
async fn sleep_until(t: Instant) {
    tokio::time::sleep_until(t.into()).await
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => sleep_until(t).await,
        None => std::future::pending().await,
    }
}

struct Signals {
    term: Signal,
    int: Signal,
}

/// What ends the sidecar: SIGTERM/SIGINT, or its shim saying so.
enum Stop {
    Signals(Signals),
    Told(tokio::sync::oneshot::Receiver<()>),
}

impl Stop {
    async fn recv(&mut self) {
        match self {
            Stop::Signals(s) => s.recv().await,
            Stop::Told(rx) => {
                let _ = rx.await;
            }
        }
    }
}

impl Signals {
    fn new() -> io::Result<Self> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_between_55_percent_and_two_thirds_of_the_ttl_at_least_a_second() {
        assert_eq!(renew_after(60, 0.0), Duration::from_secs(40));
        assert_eq!(renew_after(60, 1.0), Duration::from_secs(33));
        let mid = renew_after(60, crate::jitter::unit());
        assert!(mid >= Duration::from_secs(33) && mid <= Duration::from_secs(40));
        assert_eq!(renew_after(1, 0.5), Duration::from_secs(1));
        assert_eq!(renew_after(0, 0.0), Duration::from_secs(1));
    }

    #[test]
    fn an_overloaded_broker_is_retried_like_an_absent_one() {
        let api = |code| {
            ClientError::Api(unbaked_api::wire::ApiError {
                code,
                message: String::new(),
            })
        };
        assert!(transient_error(&api(ErrorCode::Overloaded)));
        assert!(transient_error(&api(ErrorCode::StoreUnavailable)));
        assert!(!transient_error(&api(ErrorCode::BadRequest)));
    }

    #[test]
    fn exit_codes() {
        assert_eq!(SidecarError::Denied("no".into()).exit_code(), exit::DENIED);
        let e = SidecarError::from(DirError::NotTmpfs {
            dir: "/x".into(),
            fs_type: "ext4".into(),
        });
        assert_eq!(e.exit_code(), exit::FAILURE);
        assert!(e.to_string().starts_with("/x is not on tmpfs (it is ext4)"));
    }
}
