//! The broker's per-request hot path, piece by piece and whole: decoding a
//! request, encoding a lease (JSON + base64), sealing and unsealing a value,
//! one audit record, and `Broker::fetch` on the memory store with a file
//! audit (no socket: bench/run measures that end to end).
//!
//! `cargo bench -p unbaked-broker --bench hot_path`

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use unbaked_api::wire::{self, Delivery, DeliveryKind, FetchRequest, Item, Lease, PutSecret};
use unbaked_api::Secret;
use unbaked_broker::audit::{Audit, CallerRef, Event, Record, SecretRef};
use unbaked_broker::service::{Broker, Ctx};
use unbaked_broker::store::memory::{MemoryStore, Sealer};
use unbaked_broker::store::Store;
use unbaked_policy::Caller;

/// A 32-byte value, the size of a typical password or API token.
const VALUE: &[u8] = b"bench-value-0123456789abcdef-xyz";

fn lease() -> Lease {
    Lease {
        lease_id: "9f86d081884c7d659a2feaa0c55ad015".into(),
        workload: "billing".into(),
        ttl_secs: 600,
        items: vec![Item {
            id: "file:db_password".into(),
            secret: "app/db".into(),
            key: "password".into(),
            delivery: Delivery::File {
                path: "db_password".into(),
                mode: 0o400,
                uid: Some(1000),
                gid: None,
            },
            version: 3,
            ttl_secs: 600,
            value: Secret::from_slice(VALUE),
        }],
        actions: Default::default(),
    }
}

fn wire_codec(c: &mut Criterion) {
    let fetch = br#"{"workload":"billing","kinds":["file"]}"#;
    c.bench_function("decode/fetch_request", |b| {
        b.iter(|| black_box(serde_json::from_slice::<FetchRequest>(black_box(fetch)).unwrap()))
    });
    let put = wire::to_json_zeroizing(&PutSecret {
        data: [("password".to_string(), Secret::from_slice(VALUE))].into(),
    });
    c.bench_function("decode/put_secret_base64", |b| {
        b.iter(|| black_box(serde_json::from_slice::<PutSecret>(black_box(&put)).unwrap()))
    });
    let lease = lease();
    c.bench_function("encode/lease_one_item", |b| {
        b.iter(|| black_box(wire::to_json_zeroizing(black_box(&lease))))
    });
}

fn sealing(c: &mut Criterion) {
    let sealer = Sealer::new().unwrap();
    let aad = b"app/db\0password\x001";
    c.bench_function("seal/32_bytes", |b| {
        b.iter(|| black_box(sealer.seal(black_box(aad), black_box(VALUE))))
    });
    let sealed = sealer.seal(aad, VALUE);
    c.bench_function("unseal/32_bytes", |b| {
        b.iter(|| black_box(sealer.open(black_box(aad), black_box(&sealed)).unwrap()))
    });
}

fn grant_record() -> Record {
    Record {
        request_id: Some("1f2e".into()),
        caller: Some(CallerRef {
            uid: 1000,
            gid: 1000,
            pid: Some(4242),
        }),
        workload: Some("billing".into()),
        lease: Some("9f86d081884c7d659a2feaa0c55ad015".into()),
        secrets: vec![SecretRef {
            id: "file:db_password".into(),
            secret: "app/db".into(),
            key: "password".into(),
            version: 3,
            ..SecretRef::default()
        }],
        ..Record::default()
    }
}

fn audit(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let audit = Audit::open(&dir.path().join("audit.log")).unwrap();
    c.bench_function("audit/grant_record_to_file", |b| {
        b.iter(|| {
            audit
                .record(Event::Grant, black_box(grant_record()))
                .unwrap()
        })
    });
}

const POLICY: &str = r#"workload = "billing"

[match]
uids = [1000]

[[grant]]
secret = "app/db"
key = "password"
file = "db_password"
ttl = "10m"
"#;

fn fetch(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policies = unbaked_policy::from_sources(&[(PathBuf::from("billing.toml"), POLICY.into())])
        .expect("the bench policy is valid");
    let store = Arc::new(MemoryStore::new().unwrap());
    rt.block_on(store.write(
        "app/db",
        [("password".to_string(), Secret::from_slice(VALUE))].into(),
    ))
    .unwrap();
    let audit = Audit::open(&dir.path().join("audit.log")).unwrap();
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
    c.bench_function("broker/fetch_memory_store_file_audit", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let lease = rt.block_on(broker.fetch(&ctx, req.clone())).unwrap();
                black_box(lease);
            }
            let took = start.elapsed();
            // Not timed: end the leases, so the table does not grow across samples.
            broker.expire(Instant::now() + Duration::from_secs(86_400));
            took
        })
    });
}

criterion_group!(benches, wire_codec, sealing, audit, fetch);
criterion_main!(benches);
