//! The ledger's writer: concurrent requests hand their events to it, and it commits many
//! requests in one transaction ([`crate::group_commit`]), answering each only once its
//! batch is durable. On a busy exporter that turns one commit (one fsync) per request
//! into one per batch.
//!
//! A large batch is cut by phone ([`super::partition`]) into `parts` transactions that
//! run at once on their own connections: a batch of batched webhooks keeps one Postgres
//! backend busy for milliseconds, and the parts touch different rows. A small batch stays
//! whole: its cost is its round trips, which splitting would multiply.

use std::sync::Arc;

use tokio::task::JoinSet;
use tracing::debug;

use super::{partition, Inner, Recorded};
use crate::events::Event;
use crate::{group_commit, store};

/// Events taken into one batch, at most (one request is never split between batches).
/// Batched webhooks on 32 connections keep up to 1,600 events waiting: taking them all
/// in one batch (cut in parts) measured 54–56k statuses/s at a bound of 1,000 and
/// 55–65k above 2,000.
const MAX_BATCH_EVENTS: usize = 4_000;

/// Batches with fewer events run as one transaction. Measured: the bot's workload
/// (batches under 40 events) lost a fifth of its rate when cut in two, batched
/// webhooks (hundreds) gained 70%.
pub(super) const SPLIT_FROM_EVENTS: usize = 128;

/// A request's events in; what to count for it out.
pub(super) type Queue = group_commit::Queue<Vec<Event>, Recorded>;
type Job = group_commit::Job<Vec<Event>, Recorded>;

/// Starts the writer task; its large batches are cut into `parts` transactions.
pub(super) fn spawn(inner: Arc<Inner>, parts: usize) -> Queue {
    let bound = inner.db.timeout() * 2;
    Queue::start(1, MAX_BATCH_EVENTS, Vec::len, bound, move |jobs| {
        let inner = inner.clone();
        async move { commit(inner, jobs, parts).await }
    })
}

/// Runs a batch in a task of its own and waits for it at most the database timeout. A
/// batch stuck on a database that stopped answering keeps its connection until the
/// database answers or the connection dies, and is still counted if it commits; the
/// batches behind it go on meanwhile (and fail fast while the database is away).
async fn commit(inner: Arc<Inner>, mut jobs: Vec<Job>, parts: usize) {
    // A caller that gave up (timed out, hung up) was answered 503 or nothing: storing its
    // events now would only make its provider's retry a duplicate.
    jobs.retain(|job| !job.abandoned());
    if jobs.is_empty() {
        return;
    }
    let stall = inner.db.timeout();
    let batch = tokio::spawn(commit_and_count(inner, jobs, parts));
    let _ = tokio::time::timeout(stall, batch).await;
}

/// Commits a batch, counts what it committed, then answers its callers.
async fn commit_and_count(inner: Arc<Inner>, mut jobs: Vec<Job>, parts: usize) {
    let events: usize = jobs.iter().map(|j| j.input.len()).sum();
    let relays = jobs
        .iter()
        .any(|j| j.input.iter().any(|e| matches!(e, Event::Relay(_))));
    let requests: Vec<Vec<Event>> = jobs
        .iter_mut()
        .map(|j| std::mem::take(&mut j.input))
        .collect();
    let answers = if parts < 2 || events < SPLIT_FROM_EVENTS {
        run(&inner, &requests).await
    } else {
        run_in_parts(&inner, requests, parts).await
    };
    for (job, mut answer) in jobs.into_iter().zip(answers) {
        inner.recorder.record(std::mem::take(&mut answer.tally));
        job.answer(Ok(answer));
    }
    if relays {
        inner.relay_wake.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Each request cut by phone, each part of the batch run as its own transaction at the
/// same time; a request's answer joins its parts.
async fn run_in_parts(
    inner: &Arc<Inner>,
    requests: Vec<Vec<Event>>,
    parts: usize,
) -> Vec<Recorded> {
    let count = requests.len();
    // parts[p] holds, for each request with events in part p, its index and those events.
    let mut by_part: Vec<(Vec<usize>, Vec<Vec<Event>>)> =
        (0..parts).map(|_| Default::default()).collect();
    for (i, events) in requests.into_iter().enumerate() {
        for (p, part) in partition::split(events, parts).into_iter().enumerate() {
            if !part.is_empty() {
                by_part[p].0.push(i);
                by_part[p].1.push(part);
            }
        }
    }
    let mut running = JoinSet::new();
    for (indices, part) in by_part.into_iter().filter(|(i, _)| !i.is_empty()) {
        let inner = inner.clone();
        running.spawn(async move { (indices, run(&inner, &part).await) });
    }
    let mut answers: Vec<Recorded> = (0..count).map(|_| Recorded::default()).collect();
    while let Some(done) = running.join_next().await {
        let (indices, recorded) = done.expect("a part's transaction does not panic");
        for (i, r) in indices.into_iter().zip(recorded) {
            answers[i].join(r);
        }
    }
    answers
}

/// One transaction over `requests`, each request's answer from it.
async fn run(inner: &Inner, requests: &[Vec<Event>]) -> Vec<Recorded> {
    let slices: Vec<&[Event]> = requests.iter().map(Vec::as_slice).collect();
    match inner.transact(&slices).await {
        Ok(out) => out.into_iter().map(Recorded::from).collect(),
        // The database refused a value: one request may be to blame, so each runs alone and
        // only its own caller hears of it. (Timeouts and lost connections are everyone's:
        // running the requests one by one would only multiply the wait.)
        Err(e) if requests.len() > 1 && store::is_data_error(&e) => {
            debug!(error = %e, requests = requests.len(), "batch failed; retrying its requests one by one");
            let mut answers = Vec::with_capacity(requests.len());
            for events in &slices {
                answers.push(match inner.transact(&[events]).await {
                    Ok(mut out) => Recorded::from(out.remove(0)),
                    Err(e) => Recorded::failed(e.into()),
                });
            }
            answers
        }
        Err(e) => {
            let e = super::StoreError::from(e);
            requests
                .iter()
                .map(|_| Recorded::failed(e.clone()))
                .collect()
        }
    }
}
