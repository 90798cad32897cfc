//! What the dashboard and `/api/alerts` show about the tasks: status, lag
//! and streaks, the checklist's alert conditions, quality per timeframe,
//! the recent run log and the quarantine. All the queries live here, in
//! one place, so they can be swapped for the operations services
//! (`barkeep status`, `alerts`, `quality`) once those exist; they read only
//! what `barkeep_reader` may read, with bind parameters throughout.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use tokio_postgres::Client;

/// Newest 1m bar per registered symbol, one index probe each.
pub(crate) const NEWEST_1M: &str = "SELECT r.canonical_symbol,
       (SELECT d.ts_utc FROM data_bars d
        WHERE d.canonical_symbol = r.canonical_symbol AND d.timeframe = '1m'
        ORDER BY d.ts_utc DESC LIMIT 1) AS latest_1m
  FROM core_asset_registry_all r";

/// Ladder order of a timeframe in SQL, for sorting.
const TF_ORDER: &str = "array_position(ARRAY['5m','15m','1h','4h','1d','1w'], s.timeframe)";

/// Filters of the task list.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub symbol: Option<String>,
    pub timeframe: Option<String>,
    pub status: Option<String>,
}

/// One task as the dashboard shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskView {
    pub symbol: String,
    pub timeframe: String,
    pub source_timeframe: String,
    pub status: String,
    pub enabled: bool,
    pub is_mandatory: bool,
    pub priority: i32,
    /// Start of the next bucket to finalize.
    pub cursor: Option<DateTime<Utc>>,
    pub next_run_at: DateTime<Utc>,
    pub last_successful_at: Option<DateTime<Utc>>,
    pub latest_1m: Option<DateTime<Utc>>,
    /// Newest 1m bar minus the cursor (the checklist's lag), never negative.
    pub lag_seconds: Option<f64>,
    pub seconds_since_success: Option<f64>,
    pub hard_fail_streak: i32,
    pub transient_fail_streak: i32,
    /// The last error, shortened to 200 characters.
    pub last_error: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub total_runs: i64,
    pub total_bars_created: i64,
    pub total_bars_quality_poor: i64,
    pub aggregation_delay_seconds: i32,
}

/// Every task matching the filter, by symbol then ladder order.
pub async fn tasks(client: &Client, filter: &TaskFilter) -> Result<Vec<TaskView>> {
    let sql = format!(
        "WITH newest AS ({NEWEST_1M})
         SELECT s.canonical_symbol, s.timeframe, s.source_timeframe, s.status, s.enabled,
                s.is_mandatory, s.task_priority, s.last_agg_bar_ts_utc, s.next_run_at,
                s.last_successful_at_utc, n.latest_1m,
                greatest(0, extract(epoch FROM n.latest_1m - s.last_agg_bar_ts_utc))::float8,
                extract(epoch FROM now() - s.last_successful_at_utc)::float8,
                s.hard_fail_streak, s.transient_fail_streak, left(s.last_error, 200),
                s.lease_owner, s.lease_expires_at, s.total_runs, s.total_bars_created,
                s.total_bars_quality_poor, s.aggregation_delay_seconds
         FROM data_agg_state s LEFT JOIN newest n ON n.canonical_symbol = s.canonical_symbol
         WHERE ($1::text IS NULL OR s.canonical_symbol = $1)
           AND ($2::text IS NULL OR s.timeframe = $2)
           AND ($3::text IS NULL OR s.status = $3)
         ORDER BY s.canonical_symbol, {TF_ORDER}"
    );
    let rows = client
        .query(&sql, &[&filter.symbol, &filter.timeframe, &filter.status])
        .await
        .context("reading the tasks")?;
    Ok(rows
        .iter()
        .map(|r| TaskView {
            symbol: r.get(0),
            timeframe: r.get(1),
            source_timeframe: r.get(2),
            status: r.get(3),
            enabled: r.get(4),
            is_mandatory: r.get(5),
            priority: r.get(6),
            cursor: r.get(7),
            next_run_at: r.get(8),
            last_successful_at: r.get(9),
            latest_1m: r.get(10),
            lag_seconds: r.get(11),
            seconds_since_success: r.get(12),
            hard_fail_streak: r.get(13),
            transient_fail_streak: r.get(14),
            last_error: r.get(15),
            lease_owner: r.get(16),
            lease_expires_at: r.get(17),
            total_runs: r.get(18),
            total_bars_created: r.get(19),
            total_bars_quality_poor: r.get(20),
            aggregation_delay_seconds: r.get(21),
        })
        .collect())
}

