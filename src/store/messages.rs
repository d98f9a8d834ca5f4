//! `outbound_messages`: one row per outbound message, read whole and written back whole,
//! the write conditional on the row's version being the one read.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::json_rows::{self, backend_of, Statement};
use super::Backend;

use crate::domain::category::{self, Category};
use crate::domain::message::{Hook, Labels, MessageError, MessageState, Observed};
use crate::domain::phone::Phone;
use crate::domain::pricing::MetaPricing;
use crate::domain::status::StatusSet;
use crate::domain::{Channel, Provider};

/// The columns a message is read from, in [`from_row`]'s terms.
pub(super) const COLUMNS: [&str; 36] = [
    "provider",
    "message_id",
    "channel",
    "phone",
    "hook_seen",
    "is_template",
    "template_name",
    "category",
    "sent_at_ms",
    "reservation_id",
    "first_seen_ms",
    "seen_mask",
    "counted_mask",
    "observed_mask",
    "accepted_ms",
    "sent_ms",
    "delivered_ms",
    "read_ms",
    "failed_ms",
    "pricing_type",
    "pricing_category",
    "pricing_billable",
    "has_pricing",
    "error_code",
    "error_title",
    "error_message",
    "error_details",
    "label_fixed",
    "label_template",
    "label_category",
    "window_open_at_send",
    "cost",
    "cost_category",
    "currency",
    // Appended after the bookkeeping columns (see STORED_COLUMNS).
    "hook_segments",
    "segments",
];

/// How many of [`COLUMNS`] come before [`BOOKKEEPING`] in the table.
const BEFORE_BOOKKEEPING: usize = 34;

/// A message as read, and the row version its write-back must still find: `None` when
/// there was no row, so the write-back inserts one.
pub type Loaded = (MessageState, Option<i64>);

/// The key fields of a batch's messages, as [`json_rows`] sends them.
#[derive(Serialize)]
struct KeyRow<'a> {
    provider: &'a str,
    message_id: &'a str,
    channel: &'a str,
    first_seen_ms: i64,
    updated_ms: i64,
}

fn key_rows<'a>(keys: &[(Provider, &'a str, Channel)], now_ms: i64) -> Vec<KeyRow<'a>> {
    keys.iter()
        .map(|(provider, id, channel)| KeyRow {
            provider: provider.as_str(),
            message_id: id,
            channel: channel.as_str(),
            first_seen_ms: now_ms,
            updated_ms: now_ms,
        })
        .collect()
}

/// What a read needs of each key.
#[derive(Serialize)]
struct IdRow<'a> {
    provider: &'a str,
    message_id: &'a str,
}

fn id_rows<'a>(keys: &[(Provider, &'a str, Channel)]) -> Vec<IdRow<'a>> {
    keys.iter()
        .map(|(provider, id, _)| IdRow {
            provider: provider.as_str(),
            message_id: id,
        })
        .collect()
}

const KEY_COLUMNS: [&str; 5] = [
    "provider",
    "message_id",
    "channel",
    "first_seen_ms",
    "updated_ms",
];

static READ: Statement = Statement::new(|backend| {
    format!(
        "SELECT {}, m.version FROM {} JOIN outbound_messages AS m \
         ON m.provider = v.provider AND m.message_id = v.message_id",
        json_rows::prefixed("m", &COLUMNS),
        json_rows::source(backend, "outbound_messages", &["provider", "message_id"])
    )
});

/// Reads the stored state of each key without locking it, in the keys' order; absent keys
/// come back as new messages. The write-back ([`save_many`]) then fails with a [`WriteConflict`] if
/// another transaction changed one of them meanwhile, and the batch runs again: the
/// common case pays one read and one write per message, no lock round trip.
pub async fn read_many(
    conn: &mut AnyConnection,
    keys: &[(Provider, &str, Channel)],
    now_ms: i64,
) -> Result<Vec<Loaded>, sqlx::Error> {
    let rows = READ
        .over(conn, &id_rows(keys))
        .fetch_all(&mut *conn)
        .await?;
    in_key_order(keys, &rows, now_ms)
}

