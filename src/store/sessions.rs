//! `sessions`: one row per phone, locked and written back in bulk like messages.

use sqlx::{AnyConnection, Row};

use super::messages::placeholders;
use crate::domain::session::SessionState;

const COLUMNS: &str =
    "phone, window_started_ms, last_inbound_ms, pending_inbound_ms, user_messages, business_messages";
const CHUNK: usize = 500;

/// Creates and locks the sessions of `phones` (sorted by the caller, for one lock order).
pub async fn lock_or_create_many(
    conn: &mut AnyConnection,
    phones: &[&str],
    now_ms: i64,
) -> Result<Vec<SessionState>, sqlx::Error> {
    let mut out = Vec::with_capacity(phones.len());
    for chunk in phones.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO sessions (phone, updated_ms) VALUES {} \
             ON CONFLICT (phone) DO UPDATE SET version = sessions.version + 1 RETURNING {COLUMNS}",
            placeholders(chunk.len(), 2)
        );
        let mut q = sqlx::query(&sql);
        for phone in chunk {
            q = q.bind(*phone).bind(now_ms);
        }
        for r in q.fetch_all(&mut *conn).await? {
            out.push(SessionState {
                phone: r.try_get(0)?,
                window_started_ms: r.try_get(1)?,
                last_inbound_ms: r.try_get(2)?,
                pending_inbound_ms: r.try_get(3)?,
                user_messages: r.try_get(4)?,
                business_messages: r.try_get(5)?,
            });
        }
    }
    Ok(out)
}

pub async fn save_many(
    conn: &mut AnyConnection,
    sessions: &[&SessionState],
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    for chunk in sessions.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO sessions ({COLUMNS}, updated_ms) VALUES {} ON CONFLICT (phone) DO UPDATE SET \
             window_started_ms = excluded.window_started_ms, last_inbound_ms = excluded.last_inbound_ms, \
             pending_inbound_ms = excluded.pending_inbound_ms, user_messages = excluded.user_messages, \
             business_messages = excluded.business_messages, updated_ms = excluded.updated_ms",
            placeholders(chunk.len(), 7)
        );
        let mut q = sqlx::query(&sql);
        for s in chunk {
            q = q
                .bind(s.phone.as_str())
                .bind(s.window_started_ms)
                .bind(s.last_inbound_ms)
                .bind(s.pending_inbound_ms)
                .bind(s.user_messages)
                .bind(s.business_messages)
                .bind(now_ms);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}
