//! The HTTP surface: one module per feature, each with its own `router()`.

pub mod auth;
pub mod body;
pub mod config_api;
pub mod error;
pub mod events;
pub mod ops;
pub mod params;
pub mod presend;
pub mod query;
pub mod serve;
pub mod webhooks;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use utoipa_axum::router::OpenApiRouter;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::ledger::Ledger;
use crate::metrics::{Metrics, Recorder};
use crate::presend::{Reserver, StateReader};
use crate::settings_cache::SettingsCache;
use crate::store::Db;

/// Everything a handler may need, cloned into each request (axum's `State` clones it per
/// extractor): one shared pointer, where cloning each field's own `Arc`s and channel
/// senders took 3% of all CPU in scenario 1, two cores contending for their counts.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct Shared {
    pub config: Arc<Config>,
    pub db: Db,
    pub ledger: Ledger,
    pub metrics: Arc<Metrics>,
    /// Where committed tallies and AI calls go to be counted (off the async workers).
    pub recorder: Recorder,
    pub presend_reads: StateReader,
    pub reserver: Reserver,
    pub settings: Arc<SettingsCache>,
    pub clock: SharedClock,
}

/// Every route, split into the public ones and those under the API key, with the
/// OpenAPI document of exactly these routes: each handler's `#[utoipa::path]` both
/// registers it with axum and describes it, so the document cannot drift from the router.
pub struct Routes {
    pub public: Router<AppState>,
    pub v1: Router<AppState>,
    pub doc: utoipa::openapi::OpenApi,
}

pub fn routes() -> Routes {
    let (v1, mut v1_doc) = OpenApiRouter::new()
        .merge(events::router())
        .merge(presend::router())
        .merge(query::router())
        .merge(config_api::router())
        .split_for_parts();
    crate::openapi::require_api_key(&mut v1_doc);
    let (public, mut doc) = OpenApiRouter::with_openapi(crate::openapi::base())
        .merge(ops::router())
        .merge(webhooks::router())
        .split_for_parts();
    doc.merge(v1_doc);
    Routes {
        public,
        v1,
        doc: crate::openapi::finish(doc),
    }
}

pub fn router(state: AppState) -> Router {
    let Routes { public, v1, .. } = routes();
    let v1 = v1.layer(middleware::from_fn_with_state(
        state.clone(),
        auth::require_api_key,
    ));
    Router::new()
        .merge(public)
        .merge(v1)
        .fallback(|| async { error::ApiError::NotFound("no such route".into()) })
        .layer(middleware::from_fn(error::method_not_allowed_envelope))
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
