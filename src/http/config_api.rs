//! `GET /v1/config` and `PUT /v1/config`: the operator's settings and rate card, stored
//! in the database. The replica that takes a PUT uses it at once; the others pick it up
//! at their next settings refresh (every 2 s, see `background`).

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;
use tracing::info;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::body::{read_limited, require_content_type, JSON};
use super::error::{ApiError, Result};
use super::AppState;
use crate::domain::settings::Settings;
use crate::domain::settings_patch;
use crate::store;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_config, put_config))
}

type ErrorBody = crate::openapi::ErrorBody;

/// The settings document (the schema of `GET`; a `PUT` sends any part of it).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // exists for the OpenAPI document; the handlers serialise `Settings`
pub struct ConfigDocument {
    /// 0 to 168.
    #[schema(example = 12)]
    template_cooldown_hours: u32,
    rate_limiting_enabled: bool,
    session_tracking_enabled: bool,
    cost_tracking_enabled: bool,
    block_out_of_session_messages: bool,
    /// ISO 4217 code.
    #[schema(example = "INR")]
    currency: String,
    /// Category → price per message.
    #[schema(example = json!({"marketing": 0.75, "utility": 0.35, "authentication": 0.30, "service": 0.0}))]
    rates: BTreeMap<String, f64>,
    /// Calling-code prefix → category → price; the longest matching prefix wins.
    #[schema(example = json!({"1": {"marketing": 0.025, "utility": 0.004, "authentication": 0.0135}}))]
    country_rates: BTreeMap<String, BTreeMap<String, f64>>,
    #[schema(example = json!(["service"]))]
    free_in_window_categories: Vec<String>,
    /// ISO 4217 code of the SMS rate card.
    #[schema(example = "USD")]
    sms_currency: String,
    /// SMS price per segment by direction (`outbound`, `inbound`); SMS is never priced
    /// from `rates`.
    #[schema(example = json!({"outbound": 0.0079, "inbound": 0.0079}))]
    sms_rates: BTreeMap<String, f64>,
    /// Calling-code prefix → direction → SMS price per segment; the longest prefix wins.
    #[schema(example = json!({"91": {"outbound": 0.0832}}))]
    sms_country_rates: BTreeMap<String, BTreeMap<String, f64>>,
    /// Last change; null until the first PUT that changed something.
    updated_at: Option<String>,
}

/// The current settings.
#[utoipa::path(
    get,
    path = "/v1/config",
    tag = "config",
    responses(
        (status = 200, body = ConfigDocument),
        (status = 401, body = ErrorBody),
    )
)]
pub async fn get_config(State(state): State<AppState>) -> Json<Settings> {
    Json(state.settings.get().as_ref().clone())
}

/// Merges a partial settings document (JSON Merge Patch: objects merge, `null` removes a
/// key of `country_rates`/`sms_country_rates`), checks it and stores it.
#[utoipa::path(
    put,
    path = "/v1/config",
    tag = "config",
    request_body(content = ConfigDocument, description = "Any subset of the settings"),
    responses(
        (status = 200, description = "The settings now in force", body = ConfigDocument),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 415, body = ErrorBody),
        (status = 422, description = "Unknown key or bad value (field named)", body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn put_config(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Settings>> {
    require_content_type(&headers, JSON)?;
    let bytes = read_limited(&headers, body).await?;
    let patch: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::Malformed(format!("malformed JSON: {e}")))?;
    let now = state.clock.now_ms();
    let mut w = state.db.begin_write().await?;
    let (current, version) = store::settings::lock(&mut w.tx).await?;
    let mut next = settings_patch::apply(&current, &patch)
        .map_err(|e| ApiError::invalid(e.field, e.message))?;
    if next == current {
        state.settings.offer(next.clone(), version);
    } else {
        next.updated_at = chrono::DateTime::from_timestamp_millis(now);
        let version = store::settings::write(&mut w.tx, &next, now).await?;
        w.commit().await?;
        state.settings.offer(next.clone(), version);
        info!(changed = %changed_keys(&current, &next), "settings changed");
    }
    Ok(Json(next))
}

/// The top-level keys whose values differ, for the log line.
fn changed_keys(a: &Settings, b: &Settings) -> String {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(a), serde_json::to_value(b))
    else {
        return String::new();
    };
    a.iter()
        .filter(|(k, v)| *k != "updated_at" && b.get(*k) != Some(v))
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(",")
}
