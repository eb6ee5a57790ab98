//! HTTP/1.1 + JSON over the unix socket (hyper). Routing, size limits,
//! timeouts, backpressure and one tracing span per request; the decisions
//! are in [`crate::service`].
//!
//! **Backpressure:** at most [`Limits::max_connections`] connections are
//! served at once; the next ones wait in a bounded queue for up to
//! [`QUEUE_WAIT`], then get `503` (`overloaded`) with `Retry-After`. Past
//! the queue a connection is closed unanswered. So a flood costs a bounded
//! number of tasks and buffers, never unbounded growth.
//!
//! **Invariant:** bodies that may hold secrets live in zeroizing buffers:
//! requests are collected into one, answers are sent from one
//! ([`ZeroizingBody`]) with vectored writes so hyper does not copy them
//! into its own buffer.

use crate::attest;
use crate::attest::container::{Attestation, ConnectionMemo};
use crate::service::{err, Broker, Ctx};
use bytes::Buf;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::convert::Infallible;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::unix::UCred;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tracing::Instrument;
use unbaked_api::wire::{self, ApiError, ErrorCode};
use zeroize::Zeroizing;

/// Headers of each request, from the first byte awaited: also the idle
/// timeout of a connection that sends nothing.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole connections, so a client that never reads its answer (or a
/// keep-alive one that never stops) cannot hold a slot for good.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Request headers (a bearer token is a few KiB at most).
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// How long a connection waits for a slot before it is answered 503: long
/// enough that a deploy's burst of sidecars queues instead of bouncing.
pub const QUEUE_WAIT: Duration = Duration::from_secs(1);
/// What `Retry-After` tells an overloaded client.
pub const RETRY_AFTER_SECS: u64 = 1;
/// An overloaded answer is sent within this, or the connection is dropped.
const REJECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Sets [`Limits::max_connections`].
pub const MAX_CONNECTIONS_ENV: &str = crate::config::ENV_MAX_CONNECTIONS;
const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// The broker's concurrency bound. Each served connection holds at most one
/// request body ([`wire::MAX_REQUEST_BYTES`]), so memory under load stays
/// near `max_connections` times that, however many clients come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections waiting for a slot (then answered 503); past this they
    /// are closed at once.
    pub max_queued: usize,
    /// Connections one caller holds at once (a caller: a uid in one pid
    /// namespace, so each container counts apart from the host's users);
    /// past it that caller is answered 503, and the others stay served.
    pub max_per_caller: usize,
    /// How the connecting process is pinned (the procfs fallback can be
    /// forced, to prove it on kernels that have SO_PEERPIDFD).
    pub pin: attest::unix::PinMode,
}

impl Limits {
    pub fn new(max_connections: usize) -> Limits {
        let max_connections = max_connections.max(1);
        Limits {
            max_connections,
            max_queued: (4 * max_connections).max(64),
            max_per_caller: (max_connections / 4).max(8),
            pin: attest::unix::PinMode::Auto,
        }
    }

    /// From `UNBAKED_MAX_CONNECTIONS`, else the default (256).
    pub fn from_env() -> Limits {
        let n = match std::env::var(MAX_CONNECTIONS_ENV) {
            Err(_) => DEFAULT_MAX_CONNECTIONS,
            Ok(v) => match v.trim().parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => {
                    tracing::warn!(
                        "{MAX_CONNECTIONS_ENV} is not a positive number: using {DEFAULT_MAX_CONNECTIONS}"
                    );
                    DEFAULT_MAX_CONNECTIONS
                }
            },
        };
        let mut limits = Limits::new(n);
        match std::env::var(crate::config::ENV_PEER_PIN).as_deref() {
            Ok("procfs") => limits.pin = attest::unix::PinMode::Procfs,
            Ok("auto") | Err(_) => {}
            Ok(_) => tracing::warn!(
                "{} is neither auto nor procfs: using auto",
                crate::config::ENV_PEER_PIN
            ),
        }
        limits
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new(DEFAULT_MAX_CONNECTIONS)
    }
}