/// How bad an alert is (Nagios' warning and critical).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Critical,
}

/// One alert condition met by one task.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Alert {
    /// `lag`, `hard_failed`, `fail_streak`, `stalled` or `lease_expired`.
    pub condition: &'static str,
    pub severity: Severity,
    pub symbol: String,
    pub timeframe: String,
    pub detail: String,
}

/// Minutes a due task may wait unclaimed before the workers count as stalled.
pub const STALLED_MINUTES: i32 = 10;

/// The checklist's three alert conditions (no success for over an hour on a
/// mandatory task, a hard_failed task, a hard-fail streak) plus stalled
/// workers (a task due and unclaimed for [`STALLED_MINUTES`]) and leases
/// that expired without being recovered. Critical first.
pub async fn alerts(client: &Client) -> Result<Vec<Alert>> {
    let rows = client
        .query(
            "SELECT s.canonical_symbol, s.timeframe, s.status, s.hard_fail_streak,
                    left(s.last_error, 200),
                    s.is_mandatory AND s.enabled
                      AND now() - s.last_successful_at_utc > interval '1 hour',
                    round((extract(epoch FROM now() - s.last_successful_at_utc) / 60)::numeric, 1)::float8,
                    s.enabled AND s.status = 'idle'
                      AND s.next_run_at < now() - make_interval(mins => $1),
                    round((extract(epoch FROM now() - s.next_run_at) / 60)::numeric, 1)::float8,
                    s.status = 'running' AND s.lease_expires_at < now(),
                    s.lease_owner
             FROM data_agg_state s
             WHERE s.status IN ('hard_failed', 'running') OR s.hard_fail_streak > 0
                OR (s.is_mandatory AND s.enabled AND now() - s.last_successful_at_utc > interval '1 hour')
                OR (s.enabled AND s.status = 'idle' AND s.next_run_at < now() - make_interval(mins => $1))
             ORDER BY s.canonical_symbol, array_position(ARRAY['5m','15m','1h','4h','1d','1w'], s.timeframe)",
            &[&STALLED_MINUTES],
        )
        .await
        .context("evaluating the alert conditions")?;
    let mut out = Vec::new();
    for r in &rows {
        let symbol: String = r.get(0);
        let timeframe: String = r.get(1);
        let status: String = r.get(2);
        let streak: i32 = r.get(3);
        let error: Option<String> = r.get(4);
        let mut push = |condition, severity, detail: String| {
            out.push(Alert {
                condition,
                severity,
                symbol: symbol.clone(),
                timeframe: timeframe.clone(),
                detail,
            })
        };
        if r.get::<_, Option<bool>>(5).unwrap_or(false) {
            let idle: Option<f64> = r.get(6);
            push(
                "lag",
                Severity::Critical,
                format!(
                    "no successful run for {} minutes",
                    idle.map(|m| m.to_string()).unwrap_or_else(|| "?".into())
                ),
            );
        }
        if status == "hard_failed" {
            push(
                "hard_failed",
                Severity::Critical,
                format!(
                    "hard_failed after {streak} failures: {}",
                    error.clone().unwrap_or_default()
                ),
            );
        }
        if streak > 0 {
            push(
                "fail_streak",
                Severity::Warning,
                format!(
                    "hard_fail_streak {streak}: {}",
                    error.clone().unwrap_or_default()
                ),
            );
        }
        if r.get::<_, Option<bool>>(7).unwrap_or(false) {
            let waited: Option<f64> = r.get(8);
            push(
                "stalled",
                Severity::Critical,
                format!(
                    "due and unclaimed for {} minutes: is a worker running?",
                    waited.map(|m| m.to_string()).unwrap_or_else(|| "?".into())
                ),
            );
        }
        if r.get::<_, Option<bool>>(9).unwrap_or(false) {
            let owner: Option<String> = r.get(10);
            push(
                "lease_expired",
                Severity::Warning,
                format!(
                    "lease of {} expired and not yet recovered",
                    owner.unwrap_or_else(|| "an unknown worker".into())
                ),
            );
        }
    }
    out.sort_by_key(|a| std::cmp::Reverse(a.severity));
    Ok(out)
}

/// Quality of one timeframe's bars over a window.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QualityView {
    pub timeframe: String,
    pub bars: i64,
    /// quality_score >= 1 (the checklist's "good").
    pub good: i64,
    /// quality_score <= 0.
    pub poor: i64,
    /// 100 × good / bars, None without bars.
    pub quality_pct: Option<f64>,
}

