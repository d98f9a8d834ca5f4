//! `cooldowns` and `reservations`: the per-phone template slot and the reservations that
//! take it. Every write touches `cooldowns` before `reservations`, and multi-row upserts
//! of `cooldowns` go in phone order, so that two transactions rarely wait on each other's
//! rows in opposite orders. (Ending the holds of a batch of send hooks goes by hold id,
//! in no set order; a deadlock there is detected by Postgres and the batch runs again.)

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use sqlx::{AnyConnection, Row};

use crate::domain::cooldown::{free_if_anchored_before, Slot};
use crate::store::json_rows::{self, backend_of, Statement};

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

/// The time a cooldown row's last template counts from, in SQL over the row named
/// `table`: `last_template_ms`, but never later than the row's last write. Send hooks
/// store at most their receipt time ([`crate::domain::cooldown::starts_at`]); a time
/// ahead of the write comes from a row stored before that rule, and is read as the
/// write time, so that it cannot block for longer than the cooldown from now.
pub fn last_template(table: &str) -> String {
    format!(
        "(CASE WHEN {table}.last_template_ms > {table}.updated_ms \
         THEN {table}.updated_ms ELSE {table}.last_template_ms END)"
    )
}

/// An update of `cooldowns` moves `updated_ms`: the same update stores the time the last
/// template counts from, so that a row stored ahead of its write does not start its
/// cooldown anew at the update.
fn keep_last_template() -> String {
    format!("last_template_ms = {}", last_template("cooldowns"))
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
    END_HOLD
        .query(backend_of(conn))
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

static END_HOLD: Statement = Statement::new(|_| {
    format!(
        "UPDATE cooldowns SET {}, hold_id = '', hold_ms = 0, updated_ms = $2 WHERE hold_id = $1",
        keep_last_template()
    )
});

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
    if holds.is_empty() {
        return Ok(HashSet::new());
    }
    let rows: Vec<Hold> = holds
        .iter()
        .map(|(phone, hold_id)| Hold { phone, hold_id })
        .collect();
    let rows = TAKE
        .over(conn, &rows)
        .bind(free_if_anchored_before(now_ms, cooldown_ms))
        .bind(now_ms)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(|row| row.try_get(0)).collect()
}

#[derive(Serialize)]
struct Hold<'a> {
    phone: &'a str,
    hold_id: &'a str,
}

static TAKE: Statement = Statement::new(|backend| {
    format!(
        "INSERT INTO cooldowns (phone, last_template_ms, hold_id, hold_ms, updated_ms) \
         SELECT v.phone, 0, v.hold_id, $3, $3 FROM {} WHERE true \
         ON CONFLICT (phone) DO UPDATE SET {}, hold_id = excluded.hold_id, \
         hold_ms = excluded.hold_ms, updated_ms = excluded.updated_ms \
         WHERE {} <= $2 AND cooldowns.hold_ms <= $2 \
         RETURNING phone",
        json_rows::source(backend, "cooldowns", &["phone", "hold_id"]),
        keep_last_template(),
        last_template("cooldowns"),
    )
});

/// Stores new reservations (ids are fresh, so nothing conflicts).
pub async fn insert_many(
    conn: &mut AnyConnection,
    rs: &[&Reservation],
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    if rs.is_empty() {
        return Ok(());
    }
    let rows: Vec<StoredReservation> = rs
        .iter()
        .map(|r| StoredReservation {
            id: &r.id,
            phone: &r.phone,
            created_ms: r.created_ms,
            expires_ms: r.expires_ms,
            status: r.status.as_str(),
            message_id: &r.message_id,
            updated_ms: now_ms,
        })
        .collect();
    INSERT.over(conn, &rows).execute(&mut *conn).await?;
    Ok(())
}

#[derive(Serialize)]
struct StoredReservation<'a> {
    id: &'a str,
    phone: &'a str,
    created_ms: i64,
    expires_ms: i64,
    status: &'a str,
    message_id: &'a str,
    updated_ms: i64,
}

const RESERVATION_COLUMNS: [&str; 7] = [
    "id",
    "phone",
    "created_ms",
    "expires_ms",
    "status",
    "message_id",
    "updated_ms",
];

static INSERT: Statement = Statement::new(|backend| {
    format!(
        "INSERT INTO reservations ({}) SELECT {} FROM {}",
        RESERVATION_COLUMNS.join(", "),
        json_rows::prefixed("v", &RESERVATION_COLUMNS),
        json_rows::source(backend, "reservations", &RESERVATION_COLUMNS)
    )
});

