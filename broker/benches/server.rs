//! A fetch through the whole server in process: hyper's parsing and
//! writing, peer credentials and the pinned-pid check, the request's span,
//! the metrics, `Broker::fetch` with a file audit, and the socket's system
//! calls; on one keep-alive connection, and on a new connection per fetch
//! (as sidecars and shims make them).
//!
//! Each figure is the CPU time of the one thread that runs both ends
//! (`CLOCK_THREAD_CPUTIME_ID`, kernel time included), not wall time: it
//! holds still on a machine shared with other work. The client end is a
//! raw HTTP/1.1 writer and reader, a small part of the figure.
//!
//! The `json_log` variants run under the subscriber the shipped broker
//! installs (`UNBAKED_LOG=info`, JSON span fields), so the request span
//! costs what it costs in production; the others have no subscriber.
//!
//! `cargo bench -p unbaked-broker --bench server`

use criterion::{criterion_group, criterion_main, Criterion};
use nix::time::{clock_gettime, ClockId};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use unbaked_api::Secret;
use unbaked_broker::audit::Audit;
use unbaked_broker::server;
use unbaked_broker::service::Broker;
use unbaked_broker::store::memory::MemoryStore;
use unbaked_broker::store::Store;

const VALUE: &[u8] = b"bench-value-0123456789abcdef-xyz";

fn broker(dir: &Path, rt: &tokio::runtime::Runtime) -> Arc<Broker> {
    let uid = nix::unistd::getuid().as_raw();
    let policy = format!(
        "workload = \"billing\"\n[match]\nuids = [{uid}]\n[[grant]]\nsecret = \"app/db\"\nkey = \"password\"\nfile = \"db_password\"\nttl = \"10m\"\n"
    );
    let policies = unbaked_policy::from_sources(&[(PathBuf::from("billing.toml"), policy)])
        .expect("the bench policy is valid");
    let store = Arc::new(MemoryStore::new().unwrap());
    rt.block_on(store.write(
        "app/db",
        [("password".to_string(), Secret::from_slice(VALUE))].into(),
    ))
    .unwrap();
    let audit = Audit::open(&dir.join("audit.log")).unwrap();
    Arc::new(Broker::new(policies, store, audit, 0))
}

fn request() -> Vec<u8> {
    let body = r#"{"workload":"billing","kinds":["file"]}"#;
    format!(
        "POST /v1/fetch HTTP/1.1\r\nHost: unbaked\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Write one request, read its whole answer; panics unless it is a 200.
async fn exchange(s: &mut UnixStream, req: &[u8], buf: &mut Vec<u8>) {
    s.write_all(req).await.unwrap();
    buf.clear();
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        assert!(s.read_buf(buf).await.unwrap() > 0, "the server closed");
    };
    let head = std::str::from_utf8(&buf[..head_end]).unwrap();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .expect("a content-length")
        .parse()
        .unwrap();
    while buf.len() < head_end + len {
        assert!(s.read_buf(buf).await.unwrap() > 0, "the server closed");
    }
}

fn thread_cpu() -> Duration {
    Duration::from(clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap())
}

/// The binary's one tracing initialiser, for its formats (its `init` and
/// tests are not used here).
#[allow(dead_code, unused_imports)]
#[path = "../../src/logging.rs"]
mod logging;

/// The subscriber the shipped broker installs (`UNBAKED_LOG_FORMAT=json`,
/// its default filter), writing nowhere.
fn json_log() -> tracing::subscriber::DefaultGuard {
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "info,vaultrs=off,rustify=off",
        ))
        .with_writer(std::io::sink)
        .fmt_fields(logging::SpanJson)
        .event_format(logging::FlatJson)
        .finish();
    tracing::subscriber::set_default(subscriber)
}

fn keep_alive(c: &mut Criterion, name: &str, log: bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _log = log.then(json_log);
    let broker = broker(dir.path(), &rt);
    let (mut client, served) = rt.block_on(async { UnixStream::pair() }).unwrap();
    rt.spawn(server::connection(served, broker.clone()));
    let req = request();
    let mut buf = Vec::with_capacity(16 << 10);
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let cpu = thread_cpu();
            rt.block_on(async {
                for _ in 0..iters {
                    exchange(&mut client, &req, &mut buf).await;
                }
            });
            let took = thread_cpu() - cpu;
            // Not counted: end the leases, so the table does not grow across samples.
            broker.expire(Instant::now() + Duration::from_secs(86_400));
            took
        })
    });
}

fn new_connection(c: &mut Criterion, name: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _log = json_log();
    let broker = broker(dir.path(), &rt);
    let path = dir.path().join("broker.sock");
    let listener = rt.block_on(async { UnixListener::bind(&path) }).unwrap();
    rt.spawn(server::serve_with(
        listener,
        broker.clone(),
        server::Limits::default(),
    ));
    let req = request();
    let mut buf = Vec::with_capacity(16 << 10);
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let cpu = thread_cpu();
            rt.block_on(async {
                for _ in 0..iters {
                    let mut s = UnixStream::connect(&path).await.unwrap();
                    exchange(&mut s, &req, &mut buf).await;
                }
            });
            let took = thread_cpu() - cpu;
            broker.expire(Instant::now() + Duration::from_secs(86_400));
            took
        })
    });
}

fn server(c: &mut Criterion) {
    keep_alive(c, "server/fetch_keep_alive", false);
    keep_alive(c, "server/fetch_keep_alive_json_log", true);
    new_connection(c, "server/fetch_new_connection_json_log");
}

criterion_group!(benches, server);
criterion_main!(benches);
