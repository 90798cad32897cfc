//! `barkeep status` as a service: every task with its state, cursor, lag,
//! minutes since its last success, streaks and last error, plus the size and
//! newest entries of the ingest quarantine. The dashboard shows the same report.

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Duration, Utc};
use tokio_postgres::Client;

use super::history::{self, HistorySummary};
use super::instant;
use super::left_out::{self, LeftOut};
use super::quarantine::{self, QuarantineSummary};
use crate::model::calendar::bucket_end;
use crate::model::{Calendar, Symbol, Timeframe};

/// Longest last error a status line carries (the table holds it whole).
const ERROR_CHARS: usize = 120;

/// The states a task can be in (`data_agg_state.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Idle,
    Running,
    HardFailed,
    Disabled,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Idle => "idle",
            TaskState::Running => "running",
            TaskState::HardFailed => "hard_failed",
            TaskState::Disabled => "disabled",
        }
    }

    /// Parse a state name as users type it (`hard-failed` works too).
    pub fn parse(raw: &str) -> Result<Self> {
        Ok(
            match raw.trim().to_ascii_lowercase().replace('-', "_").as_str() {
                "idle" => TaskState::Idle,
                "running" => TaskState::Running,
                "hard_failed" => TaskState::HardFailed,
                "disabled" => TaskState::Disabled,
                _ => {
                    bail!("unknown task status {raw:?}: use idle, running, hard_failed or disabled")
                }
            },
        )
    }
}

/// Which tasks to report.
#[derive(Debug, Clone, Default)]
pub struct StatusSettings {
    pub symbol: Option<Symbol>,
    pub timeframe: Option<Timeframe>,
    pub status: Option<TaskState>,
    /// How many of the newest quarantine entries to include.
    pub quarantine_newest: i64,
}

/// One task as an operator sees it. Its instants are written by
/// [`instant`]: a report of 6,000 tasks holds 30,000 of them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskStatus {
    pub symbol: String,
    pub timeframe: String,
    pub status: String,
    pub enabled: bool,
    pub is_mandatory: bool,
    pub priority: i32,
    #[serde(serialize_with = "instant::serialize_opt")]
    pub agg_start_utc: Option<DateTime<Utc>>,
    /// Start of the next bucket to finalize.
    #[serde(serialize_with = "instant::serialize_opt")]
    pub cursor: Option<DateTime<Utc>>,
    /// The symbol's newest 1m bar.
    #[serde(serialize_with = "instant::serialize_opt")]
    pub latest_1m: Option<DateTime<Utc>>,
    /// The checklist's lag: newest 1m bar minus the cursor, in minutes.
    pub lag_minutes: Option<f64>,
    /// How long the data has held the bucket at the cursor complete
    /// (newest 1m bar's end minus that bucket's end), in minutes; 0 when the
    /// task has finalized everything its data allows by the clock of the feed.
    pub behind_minutes: Option<f64>,
    #[serde(serialize_with = "instant::serialize")]
    pub next_run_at: DateTime<Utc>,
    #[serde(serialize_with = "instant::serialize_opt")]
    pub last_successful_at: Option<DateTime<Utc>>,
    pub minutes_since_success: Option<f64>,
    pub hard_fail_streak: i32,
    pub transient_fail_streak: i32,
    /// The last error, on one line and shortened.
    pub last_error: Option<String>,
    pub total_runs: i64,
    pub total_bars_created: i64,
}

impl TaskStatus {
    /// Whether an operator should look at this task.
    pub fn is_bad(&self) -> bool {
        self.status == "hard_failed" || self.hard_fail_streak > 0 || self.last_error.is_some()
    }
}

/// What `barkeep status` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatusReport {
    /// The database's clock when the report was made.
    pub now: DateTime<Utc>,
    pub tasks: Vec<TaskStatus>,
    /// Tasks in the database before any filter (0 means `barkeep sync` is next).
    pub tasks_in_database: i64,
    pub quarantine: QuarantineSummary,
    /// History kept for as-of reads (`barkeep history prune` or `run
    /// --keep-history-days` bounds it).
    pub history: HistorySummary,
    /// 1m rows before a pinned start, which no bar covers.
    pub left_out: Vec<LeftOut>,
}

/// Each symbol with a task (the one bound as `$1`, or all when it is null)
/// and its newest 1m bar: one backward index probe per symbol, not per
/// task, six times fewer. `/metrics` reads the same.
pub(crate) const NEWEST_1M_OF_TASKS: &str = "SELECT y.canonical_symbol,
       (SELECT b.ts_utc FROM data_bars b
        WHERE b.canonical_symbol = y.canonical_symbol AND b.timeframe = '1m'
        ORDER BY b.ts_utc DESC LIMIT 1) AS latest_1m
  FROM (SELECT DISTINCT canonical_symbol FROM data_agg_state
        WHERE ($1::text IS NULL OR canonical_symbol = $1)) y";

fn minutes(d: Duration) -> f64 {
    (d.num_milliseconds() as f64 / 60_000.0 * 100.0).round() / 100.0
}