/// A response body that zeroizes its bytes when hyper drops it.
#[derive(Debug)]
pub struct ZeroizingBody(Option<ZeroizingBuf>);

#[derive(Debug)]
pub struct ZeroizingBuf {
    bytes: Zeroizing<Vec<u8>>,
    pos: usize,
}

impl Buf for ZeroizingBuf {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }
    fn chunk(&self) -> &[u8] {
        &self.bytes[self.pos..]
    }
    fn advance(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.bytes.len());
    }
}

impl Body for ZeroizingBody {
    type Data = ZeroizingBuf;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<ZeroizingBuf>, Infallible>>> {
        Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.as_ref().map_or(0, |b| b.remaining() as u64))
    }
}

fn respond(status: StatusCode, bytes: Zeroizing<Vec<u8>>) -> Response<ZeroizingBody> {
    let body = if bytes.is_empty() {
        ZeroizingBody(None)
    } else {
        ZeroizingBody(Some(ZeroizingBuf { bytes, pos: 0 }))
    };
    let mut res = Response::new(body);
    *res.status_mut() = status;
    if status != StatusCode::NO_CONTENT {
        res.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
    }
    res
}

fn json<T: Serialize>(value: &T) -> Response<ZeroizingBody> {
    respond(StatusCode::OK, wire::to_json_zeroizing(value))
}

fn no_content() -> Response<ZeroizingBody> {
    respond(StatusCode::NO_CONTENT, Zeroizing::new(Vec::new()))
}

fn error(e: &ApiError) -> Response<ZeroizingBody> {
    let status =
        StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    respond(status, wire::to_json_zeroizing(e))
}

async fn read_body(body: Incoming) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let too_large = || {
        err(
            ErrorCode::BadRequest,
            format!(
                "request body over {} bytes: no request of this API needs that much",
                wire::MAX_REQUEST_BYTES
            ),
        )
    };
    // A declared length over the limit is refused before a byte is read.
    if body.size_hint().lower() > wire::MAX_REQUEST_BYTES as u64 {
        return Err(too_large());
    }
    let mut buf = Zeroizing::new(Vec::new());
    let mut body = body;
    let collect = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                err(
                    ErrorCode::BadRequest,
                    format!("reading the request body: {e}"),
                )
            })?;
            if let Some(data) = frame.data_ref() {
                if buf.len() + data.len() > wire::MAX_REQUEST_BYTES {
                    return Err(too_large());
                }
                grow_zeroizing(&mut buf, data.len());
                buf.extend_from_slice(data);
            }
        }
        Ok(())
    };
    tokio::time::timeout(BODY_TIMEOUT, collect)
        .await
        .map_err(|_| {
            err(
                ErrorCode::BadRequest,
                format!(
                    "request body not received within {}s: send the whole body at once",
                    BODY_TIMEOUT.as_secs()
                ),
            )
        })??;
    Ok(buf)
}

/// Make room for `more` bytes by moving into a bigger zeroizing buffer:
/// `Vec`'s own reallocation would free the old block without zeroizing it.
fn grow_zeroizing(buf: &mut Zeroizing<Vec<u8>>, more: usize) {
    let need = buf.len() + more;
    if need > buf.capacity() {
        let cap = need.max(buf.capacity() * 2).min(wire::MAX_REQUEST_BYTES);
        let mut bigger = Zeroizing::new(Vec::with_capacity(cap.max(need)));
        bigger.extend_from_slice(buf);
        *buf = bigger; // the old block is zeroized on drop
    }
}

async fn decode<T: DeserializeOwned>(body: Incoming) -> Result<T, ApiError> {
    let buf = read_body(body).await?;
    serde_json::from_slice(&buf).map_err(|e| {
        // serde_json's message names the field and position, never the input.
        err(
            ErrorCode::BadRequest,
            format!("malformed request body: {e}"),
        )
    })
}

