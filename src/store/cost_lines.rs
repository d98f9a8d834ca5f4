//! Cost per UTC day, provider, category and currency, estimated and billed, for
//! `GET /v1/costs` (CONTRACT §9). Each line keeps its currency: currencies are never
//! summed together.

use std::collections::BTreeMap;

use sqlx::{AnyConnection, Row};

use super::queries::{CHARGED, CHARGED_MS, DAY_MS};

/// (day number since the epoch, provider, category, currency)
pub type LineKey = (i64, String, String, String);

/// Messages (`None` where the provider gives only a sum) and cost of one line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Line {
    pub messages: Option<i64>,
    pub cost: f64,
}

pub type Lines = BTreeMap<LineKey, Line>;

async fn add_lines(
    conn: &mut AnyConnection,
    sql: &str,
    from_ms: i64,
    to_ms: i64,
    counted: bool,
    out: &mut Lines,
) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(sql)
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(conn)
        .await?;
    for r in rows {
        let key = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
        let (n, cost): (i64, f64) = (r.try_get(4)?, r.try_get(5)?);
        let line = out.entry(key).or_default();
        if counted {
            line.messages = Some(line.messages.unwrap_or(0) + n);
        }
        line.cost += cost;
    }
    Ok(())
}

/// The estimate: outbound messages charged in `[from_ms, to_ms)` and inbound SMS
/// received in it.
pub async fn estimated(
    conn: &mut AnyConnection,
    from_ms: i64,
    to_ms: i64,
) -> Result<Lines, sqlx::Error> {
    let mut out = Lines::new();
    let outbound = format!(
        "SELECT {CHARGED_MS} / {DAY_MS}, provider, \
         CASE WHEN cost_category = '' THEN 'none' ELSE cost_category END, currency, \
         COUNT(*), CAST(COALESCE(SUM(cost), 0) AS DOUBLE PRECISION) FROM outbound_messages \
         WHERE {CHARGED} AND {CHARGED_MS} >= $1 AND {CHARGED_MS} < $2 GROUP BY 1, 2, 3, 4"
    );
    add_lines(&mut *conn, &outbound, from_ms, to_ms, true, &mut out).await?;
    let inbound = format!(
        "SELECT received_ms / {DAY_MS}, provider, 'sms', currency, COUNT(*), \
         CAST(COALESCE(SUM(cost), 0) AS DOUBLE PRECISION) FROM inbound_messages \
         WHERE currency <> '' AND received_ms >= $1 AND received_ms < $2 GROUP BY 1, 2, 3, 4"
    );
    add_lines(conn, &inbound, from_ms, to_ms, true, &mut out).await?;
    Ok(out)
}

/// The providers' figures: Twilio's prices of messages charged in `[from_ms, to_ms)`,
/// and Meta's days that overlap it.
pub async fn billed(
    conn: &mut AnyConnection,
    from_ms: i64,
    to_ms: i64,
) -> Result<Lines, sqlx::Error> {
    let mut out = Lines::new();
    let twilio = format!(
        "SELECT charged_ms / {DAY_MS}, provider, category, currency, COUNT(*), \
         CAST(COALESCE(SUM(price), 0) AS DOUBLE PRECISION) FROM billing_lookups \
         WHERE done_ms > 0 AND currency <> '' AND charged_ms >= $1 AND charged_ms < $2 \
         GROUP BY 1, 2, 3, 4"
    );
    add_lines(&mut *conn, &twilio, from_ms, to_ms, true, &mut out).await?;
    let meta = format!(
        "SELECT day_ms / {DAY_MS}, 'meta', category, currency, COUNT(*), \
         CAST(COALESCE(SUM(cost), 0) AS DOUBLE PRECISION) FROM billing_meta_days \
         WHERE day_ms + {DAY_MS} > $1 AND day_ms < $2 GROUP BY 1, 2, 3, 4"
    );
    add_lines(conn, &meta, from_ms, to_ms, false, &mut out).await?;
    Ok(out)
}
