//! `/metrics`, `/healthz`, `/readyz`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use tracing::error;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(metrics))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(openapi_json))
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Prometheus / OpenMetrics exposition.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, body = String, content_type = "application/openmetrics-text"))
)]
async fn metrics(State(state): State<AppState>) -> Response {
    // Everything replied to before this scrape is counted first.
    state.recorder.settled().await;
    state.metrics.set_db_pools(&state.db.pool_usage());
    // Encoding 100k series takes a core for tens of milliseconds: on a blocking thread,
    // the async workers go on answering webhooks meanwhile.
    let metrics = state.metrics.clone();
    match tokio::task::spawn_blocking(move || metrics.encode()).await {
        Ok(body) => ([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response(),
        Err(e) => {
            error!(error = %e, "encoding the metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// 200 while the process runs.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, body = String, content_type = "text/plain"))
)]
async fn healthz() -> &'static str {
    "ok"
}

/// 200 when the database answers and, after a write failed for want of storage, a write
/// succeeds again; else 503.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, body = String, content_type = "text/plain"),
        (status = 503, description = "Database unavailable", body = String, content_type = "text/plain"),
    )
)]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let ready = state.db.ready(state.clock.now_ms()).await;
    state.metrics.set_ready(ready);
    if ready {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
    }
}

/// This document: OpenAPI 3 of every route, generated from the handlers.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "OpenAPI 3 document", body = Object))
)]
async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::json(),
    )
}