/// One state per key, in the keys' order: rows come back in no set order, so each goes to
/// its key's place (found without copying the key); keys with no row become new messages.
pub(super) fn in_key_order(
    keys: &[(Provider, &str, Channel)],
    rows: &[AnyRow],
    now_ms: i64,
) -> Result<Vec<Loaded>, sqlx::Error> {
    let place: HashMap<(Provider, &str), usize> = keys
        .iter()
        .enumerate()
        .map(|(i, (provider, id, _))| ((*provider, *id), i))
        .collect();
    let mut loaded: Vec<Option<Loaded>> = vec![None; keys.len()];
    for row in rows {
        let m = from_row(row)?;
        if let Some(&i) = place.get(&(m.provider, m.message_id.as_str())) {
            loaded[i] = Some((m, Some(row.try_get::<i64, _>("version")?)));
        }
    }
    Ok(loaded
        .into_iter()
        .zip(keys)
        .map(|(found, (provider, id, channel))| {
            found.unwrap_or_else(|| {
                let new = MessageState::new(*provider, (*id).to_owned(), *channel, now_ms);
                (new, None)
            })
        })
        .collect())
}

static LOCK: Statement = Statement::new(|backend| {
    format!(
        "INSERT INTO outbound_messages (provider, message_id, channel, first_seen_ms, updated_ms) \
         SELECT v.provider, v.message_id, v.channel, v.first_seen_ms, v.updated_ms FROM {} WHERE true \
         ON CONFLICT (provider, message_id) DO UPDATE SET version = outbound_messages.version + 1 \
         RETURNING {}, version",
        json_rows::source(backend, "outbound_messages", &KEY_COLUMNS),
        COLUMNS.join(", ")
    )
});

/// Creates each row if absent and locks it either way (the `DO UPDATE` takes the row lock
/// on Postgres; SQLite writers are already serialised), returning the current states in
/// the keys' order.
/// Keys are locked in the order given: callers sort them, so that concurrent
/// transactions lock in one order and cannot deadlock on messages. Used when a batch
/// runs again after losing a race, so that it cannot lose the next one.
pub async fn lock_or_create_many(
    conn: &mut AnyConnection,
    keys: &[(Provider, &str, Channel)],
    now_ms: i64,
) -> Result<Vec<Loaded>, sqlx::Error> {
    let rows = LOCK
        .over(conn, &key_rows(keys, now_ms))
        .fetch_all(&mut *conn)
        .await?;
    in_key_order(keys, &rows, now_ms)
}

/// Claims the messages whose grace period ended by `cutoff_ms` with statuses still
/// uncounted (oldest first, at most `limit`), bumping their versions; see
/// [`claim_pending`].
static CLAIM_PENDING: Statement = Statement::new(|backend| {
    // Replicas sweeping at once each take rows the others have not locked.
    let skip_locked = match backend {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    format!(
        "UPDATE outbound_messages SET version = version + 1 \
         WHERE (provider, message_id) IN (\
           SELECT provider, message_id FROM outbound_messages \
           WHERE label_fixed = 0 AND first_seen_ms <= $1 AND seen_mask <> 0 \
           ORDER BY first_seen_ms LIMIT $2{skip_locked}) \
         AND label_fixed = 0 RETURNING {}, version",
        COLUMNS.join(", ")
    )
});

/// Locks, in one statement, up to `limit` messages still waiting for attribution whose
/// grace period ended by `cutoff_ms`, with the versions their write-back must find.
pub async fn claim_pending(
    conn: &mut AnyConnection,
    cutoff_ms: i64,
    limit: i64,
) -> Result<Vec<Loaded>, sqlx::Error> {
    let rows = CLAIM_PENDING
        .query(backend_of(conn))
        .bind(cutoff_ms)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|row| Ok((from_row(row)?, Some(row.try_get::<i64, _>("version")?))))
        .collect()
}

