//! Policy evaluation on the broker's fetch path: find the workload in a set
//! of 1,000, `authorize` the caller (host by uid, container by labels and
//! image, and a denial, which formats its reason), `grants_of` one kind.
//!
//! `cargo bench -p unbaked-policy --bench eval`

use criterion::{criterion_group, criterion_main, Criterion};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::PathBuf;
use unbaked_api::wire::DeliveryKind;
use unbaked_policy::{from_sources, Caller, ContainerInfo, PolicySet};

const WORKLOADS: usize = 1_000;
const IMAGE: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Even workloads match host uids, odd ones containers by labels and image;
/// each has eight grants over the three delivery kinds.
fn policy(i: usize) -> String {
    let matcher = if i.is_multiple_of(2) {
        "uids = [1000, 1001]\ngids = [1000]".to_string()
    } else {
        format!("docker_labels = {{ app = \"w{i:04}\", tier = \"web\" }}\nimage = \"{IMAGE}\"")
    };
    let mut text = format!("workload = \"w{i:04}\"\n\n[match]\n{matcher}\n");
    for g in 0..8 {
        let delivery = match g % 3 {
            0 => format!("file = \"f{g}\""),
            1 => format!("env = \"E{g}\""),
            _ => format!("fd = \"FD{g}\""),
        };
        text.push_str(&format!(
            "\n[[grant]]\nsecret = \"app/w{i:04}/s{g}\"\nkey = \"k\"\n{delivery}\n"
        ));
    }
    text
}

fn set() -> PolicySet {
    let sources: Vec<(PathBuf, String)> = (0..WORKLOADS)
        .map(|i| (PathBuf::from(format!("policies/w{i:04}.toml")), policy(i)))
        .collect();
    from_sources(&sources).expect("the generated policies are valid")
}

fn host(uid: u32) -> Caller {
    Caller {
        uid,
        gid: 1000,
        pid: Some(4242),
        container: None,
        service_account: None,
    }
}

fn container(app: &str) -> Caller {
    Caller {
        container: Some(ContainerInfo {
            id: "4f1c0ffee4f1c0ffee4f1c0ffee4f1c0ffee4f1c0ffee4f1c0ffee4f1c0ffee".into(),
            labels: BTreeMap::from([
                ("app".to_string(), app.to_string()),
                ("tier".to_string(), "web".to_string()),
                ("com.docker.compose.project".to_string(), "shop".to_string()),
            ]),
            image_id: IMAGE.into(),
        }),
        ..host(0)
    }
}

fn eval(c: &mut Criterion) {
    let set = set();
    let ok_host = host(1000);
    let bad_host = host(4000);
    let ok_container = container("w0501");

    c.bench_function("authorize/host_uid_allow", |b| {
        b.iter(|| {
            let p = set.get(black_box("w0500")).unwrap();
            black_box(p.authorize(black_box(&ok_host)).is_ok())
        })
    });
    c.bench_function("authorize/container_labels_image_allow", |b| {
        b.iter(|| {
            let p = set.get(black_box("w0501")).unwrap();
            black_box(p.authorize(black_box(&ok_container)).is_ok())
        })
    });
    c.bench_function("authorize/host_uid_deny", |b| {
        b.iter(|| {
            let p = set.get(black_box("w0500")).unwrap();
            black_box(p.authorize(black_box(&bad_host)).is_err())
        })
    });
    let p = set.get("w0500").unwrap();
    c.bench_function("grants_of/file_of_8", |b| {
        b.iter(|| black_box(p.grants_of(black_box(&[DeliveryKind::File])).count()))
    });
    c.bench_function("grants_of/all_of_8", |b| {
        b.iter(|| black_box(p.grants_of(black_box(&[])).count()))
    });
}

criterion_group!(benches, eval);
criterion_main!(benches);