async fn route(
    broker: &Broker,
    ctx: &Ctx,
    req: Request<Incoming>,
) -> Result<Response<ZeroizingBody>, ApiError> {
    let (head, body) = req.into_parts();
    let (method, path) = (&head.method, head.uri.path());
    let query = head.uri.query().unwrap_or("");
    let admin_path = path
        .strip_prefix(wire::ADMIN_SECRETS)
        .and_then(|p| p.strip_prefix('/'));
    match (method, path, admin_path) {
        (&Method::POST, wire::FETCH, _) => {
            let r: wire::FetchRequest = decode(body).await?;
            // Bounded: the name is the caller's until the service checks it.
            tracing::Span::current().record("workload", crate::service::log_name(&r.workload));
            Ok(json(&broker.fetch(ctx, r).await?))
        }
        (&Method::POST, wire::RENEW, _) => {
            let r: wire::RenewRequest = decode(body).await?;
            Ok(json(&broker.renew(ctx, &r.lease_id).await?))
        }
        (&Method::POST, wire::REVOKE, _) => {
            let r: wire::RevokeRequest = decode(body).await?;
            broker.revoke(ctx, &r.lease_id)?;
            Ok(no_content())
        }
        (&Method::POST, wire::ACTION, _) => {
            let r: wire::ActionRequest = decode(body).await?;
            Ok(json(&broker.action(ctx, r).await?))
        }
        (&Method::GET, wire::HEALTH, _) => Ok(json(&broker.health())),
        (&Method::POST, wire::LAUNCH, _) => {
            let r: wire::LaunchRequest = decode(body).await?;
            if let Some(w) = &r.workload {
                tracing::Span::current().record("workload", crate::service::log_name(w));
            }
            Ok(json(&broker.launch(ctx, r).await?))
        }
        (&Method::GET, wire::ADMIN_LIST, _) => {
            let prefix = query_param(query, "prefix").unwrap_or_default();
            Ok(json(&broker.list_secrets(ctx, &prefix).await?))
        }
        (&Method::PUT, _, Some(p)) => {
            let body: wire::PutSecret = decode(body).await?;
            Ok(json(&broker.put_secret(ctx, p, body).await?))
        }
        (&Method::GET, _, Some(p)) => Ok(json(&broker.get_secret(ctx, p).await?)),
        (&Method::DELETE, _, Some(p)) => {
            broker.delete_secret(ctx, p).await?;
            Ok(no_content())
        }
        _ => Err(err(
            ErrorCode::NotFound,
            format!("no such endpoint: {method} {path}"),
        )),
    }
}

/// `prefix=a%2Fb` → `a/b`; only the escapes our client writes.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The bearer token of the request, if any, in a zeroizing buffer: it is a
/// credential, so it never reaches a log.
fn bearer(req: &Request<Incoming>) -> Option<Zeroizing<String>> {
    let value = req.headers().get(hyper::header::AUTHORIZATION)?;
    let text = value.to_str().ok()?;
    let token = text.strip_prefix("Bearer ")?.trim();
    Some(Zeroizing::new(token.to_string()))
}

/// A bounded label for the metrics: admin paths name secrets, so they
/// collapse into one value.
fn endpoint_label(path: &str) -> &'static str {
    match path {
        wire::FETCH => "fetch",
        wire::RENEW => "renew",
        wire::REVOKE => "revoke",
        wire::LAUNCH => "launch",
        wire::ACTION => "action",
        wire::HEALTH => "health",
        p if p.starts_with("/v1/admin/") => "admin",
        _ => "other",
    }
}

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(1);

/// Accept connections until the listener fails or the task is dropped,
/// within the limits from the environment ([`Limits::from_env`]).
pub async fn serve(listener: UnixListener, broker: Arc<Broker>) {
    serve_with(listener, broker, Limits::from_env()).await
}

