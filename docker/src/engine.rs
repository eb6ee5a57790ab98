//! Containers, by the caller's pid: `/proc/<pid>/cgroup` names the container
//! (cgroup v1 and v2, the cgroupfs and systemd drivers), and the Docker
//! Engine (bollard, over its unix socket) says what it is and how it runs.
//!
//! **Invariant:** the container comes from the kernel (the peer's pid, its
//! cgroup) and the engine, never from the request. A caller outside any
//! container is [`Attestation::Host`]; a caller in a container the engine
//! cannot vouch for (not running, unknown, engine unreachable) is
//! [`Attestation::Unverified`], which matches no docker selector and is
//! released nothing (isolation cannot be checked).

use crate::isolation::{LiveContainer, LiveMount, LiveNetwork};
use bollard::models::ContainerInspectResponse;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use unbaked_broker::attest::container::{Attestation, Evidence};
use unbaked_broker::attest::kernel;
use unbaked_broker::request::PlatformError;
use unbaked_broker::service::ServiceError;
use unbaked_policy::ContainerInfo;

/// Seconds bollard waits for an engine answer.
const ENGINE_TIMEOUT_SECS: u64 = 10;
const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";

impl Evidence for LiveContainer {
    fn id(&self) -> &str {
        &self.id
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn info(&self) -> ContainerInfo {
        ContainerInfo {
            id: self.id.clone(),
            labels: self.labels.clone(),
            image_id: self.image_id.clone(),
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The live container a piece of evidence is, when Docker attested it.
pub fn live(evidence: &dyn Evidence) -> Option<&LiveContainer> {
    evidence.as_any().downcast_ref::<LiveContainer>()
}

/// Container ids named in a `/proc/<pid>/cgroup`, outermost first:
/// `/docker/<id>` (cgroupfs, v1 and v2), `/system.slice/docker-<id>.scope`
/// (systemd), `/kubepods/.../<id>` and `--cgroup-parent` paths.
pub fn container_ids_from_cgroup(text: &str) -> Vec<String> {
    // Bytes, not `str` patterns: this runs on every request of a new
    // connection, and `splitn`/`split` by `char` were a quarter of the
    // instructions a connection adds to a fetch (13 lines of cgroup v1).
    let mut ids: Vec<String> = Vec::new();
    for line in text.as_bytes().split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        // hierarchy-id:controllers:path; the path may itself hold ':'.
        let mut colons = line.iter().enumerate().filter(|(_, b)| **b == b':');
        let Some((second, _)) = colons.nth(1) else {
            continue;
        };
        for comp in line[second + 1..].split(|b| *b == b'/') {
            if comp.len() < 64 {
                continue;
            }
            let comp = comp.strip_suffix(b".scope").unwrap_or(comp);
            let comp = comp.strip_prefix(b"docker-").unwrap_or(comp);
            if comp.len() == 64
                && comp.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                && !ids.iter().any(|i| i.as_bytes() == comp)
            {
                // 64 ASCII hex digits: valid UTF-8.
                ids.push(String::from_utf8_lossy(comp).into_owned());
            }
        }
    }
    ids
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the Docker Engine at {endpoint} is not reachable ({detail}): start it, or set DOCKER_HOST to its unix socket")]
    Unreachable { endpoint: String, detail: String },
    #[error("the Docker Engine at {endpoint} refused {what}: {detail}")]
    Refused {
        endpoint: String,
        what: String,
        detail: String,
    },
    #[error("image {0} is not on this host: build or pull it first (unbaked run does not pull)")]
    NoImage(String),
    #[error("network {name} exists but allows inter-container traffic: remove it (docker network rm {name}) and unbaked run recreates it with -o com.docker.network.bridge.enable_icc=false")]
    NetworkNotIsolated { name: String },
}

impl From<EngineError> for PlatformError {
    fn from(e: EngineError) -> PlatformError {
        match e {
            EngineError::Unreachable { .. } => PlatformError::Unreachable(e.to_string()),
            EngineError::Refused { .. } => PlatformError::Refused(e.to_string()),
            EngineError::NoImage(_) | EngineError::NetworkNotIsolated { .. } => {
                PlatformError::Invalid(e.to_string())
            }
        }
    }
}

impl From<EngineError> for ServiceError {
    fn from(e: EngineError) -> ServiceError {
        ServiceError::Platform(e.into())
    }
}

/// The Docker Engine, as the broker reaches it.
#[derive(Debug)]
pub struct Engine {
    client: RwLock<Option<bollard::Docker>>,
    /// The engine's socket path, for messages and the isolation check.
    socket: String,
    /// The container the broker itself runs in, if any.
    own: Option<String>,
    proc_root: PathBuf,
    /// Network options never change after creation: cache them by id.
    networks: Mutex<HashMap<String, LiveNetwork>>,
    data_root: Mutex<Option<PathBuf>>,
}

fn socket_from_env(docker_host: Option<String>) -> Result<String, String> {
    match docker_host.filter(|h| !h.is_empty()) {
        None => Ok(DEFAULT_DOCKER_SOCKET.into()),
        Some(h) => match h.strip_prefix("unix://") {
            Some(p) => Ok(p.into()),
            None => Err(format!(
                "DOCKER_HOST={h} is not a unix socket; the broker only talks to a local engine (unix:///var/run/docker.sock)"
            )),
        },
    }
}

impl Engine {
    /// The engine at `DOCKER_HOST` (a `unix://` path) or the default socket.
    /// Never fails: an unreachable engine is retried on use, and until then
    /// container callers are unverified.
    pub async fn from_env() -> Engine {
        let host = std::env::var("DOCKER_HOST").ok();
        let (socket, problem) = match socket_from_env(host) {
            Ok(s) => (s, None),
            Err(e) => (DEFAULT_DOCKER_SOCKET.to_string(), Some(e)),
        };
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|t| container_ids_from_cgroup(&t).pop());
        let engine = Engine {
            client: RwLock::new(None),
            socket,
            own,
            proc_root: PathBuf::from("/proc"),
            networks: Mutex::new(HashMap::new()),
            data_root: Mutex::new(None),
        };
        if let Some(p) = problem {
            tracing::warn!("{p}");
        } else if let Err(e) = engine.client().await {
            tracing::warn!(error = %e, "no Docker Engine: host processes are served; container callers are denied until it is reachable");
        }
        engine
    }

    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// A connected client, connecting (and negotiating the API version) on
    /// first use or after a failure.
    pub async fn client(&self) -> Result<bollard::Docker, EngineError> {
        if let Some(c) = self
            .client
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Ok(c);
        }
        let unreachable = |detail: String| EngineError::Unreachable {
            endpoint: self.socket.clone(),
            detail,
        };
        let c = bollard::Docker::connect_with_unix(
            &self.socket,
            ENGINE_TIMEOUT_SECS,
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|e| unreachable(e.to_string()))?;
        // Docker 20.10 speaks API 1.41: talk down to what the engine knows.
        let c = c
            .negotiate_version()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        *self.client.write().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
        Ok(c)
    }

    /// Forget the client after a transport failure, so the next use reconnects.
    pub fn reset(&self) {
        *self.client.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn error(&self, what: &str, e: bollard::errors::Error) -> EngineError {
        match e {
            bollard::errors::Error::DockerResponseServerError { message, .. } => {
                EngineError::Refused {
                    endpoint: self.socket.clone(),
                    what: what.into(),
                    detail: message,
                }
            }
            other => {
                self.reset();
                EngineError::Unreachable {
                    endpoint: self.socket.clone(),
                    detail: other.to_string(),
                }
            }
        }
    }

    /// Who is the process `pid`: a host process, a verified running
    /// container, or a container nobody can vouch for.
    pub async fn attest(&self, pid: Option<i32>) -> Attestation {
        let Some(pid) = pid.filter(|p| *p > 0) else {
            return Attestation::Host;
        };
        match self.cgroup_ids(pid) {
            Ok(ids) => self.attest_ids(pid, &ids).await,
            Err(unreadable) => unreadable,
        }
    }

    /// The container ids in `pid`'s cgroup path, outermost first, this
    /// broker's own left out; `Err`: the caller's process is gone.
    pub fn cgroup_ids(&self, pid: i32) -> Result<Vec<String>, Attestation> {
        let path = self.cgroup_path(pid);
        // The container's identity: read for each connection, never kept
        // across connections. Open, read, close: no `statx`, no probe reads.
        match kernel::read_proc(&path) {
            Ok(text) => Ok(container_ids_from_cgroup(&text)
                .into_iter()
                .filter(|i| Some(i) != self.own.as_ref())
                .collect()),
            Err(e) => Err(Attestation::Unverified {
                id: String::new(),
                reason: format!(
                    "cannot read {} ({e}): the caller's process is gone",
                    path.display()
                ),
            }),
        }
    }

    fn cgroup_path(&self, pid: i32) -> PathBuf {
        kernel::proc_path(&self.proc_root, pid, "cgroup")
    }

    /// [`Engine::attest`] of `pid` whose cgroup names the containers `ids`
    /// (from [`Engine::cgroup_ids`]): no container is a host process; a
    /// container is inspected now, so its live configuration is judged.
    pub async fn attest_ids(&self, pid: i32, ids: &[String]) -> Attestation {
        if ids.is_empty() {
            return Attestation::Host;
        }
        // Innermost first: the engine we talk to knows one of them. The
        // cgroup path only names a candidate: the kernel decides.
        for id in ids.iter().rev() {
            match self.inspect(id).await {
                Ok(Some(c)) if c.running => {
                    let Some(init) = c.pid.and_then(|p| i32::try_from(p).ok()) else {
                        return unverified(id, "the engine reports no process for it".into());
                    };
                    if let Err(why) = kernel::same_container(&self.proc_root, pid, init) {
                        tracing::warn!(container = %id, name = %c.name, pid, reason = %why,
                            "a caller names a running container in its cgroup path but is not in it");
                        return unverified(
                            id,
                            format!("the caller is not in this container: {why}"),
                        );
                    }
                    return Attestation::Container(Arc::new(c) as Arc<dyn Evidence>);
                }
                Ok(Some(_)) => return unverified(id, "the container is not running".into()),
                Ok(None) => continue,
                Err(e) => return unverified(id, e.to_string()),
            }
        }
        let id = ids.last().cloned().unwrap_or_default();
        unverified(
            &id,
            format!(
                "the Docker Engine at {} does not know this container",
                self.socket
            ),
        )
    }

    /// The live container `id`, with its networks; `None` if the engine does
    /// not know it.
    pub async fn inspect(&self, id: &str) -> Result<Option<LiveContainer>, EngineError> {
        let client = self.client().await?;
        let raw = match client.inspect_container(id, None).await {
            Ok(r) => r,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(e) => return Err(self.error("the container inspection", e)),
        };
        let mut c = live_container(raw);
        c.own_user_namespace = c
            .pid
            .and_then(|p| i32::try_from(p).ok())
            .is_some_and(|p| self.own_user_namespace(p));
        let _ = self.data_root().await;
        // Off the runtime: a source on a hung FUSE or NFS mount must not
        // stall the broker. A source that cannot be stat'ed in time stays
        // unknown, which the isolation check refuses.
        let sources: Vec<String> = c.mounts.iter().map(|m| m.source.clone()).collect();
        let socket = std::path::PathBuf::from(&self.socket);
        let ids = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            tokio::task::spawn_blocking(move || {
                crate::mount_identity::host_file_ids(&socket, sources)
            }),
        )
        .await;
        if let Ok(Ok(ids)) = ids {
            for (m, id) in c.mounts.iter_mut().zip(ids) {
                m.source_id = id;
            }
        }
        let endpoints: Vec<(String, String)> = std::mem::take(&mut c.networks)
            .into_iter()
            .map(|n| (n.name, n.id))
            .collect();
        for (name, net_id) in endpoints {
            c.networks
                .push(self.network(&client, &name, &net_id).await?);
        }
        Ok(Some(c))
    }

    /// Whether root in `pid`'s user namespace is not the host's root, by
    /// the kernel: its user namespace is not the broker's own (the host's:
    /// the broker runs on the host), by nsfs device and inode, and its
    /// `uid_map` (as the broker reads it) does not map uid 0 to uid 0.
    /// `false` when any of them cannot be read. (Not pid 1's namespace:
    /// reading another process's needs ptrace access, which a sandbox may
    /// withhold for pid 1; the broker's own is always readable.)
    pub fn own_user_namespace(&self, pid: i32) -> bool {
        let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        let other_ns = match (
            kernel::namespace(&self.proc_root, pid, "user"),
            kernel::namespace(&self.proc_root, me, "user"),
        ) {
            (Ok(c), Ok(host)) => c != host,
            _ => false,
        };
        other_ns
            && self
                .id_maps(pid)
                .is_some_and(|(uid_map, _)| map_id(&uid_map, 0) != Some(0))
    }

    /// `pid`'s `/proc/<pid>/uid_map` and `gid_map` ([`map_id`] reads them).
    pub fn id_maps(&self, pid: i32) -> Option<(String, String)> {
        let dir = self.proc_root.join(pid.to_string());
        let uid_map = std::fs::read_to_string(dir.join("uid_map")).ok()?;
        let gid_map = std::fs::read_to_string(dir.join("gid_map")).ok()?;
        Some((uid_map, gid_map))
    }

    /// Whether the engine remaps users (`userns-remap`) or runs rootless:
    /// `docker info` lists `name=userns` or `name=rootless` among its
    /// security options.
    pub async fn remaps_users(&self) -> Result<bool, EngineError> {
        let client = self.client().await?;
        let info = client
            .info()
            .await
            .map_err(|e| self.error("the engine's info", e))?;
        Ok(info.security_options.unwrap_or_default().iter().any(|o| {
            o.split(',')
                .any(|kv| kv == "name=userns" || kv == "name=rootless")
        }))
    }

    /// Whether the default bridge already has inter-container traffic off
    /// (a daemon started with `--icc=false`): `unbaked run` then keeps
    /// containers on it instead of a workload network.
    pub async fn default_bridge_isolates(&self) -> Result<bool, EngineError> {
        let client = self.client().await?;
        match client.inspect_network("bridge", None).await {
            Ok(raw) => Ok(LiveNetwork {
                name: raw.name.unwrap_or_default(),
                id: raw.id.unwrap_or_default(),
                driver: raw.driver.unwrap_or_default(),
                options: raw.options.unwrap_or_default().into_iter().collect(),
            }
            .isolates()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(self.error("the default bridge's inspection", e)),
        }
    }

    async fn network(
        &self,
        client: &bollard::Docker,
        name: &str,
        id: &str,
    ) -> Result<LiveNetwork, EngineError> {
        let key = if id.is_empty() { name } else { id };
        if let Some(n) = self
            .networks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
        {
            return Ok(n.clone());
        }
        let raw = client
            .inspect_network(key, None)
            .await
            .map_err(|e| self.error("the network inspection", e))?;
        let net = LiveNetwork {
            name: raw.name.unwrap_or_else(|| name.to_string()),
            id: raw.id.unwrap_or_else(|| id.to_string()),
            driver: raw.driver.unwrap_or_default(),
            options: raw.options.unwrap_or_default().into_iter().collect(),
        };
        self.networks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), net.clone());
        Ok(net)
    }

