//! The accept loop: hyper with the limits a public webhook endpoint needs, so that slow or
//! greedy clients cannot starve real traffic.
//!
//! - a client must send its request headers within `header_read_timeout`;
//! - a request (body read and handling) must finish within `request_timeout` (408 after);
//! - at most `max_concurrent_requests` are handled at once; more get 503 at once rather
//!   than queueing without bound (providers retry 503). A request takes its place only
//!   once its body has arrived, so clients that trickle bodies hold a connection each but
//!   no place, and cannot starve signed webhooks or the bot (CONTRACT §6.10); health,
//!   readiness and scrapes take none at all, so an overloaded exporter is not restarted
//!   by its liveness probe; requests holding a place are shown as
//!   `messaging_exporter_requests_in_flight`;
//! - the body limit (1 MiB) is enforced where bodies are read (`body.rs`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_http::timeout::TimeoutLayer;
use tracing::{debug, info, warn};

use super::body::MAX_BODY_BYTES;
use super::error::ApiError;
use crate::metrics::RequestPlaces;

#[derive(Clone, Debug)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub max_concurrent_requests: usize,
    /// How long in-flight requests may take to finish after a shutdown signal.
    pub drain_timeout: Duration,
}

/// Wraps the router in the request timeout and the concurrency cap, whose places in use
/// `places` shows.
pub fn with_limits(router: Router, limits: &Limits, places: RequestPlaces) -> Router {
    let permits = Arc::new(Semaphore::new(limits.max_concurrent_requests));
    router
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let (permits, places) = (permits.clone(), places.clone());
                async move {
                    if UNCAPPED.contains(&req.uri().path()) {
                        return next.run(req).await;
                    }
                    let req = match body_arrived(req).await {
                        Ok(req) => req,
                        Err(refused) => return refused,
                    };
                    match permits.try_acquire() {
                        Ok(_permit) => {
                            let _in_flight = places.enter();
                            next.run(req).await
                        }
                        Err(_) => overloaded(),
                    }
                }
            },
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
}

/// Cheap routes a probe or Prometheus calls, served whatever the load.
const UNCAPPED: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The request with its body read into memory, up to one byte past the limit (the
/// handler refuses an oversized body in its own terms, counting a refused webhook). A
/// body declared over the limit is left unread for the handler to refuse at once.
async fn body_arrived(req: Request) -> Result<Request, Response> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Ok(req);
    }
    let (parts, mut body) = req.into_parts();
    let mut bytes = Vec::new();
    while bytes.len() <= MAX_BODY_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(chunk) = frame.data_ref() {
                    bytes.extend_from_slice(chunk);
                }
            }
            Some(Err(e)) => {
                let e = ApiError::Malformed(format!("could not read the request body: {e}"));
                return Err(e.into_response());
            }
            None => break,
        }
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

fn overloaded() -> Response {
    let body = axum::Json(serde_json::json!({"error": {
        "code": "overloaded", "message": "too many requests in flight; retry shortly"}}));
    let mut resp = (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    resp.headers_mut()
        .insert("retry-after", HeaderValue::from_static("1"));
    resp
}

/// Serves until `shutdown` resolves, then stops accepting and drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(router.clone());
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        info!("drain timeout reached; closing remaining connections");
    }
}
