//! `agg_run_log`, as the HTTP face reads it: the newest runs.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use tokio_postgres::Client;

/// One run of the run log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoggedRun {
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
pub async fn newest(client: &Client, limit: i64) -> Result<Vec<LoggedRun>> {
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
        .map(|r| LoggedRun {
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
