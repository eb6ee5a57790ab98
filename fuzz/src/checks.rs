//! What each fuzz target checks, as plain functions: the libFuzzer targets
//! in `fuzz_targets/` call them, and `tests/hostile_input.rs` replays the
//! checked-in corpora through them on stable Rust, so every input a fuzzing
//! run found interesting stays a regression test.
//!
//! Each function panics on a broken property; a panic is a finding.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use unbaked_api::wire::{self, FetchRequest, LaunchRequest, RenewRequest, RevokeRequest};
use unbaked_api::Secret;
use unbaked_docker::launch;
use unbaked_policy::{Caller, ContainerInfo};

/// A check: panics on a finding.
pub type Check = fn(&[u8]);

/// Every target, by name: the name is also its corpus directory.
pub const TARGETS: &[(&str, Check)] = &[
    ("policy_parse", policy_parse),
    ("api_request", api_request),
    ("broker_request", broker_request),
    ("launch_args", launch_args),
    ("template_parse", template_parse),
];

/// The template parser and renderer (`unbaked_template`): any text either
/// parses, with every reference a literal, and renders over fixed values
/// within the output bound, or fails with a position inside the text; a
/// render error never holds the values it rendered.
pub fn template_parse(data: &[u8]) {
    use unbaked_template::{ReferenceKind, Resolved, Template};
    let text = String::from_utf8_lossy(data).into_owned();
    match Template::parse(&text) {
        Err(e) => {
            assert!(
                e.offset <= text.len(),
                "offset {} of {}",
                e.offset,
                text.len()
            );
            assert!(e.line >= 1 && e.line <= text.lines().count() + 1);
            let again = Template::parse(&text).expect_err("deterministic");
            assert_eq!(e, again);
        }
        Ok(t) => {
            const MARK: &str = "fuzz-secret-7c1d";
            let data: BTreeMap<String, Secret> = [("password", MARK), ("user", "u")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), Secret::from_slice(v.as_bytes())))
                .collect();
            let mut r = Resolved::default();
            for reference in t.references() {
                assert!(!reference.path().is_empty());
                let v = match reference.kind {
                    ReferenceKind::Kv { .. } => Resolved::kv(1, &data),
                    ReferenceKind::Pki { .. } => Resolved::pki(&reference.function, &data),
                };
                r.insert(reference, v);
            }
            match t.render(&r) {
                Ok(out) => assert!(out.len() <= 1 << 20),
                Err(e) => assert!(!e.to_string().contains(MARK), "a value in {e}"),
            }
        }
    }
}

/// The policy parser and evaluator: any text either parses into a set or
/// yields diagnostics that point inside it; both are deterministic, and
/// evaluation never panics.
pub fn policy_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    let sources = vec![(PathBuf::from("p/fuzz.toml"), text.clone())];
    let first = unbaked_policy::from_sources(&sources);
    let lines = text.lines().count() + 1;
    match &first {
        Ok(set) => {
            for p in set.iter() {
                assert!(!p.workload.is_empty());
                for caller in callers() {
                    let _ = p.authorize(&caller);
                    let _ = p.may_launch(&caller);
                }
            }
        }
        Err(diags) => {
            assert!(!diags.is_empty());
            for d in diags.iter() {
                assert!(d.line <= lines, "line {} of {lines}: {d}", d.line);
                assert!(!d.message.is_empty());
            }
            let _ = diags.to_string();
        }
    }
    let again = unbaked_policy::from_sources(&sources);
    match (&first, &again) {
        (Ok(a), Ok(b)) => assert_eq!(names(a), names(b)),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("parsing the same text twice gave different outcomes"),
    }
}

fn names(set: &unbaked_policy::PolicySet) -> Vec<String> {
    set.iter().map(|p| p.workload.clone()).collect()
}

