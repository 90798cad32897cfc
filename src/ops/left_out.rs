//! 1m rows before a pinned start (`sync --start`): the operator's start
//! leaves them out of every bar on purpose, so `status`, `alerts` and
//! `ingest` name them instead of ignoring them silently. A start taken from
//! the data needs none of this: older rows move it back by themselves
//! (docs/DESIGN.md "Where a task starts").

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use tokio_postgres::Client;

/// One symbol's 1m rows before its pinned start.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LeftOut {
    pub symbol: String,
    /// The pinned start.
    pub start: DateTime<Utc>,
    pub rows: i64,
    /// The earliest of them (`rebuild SYMBOL --from` it builds their bars).
    pub first: DateTime<Utc>,
}

impl LeftOut {
    /// What an alert says about them.
    pub fn message(&self) -> String {
        format!(
            "{} 1m rows from {} are before the pinned start {} and get no bars (`barkeep rebuild {} --from {}` builds them)",
            self.rows,
            self.first.format("%Y-%m-%d %H:%MZ"),
            self.start.format("%Y-%m-%d %H:%MZ"),
            self.symbol,
            self.first.format("%Y-%m-%dT%H:%M:%SZ"),
        )
    }

    /// The one line `status` and `ingest` print.
    pub fn line(&self) -> String {
        format!("{}: {}", self.symbol, self.message())
    }
}

/// The symbols (one, or all when `symbol` is None) with 1m rows before a
/// pinned start. A database before migration 0014 has no pinned start
/// (ingest serves it), hence the column read from the row's JSON.
pub async fn left_out(client: &Client, symbol: Option<&str>) -> Result<Vec<LeftOut>> {
    let rows = client
        .query(
            "SELECT p.sym, p.start, b.n, b.first
             FROM (SELECT s.canonical_symbol AS sym, max(s.agg_start_utc) AS start
                   FROM data_agg_state s
                   WHERE coalesce((to_jsonb(s) ->> 'agg_start_pinned')::boolean, false)
                     AND ($1::text IS NULL OR s.canonical_symbol = $1)
                   GROUP BY s.canonical_symbol) p
             CROSS JOIN LATERAL (
               SELECT count(*) AS n, min(d.ts_utc) AS first FROM data_bars d
               WHERE d.canonical_symbol = p.sym AND d.timeframe = '1m' AND d.ts_utc < p.start) b
             WHERE b.n > 0
             ORDER BY 1",
            &[&symbol],
        )
        .await
        .context("looking for 1m rows before pinned starts")?;
    Ok(rows
        .iter()
        .map(|r| LeftOut {
            symbol: r.get(0),
            start: r.get(1),
            rows: r.get(2),
            first: r.get(3),
        })
        .collect())
}
