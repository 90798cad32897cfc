//! The SQL face in the benchmark: every symbol's 5m bars built by
//! `catchup_aggregation_range` as a cron-only deployment calls it (500
//! windows a call, each call its own transaction, one connection), and the
//! bars compared with the ones the worker built.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use crate::model::Symbol;

/// Windows per call: the function's default, what a cron job passes.
const WINDOWS_PER_CALL: i32 = 500;

/// The columns that make a bar (what the two paths must agree on).
const BAR_COLUMNS: &str = "canonical_symbol, ts_utc, open, high, low, close, vol, vwap, \
     trade_count, source_timeframe, source_candles, expected_candles, quality_score, is_partial";

/// Keep the worker's 5m bars in `bench_worker_5m` for [`compare_with_worker`].
pub async fn keep_worker_5m(client: &Client) -> Result<()> {
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS bench_worker_5m;
             CREATE TABLE bench_worker_5m AS SELECT {BAR_COLUMNS} FROM derived_data_bars
             WHERE timeframe = '5m' AND deleted_at IS NULL"
        ))
        .await
        .context("keeping the worker's 5m bars")
}

/// Put every 5m task back at its first bucket with no bars, so the SQL face
/// starts from where the worker started.
pub async fn reset_5m(client: &Client) -> Result<()> {
    client
        .batch_execute(
            "TRUNCATE derived_data_bars, agg_dirty_buckets;
             SELECT agg_restart_tasks(NULL, ARRAY['5m'], NULL, true)",
        )
        .await
        .context("resetting the 5m tasks for the SQL face")
}

/// Catch every symbol's 5m task up through `catchup_aggregation_range`;
/// returns the seconds taken.
pub async fn catch_up_5m(client: &Client, symbols: &[Symbol]) -> Result<f64> {
    let t = Instant::now();
    for symbol in symbols {
        let symbol = symbol.as_str();
        let mut cursor: DateTime<Utc> = client
            .query_one(
                "SELECT last_agg_bar_ts_utc FROM data_agg_state
                 WHERE canonical_symbol = $1 AND timeframe = '5m'",
                &[&symbol],
            )
            .await
            .with_context(|| format!("reading the 5m cursor of {symbol}"))?
            .get(0);
        loop {
            let r: serde_json::Value = client
                .query_one(
                    "SELECT catchup_aggregation_range($1, '5m', $2, $3, now(), 1, false)",
                    &[&symbol, &cursor, &WINDOWS_PER_CALL],
                )
                .await
                .with_context(|| format!("catching up {symbol} 5m from {cursor}"))?
                .get(0);
            if r["success"] != serde_json::Value::Bool(true) {
                bail!("catchup_aggregation_range failed for {symbol} 5m at {cursor}: {r}");
            }
            let next = r["cursor_advanced_to"]
                .as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|d| d.with_timezone(&Utc))
                .with_context(|| format!("reading the new cursor of {symbol} 5m from {r}"))?;
            if r["continue"] != serde_json::Value::Bool(true) {
                break;
            }
            cursor = next;
        }
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Fail unless the SQL face's 5m bars equal the worker's kept ones.
pub async fn compare_with_worker(client: &Client) -> Result<i64> {
    let row = client
        .query_one(
            &format!(
                "WITH face AS (SELECT {BAR_COLUMNS} FROM derived_data_bars
                               WHERE timeframe = '5m' AND deleted_at IS NULL)
                 SELECT (SELECT count(*) FROM face),
                        (SELECT count(*) FROM (TABLE face EXCEPT ALL TABLE bench_worker_5m) a)
                      + (SELECT count(*) FROM (TABLE bench_worker_5m EXCEPT ALL TABLE face) b)"
            ),
            &[],
        )
        .await
        .context("comparing the SQL face's 5m bars with the worker's")?;
    let (bars, differing): (i64, i64) = (row.get(0), row.get(1));
    if differing != 0 {
        bail!("the SQL face's 5m bars differ from the worker's: {differing} rows in one but not the other");
    }
    client
        .batch_execute("DROP TABLE bench_worker_5m")
        .await
        .context("dropping the kept 5m bars")?;
    Ok(bars)
}
