//! `data_bars`, as the HTTP face reads it: the newest 1m bar.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use tokio_postgres::Client;

/// Newest 1m bar per registered symbol, one index probe each.
const NEWEST_1M: &str = "SELECT r.canonical_symbol,
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
