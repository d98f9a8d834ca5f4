//! Write transactions that never leave a connection half-open, and the write health that
//! `/readyz` reports (CONTRACT §6.2).
//!
//! A transaction that does not end in a successful `COMMIT` closes its connection instead
//! of handing it back to the pool: after a failed commit (SQLite's disk full, say) the
//! database may still hold the transaction open, and a connection reused in that state
//! made later writes look committed while they only joined the open transaction, and kept
//! SQLite's write lock from every other connection. Closing rolls back for certain.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, Executor};
use tokio::sync::OwnedMutexGuard;
use tracing::{info, warn};

/// A write transaction on its own pooled connection (and, on SQLite, the writer lock,
/// held until it ends). Statements run on `tx` (it dereferences to the connection).
pub struct WriteTx {
    pub tx: TxConnection,
    pub(super) _guard: Option<OwnedMutexGuard<()>>,
}

/// The connection of a [`WriteTx`]; closed on drop unless the transaction committed.
pub struct TxConnection {
    conn: PoolConnection<Any>,
    committed: bool,
}

impl WriteTx {
    pub(super) async fn begin(
        mut conn: PoolConnection<Any>,
        guard: Option<OwnedMutexGuard<()>>,
    ) -> Result<Self, sqlx::Error> {
        if let Err(e) = conn.execute("BEGIN").await {
            conn.close_on_drop();
            return Err(e);
        }
        Ok(Self {
            tx: TxConnection {
                conn,
                committed: false,
            },
            _guard: guard,
        })
    }

    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        self.tx.conn.execute("COMMIT").await?;
        self.tx.committed = true;
        Ok(())
    }
}

impl Drop for TxConnection {
    fn drop(&mut self) {
        if !self.committed {
            self.conn.close_on_drop();
        }
    }
}

impl Deref for TxConnection {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.conn
    }
}

impl DerefMut for TxConnection {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }
}

/// Whether the last write failed for want of storage (disk full, I/O error, read-only
/// file or database). While it did, the exporter is not ready: reads may still answer,
/// but nothing can be acknowledged.
#[derive(Clone, Default)]
pub struct WriteHealth {
    failing: Arc<AtomicBool>,
}

impl WriteHealth {
    /// Notes how a write ended: a storage fault turns readiness off, a success on.
    pub fn note<T>(&self, result: &Result<T, sqlx::Error>) {
        match result {
            Ok(_) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    info!("writes succeed again; ready");
                }
            }
            Err(e) if is_storage_fault(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    warn!(error = %e, "a write failed for want of storage; not ready until a write succeeds");
                }
            }
            Err(_) => {}
        }
    }

    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }
}

/// The database could not store data for a reason of its storage rather than of the data
/// or the connection: SQLite's FULL (13), IOERR (10) and READONLY (8) primary codes;
/// Postgres' classes 53 (insufficient resources, such as disk full) and 58 (I/O error),
/// and 25006 (read-only transaction: a replica promoted away, a full disk's protection).
pub fn is_storage_fault(err: &sqlx::Error) -> bool {
    let Some(code) = err.as_database_error().and_then(|e| e.code()) else {
        return false;
    };
    // SQLSTATEs have five characters; SQLite's extended codes (primary | detail << 8) fewer.
    if code.len() == 5 {
        return code.starts_with("53") || code.starts_with("58") || code == "25006";
    }
    code.parse::<i64>()
        .is_ok_and(|n| matches!(n & 0xff, 8 | 10 | 13))
}
