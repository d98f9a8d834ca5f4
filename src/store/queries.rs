//! Read-only queries behind the query APIs (`/v1/sessions`, `/v1/costs`, `/v1/errors`,
//! `/v1/overview`) and the pre-send check. Plain reads: no locks, no transaction.
//!
//! Postgres makes `SUM(bigint)` NUMERIC, which the `Any` driver cannot decode, so every
//! sum is cast back to BIGINT or DOUBLE PRECISION.

use std::collections::HashMap;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::domain::cooldown::Slot;
use crate::domain::session::SessionState;
use crate::domain::window::{Window, WINDOW_MS};
use crate::store::json_rows::{self, Statement};
use crate::store::reservations;

/// When a message's cost was counted: its delivery, or its read when no delivery came, or
/// its send (SMS is charged once sent).
pub(super) const CHARGED_MS: &str =
    "(CASE WHEN delivered_ms > 0 THEN delivered_ms WHEN read_ms > 0 THEN read_ms ELSE sent_ms END)";
/// Messages whose cost was counted with cost tracking on (`Observed::COST` and a currency).
pub(super) const CHARGED: &str = "(observed_mask & 4) <> 0 AND currency <> ''";
/// When an outbound message went out, for "last N days".
const SENT_MS: &str = "(CASE WHEN sent_at_ms > 0 THEN sent_at_ms ELSE first_seen_ms END)";

pub const DAY_MS: i64 = 86_400_000;

const SESSION_COLUMNS: &str =
    "phone, window_started_ms, last_inbound_ms, pending_inbound_ms, user_messages, business_messages";

fn session_from(r: &AnyRow) -> Result<SessionState, sqlx::Error> {
    Ok(SessionState {
        phone: r.try_get(0)?,
        window_started_ms: r.try_get(1)?,
        last_inbound_ms: r.try_get(2)?,
        pending_inbound_ms: r.try_get(3)?,
        user_messages: r.try_get(4)?,
        business_messages: r.try_get(5)?,
    })
}

pub async fn session(
    conn: &mut AnyConnection,
    phone: &str,
) -> Result<Option<SessionState>, sqlx::Error> {
    let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE phone = $1");
    let row = sqlx::query(&sql).bind(phone).fetch_optional(conn).await?;
    row.as_ref().map(session_from).transpose()
}

static PRESEND_STATES: Statement = Statement::new(|backend| {
    format!(
        "SELECT v.phone, COALESCE(s.last_inbound_ms, 0), COALESCE({}, 0), \
         COALESCE(c.hold_ms, 0) FROM {} \
         LEFT JOIN sessions s ON s.phone = v.phone LEFT JOIN cooldowns c ON c.phone = v.phone",
        reservations::last_template("c"),
        json_rows::source(backend, "sessions", &["phone"])
    )
});

/// What pre-send checks read, for many phones in one round trip: each phone's window
/// (closed without a session row) and cooldown slot (free without a cooldown row). Run
/// on [`crate::store::Db::keyed`], so that it is planned as lookups by key.
pub async fn presend_states(
    conn: &mut AnyConnection,
    phones: &[&str],
) -> Result<HashMap<String, (Window, Slot)>, sqlx::Error> {
    let rows = PRESEND_STATES
        .over(conn, &json_rows::phone_keys(phones))
        .fetch_all(&mut *conn)
        .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for row in rows {
        let window = Window {
            last_inbound_ms: row.try_get(1)?,
        };
        let slot = Slot {
            last_template_ms: row.try_get(2)?,
            hold_ms: row.try_get(3)?,
        };
        out.insert(row.try_get(0)?, (window, slot));
    }
    Ok(out)
}

/// Windows open at `now_ms`, soonest expiry first, and how many there are in all.
pub async fn open_sessions(
    conn: &mut AnyConnection,
    now_ms: i64,
    limit: i64,
    offset: i64,
) -> Result<(Vec<SessionState>, i64), sqlx::Error> {
    let since = now_ms - WINDOW_MS;
    let total: i64 = sqlx::query(
        "SELECT COUNT(*) FROM sessions WHERE last_inbound_ms > $1 AND last_inbound_ms <= $2",
    )
    .bind(since)
    .bind(now_ms)
    .fetch_one(&mut *conn)
    .await?
    .try_get(0)?;
    let sql = format!(
        "SELECT {SESSION_COLUMNS} FROM sessions WHERE last_inbound_ms > $1 AND last_inbound_ms <= $2 \
         ORDER BY last_inbound_ms, phone LIMIT $3 OFFSET $4"
    );
    let rows = sqlx::query(&sql)
        .bind(since)
        .bind(now_ms)
        .bind(limit)
        .bind(offset)
        .fetch_all(conn)
        .await?;
    let items = rows.iter().map(session_from).collect::<Result<_, _>>()?;
    Ok((items, total))
}

