//! The unbaked broker: attests callers on its unix socket, evaluates their
//! workload's policy, reads the store, leases and audits what it releases.
//!
//! **Invariant:** this crate is the only one that serves the API or opens a
//! store; clients speak to it through `unbaked-sidecar`'s client.
#![forbid(unsafe_code)]

pub mod admin;
pub mod attest;
pub mod audit;
pub mod config;
pub mod containers;
pub mod dev;
pub mod events;
pub mod host_mount;
pub mod isolation;
pub mod launch;
pub mod lease;
pub mod metrics;
pub mod mount_identity;
pub mod reload;
pub mod rules;
pub mod server;
pub mod service;
pub mod store;

use audit::{Audit, Event, Record};
use config::{BrokerConfig, StoreKind};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::memory::MemoryStore;
use store::Store;

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
    /// `<socket dir>/containers` is not private to the broker.
    #[error(transparent)]
    Containers(#[from] containers::BaseDirError),
    #[error("cannot start: {0}")]
    Start(String),
}

fn fallback_dev_socket(uid: u32) -> PathBuf {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/unbaked-{uid}")));
    base.join("unbaked").join("broker.sock")
}

/// Run the broker until SIGTERM or SIGINT.
pub async fn run(cfg: BrokerConfig) -> Result<(), BrokerError> {
    use tokio::signal::unix::{signal, SignalKind};
    // Handlers first: until a handler is installed, SIGHUP (a reload, a log
    // rotation) takes its default action and kills the broker. From here on
    // a SIGHUP or a policy edit is queued for the reload task, so one that
    // comes right after the socket answers is not lost either.
    let signal_err =
        |e: std::io::Error| BrokerError::Start(format!("cannot install signal handlers: {e}"));
    let triggers = reload::triggers(cfg.policies.as_deref()).map_err(signal_err)?;
    let mut term = signal(SignalKind::terminate()).map_err(signal_err)?;
    let mut int = signal(SignalKind::interrupt()).map_err(signal_err)?;
    let uid = nix::unistd::geteuid().as_raw();
    let store: Arc<dyn Store> =
        match (cfg.store, &cfg.vault) {
            (StoreKind::Vault, Some(vault)) => {
                let store = store::vault::VaultStore::new(vault.clone())
                    .map_err(|e| BrokerError::Start(e.to_string()))?;
                // Renews the broker's token and logs in again when it is refused.
                store.spawn_token_keeper();
                store
            }
            (StoreKind::Vault, None) => {
                return Err(BrokerError::Start(
                    "--store vault without a [vault] configuration".into(),
                ))
            }
            (StoreKind::Memory, _) => Arc::new(MemoryStore::new().map_err(|_| {
                BrokerError::Start("no system randomness for the sealing key".into())
            })?),
        };
    let extra: reload::Extra = if cfg.dev {
        Arc::new(move |set| dev::add_demo(set, uid))
    } else {
        Arc::new(|_| {})
    };
    let policies = reload::load(cfg.policies.as_deref(), &extra).map_err(BrokerError::Policies)?;
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
        store
            .write(dev::DEMO_SECRET, data)
            .await
            .map_err(|e| BrokerError::Start(e.to_string()))?;
    }
    let workloads = policies.len();
    let broker = Arc::new(Broker::new(policies, store, audit, uid));
    if let Some(k8s) = &cfg.kubernetes {
        let verifier = attest::token::load(k8s).await.map_err(BrokerError::Start)?;
        tracing::info!(issuer = %k8s.issuer, audience = %k8s.audience, "service-account tokens accepted");
        broker.set_token_verifier(verifier);
    }
    let admin_task = match cfg.admin_addr {
        Some(addr) => {
            if !addr.ip().is_loopback() {
                tracing::warn!(%addr, "the admin listener is not on loopback: anyone who reaches it sees metrics and health");
            }
            let listener = admin::bind(addr).await.map_err(|source| {
                BrokerError::Start(format!("cannot listen on --admin-addr {addr}: {source}"))
            })?;
            tracing::info!(%addr, "admin listener: /healthz /readyz /metrics");
            Some(tokio::spawn(admin::serve(listener, broker.clone())))
        }
        None => None,
    };

    // Docker: container attestation, `unbaked run` launches, events. Without
    // an engine the broker still serves host processes; callers inside
    // containers are denied (their isolation cannot be verified). Set up
    // before the socket exists: a caller that reaches the socket finds the
    // broker fully started.
    let mut socket = cfg.socket.clone();
    if cfg.dev && server::bind_denied(&socket) {
        socket = fallback_dev_socket(uid);
    }
    let engine = attest::docker::Engine::from_env().await;
    let abs_socket = std::path::absolute(&socket).unwrap_or_else(|_| socket.clone());
    let docker_side = Arc::new(containers::Containers::new(engine, &abs_socket));
    let listener =
        server::bind(&socket, &cfg.socket_access).map_err(|source| BrokerError::Bind {
            path: socket.clone(),
            source,
        })?;
    docker_side.secure_base()?;
    for launch in docker_side.sweep_leftovers() {
        // A restart forgets the earlier launches' leases: say so, per launch.
        broker.audit().record(
            Event::Revoke,
            Record {
                workload: None,
                reason: Some(format!(
                    "launch {launch}: the previous broker stopped without wiping; its files were zeroed and unmounted, and its container is no longer served until it is started again"
                )),
                ..Record::default()
            },
        )?;
    }
    broker.set_containers(docker_side);
    let docker_tasks = [
        tokio::spawn(events::follow(broker.clone())),
        tokio::spawn(containers::renewals(broker.clone())),
    ];
    tracing::info!(socket = %socket.display(), store = broker.store().name(), workloads, "broker listening");
    if cfg.dev {
        println!(
            "{}",
            dev::banner(&socket, cfg.policies.as_deref(), workloads)
        );
    }

    let watcher = tokio::spawn(reload::watch(
        broker.clone(),
        cfg.policies.clone(),
        extra,
        triggers,
    ));
    let sweeper = {
        let broker = broker.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            loop {
                tick.tick().await;
                broker.expire(Instant::now());
            }
        })
    };
    tokio::select! {
        _ = server::serve(listener, broker.clone()) => {}
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    watcher.abort();
    if let Some(t) = admin_task {
        t.abort();
    }
    sweeper.abort();
    for t in docker_tasks {
        t.abort();
    }
    if let Some(c) = broker.containers() {
        c.wipe_all();
    }
    let _ = std::fs::remove_file(&socket);
    broker.flush_denials(true);
    // Closes the chain: an edit of the last real record now breaks a link.
    if let Err(e) = broker.audit().record(Event::Stop, Record::default()) {
        tracing::error!(error = %e, "could not audit the stop");
    }
    Ok(())
}
