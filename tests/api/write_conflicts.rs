//! The write-back is conditional: a batch that read a row before someone else wrote it
//! must not overwrite it. Driven step by step on two connections, on both databases.

use messaging_exporter::domain::status::Status;
use messaging_exporter::domain::{Channel, Provider};
use messaging_exporter::store::{self, batch_write, messages, sessions, Db, DbOptions};

use crate::helpers::{Backend, TestDb};

const KEY: [(Provider, &str, Channel); 1] = [(Provider::Meta, "wamid.race", Channel::Whatsapp)];

async fn open(db: &TestDb) -> Db {
    let store = Db::connect(&db.url, &DbOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    store
}

/// Reads the message on its own connection: its state and the version read.
async fn read(store: &Db) -> messages::Loaded {
    let mut conn = store.pool().acquire().await.unwrap();
    messages::read_many(&mut conn, &KEY, 1_000)
        .await
        .unwrap()
        .remove(0)
}

/// Records `status` on a state read earlier and writes it back on a fresh connection.
async fn write(
    store: &Db,
    (mut m, version): messages::Loaded,
    status: Status,
) -> Result<(), sqlx::Error> {
    m.record_status(status, 2_000, None, None);
    let mut conn = store.pool().acquire().await.unwrap();
    messages::save_many(&mut conn, &[(&m, version)], 2_000).await
}

fn assert_conflict(result: Result<(), sqlx::Error>, what: &str) {
    let err = result.expect_err(what);
    assert!(
        store::is_retryable(&err),
        "{what}: a conflict runs again, got {err}"
    );
}

async fn a_write_back_over_a_newer_row_is_refused(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = open(&db).await;

    // Both read the message as absent; the first to write creates it.
    let (first, second) = (read(&store).await, read(&store).await);
    assert_eq!(first.1, None);
    write(&store, first, Status::Sent).await.unwrap();
    assert_conflict(
        write(&store, second, Status::Delivered).await,
        "a second creation of the same message",
    );

    // Both read the stored row; the first write wins, the stale one is refused.
    let (first, second) = (read(&store).await, read(&store).await);
    write(&store, first, Status::Delivered).await.unwrap();
    assert_conflict(
        write(&store, second, Status::Read).await,
        "a write from a stale read",
    );

    // What is stored is the winners' work, and a fresh read can write again.
    let (now, version) = read(&store).await;
    assert!(now.seen.contains(Status::Sent) && now.seen.contains(Status::Delivered));
    assert!(
        !now.seen.contains(Status::Read),
        "the refused write left nothing"
    );
    write(&store, (now, version), Status::Read).await.unwrap();
    assert!(read(&store).await.0.seen.contains(Status::Read));
}

crate::on_both_backends!(a_write_back_over_a_newer_row_is_refused);

async fn reloptions(conn: &mut sqlx::PgConnection) -> Option<Vec<String>> {
    sqlx::query_scalar("SELECT reloptions FROM pg_class WHERE oid = 'outbound_messages'::regclass")
        .fetch_one(conn)
        .await
        .unwrap()
}

/// Postgres' write-backs send rows as records of the table's own type, so a table whose
/// columns were changed by hand stops the exporter at start, naming both column lists,
/// instead of failing every write.
#[tokio::test]
async fn postgres_start_refuses_a_table_whose_columns_were_changed() {
    use sqlx::Connection;
    let db = TestDb::new(Backend::Postgres).await;
    open(&db).await.close().await;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("ALTER TABLE sessions ADD COLUMN note TEXT")
        .execute(&mut conn)
        .await
        .unwrap();
    let store = Db::connect(&db.url, &DbOptions::default()).await.unwrap();
    let err = format!("{:#}", store.migrate().await.unwrap_err());
    assert!(
        err.contains("table sessions has the columns")
            && err.contains("\"updated_ms\", \"note\"]")
            && err.contains("this build writes"),
        "{err}"
    );
}

/// A status rewrites its message row: on Postgres, pages keep room for that, so that a
/// rewrite is a HOT update (no new entry in any index) even once the table is full, and
/// even when one statement rewrites every row of a page (a batch of batched webhooks).
#[tokio::test]
async fn postgres_message_pages_keep_room_for_rewrites() {
    use sqlx::Connection;
    let db = TestDb::new(Backend::Postgres).await;
    open(&db).await;
    open(&db).await.close().await; // a second start finds the setting in place
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let options = reloptions(&mut conn).await;
    let ff = format!("fillfactor={}", store::OUTBOUND_FILLFACTOR);
    assert_eq!(options, Some(vec![ff.clone()]));
    // A table left at another fill by an earlier version gets this one at the next start.
    sqlx::query("ALTER TABLE outbound_messages SET (fillfactor = 70)")
        .execute(&mut conn)
        .await
        .unwrap();
    open(&db).await.close().await;
    let options = reloptions(&mut conn).await;
    assert_eq!(options, Some(vec![ff]), "set again after an upgrade");

    let mut tx = conn.begin().await.unwrap();
    // Rows the size of a sent message's: a Meta id, a phone, pricing (about 320 bytes).
    sqlx::query(
        "INSERT INTO outbound_messages (provider, message_id, channel, phone, first_seen_ms, \
         seen_mask, observed_mask, sent_ms, pricing_type, pricing_category, pricing_billable, \
         has_pricing, updated_ms) \
         SELECT 'meta', 'wamid.HBgM918664674921FQIAERgU1A232C038AA0000000' || lpad(i::text, 8, '0'), \
         'whatsapp', '9186646' || lpad(i::text, 5, '0'), 1796147788700, 2, 16, 1796147789000, \
         'regular', 'utility', 1, 1, 1796147788700 FROM generate_series(1, 300) i",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    let on_first_page = "(ctid::text::point)[0] = 0";
    let first_page: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM outbound_messages WHERE {on_first_page}"
    ))
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert!(first_page > 5, "rows on the first page: {first_page}");
    // Every message of the first page gets its delivery, in one transaction (so that no
    // old row version can be pruned meanwhile to make room).
    let rewritten = sqlx::query(&format!(
        "UPDATE outbound_messages SET seen_mask = 6, delivered_ms = 1796147799000, version = 1 \
         WHERE {on_first_page}"
    ))
    .execute(&mut *tx)
    .await
    .unwrap()
    .rows_affected();
    let hot: i64 = sqlx::query_scalar(
        "SELECT pg_stat_get_xact_tuples_hot_updated('outbound_messages'::regclass)",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(rewritten, first_page as u64);
    assert_eq!(hot, first_page, "rewrites that stayed on their page");
}

/// Every text column of a primary key or index, by table.
const TEXT_KEYS: [(&str, &[&str]); 9] = [
    ("outbound_messages", &["provider", "message_id", "phone"]),
    ("inbound_messages", &["provider", "message_id"]),
    ("sessions", &["phone"]),
    ("cooldowns", &["phone", "hold_id"]),
    ("reservations", &["id", "phone"]),
    ("webhook_errors", &["dedupe_key"]),
    ("relay_outbox", &["target", "body_hash"]),
    ("billing_lookups", &["provider", "message_id"]),
    ("billing_meta_days", &["category"]),
];

/// The indexed text columns of the database whose collation is not `"C"`, as
/// `table.column` (from the catalog, so that a key missing from [`TEXT_KEYS`] shows too).
async fn keys_not_bytewise(conn: &mut sqlx::PgConnection) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT DISTINCT c.relname || '.' || a.attname FROM pg_index AS i \
         JOIN pg_class AS c ON c.oid = i.indrelid \
         JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
         LEFT JOIN pg_collation AS coll ON coll.oid = a.attcollation \
         WHERE c.relnamespace = 'public'::regnamespace AND a.atttypid = 'text'::regtype \
         AND coll.collname IS DISTINCT FROM 'C' ORDER BY 1",
    )
    .fetch_all(conn)
    .await
    .unwrap()
}

