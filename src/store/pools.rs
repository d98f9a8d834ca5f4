//! The pools' connections as `/metrics` shows them (`messaging_exporter_db_connections`).

use sqlx::AnyPool;

use super::{Backend, Db};
use crate::metrics::PoolUsage;

impl Db {
    /// Each pool's connections now: `main` (the query API, settings, sweeps) and, on
    /// Postgres, `keyed` (the ledger's writes and the pre-send reads; on SQLite they share
    /// `main`).
    pub fn pool_usage(&self) -> Vec<PoolUsage> {
        let mut pools = vec![usage("main", &self.pool)];
        if self.backend == Backend::Postgres {
            pools.push(usage("keyed", &self.keyed));
        }
        pools
    }
}

fn usage(pool: &'static str, p: &AnyPool) -> PoolUsage {
    // Two reads of a pool in use: an idle count above the size it was read with is the
    // same connection seen twice.
    let size = p.size();
    let idle = u32::try_from(p.num_idle()).unwrap_or(u32::MAX).min(size);
    PoolUsage {
        pool,
        in_use: size - idle,
        idle,
        max: p.options().get_max_connections(),
    }
}
