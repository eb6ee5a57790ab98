//! The unbaked broker: attests callers on its unix socket, evaluates their
//! workload's policy, reads the store, leases and audits what it releases.
//!
//! **Invariant:** this crate is the only one that serves the API or opens a
//! store; clients speak to it through `unbaked-sidecar`'s client.
#![forbid(unsafe_code)]
// Libraries report through `tracing` and errors; only the binary prints.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

pub mod admin;
pub mod attest;
pub mod audit;
pub mod config;
pub mod dev;
pub mod lease;
pub mod lease_keep;
pub mod metrics;
pub mod names;
pub mod platform;
pub mod reload;
pub mod request;
pub mod rules;
pub mod server;
pub mod service;
mod socket_io;
pub mod store;

use audit::{Audit, Event, Record};
use config::BrokerConfig;
use platform::{BoxFuture, Platform};
use request::PlatformError;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::{Store, StoreError};
use tokio::signal::unix::{signal, Signal, SignalKind};

pub use config::{BrokerOptions, ConfigError};
pub use service::Broker;

/// How often expired leases are swept (and audited).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the policies do not load; nothing was started:\n{0}")]
    Policies(unbaked_policy::Diagnostics),
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
    #[error("cannot listen on {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on --admin-addr {addr}: {source}")]
    AdminBind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    OpenStore(#[from] store::OpenError),
    #[error("cannot verify service-account tokens ([kubernetes]): {0}")]
    Kubernetes(String),
    /// The container platform cannot start (e.g. `<socket dir>/containers`
    /// is not private to the broker).
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error("cannot open the kept leases: {0}")]
    Leases(store::file::FileStoreError),
    #[error(
        "the kept leases in {dir} do not read ({reason}): move {dir} away to start without them"
    )]
    LeasesUnreadable { dir: PathBuf, reason: String },
}

/// Opens the container platform for a broker on the socket at the given
/// (absolute) path, before the socket exists: `unbaked broker` opens
/// Docker's (`unbaked_docker::open`); [`host_only`] opens none.
pub type PlatformOpener = Box<dyn FnOnce(PathBuf) -> BoxFuture<'static, Arc<dyn Platform>> + Send>;

/// No container platform: every caller is a host process.
pub fn host_only() -> PlatformOpener {
    Box::new(|_| Box::pin(async { Arc::new(platform::HostOnly) as Arc<dyn Platform> }))
}

fn fallback_dev_socket(uid: u32) -> PathBuf {
    let base = std::env::var_os(config::ENV_XDG_RUNTIME_DIR)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/unbaked-{uid}")));
    base.join("unbaked").join("broker.sock")
}

/// SIGTERM and SIGINT, installed before anything else (SIGHUP is
/// [`reload::triggers`]'s): until a handler is installed, a signal takes
/// its default action and kills the broker.
struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn install() -> Result<Signals, BrokerError> {
        let sig = |k| signal(k).map_err(BrokerError::Signals);
        Ok(Signals {
            term: sig(SignalKind::terminate())?,
            int: sig(SignalKind::interrupt())?,
        })
    }

    async fn stop(&mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = self.int.recv() => tracing::info!("SIGINT: stopping"),
        }
    }
}

/// The policies, the audit chain (its start recorded) and, in dev mode,
/// the demo secret: everything the core needs before it serves.
async fn open_core(
    cfg: &BrokerConfig,
    store: &Arc<dyn Store>,
    extra: &reload::Extra,
) -> Result<(unbaked_policy::PolicySet, Audit), BrokerError> {
    let policies = reload::load(cfg.policies.as_deref(), extra).map_err(BrokerError::Policies)?;
    let audit = match &cfg.audit {
        Some(path) => Audit::open(path)?,
        None => Audit::to_log(),
    };
    // The chain's last run ended without `stop`: said in the log and the chain.
    audit.report_unterminated()?;
    audit.record(
        Event::Start,
        Record {
            reason: Some(format!(
                "store {}, {} workloads",
                store.name(),
                policies.len()
            )),
            ..Record::default()
        },
    )?;
    if cfg.dev {
        let data = std::collections::BTreeMap::from([(
            dev::DEMO_KEY.to_string(),
            unbaked_api::Secret::from_slice(dev::DEMO_VALUE),
        )]);
        store.write(dev::DEMO_SECRET, data).await?;
    }
    Ok((policies, audit))
}

/// The admin listener (`/healthz`, `/readyz`, `/metrics`), if configured.
async fn start_admin(
    cfg: &BrokerConfig,
    broker: &Arc<Broker>,
) -> Result<Option<tokio::task::JoinHandle<()>>, BrokerError> {
    let Some(addr) = cfg.admin_addr else {
        return Ok(None);
    };
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "the admin listener is not on loopback: anyone who reaches it sees metrics and health");
    }
    let listener = admin::bind(addr)
        .await
        .map_err(|source| BrokerError::AdminBind { addr, source })?;
    tracing::info!(%addr, "admin listener: /healthz /readyz /metrics");
    Ok(Some(tokio::spawn(admin::serve(listener, broker.clone()))))
}

