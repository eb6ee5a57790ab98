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
use unbaked_broker::launch;
use unbaked_policy::{Caller, ContainerInfo};

/// A check: panics on a finding.
pub type Check = fn(&[u8]);

/// Every target, by name: the name is also its corpus directory.
pub const TARGETS: &[(&str, Check)] = &[
    ("policy_parse", policy_parse),
    ("api_request", api_request),
    ("broker_request", broker_request),
    ("launch_args", launch_args),
];

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

fn launch_policy() -> &'static unbaked_policy::Policy {
    static P: OnceLock<unbaked_policy::PolicySet> = OnceLock::new();
    let set = P.get_or_init(|| {
        let text = "workload = \"billing\"\n[match]\ndocker_labels = { app = \"billing\" }\n\
                    [launch]\nuids = [1000]\n\
                    [[grant]]\nsecret = \"app/db\"\nkey = \"pw\"\nfile = \"db\"\n\
                    [[grant]]\nsecret = \"app/db\"\nkey = \"pw\"\nenv = \"DB_PW\"\n";
        unbaked_policy::from_sources(&[(PathBuf::from("billing.toml"), text.to_string())])
            .expect("the launch policy parses")
    });
    set.get("billing").unwrap()
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
    }
}

/// The docker-argument checker of `unbaked run`: NUL-separated arguments.
/// Under a policy that allows no weakening, an accepted plan re-parses
/// with docker's grammar and holds no option that breaks isolation.
pub fn launch_args(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let args: Vec<String> = text.split('\0').map(String::from).collect();
    let Ok(parsed) = launch::parse(&args) else {
        return;
    };
    let policy = launch_policy();
    let facts = launch_facts();
    let Ok(plan) = launch::plan(&parsed, policy, &facts) else {
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
    let own_net = launch::network_name("billing");
    let truthy = |v: &Option<String>| {
        !matches!(
            v.as_deref(),
            Some("0" | "f" | "F" | "false" | "FALSE" | "False")
        )
    };
    let mut entrypoints = 0;
    let mut own_labels = 0;
    for o in &again.options {
        let v = o.value.clone().unwrap_or_default();
        match o.name.as_str() {
            "privileged" => assert!(!truthy(&o.value), "privileged: {:?}", plan.args),
            "network" => assert!(v == own_net || v == "none", "network {v}"),
            "pid" | "ipc" => assert!(
                v != "host" && !v.starts_with("container:"),
                "{} {v}",
                o.name
            ),
            "userns" => assert_ne!(v, "host"),
            "link" | "device" | "device-cgroup-rule" => panic!("--{} {v}", o.name),
            "cap-add" => assert!(
                v.split(',')
                    .all(|c| unbaked_broker::isolation::normalize_cap(c).is_empty()),
                "cap-add {v}"
            ),
            "security-opt" => assert!(
                unbaked_broker::isolation::weakening_security_opt(&v).is_none(),
                "security-opt {v}"
            ),
            "read-only" => assert!(truthy(&o.value), "read-only {v}"),
            "entrypoint" => {
                entrypoints += 1;
                assert_eq!(v, launch::SHIM_PATH);
            }
            "label" if v.starts_with(launch::LABEL_PREFIX) => own_labels += 1,
            "volume" => {
                let parts: Vec<&str> = v.split(':').collect();
                let target = if parts.len() >= 2 { parts[1] } else { parts[0] };
                let target = unbaked_broker::isolation::lexical_path(target);
                for reserved in [launch::SECRETS_PATH, "/run/unbaked"] {
                    assert!(
                        target != reserved
                            && !target.starts_with(&format!("{reserved}/"))
                            && !reserved.starts_with(&format!("{target}/")),
                        "volume over {target}"
                    );
                }
                // Docker takes a source without a leading '/' for a volume name.
                if parts.len() >= 2 && parts[0].starts_with('/') {
                    assert!(
                        unbaked_broker::isolation::exposed_socket(parts[0], &facts.sockets)
                            .is_none(),
                        "volume {v}"
                    );
                }
            }
            _ => {}
        }
    }
    assert_eq!(entrypoints, 1, "{:?}", plan.args);
    assert_eq!(own_labels, 2, "{:?}", plan.args);
    assert!(
        again
            .options
            .iter()
            .any(|o| o.name == "read-only" && o.value.is_none()),
        "no --read-only: {:?}",
        plan.args
    );
}
