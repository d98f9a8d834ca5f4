//! The settings document (`/v1/config`), one row.

use sqlx::Row;

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