    /// The engine's data root (`docker info` DockerRootDir), asked once.
    pub async fn data_root(&self) -> Option<PathBuf> {
        if let Some(d) = self
            .data_root
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Some(d);
        }
        let client = self.client().await.ok()?;
        let d = PathBuf::from(client.info().await.ok()?.docker_root_dir?);
        *self.data_root.lock().unwrap_or_else(|e| e.into_inner()) = Some(d.clone());
        Some(d)
    }

    pub fn known_data_root(&self) -> Option<PathBuf> {
        self.data_root
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// An existing volume's driver and options; `None` if there is none.
    pub async fn volume(&self, name: &str) -> Result<Option<crate::launch::Volume>, EngineError> {
        let client = self.client().await?;
        match client.inspect_volume(name).await {
            Ok(v) => Ok(Some(crate::launch::Volume {
                driver: v.driver,
                options: v.options.into_iter().collect(),
            })),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(self.error("the volume inspection", e)),
        }
    }

    /// The image's own labels.
    pub async fn image_labels(&self, image: &str) -> Result<BTreeMap<String, String>, EngineError> {
        let client = self.client().await?;
        match client.inspect_image(image).await {
            Ok(i) => Ok(i
                .config
                .and_then(|c| c.labels)
                .unwrap_or_default()
                .into_iter()
                .collect()),
            Err(e) => Err(self.error("the image inspection", e)),
        }
    }

    /// The image's entrypoint and command, as `docker run` would use them.
    pub async fn image_command(
        &self,
        image: &str,
    ) -> Result<(Vec<String>, Vec<String>), EngineError> {
        let client = self.client().await?;
        match client.inspect_image(image).await {
            Ok(i) => {
                let cfg = i.config.unwrap_or_default();
                Ok((
                    cfg.entrypoint.unwrap_or_default(),
                    cfg.cmd.unwrap_or_default(),
                ))
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Err(EngineError::NoImage(image.into())),
            Err(e) => Err(self.error("the image inspection", e)),
        }
    }

    /// Create the bridge network `name` with inter-container traffic off, or
    /// check that the existing one has it off.
    pub async fn ensure_isolated_network(
        &self,
        name: &str,
        workload: &str,
    ) -> Result<(), EngineError> {
        let client = self.client().await?;
        match client.inspect_network(name, None).await {
            Ok(n) => {
                let icc = n
                    .options
                    .as_ref()
                    .and_then(|o| o.get(crate::isolation::ICC_OPTION))
                    .map(String::as_str);
                if n.driver.as_deref() == Some("bridge") && icc == Some("false") {
                    return Ok(());
                }
                return Err(EngineError::NetworkNotIsolated { name: name.into() });
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(self.error("the network inspection", e)),
        }
        let req = bollard::models::NetworkCreateRequest {
            name: name.into(),
            driver: Some("bridge".into()),
            options: Some(HashMap::from([(
                crate::isolation::ICC_OPTION.to_string(),
                "false".to_string(),
            )])),
            labels: Some(HashMap::from([
                ("io.unbaked.managed".to_string(), "true".to_string()),
                (
                    crate::launch::LABEL_WORKLOAD.to_string(),
                    workload.to_string(),
                ),
            ])),
            ..Default::default()
        };
        match client.create_network(req).await {
            Ok(_) => {
                tracing::info!(
                    network = name,
                    "created the workload network with inter-container traffic disabled"
                );
                Ok(())
            }
            // Another launch created it meanwhile: check it.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Box::pin(self.ensure_isolated_network(name, workload)).await,
            Err(e) => Err(self.error("creating the workload network", e)),
        }
    }
}

fn unverified(id: &str, reason: String) -> Attestation {
    Attestation::Unverified {
        id: id.to_string(),
        reason,
    }
}

/// `id` through a `/proc/<pid>/uid_map` (or `gid_map`): lines of
/// `inside outside count`.
pub fn map_id(map: &str, id: u32) -> Option<u32> {
    map.lines().find_map(|l| {
        let mut f = l.split_whitespace().map(|x| x.parse::<u64>().ok());
        let (inside, outside, count) = (f.next()??, f.next()??, f.next()??);
        let id = u64::from(id);
        (id >= inside && id - inside < count)
            .then(|| u32::try_from(outside + (id - inside)).ok())
            .flatten()
    })
}

/// bollard's answer, reduced to what isolation and `[match]` look at.
/// Networks carry only name and id here; [`Engine::inspect`] fills them in.
pub fn live_container(raw: ContainerInspectResponse) -> LiveContainer {
    let state = raw.state.unwrap_or_default();
    let hc = raw.host_config.unwrap_or_default();
    let cfg = raw.config.unwrap_or_default();
    let networks = raw
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, ep)| LiveNetwork {
            name,
            id: ep.network_id.unwrap_or_default(),
            ..LiveNetwork::default()
        })
        .collect();
    LiveContainer {
        id: raw.id.unwrap_or_default(),
        name: raw
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        running: state.running.unwrap_or(false),
        pid: state.pid.filter(|p| *p > 0),
        labels: cfg
            .labels
            .unwrap_or_default()
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        image_id: raw.image.unwrap_or_default(),
        privileged: hc.privileged.unwrap_or(false),
        network_mode: hc.network_mode.unwrap_or_default(),
        pid_mode: hc.pid_mode.unwrap_or_default(),
        ipc_mode: hc.ipc_mode.unwrap_or_default(),
        uts_mode: hc.uts_mode.unwrap_or_default(),
        cgroupns_mode: hc.cgroupns_mode.map(|m| m.to_string()).unwrap_or_default(),
        userns_mode: hc.userns_mode.unwrap_or_default(),
        // Filled in by the engine side (Engine::own_user_namespace).
        own_user_namespace: false,
        readonly_rootfs: hc.readonly_rootfs.unwrap_or(false),
        cap_add: hc.cap_add.unwrap_or_default(),
        security_opt: hc.security_opt.unwrap_or_default(),
        devices: hc
            .devices
            .unwrap_or_default()
            .into_iter()
            .map(|d| d.path_on_host.unwrap_or_default())
            .chain(hc.device_cgroup_rules.unwrap_or_default())
            .collect(),
        device_requests: hc
            .device_requests
            .unwrap_or_default()
            .into_iter()
            .map(|r| {
                let caps = r.capabilities.unwrap_or_default().concat().join(",");
                format!("{}:{caps}", r.driver.unwrap_or_default())
            })
            .collect(),
        masked_paths: hc.masked_paths,
        mounts: raw
            .mounts
            .unwrap_or_default()
            .into_iter()
            .map(|m| LiveMount {
                kind: m.typ.unwrap_or_default(),
                source: m.source.unwrap_or_default(),
                destination: m.destination.unwrap_or_default(),
                rw: m.rw.unwrap_or(true),
                // Filled in by the engine side (mount_identity::file_id).
                source_id: None,
            })
            .collect(),
        networks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "149bd71c9c146308087651b83063ab69507a953b86ea82325779355a20dc879b";
    const B: &str = "0d10011f164b69fedae04229d2321585aaaabbbbccccddddeeeeffff00001111";

    #[test]
    fn ids_map_through_a_uid_map() {
        let remap = "         0     100000      65536\n";
        assert_eq!(map_id(remap, 0), Some(100000));
        assert_eq!(map_id(remap, 1000), Some(101000));
        assert_eq!(map_id(remap, 65536), None);
        let host = "         0          0 4294967295\n";
        assert_eq!(map_id(host, 1000), Some(1000));
        assert_eq!(map_id("0 1000 1\n1 100000 65535\n", 5), Some(100004));
        assert_eq!(map_id("garbage", 0), None);
    }

    #[test]
    fn cgroup_v1_cgroupfs() {
        let text = format!("12:pids:/docker/{A}\n4:memory:/docker/{A}\n1:name=systemd:/docker/{A}\n0::/docker/{A}\n");
        assert_eq!(container_ids_from_cgroup(&text), [A]);
    }

    #[test]
    fn cgroup_v2_systemd_and_cgroupfs() {
        assert_eq!(
            container_ids_from_cgroup(&format!("0::/system.slice/docker-{A}.scope\n")),
            [A]
        );
        assert_eq!(container_ids_from_cgroup(&format!("0::/docker/{A}\n")), [A]);
        // Rootless docker under the user's systemd.
        let rootless = format!(
            "0::/user.slice/user-1000.slice/user@1000.service/app.slice/docker-{A}.scope\n"
        );
        assert_eq!(container_ids_from_cgroup(&rootless), [A]);
        // v1 with the systemd driver.
        assert_eq!(
            container_ids_from_cgroup(&format!("5:cpu,cpuacct:/system.slice/docker-{A}.scope\n")),
            [A]
        );
    }

    /// The parse by bytes finds what the parse by `str` patterns found.
    #[test]
    fn the_byte_parse_matches_the_str_parse() {
        fn by_str(text: &str) -> Vec<String> {
            let mut ids: Vec<String> = Vec::new();
            for line in text.lines() {
                let Some(path) = line.splitn(3, ':').nth(2) else {
                    continue;
                };
                for comp in path.split('/') {
                    let comp = comp.strip_suffix(".scope").unwrap_or(comp);
                    let comp = comp.strip_prefix("docker-").unwrap_or(comp);
                    if comp.len() == 64
                        && comp
                            .bytes()
                            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                        && !ids.iter().any(|i| i == comp)
                    {
                        ids.push(comp.to_string());
                    }
                }
            }
            ids
        }
        let mine = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        for text in [
            mine,
            format!("0::/x:y/docker/{A}\r\n1:a:/docker-{B}.scope/{A}\n"),
            format!("9:name=systemd:/\n4:memory:/p/{A}x\n3:cpu:/{A}.scope\n0::/docker-{B}\n"),
            format!("0:/docker/{A}\n::{B}\n0::/{}\n", &A[1..]),
            String::new(),
        ] {
            assert_eq!(container_ids_from_cgroup(&text), by_str(&text), "{text:?}");
        }
        // Control: the inputs do name ids.
        assert_eq!(by_str(&format!("0::/docker-{B}.scope/{A}\n")), [B, A]);
    }

    #[test]
    fn nested_and_custom_parents_keep_order() {
        let dind = format!("0::/docker/{A}/docker/{B}\n");
        assert_eq!(container_ids_from_cgroup(&dind), [A, B]);
        let parent = format!("0::/my-parent/{B}\n");
        assert_eq!(container_ids_from_cgroup(&parent), [B]);
        let k8s = format!("0::/kubepods/besteffort/pod1234/{B}\n");
        assert_eq!(container_ids_from_cgroup(&k8s), [B]);
    }

    #[test]
    fn host_processes_have_no_container() {
        for text in [
            "0::/\n",
            "0::/user.slice/user-1000.slice/session-3.scope\n",
            "4:memory:/process_api/0d10011f164b69fedae04229d2321585\n0::/\n",
            "0::/system.slice/docker.service\n",
            // Upper-case hex is not a docker id.
            &format!("0::/docker/{}\n", A.to_uppercase()),
            "garbage",
        ] {
            assert!(container_ids_from_cgroup(text).is_empty(), "{text}");
        }
    }

    #[test]
    fn docker_host_must_be_a_unix_socket() {
        assert_eq!(socket_from_env(None).unwrap(), "/var/run/docker.sock");
        assert_eq!(
            socket_from_env(Some("unix:///run/user/1000/docker.sock".into())).unwrap(),
            "/run/user/1000/docker.sock"
        );
        assert!(socket_from_env(Some("tcp://10.0.0.1:2376".into()))
            .unwrap_err()
            .contains("not a unix socket"));
    }

    #[test]
    fn inspect_answers_are_reduced() {
        let raw: ContainerInspectResponse = serde_json::from_value(serde_json::json!({
            "Id": A,
            "Name": "/web-1",
            "Image": "sha256:abc",
            "State": {"Running": true, "Pid": 77},
            "Config": {"Labels": {"app": "billing"}},
            "HostConfig": {
                "Privileged": false, "NetworkMode": "unbaked-billing", "PidMode": "",
                "IpcMode": "private", "ReadonlyRootfs": true, "CapAdd": ["NET_BIND_SERVICE"],
                "SecurityOpt": ["no-new-privileges"], "Devices": [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/x", "CgroupPermissions": "rwm"}]
            },
            "Mounts": [{"Type": "bind", "Source": "/run/unbaked/c/1", "Destination": "/run/secrets", "RW": false}],
            "NetworkSettings": {"Networks": {"unbaked-billing": {"NetworkID": "n1"}}}
        }))
        .unwrap();
        let c = live_container(raw);
        assert_eq!(c.name, "web-1");
        assert!(c.running && c.readonly_rootfs && !c.privileged);
        assert_eq!(c.pid, Some(77));
        assert_eq!(c.labels["app"], "billing");
        assert_eq!(c.devices, ["/dev/null"]);
        assert_eq!(c.mounts[0].kind, "bind");
        assert!(!c.mounts[0].rw);
        assert_eq!(
            (c.networks[0].name.as_str(), c.networks[0].id.as_str()),
            ("unbaked-billing", "n1")
        );
    }
}
