//! The one place that decides what counts. Requests are committed in batches by the
//! writer (group commit): each batch is one transaction (a large batch, a few cut by
//! phone and run at once) that reads the rows its events touch, applies the pure rules
//! of `domain`, writes the rows back and returns, per request, a [`Tally`] of what the
//! commit made countable. The ledger hands that tally to the metrics recorder itself, as
//! soon as the commit returns and whatever became of the request meanwhile (CONTRACT
//! §6.1: a request that timed out or hung up does not lose what its commit counted). A
//! failed commit counts nothing (rule 6) and a retry is judged against what was stored.

mod batch;
mod partition;
mod presumed_new;
mod recent;
mod writer;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use tokio::sync::watch;
use tracing::{debug, warn};

use crate::clock::SharedClock;
use crate::domain::tally::Tally;
use crate::domain::Outcome;
use crate::events::Event;
use crate::metrics::{LedgerCounters, Recorder, RetryLabels};
use crate::settings_cache::SettingsCache;
use crate::store::{self, messages, Backend, Db};

/// How often a transaction that lost a race or a deadlock is run again before giving up
/// (503).
const MAX_ATTEMPTS: usize = 5;

#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
    queue: writer::Queue,
}

pub(crate) struct Inner {
    db: Db,
    settings: Arc<SettingsCache>,
    clock: SharedClock,
    grace_ms: i64,
    counters: LedgerCounters,
    recent: recent::Recent,
    recorder: Recorder,
    /// How long a relayed webhook's body keeps a byte-identical one from being relayed.
    relay_max_age_ms: i64,
    /// Changes each time webhooks to relay were committed, to wake the relay's workers.
    relay_wake: watch::Sender<u64>,
}

/// The reply of a send hook: how many reports were new and how many repeats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HookCounts {
    pub accepted: usize,
    pub duplicates: usize,
}

/// A batch that could not be stored; shared by every request of the batch.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub Arc<sqlx::Error>);

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError(Arc::new(e))
    }
}

/// What the writer answers a request: what its committed events made countable, and
/// why the rest, if any, was not stored.
#[derive(Debug, Default)]
pub(crate) struct Recorded {
    tally: Tally,
    hooks: HookCounts,
    error: Option<StoreError>,
}

impl Recorded {
    fn failed(error: StoreError) -> Self {
        Self {
            error: Some(error),
            ..Self::default()
        }
    }

    /// Adds the answer for another part of the same request.
    fn join(&mut self, other: Recorded) {
        self.tally.merge(other.tally);
        self.hooks.accepted += other.hooks.accepted;
        self.hooks.duplicates += other.hooks.duplicates;
        self.error = self.error.take().or(other.error);
    }
}

impl From<(Tally, HookCounts)> for Recorded {
    fn from((tally, hooks): (Tally, HookCounts)) -> Self {
        Self {
            tally,
            hooks,
            error: None,
        }
    }
}

/// `--db-writers`' default: transactions a large batch is cut into, by phone
/// ([`partition`]) (SQLite always has one writer). Two run a batch of
/// batched webhooks on two Postgres backends at once (with HOT rewrites and smaller
/// rows: 34.5k → 60.3k statuses/s); three, in nine alternating rounds on two cores,
/// 68–83k statuses/s against 56–81k (mean +4%), the batch no longer waiting as long on
/// its slowest part; four no more than three. Small batches are never cut (see `writer`).
pub const DEFAULT_BATCH_PARTS: usize = 3;

impl Ledger {
    /// Starts the writer task (needs a Tokio runtime); its large batches run as
    /// `batch_parts` transactions at once, it keeps up to `kept_rows` committed rows
    /// per table (see [`recent`]), and what it commits goes to `recorder`. A webhook to
    /// relay is not stored again while one byte-identical to it, received within
    /// `relay_max_age_ms`, is in the outbox.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: Db,
        settings: Arc<SettingsCache>,
        clock: SharedClock,
        grace_ms: i64,
        batch_parts: usize,
        kept_rows: usize,
        counters: LedgerCounters,
        recorder: Recorder,
        relay_max_age_ms: i64,
    ) -> Self {
        let inner = Arc::new(Inner {
            db,
            settings,
            clock,
            grace_ms,
            counters,
            recent: recent::Recent::new(kept_rows),
            recorder,
            relay_max_age_ms,
            relay_wake: watch::Sender::new(0),
        });
        let queue = writer::spawn(inner.clone(), batch_parts);
        Self { inner, queue }
    }

    /// Records one request's events once they are durable, and counts what they made
    /// countable. Takes the events by value: they travel to the writer task without a
    /// copy. Fails if the events were not all stored within twice the database timeout
    /// (a wait for the batch ahead, then its own): what did commit, then or later, is
    /// counted all the same, and the provider's retry counts the rest.
    pub async fn record(&self, events: Vec<Event>) -> Result<HookCounts, StoreError> {
        if events.iter().all(|e| matches!(e, Event::Ignored(_))) {
            let mut tally = Tally::default();
            for e in &events {
                if let Event::Ignored(p) = e {
                    tally.outcome(*p, Outcome::Ignored);
                }
            }
            self.inner.recorder.record(tally);
            return Ok(HookCounts::default());
        }
        let recorded = self.queue.call(events).await?;
        match recorded.error {
            None => Ok(recorded.hooks),
            Some(error) => Err(error),
        }
    }

    /// Changes each time webhooks to relay were committed.
    pub fn relay_wake(&self) -> watch::Receiver<u64> {
        self.inner.relay_wake.subscribe()
    }

    /// Drops the rows kept from recent batches ([`recent`]): call after deleting rows.
    pub fn forget_recent_rows(&self) {
        self.inner.recent.clear();
    }

    /// Counts messages whose send hook did not come within the grace period, as
    /// `unknown`, up to `limit` of them in one transaction; returns how many it settled.
    /// Safe on any number of replicas at once: a message is claimed by a conditional
    /// update, and whoever claims it counts it.
    pub async fn sweep_unattributed(&self, limit: i64) -> Result<usize, sqlx::Error> {
        let inner = &self.inner;
        let now = inner.clock.now_ms();
        let settings = inner.settings.get();
        let mut tally = Tally::default();
        let mut w = inner.db.begin_write().await?;
        let mut claimed = messages::claim_pending(&mut w.tx, now - inner.grace_ms, limit).await?;
        if claimed.is_empty() {
            w.commit().await?;
            return Ok(0);
        }
        claimed.sort_by(|(a, _), (b, _)| {
            (a.provider.as_str(), &a.message_id).cmp(&(b.provider.as_str(), &b.message_id))
        });
        for (m, _) in &mut claimed {
            m.settle(now, inner.grace_ms, &settings, &mut tally);
        }
        let refs: Vec<_> = claimed.iter().map(|(m, v)| (m, *v)).collect();
        messages::save_many(&mut w.tx, &refs, now).await?;
        let committed = w.commit().await;
        // Kept copies of the settled rows are behind now (and perhaps even if the commit
        // failed: it may have reached the database).
        inner
            .recent
            .forget(claimed.iter().map(|(m, _)| m.message_id.as_str()));
        inner.db.write_health().note(&committed);
        match committed {
            Ok(()) => {
                inner.recorder.record(tally);
                Ok(claimed.len())
            }
            Err(e) => {
                warn!(error = %e, "grace-period sweep did not commit; it will run again");
                Err(e)
            }
        }
    }
}

