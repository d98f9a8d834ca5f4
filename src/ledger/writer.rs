//! The ledger's writer: concurrent requests hand their events to it, and it commits many
//! requests in one transaction ([`crate::group_commit`]), answering each only once its
//! batch is durable. On a busy exporter that turns one commit (one fsync) per request
//! into one per batch.

use std::sync::Arc;

use tracing::debug;

use super::{HookCounts, Inner, StoreError};
use crate::domain::tally::Tally;
use crate::events::Event;
use crate::{group_commit, store};

/// Events taken into one transaction, at most (one request is never split).
const MAX_BATCH_EVENTS: usize = 1_000;

/// A request's events in; what to count for it out.
pub(super) type Queue = group_commit::Queue<Vec<Event>, (Tally, HookCounts)>;
type Job = group_commit::Job<Vec<Event>, (Tally, HookCounts)>;

/// Starts `writers` tasks, each with its own queue ([`super::partition`] says which
/// events go to which).
pub(super) fn spawn(inner: Arc<Inner>, writers: usize) -> Arc<[Queue]> {
    (0..writers.max(1))
        .map(|_| {
            let inner = inner.clone();
            Queue::start(1, MAX_BATCH_EVENTS, Vec::len, move |jobs| {
                let inner = inner.clone();
                async move { commit(&inner, jobs).await }
            })
        })
        .collect()
}

async fn commit(inner: &Inner, jobs: Vec<Job>) {
    let requests: Vec<&[Event]> = jobs.iter().map(|j| j.input.as_slice()).collect();
    let result = inner.transact(&requests).await;
    match result {
        // The database refused a value: one request may be to blame, so each runs alone and
        // only its own caller hears of it. (Timeouts and lost connections are everyone's:
        // running the requests one by one would only multiply the wait.)
        Err(e) if jobs.len() > 1 && store::is_data_error(&e) => {
            debug!(error = %e, requests = jobs.len(), "batch failed; retrying its requests one by one");
            for job in jobs {
                let result = inner.transact(&[job.input.as_slice()]).await;
                job.answer(result.map(|mut r| r.remove(0)).map_err(StoreError::from));
            }
        }
        other => group_commit::answer_all(jobs, other),
    }
}
