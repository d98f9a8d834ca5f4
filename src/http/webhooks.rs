//! Provider webhooks: Meta's handshake and events, Twilio's callbacks.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use secrecy::ExposeSecret;
use tracing::warn;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::body::{read_limited, require_content_type, FORM, JSON};
use super::error::{ApiError, Result};
use super::AppState;
use crate::domain::{Outcome, Provider};
use crate::events::Event;
use crate::ledger::HookCounts;
use crate::providers::{constant_time_eq, meta, twilio, twilio_url};
use crate::relay::{self, Target};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(meta_handshake, meta_events))
        .routes(routes!(twilio_events))
        // Sub-paths let status callbacks and incoming messages use distinct public URLs
        // (e.g. `…/twilio/status`, `…/twilio/inbound`) behind one exporter route.
        .routes(routes!(twilio_sub_path_events))
}

type ErrorBody = crate::openapi::ErrorBody;

/// Meta's subscription handshake: echo `hub.challenge` when mode and token match.
#[utoipa::path(
    get,
    path = "/webhooks/meta",
    tag = "webhooks",
    params(
        ("hub.mode" = String, Query, description = "subscribe"),
        ("hub.verify_token" = String, Query, description = "Must equal META_VERIFY_TOKEN"),
        ("hub.challenge" = String, Query, description = "Echoed back"),
    ),
    responses(
        (status = 200, description = "hub.challenge", body = String, content_type = "text/plain"),
        (status = 403, body = ErrorBody),
    )
)]
async fn meta_handshake(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse> {
    let expected = state
        .config
        .meta_verify_token
        .as_ref()
        .ok_or(ApiError::Forbidden)?;
    let token_ok = q
        .get("hub.verify_token")
        .is_some_and(|t| constant_time_eq(t.as_bytes(), expected.expose_secret().as_bytes()));
    match (
        q.get("hub.mode").map(String::as_str),
        token_ok,
        q.get("hub.challenge"),
    ) {
        (Some("subscribe"), true, Some(challenge)) => Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            challenge.clone(),
        )),
        _ => Err(ApiError::Forbidden),
    }
}

/// Meta (WhatsApp Cloud API) webhook: any number of entries, statuses and messages.
#[utoipa::path(
    post,
    path = "/webhooks/meta",
    tag = "webhooks",
    request_body(content = Object, description = "Meta webhook JSON", content_type = "application/json"),
    params(("X-Hub-Signature-256" = Option<String>, Header, description = "Required when META_APP_SECRET is set")),
    responses(
        (status = 200, description = "Stored and counted"),
        (status = 400, body = ErrorBody),
        (status = 401, description = "Bad signature", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 503, description = "Not stored; the provider retries", body = ErrorBody),
    )
)]
async fn meta_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode> {
    let (mut events, bytes) = parse_meta(&state, &headers, body)
        .await
        .inspect_err(|e| rejected(&state, Provider::Meta, e))?;
    if state.config.relay_meta_url.is_some() {
        events.push(to_relay(
            &state,
            Target::Meta,
            &headers,
            bytes,
            String::new(),
        ));
    }
    store_and_count(&state, events).await?;
    Ok(StatusCode::OK)
}

/// The webhook's events, and its body for the relay.
async fn parse_meta(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Vec<Event>, Bytes)> {
    require_content_type(headers, JSON)?;
    let bytes = read_limited(headers, body).await?;
    if let Some(secret) = &state.config.meta_app_secret {
        let header = headers
            .get("x-hub-signature-256")
            .and_then(|v| v.to_str().ok());
        if !meta::verify_signature(secret.expose_secret().as_bytes(), &bytes, header) {
            return Err(ApiError::Unauthorized(
                "missing or invalid X-Hub-Signature-256",
            ));
        }
    }
    Ok((meta::parse(&bytes)?, bytes))
}

/// A signed webhook as an event that puts it in the relay's outbox (CONTRACT §7).
fn to_relay(
    state: &AppState,
    target: Target,
    headers: &HeaderMap,
    body: Bytes,
    path_suffix: String,
) -> Event {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let signature = match target {
        Target::Meta => header("x-hub-signature-256"),
        // Twilio's covers the URL it called; the worker signs for the relay URL instead.
        Target::Twilio => String::new(),
    };
    Event::Relay(Box::new(relay::Webhook {
        target,
        body: body.into(),
        content_type: header("content-type"),
        signature,
        path_suffix,
        received_ms: state.clock.now_ms(),
    }))
}

const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>";