/// The window and the per-timeframe quality in it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QualityReport {
    /// Bars starting at or after this instant count.
    pub since: Option<DateTime<Utc>>,
    pub days: i32,
    pub timeframes: Vec<QualityView>,
}

/// The checklist's daily quality query per timeframe, over the `days` days
/// before the newest 1m bar (so a database fed from history reads as well
/// as a live one). One index range scan per symbol and timeframe.
pub async fn quality(client: &Client, days: i32) -> Result<QualityReport> {
    let since: Option<DateTime<Utc>> = client
        .query_one(
            &format!("SELECT max(latest_1m) - make_interval(days => $1) FROM ({NEWEST_1M}) n"),
            &[&days],
        )
        .await
        .context("finding the newest 1m bar")?
        .get(0);
    let Some(since) = since else {
        return Ok(QualityReport {
            since: None,
            days,
            timeframes: Vec::new(),
        });
    };
    let rows = client
        .query(
            "SELECT tf.timeframe, sum(q.total)::bigint, sum(q.good)::bigint, sum(q.poor)::bigint
             FROM core_asset_registry_all r
             CROSS JOIN unnest(ARRAY['5m','15m','1h','4h','1d','1w']) WITH ORDINALITY AS tf (timeframe, n)
             CROSS JOIN LATERAL (
               SELECT count(*) AS total,
                      count(*) FILTER (WHERE d.quality_score >= 1) AS good,
                      count(*) FILTER (WHERE d.quality_score <= 0) AS poor
               FROM derived_data_bars d
               WHERE d.canonical_symbol = r.canonical_symbol AND d.timeframe = tf.timeframe
                 AND d.deleted_at IS NULL AND d.ts_utc >= $1) q
             GROUP BY tf.timeframe, tf.n ORDER BY tf.n",
            &[&since],
        )
        .await
        .context("reading bar quality")?;
    let timeframes = rows
        .iter()
        .map(|r| {
            let bars: i64 = r.get::<_, Option<i64>>(1).unwrap_or(0);
            let good: i64 = r.get::<_, Option<i64>>(2).unwrap_or(0);
            QualityView {
                timeframe: r.get(0),
                bars,
                good,
                poor: r.get::<_, Option<i64>>(3).unwrap_or(0),
                quality_pct: (bars > 0)
                    .then(|| (1000.0 * good as f64 / bars as f64).round() / 10.0),
            }
        })
        .collect();
    Ok(QualityReport {
        since: Some(since),
        days,
        timeframes,
    })
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

/// Quarantined rows of one symbol.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QuarantineCount {
    pub symbol: Option<String>,
    pub rows: i64,
    pub newest: DateTime<Utc>,
}

/// One quarantined row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QuarantineEntry {
    pub file: String,
    pub line: i64,
    pub symbol: Option<String>,
    pub reason: String,
    pub quarantined_at: DateTime<Utc>,
}

/// The quarantine's size per symbol and its newest entries.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QuarantineReport {
    pub total: i64,
    pub by_symbol: Vec<QuarantineCount>,
    pub newest: Vec<QuarantineEntry>,
}

/// Counts per symbol and the 10 newest quarantined rows.
pub async fn quarantine(client: &Client) -> Result<QuarantineReport> {
    let counts = client
        .query(
            "SELECT canonical_symbol, count(*), max(quarantined_at) FROM ingest_quarantine
             GROUP BY canonical_symbol ORDER BY count(*) DESC",
            &[],
        )
        .await
        .context("counting the quarantine")?;
    let by_symbol: Vec<QuarantineCount> = counts
        .iter()
        .map(|r| QuarantineCount {
            symbol: r.get(0),
            rows: r.get(1),
            newest: r.get(2),
        })
        .collect();
    let newest = client
        .query(
            "SELECT file, line, canonical_symbol, reason, quarantined_at FROM ingest_quarantine
             ORDER BY id DESC LIMIT 10",
            &[],
        )
        .await
        .context("reading the quarantine")?
        .iter()
        .map(|r| QuarantineEntry {
            file: r.get(0),
            line: r.get(1),
            symbol: r.get(2),
            reason: r.get(3),
            quarantined_at: r.get(4),
        })
        .collect();
    Ok(QuarantineReport {
        total: by_symbol.iter().map(|c| c.rows).sum(),
        by_symbol,
        newest,
    })
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
