//! `[vault] max_stale`: what the store side of a fetch costs when Vault is
//! unreachable and a kept copy answers (`StaleCopies::lookup`: the sealed
//! copy opened, its age read) next to the normal cached answer (a hit in
//! the Vault store's sealed cache, opened). The rest of a fetch (policy,
//! audit, lease) is the same on both paths. And what keeping a copy costs
//! when Vault answers a new version (an append and an `fdatasync`).
//!
//! `cargo bench -p unbaked-broker --bench stale`

use criterion::{criterion_group, criterion_main, Criterion};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;
use unbaked_api::Secret;
use unbaked_broker::store::cache::Cache;
use unbaked_broker::store::file::FileStore;
use unbaked_broker::store::key::StoreKey;
use unbaked_broker::store::stale::StaleCopies;
use unbaked_broker::store::VersionedData;

const VALUE: &[u8] = b"bench-value-0123456789abcdef-xyz";
const PATH: &str = "secret/app/db";

fn data(version: u64) -> VersionedData {
    VersionedData {
        version,
        data: BTreeMap::from([("password".to_string(), Secret::from_slice(VALUE))]),
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("vault_read");

    let cache = Cache::new(Duration::from_secs(5)).unwrap();
    rt.block_on(cache.get(PATH, Duration::from_secs(5), || async { Ok(Some(data(3))) }))
        .unwrap();
    g.bench_function("cached", |b| {
        b.iter(|| {
            rt.block_on(async {
                let e = cache
                    .get(PATH, Duration::from_secs(5), || async {
                        unreachable!("primed")
                    })
                    .await
                    .unwrap()
                    .unwrap();
                black_box(cache.open(PATH, &e, "password").unwrap())
            })
        })
    });

    // On disk (the target directory), not a tmpfs /tmp: the fsync counts.
    let dir = tempfile::Builder::new()
        .prefix("unbaked-bench-stale-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let store = FileStore::open_with_key(
        &dir.path().join("vault-copies"),
        StoreKey::from_bytes([7; 32]),
        "bench",
        1,
    )
    .unwrap();
    let copies = StaleCopies::with(store, Duration::from_secs(3600));
    copies.keep(PATH, &data(3)).unwrap();
    g.bench_function("stale", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (v, age) = copies.lookup(PATH, "password").unwrap();
                copies.note_served();
                black_box((v, age))
            })
        })
    });
    g.finish();

    let mut version = 4;
    c.bench_function("vault_copy_keep_fsync", |b| {
        b.iter(|| {
            version += 1;
            copies.keep(PATH, &data(version)).unwrap()
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