/// Twilio status callback or incoming message (form-encoded); replies with empty TwiML.
#[utoipa::path(
    post,
    path = "/webhooks/twilio",
    tag = "webhooks",
    request_body(content = Object, description = "Twilio callback parameters", content_type = "application/x-www-form-urlencoded"),
    params(("X-Twilio-Signature" = Option<String>, Header, description = "Required when TWILIO_AUTH_TOKEN is set")),
    responses(
        (status = 200, description = "Empty TwiML `<Response/>`", body = String, content_type = "text/xml"),
        (status = 400, body = ErrorBody),
        (status = 401, description = "Bad signature", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 503, description = "Not stored; the provider retries", body = ErrorBody),
    )
)]
async fn twilio_events(
    state: State<AppState>,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse> {
    twilio_callback(state, uri, headers, body).await
}

/// The same as `POST /webhooks/twilio`, under any sub-path (the signature covers the
/// full URL, so status and inbound callbacks may use distinct ones).
#[utoipa::path(
    post,
    path = "/webhooks/twilio/{*rest}",
    tag = "webhooks",
    params(
        ("rest" = String, Path, description = "Any sub-path, e.g. status or inbound"),
        ("X-Twilio-Signature" = Option<String>, Header, description = "Required when TWILIO_AUTH_TOKEN is set"),
    ),
    request_body(content = Object, description = "Twilio callback parameters", content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Empty TwiML `<Response/>`", body = String, content_type = "text/xml"),
        (status = 400, body = ErrorBody),
        (status = 401, description = "Bad signature", body = ErrorBody),
        (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
async fn twilio_sub_path_events(
    state: State<AppState>,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse> {
    twilio_callback(state, uri, headers, body).await
}

async fn twilio_callback(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse> {
    let path_and_query = uri
        .path_and_query()
        .map_or(twilio_url::ROUTE, |p| p.as_str());
    let (event, bytes) = parse_twilio(&state, path_and_query, &headers, body)
        .await
        .inspect_err(|e| rejected(&state, Provider::Twilio, e))?;
    let mut events = vec![event];
    if state.config.relay_twilio_url.is_some() {
        let suffix = path_and_query
            .strip_prefix(twilio_url::ROUTE)
            .unwrap_or_default();
        events.push(to_relay(
            &state,
            Target::Twilio,
            &headers,
            bytes,
            suffix.to_owned(),
        ));
    }
    store_and_count(&state, events).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        EMPTY_TWIML,
    ))
}

async fn parse_twilio(
    state: &AppState,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Event, Bytes)> {
    require_content_type(headers, FORM)?;
    let bytes = read_limited(headers, body).await?;
    let params = twilio::parse_form(&bytes)?;
    if let Some(token) = &state.config.twilio_auth_token {
        // Checked at start-up: a token requires PUBLIC_URL.
        let public_url = state.config.public_url.as_deref().unwrap_or_default();
        let urls = twilio_url::signed_urls(public_url, path_and_query);
        let header = headers
            .get("x-twilio-signature")
            .and_then(|v| v.to_str().ok());
        let token = token.expose_secret().as_bytes();
        if !urls
            .iter()
            .any(|url| twilio::verify_signature(token, url, &params, header))
        {
            // The URLs, never the signature or token, so an operator can spot a PUBLIC_URL
            // that differs from the URL Twilio posts to.
            warn!(
                tried = ?urls,
                signature_present = header.is_some(),
                "Twilio signature matches none of the URLs it may have been signed for"
            );
            return Err(ApiError::Unauthorized(
                "missing or invalid X-Twilio-Signature",
            ));
        }
    }
    Ok((twilio::parse(&params)?, bytes))
}

/// Stores events; the ledger counts what their commit made countable. On a database
/// error the caller gets 503 and only what was committed is counted (nothing, unless the
/// request's batch was cut in parts and some of them committed, or its commit finished
/// after the wait for it ended), so the provider's retry counts the rest exactly once.
/// Provider times too far ahead are taken as the receipt time (§6.5).
pub(super) async fn store_and_count(
    state: &AppState,
    mut events: Vec<Event>,
) -> Result<HookCounts> {
    let receipt = state.clock.now_ms();
    for event in &mut events {
        event.bound_provider_time(receipt);
    }
    Ok(state.ledger.record(events).await?)
}

/// A refused webhook: counted and logged together. The log names the provider and the
/// error code only: the message may quote the payload, which may hold a phone number.
fn rejected(state: &AppState, provider: Provider, err: &ApiError) {
    state.metrics.webhook_event(provider, Outcome::Rejected);
    let (status, code) = err.status_and_code();
    warn!(
        provider = provider.as_str(),
        status = status.as_u16(),
        code,
        "webhook rejected"
    );
}
