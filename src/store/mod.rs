//! Storage: one sqlx `Any` pool over Postgres or SQLite, chosen by `DATABASE_URL`.
//! The SQL is the dialect both share (`$n` placeholders, `ON CONFLICT … RETURNING`),
//! so there is one code path; the database is a detail behind it.

pub mod batch_read;
pub mod batch_write;
pub mod billing;
pub mod cost_lines;
pub mod inbound;
pub mod json_rows;
pub mod key_collation;
pub mod messages;
pub mod outbox;
pub mod pg_records;
pub mod pg_tls;
mod pools;
pub mod queries;
pub mod reservations;
pub mod sessions;
pub mod settings;
mod write_tx;

pub use write_tx::{is_storage_fault, WriteHealth, WriteTx};

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, Executor};
use tokio::sync::Mutex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// The process's pools, plus what SQLite needs to serialise writers.
#[derive(Clone)]
pub struct Db {
    /// For the query API, settings and sweeps.
    pool: AnyPool,
    /// For the statements that look rows up by key: the ledger's writes and the pre-send
    /// reads. On Postgres its own connections, planned for lookups ([`POSTGRES_KEYED`]);
    /// on SQLite the same pool.
    keyed: AnyPool,
    backend: Backend,
    /// SQLite allows one writer at a time; taking this lock before `BEGIN` turns
    /// would-be `SQLITE_BUSY` errors into a short queue. `None` on Postgres, where row
    /// locks order concurrent writers.
    write_lock: Option<Arc<Mutex<()>>>,
    /// Longest wait for the writer lock, as for a pooled connection.
    timeout: Duration,
    write_health: WriteHealth,
}

/// Every statement on the keyed pool looks rows up by key. A batch's rows come as one
/// JSON parameter, whose size the planner cannot see (it assumes 100 rows): with hash
/// joins and sequential scans allowed, it scans a small table, and the plan it caches
/// goes on scanning the table once it is large (measured: thousands of full scans a
/// second). Ruling them out keeps the cached plans on index lookups. Set once per
/// connection of its own pool, so that no statement pays a round trip for it (the query
/// API's aggregates, on the other pool, may rightly scan). Statements whose cached plan
/// could still start from the table rather than from the parameter are planned afresh
/// each time ([`json_rows::Statement::replanned`]).
const POSTGRES_KEYED: &str =
    "SET enable_hashjoin = off; SET enable_mergejoin = off; SET enable_seqscan = off";

/// Percent of each new `outbound_messages` page filled by inserts; the rest is kept for
/// the row's rewrites (see [`Db::leave_room_for_updates`]). A row is about 320 bytes, so
/// a page holds 12 at 50%, with room for each to be rewritten once by one statement:
/// a batch of batched webhooks rewrites every row of a page at once. At 70%, 17 rows,
/// room for 7: one statement rewriting all of them left 53% of the rewrites non-HOT.
pub const OUTBOUND_FILLFACTOR: u32 = 50;

#[derive(Clone, Debug)]
pub struct DbOptions {
    pub max_connections: u32,
    /// Longest wait for a connection or a statement before the request fails with 503.
    pub timeout: Duration,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            timeout: Duration::from_secs(5),
        }
    }
}

/// `sqlite://file.db` creates the file when absent (`mode=rwc`), as the contract promises.
fn normalise_url(url: &str) -> String {
    if url.starts_with("sqlite:") && !url.contains("mode=") && !url.contains(":memory:") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}mode=rwc")
    } else {
        url.to_owned()
    }
}

/// A pool on `connect_opts` whose connections run `setup` (Postgres) once opened.
async fn open_pool(
    backend: Backend,
    connect_opts: &AnyConnectOptions,
    opts: &DbOptions,
    setup: &'static str,
) -> Result<AnyPool, sqlx::Error> {
    let timeout_ms = opts.timeout.as_millis();
    let max = match backend {
        Backend::Sqlite => opts.max_connections.min(8),
        Backend::Postgres => opts.max_connections,
    };
    AnyPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(opts.timeout)
        // No ping before every use: it doubled the round trips of a pre-send check.
        // A connection that died meanwhile fails its one statement (503, retried by
        // the caller) and is dropped from the pool.
        .test_before_acquire(false)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                let setup = match backend {
                    // A statement that hangs (a held lock) fails instead of piling up,
                    // and a transaction whose client went quiet (a network that stopped
                    // forwarding) is ended by the server rather than holding its locks.
                    Backend::Postgres => format!(
                        "SET statement_timeout = {timeout_ms}; \
                         SET idle_in_transaction_session_timeout = {}; {setup}",
                        timeout_ms * 2
                    ),
                    // Statement journals in memory: a multi-row upsert inside a
                    // transaction journals each page it changes so that it can be undone
                    // alone, and in a file that was one `pwrite` per page (a sixth of the
                    // SQLite thread's time in scenario 3b). They are dropped at the
                    // statement's end either way; durability comes from the WAL.
                    Backend::Sqlite => format!(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                         PRAGMA temp_store = MEMORY; PRAGMA busy_timeout = {timeout_ms}"
                    ),
                };
                conn.execute(sqlx::raw_sql(&setup)).await?;
                Ok(())
            })
        })
        .connect_with(connect_opts.clone())
        .await
}

