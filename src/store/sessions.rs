//! `sessions`: one row per phone, locked by upsert like messages.

use sqlx::{AnyConnection, Row};

use crate::domain::session::SessionState;

const COLUMNS: &str =
    "phone, window_started_ms, last_inbound_ms, pending_inbound_ms, user_messages, business_messages";

pub async fn lock_or_create(
    conn: &mut AnyConnection,
    phone: &str,
    now_ms: i64,
) -> Result<SessionState, sqlx::Error> {
    let sql = format!(
        "INSERT INTO sessions (phone, updated_ms) VALUES ($1, $2) \
         ON CONFLICT (phone) DO UPDATE SET version = sessions.version + 1 RETURNING {COLUMNS}"
    );
    let r = sqlx::query(&sql)
        .bind(phone)
        .bind(now_ms)
        .fetch_one(conn)
        .await?;
    Ok(SessionState {
        phone: r.try_get(0)?,
        window_started_ms: r.try_get(1)?,
        last_inbound_ms: r.try_get(2)?,
        pending_inbound_ms: r.try_get(3)?,
        user_messages: r.try_get(4)?,
        business_messages: r.try_get(5)?,
    })
}

pub async fn save(
    conn: &mut AnyConnection,
    s: &SessionState,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE sessions SET window_started_ms = $2, last_inbound_ms = $3, pending_inbound_ms = $4, \
         user_messages = $5, business_messages = $6, updated_ms = $7 WHERE phone = $1",
    )
    .bind(&s.phone)
    .bind(s.window_started_ms)
    .bind(s.last_inbound_ms)
    .bind(s.pending_inbound_ms)
    .bind(s.user_messages)
    .bind(s.business_messages)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}
