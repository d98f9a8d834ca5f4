//! A batch's messages and the sessions their first statuses link to, read in one Postgres
//! statement: the sessions a batch needs depend on the messages as stored (a message is
//! linked to its session once), so they took a second round trip after the messages.
//! Here the database finds them from the messages it reads.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::{AnyConnection, Row};

use super::json_rows::{self, Statement};
use super::{messages, sessions, Backend};
use crate::domain::message::Observed;
use crate::domain::{Channel, Provider};

/// A message of the batch, and a phone one of its events names.
#[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyPhone<'a> {
    pub provider: &'a str,
    pub message_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<&'a str>,
}

/// Rows of two kinds: a stored message (its columns, then nulls), or a session (nulls,
/// then its columns). The sessions read are those of the phones a message not yet linked
/// to its session names, in an event (`$1`) or as stored, and the phones of `$2`.
static READ: Statement = Statement::new(|_| {
    let linked = Observed::SESSION;
    let message_columns = json_rows::prefixed("m", &messages::COLUMNS);
    let session_nulls: Vec<String> = sessions::COLUMNS
        .iter()
        .map(|c| {
            let ty = if *c == "phone" { "text" } else { "bigint" };
            format!("NULL::{ty} AS s_{c}")
        })
        .collect();
    let message_nulls = vec!["NULL"; messages::COLUMNS.len() + 1];
    format!(
        "WITH k AS (SELECT v.provider, v.message_id, v.phone FROM {keys}), \
         m AS (SELECT k.phone AS event_phone, {message_columns}, m.version FROM k \
         LEFT JOIN outbound_messages AS m \
         ON m.provider = k.provider AND m.message_id = k.message_id), \
         p AS (SELECT event_phone AS phone FROM m \
         WHERE event_phone IS NOT NULL AND COALESCE(observed_mask, 0) & {linked} = 0 \
         UNION SELECT phone FROM m WHERE observed_mask & {linked} = 0 AND phone <> '' \
         UNION SELECT phone FROM json_populate_recordset(NULL::sessions, $2::json)) \
         SELECT {columns}, version, {session_nulls}, NULL::bigint AS s_version \
         FROM m WHERE version IS NOT NULL \
         UNION ALL SELECT {message_nulls}, {sessions}, s.version \
         FROM p JOIN sessions AS s ON s.phone = p.phone",
        keys = json_rows::source(Backend::Postgres, "outbound_messages", &[]),
        columns = messages::COLUMNS.join(", "),
        session_nulls = session_nulls.join(", "),
        message_nulls = message_nulls.join(", "),
        sessions = json_rows::prefixed("s", &sessions::COLUMNS),
    )
});

/// The state of each key in the keys' order (absent keys as new messages), and the
/// stored sessions of the phones above by phone (Postgres only).
pub async fn messages_and_sessions(
    conn: &mut AnyConnection,
    keys: &[(Provider, &str, Channel)],
    key_phones: &[KeyPhone<'_>],
    phones: &[&str],
    now_ms: i64,
) -> Result<(Vec<messages::Loaded>, HashMap<String, sessions::Loaded>), sqlx::Error> {
    let rows = READ
        .query(Backend::Postgres)
        .bind(json_rows::encode(key_phones))
        .bind(json_rows::encode(&json_rows::phone_keys(phones)))
        .fetch_all(&mut *conn)
        .await?;
    let first_session_column = messages::COLUMNS.len() + 1;
    let (message_rows, session_rows): (Vec<_>, Vec<_>) = rows
        .into_iter()
        .partition(|row| matches!(row.try_get::<Option<i64>, _>("version"), Ok(Some(_))));
    let mut found = HashMap::with_capacity(session_rows.len());
    for row in &session_rows {
        let session = sessions::from_row_at(row, first_session_column)?;
        found.insert(session.0.phone.clone(), session);
    }
    Ok((messages::in_key_order(keys, &message_rows, now_ms)?, found))
}
