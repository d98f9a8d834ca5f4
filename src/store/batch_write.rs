//! A batch's message and session write-backs as one Postgres statement. Run outside a
//! transaction, it commits on its own, all or nothing: a batch whose events need no
//! other write pays one round trip for its writes and its commit, where `BEGIN`, two
//! write-backs and `COMMIT` took four.
//!
//! A row that changed (or was deleted) since it was read is not written as read (see
//! [`json_rows::WriteBack`]); the statement then counts fewer rows written as read than
//! it was given and raises a serialisation failure inside itself ([`json_rows::checked`]),
//! so that nothing of it stands and the batch runs again, as after a
//! [`WriteConflict`](super::WriteConflict). Rows all read as absent are inserted without
//! `ON CONFLICT`; one created since fails the statement on its key, the same lost race.

use sqlx::AnyConnection;

use super::json_rows::{self, Statement};
use super::pg_records;
use super::{messages, sessions, Backend};
use crate::domain::message::MessageState;
use crate::domain::session::SessionState;

/// By whether the messages, then the sessions, were all read as absent (see
/// [`json_rows::WriteBack`]): `[mixed/mixed, mixed/new, new/mixed, new/new]`.
static WRITE_ALL: [Statement; 4] = [
    Statement::new(|_| write_all(false, false)),
    Statement::new(|_| write_all(false, true)),
    Statement::new(|_| write_all(true, false)),
    Statement::new(|_| write_all(true, true)),
];

fn all_new<T>(rows: &[(T, Option<i64>)]) -> bool {
    rows.iter().all(|(_, read)| read.is_none())
}

fn write_all(new_messages: bool, new_sessions: bool) -> String {
    json_rows::checked(&[
        (&messages::WRITE_BACK, 1, 3, new_messages),
        (&sessions::WRITE_BACK, 2, 4, new_sessions),
    ])
}

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
    let statement = usize::from(all_new(messages)) << 1 | usize::from(all_new(sessions));
    WRITE_ALL[statement]
        .query(Backend::Postgres)
        .bind(pg_records::encode(&message_rows, &messages::STORED_COLUMNS))
        .bind(pg_records::encode(&session_rows, &sessions::STORED_COLUMNS))
        .bind(message_rows.len() as i64)
        .bind(session_rows.len() as i64)
        .execute(conn)
        .await
        .map_err(super::duplicate_is_a_lost_race)?;
    Ok(())
}
