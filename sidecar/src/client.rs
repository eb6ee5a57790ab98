//! The broker API client: HTTP/1.1 + JSON over the broker's unix socket, one
//! connection per request.

use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use std::io::{self, Cursor};
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::UnixStream;
use unbaked_api::exit;
use unbaked_api::wire::{
    self, to_json_zeroizing, ApiError, ErrorCode, FetchRequest, Health, Lease, PutSecret,
    RenewRequest, RevokeRequest, SecretData, SecretList, SecretMeta,
};
use zeroize::Zeroizing;

/// Largest answer we read; a lease of many items stays far below.
const MAX_RESPONSE_BYTES: usize = 4 << 20;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Request bodies stay in a zeroizing buffer until hyper writes them.
type ReqBody = Full<Cursor<Zeroizing<Vec<u8>>>>;
/// Status, Retry-After seconds, body.
type Answer = (StatusCode, Option<u64>, Zeroizing<Vec<u8>>);
/// Tries of a request the broker answers `overloaded`.
const OVERLOADED_ATTEMPTS: u32 = 5;
/// The longest Retry-After we honour (a broken header must not stall us).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
    /// A projected service-account token, re-read for every request
    /// because the kubelet rotates it.
    token_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the broker at {}: is `unbaked broker` running? if it listens elsewhere, set UNBAKED_SOCKET or --socket",
        socket.display()
    )]
    Unavailable { socket: PathBuf, source: io::Error },
    #[error(
        "the broker at {} did not answer within {after:?}: check that it is healthy (`unbaked` logs, GET /v1/health)",
        socket.display()
    )]
    Timeout { socket: PathBuf, after: Duration },
    #[error("{0}")]
    Api(ApiError),
    #[error("{0}")]
    Protocol(String),
    #[error("cannot read the service-account token {}: {source}: check --token-file and the projected volume", path.display())]
    Token { path: PathBuf, source: io::Error },
}