/// [`serve`] with explicit limits.
pub async fn serve_with(listener: UnixListener, broker: Arc<Broker>, limits: Limits) {
    let active = Arc::new(Semaphore::new(limits.max_connections));
    let queued = Arc::new(Semaphore::new(limits.max_queued));
    let callers = CallerSlots::new(limits.max_per_caller);
    tracing::debug!(
        max_connections = limits.max_connections,
        max_queued = limits.max_queued,
        max_per_caller = limits.max_per_caller,
        pin = ?limits.pin,
        "serving"
    );
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let broker = broker.clone();
        // One SO_PEERCRED per connection: the caller's share and its
        // attestation come from the same credentials.
        let cred = stream.peer_cred();
        // Pinned here, before the connection waits for a task or in the
        // queue: before Linux 6.5 the pin is of whatever process holds the
        // pid at this moment, so every wait after the accept would widen
        // the window in which a caller that exited could have its pid
        // handed on (docs/threat-model.md).
        let process = attest::unix::PeerProcess::of(&stream, limits.pin, cred.as_ref().ok());
        let key = caller_key(cred.as_ref().ok());
        let mine = callers.try_take(key);
        if mine.is_some() {
            if let Ok(permit) = active.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    serve_accepted(stream, cred, process, broker).await;
                    drop((permit, mine));
                });
                continue;
            }
        }
        // Full, or this caller at its share: wait in the bounded queue for
        // both, else close at once.
        let Ok(slot) = queued.clone().try_acquire_owned() else {
            tracing::debug!("connection queue full: connection closed unanswered");
            continue;
        };
        let (active, callers) = (active.clone(), callers.clone());
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + QUEUE_WAIT;
            let mine = match mine {
                Some(m) => Some(m),
                None => callers.take_until(key, deadline).await,
            };
            let Some(mine) = mine else {
                let why = format!(
                    "uid {} holds its limit of {} connections to the broker (a quarter of {MAX_CONNECTIONS_ENV}): retry in {RETRY_AFTER_SECS}s",
                    key.0, limits.max_per_caller
                );
                reject(stream, &broker, why).await;
                drop(slot);
                return;
            };
            match tokio::time::timeout_at(deadline, active.acquire_owned()).await {
                Ok(Ok(permit)) => {
                    drop(slot);
                    serve_accepted(stream, cred, process, broker).await;
                    drop((permit, mine));
                }
                _ => {
                    let why = format!(
                        "the broker is serving its limit of {} connections: retry in {RETRY_AFTER_SECS}s (clients back off by themselves; raise {MAX_CONNECTIONS_ENV} if this is the normal load)",
                        limits.max_connections
                    );
                    reject(stream, &broker, why).await;
                    drop((slot, mine));
                }
            }
        });
    }
}

/// Who a connection counts against: its uid in its pid namespace (each
/// container apart, the host's users apart from each other).
type CallerKey = (u32, u64);

fn caller_key(cred: Option<&UCred>) -> CallerKey {
    let Some(cred) = cred else {
        return (u32::MAX, 0);
    };
    let pidns = cred
        .pid()
        .and_then(|pid| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok())
        .and_then(|link| ns_inode(link.to_str()?))
        .unwrap_or(0);
    (cred.uid(), pidns)
}

/// The inode of a namespace from its link's text, `pid:[4026531836]`: the
/// same number `stat` reports for it. Reading the link costs the kernel a
/// formatted string; a `stat` through it built and freed an nsfs dentry and
/// inode each time (7% of the broker's CPU with a connection per fetch).
fn ns_inode(link: &str) -> Option<u64> {
    link.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
}

/// Each caller's share of the connections, one semaphore per caller that
/// holds or awaits one; an entry goes with its caller's last connection,
/// so the map is bounded by the connection and queue limits.
#[derive(Debug, Clone)]
struct CallerSlots {
    max: usize,
    held: Arc<std::sync::Mutex<std::collections::HashMap<CallerKey, Arc<Semaphore>>>>,
}

/// One connection's share of its caller's limit, returned on drop.
#[derive(Debug)]
struct CallerSlot {
    key: CallerKey,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    slots: CallerSlots,
}

impl CallerSlots {
    fn new(max: usize) -> CallerSlots {
        CallerSlots {
            max: max.max(1),
            held: Arc::default(),
        }
    }

