//! Read APIs over the stored state: sessions, costs, errors and an overview.
//! Phones come back as digits: these answers are for the API's owner. Times are RFC 3339.

use std::collections::HashMap;

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, Result};
use super::params::{parse_range, Pagination, Paging};
use super::AppState;
use crate::clock::rfc3339;
use crate::domain::phone::Phone;
use crate::domain::session::SessionState;
use crate::store::cost_lines;
use crate::store::queries::{self, CostGroup, DAY_MS};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_sessions))
        .routes(routes!(one_session))
        .routes(routes!(costs))
        .routes(routes!(phone_costs))
        .routes(routes!(errors))
        .routes(routes!(overview))
}

type ErrorBody = crate::openapi::ErrorBody;

fn query_map(raw: Option<String>) -> HashMap<String, String> {
    form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn paging(q: &HashMap<String, String>) -> Result<Paging> {
    Paging::parse(
        q.get("page").map(String::as_str),
        q.get("limit").map(String::as_str),
    )
}

fn phone_param(raw: &str) -> Result<Phone> {
    Phone::parse(raw).map_err(|e| ApiError::invalid("phone", e.to_string()))
}

/// One phone's customer-service window and message counts.
#[derive(Serialize, ToSchema)]
pub struct SessionInfo {
    pub phone: String,
    pub is_active: bool,
    /// When the current (or last) window opened; null if the phone never wrote.
    #[schema(required = true)]
    pub window_started_at: Option<String>,
    #[schema(required = true)]
    pub last_inbound_at: Option<String>,
    /// Null unless the window is open.
    #[schema(required = true)]
    pub expires_at: Option<String>,
    /// Whole minutes left, rounded up; 0 unless open.
    pub remaining_minutes: i64,
    /// Inbound messages from the user (within retention).
    pub user_messages: i64,
    /// Outbound messages to the user (within retention).
    pub business_messages: i64,
}

impl SessionInfo {
    fn from_state(s: &SessionState, now: i64) -> Self {
        let w = s.window();
        let open = w.is_open_at(now);
        let time = |ms: i64| (ms > 0).then(|| rfc3339(ms));
        Self {
            phone: s.phone.clone(),
            is_active: open,
            window_started_at: time(s.window_started_ms),
            last_inbound_at: time(s.last_inbound_ms),
            expires_at: w.expires_at_ms().filter(|_| open).map(rfc3339),
            remaining_minutes: w.remaining_minutes(now),
            user_messages: s.user_messages,
            business_messages: s.business_messages,
        }
    }
}

/// `page` and `limit` of the paginated lists, as documented; parsed by `paging`, which
/// names the field in a 422.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct PageParams {
    /// From 1 (default 1)
    page: Option<i64>,
    /// 1 to 500 (default 50)
    limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct SessionPage {
    pub sessions: Vec<SessionInfo>,
    pub pagination: Pagination,
}

/// Open customer-service windows, soonest expiry first.
#[utoipa::path(
    get,
    path = "/v1/sessions",
    tag = "queries",
    params(PageParams),
    responses(
        (status = 200, body = SessionPage),
        (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn list_sessions(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<SessionPage>> {
    let paging = paging(&query_map(raw))?;
    let now = state.clock.now_ms();
    let mut conn = state.db.pool().acquire().await?;
    let (rows, total) =
        queries::open_sessions(&mut conn, now, paging.limit, paging.offset()).await?;
    Ok(Json(SessionPage {
        sessions: rows
            .iter()
            .map(|s| SessionInfo::from_state(s, now))
            .collect(),
        pagination: paging.describe(total),
    }))
}

/// One phone's window: 200 with `is_active: false` when it has none.
#[utoipa::path(
    get,
    path = "/v1/sessions/{phone}",
    tag = "queries",
    params(("phone" = String, Path, description = "Digits, +digits or whatsapp:+digits")),
    responses(
        (status = 200, body = SessionInfo),
        (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn one_session(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<SessionInfo>> {
    let phone = phone_param(&raw)?;
    let now = state.clock.now_ms();
    let mut conn = state.db.pool().acquire().await?;
    let s = queries::session(&mut conn, phone.as_str())
        .await?
        .unwrap_or_else(|| SessionState {
            phone: phone.as_str().to_owned(),
            ..Default::default()
        });
    Ok(Json(SessionInfo::from_state(&s, now)))
}

#[derive(Serialize, ToSchema)]
pub struct CostLine {
    /// A category (`none` when nothing named one), a template (`none` for free-form,
    /// `unknown` without a send hook), or a UTC date `YYYY-MM-DD`.
    pub key: String,
    /// Messages charged (including those charged 0).
    pub messages: i64,
    pub cost: f64,
}

fn lines(groups: Vec<CostGroup>, key: impl Fn(String) -> String) -> Vec<CostLine> {
    groups
        .into_iter()
        .map(|g| CostLine {
            key: key(g.key),
            messages: g.messages,
            cost: g.cost,
        })
        .collect()
}

fn category_key(k: String) -> String {
    if k.is_empty() {
        "none".to_owned()
    } else {
        k
    }
}

fn day_key(k: String) -> String {
    k.parse::<i64>()
        .ok()
        .and_then(|d| chrono::DateTime::from_timestamp_millis(d * DAY_MS))
        .map_or(k, |t| t.format("%Y-%m-%d").to_string())
}

/// One UTC day's cost for a provider and category, in one currency.
#[derive(Serialize, ToSchema)]
pub struct DayCost {
    /// UTC date `YYYY-MM-DD`.
    pub day: String,
    pub provider: String,
    /// A WhatsApp category, `sms`, or `none`.
    pub category: String,
    pub currency: String,
    /// Messages the line covers; null for Meta's figures, which are per day.
    pub messages: Option<i64>,
    pub cost: f64,
}

fn day_lines(lines: cost_lines::Lines) -> Vec<DayCost> {
    lines
        .into_iter()
        .map(|((day, provider, category, currency), l)| DayCost {
            day: day_key(day.to_string()),
            provider,
            category,
            currency,
            messages: l.messages,
            cost: l.cost,
        })
        .collect()
}

#[derive(Serialize, ToSchema)]
pub struct CostReport {
    /// The range covered, `[from, to)`.
    pub from: String,
    pub to: String,
    /// The WhatsApp rate card's currency, which `total_cost` and the `by_*` lines are in.
    pub currency: String,
    pub total_cost: f64,
    /// Messages whose cost was counted in the range in `currency` (at delivery, or read
    /// if no delivery).
    pub messages: i64,
    pub by_category: Vec<CostLine>,
    pub by_template: Vec<CostLine>,
    pub by_day: Vec<CostLine>,
    /// The estimate per day, provider and category, each in its own currency (SMS in
    /// `sms_currency`, inbound SMS included): beside `billed`, line for line.
    pub estimate: Vec<DayCost>,
    /// What the providers billed (CONTRACT §9): Twilio's price of each message charged in
    /// the range, Meta's `pricing_analytics` figure of each day overlapping it.
    pub billed: Vec<DayCost>,
}

/// Cost of the messages charged between `from` and `to`.
#[utoipa::path(
    get,
    path = "/v1/costs",
    tag = "queries",
    params(
        ("from" = Option<String>, Query, description = "RFC 3339 time or YYYY-MM-DD (start of that day, UTC); default 30 days before `to`"),
        ("to" = Option<String>, Query, description = "RFC 3339 time (exclusive) or YYYY-MM-DD (the whole day, UTC); default now"),
    ),
    responses(
        (status = 200, body = CostReport),
        (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn costs(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<CostReport>> {
    let q = query_map(raw);
    let now = state.clock.now_ms();
    let (from, to) = parse_range(
        q.get("from").map(String::as_str),
        q.get("to").map(String::as_str),
        now,
    )?;
    let currency = state.settings.get().currency.clone();
    let mut conn = state.db.pool().acquire().await?;
    let r = queries::costs(&mut conn, from, to, &currency).await?;
    let estimate = cost_lines::estimated(&mut conn, from, to).await?;
    let billed = cost_lines::billed(&mut conn, from, to).await?;
    Ok(Json(CostReport {
        from: rfc3339(from),
        to: rfc3339(to),
        currency,
        total_cost: r.cost,
        messages: r.messages,
        by_category: lines(r.by_category, category_key),
        by_template: lines(r.by_template, category_key),
        by_day: lines(r.by_day, day_key),
        estimate: day_lines(estimate),
        billed: day_lines(billed),
    }))
}

#[derive(Serialize, ToSchema)]
pub struct PhoneCosts {
    pub phone: String,
    pub currency: String,
    pub total_cost: f64,
    /// Outbound messages to this phone (within retention).
    pub outbound_messages: i64,
    pub inbound_messages: i64,
    pub sent: i64,
    pub delivered: i64,
    pub read: i64,
    pub failed: i64,
    /// Messages whose cost was counted in `currency` (the WhatsApp rate card's).
    pub charged_messages: i64,
    pub by_category: Vec<CostLine>,
}

/// One phone's cost and message counts.
#[utoipa::path(
    get,
    path = "/v1/costs/users/{phone}",
    tag = "queries",
    params(("phone" = String, Path, description = "Digits, +digits or whatsapp:+digits")),
    responses(
        (status = 200, body = PhoneCosts),
        (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn phone_costs(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<PhoneCosts>> {
    let phone = phone_param(&raw)?;
    let mut conn = state.db.pool().acquire().await?;
    let currency = state.settings.get().currency.clone();
    let t = queries::phone_totals(&mut conn, phone.as_str(), &currency).await?;
    Ok(Json(PhoneCosts {
        phone: phone.as_str().to_owned(),
        currency: state.settings.get().currency.clone(),
        total_cost: t.cost,
        outbound_messages: t.outbound,
        inbound_messages: t.inbound,
        sent: t.sent,
        delivered: t.delivered,
        read: t.read,
        failed: t.failed,
        charged_messages: t.charged,
        by_category: lines(t.by_category, category_key),
    }))
}

#[derive(Serialize, ToSchema)]
pub struct FailedMessage {
    pub provider: String,
    pub channel: String,
    pub message_id: String,
    pub phone: String,
    /// Null when no send hook named one.
    #[schema(required = true)]
    pub template: Option<String>,
    #[schema(required = true)]
    pub category: Option<String>,
    pub failed_at: String,
    /// The provider's error code (e.g. Meta 131047, Twilio 30007); null if it gave none.
    #[schema(required = true)]
    pub code: Option<String>,
    #[schema(required = true)]
    pub title: Option<String>,
    #[schema(required = true)]
    pub message: Option<String>,
    #[schema(required = true)]
    pub details: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorPage {
    pub errors: Vec<FailedMessage>,
    pub pagination: Pagination,
}

/// Failed outbound messages, newest first.
#[utoipa::path(
    get,
    path = "/v1/errors",
    tag = "queries",
    params(PageParams),
    responses(
        (status = 200, body = ErrorPage),
        (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn errors(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<ErrorPage>> {
    let paging = paging(&query_map(raw))?;
    let mut conn = state.db.pool().acquire().await?;
    let (rows, total) = queries::failed_messages(&mut conn, paging.limit, paging.offset()).await?;
    let text = |s: String| (!s.is_empty()).then_some(s);
    Ok(Json(ErrorPage {
        errors: rows
            .into_iter()
            .map(|m| FailedMessage {
                provider: m.provider,
                channel: m.channel,
                message_id: m.message_id,
                phone: m.phone,
                template: text(m.template),
                category: text(m.category),
                failed_at: rfc3339(m.failed_ms),
                code: text(m.code),
                title: text(m.title),
                message: text(m.message),
                details: text(m.details),
            })
            .collect(),
        pagination: paging.describe(total),
    }))
}

#[derive(Serialize, ToSchema)]
pub struct MessageTotals {
    /// Outbound plus inbound.
    pub total: i64,
    pub last_7_days: i64,
    pub last_30_days: i64,
    pub by_direction: DirectionCounts,
    /// Outbound messages that reached each status (read implies delivered implies sent).
    pub by_status: StatusCounts,
}

#[derive(Serialize, ToSchema)]
pub struct DirectionCounts {
    pub outbound: i64,
    pub inbound: i64,
}

#[derive(Serialize, ToSchema)]
pub struct StatusCounts {
    pub accepted: i64,
    pub sent: i64,
    pub delivered: i64,
    pub read: i64,
    pub failed: i64,
}

/// Percentages (0–100, two decimals); 0 when there is nothing to divide by.
#[derive(Serialize, ToSchema)]
pub struct Rates {
    /// Delivered out of sent.
    pub delivery_rate: f64,
    /// Read out of delivered.
    pub read_rate: f64,
    /// Failed out of all outbound messages.
    pub failure_rate: f64,
}

#[derive(Serialize, ToSchema)]
pub struct Overview {
    pub generated_at: String,
    pub messages: MessageTotals,
    pub rates: Rates,
    pub active_sessions: i64,
    pub total_cost: f64,
    pub currency: String,
}

/// `part / whole` in percent, two decimals.
pub fn percent(part: i64, whole: i64) -> f64 {
    if whole <= 0 {
        return 0.0;
    }
    (part as f64 * 10_000.0 / whole as f64).round() / 100.0
}

/// Totals over everything stored (within retention).
#[utoipa::path(
    get,
    path = "/v1/overview",
    tag = "queries",
    responses(
        (status = 200, body = Overview),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn overview(State(state): State<AppState>) -> Result<Json<Overview>> {
    let now = state.clock.now_ms();
    let mut conn = state.db.pool().acquire().await?;
    let currency = state.settings.get().currency.clone();
    let o = queries::overview(&mut conn, now, &currency).await?;
    Ok(Json(Overview {
        generated_at: rfc3339(now),
        messages: MessageTotals {
            total: o.outbound + o.inbound,
            last_7_days: o.outbound_7d + o.inbound_7d,
            last_30_days: o.outbound_30d + o.inbound_30d,
            by_direction: DirectionCounts {
                outbound: o.outbound,
                inbound: o.inbound,
            },
            by_status: StatusCounts {
                accepted: o.accepted,
                sent: o.sent,
                delivered: o.delivered,
                read: o.read,
                failed: o.failed,
            },
        },
        rates: Rates {
            delivery_rate: percent(o.delivered, o.sent),
            read_rate: percent(o.read, o.delivered),
            failure_rate: percent(o.failed, o.outbound),
        },
        active_sessions: o.active_sessions,
        total_cost: o.cost,
        currency: state.settings.get().currency.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_to_two_decimals_and_survive_zero() {
        assert_eq!(percent(2, 3), 66.67);
        assert_eq!(percent(1, 1), 100.0);
        assert_eq!(percent(5, 0), 0.0);
    }

    #[test]
    fn day_numbers_become_utc_dates() {
        assert_eq!(day_key("20412".into()), "2025-11-20");
        assert_eq!(category_key(String::new()), "none");
    }
}
