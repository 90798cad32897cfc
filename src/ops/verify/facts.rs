//! What `barkeep verify` reads before it judges anything: the catalog (the
//! task table's columns, its claim index, the functions of the SQL face),
//! the tasks and the run log, and the answers of the checklist's Step 6
//! calls. Reading once and judging after keeps each check a small pure
//! function over these facts, and lets two checks share one read (the
//! task counts serve Step 5 and criteria 5 and 11).
//!
//! A read whose failure is itself a finding (a function that errors, a
//! run log that cannot be read) keeps the error text for its check; any
//! other failed read stops verify with the error.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use super::{CHECKLIST_FUNCTIONS, OTHER_DEFINER_FUNCTIONS};
use crate::migrate::{self, StepStatus};
use crate::model::calendar::agrees_with_symbol_start;
use crate::model::{Calendar, Timeframe};
use crate::ops::quality::{self, QualityReport, QualitySettings, Since};
use crate::ops::status::{self, StatusSettings, TaskStatus};

/// Everything the checks judge.
pub(super) struct Facts {
    /// Step 2: the checklist's three columns of `data_agg_state`.
    pub columns: Vec<Column>,
    /// The functions of the SQL face: every function under the name of a
    /// SECURITY DEFINER function of the schema, and under a name the
    /// checklist or docs/DESIGN.md requires (whether or not a definer).
    pub functions: Vec<Function>,
    /// Step 4: how many indexes named `idx_agg_state_due_priority` exist.
    pub claim_indexes: i64,
    pub tasks: TaskCounts,
    /// Disabled tasks whose asset is active ("SYMBOL tf").
    pub disabled_with_active_asset: Vec<String>,
    /// Disabled tasks in all.
    pub disabled: i64,
    /// (priority, tasks), most common first.
    pub priorities: Vec<(i32, i64)>,
    /// Step 6: each task's cursor as `agg_bootstrap_cursor` gives it.
    pub bootstrap: Result<Vec<Bootstrap>, String>,
    /// Step 6: how many tasks `agg_get_due_tasks` answers.
    pub due_tasks: Result<i64, String>,
    /// Step 6: (success, tasks_total) of the checklist's sync, rolled back.
    pub sync: Result<(bool, i32), String>,
    pub migrations: Vec<StepStatus>,
    /// Function files whose applied checksum is not the one this barkeep ships.
    pub stale_function_files: Vec<String>,
    /// Criterion 5: the starts of each symbol's tasks.
    pub starts: Vec<SymbolStarts>,
    /// Criterion 8: (logged runs, longest in seconds).
    pub runs: Result<(i64, Option<f64>), String>,
    /// Criterion 9: every task as `barkeep status` shows it.
    pub task_rows: Vec<TaskStatus>,
    /// Criterion 12: the quality of the newest 24 hours of data.
    pub quality: Option<QualityWindow>,
}

/// One column as information_schema describes it.
pub(super) struct Column {
    pub name: String,
    pub data_type: String,
    pub not_null: bool,
}

/// One row of pg_proc for a function of interest.
pub(super) struct Function {
    pub name: String,
    pub args: String,
    pub result: String,
    pub definer: bool,
    /// Trailing arguments with a default.
    pub defaults: i16,
    pub config: Vec<String>,
    pub public_execute: bool,
}

/// Counts over `data_agg_state`.
pub(super) struct TaskCounts {
    pub tasks: i64,
    pub null_start: i64,
    pub distinct_priorities: i64,
    pub hard_failed: i64,
    pub streaks: i64,
}

/// A task's start and the cursor `agg_bootstrap_cursor` gives it.
pub(super) struct Bootstrap {
    pub symbol: String,
    pub timeframe: String,
    pub asset_class: String,
    pub start: DateTime<Utc>,
    pub cursor: Option<DateTime<Utc>>,
}

/// The starts of one symbol's tasks.
pub(super) struct SymbolStarts {
    pub symbol: String,
    pub distinct_starts: i64,
    pub first: Option<DateTime<Utc>>,
    pub unset: i64,
    /// 1m bars before the symbol's start.
    pub bars_before: i64,
}

