//! Group commit: jobs queue up while a transaction runs, and the next transaction takes
//! all of them (up to a bound), so that one commit — one fsync — serves many requests.
//! Each job carries its own reply channel; the handler answers each only once its batch
//! is durable. Used by the ledger (webhooks, send hooks), by reservations, and (with
//! a read in place of the transaction) by the pre-send reads.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, Mutex};

/// Jobs waiting for the next batch, at most; senders wait beyond it.
const QUEUE: usize = 4_096;

/// Starts `workers` tasks sharing one queue. Each takes the first waiting job, then every
/// job already queued until their total `weight` reaches `max_weight` (one job is never
/// split), and hands the batch to `handle`.
pub fn spawn<J, F, Fut>(
    workers: usize,
    max_weight: usize,
    weight: fn(&J) -> usize,
    handle: F,
) -> mpsc::Sender<J>
where
    J: Send + 'static,
    F: Fn(Vec<J>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let (tx, rx) = mpsc::channel::<J>(QUEUE);
    let rx = Arc::new(Mutex::new(rx));
    let handle = Arc::new(handle);
    for _ in 0..workers.max(1) {
        let (rx, handle) = (rx.clone(), handle.clone());
        tokio::spawn(async move {
            while let Some(batch) = next_batch(&rx, max_weight, weight).await {
                handle(batch).await;
            }
        });
    }
    tx
}

/// `None` once every sender is gone.
async fn next_batch<J>(
    rx: &Mutex<mpsc::Receiver<J>>,
    max_weight: usize,
    weight: fn(&J) -> usize,
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
    use tokio::sync::oneshot;

    #[tokio::test]
    async fn queued_jobs_share_a_batch_up_to_the_bound() {
        let (sizes_tx, mut sizes) = mpsc::unbounded_channel::<usize>();
        let (gate_tx, gate) = tokio::sync::watch::channel(false);
        let tx = spawn(
            1,
            3,
            |_: &oneshot::Sender<()>| 1,
            move |batch| {
                let sizes_tx = sizes_tx.clone();
                let mut gate = gate.clone();
                async move {
                    // Hold the first batch until every job is queued.
                    let _ = gate.wait_for(|open| *open).await;
                    sizes_tx.send(batch.len()).unwrap();
                    for reply in batch {
                        let _ = reply.send(());
                    }
                }
            },
        );
        let mut answers = Vec::new();
        for _ in 0..5 {
            let (reply, answer) = oneshot::channel();
            tx.send(reply).await.unwrap();
            answers.push(answer);
        }
        gate_tx.send(true).unwrap();
        for a in answers {
            a.await.unwrap();
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
