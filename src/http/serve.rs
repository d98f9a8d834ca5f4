//! The accept loop: hyper with the limits a public webhook endpoint needs, so that slow or
//! greedy clients cannot starve real traffic.
//!
//! - a client must send its request headers within `header_read_timeout`;
//! - a request (body read and handling) must finish within `request_timeout` (408 after);
//! - at most `max_concurrent_requests` are handled at once; more get 503 at once rather
//!   than queueing without bound (providers retry 503);
//! - the body limit (1 MiB) is enforced where bodies are read (`body.rs`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_http::timeout::TimeoutLayer;
use tracing::{debug, info, warn};

#[derive(Clone, Debug)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub max_concurrent_requests: usize,
    /// How long in-flight requests may take to finish after a shutdown signal.
    pub drain_timeout: Duration,
}

/// Wraps the router in the request timeout and the concurrency cap.
pub fn with_limits(router: Router, limits: &Limits) -> Router {
    let permits = Arc::new(Semaphore::new(limits.max_concurrent_requests));
    router
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let permits = permits.clone();
                async move {
                    match permits.try_acquire() {
                        Ok(_permit) => next.run(req).await,
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
