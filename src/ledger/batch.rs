//! One transaction over a batch of requests: read every row the batch touches, apply the
//! pure rules in memory request by request, write the rows back only where they are
//! unchanged since read (else the batch runs again, with its rows locked in one order).
//! A handful of statements per batch, whatever its size.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU8, Ordering};

use sqlx::AnyConnection;

use super::presumed_new::{Kinds, RowKind};
use super::recent::Recent;
use super::HookCounts;
use crate::domain::category;
use crate::domain::cooldown;
use crate::domain::message::{MessageState, Observed, NO_TEMPLATE};
use crate::domain::session::SessionState;
use crate::domain::settings::Settings;
use crate::domain::status::Status;
use crate::domain::tally::{CostCount, Latency, Tally};
use crate::domain::{Channel, Outcome, Provider};
use crate::events::{Event, InboundMessage, SentMessage};
use crate::metrics::{LedgerCounters, ReadSource};
use crate::relay::Webhook;
use crate::store::batch_read::{self, KeyPhone};
use crate::store::reservations::{self, ReservationStatus, Settlement};
use crate::store::{batch_write, inbound, json_rows, messages, outbox, sessions, Backend};

/// A row of the batch as loaded, and whether the batch changed it.
struct BatchRow<T> {
    state: T,
    /// The row version it was read at (`None`: not stored yet).
    version: Option<i64>,
    dirty: bool,
}

impl<T> BatchRow<T> {
    /// The row as stored once the batch commits, with its version (`None`: not stored).
    fn into_committed(self) -> Option<(T, i64)> {
        let version = if self.dirty {
            Some(json_rows::written_version(self.version))
        } else {
            self.version
        };
        Some((self.state, version?))
    }

    fn new((state, version): (T, Option<i64>)) -> Self {
        Self {
            state,
            version,
            dirty: false,
        }
    }
}

/// The rows a batch changed, with the versions they were read at, in the order given.
fn changed<'a, T: 'a>(rows: impl Iterator<Item = &'a BatchRow<T>>) -> Vec<(&'a T, Option<i64>)> {
    rows.filter(|r| r.dirty)
        .map(|r| (&r.state, r.version))
        .collect()
}

/// The rows of one batch, locked and loaded. Messages are found by keys borrowed from the
/// events (`'e`), so that an event's lookup copies nothing.
struct Rows<'e> {
    /// In key order, the order they are written back in.
    messages: Vec<BatchRow<MessageState>>,
    index: HashMap<(Provider, &'e str), usize>,
    /// By phone, the order they are written back in.
    sessions: BTreeMap<String, BatchRow<SessionState>>,
    /// Inbound messages stored for the first time by this batch, not yet claimed by an event.
    new_inbound: HashSet<(String, String)>,
    /// Phone → latest `sent_at` of a template that went out (while rate limiting is on).
    templates: BTreeMap<String, i64>,
    /// Reservations named by send hooks, in the order the hooks came.
    settlements: Vec<Settlement>,
    /// Webhooks to relay, in the order they came.
    relays: Vec<&'e Webhook>,
}

pub(super) struct Context<'a> {
    /// Lock the batch's messages and sessions as they are read. The first run of a batch
    /// reads them without locks and writes them back only if unchanged; a run after a
    /// lost race locks them, so that it cannot lose again.
    pub lock_rows: bool,
    pub now: i64,
    pub grace_ms: i64,
    pub settings: &'a Settings,
    /// Rows committed lately, taken instead of read on a first run.
    pub recent: Option<&'a Recent>,
    /// Counts each batch load by where its rows came from.
    pub counters: &'a LedgerCounters,
    /// The kinds of the rows missing from `recent` the batch took for new (the bits of
    /// [`Kinds`], see [`super::presumed_new`]): a lost race is then most likely one of those.
    pub presumed_new: AtomicU8,
    /// A webhook byte-identical to one relayed since this time is not relayed again.
    pub relay_dedupe_from: i64,
}

/// A batch applied in memory: what each request made countable, and the rows to write.
pub(super) struct Applied<'e> {
    rows: Rows<'e>,
    out: Vec<(Tally, HookCounts)>,
}

