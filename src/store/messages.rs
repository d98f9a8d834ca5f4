//! `outbound_messages`: one row per outbound message, read and written whole under a
//! row lock taken by a locking upsert.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::domain::category::Category;
use crate::domain::message::{Hook, Labels, MessageError, MessageState, Observed};
use crate::domain::phone::Phone;
use crate::domain::pricing::MetaPricing;
use crate::domain::status::StatusSet;
use crate::domain::{Channel, Provider};

const COLUMNS: &str = "provider, message_id, channel, phone, hook_seen, is_template, template_name, \
    category, sent_at_ms, reservation_id, first_seen_ms, seen_mask, counted_mask, observed_mask, \
    accepted_ms, sent_ms, delivered_ms, read_ms, failed_ms, pricing_type, pricing_category, \
    pricing_billable, has_pricing, error_code, error_title, error_message, error_details, \
    label_fixed, label_template, label_category, window_open_at_send, cost, cost_category, currency";

/// Rows per multi-row statement: well under SQLite's 32,766 bound parameters.
const CHUNK: usize = 200;

/// Creates each row if absent and locks it either way (the `DO UPDATE` takes the row lock
/// on Postgres; SQLite writers are already serialised), returning the current states.
/// Keys are locked in the order given: callers sort them, so that concurrent
/// transactions lock in one order and cannot deadlock on messages. (A locking read after
/// `DO NOTHING` measured slower than this no-op write: the bump touches no indexed
/// column, so Postgres keeps it a HOT update.)
pub async fn lock_or_create_many(
    conn: &mut AnyConnection,
    keys: &[(Provider, &str, Channel)],
    now_ms: i64,
) -> Result<Vec<MessageState>, sqlx::Error> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO outbound_messages (provider, message_id, channel, first_seen_ms, updated_ms) \
             VALUES {} ON CONFLICT (provider, message_id) DO UPDATE SET version = outbound_messages.version + 1 \
             RETURNING {COLUMNS}",
            placeholders(chunk.len(), 5)
        );
        let mut q = sqlx::query(&sql);
        for (provider, id, channel) in chunk {
            q = q
                .bind(provider.as_str())
                .bind(*id)
                .bind(channel.as_str())
                .bind(now_ms)
                .bind(now_ms);
        }
        for row in q.fetch_all(&mut *conn).await? {
            out.push(from_row(&row)?);
        }
    }
    Ok(out)
}

/// `($1, $2, …), ($k, …)` for `rows` rows of `cols` parameters.
pub fn placeholders(rows: usize, cols: usize) -> String {
    placeholders_after(0, rows, cols)
}

/// [`placeholders`] numbered from `$skip + 1`, for statements whose first parameters are
/// shared by every row.
pub fn placeholders_after(skip: usize, rows: usize, cols: usize) -> String {
    let mut s = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        s.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..cols {
            if c > 0 {
                s.push_str(", ");
            }
            s.push('$');
            s.push_str(&(skip + r * cols + c + 1).to_string());
        }
        s.push(')');
    }
    s
}

/// Locks a message that is still waiting for attribution; `None` if another replica
/// settled it first (or it is gone).
pub async fn lock_pending(
    conn: &mut AnyConnection,
    provider: &str,
    message_id: &str,
) -> Result<Option<MessageState>, sqlx::Error> {
    let sql = format!(
        "UPDATE outbound_messages SET version = version + 1 \
         WHERE provider = $1 AND message_id = $2 AND label_fixed = 0 RETURNING {COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(provider)
        .bind(message_id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Messages whose grace period ended before `cutoff_ms` with statuses still uncounted.
pub async fn pending_before(
    conn: &mut AnyConnection,
    cutoff_ms: i64,
    limit: i64,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT provider, message_id FROM outbound_messages \
         WHERE label_fixed = 0 AND first_seen_ms <= $1 AND seen_mask <> 0 \
         ORDER BY first_seen_ms LIMIT $2",
    )
    .bind(cutoff_ms)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Columns written back by [`save_many`]: all but the key and `first_seen_ms`.
const MUTABLE: [&str; 32] = [
    "channel",
    "phone",
    "hook_seen",
    "is_template",
    "template_name",
    "category",
    "sent_at_ms",
    "reservation_id",
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
    "updated_ms",
];

/// Writes messages back (rows locked earlier in the transaction) with one multi-row
/// upsert per chunk: a round trip per batch rather than per event.
pub async fn save_many(
    conn: &mut AnyConnection,
    messages: &[&MessageState],
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    for chunk in messages.chunks(CHUNK) {
        let cols = 3 + MUTABLE.len();
        let set: Vec<String> = MUTABLE
            .iter()
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        let sql = format!(
            "INSERT INTO outbound_messages (provider, message_id, first_seen_ms, {}) VALUES {} \
             ON CONFLICT (provider, message_id) DO UPDATE SET {}",
            MUTABLE.join(", "),
            placeholders(chunk.len(), cols),
            set.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for m in chunk {
            let hook = m.hook.as_ref();
            let pricing = m.pricing.as_ref();
            let error = m.error.as_ref();
            let labels = m.labels.as_ref();
            q = q
                .bind(m.provider.as_str())
                .bind(m.message_id.as_str())
                .bind(m.first_seen_ms)
                .bind(m.channel.as_str())
                .bind(m.phone.as_ref().map_or("", Phone::as_str))
                .bind(i64::from(hook.is_some()))
                .bind(i64::from(hook.is_some_and(|h| h.is_template)))
                .bind(hook.map_or("", |h| h.template.as_str()))
                .bind(hook.and_then(|h| h.category).map_or("", Category::as_str))
                .bind(hook.map_or(0, |h| h.sent_at_ms))
                .bind(m.reservation_id.as_str())
                .bind(m.seen.bits())
                .bind(m.counted.bits())
                .bind(m.observed.0)
                .bind(m.times[0])
                .bind(m.times[1])
                .bind(m.times[2])
                .bind(m.times[3])
                .bind(m.times[4])
                .bind(pricing.and_then(|p| p.kind.as_deref()).unwrap_or(""))
                .bind(pricing.and_then(|p| p.category.as_deref()).unwrap_or(""))
                .bind(pricing.and_then(|p| p.billable).map_or(-1, i64::from))
                .bind(i64::from(pricing.is_some()))
                .bind(error.map_or("", |e| e.code.as_str()))
                .bind(error.map_or("", |e| e.title.as_str()))
                .bind(error.map_or("", |e| e.message.as_str()))
                .bind(error.map_or("", |e| e.details.as_str()))
                .bind(i64::from(labels.is_some()))
                .bind(labels.map_or("", |l| l.template.as_str()))
                .bind(labels.and_then(|l| l.category).map_or("", Category::as_str))
                .bind(i64::from(m.window_open_at_send))
                .bind(m.cost)
                .bind(m.cost_category.map_or("", Category::as_str))
                .bind(m.currency.as_str())
                .bind(now_ms);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
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
    })
}

#[cfg(test)]
mod tests {
    use super::{placeholders, placeholders_after};

    #[test]
    fn placeholders_number_rows_of_parameters_in_order() {
        assert_eq!(placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(placeholders(1, 1), "($1)");
        assert_eq!(placeholders_after(1, 2, 2), "($2, $3), ($4, $5)");
    }
}
