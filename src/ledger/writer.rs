//! Group commit: concurrent requests hand their events to a writer, which commits many
//! requests in one transaction and answers each only once its batch is durable. On a
//! busy exporter that turns one commit (one fsync) per request into one per batch.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};
use tracing::debug;

use super::{HookCounts, Inner, StoreError};
use crate::domain::tally::Tally;
use crate::events::Event;
use crate::store;

/// Events taken into one transaction, at most (one request is never split).
const MAX_BATCH_EVENTS: usize = 1_000;

pub(super) type Reply = Result<(Tally, HookCounts), StoreError>;

pub(super) struct Job {
    pub events: Vec<Event>,
    pub reply: oneshot::Sender<Reply>,
}

/// Starts `writers` tasks sharing one queue.
pub(super) fn spawn(inner: Arc<Inner>, writers: usize) -> mpsc::Sender<Job> {
    let (tx, rx) = mpsc::channel::<Job>(4_096);
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..writers {
        tokio::spawn(run(inner.clone(), rx.clone()));
    }
    tx
}

async fn run(inner: Arc<Inner>, rx: Arc<Mutex<mpsc::Receiver<Job>>>) {
    loop {
        let jobs = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            let mut events = first.events.len();
            let mut jobs = vec![first];
            while events < MAX_BATCH_EVENTS {
                match rx.try_recv() {
                    Ok(job) => {
                        events += job.events.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            jobs
        };
        commit(&inner, jobs).await;
    }
}

async fn commit(inner: &Inner, jobs: Vec<Job>) {
    let requests: Vec<&[Event]> = jobs.iter().map(|j| j.events.as_slice()).collect();
    match inner.transact(&requests).await {
        Ok(results) => {
            for (job, result) in jobs.into_iter().zip(results) {
                let _ = job.reply.send(Ok(result));
            }
        }
        // The database refused a value: one request may be to blame, so each runs alone and
        // only its own caller hears of it. (Timeouts and lost connections are everyone's:
        // running the requests one by one would only multiply the wait.)
        Err(e) if jobs.len() > 1 && store::is_data_error(&e) => {
            debug!(error = %e, requests = jobs.len(), "batch failed; retrying its requests one by one");
            for job in jobs {
                let result = inner.transact(&[job.events.as_slice()]).await;
                let _ = job
                    .reply
                    .send(result.map(|mut r| r.remove(0)).map_err(StoreError::from));
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
