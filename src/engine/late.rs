//! Late and corrected data on the fast path: the worker re-aggregates a
//! symbol's dirty buckets (recorded by the change-tracking triggers on
//! `data_bars`, docs/DESIGN.md "Late and corrected data") before catching
//! its tasks up, by calling the same SQL function a cron-only deployment
//! calls, `agg_process_dirty`. Late data is small; one set-based function
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
        let result: serde_json::Value = client
            .query_one("SELECT agg_process_dirty($1)", &[&symbol])
            .await
            .with_context(|| format!("re-aggregating late {symbol} data"))?
            .get(0);
        let per_tf: BTreeMap<String, LateCounts> =
            serde_json::from_value(result["timeframes"].clone())
                .context("reading what agg_process_dirty did")?;
        for (tf, c) in per_tf {
            let total = report.timeframes.entry(tf).or_default();
            total.buckets += c.buckets;
            total.bars_created += c.bars_created;
            total.bars_changed += c.bars_changed;
            total.bars_deleted += c.bars_deleted;
            total.bars_quality_poor += c.bars_quality_poor;
        }
        if result["continue"] != true {
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
