//! Pre-send reads, batched: checks that arrive while a read is running wait for the next
//! one, which fetches every waiting phone's window and slot in one query. A busy exporter
//! makes one round trip per batch rather than one per check.

use crate::domain::cooldown::Slot;
use crate::domain::window::Window;
use crate::group_commit::{answer_all, Job, Queue};
use crate::ledger::StoreError;
use crate::store::{queries, Db};

/// Phones per query, at most.
const MAX_BATCH: usize = 500;
/// Reads in flight at once: the next batch gathers while one runs.
const READERS: usize = 2;

#[derive(Clone)]
pub struct StateReader {
    queue: Queue<String, (Window, Slot)>,
}

impl StateReader {
    /// Starts the reading tasks (needs a Tokio runtime).
    pub fn new(db: Db) -> Self {
        let bound = db.timeout() * 2;
        let queue = Queue::start(
            READERS,
            MAX_BATCH,
            |_| 1,
            bound,
            move |jobs| {
                let db = db.clone();
                async move { read(&db, jobs).await }
            },
        );
        Self { queue }
    }

    /// `phone`'s window and cooldown slot as committed now.
    pub async fn get(&self, phone: &str) -> Result<(Window, Slot), StoreError> {
        self.queue.call(phone.to_owned()).await
    }
}

async fn read(db: &Db, jobs: Vec<Job<String, (Window, Slot)>>) {
    let mut phones: Vec<&str> = jobs.iter().map(|j| j.input.as_str()).collect();
    phones.sort_unstable();
    phones.dedup();
    let result = async {
        let mut conn = db.keyed().await?;
        queries::presend_states(&mut conn, &phones).await
    }
    .await;
    let states = result.map(|states| {
        jobs.iter()
            .map(|j| states.get(&j.input).copied().unwrap_or_default())
            .collect()
    });
    answer_all(jobs, states);
}
