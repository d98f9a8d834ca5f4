//! The pre-send API (CONTRACT §3): `POST /v1/check-send` answers "may I send this now,
//! and what will it cost", optionally taking the phone's template slot;
//! `DELETE /v1/reservations/{id}` gives a slot back. See docs/presend.md.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};
use tracing::debug;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, Result};
use super::events::read_json_items;
use super::AppState;
use crate::clock::rfc3339;
use crate::domain::category::Category;
use crate::domain::cooldown::{cooldown_ms, Slot};
use crate::domain::phone::Phone;
use crate::domain::presend::{self, BlockedReason, Known};
use crate::domain::pricing::Quote;
use crate::domain::window::Window;
use crate::store::reservations::{self, Reservation, ReservationStatus};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(check_send))
        .routes(routes!(release))
}

/// A pre-send question.
#[derive(Deserialize, ToSchema)]
pub struct CheckSendRequest {
    /// `+919876543210`, `919876543210` or `whatsapp:+919876543210`.
    #[schema(example = "919876543210")]
    pub phone: String,
    #[serde(default)]
    pub is_template: bool,
    #[serde(default)]
    pub template_name: Option<String>,
    /// Required when `is_template` is true.
    #[serde(default)]
    #[schema(example = "utility")]
    pub template_category: Option<String>,
    /// Take the phone's template slot if the send is allowed.
    #[serde(default)]
    pub reserve: bool,
}

/// A phone's 24-hour customer-service window at the time of the check.
#[derive(Serialize, ToSchema)]
pub struct SessionWindow {
    pub is_active: bool,
    /// When the window closes; null when it is not open.
    #[schema(required = true)]
    pub expires_at: Option<String>,
    /// Whole minutes left, rounded up; 0 when not open.
    pub remaining_minutes: i64,
}

impl SessionWindow {
    pub fn at(window: Window, now_ms: i64) -> Self {
        let open = window.is_open_at(now_ms);
        Self {
            is_active: open,
            expires_at: window.expires_at_ms().filter(|_| open).map(rfc3339),
            remaining_minutes: window.remaining_minutes(now_ms),
        }
    }
}

