//! Pre-send reads, batched: checks that arrive while a read is running wait for the next
//! one, which fetches every waiting phone's window and slot in one query. A busy exporter
//! makes one round trip per batch rather than one per check.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::domain::cooldown::Slot;
use crate::domain::window::Window;
use crate::ledger::StoreError;
use crate::store::{queries, Db};

/// Phones per query, at most.
const MAX_BATCH: usize = 500;
/// Reads in flight at once: the next batch gathers while one runs.
const READERS: usize = 2;

#[derive(Clone)]
pub struct StateReader {
    queue: mpsc::Sender<Job>,
}

struct Job {
    phone: String,
    reply: oneshot::Sender<Result<(Window, Slot), StoreError>>,
}

impl StateReader {
    /// Starts the reading tasks (needs a Tokio runtime).
    pub fn new(db: Db) -> Self {
        let db = Arc::new(db);
        let queue = crate::group_commit::spawn(
            READERS,
            MAX_BATCH,
            |_: &Job| 1,
            move |jobs| {
                let db = db.clone();
                async move { read(&db, jobs).await }
            },
        );
        Self { queue }
    }

    /// `phone`'s window and cooldown slot as committed now.
    pub async fn get(&self, phone: &str) -> Result<(Window, Slot), StoreError> {
        let (reply, answer) = oneshot::channel();
        let closed = || StoreError::from(sqlx::Error::PoolClosed);
        let job = Job {
            phone: phone.to_owned(),
            reply,
        };
        self.queue.send(job).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

async fn read(db: &Db, jobs: Vec<Job>) {
    let mut phones: Vec<&str> = jobs.iter().map(|j| j.phone.as_str()).collect();
    phones.sort_unstable();
    phones.dedup();
    let result = async {
        let mut conn = db.pool().acquire().await?;
        queries::presend_states(&mut conn, &phones).await
    }
    .await;
    match result {
        Ok(states) => {
            for job in jobs {
                let state = states.get(&job.phone).copied().unwrap_or_default();
                let _ = job.reply.send(Ok(state));
            }
        }
        Err(e) => {
            let e = StoreError::from(e);
            for job in jobs {
                let _ = job.reply.send(Err(e.clone()));
            }
        }
    }
}
