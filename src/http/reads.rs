//! What the dashboard reads that no operations service covers: the run
//! log, the registry for the chart's picker, and the newest 1m bar. Tasks,
//! alerts, quality and the quarantine come from [`crate::ops`], the
//! services `barkeep status`, `alerts`, `quality` and `quarantine` print, so
//! the page and the command line cannot disagree. Bind parameters
//! throughout; only what `barkeep_reader` may read.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use tokio_postgres::Client;

/// Newest 1m bar per registered symbol, one index probe each.
pub(crate) const NEWEST_1M: &str = "SELECT r.canonical_symbol,
       (SELECT d.ts_utc FROM data_bars d
        WHERE d.canonical_symbol = r.canonical_symbol AND d.timeframe = '1m'
        ORDER BY d.ts_utc DESC LIMIT 1) AS latest_1m
  FROM core_asset_registry_all r";

/// The newest 1m bar of any registered symbol.
pub async fn newest_1m(client: &Client) -> Result<Option<DateTime<Utc>>> {
    Ok(client
        .query_one(&format!("SELECT max(latest_1m) FROM ({NEWEST_1M}) n"), &[])
        .await
        .context("finding the newest 1m bar")?
        .get(0))
}

/// One run of the run log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunView {
    pub id: i64,
    pub symbol: String,
    pub timeframe: String,
    pub worker_id: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_seconds: Option<f64>,
    pub status: String,
    pub cursor_from: Option<DateTime<Utc>>,
    pub cursor_to: Option<DateTime<Utc>>,
    pub bars_created: i32,
    pub bars_quality_poor: i32,
    pub fail_kind: Option<String>,
    pub error: Option<String>,
}

/// The newest `limit` runs of `agg_run_log`, newest first.
pub async fn runs(client: &Client, limit: i64) -> Result<Vec<RunView>> {
    let rows = client
        .query(
            "SELECT id, canonical_symbol, timeframe, worker_id, started_at, finished_at,
                    extract(epoch FROM finished_at - started_at)::float8, status, cursor_from,
                    cursor_to, bars_created, bars_quality_poor, fail_kind, left(error, 200)
             FROM agg_run_log ORDER BY id DESC LIMIT $1",
            &[&limit],
        )
        .await
        .context("reading the run log")?;
    Ok(rows
        .iter()
        .map(|r| RunView {
            id: r.get(0),
            symbol: r.get(1),
            timeframe: r.get(2),
            worker_id: r.get(3),
            started_at: r.get(4),
            finished_at: r.get(5),
            duration_seconds: r.get(6),
            status: r.get(7),
            cursor_from: r.get(8),
            cursor_to: r.get(9),
            bars_created: r.get(10),
            bars_quality_poor: r.get(11),
            fail_kind: r.get(12),
            error: r.get(13),
        })
        .collect())
}

/// A registered instrument, for the chart's picker.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SymbolView {
    pub symbol: String,
    pub asset_class: String,
    pub active: bool,
}

/// Every registered instrument.
pub async fn symbols(client: &Client) -> Result<Vec<SymbolView>> {
    let rows = client
        .query(
            "SELECT canonical_symbol, asset_class, active FROM core_asset_registry_all ORDER BY 1",
            &[],
        )
        .await
        .context("reading the asset registry")?;
    Ok(rows
        .iter()
        .map(|r| SymbolView {
            symbol: r.get(0),
            asset_class: r.get(1),
            active: r.get(2),
        })
        .collect())
}
