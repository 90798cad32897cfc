//! Late and corrected data on the fast path: the worker re-aggregates a
//! symbol's dirty buckets (recorded by the change-tracking triggers on
//! `data_bars`, docs/DESIGN.md "Late and corrected data") before catching
//! its tasks up, through the typed rows of `agg_process_dirty_rows`, the
//! function behind the `agg_process_dirty` a cron-only deployment calls. Late data is small; one set-based function
//! keeps a single implementation of the cascade.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use tokio_postgres::Client;

/// Buckets of one timeframe re-aggregated, and what happened to their bars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LateCounts {
    pub buckets: u64,
    pub bars_created: u64,
    pub bars_changed: u64,
    pub bars_deleted: u64,
    pub bars_quality_poor: u64,
}

/// What one symbol's re-aggregation did, per timeframe.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LateReport {
    pub timeframes: BTreeMap<String, LateCounts>,
}

impl LateReport {
    pub fn buckets(&self) -> u64 {
        self.timeframes.values().map(|c| c.buckets).sum()
    }
}

/// Calls of `agg_process_dirty` per run at most: each takes up to 100 000
/// buckets per timeframe, so this bounds one run, not the work.
const MAX_CALLS: usize = 50;

/// Re-aggregate every dirty bucket of `symbol` behind its task's cursor.
pub async fn process_dirty(client: &Client, symbol: &str) -> Result<LateReport> {
    let mut report = LateReport::default();
    for _ in 0..MAX_CALLS {
        let rows = client
            .query(
                "SELECT timeframe, buckets, bars_created, bars_changed, bars_deleted,
                        bars_quality_poor, more
                 FROM agg_process_dirty_rows($1)",
                &[&symbol],
            )
            .await
            .with_context(|| format!("re-aggregating late {symbol} data"))?;
        let mut more = false;
        for row in &rows {
            let tf: String = row.try_get("timeframe")?;
            let count = |name: &str| -> Result<u64> {
                let n: i32 = row
                    .try_get(name)
                    .with_context(|| format!("reading {name} of {symbol} {tf}"))?;
                u64::try_from(n).with_context(|| format!("{name} of {symbol} {tf} is {n}"))
            };
            let buckets = count("buckets")?;
            if buckets > 0 {
                let total = report.timeframes.entry(tf.clone()).or_default();
                total.buckets += buckets;
                total.bars_created += count("bars_created")?;
                total.bars_changed += count("bars_changed")?;
                total.bars_deleted += count("bars_deleted")?;
                total.bars_quality_poor += count("bars_quality_poor")?;
            }
            more |= row.try_get::<_, bool>("more")?;
        }
        if !more {
            break;
        }
    }
    if report.buckets() > 0 {
        tracing::info!(
            symbol,
            buckets = report.buckets(),
            "re-aggregated late data"
        );
    }
    Ok(report)
}
