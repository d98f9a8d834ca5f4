//! The delivery worker: one task per relayed target claims the target's due webhooks
//! from the outbox with a lease, posts them to the bot at once, and records how each
//! attempt ended. It runs in the background only: no request waits on the bot.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::deliver::{Attempt, Poster};
use super::{backoff, Settings, Target};
use crate::clock::SharedClock;
use crate::metrics::{RelayMetrics, RelayOutcome};
use crate::store::outbox::{self, Claimed, Settled};
use crate::store::Db;

/// Webhooks claimed and posted at once, oldest first: order of receipt holds between
/// batches, and within one only as far as the bot answers in order.
const BATCH: i64 = 32;
/// How often an idle worker looks for webhooks another replica stored or whose retry
/// came due (its own replica's commits wake it at once).
const POLL: Duration = Duration::from_millis(500);
/// How often waiting webhooks past `--relay-max-age-hours` are dropped.
const EXPIRE_EVERY: Duration = Duration::from_secs(10);
/// A lease outlives the attempt by this much, so that a slow settle is not taken over.
const LEASE_MARGIN_MS: i64 = 5_000;

/// What a target's worker needs.
#[derive(Clone)]
pub struct Worker {
    pub db: Db,
    pub clock: SharedClock,
    pub metrics: RelayMetrics,
    pub settings: Arc<Settings>,
    /// This process's name on the leases it takes.
    pub owner: Arc<str>,
}

impl Worker {
    /// Starts a task for each relayed target; `wake` changes when webhooks to relay are
    /// committed.
    pub fn spawn(
        self,
        twilio_token: Option<Vec<u8>>,
        wake: &watch::Receiver<u64>,
        tasks: &mut JoinSet<()>,
    ) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .timeout(self.settings.timeout)
            .user_agent(concat!("messaging-exporter/", env!("CARGO_PKG_VERSION")))
            .build()?;
        for target in Target::ALL {
            let Some(url) = self.settings.url(target) else {
                continue;
            };
            let poster = Poster {
                client: client.clone(),
                url: url.to_owned(),
                twilio_token: twilio_token.clone(),
            };
            tasks.spawn(self.clone().run(target, poster, wake.clone()));
        }
        Ok(())
    }

    async fn run(self, target: Target, poster: Poster, mut wake: watch::Receiver<u64>) {
        let mut next_expiry = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_expiry {
                next_expiry += EXPIRE_EVERY;
                if let Err(e) = self.expire(target, self.clock.now_ms()).await {
                    warn!(target = target.as_str(), error = %e, "relay expiry failed; trying again");
                }
            }
            match self.round(target, &poster).await {
                Ok(claimed) if claimed == BATCH as usize => continue,
                Ok(_) => {}
                Err(e) => {
                    warn!(target = target.as_str(), error = %e, "relay round failed; trying again")
                }
            }
            tokio::select! {
                _ = wake.changed() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Claims, posts and settles one batch; returns how many webhooks it claimed.
    async fn round(&self, target: Target, poster: &Poster) -> Result<usize, sqlx::Error> {
        let now = self.clock.now_ms();
        let lease_ms = i64::try_from(self.settings.timeout.as_millis()).unwrap_or(i64::MAX);
        let lease_until = now.saturating_add(lease_ms).saturating_add(LEASE_MARGIN_MS);
        let claimed = {
            let mut w = self.db.begin_write().await?;
            let backend = self.db.backend();
            let claimed = outbox::claim(
                &mut w.tx,
                backend,
                target,
                &self.owner,
                now,
                lease_until,
                BATCH,
            )
            .await?;
            w.commit().await?;
            claimed
        };
        if claimed.is_empty() {
            return Ok(0);
        }
        let mut attempts = JoinSet::new();
        for (i, c) in claimed.iter().enumerate() {
            let (poster, webhook) = (poster.clone(), c.webhook.clone());
            attempts.spawn(async move { (i, poster.post(&webhook).await) });
        }
        let mut results: Vec<Attempt> = vec![Ok(()); claimed.len()];
        while let Some(done) = attempts.join_next().await {
            let (i, result) = done.expect("a delivery attempt does not panic");
            results[i] = result;
        }
        self.settle(&claimed, &results).await?;
        Ok(claimed.len())
    }

    /// Records each attempt's end in one transaction, then counts it. A settle that fails
    /// leaves the leases to run out: the webhooks are attempted again, at least once.
    async fn settle(&self, claimed: &[Claimed], results: &[Attempt]) -> Result<(), sqlx::Error> {
        let now = self.clock.now_ms();
        let settled: Vec<Settled> = claimed
            .iter()
            .zip(results)
            .map(|(c, result)| match result {
                Ok(()) => Settled::Delivered { at_ms: now },
                Err(_) => {
                    let delay = backoff::delay_ms(c.attempts + 1, rand::random::<f64>());
                    Settled::Retry { at_ms: now + delay }
                }
            })
            .collect();
        let mut w = self.db.begin_write().await?;
        for (c, s) in claimed.iter().zip(&settled) {
            outbox::settle(&mut w.tx, c, &self.owner, *s).await?;
        }
        w.commit().await?;
        for ((c, s), result) in claimed.iter().zip(&settled).zip(results) {
            let target = c.webhook.target;
            match (s, result) {
                (Settled::Delivered { .. }, _) => {
                    self.metrics.count(target, RelayOutcome::Delivered, 1);
                    let lag = (now - c.webhook.received_ms) as f64 / 1000.0;
                    self.metrics.observe_lag(target, lag);
                }
                (Settled::Retry { at_ms }, Err(why)) => {
                    self.metrics.count(target, RelayOutcome::Retried, 1);
                    debug!(target = target.as_str(), attempts = c.attempts + 1, retry_in_ms = at_ms - now, reason = %why, "relay attempt failed");
                }
                (Settled::Retry { .. }, Ok(())) => {}
            }
        }
        if let Some(why) = results.iter().find_map(|r| r.as_ref().err()) {
            let failed = results.iter().filter(|r| r.is_err()).count();
            warn!(target = claimed[0].webhook.target.as_str(), failed, reason = %why, "relay deliveries failed; retrying with backoff");
        }
        Ok(())
    }

    /// Drops the target's waiting webhooks past the maximum age, counted `expired`.
    async fn expire(&self, target: Target, now: i64) -> Result<(), sqlx::Error> {
        let before = now - self.settings.max_age_ms;
        let mut w = self.db.begin_write().await?;
        let expired = outbox::expire(&mut w.tx, target, before, now).await?;
        w.commit().await?;
        if expired > 0 {
            self.metrics.count(target, RelayOutcome::Expired, expired);
            warn!(
                target = target.as_str(),
                expired, "relay gave up on webhooks past --relay-max-age-hours"
            );
        }
        Ok(())
    }
}