/// The slots of `phones` as they stand (free for phones without a row).
pub async fn slots(
    conn: &mut AnyConnection,
    phones: &[&str],
) -> Result<HashMap<String, Slot>, sqlx::Error> {
    let mut out: HashMap<String, Slot> = phones
        .iter()
        .map(|p| ((*p).to_owned(), Slot::default()))
        .collect();
    for row in SLOTS
        .over(conn, &json_rows::phone_keys(phones))
        .fetch_all(&mut *conn)
        .await?
    {
        out.insert(
            row.try_get(0)?,
            Slot {
                last_template_ms: row.try_get(1)?,
                hold_ms: row.try_get(2)?,
            },
        );
    }
    Ok(out)
}

static SLOTS: Statement = Statement::new(|backend| {
    format!(
        "SELECT c.phone, {}, c.hold_ms FROM {} JOIN cooldowns AS c ON c.phone = v.phone",
        last_template("c"),
        json_rows::source(backend, "cooldowns", &["phone"])
    )
});

/// A send hook's verdict on the reservation it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settlement {
    pub id: String,
    /// The hook's phone: a reservation taken for another phone is left as it is.
    pub phone: String,
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
    if !templates.is_empty() {
        let rows: Vec<Cooldown> = templates
            .iter()
            .map(|(phone, sent_at)| Cooldown {
                phone,
                last_template_ms: *sent_at,
                updated_ms: now_ms,
            })
            .collect();
        START_COOLDOWNS
            .over(conn, &rows)
            .execute(&mut *conn)
            .await?;
    }

    // The first hook naming a reservation decides it; ids in order.
    let mut first: BTreeMap<&str, &Settlement> = BTreeMap::new();
    for s in settlements {
        first.entry(s.id.as_str()).or_insert(s);
    }
    if first.is_empty() {
        return Ok(());
    }
    let rows: Vec<Verdict> = first
        .into_values()
        .map(|s| Verdict {
            id: &s.id,
            phone: &s.phone,
            status: s.to.as_str(),
            message_id: &s.message_id,
        })
        .collect();
    // Both statements read the same rows: encoded once.
    let backend = backend_of(conn);
    let rows = json_rows::encode(&rows);
    for statement in [&END_HOLDS, &SETTLE] {
        statement
            .query(backend)
            .bind(rows.as_str())
            .bind(now_ms)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

#[derive(Serialize)]
struct Cooldown<'a> {
    phone: &'a str,
    last_template_ms: i64,
    updated_ms: i64,
}

#[derive(Serialize)]
struct Verdict<'a> {
    id: &'a str,
    phone: &'a str,
    status: &'a str,
    message_id: &'a str,
}

static START_COOLDOWNS: Statement = Statement::new(|backend| {
    format!(
        "INSERT INTO cooldowns (phone, last_template_ms, updated_ms) \
         SELECT v.phone, v.last_template_ms, v.updated_ms FROM {} WHERE true \
         ON CONFLICT (phone) DO UPDATE SET last_template_ms = CASE \
         WHEN excluded.last_template_ms > {last} THEN excluded.last_template_ms ELSE {last} END, \
         updated_ms = excluded.updated_ms",
        json_rows::source(
            backend,
            "cooldowns",
            &["phone", "last_template_ms", "updated_ms"]
        ),
        last = last_template("cooldowns"),
    )
});

/// A hold is ended only by its own reservation (hold ids are unique), only while that
/// reservation is still held, and only by a hook for the phone it was taken for.
static END_HOLDS: Statement = Statement::replanned(|backend| {
    format!(
        "UPDATE cooldowns SET {}, hold_id = '', hold_ms = 0, updated_ms = $2 WHERE hold_id IN \
         (SELECT r.id FROM {} JOIN reservations AS r ON r.id = v.id \
         WHERE r.status = 'held' AND r.phone = v.phone)",
        keep_last_template(),
        json_rows::source(backend, "reservations", &["id", "phone"])
    )
});

static SETTLE: Statement = Statement::replanned(|backend| {
    format!(
        "UPDATE reservations AS r SET status = v.status, message_id = v.message_id, updated_ms = $2 \
         FROM {} WHERE r.id = v.id AND r.phone = v.phone AND r.status = 'held'",
        json_rows::source(backend, "reservations", &["id", "phone", "status", "message_id"])
    )
});

/// The phone each of `ids` was reserved for (unknown ids are left out). A reservation's
/// phone never changes, and its id is known only once it is committed, so this read
/// holds for any later write.
pub async fn phones_of(
    conn: &mut AnyConnection,
    ids: &[&str],
) -> Result<HashMap<String, String>, sqlx::Error> {
    let keys: Vec<ReservationKey> = ids.iter().map(|id| ReservationKey { id }).collect();
    PHONES_OF
        .over(conn, &keys)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}

#[derive(Serialize)]
struct ReservationKey<'a> {
    id: &'a str,
}

static PHONES_OF: Statement = Statement::new(|backend| {
    format!(
        "SELECT r.id, r.phone FROM {} JOIN reservations AS r ON r.id = v.id",
        json_rows::source(backend, "reservations", &["id"])
    )
});