/// A message as [`save_many`] writes it: the table's columns, by name, each left out
/// while it holds its column's default ([`DEFAULTS`]): a new message's row is mostly
/// defaults, and the JSON Postgres parses per row was its largest cost.
#[derive(Serialize)]
pub(super) struct StoredRow<'a> {
    provider: &'a str,
    message_id: &'a str,
    channel: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    phone: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    hook_seen: i64,
    #[serde(skip_serializing_if = "is_zero")]
    is_template: i64,
    #[serde(skip_serializing_if = "is_empty")]
    template_name: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    category: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    sent_at_ms: i64,
    #[serde(skip_serializing_if = "is_empty")]
    reservation_id: &'a str,
    first_seen_ms: i64,
    #[serde(skip_serializing_if = "is_zero")]
    seen_mask: i64,
    #[serde(skip_serializing_if = "is_zero")]
    counted_mask: i64,
    #[serde(skip_serializing_if = "is_zero")]
    observed_mask: i64,
    #[serde(skip_serializing_if = "is_zero")]
    accepted_ms: i64,
    #[serde(skip_serializing_if = "is_zero")]
    sent_ms: i64,
    #[serde(skip_serializing_if = "is_zero")]
    delivered_ms: i64,
    #[serde(skip_serializing_if = "is_zero")]
    read_ms: i64,
    #[serde(skip_serializing_if = "is_zero")]
    failed_ms: i64,
    #[serde(skip_serializing_if = "is_empty")]
    pricing_type: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    pricing_category: &'a str,
    #[serde(skip_serializing_if = "is_unknown")]
    pricing_billable: i64,
    #[serde(skip_serializing_if = "is_zero")]
    has_pricing: i64,
    #[serde(skip_serializing_if = "is_empty")]
    error_code: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    error_title: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    error_message: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    error_details: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    label_fixed: i64,
    #[serde(skip_serializing_if = "is_empty")]
    label_template: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    label_category: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    window_open_at_send: i64,
    #[serde(skip_serializing_if = "is_no_cost")]
    cost: f64,
    #[serde(skip_serializing_if = "is_empty")]
    cost_category: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    currency: &'a str,
    /// The version this write gives the row: one more than the version read, 0 for a
    /// row that was absent (see [`json_rows::WriteBack`]).
    #[serde(skip_serializing_if = "is_zero")]
    version: i64,
    updated_ms: i64,
    #[serde(skip_serializing_if = "is_zero")]
    hook_segments: i64,
    #[serde(skip_serializing_if = "is_zero")]
    segments: i64,
}

impl<'a> StoredRow<'a> {
    fn new(m: &'a MessageState, version: i64, now_ms: i64) -> Self {
        let hook = m.hook.as_ref();
        let pricing = m.pricing.as_ref();
        let error = m.error.as_ref();
        let labels = m.labels.as_ref();
        Self {
            provider: m.provider.as_str(),
            message_id: &m.message_id,
            channel: m.channel.as_str(),
            phone: m.phone.as_ref().map_or("", Phone::as_str),
            hook_seen: i64::from(hook.is_some()),
            is_template: i64::from(hook.is_some_and(|h| h.is_template)),
            template_name: hook.map_or("", |h| h.template.as_str()),
            category: hook.and_then(|h| h.category).map_or("", Category::as_str),
            sent_at_ms: hook.map_or(0, |h| h.sent_at_ms),
            reservation_id: &m.reservation_id,
            first_seen_ms: m.first_seen_ms,
            seen_mask: m.seen.bits(),
            counted_mask: m.counted.bits(),
            observed_mask: m.observed.0,
            accepted_ms: m.times[0],
            sent_ms: m.times[1],
            delivered_ms: m.times[2],
            read_ms: m.times[3],
            failed_ms: m.times[4],
            pricing_type: pricing.and_then(|p| p.kind.as_deref()).unwrap_or(""),
            pricing_category: pricing.and_then(|p| p.category.as_deref()).unwrap_or(""),
            pricing_billable: pricing.and_then(|p| p.billable).map_or(-1, i64::from),
            has_pricing: i64::from(pricing.is_some()),
            error_code: error.map_or("", |e| e.code.as_str()),
            error_title: error.map_or("", |e| e.title.as_str()),
            error_message: error.map_or("", |e| e.message.as_str()),
            error_details: error.map_or("", |e| e.details.as_str()),
            label_fixed: i64::from(labels.is_some()),
            label_template: labels.map_or("", |l| l.template.as_str()),
            label_category: labels.and_then(|l| l.category).map_or("", Category::as_str),
            window_open_at_send: i64::from(m.window_open_at_send),
            cost: m.cost,
            cost_category: cost_category(m),
            currency: &m.currency,
            version,
            updated_ms: now_ms,
            hook_segments: hook.map_or(0, |h| i64::from(h.segments)),
            segments: i64::from(m.segments),
        }
    }
}