    fn semaphore(&self, key: CallerKey) -> Arc<Semaphore> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.entry(key)
            .or_insert_with(|| Arc::new(Semaphore::new(self.max)))
            .clone()
    }

    fn slot(&self, key: CallerKey, permit: tokio::sync::OwnedSemaphorePermit) -> CallerSlot {
        CallerSlot {
            key,
            permit: Some(permit),
            slots: self.clone(),
        }
    }

    fn try_take(&self, key: CallerKey) -> Option<CallerSlot> {
        let permit = self.semaphore(key).try_acquire_owned().ok();
        match permit {
            Some(p) => Some(self.slot(key, p)),
            None => {
                self.forget_if_idle(key);
                None
            }
        }
    }

    async fn take_until(
        &self,
        key: CallerKey,
        deadline: tokio::time::Instant,
    ) -> Option<CallerSlot> {
        let sem = self.semaphore(key);
        let permit = tokio::time::timeout_at(deadline, sem.acquire_owned()).await;
        match permit {
            Ok(Ok(p)) => Some(self.slot(key, p)),
            _ => {
                self.forget_if_idle(key);
                None
            }
        }
    }

    /// Drop the caller's entry when nobody holds or awaits a share of it.
    fn forget_if_idle(&self, key: CallerKey) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held
            .get(&key)
            .is_some_and(|s| Arc::strong_count(s) == 1 && s.available_permits() == self.max)
        {
            held.remove(&key);
        }
    }
}

impl Drop for CallerSlot {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.slots.forget_if_idle(self.key);
    }
}

/// Serve one connection to its end (or [`CONNECTION_TIMEOUT`]).
///
/// Attestation happens per request, at the time of the request: the
/// container is looked up from the peer's pid then, and afterwards the
/// pidfd pinned at connect time must show the connecting process alive,
/// so the pid cannot have been handed to another process in between.
pub async fn connection(stream: UnixStream, broker: Arc<Broker>) {
    connection_pinned(stream, broker, attest::unix::PinMode::Auto).await
}

/// [`connection`], pinning the peer as `pin` says.
pub async fn connection_pinned(
    stream: UnixStream,
    broker: Arc<Broker>,
    pin: attest::unix::PinMode,
) {
    let cred = stream.peer_cred();
    let process = attest::unix::PeerProcess::of(&stream, pin, cred.as_ref().ok());
    serve_accepted(stream, cred, process, broker).await
}

/// What a connection keeps of its peer for its requests.
#[derive(Debug)]
struct Peer {
    process: attest::unix::PeerProcess,
    /// What the platform reads about a pinned caller (its cgroup) is kept
    /// for the connection; containers are still inspected per request.
    memo: ConnectionMemo,
}

/// hyper's settings, the same for every connection: built once.
static HTTP: std::sync::LazyLock<hyper::server::conn::http1::Builder> =
    std::sync::LazyLock::new(|| {
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_header_size(MAX_HEADER_BYTES)
            .writev(true)
            .max_buf_size(wire::MAX_REQUEST_BYTES + 64 * 1024);
        http
    });

/// [`connection_pinned`] with the credentials the accept loop took.
async fn serve_accepted(
    stream: UnixStream,
    cred: std::io::Result<UCred>,
    process: attest::unix::PeerProcess,
    broker: Arc<Broker>,
) {
    let cred = match cred {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "no peer credentials: connection dropped");
            return;
        }
    };
    let caller = attest::unix::caller(&cred);
    let peer = Arc::new(Peer {
        process,
        memo: ConnectionMemo::default(),
    });
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let broker = broker.clone();
        let peer = peer.clone();
        let mut caller = caller.clone();
        let request_id = format!("{:x}", REQUEST_SEQ.fetch_add(1, Ordering::Relaxed));
        let span = tracing::info_span!(
            "request",
            id = %request_id,
            method = %req.method(),
            path = %req.uri().path(),
            uid = caller.uid,
            pid = caller.pid,
            workload = tracing::field::Empty,
        );
        let endpoint = endpoint_label(req.uri().path());
        // Per request: projected tokens rotate under a live connection.
        let token = bearer(&req);
        async move {
            // pid → container, inspected for each request, so a renewal
            // sees the live config again.
            let attestation = match caller.pid.filter(|p| *p > 0) {
                Some(pid) => {
                    let pinned = peer.process.pinned();
                    broker.platform().attest(pid, pinned, &peer.memo).await
                }
                None => Attestation::Host,
            };
            caller.container = attestation.container_info();
            let mut ctx = Ctx {
                caller,
                request_id,
                attestation,
            };
            let routed = match broker.attest_token(&mut ctx, token.as_deref().map(|t| t.as_str())) {
                // After every /proc read of this request: still the caller's pid?
                Ok(()) if peer.process.exited() => Err(broker.deny_exited_peer(&ctx)),
                Ok(()) => route(&broker, &ctx, req).await,
                Err(e) => Err(e),
            };
            let res = match routed {
                Ok(res) => res,
                Err(e) => {
                    tracing::debug!(code = ?e.code, message = %e.message, "request failed");
                    error(&e)
                }
            };
            count(&broker, endpoint, res.status());
            Ok::<_, Infallible>(res)
        }
        .instrument(span)
    });
    let socket = match crate::socket_io::Socket::new(stream) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot register the connection: dropped");
            return;
        }
    };
    let conn = HTTP.serve_connection(TokioIo::new(socket), service);
    match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "connection ended with an error"),
        Err(_) => tracing::debug!("connection closed after {}s", CONNECTION_TIMEOUT.as_secs()),
    }
}

