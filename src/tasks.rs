//! Aggregation tasks from the operator's side: `sync` (one task per active
//! asset and ladder timeframe, through `sync_agg_state_from_registry`) and
//! the operator transitions enable, disable, re-enable, priority and delay,
//! each through its SQL function in `sql/functions/40_tasks.sql`.

use std::fmt;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use crate::model::{Env, Symbol, Timeframe};

/// What one sync did.
#[derive(Debug, serde::Serialize, PartialEq, Eq)]
pub struct SyncReport {
    pub success: bool,
    pub tasks_created: i32,
    pub tasks_enabled: i32,
    pub tasks_disabled: i32,
    pub tasks_total: i32,
}

/// Create, re-enable and park tasks so they match the registry of `env`.
/// New tasks start at `start` and new 5m tasks wait `delay` seconds for a
/// quiet feed; `None` takes the SQL function's default (the one default
/// lives there: docs/DESIGN.md, "Finality").
pub async fn sync(
    client: &Client,
    env: Env,
    start: Option<DateTime<Utc>>,
    delay: Option<i32>,
) -> Result<SyncReport> {
    let row = client
        .query_one(
            "SELECT success, tasks_created, tasks_enabled, tasks_disabled, tasks_total
             FROM sync_agg_state_from_registry($1, $2, $3)",
            &[&env.as_str(), &start, &delay],
        )
        .await
        .context(
            "syncing tasks from the registry (is the database migrated? run `barkeep db up`)",
        )?;
    Ok(SyncReport {
        success: row.get(0),
        tasks_created: row.get(1),
        tasks_enabled: row.get(2),
        tasks_disabled: row.get(3),
        tasks_total: row.get(4),
    })
}

/// Where the tasks of one asset that had none start.
#[derive(Debug, serde::Serialize)]
pub struct NewTaskStart {
    pub symbol: String,
    pub agg_start_utc: Option<DateTime<Utc>>,
    /// The asset's first stored 1m bar.
    pub first_1m: Option<DateTime<Utc>>,
    /// Stored 1m bars before the start, which its tasks will not aggregate.
    pub bars_left_out: i64,
}

/// What `barkeep sync` did, with where each new asset's tasks start.
#[derive(Debug, serde::Serialize)]
pub struct SyncOutcome {
    #[serde(flatten)]
    pub report: SyncReport,
    pub new_symbols: Vec<NewTaskStart>,
}

/// [`sync`], and for every asset that had no task before it, where its tasks
/// start and how many stored 1m bars that start leaves out (none without an
/// explicit start: the SQL function starts them at the first 1m bar).
pub async fn sync_reporting_starts(
    client: &Client,
    env: Env,
    start: Option<DateTime<Utc>>,
    delay: Option<i32>,
) -> Result<SyncOutcome> {
    crate::migrate::require_migrated(client).await?;
    let rows = client
        .query(
            "SELECT r.canonical_symbol FROM core_asset_registry_all r
             WHERE NOT EXISTS (SELECT 1 FROM data_agg_state s WHERE s.canonical_symbol = r.canonical_symbol)
             ORDER BY 1",
            &[],
        )
        .await
        .context("looking for assets without tasks")?;
    let fresh: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let report = sync(client, env, start, delay).await?;
    let rows = client
        .query(
            "SELECT s.canonical_symbol, max(s.agg_start_utc),
                    (SELECT min(b.ts_utc) FROM data_bars b
                     WHERE b.canonical_symbol = s.canonical_symbol AND b.timeframe = '1m'),
                    (SELECT count(*) FROM data_bars b
                     WHERE b.canonical_symbol = s.canonical_symbol AND b.timeframe = '1m'
                       AND b.ts_utc < max(s.agg_start_utc))
             FROM data_agg_state s WHERE s.canonical_symbol = ANY($1)
             GROUP BY s.canonical_symbol ORDER BY 1",
            &[&fresh],
        )
        .await
        .context("reading where the new tasks start")?;
    Ok(SyncOutcome {
        report,
        new_symbols: rows
            .iter()
            .map(|r| NewTaskStart {
                symbol: r.get(0),
                agg_start_utc: r.get(1),
                first_1m: r.get(2),
                bars_left_out: r.get(3),
            })
            .collect(),
    })
}

/// The tasks an operator action applies to: one symbol's, all of them or
/// one timeframe.
#[derive(Debug, Clone)]
pub struct TaskSelector {
    pub symbol: Symbol,
    pub timeframe: Option<Timeframe>,
}

impl fmt::Display for TaskSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.timeframe {
            Some(tf) => write!(f, "{} {tf}", self.symbol),
            None => write!(f, "{}", self.symbol),
        }
    }
}

/// An operator transition of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskAction {
    /// Let a disabled task run again.
    Enable,
    /// Stop a task from being claimed; a run in flight loses its lease.
    Disable,
    /// Put a hard_failed or disabled task back to idle, streaks cleared.
    Reenable,
    /// Set the claim priority (lower runs first).
    Priority(i32),
    /// Set how many seconds a task waits for a quiet feed before finalizing
    /// a bucket (`aggregation_delay_seconds`).
    Delay(i32),
}

/// Apply one operator action; returns how many tasks it changed.
pub async fn apply(client: &Client, target: &TaskSelector, action: TaskAction) -> Result<u64> {
    let symbol = target.symbol.as_str();
    let tf = target.timeframe.map(Timeframe::as_str);
    let row = match action {
        TaskAction::Enable => {
            client
                .query_one("SELECT agg_task_enable($1, $2)", &[&symbol, &tf])
                .await
        }
        TaskAction::Disable => {
            client
                .query_one("SELECT agg_task_disable($1, $2)", &[&symbol, &tf])
                .await
        }
        TaskAction::Reenable => {
            client
                .query_one("SELECT agg_task_reenable($1, $2)", &[&symbol, &tf])
                .await
        }
        TaskAction::Priority(p) => {
            client
                .query_one("SELECT agg_task_priority($1, $2, $3)", &[&symbol, &tf, &p])
                .await
        }
        TaskAction::Delay(seconds) => {
            client
                .query_one(
                    "SELECT agg_task_delay($1, $2, $3)",
                    &[&symbol, &tf, &seconds],
                )
                .await
        }
    }
    .map_err(|e| {
        // A worker frozen inside a chunk holds its task's row lock until its
        // session is ended; the SQL functions wait 5 s, never for ever.
        let locked = e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE);
        let err = anyhow::Error::new(e);
        if locked {
            err.context(format!(
                "a task of {target} is locked by a worker's open transaction (waited 5 s); \
                 retry in a moment: a frozen worker's session is ended once its lease has expired"
            ))
        } else {
            err.context(format!("updating the tasks of {target}"))
        }
    })?;
    let changed: i32 = row.get(0);
    if changed == 0 {
        bail!("no task of {target} matched; run `barkeep sync` after registering it");
    }
    Ok(changed as u64)
}