/// True when no event of the batch writes before the write-back: statuses and send hooks
/// only read until then, where inbound messages and webhook errors are stored as they are
/// met. Such a batch can read outside a transaction (see [`Applied::write`]).
pub(super) fn reads_before_writing(requests: &[&[Event]]) -> bool {
    requests.iter().flat_map(|r| r.iter()).all(|e| {
        matches!(
            e,
            Event::Status(_) | Event::Sent(_) | Event::Ignored(_) | Event::Relay(_)
        )
    })
}

/// Loads the batch's rows and applies each request's events in order.
pub(super) async fn prepare<'e>(
    conn: &mut AnyConnection,
    requests: &[&'e [Event]],
    cx: &Context<'_>,
) -> Result<Applied<'e>, sqlx::Error> {
    let mut rows = load(conn, requests, cx).await?;
    let mut out = Vec::with_capacity(requests.len());
    for events in requests {
        let mut tally = Tally::default();
        let mut hooks = HookCounts::default();
        for event in *events {
            apply_event(conn, event, &mut rows, cx, &mut tally, &mut hooks).await?;
        }
        out.push((tally, hooks));
    }
    Ok(Applied { rows, out })
}

impl Applied<'_> {
    /// Nothing changed (every event a duplicate): there is nothing to commit.
    pub fn changes_nothing(&self) -> bool {
        self.changes_rows_only()
            && !self.rows.messages.iter().any(|r| r.dirty)
            && !self.rows.sessions.values().any(|r| r.dirty)
    }

    /// Only message and session rows changed: [`Self::write_at_once`] can write them.
    /// (A webhook to relay is written in the transaction that writes its events.)
    pub fn changes_rows_only(&self) -> bool {
        self.rows.templates.is_empty()
            && self.rows.settlements.is_empty()
            && self.rows.relays.is_empty()
    }

    /// Writes the batch back, in a transaction the caller commits. Every row is written
    /// only if unchanged since it was read ([`crate::store::WriteConflict`] else), so the
    /// reads may have been made outside the transaction, each statement reading what was
    /// committed when it ran.
    pub async fn write(
        &self,
        conn: &mut AnyConnection,
        now: i64,
        relay_dedupe_from: i64,
    ) -> Result<(), sqlx::Error> {
        // Written in key order, the order they were read in, so that concurrent writers
        // (other replicas, the parts of a batch) take row locks in one order and do not
        // deadlock.
        let rows = &self.rows;
        messages::save_many(conn, &changed(rows.messages.iter()), now).await?;
        sessions::save_many(conn, &changed(rows.sessions.values()), now).await?;
        reservations::apply_hooks(conn, &rows.templates, &rows.settlements, now).await?;
        for webhook in &rows.relays {
            outbox::insert(conn, webhook, relay_dedupe_from).await?;
        }
        Ok(())
    }

    /// Writes the messages and sessions back in one statement that commits on its own
    /// (Postgres, outside a transaction; see [`batch_write`]).
    pub async fn write_at_once(
        &self,
        conn: &mut AnyConnection,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        let rows = &self.rows;
        let messages = changed(rows.messages.iter());
        let sessions = changed(rows.sessions.values());
        batch_write::write_at_once(conn, &messages, &sessions, now).await
    }

    /// The batch committed: its rows go to `recent` (if the batch uses it) as they now
    /// are, and each request's tally comes back, in the order given.
    pub fn committed(self, recent: Option<&Recent>, now: i64) -> Vec<(Tally, HookCounts)> {
        if let Some(recent) = recent {
            let Rows {
                messages, sessions, ..
            } = self.rows;
            recent.keep(
                messages.into_iter().filter_map(BatchRow::into_committed),
                sessions.into_values().filter_map(BatchRow::into_committed),
                now,
            );
        }
        self.out
    }
}

