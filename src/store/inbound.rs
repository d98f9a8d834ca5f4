//! Dedupe records for inbound messages and message-less webhook errors.

use std::collections::HashSet;

use sqlx::{AnyConnection, Row};

use super::placeholders::placeholders;

use crate::events::{InboundMessage, WebhookError};

/// Stores inbound messages, returning the keys (provider, message id) that were new;
/// the others were stored before (redeliveries).
pub async fn insert_many(
    conn: &mut AnyConnection,
    messages: &[(&InboundMessage, i64)],
) -> Result<HashSet<(String, String)>, sqlx::Error> {
    let mut new = HashSet::new();
    for chunk in messages.chunks(500) {
        let sql = format!(
            "INSERT INTO inbound_messages (provider, message_id, channel, phone, kind, received_ms) \
             VALUES {} ON CONFLICT (provider, message_id) DO NOTHING RETURNING provider, message_id",
            placeholders(chunk.len(), 6)
        );
        let mut q = sqlx::query(&sql);
        for (m, at_ms) in chunk {
            q = q
                .bind(m.provider.as_str())
                .bind(m.message_id.as_str())
                .bind(m.channel.as_str())
                .bind(m.phone.as_ref().map_or("", |p| p.as_str()))
                .bind(m.kind)
                .bind(*at_ms);
        }
        for r in q.fetch_all(&mut *conn).await? {
            new.insert((r.try_get(0)?, r.try_get(1)?));
        }
    }
    Ok(new)
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