/// Every task matching the settings, in symbol and ladder order.
pub async fn tasks(
    client: &Client,
    settings: &StatusSettings,
) -> Result<(DateTime<Utc>, Vec<TaskStatus>)> {
    crate::migrate::require_migrated(client).await?;
    let symbol = settings.symbol.as_ref().map(Symbol::as_str);
    let timeframe = settings.timeframe.map(Timeframe::as_str);
    let status = settings.status.map(TaskState::as_str);
    let now: DateTime<Utc> = client
        .query_one("SELECT now()", &[])
        .await
        .context("reading the database clock")?
        .get(0);
    let rows = client
        .query(
            &format!(
                "WITH newest AS MATERIALIZED ({NEWEST_1M_OF_TASKS})
             SELECT s.canonical_symbol, s.timeframe, coalesce(r.asset_class, 'crypto'), s.status,
                    s.enabled, s.is_mandatory, s.task_priority, s.agg_start_utc,
                    s.last_agg_bar_ts_utc, s.next_run_at, s.last_successful_at_utc,
                    s.hard_fail_streak, s.transient_fail_streak, s.last_error, s.total_runs,
                    s.total_bars_created, n.latest_1m
             FROM data_agg_state s
             LEFT JOIN core_asset_registry_all r ON r.canonical_symbol = s.canonical_symbol
             JOIN newest n ON n.canonical_symbol = s.canonical_symbol
             WHERE ($1::text IS NULL OR s.canonical_symbol = $1)
               AND ($2::text IS NULL OR s.timeframe = $2)
               AND ($3::text IS NULL OR s.status = $3)"
            ),
            &[&symbol, &timeframe, &status],
        )
        .await
        .context("reading data_agg_state")?;
    let mut tasks = Vec::with_capacity(rows.len());
    for r in rows {
        let tf_name: String = r.get(1);
        let class: String = r.get(2);
        let cursor: Option<DateTime<Utc>> = r.get(8);
        let latest: Option<DateTime<Utc>> = r.get(16);
        let last_success: Option<DateTime<Utc>> = r.get(10);
        let behind = match (Timeframe::parse(&tf_name), cursor, latest) {
            (Ok(tf), Some(c), Some(l)) if tf != Timeframe::M1 => {
                let end = bucket_end(Calendar::for_asset_class(&class), tf, c);
                Some(minutes(
                    (l + Duration::minutes(1) - end).max(Duration::zero()),
                ))
            }
            _ => None,
        };
        let last_error: Option<String> = r.get(13);
        tasks.push(TaskStatus {
            symbol: r.get(0),
            timeframe: tf_name,
            status: r.get(3),
            enabled: r.get(4),
            is_mandatory: r.get(5),
            priority: r.get(6),
            agg_start_utc: r.get(7),
            cursor,
            latest_1m: latest,
            lag_minutes: cursor.zip(latest).map(|(c, l)| minutes(l - c)),
            behind_minutes: behind,
            next_run_at: r.get(9),
            last_successful_at: last_success,
            minutes_since_success: last_success.map(|t| minutes(now - t)),
            hard_fail_streak: r.get(11),
            transient_fail_streak: r.get(12),
            last_error: last_error.map(|e| super::shorten(&e, ERROR_CHARS)),
            total_runs: r.get(14),
            total_bars_created: r.get(15),
        });
    }
    // Ladder ranks parsed once per task, not once per comparison (6,000
    // tasks make some 150,000 comparisons), and positions sorted rather than
    // the tasks themselves, which are some 300 bytes each.
    let ranks: Vec<i32> = tasks
        .iter()
        .map(|t| {
            Timeframe::parse(&t.timeframe)
                .map(Timeframe::rank)
                .unwrap_or(99)
        })
        .collect();
    let mut order: Vec<usize> = (0..tasks.len()).collect();
    order.sort_unstable_by(|&a, &b| {
        let (ta, tb) = (&tasks[a], &tasks[b]);
        ta.symbol
            .cmp(&tb.symbol)
            .then(ranks[a].cmp(&ranks[b]))
            .then(ta.timeframe.cmp(&tb.timeframe))
    });
    let mut slots: Vec<Option<TaskStatus>> = tasks.into_iter().map(Some).collect();
    Ok((now, order.iter().filter_map(|&i| slots[i].take()).collect()))
}

/// The whole status report.
pub async fn status(client: &Client, settings: &StatusSettings) -> Result<StatusReport> {
    let (now, tasks) = tasks(client, settings).await?;
    let tasks_in_database: i64 = client
        .query_one("SELECT count(*) FROM data_agg_state", &[])
        .await
        .context("counting tasks")?
        .get(0);
    let quarantine = quarantine::summary(client, settings.quarantine_newest).await?;
    let history = history::summary(client).await?;
    let symbol = settings.symbol.as_ref().map(|s| s.as_str());
    let left_out = left_out::left_out(client, symbol).await?;
    Ok(StatusReport {
        now,
        tasks,
        tasks_in_database,
        quarantine,
        history,
        left_out,
    })
}
