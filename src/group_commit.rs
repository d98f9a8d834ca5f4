//! Group commit: jobs queue up while a transaction runs, and the next transaction takes
//! all of them (up to a bound), so that one commit — one fsync — serves many requests.
//! Each job carries its own reply channel; the handler answers each only once its batch
//! is durable. Used by the ledger (webhooks, send hooks), by reservations, and (with
//! a read in place of the transaction) by the pre-send reads.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Mutex};

use crate::ledger::StoreError;

/// Jobs waiting for the next batch, at most; senders wait beyond it.
const QUEUE: usize = 4_096;

/// One caller's part of a batch: its input and where its answer goes.
pub struct Job<I, O> {
    pub input: I,
    reply: oneshot::Sender<Result<O, StoreError>>,
}

impl<I, O> Job<I, O> {
    /// True when the caller stopped waiting (its request timed out or was dropped).
    pub fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    /// Answers the caller (who may have gone: a dropped request needs no answer).
    pub fn answer(self, result: Result<O, StoreError>) {
        let _ = self.reply.send(result);
    }
}

/// Each job its own answer (`outputs` in the jobs' order), or every job the batch's error.
pub fn answer_all<I, O>(jobs: Vec<Job<I, O>>, outputs: Result<Vec<O>, sqlx::Error>) {
    match outputs {
        Ok(outputs) => {
            for (job, out) in jobs.into_iter().zip(outputs) {
                job.answer(Ok(out));
            }
        }
        Err(e) => {
            let e = StoreError::from(e);
            for job in jobs {
                job.answer(Err(e.clone()));
            }
        }
    }
}

/// The sending side: callers hand in an input and wait for their own answer.
pub struct Queue<I, O> {
    tx: mpsc::Sender<Job<I, O>>,
    /// How long a caller waits for its answer at most (CONTRACT §6.1: a stalled database
    /// means 503, not a request left hanging).
    bound: Duration,
}

impl<I, O> Clone for Queue<I, O> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            bound: self.bound,
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> Queue<I, O> {
    /// Starts `workers` tasks sharing one queue. Each takes the first waiting job, then
    /// every job already queued until their total `weight` reaches `max_weight` (one job
    /// is never split), and hands the batch to `handle`, which answers every job. A
    /// caller waits at most `bound` for its answer (a wait for the batch ahead, then its
    /// own: twice the database timeout).
    pub fn start<F, Fut>(
        workers: usize,
        max_weight: usize,
        weight: fn(&I) -> usize,
        bound: Duration,
        handle: F,
    ) -> Self
    where
        F: Fn(Vec<Job<I, O>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let (tx, rx) = mpsc::channel::<Job<I, O>>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let handle = Arc::new(handle);
        for _ in 0..workers.max(1) {
            let (rx, handle) = (rx.clone(), handle.clone());
            tokio::spawn(async move {
                while let Some(batch) =
                    next_batch(&rx, max_weight, |j: &Job<I, O>| weight(&j.input)).await
                {
                    handle(batch).await;
                }
            });
        }
        Self { tx, bound }
    }

    /// Queues `input` and waits for its batch's answer, at most the queue's bound (then
    /// the error says the database timed out; the batch may still commit, and its
    /// handler deals with that).
    pub async fn call(&self, input: I) -> Result<O, StoreError> {
        let (reply, answer) = oneshot::channel();
        let closed = || StoreError::from(sqlx::Error::PoolClosed);
        let waited = tokio::time::timeout(self.bound, async {
            self.tx
                .send(Job { input, reply })
                .await
                .map_err(|_| closed())?;
            answer.await.map_err(|_| closed())?
        })
        .await;
        waited.unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut.into()))
    }
}

/// `None` once every sender is gone.
async fn next_batch<J>(
    rx: &Mutex<mpsc::Receiver<J>>,
    max_weight: usize,
    weight: impl Fn(&J) -> usize,
) -> Option<Vec<J>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut total = weight(&first);
    let mut batch = vec![first];
    while total < max_weight {
        match rx.try_recv() {
            Ok(job) => {
                total += weight(&job);
                batch.push(job);
            }
            Err(_) => break,
        }
    }
    Some(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queued_jobs_share_a_batch_up_to_the_bound_and_each_gets_its_answer() {
        let (sizes_tx, mut sizes) = mpsc::unbounded_channel::<usize>();
        let (gate_tx, gate) = tokio::sync::watch::channel(false);
        let queue: Queue<u32, u32> = Queue::start(
            1,
            3,
            |_| 1,
            Duration::from_secs(60),
            move |batch: Vec<Job<u32, u32>>| {
                let sizes_tx = sizes_tx.clone();
                let mut gate = gate.clone();
                async move {
                    // Hold the first batch until every job is queued.
                    let _ = gate.wait_for(|open| *open).await;
                    sizes_tx.send(batch.len()).unwrap();
                    let doubled = batch.iter().map(|j| j.input * 2).collect();
                    answer_all(batch, Ok(doubled));
                }
            },
        );
        let calls: Vec<_> = (0..5u32)
            .map(|i| {
                let q = queue.clone();
                tokio::spawn(async move { (i, q.call(i).await.unwrap()) })
            })
            .collect();
        tokio::task::yield_now().await;
        gate_tx.send(true).unwrap();
        for c in calls {
            let (i, out) = c.await.unwrap();
            assert_eq!(out, i * 2);
        }
        let mut got = Vec::new();
        while let Ok(n) = sizes.try_recv() {
            got.push(n);
        }
        assert_eq!(got.iter().sum::<usize>(), 5);
        assert!(got.iter().all(|n| *n <= 3), "batches {got:?}");
        assert!(got.iter().any(|n| *n > 1), "no job was batched: {got:?}");
    }
}