/// The window criterion 12 judges and what quality found in it.
pub(super) struct QualityWindow {
    pub end: DateTime<Utc>,
    pub now: DateTime<Utc>,
    pub settings: QualitySettings,
    pub report: QualityReport,
}

impl Facts {
    /// Read every fact. Nothing is written: Step 6's sync is rolled back.
    pub async fn read(client: &Client) -> Result<Self> {
        let columns = columns(client).await?;
        let functions = functions(client).await?;
        let claim_indexes = claim_indexes(client).await?;
        let tasks = task_counts(client).await?;
        let (disabled_with_active_asset, disabled) = disabled(client).await?;
        let priorities = priorities(client).await?;
        let bootstrap = bootstrap(client).await;
        let due_tasks = due_tasks(client).await;
        let sync = sync(client).await;
        let migrations = migrate::status(client).await?;
        let stale_function_files = stale_function_files(client).await;
        let starts = if tasks.tasks == 0 {
            Vec::new()
        } else {
            starts(client).await?
        };
        let runs = runs(client).await;
        let (_, task_rows) = status::tasks(client, &StatusSettings::default()).await?;
        let quality = quality_window(client).await?;
        Ok(Self {
            columns,
            functions,
            claim_indexes,
            tasks,
            disabled_with_active_asset,
            disabled,
            priorities,
            bootstrap,
            due_tasks,
            sync,
            migrations,
            stale_function_files,
            starts,
            runs,
            task_rows,
            quality,
        })
    }
}

async fn columns(client: &Client) -> Result<Vec<Column>> {
    let rows = client
        .query(
            "SELECT column_name::text, data_type::text, is_nullable::text
             FROM information_schema.columns
             WHERE table_name = 'data_agg_state'
               AND column_name IN ('agg_start_utc', 'enabled', 'task_priority')
             ORDER BY ordinal_position",
            &[],
        )
        .await
        .context("Step 2")?;
    Ok(rows
        .iter()
        .map(|r| Column {
            name: r.get(0),
            data_type: r.get(1),
            not_null: r.get::<_, String>(2) == "NO",
        })
        .collect())
}

/// The functions under the names of the schema's SECURITY DEFINER
/// functions, read from the catalog (an extension's own functions are not
/// barkeep's and are left out), and under every name that must exist.
async fn functions(client: &Client) -> Result<Vec<Function>> {
    let required: Vec<String> = CHECKLIST_FUNCTIONS
        .iter()
        .map(|(n, _)| n.to_string())
        .chain(OTHER_DEFINER_FUNCTIONS.iter().map(|n| n.to_string()))
        .collect();
    let rows = client
        .query(
            "WITH definers AS (
               SELECT p.proname FROM pg_proc p
               WHERE p.prosecdef AND p.pronamespace = current_schema()::regnamespace
                 AND NOT EXISTS (SELECT 1 FROM pg_depend d
                                 WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                                   AND d.deptype = 'e'))
             SELECT p.proname::text, oidvectortypes(p.proargtypes),
                    pg_get_function_result(p.oid), p.prosecdef, coalesce(p.proconfig, '{}'),
                    p.pronargdefaults,
                    EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                            WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')
             FROM pg_proc p
             WHERE p.pronamespace = current_schema()::regnamespace
               AND (p.proname = ANY($1) OR p.proname IN (SELECT proname FROM definers))
             ORDER BY p.proname, oidvectortypes(p.proargtypes)",
            &[&required],
        )
        .await
        .context("reading pg_proc")?;
    Ok(rows
        .iter()
        .map(|r| Function {
            name: r.get(0),
            args: r.get(1),
            result: r.get(2),
            definer: r.get(3),
            config: r.get(4),
            defaults: r.get(5),
            public_execute: r.get(6),
        })
        .collect())
}

