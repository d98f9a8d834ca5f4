//! The one place that decides what counts. Each call runs one transaction: it locks the
//! rows an event touches, applies the pure rules of `domain`, writes the rows back and
//! returns a [`Tally`] of what the commit made countable. Callers increment metrics only
//! after `record` returns `Ok`, so a failed commit counts nothing (rule 6) and a retry is
//! judged against what was stored.

use std::sync::Arc;

use sqlx::AnyConnection;
use tracing::{debug, warn};

use crate::clock::SharedClock;
use crate::domain::message::MessageState;
use crate::domain::settings::Settings;
use crate::domain::tally::{Latency, Tally};
use crate::domain::Outcome;
use crate::events::{Event, InboundMessage, SentMessage, StatusUpdate};
use crate::settings_cache::SettingsCache;
use crate::store::{self, inbound, messages, sessions, Db};

/// How often a transaction that lost a deadlock is run again before giving up (503).
const MAX_ATTEMPTS: usize = 5;

#[derive(Clone)]
pub struct Ledger {
    db: Db,
    settings: Arc<SettingsCache>,
    clock: SharedClock,
    grace_ms: i64,
}

/// The reply of a send hook: how many reports were new and how many repeats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HookCounts {
    pub accepted: usize,
    pub duplicates: usize,
}

impl Ledger {
    pub fn new(db: Db, settings: Arc<SettingsCache>, clock: SharedClock, grace_ms: i64) -> Self {
        Self {
            db,
            settings,
            clock,
            grace_ms,
        }
    }