/// Run the broker until SIGTERM or SIGINT, with the container platform
/// `open_platform` opens.
pub async fn run(cfg: BrokerConfig, open_platform: PlatformOpener) -> Result<(), BrokerError> {
    // Handlers first. From here on a SIGHUP or a policy edit is queued for
    // the reload task, so one that comes right after the socket answers is
    // not lost either.
    let triggers = reload::triggers(cfg.policies.as_deref()).map_err(BrokerError::Signals)?;
    let mut signals = Signals::install()?;
    let uid = nix::unistd::geteuid().as_raw();
    let store = store::open(&cfg)?;
    let extra: reload::Extra = if cfg.dev {
        Arc::new(move |set| dev::add_demo(set, uid))
    } else {
        Arc::new(|_| {})
    };
    let (policies, audit) = open_core(&cfg, &store, &extra).await?;
    let workloads = policies.len();
    let broker = build(&cfg, Broker::new(policies, store, audit, uid)).await?;
    // The platform is opened before the socket exists: a caller that
    // reaches the socket finds the broker fully started.
    let mut socket = cfg.socket.clone();
    if cfg.dev && server::bind_denied(&socket) {
        socket = fallback_dev_socket(uid);
    }
    let abs_socket = std::path::absolute(&socket).unwrap_or_else(|_| socket.clone());
    let platform = open_platform(abs_socket).await;
    let broker = Arc::new(broker.with_platform(platform.clone()));
    let admin_task = start_admin(&cfg, &broker).await?;
    let listener =
        server::bind(&socket, &cfg.socket_access).map_err(|source| BrokerError::Bind {
            path: socket.clone(),
            source,
        })?;
    let platform_tasks = platform
        .clone()
        .start(broker.clone() as Arc<dyn platform::Core>)?;
    tracing::info!(socket = %socket.display(), store = broker.store().name(), workloads, "broker listening");
    if cfg.dev {
        print_banner(&dev::banner(&socket, cfg.policies.as_deref(), workloads));
    }
    let watcher = tokio::spawn(reload::watch(
        broker.clone(),
        cfg.policies.clone(),
        extra,
        triggers,
    ));
    let sweeper = tokio::spawn(sweep(broker.clone()));
    // The accept loop runs on a worker, as a task: the thread that blocks
    // on `run` drives no I/O, so accepting there cost every connection a
    // futex wake of that thread and, for the task it spawned, an eventfd
    // wake of a worker. On a worker, a connection's task starts on the
    // thread that accepted it.
    let mut server = tokio::spawn(server::serve(listener, broker.clone()));
    tokio::select! {
        _ = &mut server => {}
        _ = signals.stop() => {}
    }
    server.abort();
    // The listener is closed before its socket file is removed.
    let _ = server.await;
    watcher.abort();
    for t in [sweeper]
        .into_iter()
        .chain(admin_task)
        .chain(platform_tasks)
    {
        t.abort();
    }
    platform.stop();
    let _ = std::fs::remove_file(&socket);
    shut_down(&broker);
    Ok(())
}

/// The parts of the broker the configuration asks for: the leases a
/// previous run kept (taken back before anyone can ask), Vault's TLS gauge,
/// the Kubernetes token verifier.
async fn build(cfg: &BrokerConfig, mut broker: Broker) -> Result<Broker, BrokerError> {
    if let Some(f) = &cfg.file_store {
        let keeper = lease_keep::LeaseKeeper::open(f).map_err(BrokerError::Leases)?;
        let kept = keeper
            .load()
            .map_err(|reason| BrokerError::LeasesUnreadable {
                dir: f.dir.join(lease_keep::DIR),
                reason,
            })?;
        broker = broker.with_keeper(keeper);
        let (live, ended) = broker.restore_leases(kept);
        tracing::info!(live, ended, "kept leases taken back");
    }
    if let Some(vault) = &cfg.vault {
        let off = i64::from(vault.tls.skip_verify);
        broker.metrics().vault_tls_verify_disabled.set(off);
    }
    if let Some(k8s) = &cfg.kubernetes {
        let verifier = attest::token::load(k8s)
            .await
            .map_err(BrokerError::Kubernetes)?;
        tracing::info!(issuer = %k8s.issuer, audience = %k8s.audience, "service-account tokens accepted");
        broker = broker.with_tokens(verifier);
    }
    Ok(broker)
}

/// After serving: the leases kept for the next run, pending denials
/// flushed, the audit chain closed.
fn shut_down(broker: &Broker) {
    // Served leases as they stand now, for the next run.
    if let Err(e) = broker.save_leases() {
        tracing::error!(error = %e, "could not keep the leases for the next start");
    }
    broker.flush_denials(true);
    // Closes the chain: an edit of the last real record now breaks a link.
    if let Err(e) = broker.audit().record(Event::Stop, Record::default()) {
        tracing::error!(error = %e, "could not audit the stop");
    }
}

/// The dev banner is the one thing the broker prints: it is for the person
/// who typed `unbaked broker --dev`, not a log line.
#[allow(clippy::print_stdout)]
fn print_banner(banner: &str) {
    println!("{banner}");
}

/// End expired leases (audited), every [`SWEEP_EVERY`].
async fn sweep(broker: Arc<Broker>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tick.tick().await;
        broker.expire(Instant::now());
        let b = broker.clone();
        match tokio::task::spawn_blocking(move || b.save_leases()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "could not keep the leases"),
            Err(e) => tracing::error!(error = %e, "could not keep the leases"),
        }
    }
}
