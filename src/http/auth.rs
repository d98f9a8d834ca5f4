//! API-key check for `/v1/*`: `Authorization: Bearer <key>` or `X-API-Key: <key>`.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;

use super::error::ApiError;
use super::AppState;
use crate::providers::constant_time_eq;

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    bearer
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
}

pub async fn require_api_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(expected) = &state.config.api_key {
        let ok = presented_key(req.headers())
            .is_some_and(|k| constant_time_eq(k.as_bytes(), expected.expose_secret().as_bytes()));
        if !ok {
            return ApiError::Unauthorized("missing or wrong API key").into_response();
        }
    }
    next.run(req).await
}
