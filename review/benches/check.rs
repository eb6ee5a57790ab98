//! `unbaked policy check` over 1,000 generated policy files: parse,
//! validate, lint and render. The target is well under a second.
//!
//! `cargo bench -p unbaked-review --bench check`

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;
use unbaked_review::output::{render, Format};
use unbaked_review::{check_dir, check_sources, Limits};

const FILES: usize = 1_000;

/// A realistic policy: matching, launch, isolation, and four grants of
/// every delivery kind; some of them trip lints (env, a long ttl, a group
/// mode, secrets shared across workloads) so locating is measured too.
fn policy(i: usize) -> String {
    format!(
        r#"# generated workload {i}
workload = "w{i:04}"

[match]
uids = [{uid}]
docker_labels = {{ app = "w{i:04}", tier = "web" }}

[launch]
uids = [{uid}]

[isolation]
inter_container_traffic = false
privileged = false
host_network = false
read_only_rootfs = true
cap_add = ["NET_BIND_SERVICE"]

[[grant]]
secret = "app/w{i:04}/db"
key = "password"
file = "db_password"
ttl = "10m"

[[grant]]
secret = "shared/ca"
key = "cert"
file = "ca.pem"
mode = 0o440
gid = {uid}

[[grant]]
secret = "app/w{i:04}/api"
key = "token"
env = "API_TOKEN"
ttl = "2h"

[[grant]]
secret = "app/w{i:04}/stripe"
key = "secret_key"
fd = "STRIPE_KEY_FILE"
"#,
        uid = 10_000 + i
    )
}

fn sources() -> Vec<(PathBuf, String)> {
    (0..FILES)
        .map(|i| (PathBuf::from(format!("policies/w{i:04}.toml")), policy(i)))
        .collect()
}

fn bench(c: &mut Criterion) {
    let sources = sources();
    let limits = Limits::default();
    let report = check_sources(Path::new("policies"), &sources, Default::default(), &limits);
    assert_eq!(report.workloads, FILES);
    assert!(
        report.findings.len() >= 4 * FILES,
        "lints fire: {}",
        report.findings.len()
    );

    let mut group = c.benchmark_group("check_1000_files");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("in_memory", |b| {
        b.iter(|| {
            let report = check_sources(
                Path::new("policies"),
                black_box(&sources),
                Default::default(),
                &limits,
            );
            black_box(render(&report, Format::Human))
        })
    });

    let dir = tempfile::tempdir().expect("tempdir");
    for (path, text) in &sources {
        std::fs::write(dir.path().join(path.file_name().unwrap()), text).expect("write");
    }
    group.bench_function("from_disk_sarif", |b| {
        b.iter(|| {
            let report = check_dir(black_box(dir.path()), &limits);
            black_box(render(&report, Format::Sarif))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