/// Count and cost of one group of charged messages.
#[derive(Clone, Debug, PartialEq)]
pub struct CostGroup {
    /// Category, template or day number (days since the epoch, as text).
    pub key: String,
    pub messages: i64,
    pub cost: f64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct CostReport {
    pub messages: i64,
    pub cost: f64,
    pub by_category: Vec<CostGroup>,
    pub by_template: Vec<CostGroup>,
    pub by_day: Vec<CostGroup>,
}

async fn cost_groups(
    conn: &mut AnyConnection,
    key: &str,
    filter: &str,
    binds: &[&dyn BindValue],
) -> Result<Vec<CostGroup>, sqlx::Error> {
    let sql = format!(
        "SELECT {key} AS k, COUNT(*), CAST(COALESCE(SUM(cost), 0) AS DOUBLE PRECISION) \
         FROM outbound_messages WHERE {CHARGED} AND {filter} GROUP BY k ORDER BY k"
    );
    let mut q = sqlx::query(&sql);
    for b in binds {
        q = b.bind_to(q);
    }
    let rows = q.fetch_all(conn).await?;
    rows.iter()
        .map(|r| {
            let key = match r.try_get::<String, _>(0) {
                Ok(s) => s,
                Err(_) => r.try_get::<i64, _>(0)?.to_string(),
            };
            Ok(CostGroup {
                key,
                messages: r.try_get(1)?,
                cost: r.try_get(2)?,
            })
        })
        .collect()
}

/// A value bound to a query; lets one helper serve filters with different parameters.
pub trait BindValue: Sync {
    fn bind_to<'q>(
        &'q self,
        q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;
}

impl BindValue for i64 {
    fn bind_to<'q>(
        &'q self,
        q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        q.bind(*self)
    }
}

impl BindValue for String {
    fn bind_to<'q>(
        &'q self,
        q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        q.bind(self.as_str())
    }
}

/// Cost of the messages charged in `[from_ms, to_ms)` in `currency`, by category,
/// template and UTC day (sums never mix currencies: SMS has its own).
pub async fn costs(
    conn: &mut AnyConnection,
    from_ms: i64,
    to_ms: i64,
    currency: &str,
) -> Result<CostReport, sqlx::Error> {
    let filter = format!("{CHARGED_MS} >= $1 AND {CHARGED_MS} < $2 AND currency = $3");
    let currency = currency.to_owned();
    let binds: [&dyn BindValue; 3] = [&from_ms, &to_ms, &currency];
    let by_category = cost_groups(conn, "cost_category", &filter, &binds).await?;
    let by_template = cost_groups(conn, "label_template", &filter, &binds).await?;
    let by_day = cost_groups(conn, &format!("({CHARGED_MS} / {DAY_MS})"), &filter, &binds).await?;
    Ok(CostReport {
        messages: by_category.iter().map(|g| g.messages).sum(),
        cost: by_category.iter().map(|g| g.cost).sum(),
        by_category,
        by_template,
        by_day,
    })
}

/// One phone's outbound messages by status and its charged cost.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PhoneTotals {
    pub outbound: i64,
    pub inbound: i64,
    pub sent: i64,
    pub delivered: i64,
    pub read: i64,
    pub failed: i64,
    pub charged: i64,
    pub cost: f64,
    pub by_category: Vec<CostGroup>,
}

