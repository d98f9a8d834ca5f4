//! A batch's message and session write-backs as one Postgres statement. Run outside a
//! transaction, it commits on its own, all or nothing: a batch whose events need no
//! other write pays one round trip for its writes and its commit, where `BEGIN`, two
//! write-backs and `COMMIT` took four.
//!
//! A row that changed since it was read is not written (see [`json_rows::WriteBack`]);
//! the statement then counts fewer rows written than it was given and raises a
//! serialisation failure inside itself, so that nothing of it stands and the batch runs
//! again, as after a [`WriteConflict`](super::WriteConflict).

use sqlx::AnyConnection;

use super::json_rows::{self, Statement};
use super::{messages, sessions, Backend};
use crate::domain::message::MessageState;
use crate::domain::session::SessionState;

/// Raises what [`super::is_retryable`] takes for a lost race. Created at start
/// ([`super::Db::migrate`]); plpgsql because SQL alone cannot raise an error.
pub(super) const CREATE_CONFLICT_FUNCTION: &str =
    "CREATE OR REPLACE FUNCTION messaging_exporter_write_conflict(tbl text) RETURNS bigint \
     LANGUAGE plpgsql AS $$ BEGIN \
     RAISE EXCEPTION 'a row of % changed since it was read', tbl \
     USING ERRCODE = 'serialization_failure'; END $$";

static WRITE_ALL: Statement = Statement::new(|_| {
    format!(
        "WITH m AS ({} RETURNING 1), s AS ({} RETURNING 1) SELECT CASE \
         WHEN (SELECT count(*) FROM m) <> $3 \
         THEN messaging_exporter_write_conflict('outbound_messages') \
         WHEN (SELECT count(*) FROM s) <> $4 THEN messaging_exporter_write_conflict('sessions') \
         ELSE 0 END",
        messages::write_back_sql(Backend::Postgres, 1),
        sessions::write_back_sql(Backend::Postgres, 2),
    )
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
        .bind(json_rows::encode(&message_rows))
        .bind(json_rows::encode(&session_rows))
        .bind(message_rows.len() as i64)
        .bind(session_rows.len() as i64)
        .execute(conn)
        .await?;
    Ok(())
}