    /// Records events in one transaction and returns what to count.
    pub async fn record(&self, events: &[Event]) -> Result<(Tally, HookCounts), sqlx::Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_record(events).await {
                Err(e) if attempt < MAX_ATTEMPTS && store::is_retryable(&e) => {
                    debug!(attempt, error = %e, "transaction lost a deadlock; running it again");
                }
                other => return other,
            }
        }
    }

    async fn try_record(&self, events: &[Event]) -> Result<(Tally, HookCounts), sqlx::Error> {
        let now = self.clock.now_ms();
        let settings = self.settings.get();
        let mut tally = Tally::default();
        let mut hooks = HookCounts::default();
        if events.iter().all(|e| matches!(e, Event::Ignored(_))) {
            events
                .iter()
                .for_each(|e| self.apply_ignored(e, &mut tally));
            return Ok((tally, hooks));
        }
        let mut w = self.db.begin_write().await?;
        for event in events {
            let conn: &mut AnyConnection = &mut w.tx;
            match event {
                Event::Ignored(_) => self.apply_ignored(event, &mut tally),
                Event::Status(s) => {
                    let outcome = self
                        .apply_status(conn, s, now, &settings, &mut tally)
                        .await?;
                    tally.outcome(s.provider, outcome);
                }
                Event::Sent(h) => {
                    if self.apply_hook(conn, h, now, &settings, &mut tally).await? {
                        hooks.accepted += 1;
                    } else {
                        hooks.duplicates += 1;
                    }
                }
                Event::Inbound(m) => {
                    let outcome = self
                        .apply_inbound(conn, m, now, &settings, &mut tally)
                        .await?;
                    tally.outcome(m.provider, outcome);
                }
                Event::WebhookError(e) => {
                    let outcome = if inbound::claim_webhook_error(conn, e, now).await? {
                        tally.errors.push((e.provider, e.channel, e.code.clone()));
                        Outcome::Processed
                    } else {
                        Outcome::Duplicate
                    };
                    tally.outcome(e.provider, outcome);
                }
            }
        }
        w.commit().await?;
        Ok((tally, hooks))
    }

    fn apply_ignored(&self, event: &Event, tally: &mut Tally) {
        if let Event::Ignored(p) = event {
            tally.outcome(*p, Outcome::Ignored);
        }
    }

    async fn apply_status(
        &self,
        conn: &mut AnyConnection,
        s: &StatusUpdate,
        now: i64,
        settings: &Settings,
        tally: &mut Tally,
    ) -> Result<Outcome, sqlx::Error> {
        let mut m =
            messages::lock_or_create(conn, s.provider, &s.message_id, s.channel, now).await?;
        if m.phone.is_none() {
            m.phone = s.phone.clone();
        }
        let at = s.at_ms.unwrap_or(now);
        if !m.record_status(s.status, at, s.pricing.clone(), s.error.clone()) {
            return Ok(Outcome::Duplicate);
        }
        self.finish_message(conn, &mut m, now, settings, tally)
            .await?;
        Ok(Outcome::Processed)
    }

    /// Returns false for a repeated hook.
    async fn apply_hook(
        &self,
        conn: &mut AnyConnection,
        h: &SentMessage,
        now: i64,
        settings: &Settings,
        tally: &mut Tally,
    ) -> Result<bool, sqlx::Error> {
        let mut m =
            messages::lock_or_create(conn, h.provider, &h.message_id, h.channel, now).await?;
        if !m.record_hook(h.hook.clone(), h.error.clone()) {
            return Ok(false);
        }
        // The bot knows the number it sent to; a status may have named a group instead.
        m.phone = Some(h.phone.clone());
        m.channel = h.channel;
        if let Some(r) = &h.reservation_id {
            m.reservation_id = r.clone();
        }
        self.finish_message(conn, &mut m, now, settings, tally)
            .await?;
        Ok(true)
    }

    /// Links a message to its phone's session once, settles it and writes it back.
    async fn finish_message(
        &self,
        conn: &mut AnyConnection,
        m: &mut MessageState,
        now: i64,
        settings: &Settings,
        tally: &mut Tally,
    ) -> Result<(), sqlx::Error> {
        use crate::domain::message::Observed;
        if let (Some(phone), Some(sent_ms), false) = (
            m.phone.clone(),
            m.send_time_ms(),
            m.observed.has(Observed::SESSION),
        ) {
            m.observed.set(Observed::SESSION);
            if settings.session_tracking_enabled {
                let mut session = sessions::lock_or_create(conn, phone.as_str(), now).await?;
                m.window_open_at_send = session.window().is_open_at(sent_ms);
                if let Some(seconds) = session.record_outbound(sent_ms) {
                    tally.response_latency.push(Latency {
                        provider: m.provider,
                        channel: m.channel,
                        category: None,
                        seconds,
                    });
                }
                sessions::save(conn, &session, now).await?;
            }
        }
        m.settle(now, self.grace_ms, settings, tally);
        messages::save(conn, m, now).await
    }

    async fn apply_inbound(
        &self,
        conn: &mut AnyConnection,
        msg: &InboundMessage,
        now: i64,
        settings: &Settings,
        tally: &mut Tally,
    ) -> Result<Outcome, sqlx::Error> {
        let at = msg.at_ms.unwrap_or(now);
        if !inbound::insert_message(conn, msg, at).await? {
            return Ok(Outcome::Duplicate);
        }
        tally.inbound.push((msg.provider, msg.channel, msg.kind));
        if let (Some(phone), true) = (&msg.phone, settings.session_tracking_enabled) {
            let mut session = sessions::lock_or_create(conn, phone.as_str(), now).await?;
            session.record_inbound(at);
            sessions::save(conn, &session, now).await?;
        }
        Ok(Outcome::Processed)
    }

    /// Counts messages whose send hook did not come within the grace period, as
    /// `unknown`. Safe on any number of replicas at once: a message is claimed by a
    /// conditional update, and whoever claims it counts it.
    pub async fn sweep_unattributed(&self, limit: i64) -> Result<Tally, sqlx::Error> {
        let now = self.clock.now_ms();
        let cutoff = now - self.grace_ms;
        let keys = {
            let mut conn = self.db.pool().acquire().await?;
            messages::pending_before(&mut conn, cutoff, limit).await?
        };
        if keys.is_empty() {
            return Ok(Tally::default());
        }
        let settings = self.settings.get();
        let mut tally = Tally::default();
        let mut w = self.db.begin_write().await?;
        for (provider, id) in &keys {
            let conn: &mut AnyConnection = &mut w.tx;
            if let Some(mut m) = messages::lock_pending(conn, provider, id).await? {
                m.settle(now, self.grace_ms, &settings, &mut tally);
                messages::save(conn, &m, now).await?;
            }
        }
        match w.commit().await {
            Ok(()) => Ok(tally),
            Err(e) => {
                warn!(error = %e, "grace-period sweep did not commit; it will run again");
                Err(e)
            }
        }
    }
}