async fn claim_indexes(client: &Client) -> Result<i64> {
    Ok(client
        .query_one(
            "SELECT count(*) FROM pg_indexes
             WHERE tablename = 'data_agg_state' AND indexname = 'idx_agg_state_due_priority'",
            &[],
        )
        .await
        .context("Step 4")?
        .get(0))
}

async fn task_counts(client: &Client) -> Result<TaskCounts> {
    let row = client
        .query_one(
            "SELECT count(*),
                    count(*) FILTER (WHERE agg_start_utc IS NULL),
                    count(DISTINCT task_priority),
                    count(*) FILTER (WHERE status = 'hard_failed'),
                    count(*) FILTER (WHERE hard_fail_streak > 0)
             FROM data_agg_state",
            &[],
        )
        .await
        .context("Step 5")?;
    Ok(TaskCounts {
        tasks: row.get(0),
        null_start: row.get(1),
        distinct_priorities: row.get(2),
        hard_failed: row.get(3),
        streaks: row.get(4),
    })
}

/// Disabled tasks of active assets, and disabled tasks in all (a task
/// parked by sync, its asset inactive, is disabled as designed).
async fn disabled(client: &Client) -> Result<(Vec<String>, i64)> {
    let rows = client
        .query(
            "SELECT s.canonical_symbol || ' ' || s.timeframe
             FROM data_agg_state s
             LEFT JOIN core_asset_registry_all r ON r.canonical_symbol = s.canonical_symbol
             WHERE NOT s.enabled AND r.active AND r.test_active
             ORDER BY 1",
            &[],
        )
        .await
        .context("Step 5: disabled tasks")?;
    let parked: i64 = client
        .query_one("SELECT count(*) FROM data_agg_state WHERE NOT enabled", &[])
        .await
        .context("Step 5: disabled tasks")?
        .get(0);
    Ok((rows.iter().map(|r| r.get(0)).collect(), parked))
}