impl ClientError {
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Api(e) => e.code.exit_code(),
            ClientError::Unavailable { .. } | ClientError::Timeout { .. } => exit::UNAVAILABLE,
            ClientError::Protocol(_) | ClientError::Token { .. } => exit::FAILURE,
        }
    }

    pub fn is_denied(&self) -> bool {
        self.api_code() == Some(ErrorCode::Denied)
    }

    pub fn is_not_found(&self) -> bool {
        self.api_code() == Some(ErrorCode::NotFound)
    }

    /// The broker's error code, when it answered with one.
    pub fn api_code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api(e) => Some(e.code),
            _ => None,
        }
    }
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Client {
            socket: socket.into(),
            timeout: DEFAULT_TIMEOUT,
            token_file: None,
        }
    }

    /// Prove identity with the bearer token in `path` as well as the
    /// socket's peer credentials (Kubernetes pods).
    pub fn with_token_file(self, path: Option<PathBuf>) -> Self {
        Client {
            token_file: path,
            ..self
        }
    }

    pub fn with_timeout(self, t: Duration) -> Self {
        Client { timeout: t, ..self }
    }

    pub async fn fetch(&self, req: &FetchRequest) -> Result<Lease, ClientError> {
        self.json(
            Method::POST,
            wire::FETCH.into(),
            Some(to_json_zeroizing(req)),
        )
        .await
    }

    pub async fn renew(&self, lease_id: &str) -> Result<Lease, ClientError> {
        let body = to_json_zeroizing(&RenewRequest {
            lease_id: lease_id.into(),
        });
        self.json(Method::POST, wire::RENEW.into(), Some(body))
            .await
    }

    pub async fn revoke(&self, lease_id: &str) -> Result<(), ClientError> {
        let body = to_json_zeroizing(&RevokeRequest {
            lease_id: lease_id.into(),
        });
        self.call(Method::POST, wire::REVOKE.into(), Some(body))
            .await
            .map(drop)
    }

    pub async fn put_secret(
        &self,
        path: &str,
        body: &PutSecret,
    ) -> Result<SecretMeta, ClientError> {
        self.json(Method::PUT, secret_uri(path), Some(to_json_zeroizing(body)))
            .await
    }

    pub async fn get_secret(&self, path: &str) -> Result<SecretData, ClientError> {
        self.json(Method::GET, secret_uri(path), None).await
    }

    pub async fn delete_secret(&self, path: &str) -> Result<(), ClientError> {
        self.call(Method::DELETE, secret_uri(path), None)
            .await
            .map(drop)
    }

    pub async fn list_secrets(&self, prefix: &str) -> Result<SecretList, ClientError> {
        let uri = format!("{}?prefix={}", wire::ADMIN_LIST, encode(prefix));
        self.json(Method::GET, uri, None).await
    }

    /// A `signal_container` action: the broker signals the container the
    /// policy names for the item.
    pub async fn action(&self, req: &wire::ActionRequest) -> Result<wire::ActionDone, ClientError> {
        self.json(
            Method::POST,
            wire::ACTION.into(),
            Some(to_json_zeroizing(req)),
        )
        .await
    }

    /// `unbaked run`: the launch plan for these `docker run` arguments.
    pub async fn launch(&self, req: &wire::LaunchRequest) -> Result<wire::LaunchPlan, ClientError> {
        self.json(
            Method::POST,
            wire::LAUNCH.into(),
            Some(to_json_zeroizing(req)),
        )
        .await
    }

    pub async fn health(&self) -> Result<Health, ClientError> {
        self.json(Method::GET, wire::HEALTH.into(), None).await
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        uri: String,
        body: Option<Zeroizing<Vec<u8>>>,
    ) -> Result<T, ClientError> {
        let what = format!("{method} {}", path_only(&uri));
        let answer = self.call(method, uri, body).await?;
        serde_json::from_slice(&answer).map_err(|e| {
            // serde_json's message may quote the input; keep only where it failed.
            ClientError::Protocol(format!(
                "cannot parse the broker's answer to {what} ({:?} error at line {} column {}): is the broker the same version as this client?",
                e.classify(),
                e.line(),
                e.column()
            ))
        })
    }

    /// One request on a fresh connection; the 2xx body, or the mapped error.
    /// An `overloaded` answer is tried again after its Retry-After (with
    /// jitter, so a thousand sidecars started together spread out), a few
    /// times before it is returned. Trying again is safe for every
    /// endpoint: the broker answers `overloaded` before it reads a request.
    async fn call(
        &self,
        method: Method,
        uri: String,
        body: Option<Zeroizing<Vec<u8>>>,
    ) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        let what = format!("{method} {}", path_only(&uri));
        let body = body.unwrap_or_default();
        let mut attempt = 1;
        loop {
            let req = self.request(&method, &uri, &body, &what)?;
            let exchanged = tokio::time::timeout(self.timeout, self.exchange(req))
                .await
                .map_err(|_| ClientError::Timeout {
                    socket: self.socket.clone(),
                    after: self.timeout,
                })?;
            let (status, retry_after, answer) = match exchanged {
                // Closed unanswered: a broker past its queue does that
                // before reading the request, so trying again is safe.
                Err(ClientError::Unavailable { source, .. })
                    if source.kind() == io::ErrorKind::ConnectionAborted
                        && attempt < OVERLOADED_ATTEMPTS =>
                {
                    let wait = retry_wait(None, jitter());
                    tracing::debug!(%what, attempt, ?wait, "the broker closed the connection unanswered: trying again");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                    continue;
                }
                other => other?,
            };
            if status.is_success() {
                return Ok(answer);
            }
            let e = serde_json::from_slice::<ApiError>(&answer).map_err(|_| {
                ClientError::Protocol(format!(
                    "the broker at {} answered {status} to {what} without an error report: is it an unbaked broker of the same version?",
                    self.socket.display()
                ))
            })?;
            if e.code != ErrorCode::Overloaded || attempt >= OVERLOADED_ATTEMPTS {
                return Err(ClientError::Api(e));
            }
            let wait = retry_wait(retry_after, jitter());
            tracing::debug!(%what, attempt, ?wait, "the broker is overloaded: trying again");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    fn request(
        &self,
        method: &Method,
        uri: &str,
        body: &Zeroizing<Vec<u8>>,
        what: &str,
    ) -> Result<Request<ReqBody>, ClientError> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(hyper::header::HOST, "unbaked")
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(path) = &self.token_file {
            let token = std::fs::read_to_string(path)
                .map(Zeroizing::new)
                .map_err(|source| ClientError::Token {
                    path: path.clone(),
                    source,
                })?;
            let bearer = Zeroizing::new(format!("Bearer {}", token.trim()));
            let mut value =
                hyper::header::HeaderValue::from_str(&bearer).map_err(|_| ClientError::Token {
                    path: path.clone(),
                    source: io::Error::new(io::ErrorKind::InvalidData, "not a JWT"),
                })?;
            value.set_sensitive(true);
            req = req.header(hyper::header::AUTHORIZATION, value);
        }
        req.body(Full::new(Cursor::new(body.clone())))
            .map_err(|e| ClientError::Protocol(format!("cannot build the request {what}: {e}")))
    }

    async fn exchange(&self, req: Request<ReqBody>) -> Result<Answer, ClientError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| self.unavailable(e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.unavailable(io::Error::other(e)))?;
        let exchange = async {
            let resp = sender.send_request(req).await.map_err(|e| {
                let reset = std::error::Error::source(&e)
                    .and_then(|s| s.downcast_ref::<io::Error>())
                    .is_some_and(|io| {
                        matches!(
                            io.kind(),
                            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                        )
                    });
                let kind = if e.is_incomplete_message() || e.is_canceled() || reset {
                    io::ErrorKind::ConnectionAborted
                } else {
                    io::ErrorKind::Other
                };
                self.unavailable(io::Error::new(kind, e))
            })?;
            self.read(resp).await
        };
        // Drive the connection here rather than in a spawned task, so nothing
        // outlives the call.
        tokio::pin!(conn, exchange);
        tokio::select! {
            biased;
            r = &mut exchange => r,
            c = &mut conn => {
                // The broker closed the connection: the answer is complete or
                // the request fails; either way `exchange` now finishes.
                if let Err(e) = c {
                    tracing::debug!(error = %e, "broker connection ended");
                }
                exchange.await
            }
        }
    }

    /// Read the body into one zeroizing buffer, capped.
    async fn read(&self, resp: Response<Incoming>) -> Result<Answer, ClientError> {
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
        let hint = resp
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if hint.is_some_and(|n| n > MAX_RESPONSE_BYTES) {
            return Err(self.too_large());
        }
        let mut buf = Zeroizing::new(Vec::with_capacity(hint.unwrap_or(8 << 10)));
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| self.unavailable(io::Error::other(e)))?;
            if let Ok(data) = frame.into_data() {
                if !append(&mut buf, &data) {
                    return Err(self.too_large());
                }
            }
        }
        Ok((status, retry_after, buf))
    }

    fn unavailable(&self, source: io::Error) -> ClientError {
        ClientError::Unavailable {
            socket: self.socket.clone(),
            source,
        }
    }

    fn too_large(&self) -> ClientError {
        ClientError::Protocol(format!(
            "the broker at {} sent an answer larger than {MAX_RESPONSE_BYTES} bytes",
            self.socket.display()
        ))
    }
}