fn callers() -> Vec<Caller> {
    let host = Caller {
        uid: 1000,
        gid: 1000,
        pid: Some(4242),
        container: None,
        service_account: None,
    };
    let container = Caller {
        uid: 0,
        gid: 0,
        container: Some(ContainerInfo {
            id: "0".repeat(64),
            labels: BTreeMap::from([("app".to_string(), "billing".to_string())]),
            image_id: "sha256:00".into(),
        }),
        ..host.clone()
    };
    let pod = Caller {
        service_account: Some(unbaked_policy::ServiceAccount {
            namespace: "payments".into(),
            name: "billing".into(),
        }),
        ..host.clone()
    };
    vec![host, container, pod]
}

/// The API's request decoder: serde_json into each request type the broker
/// reads (and the answers the client reads). What decodes re-encodes to an
/// equal value.
pub fn api_request(data: &[u8]) {
    if let Ok(r) = serde_json::from_slice::<FetchRequest>(data) {
        let back: FetchRequest = serde_json::from_slice(&wire::to_json_zeroizing(&r)).unwrap();
        assert_eq!(back, r);
    }
    if let Ok(r) = serde_json::from_slice::<RenewRequest>(data) {
        let back: RenewRequest = serde_json::from_slice(&wire::to_json_zeroizing(&r)).unwrap();
        assert_eq!(back, r);
    }
    if let Ok(r) = serde_json::from_slice::<RevokeRequest>(data) {
        let back: RevokeRequest = serde_json::from_slice(&wire::to_json_zeroizing(&r)).unwrap();
        assert_eq!(back, r);
    }
    if let Ok(r) = serde_json::from_slice::<LaunchRequest>(data) {
        let back: LaunchRequest = serde_json::from_slice(&wire::to_json_zeroizing(&r)).unwrap();
        assert_eq!(back, r);
    }
    if let Ok(r) = serde_json::from_slice::<wire::PutSecret>(data) {
        let back: wire::PutSecret = serde_json::from_slice(&wire::to_json_zeroizing(&r)).unwrap();
        assert_eq!(back.data, r.data);
        // Debug never shows a value.
        for v in r.data.values() {
            assert_eq!(format!("{v:?}"), "[redacted]");
        }
    }
    if let Ok(l) = serde_json::from_slice::<wire::Lease>(data) {
        let back: wire::Lease = serde_json::from_slice(&wire::to_json_zeroizing(&l)).unwrap();
        assert_eq!(back.items.len(), l.items.len());
    }
    let _ = serde_json::from_slice::<wire::ApiError>(data);
}

/// A marker value the in-process broker holds: it must never appear raw in
/// an answer (values travel base64-encoded inside JSON, and nowhere else).
const MARKER: &[u8] = b"fuzz-marker-value-6c1d";

struct Harness {
    rt: tokio::runtime::Runtime,
    broker: Arc<unbaked_broker::Broker>,
    runs: std::sync::atomic::AtomicU64,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let uid = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
        let policy = format!(
            "workload = \"fuzz\"\n[match]\nuids = [{uid}]\n[launch]\nuids = [{uid}]\n\
             [[grant]]\nsecret = \"app/fuzz\"\nkey = \"k\"\nenv = \"FUZZ\"\n\
             [[grant]]\nsecret = \"app/fuzz\"\nkey = \"k\"\nfile = \"f\"\nttl = \"1m\"\n"
        );
        let set = unbaked_policy::from_sources(&[(PathBuf::from("fuzz.toml"), policy)])
            .expect("the harness policy parses");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = unbaked_broker::store::memory::MemoryStore::new().unwrap();
        let data = BTreeMap::from([("k".to_string(), Secret::from_slice(MARKER))]);
        use unbaked_broker::store::Store;
        rt.block_on(store.write("app/fuzz", data)).unwrap();
        let broker = Arc::new(unbaked_broker::Broker::new(
            set,
            Arc::new(store),
            unbaked_broker::audit::Audit::to_log(),
            uid,
        ));
        Harness {
            rt,
            broker,
            runs: std::sync::atomic::AtomicU64::new(0),
        }
    })
}