impl Db {
    pub async fn connect(url: &str, opts: &DbOptions) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            anyhow::bail!("DATABASE_URL must start with postgres:// or sqlite://");
        };
        let (url, tls) = match backend {
            Backend::Postgres => {
                let (url, tls) = pg_tls::apply(url, &|name| std::env::var(name).ok())?;
                tracing::info!(%tls, "connecting to Postgres");
                (url, Some(tls))
            }
            Backend::Sqlite => (normalise_url(url), None),
        };
        let connect_opts: AnyConnectOptions = url.parse().context("parsing DATABASE_URL")?;
        let connect_error = |err| match &tls {
            Some(tls) => pg_tls::connect_error(err, tls),
            None => anyhow::Error::new(err).context("connecting to the SQLite database"),
        };
        let pool = open_pool(backend, &connect_opts, opts, "")
            .await
            .map_err(connect_error)?;
        let keyed = match backend {
            Backend::Postgres => open_pool(backend, &connect_opts, opts, POSTGRES_KEYED)
                .await
                .map_err(connect_error)?,
            Backend::Sqlite => pool.clone(),
        };
        let write_lock = (backend == Backend::Sqlite).then(|| Arc::new(Mutex::new(())));
        Ok(Self {
            pool,
            keyed,
            backend,
            write_lock,
            timeout: opts.timeout,
            write_health: WriteHealth::default(),
        })
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        sqlx::migrate!("./migrations")
            .run(&self.pool)
            .await
            .context("running database migrations")?;
        if self.backend == Backend::Postgres {
            self.leave_room_for_updates()
                .await
                .context("setting the fillfactor of outbound_messages")?;
            key_collation::compare_keys_bytewise(&self.pool)
                .await
                .context("giving the text keys collation \"C\"")?;
            self.create_conflict_function()
                .await
                .context("creating the function batch writes raise conflicts with")?;
            for (table, columns) in [
                ("outbound_messages", &*messages::STORED_COLUMNS),
                ("sessions", &*sessions::STORED_COLUMNS),
            ] {
                self.check_record_columns(table, columns).await?;
            }
        }
        Ok(())
    }

    /// The write-backs send their rows as records of the table's own row type
    /// ([`pg_records`]): their fields must be the table's columns, in its order.
    async fn check_record_columns(&self, table: &str, columns: &[&str]) -> anyhow::Result<()> {
        let stored: Vec<String> = sqlx::query_scalar(
            "SELECT attname::text FROM pg_attribute \
             WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        )
        .bind(table)
        .fetch_all(&self.pool)
        .await
        .with_context(|| format!("reading the columns of {table}"))?;
        anyhow::ensure!(
            stored
                .iter()
                .map(String::as_str)
                .eq(columns.iter().copied()),
            "table {table} has the columns {stored:?}, where this build writes {columns:?}: \
             was it altered by hand?"
        );
        Ok(())
    }

    /// Every status rewrites its message row, two or three times in its first minute. A
    /// rewrite stays on its page and touches no index (a HOT update) only if the page has
    /// room: in full pages 95% of rewrites added an entry to each of the table's five
    /// indexes. A fillfactor leaves that room in new pages (measured: every rewrite HOT,
    /// batched webhooks +13%). Postgres-only, so not in the shared migrations; set once
    /// (it takes a lock that writes do not wait for) and checked at every start.
    async fn leave_room_for_updates(&self) -> Result<(), sqlx::Error> {
        let set: bool = sqlx::query_scalar(
            "SELECT COALESCE(array_to_string(reloptions, ',') LIKE $1, false) \
             FROM pg_class WHERE oid = 'outbound_messages'::regclass",
        )
        .bind(format!("%fillfactor={OUTBOUND_FILLFACTOR}%"))
        .fetch_one(&self.pool)
        .await?;
        if !set {
            sqlx::raw_sql(&format!(
                "ALTER TABLE outbound_messages SET (fillfactor = {OUTBOUND_FILLFACTOR})"
            ))
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// See [`batch_write`]. Replicas that start at once would race to replace the
    /// function (Postgres refuses the second): an advisory lock queues them.
    async fn create_conflict_function(&self) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('messaging_exporter_write_conflict'))")
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(json_rows::CREATE_CONFLICT_FUNCTION)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// `--db-timeout-ms`: the longest wait for a connection, the writer lock or a statement.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A write transaction; on SQLite it waits (at most the database timeout) for the
    /// writer lock first.
    pub async fn begin_write(&self) -> Result<WriteTx, sqlx::Error> {
        let guard = match &self.write_lock {
            Some(lock) => Some(
                tokio::time::timeout(self.timeout, lock.clone().lock_owned())
                    .await
                    .map_err(|_| sqlx::Error::PoolTimedOut)?,
            ),
            None => None,
        };
        WriteTx::begin(self.keyed.acquire().await?, guard).await
    }

    /// Where writers report storage faults and recoveries.
    pub fn write_health(&self) -> &WriteHealth {
        &self.write_health
    }

    /// A connection for reads by key, outside any transaction: each statement reads what
    /// is committed when it runs (a transaction would cost two more round trips). The
    /// ledger's reads and the pre-send reads run here.
    pub async fn keyed(&self) -> Result<PoolConnection<Any>, sqlx::Error> {
        self.keyed.acquire().await
    }

    /// True when the database answers and, if the last write failed for want of storage,
    /// a write succeeds again (an update of `write_probe`, as large as a batch on SQLite).
    pub async fn ready(&self, now_ms: i64) -> bool {
        if !self.write_health.failing() {
            return sqlx::query("SELECT 1").execute(&self.pool).await.is_ok();
        }
        if self.backend == Backend::Sqlite {
            // The write-ahead log holds copies of pages the database file already has room
            // for: moving them home and truncating it is the space a full disk can give
            // back. Best effort: it fails while the disk has no room at all.
            let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await;
        }
        let probe = async {
            let sql = match self.backend {
                Backend::Sqlite => {
                    "UPDATE write_probe SET at_ms = $1, pad = randomblob(65536) WHERE id = 1"
                }
                Backend::Postgres => "UPDATE write_probe SET at_ms = $1 WHERE id = 1",
            };
            let mut w = self.begin_write().await?;
            sqlx::query(sql).bind(now_ms).execute(&mut *w.tx).await?;
            w.commit().await
        }
        .await;
        self.write_health.note(&probe);
        probe.is_ok()
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.keyed.close().await;
    }
}

/// The database refused the data itself (a bad value, a constraint), as opposed to being
/// unreachable, slow or locked.
pub fn is_data_error(err: &sqlx::Error) -> bool {
    let Some(code) = err.as_database_error().and_then(|e| e.code()) else {
        return false;
    };
    // Postgres: SQLSTATE classes 22 (data exception) and 23 (integrity constraint).
    // SQLite (shorter, decimal extended codes): primary codes 18 (TOOBIG), 19 (CONSTRAINT),
    // 20 (MISMATCH).
    code.starts_with("22")
        || code.starts_with("23")
        || (code.len() < 5
            && code
                .parse::<i64>()
                .is_ok_and(|n| matches!(n & 0xff, 18..=20)))
}

/// Postgres reports deadlocks and serialisation failures, and a write-back reports a
/// [`WriteConflict`]; the transaction is simply run again.
pub fn is_retryable(err: &sqlx::Error) -> bool {
    matches!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("40P01") | Some(WriteConflict::SQLSTATE)
    )
}