/// Reads (or locks) messages in key order, then sessions in phone order, and stores
/// inbound messages.
async fn load<'e>(
    conn: &mut AnyConnection,
    requests: &[&'e [Event]],
    cx: &Context<'_>,
) -> Result<Rows<'e>, sqlx::Error> {
    let events = || requests.iter().flat_map(|r| r.iter());
    let mut keys: Vec<_> = events()
        .filter_map(|e| match e {
            Event::Status(s) => Some((s.provider, s.message_id.as_str(), s.channel)),
            Event::Sent(h) => Some((h.provider, h.message_id.as_str(), h.channel)),
            _ => None,
        })
        .collect();
    keys.sort_by(|a, b| (a.0.as_str(), a.1).cmp(&(b.0.as_str(), b.1)));
    keys.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    let tracking = cx.settings.session_tracking_enabled;
    let recent = cx.recent.filter(|_| !cx.lock_rows);
    let kinds = match recent {
        Some(_) => kinds_of(&keys, events()),
        None => Vec::new(),
    };
    let cached = recent.and_then(|r| r.take_messages(&keys, &kinds, cx.now));
    let from_cache = cached.is_some();
    let mut read_database = !from_cache;
    let mut presumed_new = cached.as_ref().map_or(Kinds::default(), |taken| taken.new);
    // On Postgres a first run reads the sessions with the messages (see [`batch_read`]).
    let (loaded, mut stored_sessions) = if let Some(messages) = cached {
        (messages.rows, None)
    } else if cx.lock_rows {
        (
            messages::lock_or_create_many(conn, &keys, cx.now).await?,
            None,
        )
    } else if tracking && json_rows::backend_of(conn) == Backend::Postgres {
        let (messages, sessions) = read_with_sessions(conn, requests, &keys, cx.now).await?;
        (messages, Some(sessions))
    } else {
        (messages::read_many(conn, &keys, cx.now).await?, None)
    };
    let index: HashMap<(Provider, &str), usize> = keys
        .iter()
        .enumerate()
        .map(|(i, (provider, id, _))| ((*provider, *id), i))
        .collect();
    let messages: Vec<BatchRow<MessageState>> = loaded.into_iter().map(BatchRow::new).collect();

    let mut sessions = BTreeMap::new();
    let mut sessions_read = false;
    if tracking {
        // An outbound message touches its session once, when it is first linked: later
        // statuses leave the session row alone, so it is neither locked nor rewritten.
        let unlinked = |provider: Provider, id: &str| {
            index
                .get(&(provider, id))
                .is_some_and(|&i| !messages[i].state.observed.has(Observed::SESSION))
        };
        let mut phones: Vec<&str> = events()
            .filter_map(|e| match e {
                Event::Status(s) if unlinked(s.provider, &s.message_id) => s.phone.as_ref(),
                Event::Sent(h) if unlinked(h.provider, &h.message_id) => Some(&h.phone),
                Event::Inbound(m) => m.phone.as_ref(),
                _ => None,
            })
            .chain(
                messages
                    .iter()
                    .map(|m| &m.state)
                    .filter(|m| !m.observed.has(Observed::SESSION))
                    .filter_map(|m| m.phone.as_ref()),
            )
            .map(|p| p.as_str())
            .collect();
        phones.sort_unstable();
        phones.dedup();
        let loaded = match stored_sessions.as_mut() {
            Some(stored) => {
                sessions_read = true;
                phones
                    .iter()
                    .map(|p| stored.remove(*p).unwrap_or_else(|| sessions::absent(p)))
                    .collect()
            }
            None if cx.lock_rows => sessions::lock_or_create_many(conn, &phones, cx.now).await?,
            None => {
                let kept = recent
                    .filter(|_| from_cache)
                    .and_then(|r| r.take_sessions(&phones, cx.now));
                match kept {
                    Some(kept) => {
                        presumed_new = presumed_new.union(kept.new);
                        kept.rows
                    }
                    None => {
                        (read_database, sessions_read) = (true, true);
                        sessions::read_many(conn, &phones).await?
                    }
                }
            }
        };
        for (s, version) in loaded {
            sessions.insert(s.phone.clone(), BatchRow::new((s, version)));
        }
    }

    if let Some(recent) = recent.filter(|_| read_database) {
        let read_messages = messages.iter().zip(&kinds).filter(|_| !from_cache);
        let read_sessions = sessions.values().filter(|_| sessions_read);
        recent.read_from_database(
            read_messages.map(|(r, kind)| (&r.state, r.version, *kind)),
            read_sessions.map(|r| (&r.state, r.version)),
        );
    }
    cx.presumed_new.store(presumed_new.0, Ordering::Relaxed);
    cx.counters
        .count_read(match (read_database, presumed_new.is_empty()) {
            (true, _) => ReadSource::Database,
            (false, true) => ReadSource::Kept,
            (false, false) => ReadSource::PresumedNew,
        });

    let inbound_rows: Vec<(&InboundMessage, i64)> = events()
        .filter_map(|e| match e {
            Event::Inbound(m) => Some((m, m.at_ms.unwrap_or(cx.now))),
            _ => None,
        })
        .collect();
    let new_inbound = if inbound_rows.is_empty() {
        HashSet::new()
    } else {
        inbound::insert_many(conn, &inbound_rows, cx.settings).await?
    };
    Ok(Rows {
        messages,
        index,
        sessions,
        new_inbound,
        templates: BTreeMap::new(),
        settlements: Vec::new(),
        relays: Vec::new(),
    })
}