/// The broker's whole request path: raw bytes on a connection to the real
/// server code (hyper, routing, limits, decoding, attestation, policy,
/// store, audit). Every input ends (the client half-closes after it), and
/// gets well-formed HTTP answers or none; never a 500, never a raw value.
pub fn broker_request(data: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = harness();
    let out = h.rt.block_on(async {
        let (client, server) = tokio::net::UnixStream::pair().unwrap();
        let conn = tokio::spawn(unbaked_broker::server::connection(server, h.broker.clone()));
        let (mut r, mut w) = client.into_split();
        let send = async {
            let _ = w.write_all(data).await;
            let _ = w.shutdown().await;
        };
        let recv = async {
            let mut out = Vec::new();
            let _ = r.read_to_end(&mut out).await;
            out
        };
        let exchange = async { tokio::join!(send, recv).1 };
        let out = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .expect("the broker ends a connection whose client has finished");
        let _ = conn.await;
        out
    });
    // HTTP/1.0 requests get HTTP/1.0 answers.
    if !out.is_empty() {
        assert!(
            out.starts_with(b"HTTP/1.1 ") || out.starts_with(b"HTTP/1.0 "),
            "not HTTP: {:?}",
            String::from_utf8_lossy(&out)
        );
    }
    // Unless the request itself carried the bytes (an echoed path), the
    // stored value never appears raw.
    let holds = |b: &[u8]| b.windows(MARKER.len()).any(|w| w == MARKER);
    assert!(
        holds(data) || !holds(&out),
        "a raw secret value in an answer"
    );
    assert!(
        !out.windows(13)
            .any(|w| w == b"HTTP/1.1 500 " || w == b"HTTP/1.0 500 "),
        "an internal error: {:?}",
        String::from_utf8_lossy(&out)
    );
    // Leases of successful fetches would pile up: the broker's sweeper
    // is not running here.
    let n = h.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if n % 1024 == 0 {
        h.broker
            .expire(Instant::now() + Duration::from_secs(86_400));
    }
}

fn launch_policies() -> &'static unbaked_policy::PolicySet {
    static P: OnceLock<unbaked_policy::PolicySet> = OnceLock::new();
    P.get_or_init(|| {
        let billing = "workload = \"billing\"\n[match]\ndocker_labels = { app = \"billing\" }\n\
                       [launch]\nuids = [1000]\n\
                       [[grant]]\nsecret = \"app/db\"\nkey = \"pw\"\nfile = \"db\"\n\
                       [[grant]]\nsecret = \"app/db\"\nkey = \"pw\"\nenv = \"DB_PW\"\n";
        let payroll = "workload = \"payroll\"\n[match]\ndocker_labels = { team = \"payroll\" }\n\
                       [launch]\nuids = [1000]\n\
                       [[grant]]\nsecret = \"app/pay\"\nkey = \"pw\"\nenv = \"PAY_PW\"\n";
        unbaked_policy::from_sources(&[
            (PathBuf::from("billing.toml"), billing.to_string()),
            (PathBuf::from("payroll.toml"), payroll.to_string()),
        ])
        .expect("the launch policies parse")
    })
}

fn launch_facts() -> launch::Facts {
    launch::Facts {
        image_entrypoint: vec!["/bin/app".into()],
        image_cmd: vec!["--serve".into()],
        shim: "/usr/local/bin/unbaked".into(),
        broker_socket: "/run/unbaked/broker.sock".into(),
        socket_gid: Some(0),
        secrets_dir: Some("/run/unbaked/containers/abc".into()),
        launch_id: "abc".into(),
        containers_dir: "/run/unbaked/containers".into(),
        sockets: vec!["/var/run/docker.sock".into()],
        resolved: BTreeMap::new(),
        compose: false,
        container_files: false,
        engine_remaps_users: false,
        default_bridge_isolates: false,
    }
}

