//! Dedupe records for inbound messages and message-less webhook errors.

use std::collections::HashSet;

use serde::Serialize;
use sqlx::{AnyConnection, Row};

use super::json_rows::{self, Statement};

use crate::domain::settings::Settings;
use crate::events::{InboundMessage, WebhookError};

/// Stores inbound messages, returning the keys (provider, message id) that were new;
/// the others were stored before (redeliveries).
/// An inbound SMS is stored with what it cost at receipt, as counted (CONTRACT §9).
pub async fn insert_many(
    conn: &mut AnyConnection,
    messages: &[(&InboundMessage, i64)],
    settings: &Settings,
) -> Result<HashSet<(String, String)>, sqlx::Error> {
    let rows: Vec<StoredInbound> = messages
        .iter()
        .map(|(m, at_ms)| {
            let cost = settings.inbound_cost(m.phone.as_ref(), m.channel, m.segments);
            StoredInbound {
                provider: m.provider.as_str(),
                message_id: &m.message_id,
                channel: m.channel.as_str(),
                phone: m.phone.as_ref().map_or("", |p| p.as_str()),
                kind: m.kind,
                received_ms: *at_ms,
                segments: i64::from(m.segments),
                cost: cost.unwrap_or(0.0),
                currency: if cost.is_some() {
                    &settings.sms_currency
                } else {
                    ""
                },
            }
        })
        .collect();
    let rows = INSERT.over(conn, &rows).fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

#[derive(Serialize)]
struct StoredInbound<'a> {
    provider: &'a str,
    message_id: &'a str,
    channel: &'a str,
    phone: &'a str,
    kind: &'a str,
    received_ms: i64,
    segments: i64,
    cost: f64,
    currency: &'a str,
}

const COLUMNS: [&str; 9] = [
    "provider",
    "message_id",
    "channel",
    "phone",
    "kind",
    "received_ms",
    "segments",
    "cost",
    "currency",
];

static INSERT: Statement = Statement::new(|backend| {
    format!(
        "INSERT INTO inbound_messages ({}) SELECT {} FROM {} WHERE true \
         ON CONFLICT (provider, message_id) DO NOTHING RETURNING provider, message_id",
        COLUMNS.join(", "),
        json_rows::prefixed("v", &COLUMNS),
        json_rows::source(backend, "inbound_messages", &COLUMNS)
    )
});

/// How long an identical message-less error is taken to be a redelivery of the first.
pub const WEBHOOK_ERROR_DEDUPE_MS: i64 = 3_600_000;

/// Claims a webhook-level error: true when it is new, or recurs after the dedupe window.
pub async fn claim_webhook_error(
    conn: &mut AnyConnection,
    e: &WebhookError,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO webhook_errors (dedupe_key, provider, code, first_seen_ms, last_seen_ms) \
         VALUES ($1, $2, $3, $4, $4) ON CONFLICT (dedupe_key) DO UPDATE \
         SET first_seen_ms = excluded.first_seen_ms, last_seen_ms = excluded.last_seen_ms \
         WHERE webhook_errors.first_seen_ms <= $5",
    )
    .bind(&e.dedupe_key)
    .bind(e.provider.as_str())
    .bind(&e.code)
    .bind(now_ms)
    .bind(now_ms - WEBHOOK_ERROR_DEDUPE_MS)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
