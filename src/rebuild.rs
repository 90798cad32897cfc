//! Recomputing derived bars on demand (`barkeep rebuild`): after a calendar
//! or ladder change, to repair, or to move a task's start earlier. The SQL
//! function `agg_rebuild` marks the range's buckets with a bumped
//! `derivation_version` (refusing bad calls before it writes anything);
//! `agg_process_dirty` then rewrites them and everything built from them.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use crate::engine::late::{process_dirty, LateReport};
use crate::model::{Symbol, Timeframe};

/// What to rebuild.
#[derive(Debug, Clone)]
pub struct RebuildSettings {
    pub symbol: Symbol,
    /// The lowest timeframe rebuilt; every timeframe built from it follows.
    pub timeframe: Timeframe,
    /// Default: the symbol's first 1m bar.
    pub from: Option<DateTime<Utc>>,
    /// Default: the task's cursor.
    pub to: Option<DateTime<Utc>>,
}

/// What a rebuild did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RebuildReport {
    pub symbol: String,
    pub timeframe: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub derivation_version: i32,
    pub buckets_marked: i64,
    /// The task's start moved back to `from`.
    pub start_moved: bool,
    #[serde(flatten)]
    pub late: LateReport,
}

/// The message of a database error alone (the one line users see).
pub(crate) fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

/// Mark and rewrite the range. A refused call changes nothing.
pub async fn rebuild(client: &Client, settings: &RebuildSettings) -> Result<RebuildReport> {
    let symbol = settings.symbol.as_str();
    let tf = settings.timeframe;
    anyhow::ensure!(
        tf != Timeframe::M1,
        "1m bars are the data itself; rebuild one of 5m, 15m, 1h, 4h, 1d, 1w"
    );
    let marked: serde_json::Value = client
        .query_one(
            "SELECT agg_rebuild($1, $2, $3, $4)",
            &[&symbol, &tf.as_str(), &settings.from, &settings.to],
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot rebuild {symbol} {tf}: {}", db_message(&e)))?
        .get(0);
    // Every field read, none defaulted: a missing one is an error.
    let marked: Marked =
        serde_json::from_value(marked).context("reading what agg_rebuild marked")?;
    let late = process_dirty(client, symbol).await?;
    Ok(RebuildReport {
        symbol: symbol.to_string(),
        timeframe: tf.as_str().to_string(),
        from: marked.from,
        to: marked.to,
        derivation_version: marked.derivation_version,
        buckets_marked: marked.buckets_marked,
        start_moved: marked.start_moved,
        late,
    })
}

/// What `agg_rebuild` marked.
#[derive(serde::Deserialize)]
struct Marked {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    derivation_version: i32,
    buckets_marked: i64,
    start_moved: bool,
}