/// The host as the fuzzer sees it: `/srv/sock` and `/srv/up` are (by
/// identity) the engine's socket and a directory above it, `/srv/box` the
/// secrets base; the volume `sockvol` binds `/srv/up`, `plugvol` is a
/// plugin's.
fn launch_host() -> &'static launch::HostFacts {
    use unbaked_docker::isolation::{FileId, Protected};
    static H: OnceLock<launch::HostFacts> = OnceLock::new();
    H.get_or_init(|| {
        let id = |ino| FileId { dev: 7, ino };
        let vol = |driver: &str, device: Option<&str>| launch::Volume {
            driver: driver.into(),
            options: device
                .map(|d| BTreeMap::from([("device".to_string(), d.to_string())]))
                .unwrap_or_default(),
        };
        launch::HostFacts {
            protected: Protected {
                ids: vec![id(1), id(2)],
            },
            secrets_dirs: vec![id(3)],
            sources: BTreeMap::from([
                ("/srv/sock".to_string(), id(1)),
                ("/srv/up".to_string(), id(2)),
                ("/srv/box".to_string(), id(3)),
                ("/srv/data".to_string(), id(4)),
            ]),
            volumes: BTreeMap::from([
                ("sockvol".to_string(), vol("local", Some("/srv/up"))),
                ("plugvol".to_string(), vol("rexray", None)),
                ("plain".to_string(), vol("local", None)),
            ]),
            image_labels: BTreeMap::new(),
        }
    })
}

/// The docker-argument checker of `unbaked run`: NUL-separated arguments.
/// Under a policy that allows no weakening, beside a second workload
/// selected by `team=payroll`, an accepted plan re-parses with docker's
/// grammar and holds no setting that breaks isolation, whatever spelling
/// the input used: every option is re-judged from the final arguments.
pub fn launch_args(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let args: Vec<String> = text.split('\0').map(String::from).collect();
    let Ok(parsed) = launch::parse(&args) else {
        return;
    };
    let policies = launch_policies();
    let facts = launch_facts();
    let host = launch_host();
    let inputs = launch::Inputs {
        policy: policies.get("billing").unwrap(),
        policies,
        facts: &facts,
        host,
    };
    let Ok(plan) = launch::plan_with(&parsed, &inputs) else {
        return;
    };
    assert_eq!(plan.args[0], "run");
    let again = launch::parse(&plan.args[1..])
        .unwrap_or_else(|r| panic!("the plan does not re-parse: {r:?}: {:?}", plan.args));
    assert_eq!(again.image, parsed.image);
    assert_eq!(
        again.command[..6],
        [
            "--socket",
            launch::SOCKET_PATH,
            "exec",
            "--workload",
            "billing",
            "--"
        ]
    );
    let mut labels = BTreeMap::new();
    for o in &again.options {
        launch_option_is_safe(o, &plan.args);
        if o.flag == Some(launch::Flag::Label) {
            let v = o.value.clone().unwrap_or_default();
            let (k, val) = v.split_once('=').unwrap_or((&v, ""));
            labels.insert(k.to_string(), val.to_string());
        }
    }
    launch_mounts_are_safe(&again, &facts, host);
    assert_ne!(
        labels.get("team").map(String::as_str),
        Some("payroll"),
        "the container would match payroll: {:?}",
        plan.args
    );
    let count = |f: launch::Flag| again.options.iter().filter(|o| o.flag == Some(f)).count();
    assert_eq!(count(launch::Flag::Entrypoint), 1, "{:?}", plan.args);
    let own = again.options.iter().filter(|o| {
        o.flag == Some(launch::Flag::Label)
            && o.value
                .as_deref()
                .is_some_and(|v| v.starts_with(launch::LABEL_PREFIX))
    });
    assert_eq!(own.count(), 2, "{:?}", plan.args);
    assert!(
        again
            .options
            .iter()
            .any(|o| o.flag == Some(launch::Flag::ReadOnly) && o.value.is_none()),
        "no --read-only: {:?}",
        plan.args
    );
}

