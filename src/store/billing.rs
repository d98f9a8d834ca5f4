//! The billed-cost worker's state (CONTRACT §9; the tables are explained in their
//! migration). Every change that leads to counting is conditional on the row being as
//! read, so whichever replica's statement changes it is the one that counts.

use sqlx::{AnyConnection, Row};

/// A message's final statuses (delivered, read, failed) in `seen_mask`.
const FINAL_STATUSES: i64 = 4 | 8 | 16;

/// Queues the Twilio messages that reached a final status, and the inbound ones received
/// (Twilio bills those too), since `since_ms` and not queued yet; returns how many were
/// added.
pub async fn enqueue_final(
    conn: &mut AnyConnection,
    since_ms: i64,
    now_ms: i64,
) -> Result<u64, sqlx::Error> {
    let inbound = sqlx::query(
        "INSERT INTO billing_lookups (provider, message_id, channel, category, charged_ms, \
         enqueued_ms, next_attempt_ms) \
         SELECT provider, message_id, channel, \
         CASE WHEN channel = 'sms' THEN 'sms' ELSE 'none' END, received_ms, $2, $2 \
         FROM inbound_messages WHERE provider = 'twilio' AND received_ms >= $1 \
         ON CONFLICT (provider, message_id) DO NOTHING",
    )
    .bind(since_ms)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    let outbound = sqlx::query(&format!(
        "INSERT INTO billing_lookups (provider, message_id, channel, category, charged_ms, \
         enqueued_ms, next_attempt_ms) \
         SELECT provider, message_id, channel, \
         CASE WHEN channel = 'sms' THEN 'sms' WHEN cost_category <> '' THEN cost_category \
         WHEN label_category <> '' THEN label_category ELSE 'none' END, \
         CASE WHEN delivered_ms > 0 THEN delivered_ms WHEN read_ms > 0 THEN read_ms \
         WHEN sent_ms > 0 THEN sent_ms ELSE failed_ms END, $2, $2 \
         FROM outbound_messages WHERE provider = 'twilio' AND updated_ms >= $1 \
         AND (seen_mask & {FINAL_STATUSES}) <> 0 \
         ON CONFLICT (provider, message_id) DO NOTHING"
    ))
    .bind(since_ms)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(inbound.rows_affected() + outbound.rows_affected())
}

/// A queued lookup this replica claimed for one attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct Lookup {
    pub provider: String,
    pub message_id: String,
    pub channel: String,
    pub category: String,
    pub enqueued_ms: i64,
    /// Attempts made before this one.
    pub attempts: i64,
}

/// Claims up to `limit` due lookups until `lease_until_ms`, soonest due first. A lookup
/// another replica claimed in between is skipped.
pub async fn claim_due(
    conn: &mut AnyConnection,
    now_ms: i64,
    lease_until_ms: i64,
    limit: i64,
) -> Result<Vec<Lookup>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT provider, message_id, channel, category, enqueued_ms, attempts, next_attempt_ms \
         FROM billing_lookups WHERE done_ms = 0 AND next_attempt_ms <= $1 \
         ORDER BY next_attempt_ms LIMIT $2",
    )
    .bind(now_ms)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let mut claimed = Vec::with_capacity(rows.len());
    for r in rows {
        let lookup = Lookup {
            provider: r.try_get(0)?,
            message_id: r.try_get(1)?,
            channel: r.try_get(2)?,
            category: r.try_get(3)?,
            enqueued_ms: r.try_get(4)?,
            attempts: r.try_get(5)?,
        };
        let due: i64 = r.try_get(6)?;
        let took = sqlx::query(
            "UPDATE billing_lookups SET next_attempt_ms = $1, attempts = attempts + 1 \
             WHERE provider = $2 AND message_id = $3 AND next_attempt_ms = $4 AND done_ms = 0",
        )
        .bind(lease_until_ms)
        .bind(&lookup.provider)
        .bind(&lookup.message_id)
        .bind(due)
        .execute(&mut *conn)
        .await?;
        if took.rows_affected() == 1 {
            claimed.push(lookup);
        }
    }
    Ok(claimed)
}

/// How a lookup ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Settle {
    /// Billed this much (positive) in `currency`: counted.
    Billed { price: f64, currency: String },
    /// Try again at this time.
    Retry { at_ms: i64 },
    /// Never to be known (past 24 h, or the message is not in the account).
    GiveUp,
}

/// Records how `lookup` ended; true when this call marked it done with a price, so the
/// caller counts it (false: another replica got there first, or nothing to count).
pub async fn settle(
    conn: &mut AnyConnection,
    lookup: &Lookup,
    how: &Settle,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    const KEY: &str = "WHERE provider = $1 AND message_id = $2 AND done_ms = 0";
    let sql = match how {
        Settle::Billed { .. } => {
            format!("UPDATE billing_lookups SET done_ms = $3, price = $4, currency = $5 {KEY}")
        }
        Settle::Retry { .. } => format!("UPDATE billing_lookups SET next_attempt_ms = $3 {KEY}"),
        Settle::GiveUp => format!("UPDATE billing_lookups SET done_ms = $3 {KEY}"),
    };
    let q = sqlx::query(&sql)
        .bind(&lookup.provider)
        .bind(&lookup.message_id);
    let q = match how {
        Settle::Billed { price, currency } => q.bind(now_ms).bind(*price).bind(currency.as_str()),
        Settle::Retry { at_ms } => q.bind(*at_ms),
        Settle::GiveUp => q.bind(now_ms),
    };
    let done = q.execute(conn).await?;
    Ok(done.rows_affected() == 1 && matches!(how, Settle::Billed { .. }))
}

/// Records Meta's latest figure for a day and pricing category; returns what it grew by
/// since the last figure recorded (the whole figure the first time), 0 when it did not
/// grow or another replica recorded it first.
pub async fn meta_day_growth(
    conn: &mut AnyConnection,
    day_ms: i64,
    category: &str,
    cost: f64,
    currency: &str,
    now_ms: i64,
) -> Result<f64, sqlx::Error> {
    let last: Option<f64> =
        sqlx::query("SELECT cost FROM billing_meta_days WHERE day_ms = $1 AND category = $2")
            .bind(day_ms)
            .bind(category)
            .fetch_optional(&mut *conn)
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
    let (sql, grew) = match last {
        None => (
            "INSERT INTO billing_meta_days (day_ms, category, cost, currency, updated_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (day_ms, category) DO NOTHING",
            cost,
        ),
        Some(last) if cost > last => (
            "UPDATE billing_meta_days SET cost = $3, currency = $4, updated_ms = $5 \
             WHERE day_ms = $1 AND category = $2 AND cost = $6",
            cost - last,
        ),
        Some(_) => return Ok(0.0),
    };
    let mut q = sqlx::query(sql)
        .bind(day_ms)
        .bind(category)
        .bind(cost)
        .bind(currency)
        .bind(now_ms);
    if let Some(last) = last {
        q = q.bind(last);
    }
    let done = q.execute(conn).await?;
    Ok(if done.rows_affected() == 1 { grew } else { 0.0 })
}
