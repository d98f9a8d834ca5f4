//! The bot's own reports: `POST /v1/events/sent` (send hook) and `POST /v1/events/ai`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::body::{read_limited, require_content_type, JSON};
use super::error::{ApiError, Result};
use super::AppState;
use crate::domain::category::Category;
use crate::domain::message::{Hook, MessageError};
use crate::domain::phone::Phone;
use crate::domain::settings_patch::MAX_PRICE;
use crate::domain::times;
use crate::domain::{Channel, Provider};
use crate::events::{clean_text, Event, ParseError, SentMessage};
use crate::metrics::AiObservation;
use crate::store::reservations;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sent))
        .routes(routes!(ai))
}

type ErrorBody = crate::openapi::ErrorBody;

/// Reads a JSON body of one object or an array of them. Each item comes with the prefix
/// (`""` or `"[i]"`) that 422 messages put before a field name.
pub(crate) async fn read_json_items<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<(String, T)>> {
    require_content_type(headers, JSON)?;
    let bytes = read_limited(headers, body).await?;
    // Parse once into a value to tell arrays from objects, then type each item so that
    // errors name `[i].field`.
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::Malformed(format!("malformed JSON: {e}")))?;
    let items = match value {
        serde_json::Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("[{i}]"), v))
            .collect(),
        other => vec![(String::new(), other)],
    };
    items
        .into_iter()
        .map(|(prefix, v)| {
            serde_path_to_error::deserialize(v)
                .map_err(|e| {
                    let path = e.path().to_string();
                    let inner = e.into_inner();
                    let message = inner.to_string();
                    let missing = message
                        .strip_prefix("missing field `")
                        .and_then(|r| r.strip_suffix('`'));
                    let field = match (path.as_str(), missing) {
                        (".", Some(m)) => {
                            format!("{prefix}{}{m}", if prefix.is_empty() { "" } else { "." })
                        }
                        (".", None) => {
                            if prefix.is_empty() {
                                "body".to_owned()
                            } else {
                                prefix.clone()
                            }
                        }
                        (p, _) => {
                            format!("{prefix}{}{p}", if prefix.is_empty() { "" } else { "." })
                        }
                    };
                    ApiError::invalid(field, message)
                })
                .map(|item| (prefix, item))
        })
        .collect()
}

/// The bot's report of one message it sent.
#[derive(Deserialize, ToSchema)]
struct SentIn {
    message_id: String,
    phone: String,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    is_template: bool,
    #[serde(default)]
    template_name: Option<String>,
    #[serde(default)]
    template_category: Option<String>,
    /// RFC 3339; at most 5 minutes ahead of the exporter's clock, not before 2015.
    #[serde(default)]
    sent_at: Option<String>,
    /// A reservation taken for this same phone (`/v1/check-send` with `reserve: true`).
    #[serde(default)]
    reservation_id: Option<String>,
    #[serde(default)]
    error: Option<SentErrorIn>,
    /// SMS segments the message was split into (integer ≥ 1, default 1); Twilio's
    /// `NumSegments` replaces it when a status callback gives one.
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 1000, example = 1)]
    segments: Option<serde_json::Value>,
}

