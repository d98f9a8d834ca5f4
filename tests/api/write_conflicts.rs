//! The write-back is conditional: a batch that read a row before someone else wrote it
//! must not overwrite it. Driven step by step on two connections, on both databases.

use messaging_exporter::domain::status::Status;
use messaging_exporter::domain::{Channel, Provider};
use messaging_exporter::store::{self, messages, Db, DbOptions};

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

/// A status rewrites its message row: on Postgres, pages keep room for that, so that a
/// rewrite is a HOT update (no new entry in any index) even once the table is full.
#[tokio::test]
async fn postgres_message_pages_keep_room_for_rewrites() {
    use sqlx::Connection;
    let db = TestDb::new(Backend::Postgres).await;
    open(&db).await;
    open(&db).await.close().await; // a second start finds the setting in place
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let options: Option<Vec<String>> = sqlx::query_scalar(
        "SELECT reloptions FROM pg_class WHERE oid = 'outbound_messages'::regclass",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let ff = format!("fillfactor={}", store::OUTBOUND_FILLFACTOR);
    assert_eq!(options, Some(vec![ff]));

    let mut tx = conn.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO outbound_messages (provider, message_id, channel, phone, first_seen_ms, updated_ms) \
         SELECT 'meta', 'wamid.' || i, 'whatsapp', '+5511999' || i, 1000, 1000 FROM generate_series(1, 300) i",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    let first_page: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbound_messages WHERE (ctid::text::point)[0] = 0",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert!(first_page > 5, "rows on the first page: {first_page}");
    // Five messages of the first page get their first status, in one transaction (so
    // that no old row version can be pruned meanwhile to make room).
    let rewritten = sqlx::query(
        "UPDATE outbound_messages SET seen_mask = 2, sent_ms = 2000, version = 1 \
         WHERE message_id IN (SELECT message_id FROM outbound_messages \
         WHERE (ctid::text::point)[0] = 0 LIMIT 5)",
    )
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
    assert_eq!(rewritten, 5);
    assert_eq!(hot, 5, "rewrites that stayed on their page");
}