/// The phone's template cooldown (null for free-form messages or when rate limiting is off).
#[derive(Serialize, ToSchema)]
pub struct RateLimit {
    pub can_send: bool,
    /// Whole minutes until another template may go to this phone, rounded up; 0 when it may.
    pub cooldown_remaining_minutes: i64,
    /// When the phone's cooldown runs from: its latest template send hook's `sent_at`, or
    /// the hook's receipt if that is earlier; null when none is recorded.
    #[schema(required = true)]
    pub last_template_sent_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CostQuote {
    pub amount: f64,
    #[schema(example = "INR")]
    pub currency: String,
    /// service_message, within_session, template_outside_session,
    /// category_always_charged or cost_tracking_disabled.
    #[schema(example = "within_session")]
    pub reason: String,
}

/// A taken template slot.
#[derive(Serialize, ToSchema)]
pub struct ReservationRef {
    pub id: String,
    /// When the slot frees on its own if the reservation is neither confirmed by a send
    /// hook nor released: reservation time plus the cooldown.
    pub expires_at: String,
}

/// The pre-send decision. Every key is always present.
#[derive(Serialize, ToSchema)]
pub struct CheckSendReply {
    pub phone: String,
    pub can_send: bool,
    /// outside_session_window or rate_limited; null when allowed.
    #[schema(example = "rate_limited")]
    #[schema(required = true)]
    pub blocked_reason: Option<String>,
    /// Null when session tracking is off.
    #[schema(required = true)]
    pub session: Option<SessionWindow>,
    #[schema(required = true)]
    pub rate_limit: Option<RateLimit>,
    pub cost: CostQuote,
    /// Set only when `reserve` was true and the send is allowed.
    #[schema(required = true)]
    pub reservation: Option<ReservationRef>,
}

/// A reservation as it stands.
#[derive(Serialize, ToSchema)]
pub struct ReservationState {
    pub id: String,
    pub phone: String,
    /// held, confirmed or released.
    #[schema(example = "released")]
    pub status: String,
    pub created_at: String,
    pub expires_at: String,
    /// The send hook that confirmed it; null unless confirmed.
    #[schema(required = true)]
    pub message_id: Option<String>,
}

impl From<Reservation> for ReservationState {
    fn from(r: Reservation) -> Self {
        Self {
            status: r.status.as_str().to_owned(),
            created_at: rfc3339(r.created_ms),
            expires_at: rfc3339(r.expires_ms),
            message_id: (!r.message_id.is_empty()).then_some(r.message_id),
            id: r.id,
            phone: r.phone,
        }
    }
}

struct Question {
    phone: Phone,
    /// `None` for free-form.
    category: Option<Category>,
    reserve: bool,
}

impl CheckSendRequest {
    fn validate(self) -> Result<Question> {
        let phone =
            Phone::parse(&self.phone).map_err(|e| ApiError::invalid("phone", e.to_string()))?;
        let category = if self.is_template {
            let raw = self.template_category.ok_or_else(|| {
                ApiError::invalid("template_category", "is required when is_template is true")
            })?;
            Some(Category::parse(&raw).ok_or_else(|| {
                ApiError::invalid(
                    "template_category",
                    "must be one of marketing, marketing_lite, utility, authentication, \
                     authentication_international, service",
                )
            })?)
        } else {
            None
        };
        if let Some(name) = &self.template_name {
            if name.len() > 512 || name.contains('\0') {
                return Err(ApiError::invalid(
                    "template_name",
                    "must be at most 512 bytes of text",
                ));
            }
        }
        Ok(Question {
            phone,
            category,
            reserve: self.reserve,
        })
    }
}

/// Pre-send decision: window, cooldown, cost; with `reserve: true` the cooldown slot is
/// taken atomically before the reply.
#[utoipa::path(
    post,
    path = "/v1/check-send",
    tag = "pre-send",
    request_body = CheckSendRequest,
    responses(
        (status = 200, description = "The decision", body = CheckSendReply),
        (status = 400, description = "Malformed JSON", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = crate::openapi::ErrorBody),
        (status = 422, description = "Invalid field (named in the message)", body = crate::openapi::ErrorBody),
        (status = 503, description = "Database unavailable", body = crate::openapi::ErrorBody),
    )
)]
pub async fn check_send(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<CheckSendReply>> {
    let mut items: Vec<(String, CheckSendRequest)> = read_json_items(&headers, body).await?;
    if items.len() != 1 || !items[0].0.is_empty() {
        return Err(ApiError::invalid("body", "must be one JSON object"));
    }
    let q = items.remove(0).1.validate()?;
    let settings = state.settings.get();
    let now = state.clock.now_ms();
    let cooldown = cooldown_ms(settings.template_cooldown_hours);
    let has_slot = q.category.is_some() && settings.rate_limiting_enabled;

    let (window, slot) = state.presend_reads.get(q.phone.as_str()).await?;
    let mut known = Known {
        window: settings.session_tracking_enabled.then_some(window),
        slot: has_slot.then_some(slot),
    };
    let mut decision = presend::decide(&settings, &q.phone, q.category, known, now);

    let mut reservation = None;
    if decision.blocked.is_none() && q.reserve && has_slot {
        match state.reserver.reserve(q.phone.as_str()).await? {
            Ok(r) => reservation = Some(r),
            Err(taken) => {
                // Another caller took the slot between our read and our write.
                known.slot = Some(taken);
                decision.blocked = Some(BlockedReason::RateLimited);
            }
        }
    }

    let reply = CheckSendReply {
        phone: q.phone.as_str().to_owned(),
        can_send: decision.blocked.is_none(),
        blocked_reason: decision.blocked.map(|b| b.as_str().to_owned()),
        session: known.window.map(|w| SessionWindow::at(w, now)),
        rate_limit: known.slot.map(|s| rate_limit_view(s, now, cooldown)),
        cost: cost_view(decision.quote, &settings.currency),
        reservation: reservation.map(|r| ReservationRef {
            id: r.id,
            expires_at: rfc3339(r.expires_ms),
        }),
    };
    let (outcome, reason) = decision.metric_labels();
    state.metrics.record_presend(outcome, reason);
    debug!(phone = %q.phone, decision = outcome, reason, reserved = reply.reservation.is_some(), "pre-send check");
    Ok(Json(reply))
}

fn rate_limit_view(slot: Slot, now: i64, cooldown: i64) -> RateLimit {
    RateLimit {
        can_send: slot.is_free_at(now, cooldown),
        cooldown_remaining_minutes: slot.remaining_minutes(now, cooldown),
        last_template_sent_at: (slot.last_template_ms > 0).then(|| rfc3339(slot.last_template_ms)),
    }
}

fn cost_view(quote: Quote, currency: &str) -> CostQuote {
    CostQuote {
        amount: quote.amount,
        currency: currency.to_owned(),
        reason: quote.reason.as_str().to_owned(),
    }
}

/// Gives a reservation's slot back. Releasing again answers the same; a confirmed
/// reservation stays confirmed (its template went out, so its cooldown stands).
#[utoipa::path(
    delete,
    path = "/v1/reservations/{id}",
    tag = "pre-send",
    params(("id" = String, Path, description = "The reservation's id from /v1/check-send")),
    responses(
        (status = 200, description = "The reservation after the release", body = ReservationState),
        (status = 401, description = "Missing or wrong API key", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such reservation", body = crate::openapi::ErrorBody),
        (status = 503, description = "Database unavailable", body = crate::openapi::ErrorBody),
    )
)]
pub async fn release(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ReservationState>> {
    let now = state.clock.now_ms();
    let mut w = state.db.begin_write().await?;
    let Some(mut r) = reservations::get(&mut w.tx, &id).await? else {
        return Err(ApiError::NotFound("no such reservation".into()));
    };
    if r.status == ReservationStatus::Held {
        reservations::settle(&mut w.tx, &id, ReservationStatus::Released, "", now).await?;
        // Read again: a concurrent release or send hook may have settled it first.
        r = reservations::get(&mut w.tx, &id).await?.unwrap_or(r);
    }
    w.commit().await?;
    Ok(Json(r.into()))
}
