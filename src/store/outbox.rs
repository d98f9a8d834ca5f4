//! The relay's outbox (CONTRACT §7; the table is explained in its migration). Rows go in
//! with the events of their webhook ([`insert`], in the ledger's transaction) and the
//! relay worker claims, settles and ages them out.

use sqlx::{AnyConnection, Row};

use super::Backend;
use crate::relay::{Target, Webhook};

/// Stores `webhook` to be relayed, unless a byte-identical one came after `dedupe_from_ms`
/// (then it was, or is being, relayed already).
pub async fn insert(
    conn: &mut AnyConnection,
    webhook: &Webhook,
    dedupe_from_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO relay_outbox (target, body_hash, body, content_type, signature, \
         path_suffix, received_ms, next_attempt_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
         ON CONFLICT (target, body_hash) DO UPDATE SET body = excluded.body, \
         content_type = excluded.content_type, signature = excluded.signature, \
         path_suffix = excluded.path_suffix, received_ms = excluded.received_ms, \
         delivered_ms = 0, attempts = 0, next_attempt_ms = excluded.next_attempt_ms, \
         lease_owner = '', lease_until_ms = 0 \
         WHERE relay_outbox.received_ms < $8",
    )
    .bind(webhook.target.as_str())
    .bind(webhook.body_hash())
    .bind(webhook.body.clone())
    .bind(&webhook.content_type)
    .bind(&webhook.signature)
    .bind(&webhook.path_suffix)
    .bind(webhook.received_ms)
    .bind(dedupe_from_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// A waiting webhook this replica has leased for one attempt.
#[derive(Debug)]
pub struct Claimed {
    pub webhook: Webhook,
    pub body_hash: String,
    /// Attempts made before this one.
    pub attempts: i64,
}

/// Leases up to `limit` of `target`'s due webhooks to `owner` until `lease_until_ms`,
/// oldest first. On Postgres replicas skip each other's locked rows; a lease that ran
/// out (its replica died mid-attempt) is taken over.
pub async fn claim(
    conn: &mut AnyConnection,
    backend: Backend,
    target: Target,
    owner: &str,
    now_ms: i64,
    lease_until_ms: i64,
    limit: i64,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let skip_locked = match backend {
        Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let sql = format!(
        "UPDATE relay_outbox SET lease_owner = $1, lease_until_ms = $2 \
         WHERE target = $3 AND delivered_ms = 0 AND lease_until_ms <= $4 \
         AND body_hash IN (SELECT body_hash FROM relay_outbox WHERE target = $3 \
           AND delivered_ms = 0 AND next_attempt_ms <= $4 AND lease_until_ms <= $4 \
           ORDER BY received_ms LIMIT $5 {skip_locked}) \
         RETURNING body_hash, body, content_type, signature, path_suffix, received_ms, attempts"
    );
    let rows = sqlx::query(&sql)
        .bind(owner)
        .bind(lease_until_ms)
        .bind(target.as_str())
        .bind(now_ms)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    let mut claimed = rows
        .iter()
        .map(|r| {
            Ok(Claimed {
                body_hash: r.try_get(0)?,
                webhook: Webhook {
                    target,
                    body: r.try_get(1)?,
                    content_type: r.try_get(2)?,
                    signature: r.try_get(3)?,
                    path_suffix: r.try_get(4)?,
                    received_ms: r.try_get(5)?,
                },
                attempts: r.try_get(6)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    claimed.sort_by_key(|c| c.webhook.received_ms);
    Ok(claimed)
}

/// How an attempt ended: delivered at a time, or to be tried again at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    Delivered { at_ms: i64 },
    Retry { at_ms: i64 },
}

/// Records how `owner`'s attempt at a claimed webhook ended, and ends its lease.
pub async fn settle(
    conn: &mut AnyConnection,
    claimed: &Claimed,
    owner: &str,
    settled: Settled,
) -> Result<(), sqlx::Error> {
    let (delivered_ms, next_attempt_ms) = match settled {
        Settled::Delivered { at_ms } => (at_ms, at_ms),
        Settled::Retry { at_ms } => (0, at_ms),
    };
    sqlx::query(
        "UPDATE relay_outbox SET delivered_ms = $1, next_attempt_ms = $2, \
         attempts = attempts + 1, lease_owner = '', lease_until_ms = 0 \
         WHERE target = $3 AND body_hash = $4 AND lease_owner = $5",
    )
    .bind(delivered_ms)
    .bind(next_attempt_ms)
    .bind(claimed.webhook.target.as_str())
    .bind(&claimed.body_hash)
    .bind(owner)
    .execute(conn)
    .await?;
    Ok(())
}

/// Drops `target`'s waiting webhooks received before `before_ms` (not leased), returning
/// how many: they are past `--relay-max-age-hours`.
pub async fn expire(
    conn: &mut AnyConnection,
    target: Target,
    before_ms: i64,
    now_ms: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM relay_outbox WHERE target = $1 AND delivered_ms = 0 \
         AND received_ms < $2 AND lease_until_ms <= $3",
    )
    .bind(target.as_str())
    .bind(before_ms)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes delivered webhooks received before `before_ms`: a redelivery past the dedupe
/// window is relayed again anyway.
pub async fn forget_delivered(
    conn: &mut AnyConnection,
    before_ms: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM relay_outbox WHERE delivered_ms > 0 AND received_ms < $1")
        .bind(before_ms)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}

/// Per target: webhooks waiting, and the receipt time of the oldest (`None`: none wait).
pub async fn backlog(pool: &sqlx::AnyPool) -> Result<Vec<(Target, i64, Option<i64>)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT target, COUNT(*), MIN(received_ms) FROM relay_outbox \
         WHERE delivered_ms = 0 GROUP BY target",
    )
    .fetch_all(pool)
    .await?;
    let mut out: Vec<(Target, i64, Option<i64>)> =
        Target::ALL.iter().map(|t| (*t, 0, None)).collect();
    for r in rows {
        let target: String = r.try_get(0)?;
        if let Some(slot) = out.iter_mut().find(|(t, _, _)| t.as_str() == target) {
            slot.1 = r.try_get(1)?;
            slot.2 = r.try_get(2)?;
        }
    }
    Ok(out)
}