/// A write-back's plain insert of a row read as absent found its key taken: another
/// writer created the row after the read, a lost race like any other (a primary key is
/// the only unique constraint of `outbound_messages` and of `sessions`).
fn duplicate_is_a_lost_race(err: sqlx::Error) -> sqlx::Error {
    let Some(db) = err.as_database_error() else {
        return err;
    };
    if db.code().as_deref() != Some("23505") {
        return err;
    }
    match db.table() {
        Some("sessions") => WriteConflict::error("sessions"),
        _ => WriteConflict::error("outbound_messages"),
    }
}

pub fn is_deadlock(err: &sqlx::Error) -> bool {
    err.as_database_error().and_then(|e| e.code()).as_deref() == Some("40P01")
}

/// A row changed between its read and its conditional write-back (another writer or
/// replica wrote it first). Reported as Postgres reports a serialisation failure, whose
/// meaning it has: nothing of the transaction may stand, and running it again succeeds.
#[derive(Debug, thiserror::Error)]
#[error("a row of {table} changed since it was read; the transaction runs again")]
pub struct WriteConflict {
    table: &'static str,
}

impl WriteConflict {
    pub const SQLSTATE: &'static str = "40001";

    pub fn error(table: &'static str) -> sqlx::Error {
        sqlx::Error::Database(Box::new(Self { table }))
    }
}

impl sqlx::error::DatabaseError for WriteConflict {
    fn message(&self) -> &str {
        "a row changed since it was read"
    }

    fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
        Some(Self::SQLSTATE.into())
    }

    fn table(&self) -> Option<&str> {
        Some(self.table)
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        sqlx::error::ErrorKind::Other
    }
}
