//! The admin listener (`--admin-addr`, off by default, loopback unless told
//! otherwise): `/healthz` (alive), `/readyz` (policies loaded, audit sink
//! writable, store reachable; `200 degraded: ...` while the Vault store
//! is unreachable and stale copies are served; then a line per failing
//! change action) and `/metrics` (Prometheus text: OpenMetrics or the classic 0.0.4 format, as
//! `Accept` asks).
//!
//! **Invariant:** it serves no secret and takes no input beyond the path;
//! it is a separate listener so the API socket's permissions stay the only
//! way to a secret.

use crate::metrics::Exposition;
use crate::service::Broker;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    res
}

async fn route(broker: &Broker, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, PLAIN, "ok\n".into()),
        "/readyz" => {
            // Detail lines (failing change actions) follow the verdict;
            // they do not change it: one app's failing reload is no
            // reason to stop serving every other.
            let detail: String = broker
                .ready_detail()
                .iter()
                .map(|l| format!("{l}\n"))
                .collect();
            match broker.ready().await {
                Ok(None) => text(StatusCode::OK, PLAIN, format!("ready\n{detail}")),
                // Still serving, from stale copies: 200, and a body saying so.
                Ok(Some(why)) => text(StatusCode::OK, PLAIN, format!("degraded: {why}\n{detail}")),
                Err(why) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    PLAIN,
                    format!("not ready: {why}\n{detail}"),
                ),
            }
        }
        "/metrics" => {
            let accept = req
                .headers()
                .get(hyper::header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let format = Exposition::negotiate(accept);
            let mut res = text(
                StatusCode::OK,
                format.content_type(),
                format.encode(broker.render_metrics()),
            );
            // The answer depends on Accept: a cache in between must know.
            res.headers_mut().insert(
                hyper::header::VARY,
                hyper::header::HeaderValue::from_static("accept"),
            );
            res
        }
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "try /healthz, /readyz or /metrics\n".into(),
        ),
    }
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

pub async fn serve(listener: TcpListener, broker: Arc<Broker>) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(5));
    let http = Arc::new(http);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let broker = broker.clone();
        let http = http.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let broker = broker.clone();
                async move { Ok::<_, Infallible>(route(&broker, req).await) }
            });
            let _ = http.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