/// SMS cost is stored under `sms` (the label it was counted under); the state keeps
/// only WhatsApp categories, so the channel says which it was.
fn cost_category(m: &MessageState) -> &'static str {
    if m.channel == Channel::Sms && m.observed.has(Observed::COST) {
        category::SMS_COST
    } else {
        m.cost_category.map_or("", Category::as_str)
    }
}

/// The columns a [`StoredRow`] leaves out when they hold these values (the table's own
/// defaults).
const DEFAULTS: [(&str, &str); 33] = [
    ("phone", "''"),
    ("template_name", "''"),
    ("category", "''"),
    ("reservation_id", "''"),
    ("pricing_type", "''"),
    ("pricing_category", "''"),
    ("error_code", "''"),
    ("error_title", "''"),
    ("error_message", "''"),
    ("error_details", "''"),
    ("label_template", "''"),
    ("label_category", "''"),
    ("cost_category", "''"),
    ("currency", "''"),
    ("hook_seen", "0"),
    ("is_template", "0"),
    ("sent_at_ms", "0"),
    ("seen_mask", "0"),
    ("counted_mask", "0"),
    ("observed_mask", "0"),
    ("accepted_ms", "0"),
    ("sent_ms", "0"),
    ("delivered_ms", "0"),
    ("read_ms", "0"),
    ("failed_ms", "0"),
    ("has_pricing", "0"),
    ("label_fixed", "0"),
    ("window_open_at_send", "0"),
    ("version", "0"),
    ("pricing_billable", "-1"),
    ("cost", "0"),
    ("hook_segments", "0"),
    ("segments", "0"),
];

