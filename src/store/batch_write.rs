//! A batch's message and session write-backs as one Postgres statement. Run outside a
//! transaction, it commits on its own, all or nothing: a batch whose events need no
//! other write pays one round trip for its writes and its commit, where `BEGIN`, two
//! write-backs and `COMMIT` took four.
//!
//! A row that changed (or was deleted) since it was read is not written as read (see
//! [`json_rows::WriteBack`]); the statement then counts fewer rows written as read than
//! it was given and raises a serialisation failure inside itself ([`json_rows::checked`]),
//! so that nothing of it stands and the batch runs again, as after a
//! [`WriteConflict`](super::WriteConflict).

use sqlx::AnyConnection;

use super::json_rows::{self, Statement};
use super::pg_records;
use super::{messages, sessions, Backend};
use crate::domain::message::MessageState;
use crate::domain::session::SessionState;

static WRITE_ALL: Statement = Statement::new(|_| {
    json_rows::checked(&[
        (
            "outbound_messages",
            messages::write_back_sql(Backend::Postgres, 1),
            3,
        ),
        (
            "sessions",
            sessions::write_back_sql(Backend::Postgres, 2),
            4,
        ),
    ])
});

/// Writes the changed `messages` and `sessions` back in one statement (Postgres only); on
/// a connection outside a transaction, that statement is the commit.
pub async fn write_at_once(
    conn: &mut AnyConnection,
    messages: &[(&MessageState, Option<i64>)],
    sessions: &[(&SessionState, Option<i64>)],
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let message_rows = messages::stored_rows(messages, now_ms);
    let session_rows = sessions::stored_rows(sessions, now_ms);
    WRITE_ALL
        .query(Backend::Postgres)
        .bind(pg_records::encode(&message_rows, &messages::STORED_COLUMNS))
        .bind(pg_records::encode(&session_rows, &sessions::STORED_COLUMNS))
        .bind(message_rows.len() as i64)
        .bind(session_rows.len() as i64)
        .execute(conn)
        .await?;
    Ok(())
}
