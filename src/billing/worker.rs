//! The billed-cost worker: one task per configured provider, in the background only.
//!
//! Twilio: each pass queues the Twilio messages that reached a final status (a scan of
//! `outbound_messages`, so ingest does no extra work), claims the due lookups, asks
//! Twilio for each price and records the answer; a price is counted by the statement
//! that marks its lookup done, after the commit. Meta: `pricing_analytics` is read
//! hourly and each day's growth per category is counted the same way.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use super::meta;
use super::twilio::{self, Price};
use super::{CallError, MetaApi, Settings, TwilioApi, CALL_TIMEOUT};
use crate::clock::SharedClock;
use crate::domain::Channel;
use crate::metrics::BillingMetrics;
use crate::settings_cache::SettingsCache;
use crate::store::billing::{self as queue, Lookup, Settle};
use crate::store::Db;

/// How often a worker looks for work; the clock it reads decides what is due.
const POLL: Duration = Duration::from_millis(250);
/// Lookups claimed and asked for at once.
const BATCH: i64 = 16;
/// Twilio may fill a price in up to 24 h after the message (provider-billing.md §4).
pub const GIVE_UP_AFTER_MS: i64 = 24 * 3_600_000;
/// The first scan after a start looks this far back, so that messages finalised while
/// the exporter was down are looked up too.
const FIRST_SCAN_BACK_MS: i64 = GIVE_UP_AFTER_MS;
/// Each scan looks back this much before the last one, for transactions that committed
/// after it with an earlier clock reading (queueing is idempotent).
const SCAN_OVERLAP_MS: i64 = 60_000;
/// Meta's figures are read this often.
pub const META_EVERY_MS: i64 = 3_600_000;
/// Backoff between lookups of a price not yet known, or after a failed call.
const FIRST_RETRY_MS: i64 = 30_000;
const MAX_RETRY_MS: i64 = 3_600_000;

/// The wait after the `attempts`-th unsuccessful attempt: 30 s doubled up to 1 h,
/// spread from 80% to 120% by `jitter` (0 to 1) so that lookups queued together part.
pub fn retry_delay_ms(attempts: i64, jitter: f64) -> i64 {
    let doublings = attempts.saturating_sub(1).clamp(0, 20) as u32;
    let full = FIRST_RETRY_MS
        .saturating_mul(1_i64 << doublings)
        .min(MAX_RETRY_MS);
    let spread = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
    (full as f64 * spread) as i64
}

/// What to record for a lookup after its call.
pub fn decide(
    result: &Result<Price, CallError>,
    lookup: &Lookup,
    now_ms: i64,
    fallback_currency: &str,
    jitter: f64,
) -> Settle {
    let expired = now_ms - lookup.enqueued_ms >= GIVE_UP_AFTER_MS;
    match result {
        Ok(Price::Billed { amount, currency }) => Settle::Billed {
            price: *amount,
            currency: currency
                .clone()
                .unwrap_or_else(|| fallback_currency.to_owned()),
        },
        Err(CallError::NotFound) => Settle::GiveUp,
        _ if expired => Settle::GiveUp,
        Err(CallError::RateLimited(Some(wait))) => Settle::Retry {
            at_ms: now_ms + i64::try_from(wait.as_millis()).unwrap_or(MAX_RETRY_MS),
        },
        _ => Settle::Retry {
            at_ms: now_ms + retry_delay_ms(lookup.attempts + 1, jitter),
        },
    }
}

#[derive(Clone)]
pub struct Worker {
    pub db: Db,
    pub clock: SharedClock,
    pub metrics: BillingMetrics,
    pub settings: Arc<Settings>,
    /// The rate card, for the currency a price comes without (Meta's is the WABA's).
    pub rate_card: Arc<SettingsCache>,
}