/// One option of an accepted plan breaks nothing.
fn launch_option_is_safe(o: &launch::Opt, args: &[String]) {
    use launch::Flag as F;
    use unbaked_docker::isolation::{normalize_cap, parse_bool, weakening_security_opt};
    let v = o.value.clone().unwrap_or_default();
    let on = o.value.as_deref().map_or(Some(true), parse_bool) != Some(false);
    let Some(flag) = o.flag else {
        panic!("unknown option --{} passed on: {args:?}", o.name)
    };
    let network = if v.contains('=') {
        launch::mount_fields(&v)
            .ok()
            .and_then(|f| {
                f.into_iter()
                    .rev()
                    .find(|(k, _)| k == "name")
                    .map(|(_, v)| v)
            })
            .unwrap_or_default()
    } else {
        v.clone()
    };
    match flag {
        F::Privileged | F::UseApiSocket => assert!(!on, "--{} {args:?}", o.name),
        F::Network => assert!(
            network == launch::network_name("billing") || network == "none",
            "network {v}"
        ),
        F::Pid | F::Ipc => assert!(
            v != "host" && !v.starts_with("container:"),
            "--{} {v}",
            o.name
        ),
        F::Uts | F::Cgroupns | F::Userns => {
            assert!(matches!(v.as_str(), "" | "private"), "--{} {v}", o.name)
        }
        F::Link | F::Device | F::DeviceCgroupRule | F::Gpus | F::VolumesFrom | F::LabelFile => {
            panic!("--{} {v} passed on: {args:?}", o.name)
        }
        F::CapAdd => assert!(
            v.split(',').all(|c| normalize_cap(c).is_empty()),
            "cap-add {v}"
        ),
        F::SecurityOpt => assert!(weakening_security_opt(&v).is_none(), "security-opt {v}"),
        F::ReadOnly => assert!(on, "read-only {v}"),
        F::Entrypoint => assert_eq!(v, launch::SHIM_PATH),
        F::VolumeDriver => assert_eq!(v, "local"),
        _ => {}
    }
}

/// No mount of an accepted plan reaches a protected file, the secrets base,
/// a non-local volume, or unbaked's own targets.
fn launch_mounts_are_safe(again: &launch::Parsed, facts: &launch::Facts, host: &launch::HostFacts) {
    use unbaked_docker::isolation::{exposed_socket, lexical_path};
    let ours = [&facts.shim, &facts.broker_socket];
    for path in launch::host_paths(again, &host.volumes) {
        if ours.contains(&&path) || facts.secrets_dir.as_ref() == Some(&path) {
            continue;
        }
        assert!(
            exposed_socket(&path, &facts.sockets).is_none(),
            "mounts {path}"
        );
        if let Some(id) = host.sources.get(&path) {
            assert!(
                !host.protected.contains(id) && !host.secrets_dirs.contains(id),
                "mounts {path}"
            );
        }
        let (l, base) = (lexical_path(&path), lexical_path(&facts.containers_dir));
        assert!(
            l != base && !l.starts_with(&format!("{base}/")) && !base.starts_with(&format!("{l}/")),
            "mounts {path}"
        );
    }
    for name in launch::named_volumes(again) {
        assert!(name != "sockvol" && name != "plugvol", "volume {name}");
    }
    for o in again
        .options
        .iter()
        .filter(|o| o.flag == Some(launch::Flag::Volume))
    {
        let v = o.value.clone().unwrap_or_default();
        let parts: Vec<&str> = v.split(':').collect();
        let target = lexical_path(if parts.len() >= 2 { parts[1] } else { parts[0] });
        for reserved in [launch::SECRETS_PATH, "/run/unbaked"] {
            assert!(
                target != reserved
                    && !target.starts_with(&format!("{reserved}/"))
                    && !reserved.starts_with(&format!("{target}/")),
                "volume over {target}"
            );
        }
    }
}