#[derive(Deserialize, ToSchema)]
struct SentErrorIn {
    /// The provider's error code (integer, or a string of digits).
    #[schema(value_type = i64)]
    code: serde_json::Value,
    #[serde(default)]
    title: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct SentReply {
    accepted: usize,
    duplicates: usize,
}

fn field(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

fn bounded(prefix: &str, name: &str, value: &str, max: usize) -> Result<(), ParseError> {
    if value.trim().is_empty() || value.len() > max || value.contains('\0') {
        return Err(ParseError::invalid(
            field(prefix, name),
            format!("must be 1 to {max} bytes of text"),
        ));
    }
    Ok(())
}

impl SentIn {
    fn into_event(self, prefix: &str, now_ms: i64) -> Result<Event, ParseError> {
        bounded(prefix, "message_id", &self.message_id, 256)?;
        let phone = Phone::parse(&self.phone)
            .map_err(|e| ParseError::invalid(field(prefix, "phone"), e.to_string()))?;
        let provider = match self.provider.as_deref() {
            None => Provider::Meta,
            Some(p) => Provider::parse(p).ok_or_else(|| {
                ParseError::invalid(field(prefix, "provider"), "must be meta or twilio")
            })?,
        };
        let channel = match self.channel.as_deref() {
            None => Channel::Whatsapp,
            Some(c) => Channel::parse(c).ok_or_else(|| {
                ParseError::invalid(field(prefix, "channel"), "must be whatsapp or sms")
            })?,
        };
        let (template, category) = if self.is_template {
            let name = self.template_name.ok_or_else(|| {
                ParseError::invalid(
                    field(prefix, "template_name"),
                    "is required when is_template is true",
                )
            })?;
            bounded(prefix, "template_name", &name, 512)?;
            let raw = self.template_category.ok_or_else(|| {
                ParseError::invalid(
                    field(prefix, "template_category"),
                    "is required when is_template is true",
                )
            })?;
            let cat = Category::parse(&raw).ok_or_else(|| {
                ParseError::invalid(field(prefix, "template_category"), "must be one of marketing, marketing_lite, utility, authentication, authentication_international, service")
            })?;
            (name, Some(cat))
        } else {
            (String::new(), None)
        };
        let sent_at_ms = match self.sent_at.as_deref() {
            None => now_ms,
            Some(s) => {
                let invalid = |message| ParseError::invalid(field(prefix, "sent_at"), message);
                let t = chrono::DateTime::parse_from_rfc3339(s)
                    .map_err(|_| invalid("must be an RFC 3339 time"))?
                    .timestamp_millis();
                times::check_reported(t, now_ms).map_err(invalid)?;
                t
            }
        };
        if let Some(r) = &self.reservation_id {
            bounded(prefix, "reservation_id", r, 128)?;
        }
        let segments = match &self.segments {
            None | Some(serde_json::Value::Null) => 1,
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=1_000).contains(n))
                .map(|n| n as u32)
                .ok_or_else(|| {
                    ParseError::invalid(
                        field(prefix, "segments"),
                        "must be an integer from 1 to 1000",
                    )
                })?,
        };
        let error = self.error.map(|e| -> Result<MessageError, ParseError> {
            let code = match &e.code {
                serde_json::Value::Number(n) if n.is_i64() => n.to_string(),
                serde_json::Value::String(s)
                    if !s.is_empty() && s.len() <= 12 && s.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    s.clone()
                }
                _ => {
                    return Err(ParseError::invalid(
                        field(prefix, "error.code"),
                        "must be an integer error code",
                    ))
                }
            };
            Ok(MessageError {
                code,
                title: e.title.map_or_else(String::new, |t| clean_text(&t, 2048)),
                ..Default::default()
            })
        });
        Ok(Event::Sent(SentMessage {
            provider,
            channel,
            message_id: self.message_id,
            phone,
            hook: Hook {
                is_template: self.is_template,
                template,
                category,
                sent_at_ms,
                segments,
            },
            error: error.transpose()?,
            reservation_id: self.reservation_id,
        }))
    }
}

/// Send hook: idempotent per (provider, message_id). 202 `{"accepted": n, "duplicates": m}`.
#[utoipa::path(
    post,
    path = "/v1/events/sent",
    tag = "events",
    request_body(content = SentIn, description = "One object, or an array of them"),
    responses(
        (status = 202, body = SentReply),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
async fn sent(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<SentReply>)> {
    let items: Vec<(String, SentIn)> = read_json_items(&headers, body).await?;
    let now = state.clock.now_ms();
    let (prefixes, events): (Vec<String>, Vec<Event>) = items
        .into_iter()
        .map(|(prefix, item)| item.into_event(&prefix, now).map(|e| (prefix, e)))
        .collect::<Result<_, _>>()?;
    refuse_other_phones_reservations(&state, &prefixes, &events).await?;
    let hooks = super::webhooks::store_and_count(&state, events).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(SentReply {
            accepted: hooks.accepted,
            duplicates: hooks.duplicates,
        }),
    ))
}