impl Worker {
    pub fn spawn(self, tasks: &mut JoinSet<()>) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .user_agent(concat!("messaging-exporter/", env!("CARGO_PKG_VERSION")))
            .build()?;
        if let Some(api) = self.settings.twilio.clone() {
            tasks.spawn(self.clone().run_twilio(client.clone(), api));
        }
        if let Some(api) = self.settings.meta.clone() {
            tasks.spawn(self.clone().run_meta(client, api));
        }
        Ok(())
    }

    async fn run_twilio(self, client: reqwest::Client, api: TwilioApi) {
        let mut since = self.clock.now_ms() - FIRST_SCAN_BACK_MS;
        let mut paused_until = 0;
        loop {
            let now = self.clock.now_ms();
            match self.enqueue(since, now).await {
                Ok(()) => since = now - SCAN_OVERLAP_MS,
                Err(e) => warn!(error = %e, "could not queue Twilio price lookups; trying again"),
            }
            if now >= paused_until {
                match self.twilio_round(&client, &api, now).await {
                    Ok(pause) => paused_until = pause.unwrap_or(0),
                    Err(e) => warn!(error = %e, "Twilio price lookups failed; trying again"),
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn enqueue(&self, since: i64, now: i64) -> Result<(), sqlx::Error> {
        let mut w = self.db.begin_write().await?;
        let queued = queue::enqueue_final(&mut w.tx, since, now).await?;
        w.commit().await?;
        if queued > 0 {
            debug!(queued, "queued Twilio price lookups");
        }
        Ok(())
    }

    /// Claims, asks and records one batch; returns the time to pause until after a 429.
    async fn twilio_round(
        &self,
        client: &reqwest::Client,
        api: &TwilioApi,
        now: i64,
    ) -> Result<Option<i64>, sqlx::Error> {
        let lease_until = now + 2 * i64::try_from(CALL_TIMEOUT.as_millis()).unwrap_or(60_000);
        let claimed = {
            let mut w = self.db.begin_write().await?;
            let claimed = queue::claim_due(&mut w.tx, now, lease_until, BATCH).await?;
            w.commit().await?;
            claimed
        };
        if claimed.is_empty() {
            return Ok(None);
        }
        let mut calls = JoinSet::new();
        for (i, l) in claimed.iter().enumerate() {
            let (client, api, sid) = (client.clone(), api.clone(), l.message_id.clone());
            calls.spawn(async move { (i, twilio::price(&client, &api, &sid).await) });
        }
        let mut results: Vec<Result<Price, CallError>> = vec![Ok(Price::Pending); claimed.len()];
        while let Some(done) = calls.join_next().await {
            let (i, result) = done.expect("a price lookup does not panic");
            results[i] = result;
        }
        self.settle_twilio(&claimed, &results).await
    }

    async fn settle_twilio(
        &self,
        claimed: &[Lookup],
        results: &[Result<Price, CallError>],
    ) -> Result<Option<i64>, sqlx::Error> {
        let now = self.clock.now_ms();
        let currency = self.rate_card.get().sms_currency.clone();
        let decisions: Vec<Settle> = claimed
            .iter()
            .zip(results)
            .map(|(l, r)| decide(r, l, now, &currency, rand::random::<f64>()))
            .collect();
        let mut counted = Vec::new();
        let mut w = self.db.begin_write().await?;
        for (l, how) in claimed.iter().zip(&decisions) {
            if queue::settle(&mut w.tx, l, how, now).await? {
                counted.push((l, how));
            }
        }
        w.commit().await?;
        for (l, how) in counted {
            if let Settle::Billed { price, currency } = how {
                let channel = Channel::parse(&l.channel).unwrap_or(Channel::Sms);
                self.metrics
                    .add("twilio", channel.as_str(), &l.category, currency, *price);
            }
        }
        log_twilio_failures(claimed, results, &decisions);
        let pause = results
            .iter()
            .zip(&decisions)
            .find_map(|(r, how)| match (r, how) {
                (Err(CallError::RateLimited(_)), Settle::Retry { at_ms }) => Some(*at_ms),
                _ => None,
            });
        Ok(pause)
    }

    async fn run_meta(self, client: reqwest::Client, api: MetaApi) {
        let mut next_read = 0;
        let mut failures = 0;
        loop {
            let now = self.clock.now_ms();
            if now >= next_read {
                next_read = match self.meta_read(&client, &api, now).await {
                    Ok(()) => {
                        failures = 0;
                        now + META_EVERY_MS
                    }
                    Err(e) => {
                        failures += 1;
                        let wait = match &e {
                            MetaError::Call(CallError::RateLimited(Some(d))) => {
                                i64::try_from(d.as_millis()).unwrap_or(META_EVERY_MS)
                            }
                            _ => retry_delay_ms(failures, rand::random::<f64>()),
                        };
                        log_meta_failure(&e, wait);
                        now + wait
                    }
                };
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn meta_read(
        &self,
        client: &reqwest::Client,
        api: &MetaApi,
        now: i64,
    ) -> Result<(), MetaError> {
        let costs = meta::daily_costs(client, api, now).await?;
        // Meta reports cost in the WABA's currency, which the reply does not name: it is
        // taken to be the WhatsApp rate card's.
        let currency = self.rate_card.get().currency.clone();
        let mut grown = Vec::new();
        let mut w = self.db.begin_write().await?;
        for ((day, category), cost) in &costs {
            let by =
                queue::meta_day_growth(&mut w.tx, *day, category, *cost, &currency, now).await?;
            if by > 0.0 {
                grown.push((category, by));
            }
        }
        w.commit().await?;
        for (category, by) in grown {
            self.metrics
                .add("meta", "whatsapp", category, &currency, by);
        }
        debug!(days = costs.len(), "read Meta's pricing_analytics");
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
enum MetaError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

fn log_meta_failure(e: &MetaError, wait_ms: i64) {
    let retry_in_s = wait_ms / 1000;
    match e {
        MetaError::Call(CallError::Refused(status)) => error!(
            status,
            retry_in_s,
            "Meta refused META_ACCESS_TOKEN reading pricing_analytics: nothing is counted \
             from Meta's figures until the token (a system user token with \
             whatsapp_business_management on META_WABA_ID) is fixed"
        ),
        _ => warn!(error = %e, retry_in_s, "could not read Meta's pricing_analytics; trying again"),
    }
}

/// One line per round and kind of failure, not one per message.
fn log_twilio_failures(claimed: &[Lookup], results: &[Result<Price, CallError>], how: &[Settle]) {
    let refused = results.iter().find_map(|r| match r {
        Err(CallError::Refused(s)) => Some(*s),
        _ => None,
    });
    if let Some(status) = refused {
        error!(
            status,
            "Twilio refused TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN looking up prices: nothing \
             is counted from Twilio's prices until they are fixed; retrying with backoff"
        );
    }
    let failed: Vec<&CallError> = results
        .iter()
        .filter_map(|r| match r {
            Err(e @ (CallError::Failed(_) | CallError::RateLimited(_))) => Some(e),
            _ => None,
        })
        .collect();
    if let Some(first) = failed.first() {
        warn!(failed = failed.len(), reason = %first, "Twilio price lookups failed; retrying with backoff");
    }
    let gave_up = claimed
        .iter()
        .zip(how)
        .filter(|(_, h)| **h == Settle::GiveUp)
        .count();
    if gave_up > 0 {
        info!(
            gave_up,
            "Twilio gave no price within 24 h (or does not know the message): not counted"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(attempts: i64) -> Lookup {
        Lookup {
            provider: "twilio".into(),
            message_id: "SM1".into(),
            channel: "sms".into(),
            category: "sms".into(),
            enqueued_ms: 0,
            attempts,
        }
    }

    #[test]
    fn a_pending_price_is_asked_again_later_until_a_day_has_passed() {
        let pending = Ok(Price::Pending);
        assert_eq!(
            decide(&pending, &lookup(0), 1_000, "USD", 0.5),
            Settle::Retry { at_ms: 31_000 }
        );
        assert_eq!(
            decide(&pending, &lookup(3), 1_000, "USD", 0.5),
            Settle::Retry { at_ms: 241_000 }
        );
        assert_eq!(
            decide(&pending, &lookup(40), GIVE_UP_AFTER_MS, "USD", 0.5),
            Settle::GiveUp
        );
    }

    #[test]
    fn a_429_waits_as_long_as_retry_after_says() {
        let limited = Err(CallError::RateLimited(Some(Duration::from_secs(7))));
        assert_eq!(
            decide(&limited, &lookup(0), 1_000, "USD", 0.5),
            Settle::Retry { at_ms: 8_000 }
        );
    }

    #[test]
    fn a_price_without_a_unit_takes_the_fallback_currency() {
        let billed = Ok(Price::Billed {
            amount: 0.0158,
            currency: None,
        });
        assert_eq!(
            decide(&billed, &lookup(0), 1_000, "USD", 0.5),
            Settle::Billed {
                price: 0.0158,
                currency: "USD".into()
            }
        );
        assert_eq!(
            decide(&Err(CallError::NotFound), &lookup(0), 1, "USD", 0.5),
            Settle::GiveUp
        );
    }
}