/// The kind of each of the batch's message keys (sorted, as [`load`] sorts them): those a
/// send hook or a first status (`accepted`, `sent`) of the batch names open their message.
fn kinds_of<'e>(
    keys: &[(Provider, &str, Channel)],
    events: impl Iterator<Item = &'e Event>,
) -> Vec<RowKind> {
    let mut kinds = vec![RowKind::Later; keys.len()];
    for event in events {
        let (provider, id) = match event {
            Event::Sent(h) => (h.provider, h.message_id.as_str()),
            Event::Status(s) if s.status <= Status::Sent => (s.provider, s.message_id.as_str()),
            _ => continue,
        };
        let found = keys.binary_search_by(|k| (k.0.as_str(), k.1).cmp(&(provider.as_str(), id)));
        if let Ok(i) = found {
            kinds[i] = RowKind::Opening;
        }
    }
    kinds
}

/// The batch's messages and the stored sessions it may link them to, in one statement.
/// The database finds the same phones as [`load`] does, from the messages it reads; a
/// phone it missed would be taken for a new session and its write-back refused as a
/// conflict, never counted wrong.
async fn read_with_sessions(
    conn: &mut AnyConnection,
    requests: &[&[Event]],
    keys: &[(Provider, &str, Channel)],
    now: i64,
) -> Result<(Vec<messages::Loaded>, HashMap<String, sessions::Loaded>), sqlx::Error> {
    let events = || requests.iter().flat_map(|r| r.iter());
    let mut key_phones: Vec<KeyPhone> = events()
        .filter_map(|e| match e {
            Event::Status(s) => Some((s.provider, s.message_id.as_str(), s.phone.as_ref())),
            Event::Sent(h) => Some((h.provider, h.message_id.as_str(), Some(&h.phone))),
            _ => None,
        })
        .map(|(provider, message_id, phone)| KeyPhone {
            provider: provider.as_str(),
            message_id,
            phone: phone.map(|p| p.as_str()),
        })
        .collect();
    key_phones.sort_unstable();
    key_phones.dedup();
    let inbound_phones: Vec<&str> = events()
        .filter_map(|e| match e {
            Event::Inbound(m) => m.phone.as_ref().map(|p| p.as_str()),
            _ => None,
        })
        .collect();
    batch_read::messages_and_sessions(conn, keys, &key_phones, &inbound_phones, now).await
}