fn is_empty(s: &&str) -> bool {
    s.is_empty()
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

fn is_unknown(billable: &i64) -> bool {
    *billable == -1
}

fn is_no_cost(cost: &f64) -> bool {
    *cost == 0.0
}

/// [`StoredRow`]'s fields beyond [`COLUMNS`].
const BOOKKEEPING: [&str; 2] = ["version", "updated_ms"];

/// Every column a [`StoredRow`] names, in the table's order (checked at start).
pub(super) static STORED_COLUMNS: std::sync::LazyLock<Vec<&'static str>> =
    std::sync::LazyLock::new(|| {
        let (first, appended) = COLUMNS.split_at(BEFORE_BOOKKEEPING);
        first
            .iter()
            .chain(&BOOKKEEPING)
            .chain(appended)
            .copied()
            .collect()
    });

/// The write-back of [`StoredRow`]s.
pub(super) static WRITE_BACK: std::sync::LazyLock<json_rows::WriteBack> =
    std::sync::LazyLock::new(|| json_rows::WriteBack {
        table: "outbound_messages",
        key: &["provider", "message_id"],
        keep: &["first_seen_ms"],
        defaults: &DEFAULTS,
        columns: &STORED_COLUMNS,
    });

static WRITE: Statement = Statement::new(|backend| json_rows::single(backend, &WRITE_BACK));

/// The rows [`save_many`] writes: each with the version it gives its row.
pub(super) fn stored_rows<'a>(
    messages: &[(&'a MessageState, Option<i64>)],
    now_ms: i64,
) -> Vec<StoredRow<'a>> {
    messages
        .iter()
        .map(|(m, read)| StoredRow::new(m, json_rows::written_version(*read), now_ms))
        .collect()
}

/// Writes messages back in one statement whatever the batch size; a row changed or
/// created (or on Postgres deleted) since it was read is a lost race (see
/// [`json_rows::write_back`]).
pub async fn save_many(
    conn: &mut AnyConnection,
    messages: &[(&MessageState, Option<i64>)],
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let rows = stored_rows(messages, now_ms);
    json_rows::write_back(conn, "outbound_messages", &WRITE, &rows, &STORED_COLUMNS).await
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn from_row(r: &AnyRow) -> Result<MessageState, sqlx::Error> {
    let text = |name: &str| r.try_get::<String, _>(name);
    let int = |name: &str| r.try_get::<i64, _>(name);
    let decode_err =
        |what: &str| sqlx::Error::Decode(format!("unknown {what} in outbound_messages").into());
    let provider = Provider::parse(&text("provider")?).ok_or_else(|| decode_err("provider"))?;
    let channel = Channel::parse(&text("channel")?).ok_or_else(|| decode_err("channel"))?;
    let hook = (int("hook_seen")? == 1).then(|| -> Result<Hook, sqlx::Error> {
        Ok(Hook {
            is_template: int("is_template")? == 1,
            template: text("template_name")?,
            category: Category::parse(&text("category")?),
            sent_at_ms: int("sent_at_ms")?,
            segments: u32::try_from(int("hook_segments")?).unwrap_or(1),
        })
    });
    let pricing = (int("has_pricing")? == 1).then(|| -> Result<MetaPricing, sqlx::Error> {
        Ok(MetaPricing {
            kind: non_empty(text("pricing_type")?),
            category: non_empty(text("pricing_category")?),
            billable: match int("pricing_billable")? {
                -1 => None,
                b => Some(b == 1),
            },
        })
    });
    let error_code = text("error_code")?;
    let error = (!error_code.is_empty()).then(|| -> Result<MessageError, sqlx::Error> {
        Ok(MessageError {
            code: error_code.clone(),
            title: text("error_title")?,
            message: text("error_message")?,
            details: text("error_details")?,
        })
    });
    let labels = (int("label_fixed")? == 1).then(|| -> Result<Labels, sqlx::Error> {
        Ok(Labels {
            template: text("label_template")?,
            category: Category::parse(&text("label_category")?),
        })
    });
    Ok(MessageState {
        provider,
        message_id: text("message_id")?,
        channel,
        phone: non_empty(text("phone")?).map(Phone::from_stored),
        hook: hook.transpose()?,
        first_seen_ms: int("first_seen_ms")?,
        seen: StatusSet::from_bits(int("seen_mask")?),
        counted: StatusSet::from_bits(int("counted_mask")?),
        times: [
            int("accepted_ms")?,
            int("sent_ms")?,
            int("delivered_ms")?,
            int("read_ms")?,
            int("failed_ms")?,
        ],
        pricing: pricing.transpose()?,
        error: error.transpose()?,
        labels: labels.transpose()?,
        window_open_at_send: int("window_open_at_send")? == 1,
        observed: Observed(int("observed_mask")?),
        cost: r.try_get("cost")?,
        cost_category: Category::parse(&text("cost_category")?),
        currency: text("currency")?,
        reservation_id: text("reservation_id")?,
        segments: u32::try_from(int("segments")?).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::{StoredRow, DEFAULTS, STORED_COLUMNS};
    use crate::domain::message::MessageState;
    use crate::domain::{Channel, Provider};
    use crate::store::json_rows::{field_names, sorted};

    #[test]
    fn a_stored_row_names_the_columns_the_statements_write_leaving_out_defaults() {
        let m = MessageState::new(Provider::Meta, "wamid.x".into(), Channel::Whatsapp, 1);
        let all = &*STORED_COLUMNS;
        let defaulted: Vec<&str> = DEFAULTS.iter().map(|(c, _)| *c).collect();
        assert!(defaulted.iter().all(|c| all.contains(c)), "{defaulted:?}");
        let rest: Vec<&str> = all
            .iter()
            .filter(|c| !defaulted.contains(c))
            .copied()
            .collect();
        // A new message holds every default: only the other columns are sent.
        assert_eq!(field_names(&StoredRow::new(&m, 0, 1)), sorted(&rest));
        // A row holding no default sends them all.
        let full = StoredRow {
            phone: "+5511999990000",
            hook_seen: 1,
            is_template: 1,
            template_name: "promo",
            category: "marketing",
            sent_at_ms: 5,
            reservation_id: "r",
            seen_mask: 1,
            counted_mask: 1,
            observed_mask: 1,
            accepted_ms: 1,
            sent_ms: 1,
            delivered_ms: 1,
            read_ms: 1,
            failed_ms: 1,
            pricing_type: "regular",
            pricing_category: "marketing",
            pricing_billable: 1,
            has_pricing: 1,
            error_code: "131047",
            error_title: "t",
            error_message: "m",
            error_details: "d",
            label_fixed: 1,
            label_template: "promo",
            label_category: "marketing",
            window_open_at_send: 1,
            cost: 0.01,
            cost_category: "marketing",
            currency: "USD",
            version: 1,
            hook_segments: 2,
            segments: 2,
            ..StoredRow::new(&m, 0, 1)
        };
        assert_eq!(field_names(&full), sorted(all));
    }
}
