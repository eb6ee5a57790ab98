//! The embedded stores side by side: a read (what a grant costs the store),
//! a whole `Broker::fetch`, and a write (`secret put`: on the file store an
//! append and an `fdatasync`), on the memory and the file store; and the
//! file store's start-up replay.
//!
//! `cargo bench -p unbaked-broker --bench store`

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use unbaked_api::wire::{DeliveryKind, FetchRequest};
use unbaked_api::Secret;
use unbaked_broker::audit::Audit;
use unbaked_broker::service::{Broker, Ctx};
use unbaked_broker::store::file::FileStore;
use unbaked_broker::store::key::StoreKey;
use unbaked_broker::store::memory::MemoryStore;
use unbaked_broker::store::Store;
use unbaked_policy::Caller;

const VALUE: &[u8] = b"bench-value-0123456789abcdef-xyz";

const POLICY: &str = r#"workload = "billing"

[match]
uids = [1000]

[[grant]]
secret = "app/db"
key = "password"
file = "db_password"
ttl = "10m"
"#;

fn data() -> std::collections::BTreeMap<String, Secret> {
    [("password".to_string(), Secret::from_slice(VALUE))].into()
}

fn stores(dir: &std::path::Path) -> Vec<(&'static str, Arc<dyn Store>)> {
    let file = FileStore::open_with_key(
        &dir.join("store"),
        StoreKey::from_bytes([7; 32]),
        "bench",
        0,
    )
    .unwrap();
    vec![
        ("memory", Arc::new(MemoryStore::new().unwrap())),
        ("file", Arc::new(file)),
    ]
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn read_and_write(c: &mut Criterion) {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    for (name, store) in stores(dir.path()) {
        rt.block_on(store.write("app/db", data())).unwrap();
        c.bench_function(&format!("store/read_{name}"), |b| {
            b.iter(|| black_box(rt.block_on(store.read("app/db", "password")).unwrap()))
        });
        c.bench_function(&format!("store/put_{name}"), |b| {
            b.iter(|| black_box(rt.block_on(store.write("app/rotating", data())).unwrap()))
        });
    }
}

fn fetch(c: &mut Criterion) {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    for (name, store) in stores(dir.path()) {
        rt.block_on(store.write("app/db", data())).unwrap();
        let policies =
            unbaked_policy::from_sources(&[(PathBuf::from("billing.toml"), POLICY.into())])
                .expect("the bench policy is valid");
        let audit = Audit::open(&dir.path().join(format!("audit-{name}.log"))).unwrap();
        let broker = Broker::new(policies, store, audit, 0);
        let ctx = Ctx {
            caller: Caller {
                uid: 1000,
                gid: 1000,
                pid: Some(4242),
                container: None,
                service_account: None,
            },
            request_id: "1f2e".into(),
            attestation: Default::default(),
        };
        let req = FetchRequest {
            workload: "billing".into(),
            kinds: vec![DeliveryKind::File],
        };
        c.bench_function(&format!("broker/fetch_{name}_store_file_audit"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(rt.block_on(broker.fetch(&ctx, req.clone())).unwrap());
                }
                let took = start.elapsed();
                broker.expire(Instant::now() + Duration::from_secs(86_400));
                took
            })
        });
    }
}

/// Start-up: replaying a log of 1,000 secrets of 3 versions each.
fn open(c: &mut Criterion) {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let s = FileStore::open_with_key(&path, StoreKey::from_bytes([7; 32]), "bench", 0).unwrap();
        for i in 0..1000 {
            for _ in 0..3 {
                rt.block_on(s.write(&format!("app/s{i}"), data())).unwrap();
            }
        }
    }
    c.bench_function("store/open_file_1000_secrets_3000_versions", |b| {
        b.iter(|| {
            black_box(
                FileStore::open_with_key(&path, StoreKey::from_bytes([7; 32]), "bench", 0).unwrap(),
            )
        })
    });
}

criterion_group!(benches, read_and_write, fetch, open);
criterion_main!(benches);
