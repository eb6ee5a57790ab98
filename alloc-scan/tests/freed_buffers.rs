//! Buffers that held a secret are zeroized before they are freed.
//!
//! A global allocator scans every block handed back to it for a marker
//! secret; the test then runs a full round trip through the real code in
//! this process: `secret put` through the client to the broker's server
//! (decode, seal into the memory store, audit), `fetch`, `renew` and admin
//! `get` (unseal, encode, client decode), and the sidecar's `--once`
//! delivery onto tmpfs. Not one freed block may still hold the secret's
//! bytes.
//!
//! Scope: the decoded bytes. On the wire a value is base64 inside JSON, and
//! hyper's own read buffers keep that form until they are reused (a known
//! limit, docs/threat-model.md). `unbaked exec` is not covered: its values
//! live in the `Command` until `execve` replaces the process image, so they
//! are never freed in a live process.
#![allow(unsafe_code)] // the allocator below; nothing else in this file is unsafe

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use unbaked_api::wire::{FetchRequest, PutSecret};
use unbaked_api::Secret;
use unbaked_broker::server::{self, Limits};
use unbaked_sidecar::client::Client;

const MARKER: &[u8] = b"alloc-scan-marker:9f3Kq7Zw";

static ARMED: AtomicBool = AtomicBool::new(false);
static HITS: AtomicUsize = AtomicUsize::new(0);
static LAST_HIT_SIZE: AtomicUsize = AtomicUsize::new(0);

/// `System`, plus a look at each block as it is freed.
struct Scanning;

// SAFETY: every method forwards to `System` with the caller's own arguments,
// so this allocator keeps `GlobalAlloc`'s contract exactly as `System` does;
// `dealloc` only reads the block (still allocated) before freeing it, and
// allocates nothing itself.
unsafe impl GlobalAlloc for Scanning {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ARMED.load(Ordering::Relaxed) && layout.size() >= MARKER.len() {
            // SAFETY: `ptr` is a live block of `layout.size()` bytes from
            // `alloc` (the caller's contract), freed only below. memmem
            // reads it as bytes in C, where bytes never written are merely
            // indeterminate, not undefined as they would be in a Rust slice.
            let at = unsafe {
                libc::memmem(
                    ptr.cast(),
                    layout.size(),
                    MARKER.as_ptr().cast(),
                    MARKER.len(),
                )
            };
            if !at.is_null() {
                HITS.fetch_add(1, Ordering::Relaxed);
                LAST_HIT_SIZE.store(layout.size(), Ordering::Relaxed);
            }
        }
        // SAFETY: forwarded unchanged; the caller upholds `dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    // `realloc` keeps the default (alloc, copy, dealloc), so the block a
    // growing buffer leaves behind is scanned too.
}

#[global_allocator]
static GLOBAL: Scanning = Scanning;

#[test]
fn buffers_that_held_a_secret_are_zeroized_before_they_are_freed() {
    // The scanner sees a plain copy, and not a `Secret`.
    ARMED.store(true, Ordering::SeqCst);
    drop(black_box(MARKER.to_vec()));
    assert_eq!(
        HITS.swap(0, Ordering::SeqCst),
        1,
        "the scanner misses a plain copy"
    );
    drop(black_box(Secret::from_slice(MARKER)));
    assert_eq!(
        HITS.load(Ordering::SeqCst),
        0,
        "a Secret was freed unzeroized"
    );

    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("broker.sock");
    let secrets = tempfile::tempdir_in("/dev/shm").unwrap();
    let policy = format!(
        "workload = \"scan\"\n[match]\nuids = [{uid}]\n\
         [[grant]]\nsecret = \"app/scan\"\nkey = \"k\"\nfile = \"f\"\n\
         [[grant]]\nsecret = \"app/scan\"\nkey = \"k\"\nenv = \"E\"\n\
         [[grant]]\nsecret = \"app/scan\"\nkey = \"k\"\nfd = \"D\"\n"
    );
    let set = unbaked_policy::from_sources(&[(PathBuf::from("scan.toml"), policy)]).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = unbaked_broker::store::memory::MemoryStore::new().unwrap();
        let audit = unbaked_broker::audit::Audit::open(&dir.path().join("audit.log")).unwrap();
        let broker = Arc::new(unbaked_broker::Broker::new(
            set,
            Arc::new(store),
            audit,
            uid,
        ));
        let listener = server::bind(&socket, &Default::default()).unwrap();
        let serving = tokio::spawn(server::serve_with(
            listener,
            broker.clone(),
            Limits::default(),
        ));

        let client = Client::new(&socket);
        let put = PutSecret {
            data: BTreeMap::from([("k".to_string(), Secret::from_slice(MARKER))]),
        };
        client.put_secret("app/scan", &put).await.unwrap();
        drop(put);
        let req = FetchRequest {
            workload: "scan".into(),
            kinds: vec![],
        };
        let lease = client.fetch(&req).await.unwrap();
        assert_eq!(lease.items.len(), 3);
        assert!(lease
            .items
            .iter()
            .all(|i| i.value.expose_secret() == MARKER));
        let renewed = client.renew(&lease.lease_id).await.unwrap();
        assert!(renewed
            .items
            .iter()
            .all(|i| i.value.expose_secret() == MARKER));
        let read = client.get_secret("app/scan").await.unwrap();
        assert_eq!(read.data["k"].expose_secret(), MARKER);
        client.revoke(&lease.lease_id).await.unwrap();
        drop((lease, renewed, read));

        let cfg = unbaked_sidecar::sidecar::SidecarConfig {
            socket: socket.clone(),
            workload: "scan".into(),
            dir: secrets.path().to_path_buf(),
            once: true,
            tmpfs_size: unbaked_sidecar::sidecar::DEFAULT_TMPFS_SIZE,
            token_file: None,
        };
        unbaked_sidecar::sidecar::run(cfg).await.unwrap();
        serving.abort();
        let _ = serving.await;
    });
    // Every task, connection and buffer of the runtime goes with it.
    drop(rt);

    // The file holds the secret: read it onto the stack, not the heap.
    let mut buf = [0u8; 64];
    let n = std::fs::File::open(secrets.path().join("f"))
        .unwrap()
        .read(&mut buf)
        .unwrap();
    assert_eq!(&buf[..n], MARKER);
    buf.fill(0);
    ARMED.store(false, Ordering::SeqCst);
    let hits = HITS.load(Ordering::SeqCst);
    assert_eq!(
        hits,
        0,
        "{hits} freed blocks still held the secret (the last one {} bytes)",
        LAST_HIT_SIZE.load(Ordering::SeqCst)
    );
}