/// Retry-After (1 s if absent, at most [`MAX_RETRY_AFTER`]) scaled by
/// `jitter` in [0.5, 1.5].
fn retry_wait(retry_after: Option<u64>, jitter: f64) -> Duration {
    Duration::from_secs(retry_after.unwrap_or(1).max(1))
        .min(MAX_RETRY_AFTER)
        .mul_f64(jitter.clamp(0.5, 1.5))
}

/// A number in [0.5, 1.5].
fn jitter() -> f64 {
    0.5 + crate::jitter::unit()
}

/// Append within the cap, growing by hand: `Vec`'s own reallocation would
/// free the old block without zeroizing it. False when over the cap.
fn append(buf: &mut Zeroizing<Vec<u8>>, data: &[u8]) -> bool {
    let need = buf.len() + data.len();
    if need > MAX_RESPONSE_BYTES {
        return false;
    }
    if need > buf.capacity() {
        let cap = need.max(buf.capacity() * 2).min(MAX_RESPONSE_BYTES);
        let mut bigger = Zeroizing::new(Vec::with_capacity(cap));
        bigger.extend_from_slice(buf);
        *buf = bigger; // the old buffer is zeroized on drop
    }
    buf.extend_from_slice(data);
    true
}

fn secret_uri(path: &str) -> String {
    format!("{}/{}", wire::ADMIN_SECRETS, encode(path))
}

/// For messages: the request path without its query.
fn path_only(uri: &str) -> &str {
    uri.split('?').next().unwrap_or(uri)
}

/// Percent-encode every byte outside `[A-Za-z0-9/_.-]`.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'.' | b'-') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overloaded_answers_wait_their_retry_after_with_jitter_and_a_cap() {
        assert_eq!(retry_wait(Some(2), 1.0), Duration::from_secs(2));
        assert_eq!(retry_wait(Some(2), 0.5), Duration::from_secs(1));
        assert_eq!(retry_wait(None, 1.5), Duration::from_millis(1500));
        assert_eq!(retry_wait(Some(0), 1.0), Duration::from_secs(1));
        assert_eq!(retry_wait(Some(3600), 1.0), MAX_RETRY_AFTER);
        for _ in 0..100 {
            let j = jitter();
            assert!((0.5..=1.5).contains(&j), "{j}");
        }
    }

    #[test]
    fn encode_keeps_only_the_safe_set() {
        assert_eq!(encode("app/db-1_x.y"), "app/db-1_x.y");
        assert_eq!(encode("a b&c=d?é"), "a%20b%26c%3Dd%3F%C3%A9");
    }

    #[test]
    fn append_caps_and_keeps_bytes() {
        let mut buf = Zeroizing::new(Vec::with_capacity(2));
        assert!(append(&mut buf, b"abc"));
        assert!(append(&mut buf, b"def"));
        assert_eq!(&buf[..], b"abcdef");
        assert!(!append(&mut buf, &vec![0; MAX_RESPONSE_BYTES]));
    }
}
