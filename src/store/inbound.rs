//! Dedupe records for inbound messages and message-less webhook errors.

use sqlx::AnyConnection;

use crate::events::{InboundMessage, WebhookError};

/// Stores an inbound message; false when it was already stored (a redelivery).
pub async fn insert_message(
    conn: &mut AnyConnection,
    m: &InboundMessage,
    at_ms: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO inbound_messages (provider, message_id, channel, phone, kind, received_ms) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (provider, message_id) DO NOTHING",
    )
    .bind(m.provider.as_str())
    .bind(&m.message_id)
    .bind(m.channel.as_str())
    .bind(m.phone.as_ref().map_or("", |p| p.as_str()))
    .bind(m.kind)
    .bind(at_ms)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

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