/// Answer the one request of an overloaded connection with 503 and
/// `Retry-After`, within [`REJECT_TIMEOUT`]; its body is never read.
async fn reject(stream: UnixStream, broker: &Arc<Broker>, why: String) {
    let broker = broker.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let e = err(ErrorCode::Overloaded, why.clone());
        let mut res = error(&e);
        res.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            hyper::header::HeaderValue::from(RETRY_AFTER_SECS),
        );
        count(&broker, endpoint_label(req.uri().path()), res.status());
        std::future::ready(Ok::<_, Infallible>(res))
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(REJECT_TIMEOUT)
        .max_header_size(MAX_HEADER_BYTES)
        .keep_alive(false);
    let conn = http.serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(REJECT_TIMEOUT, conn).await;
}

fn count(broker: &Broker, endpoint: &'static str, status: StatusCode) {
    broker.metrics().request(endpoint, status.as_u16());
}

/// Bind the socket: its directory created if missing (and refused if
/// someone else could swap the socket in it), a stale socket file replaced,
/// a live one refused; then the mode and group `access` says.
pub fn bind(path: &Path, access: &crate::config::SocketAccess) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
        check_socket_dir(dir)?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket: remove it or choose another --socket",
                    path.display()
                ),
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "another broker is listening on {}: stop it or choose another --socket",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    if let Some(group) = &access.group {
        let gid = resolve_group(group)?;
        std::os::unix::fs::lchown(path, None, Some(gid))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(access.mode))?;
    Ok(listener)
}

/// Whether this process may not create the socket's directory or the
/// socket in it (`--dev` as an ordinary user then falls back to
/// `$XDG_RUNTIME_DIR`).
pub fn bind_denied(path: &Path) -> bool {
    let mut dir = path.parent();
    while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
        if d.exists() {
            return nix::unistd::access(d, nix::unistd::AccessFlags::W_OK).is_err();
        }
        dir = d.parent();
    }
    false
}

/// A socket directory another user owns or may write to lets that user
/// put their own socket where clients look for the broker's.
fn check_socket_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(dir)?;
    let me = nix::unistd::geteuid().as_raw();
    let problem = if !meta.is_dir() {
        Some("is not a directory (a symlink?)".to_string())
    } else if meta.uid() != 0 && meta.uid() != me {
        Some(format!("is owned by uid {}, not root or the broker (uid {me}): chown it, or remove it and let the broker create it", meta.uid()))
    } else if meta.mode() & 0o022 != 0 {
        Some(format!(
            "is writable by others (mode {:04o}): chmod 0755 it",
            meta.mode() & 0o7777
        ))
    } else {
        None
    };
    match problem {
        Some(p) => Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("the socket directory {} {p}", dir.display()),
        )),
        None => Ok(()),
    }
}

