//! Periodic work: counting unattributed statuses after the grace period, refreshing
//! settings and gauges from the database, and purging rows past retention.

use std::time::Duration;

use std::sync::Arc;

use secrecy::ExposeSecret;
use sqlx::Row;
use tokio::task::JoinSet;
use tokio::time::{interval, MissedTickBehavior};
use tracing::{error, info, warn};

use crate::domain::window::WINDOW_MS;
use crate::http::AppState;
use crate::{billing, relay, store};

pub const SWEEP_EVERY: Duration = Duration::from_secs(1);
pub const REFRESH_EVERY: Duration = Duration::from_secs(2);
pub const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// Messages settled per sweep transaction; a sweep runs transactions until one settles
/// fewer, so that the backlog drains at the rate the database allows, not at a fixed rate.
const SWEEP_BATCH: i64 = 1_000;

/// Starts the background tasks; they stop when the returned set is dropped or aborted.
pub fn spawn(state: &AppState) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    spawn_relay(state, &mut tasks);
    spawn_billing(state, &mut tasks);
    let s = state.clone();
    tasks.spawn(every(SWEEP_EVERY, move || {
        let s = s.clone();
        async move {
            loop {
                match s.ledger.sweep_unattributed(SWEEP_BATCH).await {
                    Ok(settled) if settled as i64 == SWEEP_BATCH => continue,
                    Ok(_) => break,
                    Err(e) => {
                        warn!(error = %e, "grace-period sweep failed; retrying next tick");
                        break;
                    }
                }
            }
        }
    }));
    let s = state.clone();
    tasks.spawn(every(REFRESH_EVERY, move || {
        let s = s.clone();
        async move { refresh(&s).await }
    }));
    let s = state.clone();
    tasks.spawn(every(PURGE_EVERY, move || {
        let s = s.clone();
        async move {
            if let Err(e) = purge(&s).await {
                warn!(error = %e, "retention purge failed; retrying next hour");
            }
        }
    }));
    tasks
}

/// The relay's delivery workers, when a relay URL is set (CONTRACT §7).
fn spawn_relay(state: &AppState, tasks: &mut JoinSet<()>) {
    let settings = relay::Settings::from_config(&state.config);
    if !settings.enabled() {
        return;
    }
    let worker = relay::worker::Worker {
        db: state.db.clone(),
        clock: state.clock.clone(),
        metrics: state.metrics.relay.clone(),
        settings: Arc::new(settings),
        owner: format!("{:016x}", rand::random::<u64>()).into(),
    };
    let token = state
        .config
        .twilio_auth_token
        .as_ref()
        .map(|t| t.expose_secret().as_bytes().to_vec());
    if let Err(e) = worker.spawn(token, &state.ledger.relay_wake(), tasks) {
        error!(error = %e, "the relay's HTTP client could not be built; webhooks wait in the outbox");
    }
}

/// The billed-cost readers, for each provider whose API credentials are set (CONTRACT §9).
fn spawn_billing(state: &AppState, tasks: &mut JoinSet<()>) {
    let settings = billing::Settings::from_config(&state.config);
    if !settings.enabled() {
        return;
    }
    let worker = billing::worker::Worker {
        db: state.db.clone(),
        clock: state.clock.clone(),
        metrics: state.metrics.billing.clone(),
        settings: Arc::new(settings),
        rate_card: state.settings.clone(),
    };
    if let Err(e) = worker.spawn(tasks) {
        error!(error = %e, "the billed-cost readers' HTTP client could not be built; nothing is read from the providers");
    }
}

async fn every<F, Fut>(period: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        f().await;
    }
}

/// Settings changed through another replica, the active-session gauge and readiness (a
/// write that failed for want of storage keeps it off until a write succeeds).
async fn refresh(s: &AppState) {
    match store::settings::load_versioned(&s.db).await {
        Ok((settings, version)) => s.settings.offer(settings, version),
        Err(e) => warn!(error = %e, "could not refresh settings; keeping the last ones"),
    }
    let since = s.clock.now_ms() - WINDOW_MS;
    let active = sqlx::query("SELECT COUNT(*) FROM sessions WHERE last_inbound_ms > $1")
        .bind(since)
        .fetch_one(s.db.pool())
        .await
        .and_then(|r| r.try_get::<i64, _>(0));
    let writable = !s.db.write_health().failing() || s.db.ready(s.clock.now_ms()).await;
    s.metrics.set_ready(active.is_ok() && writable);
    if let Ok(n) = active {
        s.metrics.set_sessions_active(n);
    }
    if s.config.relay_meta_url.is_some() || s.config.relay_twilio_url.is_some() {
        refresh_relay_backlog(s).await;
    }
}

/// The relay's backlog gauges: webhooks waiting per target and the age of the oldest.
async fn refresh_relay_backlog(s: &AppState) {
    match store::outbox::backlog(s.db.pool()).await {
        Ok(targets) => {
            let now = s.clock.now_ms();
            for (target, waiting, oldest_ms) in targets {
                let age = oldest_ms.map_or(0.0, |t| (now - t) as f64 / 1000.0);
                s.metrics.relay.set_backlog(target, waiting, age);
            }
        }
        Err(e) => warn!(error = %e, "could not read the relay backlog; keeping the last figures"),
    }
}

/// Deletes per-message rows older than the retention period (outbound messages by when
/// they were first seen). Sessions go only once their window has long closed, so no live
/// window is ever lost.
pub async fn purge(s: &AppState) -> Result<u64, sqlx::Error> {
    let cutoff = s.clock.now_ms() - i64::from(s.config.retention_days) * 86_400_000;
    let mut deleted = 0;
    for sql in [
        "DELETE FROM outbound_messages WHERE first_seen_ms < $1",
        "DELETE FROM billing_lookups WHERE enqueued_ms < $1",
        "DELETE FROM billing_meta_days WHERE day_ms < $1",
        "DELETE FROM inbound_messages WHERE received_ms < $1",
        "DELETE FROM webhook_errors WHERE last_seen_ms < $1",
        "DELETE FROM sessions WHERE last_inbound_ms < $1 AND updated_ms < $1",
        "DELETE FROM reservations WHERE updated_ms < $1",
        "DELETE FROM cooldowns WHERE last_template_ms < $1 AND hold_ms < $1 AND updated_ms < $1",
    ] {
        let mut w = s.db.begin_write().await?;
        deleted += sqlx::query(sql)
            .bind(cutoff)
            .execute(&mut *w.tx)
            .await?
            .rows_affected();
        w.commit().await?;
    }
    let relay_cutoff = s.clock.now_ms() - i64::from(s.config.relay_max_age_hours) * 3_600_000;
    let mut w = s.db.begin_write().await?;
    store::outbox::forget_delivered(&mut w.tx, relay_cutoff).await?;
    w.commit().await?;
    if deleted > 0 {
        s.ledger.forget_recent_rows();
        info!(
            deleted,
            retention_days = s.config.retention_days,
            "purged rows past retention"
        );
    }
    Ok(deleted)
}