/// On Postgres every text key compares byte by byte, as SQLite's do (cheaper than the
/// database's collation). A database an earlier version left at the database's
/// collation is given it at the next start, keeping its rows and their writes.
#[tokio::test]
async fn postgres_text_keys_compare_bytewise_also_after_an_upgrade() {
    use sqlx::Connection;
    let db = TestDb::new(Backend::Postgres).await;
    let store = open(&db).await;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    assert_eq!(keys_not_bytewise(&mut conn).await, Vec::<String>::new());

    // As an earlier version left it: every key at the database's collation, one message.
    write(&store, read(&store).await, Status::Sent)
        .await
        .unwrap();
    store.close().await;
    for (table, columns) in TEXT_KEYS {
        let changes: Vec<String> = columns
            .iter()
            .map(|c| format!("ALTER COLUMN {c} TYPE text COLLATE \"default\""))
            .collect();
        sqlx::raw_sql(&format!("ALTER TABLE {table} {}", changes.join(", ")))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    assert_eq!(keys_not_bytewise(&mut conn).await.len(), 16);

    let store = open(&db).await;
    assert_eq!(keys_not_bytewise(&mut conn).await, Vec::<String>::new());
    let (m, version) = read(&store).await;
    assert!(m.seen.contains(Status::Sent), "the stored message is kept");
    write(&store, (m, version), Status::Delivered)
        .await
        .unwrap();
    assert!(read(&store).await.0.seen.contains(Status::Delivered));
    open(&db).await.close().await; // a second start finds nothing to change
    assert_eq!(keys_not_bytewise(&mut conn).await, Vec::<String>::new());
}

/// Reads the session of `PHONE` on its own connection.
async fn read_session(store: &Db) -> sessions::Loaded {
    let mut conn = store.pool().acquire().await.unwrap();
    sessions::read_many(&mut conn, &[PHONE])
        .await
        .unwrap()
        .remove(0)
}

const PHONE: &str = "+5511999990001";

/// On Postgres a batch's messages and sessions go back in one statement that commits on
/// its own: a stale row in either table refuses all of it, as a conflict to run again.
#[tokio::test]
async fn postgres_writes_messages_and_sessions_back_at_once_or_not_at_all() {
    let db = TestDb::new(Backend::Postgres).await;
    let store = open(&db).await;
    let at_once = |m: &messages::Loaded, s: &sessions::Loaded| {
        let store = store.clone();
        let (m, s) = (m.clone(), s.clone());
        async move {
            let mut conn = store.keyed().await.unwrap();
            batch_write::write_at_once(&mut conn, &[(&m.0, m.1)], &[(&s.0, s.1)], 2_000).await
        }
    };
    let (mut m, mut s) = (read(&store).await, read_session(&store).await);
    m.0.record_status(Status::Sent, 2_000, None, None);
    s.0.record_inbound(1_500);

    // Someone else creates the session first: the message is not stored either.
    let mut other = read_session(&store).await;
    other.0.record_inbound(1_000);
    let mut conn = store.pool().acquire().await.unwrap();
    sessions::save_many(&mut conn, &[(&other.0, other.1)], 1_000)
        .await
        .unwrap();
    assert_conflict(at_once(&m, &s).await, "a write over a newer session");
    assert_eq!(read(&store).await.1, None, "the message was not stored");

    // Read again, the session is fresh but the message is now stale.
    let mut s = read_session(&store).await;
    s.0.record_inbound(1_500);
    write(&store, read(&store).await, Status::Delivered)
        .await
        .unwrap();
    assert_conflict(at_once(&m, &s).await, "a write over a newer message");
    assert_eq!(
        read_session(&store).await.0,
        other.0,
        "the session was not written"
    );

    // Both fresh: both are written, in one statement.
    let mut m = read(&store).await;
    m.0.record_status(Status::Read, 3_000, None, None);
    at_once(&m, &s).await.unwrap();
    let (stored, version) = read(&store).await;
    assert!(stored.seen.contains(Status::Read) && stored.seen.contains(Status::Delivered));
    assert_eq!(version, Some(1));
    assert_eq!(read_session(&store).await.0.last_inbound_ms, 1_500);
}
