//! `cooldowns` and `reservations`: the per-phone template slot and the reservations that
//! take it. Every write touches `cooldowns` before `reservations`, and multi-row upserts
//! of `cooldowns` go in phone order, so that two transactions rarely wait on each other's
//! rows in opposite orders. (Ending the holds of a batch of send hooks goes by hold id,
//! in no set order; a deadlock there is detected by Postgres and the batch runs again.)

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::{AnyConnection, Row};

use crate::domain::cooldown::{free_if_anchored_before, Slot};
use crate::store::placeholders::{placeholders, placeholders_after};

/// Rows per multi-row statement: well under SQLite's 32,766 bound parameters.
const CHUNK: usize = 200;

/// A reservation as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub id: String,
    pub phone: String,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub status: ReservationStatus,
    pub message_id: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReservationStatus {
    /// Holding the slot, waiting for its send hook or a release.
    Held,
    /// A send hook named it: the template went out.
    Confirmed,
    /// Given back (`DELETE /v1/reservations/{id}`, or a send hook reporting a failed send).
    Released,
}

impl ReservationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationStatus::Held => "held",
            ReservationStatus::Confirmed => "confirmed",
            ReservationStatus::Released => "released",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        match raw {
            "held" => Some(ReservationStatus::Held),
            "confirmed" => Some(ReservationStatus::Confirmed),
            "released" => Some(ReservationStatus::Released),
            _ => None,
        }
    }
}

pub async fn get(conn: &mut AnyConnection, id: &str) -> Result<Option<Reservation>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, phone, created_ms, expires_ms, status, message_id FROM reservations WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.map(|r| {
        let status: String = r.try_get(4)?;
        Ok(Reservation {
            id: r.try_get(0)?,
            phone: r.try_get(1)?,
            created_ms: r.try_get(2)?,
            expires_ms: r.try_get(3)?,
            status: ReservationStatus::parse(&status).ok_or_else(|| {
                sqlx::Error::Decode(format!("unknown reservation status {status:?}").into())
            })?,
            message_id: r.try_get(5)?,
        })
    })
    .transpose()
}

/// Gives the slot back if reservation `id` still holds it, and marks a held reservation
/// `to` (confirmed or released). Returns false when it was not held (already settled
/// or unknown), in which case nothing changes.
pub async fn settle(
    conn: &mut AnyConnection,
    id: &str,
    to: ReservationStatus,
    message_id: &str,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE cooldowns SET hold_id = '', hold_ms = 0, updated_ms = $2 WHERE hold_id = $1",
    )
    .bind(id)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    let done = sqlx::query(
        "UPDATE reservations SET status = $2, message_id = $3, updated_ms = $4 \
         WHERE id = $1 AND status = 'held'",
    )
    .bind(id)
    .bind(to.as_str())
    .bind(message_id)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Takes the slots of `holds` (phone, reservation id; sorted and distinct by phone: the
/// lock order) where free at `now_ms`, and returns the phones whose slot this call took.
/// The `WHERE` of the upsert is evaluated on each row as it stands after any concurrent
/// writer committed (Postgres re-checks it under the row lock; SQLite writers are
/// serialised), so of any number of concurrent takers exactly one wins.
pub async fn take_many(
    conn: &mut AnyConnection,
    holds: &[(&str, &str)],
    now_ms: i64,
    cooldown_ms: i64,
) -> Result<HashSet<String>, sqlx::Error> {
    let mut taken = HashSet::with_capacity(holds.len());
    for chunk in holds.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO cooldowns (phone, last_template_ms, hold_id, hold_ms, updated_ms) VALUES {} \
             ON CONFLICT (phone) DO UPDATE SET hold_id = excluded.hold_id, hold_ms = excluded.hold_ms, \
             updated_ms = excluded.updated_ms \
             WHERE cooldowns.last_template_ms <= $1 AND cooldowns.hold_ms <= $1 \
             RETURNING phone",
            (0..chunk.len())
                .map(|i| format!("(${}, 0, ${}, $2, $2)", 3 + 2 * i, 4 + 2 * i))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut q = sqlx::query(&sql)
            .bind(free_if_anchored_before(now_ms, cooldown_ms))
            .bind(now_ms);
        for (phone, id) in chunk {
            q = q.bind(*phone).bind(*id);
        }
        for row in q.fetch_all(&mut *conn).await? {
            taken.insert(row.try_get(0)?);
        }
    }
    Ok(taken)
}