/// A group name from `/etc/group` (read directly: the static binary links
/// no NSS, and the group a packaging step creates is a local one).
fn resolve_group(group: &str) -> std::io::Result<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let text = std::fs::read_to_string("/etc/group")?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            Some((f.next()?, f.nth(1)?))
        })
        .find(|(name, _)| *name == group)
        .and_then(|(_, gid)| gid.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("socket_group {group:?} is not in /etc/group (create it: groupadd --system {group})"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            query_param("prefix=app%2Fdb&x=1", "prefix").as_deref(),
            Some("app/db")
        );
        assert_eq!(query_param("x=1", "prefix"), None);
        assert_eq!(percent_decode("a%zz%2"), "a%zz%2");
    }

    /// The link's number is the namespace's inode, as `stat` reports it.
    #[test]
    fn the_pid_namespace_key_is_its_inode() {
        use std::os::unix::fs::MetadataExt;
        let link = std::fs::read_link("/proc/self/ns/pid").unwrap();
        let ino = std::fs::metadata("/proc/self/ns/pid").unwrap().ino();
        assert_eq!(ns_inode(link.to_str().unwrap()), Some(ino));
        assert_eq!(ns_inode("net:[4026531840]"), None);
        assert_eq!(ns_inode("pid:[12"), None);
    }

    async fn exchange(path: &Path, req: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = UnixStream::connect(path).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        // A hang guard, not a speed check: hyper ends a `Connection: close`
        // exchange, and the client must see it end.
        tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut answer))
            .await
            .expect("the server ended the connection")
            .unwrap();
        String::from_utf8(answer).unwrap()
    }

    /// Through the accept loop: a fetch is attested from the one
    /// SO_PEERCRED it takes (this process's uid matches, and the audit
    /// names its pid; control: a policy for another uid refuses it), and a
    /// connection the client asked to close ends with end of file although
    /// the server no longer calls `shutdown(2)` before closing it.
    #[tokio::test]
    async fn the_accept_loop_attests_from_its_credentials_and_closes() {
        use crate::store::Store;
        let dir = tempfile::tempdir().unwrap();
        let uid = nix::unistd::getuid().as_raw();
        let policy = |w: &str, u: u32| {
            format!("workload = \"{w}\"\n[match]\nuids = [{u}]\n[[grant]]\nsecret = \"app/db\"\nkey = \"password\"\nfile = \"db_password\"\n")
        };
        let policies = unbaked_policy::from_sources(&[
            ("mine.toml".into(), policy("mine", uid)),
            ("theirs.toml".into(), policy("theirs", uid.wrapping_add(1))),
        ])
        .unwrap();
        let store = Arc::new(crate::store::memory::MemoryStore::new().unwrap());
        let value = unbaked_api::Secret::from_slice(b"v");
        store
            .write("app/db", [("password".to_string(), value)].into())
            .await
            .unwrap();
        let audit = crate::audit::Audit::open(&dir.path().join("audit.log")).unwrap();
        let broker = Arc::new(Broker::new(policies, store, audit, 0));
        let path = dir.path().join("broker.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(serve_with(listener, broker, Limits::default()));
        let fetch = |w: &str| {
            let body = format!("{{\"workload\":\"{w}\",\"kinds\":[\"file\"]}}");
            format!("POST /v1/fetch HTTP/1.1\r\nHost: unbaked\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        };
        let mine = exchange(&path, &fetch("mine")).await;
        assert!(mine.starts_with("HTTP/1.1 200 "), "{mine}");
        let theirs = exchange(&path, &fetch("theirs")).await;
        assert!(theirs.starts_with("HTTP/1.1 403 "), "{theirs}");
        server.abort();
        let records = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
        let me = format!("\"pid\":{}", std::process::id());
        let grant = records.lines().find(|l| l.contains("\"grant\"")).unwrap();
        assert!(
            grant.contains(&me) && grant.contains(&format!("\"uid\":{uid}")),
            "{grant}"
        );
    }

    #[test]
    fn zeroizing_buf_advances() {
        let mut b = ZeroizingBuf {
            bytes: Zeroizing::new(b"abcdef".to_vec()),
            pos: 0,
        };
        b.advance(4);
        assert_eq!(b.chunk(), b"ef");
        b.advance(10);
        assert_eq!(b.remaining(), 0);
    }
}