/// `SUM(CASE WHEN counted_mask has <bit> …)` for each status bit, cast for the Any driver.
fn status_sums() -> String {
    ["2", "4", "8", "16"]
        .iter()
        .map(|bit| {
            format!(
                "CAST(COALESCE(SUM(CASE WHEN (counted_mask & {bit}) <> 0 THEN 1 ELSE 0 END), 0) AS BIGINT)"
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One phone's messages, and the cost of those charged in `currency`.
pub async fn phone_totals(
    conn: &mut AnyConnection,
    phone: &str,
    currency: &str,
) -> Result<PhoneTotals, sqlx::Error> {
    let sql = format!(
        "SELECT COUNT(*), {} FROM outbound_messages WHERE phone = $1",
        status_sums()
    );
    let r = sqlx::query(&sql).bind(phone).fetch_one(&mut *conn).await?;
    let inbound: i64 = sqlx::query("SELECT COUNT(*) FROM inbound_messages WHERE phone = $1")
        .bind(phone)
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?;
    let phone_owned = phone.to_owned();
    let currency = currency.to_owned();
    let by_category = cost_groups(
        conn,
        "cost_category",
        "phone = $1 AND currency = $2",
        &[&phone_owned, &currency],
    )
    .await?;
    Ok(PhoneTotals {
        outbound: r.try_get(0)?,
        inbound,
        sent: r.try_get(1)?,
        delivered: r.try_get(2)?,
        read: r.try_get(3)?,
        failed: r.try_get(4)?,
        charged: by_category.iter().map(|g| g.messages).sum(),
        cost: by_category.iter().map(|g| g.cost).sum(),
        by_category,
    })
}

/// A failed outbound message.
#[derive(Clone, Debug, PartialEq)]
pub struct FailedMessage {
    pub provider: String,
    pub channel: String,
    pub message_id: String,
    pub phone: String,
    pub template: String,
    pub category: String,
    pub failed_ms: i64,
    pub code: String,
    pub title: String,
    pub message: String,
    pub details: String,
}

pub async fn failed_messages(
    conn: &mut AnyConnection,
    limit: i64,
    offset: i64,
) -> Result<(Vec<FailedMessage>, i64), sqlx::Error> {
    let total: i64 =
        sqlx::query("SELECT COUNT(*) FROM outbound_messages WHERE (seen_mask & 16) <> 0")
            .fetch_one(&mut *conn)
            .await?
            .try_get(0)?;
    let rows = sqlx::query(
        "SELECT provider, channel, message_id, phone, template_name, category, failed_ms, \
         error_code, error_title, error_message, error_details FROM outbound_messages \
         WHERE (seen_mask & 16) <> 0 ORDER BY failed_ms DESC, provider, message_id LIMIT $1 OFFSET $2",
    )
    .bind(limit)
    .bind(offset)
    .fetch_all(conn)
    .await?;
    let items = rows
        .iter()
        .map(|r| {
            Ok(FailedMessage {
                provider: r.try_get(0)?,
                channel: r.try_get(1)?,
                message_id: r.try_get(2)?,
                phone: r.try_get(3)?,
                template: r.try_get(4)?,
                category: r.try_get(5)?,
                failed_ms: r.try_get(6)?,
                code: r.try_get(7)?,
                title: r.try_get(8)?,
                message: r.try_get(9)?,
                details: r.try_get(10)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok((items, total))
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overview {
    pub outbound: i64,
    pub inbound: i64,
    pub outbound_7d: i64,
    pub inbound_7d: i64,
    pub outbound_30d: i64,
    pub inbound_30d: i64,
    pub accepted: i64,
    pub sent: i64,
    pub delivered: i64,
    pub read: i64,
    pub failed: i64,
    pub active_sessions: i64,
    pub cost: f64,
}

async fn count(conn: &mut AnyConnection, sql: &str, bind: Option<i64>) -> Result<i64, sqlx::Error> {
    let mut q = sqlx::query(sql);
    if let Some(b) = bind {
        q = q.bind(b);
    }
    q.fetch_one(conn).await?.try_get(0)
}

/// Message totals, and the cost of those charged in `currency` (never summed across
/// currencies).
pub async fn overview(
    conn: &mut AnyConnection,
    now_ms: i64,
    currency: &str,
) -> Result<Overview, sqlx::Error> {
    let sql = format!(
        "SELECT COUNT(*), CAST(COALESCE(SUM(CASE WHEN (counted_mask & 1) <> 0 THEN 1 ELSE 0 END), 0) AS BIGINT), {} \
         FROM outbound_messages",
        status_sums()
    );
    let r = sqlx::query(&sql).fetch_one(&mut *conn).await?;
    let outbound_since = format!("SELECT COUNT(*) FROM outbound_messages WHERE {SENT_MS} >= $1");
    let inbound_since = "SELECT COUNT(*) FROM inbound_messages WHERE received_ms >= $1";
    let (d7, d30) = (now_ms - 7 * DAY_MS, now_ms - 30 * DAY_MS);
    let cost: f64 = sqlx::query(&format!(
        "SELECT CAST(COALESCE(SUM(cost), 0) AS DOUBLE PRECISION) FROM outbound_messages \
         WHERE {CHARGED} AND currency = $1"
    ))
    .bind(currency)
    .fetch_one(&mut *conn)
    .await?
    .try_get(0)?;
    Ok(Overview {
        outbound: r.try_get(0)?,
        accepted: r.try_get(1)?,
        sent: r.try_get(2)?,
        delivered: r.try_get(3)?,
        read: r.try_get(4)?,
        failed: r.try_get(5)?,
        inbound: count(conn, "SELECT COUNT(*) FROM inbound_messages", None).await?,
        outbound_7d: count(conn, &outbound_since, Some(d7)).await?,
        inbound_7d: count(conn, inbound_since, Some(d7)).await?,
        outbound_30d: count(conn, &outbound_since, Some(d30)).await?,
        inbound_30d: count(conn, inbound_since, Some(d30)).await?,
        active_sessions: count(
            conn,
            "SELECT COUNT(*) FROM sessions WHERE last_inbound_ms > $1",
            Some(now_ms - WINDOW_MS),
        )
        .await?,
        cost,
    })
}
