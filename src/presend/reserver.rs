//! Reservations for `check-send` with `reserve: true`, taken in group-committed batches:
//! concurrent reserving checks share one transaction (one conditional upsert of their
//! slots, one insert of their reservations, one commit) instead of a commit each.
//!
//! Of the checks in a batch naming one phone, the first competes for the slot and the
//! others lose to it; across batches and replicas the conditional upsert decides, as for
//! single reservations, so of any number of concurrent takers exactly one wins.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rand::RngCore;
use tracing::{debug, warn};

use crate::clock::SharedClock;
use crate::domain::cooldown::{cooldown_ms, Slot};
use crate::group_commit::{answer_all, Job, Queue};
use crate::ledger::StoreError;
use crate::settings_cache::SettingsCache;
use crate::store::reservations::{self, Reservation, ReservationStatus};
use crate::store::{self, Db};

/// Reserving checks per transaction, at most.
const MAX_BATCH: usize = 500;
/// How often a batch that lost a deadlock is run again before giving up (503).
const MAX_ATTEMPTS: usize = 5;

/// The reservation taken, or the slot as it stands when another caller holds it.
pub type Taken = Result<Reservation, Slot>;

#[derive(Clone)]
pub struct Reserver {
    queue: Queue<String, Taken>,
}

struct Inner {
    db: Db,
    settings: Arc<SettingsCache>,
    clock: SharedClock,
}

impl Reserver {
    /// Starts the batching task (needs a Tokio runtime).
    pub fn new(db: Db, settings: Arc<SettingsCache>, clock: SharedClock) -> Self {
        let bound = db.timeout() * 2;
        let inner = Arc::new(Inner {
            db,
            settings,
            clock,
        });
        let queue = Queue::start(
            1,
            MAX_BATCH,
            |_| 1,
            bound,
            move |jobs| {
                let inner = inner.clone();
                async move { inner.commit(jobs).await }
            },
        );
        Self { queue }
    }

    /// Takes `phone`'s slot for a new reservation, once the batch is durable. The
    /// cooldown in force when the batch runs sets the reservation's expiry.
    pub async fn reserve(&self, phone: &str) -> Result<Taken, StoreError> {
        self.queue.call(phone.to_owned()).await
    }
}

impl Inner {
    async fn commit(&self, mut jobs: Vec<Job<String, Taken>>) {
        // A check that gave up was answered 503: a slot taken for it would hold the
        // phone with a reservation nobody can confirm or release.
        jobs.retain(|job| !job.abandoned());
        if jobs.is_empty() {
            return;
        }
        let phones: Vec<&str> = jobs.iter().map(|j| j.input.as_str()).collect();
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            match self.take(&phones).await {
                Err(e) if attempt < MAX_ATTEMPTS && store::is_retryable(&e) => {
                    debug!(attempt, error = %e, "reservations lost a deadlock; running them again");
                }
                other => break other,
            }
        };
        self.db.write_health().note(&result);
        if let Ok(taken) = &result {
            let orphaned: Vec<&str> = jobs
                .iter()
                .zip(taken)
                .filter(|(job, _)| job.abandoned())
                .filter_map(|(_, t)| t.as_ref().ok().map(|r| r.id.as_str()))
                .collect();
            self.release(&orphaned).await;
        }
        answer_all(jobs, result);
    }

    /// Gives back slots taken for checks that gave up (503) while their batch ran: nobody
    /// knows those reservations' ids, so they would hold their phones for a whole cooldown.
    async fn release(&self, ids: &[&str]) {
        if ids.is_empty() {
            return;
        }
        let now = self.clock.now_ms();
        let released = async {
            let mut w = self.db.begin_write().await?;
            for id in ids {
                reservations::settle(&mut w.tx, id, ReservationStatus::Released, "", now).await?;
            }
            w.commit().await
        }
        .await;
        if let Err(e) = released {
            warn!(error = %e, held = ids.len(), "could not give back the slots of abandoned checks; they expire with the cooldown");
        }
    }

    /// One transaction for a batch; one answer per phone given, in order.
    async fn take(&self, phones: &[&str]) -> Result<Vec<Taken>, sqlx::Error> {
        let now = self.clock.now_ms();
        let cooldown = cooldown_ms(self.settings.get().template_cooldown_hours);
        // The first check per phone competes for its slot, in phone order.
        let mut first: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, phone) in phones.iter().enumerate() {
            first.entry(phone).or_insert(i);
        }
        let mut made: BTreeMap<&str, Reservation> = first
            .keys()
            .map(|phone| {
                let r = Reservation {
                    id: new_id(now),
                    phone: (*phone).to_owned(),
                    created_ms: now,
                    expires_ms: now + cooldown,
                    status: ReservationStatus::Held,
                    message_id: String::new(),
                };
                (*phone, r)
            })
            .collect();
        let holds: Vec<(&str, &str)> = made.iter().map(|(p, r)| (*p, r.id.as_str())).collect();

        let mut w = self.db.begin_write().await?;
        let won = reservations::take_many(&mut w.tx, &holds, now, cooldown).await?;
        made.retain(|phone, _| won.contains(*phone));
        let rows: Vec<&Reservation> = made.values().collect();
        reservations::insert_many(&mut w.tx, &rows, now).await?;
        // Every check without a reservation is answered with its phone's slot as the
        // batch leaves it (held by another caller, or by this batch's first check).
        let slots = if made.len() < phones.len() {
            let all: Vec<&str> = first.keys().copied().collect();
            reservations::slots(&mut w.tx, &all).await?
        } else {
            HashMap::new()
        };
        w.commit().await?;

        Ok(phones
            .iter()
            .enumerate()
            .map(|(i, phone)| match made.remove(phone) {
                // The winner's own check is the phone's first; later ones see its hold.
                Some(r) if first[phone] == i => Ok(r),
                _ => Err(slots.get(*phone).copied().unwrap_or_default()),
            })
            .collect())
    }
}

/// `rsv_`, the time it was made (unix ms, 12 hex digits) and 16 random bytes in hex.
/// The random part makes it unguessable, so one caller cannot release another's
/// reservation by guessing its id; the time in front makes ids made later sort later, so
/// a batch's new ids go into the rightmost pages of the indexes that hold them
/// (`reservations`' key, `cooldowns_hold`) instead of dirtying a random page each.
pub fn new_id(now_ms: i64) -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("rsv_{:012x}{}", now_ms.max(0), hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::new_id;

    #[test]
    fn ids_sort_by_the_time_they_were_made_and_differ_within_one_millisecond() {
        let (a, b, later) = (
            new_id(1_764_000_000_000),
            new_id(1_764_000_000_000),
            new_id(1_764_000_000_001),
        );
        assert_ne!(a, b);
        assert!(a < later && b < later, "{a} {b} {later}");
        for id in [&a, &b, &later] {
            let hex = id.strip_prefix("rsv_").expect("prefix");
            assert_eq!(hex.len(), 12 + 32, "{id}");
            assert!(hex.bytes().all(|c| c.is_ascii_hexdigit()), "{id}");
        }
        // A time of fewer digits is padded, so that the order holds across powers of 16.
        assert!(new_id(0xfff) < new_id(0x1000));
    }
}