/// Stores new reservations (ids are fresh, so nothing conflicts).
pub async fn insert_many(
    conn: &mut AnyConnection,
    rs: &[&Reservation],
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    for chunk in rs.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO reservations (id, phone, created_ms, expires_ms, status, message_id, updated_ms) \
             VALUES {}",
            placeholders(chunk.len(), 7)
        );
        let mut q = sqlx::query(&sql);
        for r in chunk {
            q = q
                .bind(r.id.as_str())
                .bind(r.phone.as_str())
                .bind(r.created_ms)
                .bind(r.expires_ms)
                .bind(r.status.as_str())
                .bind(r.message_id.as_str())
                .bind(now_ms);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The slots of `phones` as they stand (free for phones without a row).
pub async fn slots(
    conn: &mut AnyConnection,
    phones: &[&str],
) -> Result<HashMap<String, Slot>, sqlx::Error> {
    let mut out: HashMap<String, Slot> = phones
        .iter()
        .map(|p| ((*p).to_owned(), Slot::default()))
        .collect();
    for chunk in phones.chunks(CHUNK) {
        let sql = format!(
            "SELECT phone, last_template_ms, hold_ms FROM cooldowns WHERE phone IN ({})",
            (1..=chunk.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut q = sqlx::query(&sql);
        for phone in chunk {
            q = q.bind(*phone);
        }
        for row in q.fetch_all(&mut *conn).await? {
            out.insert(
                row.try_get(0)?,
                Slot {
                    last_template_ms: row.try_get(1)?,
                    hold_ms: row.try_get(2)?,
                },
            );
        }
    }
    Ok(out)
}

/// A send hook's verdict on the reservation it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settlement {
    pub id: String,
    pub to: ReservationStatus,
    pub message_id: String,
}

/// What a batch of send hooks does to cooldowns: each phone's cooldown runs from its
/// latest template (`templates`), and each named reservation that still holds its slot
/// gives up the hold and becomes confirmed or released. Three statements whatever the
/// batch size (per chunk): the cooldowns upsert locks in phone order, then the holds
/// end, then the reservations change.
pub async fn apply_hooks(
    conn: &mut AnyConnection,
    templates: &BTreeMap<String, i64>,
    settlements: &[Settlement],
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let rows: Vec<(&String, &i64)> = templates.iter().collect();
    for chunk in rows.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO cooldowns (phone, last_template_ms, updated_ms) VALUES {} \
             ON CONFLICT (phone) DO UPDATE SET last_template_ms = CASE \
             WHEN excluded.last_template_ms > cooldowns.last_template_ms \
             THEN excluded.last_template_ms ELSE cooldowns.last_template_ms END, \
             updated_ms = excluded.updated_ms",
            placeholders(chunk.len(), 3)
        );
        let mut q = sqlx::query(&sql);
        for (phone, sent_at) in chunk {
            q = q.bind(phone.as_str()).bind(**sent_at).bind(now_ms);
        }
        q.execute(&mut *conn).await?;
    }

    // The first hook naming a reservation decides it; ids in order.
    let mut first: BTreeMap<&str, &Settlement> = BTreeMap::new();
    for s in settlements {
        first.entry(s.id.as_str()).or_insert(s);
    }
    let named: Vec<&Settlement> = first.into_values().collect();
    for chunk in named.chunks(CHUNK) {
        // A hold is ended only by its own reservation (hold ids are unique), and only
        // while that reservation is still held.
        let sql = format!(
            "UPDATE cooldowns SET hold_id = '', hold_ms = 0, updated_ms = $1 \
             WHERE hold_id IN (SELECT id FROM reservations WHERE status = 'held' AND id IN ({}))",
            (2..chunk.len() + 2)
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut q = sqlx::query(&sql).bind(now_ms);
        for s in chunk {
            q = q.bind(s.id.as_str());
        }
        q.execute(&mut *conn).await?;

        let sql = format!(
            "UPDATE reservations SET status = v.column2, message_id = v.column3, updated_ms = $1 \
             FROM (VALUES {}) AS v WHERE reservations.id = v.column1 AND reservations.status = 'held'",
            placeholders_after(1, chunk.len(), 3)
        );
        let mut q = sqlx::query(&sql).bind(now_ms);
        for s in chunk {
            q = q
                .bind(s.id.as_str())
                .bind(s.to.as_str())
                .bind(s.message_id.as_str());
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}
