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
