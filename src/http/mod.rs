//! The HTTP surface: one module per feature, each with its own `router()`.

pub mod auth;
pub mod body;
pub mod error;
pub mod events;
pub mod ops;
pub mod serve;
pub mod webhooks;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::settings_cache::SettingsCache;
use crate::store::Db;

/// Everything a handler may need, cloned cheaply into each request.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
    pub ledger: Ledger,
    pub metrics: Arc<Metrics>,
    pub settings: Arc<SettingsCache>,
    pub clock: SharedClock,
}

pub fn router(state: AppState) -> Router {
    let v1 = events::router().layer(middleware::from_fn_with_state(
        state.clone(),
        auth::require_api_key,
    ));
    Router::new()
        .merge(ops::router())
        .merge(webhooks::router())
        .merge(v1)
        .fallback(|| async { error::ApiError::NotFound("no such route".into()) })
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// Request latency by matched route (never the raw URI, which may hold a phone number).
async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let seconds = start.elapsed().as_secs_f64();
    state.metrics.observe_http(&method, &route, status, seconds);
    tracing::debug!(%method, %route, status, ms = seconds * 1000.0, "request");
    resp
}