/// A hook's `reservation_id` may confirm only a reservation taken for the hook's own
/// phone (CONTRACT §6.7): another phone's is refused before anything is stored. Read
/// before the batch, not in it, so that the refusal is this request's alone; the read
/// cannot go stale, as a reservation's phone never changes. An unknown id is let
/// through (it settles nothing; the hook is counted as any other).
async fn refuse_other_phones_reservations(
    state: &AppState,
    prefixes: &[String],
    events: &[Event],
) -> Result<()> {
    let named: Vec<(&str, &SentMessage)> = prefixes
        .iter()
        .zip(events)
        .filter_map(|(prefix, e)| match e {
            Event::Sent(h) if h.reservation_id.is_some() => Some((prefix.as_str(), h)),
            _ => None,
        })
        .collect();
    if named.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = named
        .iter()
        .filter_map(|(_, h)| h.reservation_id.as_deref())
        .collect();
    let reserved_for = {
        let mut conn = state.db.keyed().await?;
        reservations::phones_of(&mut conn, &ids).await?
    };
    for (prefix, h) in named {
        let id = h.reservation_id.as_deref().unwrap_or_default();
        if reserved_for
            .get(id)
            .is_some_and(|phone| phone != h.phone.as_str())
        {
            return Err(ApiError::invalid(
                field(prefix, "reservation_id"),
                "names a reservation taken for another phone",
            ));
        }
    }
    Ok(())
}

/// One AI call the bot made.
#[derive(Deserialize, ToSchema)]
struct AiIn {
    operation: String,
    model: String,
    latency_ms: f64,
    outcome: String,
    #[serde(default)]
    intent: Option<String>,
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cost: Option<f64>,
    #[serde(default)]
    currency: Option<String>,
}

impl AiIn {
    fn validate(&self, prefix: &str) -> Result<(), ParseError> {
        bounded(prefix, "operation", &self.operation, 128)?;
        bounded(prefix, "model", &self.model, 128)?;
        if let Some(i) = &self.intent {
            bounded(prefix, "intent", i, 128)?;
        }
        if !(self.latency_ms.is_finite() && (0.0..=86_400_000.0).contains(&self.latency_ms)) {
            return Err(ParseError::invalid(
                field(prefix, "latency_ms"),
                "must be a number of milliseconds between 0 and one day",
            ));
        }
        if !matches!(self.outcome.as_str(), "ok" | "error") {
            return Err(ParseError::invalid(
                field(prefix, "outcome"),
                "must be ok or error",
            ));
        }
        // One call's cost has the rate card's bound: a value near f64::MAX would turn
        // `messaging_ai_cost_total` into +Inf for good.
        if self.cost.is_some_and(|c| !(0.0..=MAX_PRICE).contains(&c)) {
            return Err(ParseError::invalid(
                field(prefix, "cost"),
                "must be a number from 0 to 1,000,000",
            ));
        }
        if let Some(c) = &self.currency {
            if !(c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase())) {
                return Err(ParseError::invalid(
                    field(prefix, "currency"),
                    "must be a 3-letter ISO 4217 code such as USD",
                ));
            }
        }
        Ok(())
    }
}

/// AI call reports are counted as they come: they are not provider events and carry no id
/// to dedupe by. The whole batch is checked before anything is counted.
#[utoipa::path(
    post,
    path = "/v1/events/ai",
    tag = "events",
    request_body(content = AiIn, description = "One object, or an array of them"),
    responses(
        (status = 202, description = "`{\"accepted\": n}`", body = Object),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody),
    )
)]
async fn ai(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>)> {
    let items: Vec<(String, AiIn)> = read_json_items(&headers, body).await?;
    for (prefix, item) in &items {
        item.validate(prefix)?;
    }
    let accepted = items.len();
    for (_, a) in items {
        state.recorder.record_ai(AiObservation {
            ok: a.outcome == "ok",
            seconds: a.latency_ms / 1000.0,
            input_tokens: a.input_tokens.unwrap_or(0),
            output_tokens: a.output_tokens.unwrap_or(0),
            cost: a
                .cost
                .map(|c| (c, a.currency.unwrap_or_else(|| "USD".to_owned()))),
            operation: a.operation,
            model: a.model,
            intent: a.intent,
        });
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"accepted": accepted})),
    ))
}