impl Inner {
    /// One transaction over `requests`, run again (with its messages locked) when it loses
    /// a race for a row or a deadlock.
    async fn transact(
        &self,
        requests: &[&[Event]],
    ) -> Result<Vec<(Tally, HookCounts)>, sqlx::Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let settings = self.settings.get();
            let cx = batch::Context {
                lock_rows: attempt > 1,
                now: self.clock.now_ms(),
                grace_ms: self.grace_ms,
                settings: &settings,
                recent: Some(&self.recent),
                counters: &self.counters,
                presumed_new: AtomicU8::new(0),
                relay_dedupe_from: self.clock.now_ms() - self.relay_max_age_ms,
            };
            let result = if attempt == 1 && batch::reads_before_writing(requests) {
                self.read_then_write(requests, &cx).await
            } else {
                self.in_one_transaction(requests, &cx).await
            };
            let presumed_new = presumed_new::Kinds(cx.presumed_new.load(Ordering::Relaxed));
            match result {
                Ok(out) if !presumed_new.is_empty() => {
                    self.recent.new_rows_held(presumed_new);
                    return Ok(out);
                }
                Err(e) if attempt < MAX_ATTEMPTS && store::is_retryable(&e) => {
                    debug!(attempt, error = %e, "transaction lost a race; running it again");
                    let reason = if store::is_deadlock(&e) {
                        self.recent.lost_race(self.clock.now_ms());
                        "deadlock"
                    } else if !presumed_new.is_empty() {
                        self.recent.new_rows_refused(presumed_new);
                        "presumed_new"
                    } else {
                        self.recent.lost_race(self.clock.now_ms());
                        "conflict"
                    };
                    let labels = RetryLabels { reason };
                    self.counters.retries.get_or_create(&labels).inc();
                }
                other => {
                    self.db.write_health().note(&other);
                    return other;
                }
            }
        }
    }

    /// The batch read outside a transaction, then written back in one statement that
    /// commits on its own (Postgres, when only messages and sessions changed: two round
    /// trips in all, where one transaction took six) or in a transaction.
    async fn read_then_write(
        &self,
        requests: &[&[Event]],
        cx: &batch::Context<'_>,
    ) -> Result<Vec<(Tally, HookCounts)>, sqlx::Error> {
        let mut conn = self.db.keyed().await?;
        let applied = batch::prepare(&mut conn, requests, cx).await?;
        if applied.changes_nothing() {
            // Every event was a repeat of what is committed.
        } else if self.db.backend() == Backend::Postgres && applied.changes_rows_only() {
            applied.write_at_once(&mut conn, cx.now).await?;
        } else {
            drop(conn);
            let mut w = self.db.begin_write().await?;
            applied
                .write(&mut w.tx, cx.now, cx.relay_dedupe_from)
                .await?;
            w.commit().await?;
        }
        Ok(applied.committed(cx.recent, cx.now))
    }

    /// The batch read, applied and written in one transaction: for batches that store
    /// inbound messages or webhook errors as they go, and for a batch that runs again
    /// with its rows locked.
    async fn in_one_transaction(
        &self,
        requests: &[&[Event]],
        cx: &batch::Context<'_>,
    ) -> Result<Vec<(Tally, HookCounts)>, sqlx::Error> {
        let mut w = self.db.begin_write().await?;
        let applied = batch::prepare(&mut w.tx, requests, cx).await?;
        applied
            .write(&mut w.tx, cx.now, cx.relay_dedupe_from)
            .await?;
        w.commit().await?;
        Ok(applied.committed(cx.recent, cx.now))
    }
}
