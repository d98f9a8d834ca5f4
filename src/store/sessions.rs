//! `sessions`: one row per phone, read and written back in bulk like messages, the write
//! conditional on the row's version being the one read.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::json_rows::{self, Statement};
use crate::domain::session::SessionState;

/// The columns a session is read from, in [`from_row_at`]'s order, the version after them.
pub(super) const COLUMNS: [&str; 6] = [
    "phone",
    "window_started_ms",
    "last_inbound_ms",
    "pending_inbound_ms",
    "user_messages",
    "business_messages",
];

/// A session as read, and the row version its write-back must still find (`None`: no
/// row yet).
pub type Loaded = (SessionState, Option<i64>);

/// A session as the statements send it: the table's columns, by name.
#[derive(Serialize)]
pub(super) struct StoredRow<'a> {
    phone: &'a str,
    window_started_ms: i64,
    last_inbound_ms: i64,
    pending_inbound_ms: i64,
    user_messages: i64,
    business_messages: i64,
    /// The version this write gives the row (see [`json_rows::WriteBack`]).
    version: i64,
    updated_ms: i64,
}

impl<'a> StoredRow<'a> {
    fn new(s: &'a SessionState, version: i64, now_ms: i64) -> Self {
        Self {
            phone: &s.phone,
            window_started_ms: s.window_started_ms,
            last_inbound_ms: s.last_inbound_ms,
            pending_inbound_ms: s.pending_inbound_ms,
            user_messages: s.user_messages,
            business_messages: s.business_messages,
            version,
            updated_ms: now_ms,
        }
    }
}

/// [`StoredRow`]'s fields beyond [`COLUMNS`].
const BOOKKEEPING: [&str; 2] = ["version", "updated_ms"];

/// Every column a [`StoredRow`] names, in the table's order (checked at start).
pub(super) static STORED_COLUMNS: std::sync::LazyLock<Vec<&'static str>> =
    std::sync::LazyLock::new(|| COLUMNS.iter().chain(&BOOKKEEPING).copied().collect());

fn new_rows<'a>(phones: &[&'a str], empty: &'a SessionState, now_ms: i64) -> Vec<StoredRow<'a>> {
    phones
        .iter()
        .map(|phone| StoredRow {
            phone,
            ..StoredRow::new(empty, 0, now_ms)
        })
        .collect()
}

static READ: Statement = Statement::new(|backend| {
    format!(
        "SELECT {}, s.version FROM {} JOIN sessions AS s ON s.phone = v.phone",
        json_rows::prefixed("s", &COLUMNS),
        json_rows::source(backend, "sessions", &["phone"])
    )
});

/// Reads the sessions of `phones` without locking them; absent phones come back as new
/// sessions. See [`super::messages::read_many`].
pub async fn read_many(
    conn: &mut AnyConnection,
    phones: &[&str],
) -> Result<Vec<Loaded>, sqlx::Error> {
    let rows = READ
        .over(conn, &json_rows::phone_keys(phones))
        .fetch_all(&mut *conn)
        .await?;
    // As for messages: each row to its phone's place, absent phones become new sessions.
    let place: HashMap<&str, usize> = phones.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    let mut loaded: Vec<Option<Loaded>> = vec![None; phones.len()];
    for row in &rows {
        let (s, version) = from_row(row)?;
        if let Some(&i) = place.get(s.phone.as_str()) {
            loaded[i] = Some((s, version));
        }
    }
    Ok(loaded
        .into_iter()
        .zip(phones)
        .map(|(found, phone)| found.unwrap_or_else(|| absent(phone)))
        .collect())
}

static LOCK: Statement = Statement::new(|backend| {
    format!(
        "INSERT INTO sessions (phone, updated_ms) SELECT v.phone, v.updated_ms FROM {} WHERE true \
         ON CONFLICT (phone) DO UPDATE SET version = sessions.version + 1 RETURNING {}, version",
        json_rows::source(backend, "sessions", &["phone", "updated_ms"]),
        COLUMNS.join(", ")
    )
});

/// Creates and locks the sessions of `phones` (sorted by the caller, for one lock order),
/// for a batch that runs again after losing a race.
pub async fn lock_or_create_many(
    conn: &mut AnyConnection,
    phones: &[&str],
    now_ms: i64,
) -> Result<Vec<Loaded>, sqlx::Error> {
    let empty = SessionState::default();
    let rows = LOCK
        .over(conn, &new_rows(phones, &empty, now_ms))
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(from_row).collect()
}

/// The write-back of [`StoredRow`]s.
pub(super) static WRITE_BACK: std::sync::LazyLock<json_rows::WriteBack> =
    std::sync::LazyLock::new(|| json_rows::WriteBack {
        table: "sessions",
        key: &["phone"],
        keep: &[],
        defaults: &[],
        columns: &STORED_COLUMNS,
    });

static WRITE: Statement = Statement::new(|backend| json_rows::single(backend, &WRITE_BACK));

/// The rows [`save_many`] writes: each with the version it gives its row.
pub(super) fn stored_rows<'a>(
    sessions: &[(&'a SessionState, Option<i64>)],
    now_ms: i64,
) -> Vec<StoredRow<'a>> {
    sessions
        .iter()
        .map(|(s, read)| StoredRow::new(s, json_rows::written_version(*read), now_ms))
        .collect()
}

/// Writes sessions back in one statement; a row changed or created (or on Postgres
/// deleted) since it was read is a lost race (see [`json_rows::write_back`]).
pub async fn save_many(
    conn: &mut AnyConnection,
    sessions: &[(&SessionState, Option<i64>)],
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let rows = stored_rows(sessions, now_ms);
    json_rows::write_back(conn, "sessions", &WRITE, &rows, &STORED_COLUMNS).await
}

fn from_row(r: &AnyRow) -> Result<Loaded, sqlx::Error> {
    from_row_at(r, 0)
}

/// A session from [`COLUMNS`] and its version, starting at column `first` of the row.
pub(super) fn from_row_at(r: &AnyRow, first: usize) -> Result<Loaded, sqlx::Error> {
    let state = SessionState {
        phone: r.try_get(first)?,
        window_started_ms: r.try_get(first + 1)?,
        last_inbound_ms: r.try_get(first + 2)?,
        pending_inbound_ms: r.try_get(first + 3)?,
        user_messages: r.try_get(first + 4)?,
        business_messages: r.try_get(first + 5)?,
    };
    Ok((state, Some(r.try_get(first + 6)?)))
}

/// A phone with no session row yet: a new session, to be inserted.
pub fn absent(phone: &str) -> Loaded {
    let new = SessionState {
        phone: phone.to_owned(),
        ..SessionState::default()
    };
    (new, None)
}

#[cfg(test)]
mod tests {
    use super::{StoredRow, STORED_COLUMNS};
    use crate::domain::session::SessionState;
    use crate::store::json_rows::{field_names, sorted};

    #[test]
    fn a_stored_row_names_exactly_the_columns_the_statements_write() {
        let s = SessionState::default();
        assert_eq!(
            field_names(&StoredRow::new(&s, 0, 1)),
            sorted(&STORED_COLUMNS)
        );
    }
}