async fn priorities(client: &Client) -> Result<Vec<(i32, i64)>> {
    let rows = client
        .query(
            "SELECT task_priority, count(*) FROM data_agg_state GROUP BY 1 ORDER BY 2 DESC, 1",
            &[],
        )
        .await
        .context("Step 5: priorities")?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

async fn bootstrap(client: &Client) -> Result<Vec<Bootstrap>, String> {
    let rows = client
        .query(
            "SELECT s.canonical_symbol, s.timeframe, coalesce(r.asset_class, 'crypto'), s.agg_start_utc,
                    agg_bootstrap_cursor(s.canonical_symbol, s.timeframe)
             FROM data_agg_state s
             LEFT JOIN core_asset_registry_all r ON r.canonical_symbol = s.canonical_symbol
             WHERE s.agg_start_utc IS NOT NULL
             ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(rows
        .iter()
        .map(|r| Bootstrap {
            symbol: r.get(0),
            timeframe: r.get(1),
            asset_class: r.get(2),
            start: r.get(3),
            cursor: r.get(4),
        })
        .collect())
}

async fn due_tasks(client: &Client) -> Result<i64, String> {
    client
        .query_one(
            "SELECT COUNT(*) FROM agg_get_due_tasks('prod', NOW(), 10, 10)",
            &[],
        )
        .await
        .map(|r| r.get(0))
        .map_err(|e| e.to_string())
}

/// The checklist's sync, in a transaction that is rolled back.
async fn sync(client: &Client) -> Result<(bool, i32), String> {
    let outcome = async {
        client.batch_execute("BEGIN").await?;
        let r = client
            .query_one(
                "SELECT success, tasks_total FROM sync_agg_state_from_registry('prod', '2025-07-01 00:00:00+00'::timestamptz)",
                &[],
            )
            .await;
        client.batch_execute("ROLLBACK").await?;
        r
    }
    .await;
    match outcome {
        Ok(r) => Ok((r.get(0), r.get(1))),
        Err(e) => {
            // Best effort: the connection may already be outside the
            // transaction; the error reported is the sync's own.
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e.to_string())
        }
    }
}

/// Function files whose applied checksum is not the one this barkeep ships
/// (all of them when the record of applied files cannot be read).
async fn stale_function_files(client: &Client) -> Vec<String> {
    let applied: BTreeMap<String, String> = match client
        .query("SELECT file, checksum FROM barkeep_schema_functions", &[])
        .await
    {
        Ok(rows) => rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        Err(_) => BTreeMap::new(),
    };
    migrate::FUNCTION_FILES
        .iter()
        .filter(|f| applied.get(f.name) != Some(&f.checksum()))
        .map(|f| f.name.to_string())
        .collect()
}

/// Each symbol's starts. The symbol's one start is its latest task start
/// (the 5m task's); a task agrees with it when its own start is that start
/// as given (a pinned or default start) or the start of its bucket holding
/// it (a start taken from the data: a 1w task starts on the Monday, or the
/// FX-clock Sunday, before the 5m task), as `sync_agg_state_from_registry`
/// sets them (`agg_symbol_start`). `distinct_starts` counts the symbol
/// starts the tasks imply.
async fn starts(client: &Client) -> Result<Vec<SymbolStarts>> {
    let rows = client
        .query(
            "SELECT s.canonical_symbol, coalesce(min(r.asset_class), 'crypto'),
                    array_agg(s.timeframe ORDER BY s.timeframe),
                    array_agg(s.agg_start_utc ORDER BY s.timeframe),
                    max(s.agg_start_utc),
                    count(*) FILTER (WHERE s.agg_start_utc IS NULL),
                    (SELECT count(*) FROM data_bars b WHERE b.canonical_symbol = s.canonical_symbol
                       AND b.timeframe = '1m' AND b.ts_utc < max(s.agg_start_utc))
             FROM data_agg_state s
             LEFT JOIN core_asset_registry_all r ON r.canonical_symbol = s.canonical_symbol
             GROUP BY s.canonical_symbol ORDER BY 1",
            &[],
        )
        .await
        .context("criterion 5")?;
    Ok(rows
        .iter()
        .map(|r| {
            let cal = Calendar::for_asset_class(r.get::<_, &str>(1));
            let timeframes: Vec<String> = r.get(2);
            let task_starts: Vec<Option<DateTime<Utc>>> = r.get(3);
            let first: Option<DateTime<Utc>> = r.get(4);
            let implied: BTreeSet<Option<DateTime<Utc>>> = timeframes
                .iter()
                .zip(task_starts)
                .filter(|(_, start)| start.is_some())
                .map(|(tf, start)| match (Timeframe::parse(tf), start, first) {
                    (Ok(tf), Some(task_start), Some(symbol_start))
                        if agrees_with_symbol_start(cal, tf, task_start, symbol_start) =>
                    {
                        first
                    }
                    _ => start,
                })
                .collect();
            SymbolStarts {
                symbol: r.get(0),
                distinct_starts: implied.len() as i64,
                first,
                unset: r.get(5),
                bars_before: r.get(6),
            }
        })
        .collect())
}

async fn runs(client: &Client) -> Result<(i64, Option<f64>), String> {
    client
        .query_one(
            "SELECT count(*), max(extract(epoch FROM finished_at - started_at))::float8
             FROM agg_run_log WHERE finished_at IS NOT NULL",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .map_err(|e| e.to_string())
}

/// Criterion 12's window: the 24 hours up to the newest 1m bar of the
/// tasks' symbols (up to now when the data is live); None without data.
async fn quality_window(client: &Client) -> Result<Option<QualityWindow>> {
    let (newest, now) = quality::newest_1m_and_now(client).await?;
    let Some(end) = newest.map(|n| (n + chrono::Duration::minutes(1)).min(now)) else {
        return Ok(None);
    };
    let settings = QualitySettings {
        since: Since::At(end - chrono::Duration::hours(24)),
        ..QualitySettings::default()
    };
    let report = quality::quality(client, &settings).await?;
    Ok(Some(QualityWindow {
        end,
        now,
        settings,
        report,
    }))
}
