//! The settings document (`/v1/config`), one row.

use sqlx::{AnyConnection, Row};

use super::Db;
use crate::domain::settings::Settings;

/// Loads the stored settings, storing the defaults first when there are none.
pub async fn load_or_init(db: &Db, now_ms: i64) -> anyhow::Result<Settings> {
    let defaults = serde_json::to_string(&Settings::default())?;
    sqlx::query("INSERT INTO settings (id, document, updated_ms) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING")
        .bind(defaults)
        .bind(now_ms)
        .execute(db.pool())
        .await?;
    load(db).await
}

pub async fn load(db: &Db) -> anyhow::Result<Settings> {
    let row = sqlx::query("SELECT document FROM settings WHERE id = 1")
        .fetch_one(db.pool())
        .await?;
    let doc: String = row.try_get(0)?;
    Ok(serde_json::from_str(&doc)?)
}

pub async fn save(db: &Db, settings: &Settings, now_ms: i64) -> anyhow::Result<()> {
    sqlx::query("UPDATE settings SET document = $1, updated_ms = $2 WHERE id = 1")
        .bind(serde_json::to_string(settings)?)
        .bind(now_ms)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// The stored settings and their version (bumped by every change).
pub async fn load_versioned(db: &Db) -> anyhow::Result<(Settings, i64)> {
    let row = sqlx::query("SELECT document, version FROM settings WHERE id = 1")
        .fetch_one(db.pool())
        .await?;
    let doc: String = row.try_get(0)?;
    Ok((serde_json::from_str(&doc)?, row.try_get(1)?))
}

/// Reads the settings and their version inside a write transaction, locking the row
/// (the no-op update takes the row lock on Postgres) so that concurrent
/// `PUT /v1/config` calls merge one after the other instead of losing each other's
/// changes.
pub async fn lock(conn: &mut AnyConnection) -> Result<(Settings, i64), sqlx::Error> {
    let row = sqlx::query(
        "UPDATE settings SET updated_ms = updated_ms WHERE id = 1 RETURNING document, version",
    )
    .fetch_one(conn)
    .await?;
    let doc: String = row.try_get(0)?;
    let settings = serde_json::from_str(&doc).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok((settings, row.try_get(1)?))
}

/// Stores a changed document, returning its new version.
pub async fn write(
    conn: &mut AnyConnection,
    settings: &Settings,
    now_ms: i64,
) -> Result<i64, sqlx::Error> {
    let doc = serde_json::to_string(settings).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "UPDATE settings SET document = $1, updated_ms = $2, version = version + 1 \
         WHERE id = 1 RETURNING version",
    )
    .bind(doc)
    .bind(now_ms)
    .fetch_one(conn)
    .await?
    .try_get(0)
}