async fn apply_event<'e>(
    conn: &mut AnyConnection,
    event: &'e Event,
    rows: &mut Rows<'e>,
    cx: &Context<'_>,
    tally: &mut Tally,
    hooks: &mut HookCounts,
) -> Result<(), sqlx::Error> {
    match event {
        Event::Ignored(p) => tally.outcome(*p, Outcome::Ignored),
        Event::Relay(webhook) => rows.relays.push(webhook),
        Event::Status(s) => {
            let i = rows.index[&(s.provider, s.message_id.as_str())];
            let m = &mut rows.messages[i].state;
            if m.phone.is_none() {
                m.phone = s.phone.clone();
            }
            if s.segments > 0 {
                m.segments = s.segments;
            }
            let new = m.record_status(
                s.status,
                s.at_ms.unwrap_or(cx.now),
                s.pricing.clone(),
                s.error.clone(),
            );
            tally.outcome(
                s.provider,
                if new {
                    Outcome::Processed
                } else {
                    Outcome::Duplicate
                },
            );
            if new {
                finish_message(i, rows, cx, tally);
            }
        }
        Event::Sent(h) => {
            let i = rows.index[&(h.provider, h.message_id.as_str())];
            let m = &mut rows.messages[i].state;
            if !m.record_hook(h.hook.clone(), h.error.clone()) {
                hooks.duplicates += 1;
                return Ok(());
            }
            hooks.accepted += 1;
            // The bot knows the number it sent to; a status may have named a group instead.
            m.phone = Some(h.phone.clone());
            m.channel = h.channel;
            if let Some(r) = &h.reservation_id {
                m.reservation_id = r.clone();
            }
            finish_message(i, rows, cx, tally);
            note_cooldown(h, rows, cx);
        }
        Event::Inbound(msg) => {
            let key = (msg.provider.as_str().to_owned(), msg.message_id.clone());
            // The first event of the batch with a newly stored key is the new one.
            if !rows.new_inbound.remove(&key) {
                tally.outcome(msg.provider, Outcome::Duplicate);
                return Ok(());
            }
            tally.outcome(msg.provider, Outcome::Processed);
            tally.inbound.push((msg.provider, msg.channel, msg.kind));
            let phone = msg.phone.as_ref();
            if let Some(amount) = cx.settings.inbound_cost(phone, msg.channel, msg.segments) {
                tally.cost.push(CostCount {
                    provider: msg.provider,
                    channel: msg.channel,
                    category: category::SMS_COST,
                    template: NO_TEMPLATE.to_owned(),
                    currency: cx.settings.sms_currency.clone(),
                    amount,
                });
            }
            if let Some(session) = msg
                .phone
                .as_ref()
                .and_then(|p| rows.sessions.get_mut(p.as_str()))
            {
                session.state.record_inbound(msg.at_ms.unwrap_or(cx.now));
                session.dirty = true;
            }
        }
        Event::WebhookError(e) => {
            let outcome = if inbound::claim_webhook_error(conn, e, cx.now).await? {
                tally.errors.push((e.provider, e.channel, e.code.clone()));
                Outcome::Processed
            } else {
                Outcome::Duplicate
            };
            tally.outcome(e.provider, outcome);
        }
    }
    Ok(())
}

/// Links a changed message to its phone's session once, settles it, marks it for writing.
fn finish_message(i: usize, rows: &mut Rows, cx: &Context<'_>, tally: &mut Tally) {
    let m = &mut rows.messages[i].state;
    if let (Some(phone), Some(sent_ms), false) = (
        &m.phone,
        m.send_time_ms(),
        m.observed.has(Observed::SESSION),
    ) {
        m.observed.set(Observed::SESSION);
        // Sessions are loaded only while session tracking is on.
        if let Some(session) = rows.sessions.get_mut(phone.as_str()) {
            session.dirty = true;
            let session = &mut session.state;
            m.window_open_at_send = session.window().is_open_at(sent_ms);
            if let Some(seconds) = session.record_outbound(sent_ms) {
                tally.response_latency.push(Latency {
                    provider: m.provider,
                    channel: m.channel,
                    category: None,
                    seconds,
                });
            }
        }
    }
    m.settle(cx.now, cx.grace_ms, cx.settings, tally);
    rows.messages[i].dirty = true;
}

/// A template that went out starts its phone's cooldown at its `sent_at`, but no later
/// than now (while rate limiting is on), and the reservation a hook names is settled:
/// confirmed by a send, released by a send that failed (nothing reached the user, so the
/// slot is given back). A failed send starts no cooldown. Written at the end of the
/// batch, in phone order.
fn note_cooldown(h: &SentMessage, rows: &mut Rows, cx: &Context<'_>) {
    let sent = h.error.is_none();
    if sent && h.hook.is_template && cx.settings.rate_limiting_enabled {
        let start = cooldown::starts_at(h.hook.sent_at_ms, cx.now);
        let latest = rows
            .templates
            .entry(h.phone.as_str().to_owned())
            .or_insert(start);
        *latest = (*latest).max(start);
    }
    if let Some(id) = &h.reservation_id {
        rows.settlements.push(Settlement {
            id: id.clone(),
            phone: h.phone.as_str().to_owned(),
            to: if sent {
                ReservationStatus::Confirmed
            } else {
                ReservationStatus::Released
            },
            message_id: h.message_id.clone(),
        });
    }
}
