//! Aggregation tasks from the operator's side: `barkeep sync` (one task per
//! active asset and ladder timeframe, through `sync_agg_state_from_registry`)
//! and `barkeep task enable|disable|reenable|priority`.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use tokio_postgres::Client;

use crate::assets::Symbol;
use crate::calendar::Timeframe;
use crate::cli::Global;

/// Which registry flag says an asset is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Env {
    /// `active`.
    Prod,
    /// `test_active`.
    Dev,
    /// `test_active`.
    Test,
}

impl Env {
    pub fn as_str(self) -> &'static str {
        match self {
            Env::Prod => "prod",
            Env::Dev => "dev",
            Env::Test => "test",
        }
    }
}

/// Default first bucket of new tasks.
pub const DEFAULT_START: &str = "2025-07-01T00:00:00Z";

/// Default `aggregation_delay_seconds` of new 5m tasks: a feed up to a
/// minute late still gets complete bars (docs/DESIGN.md, "Finality").
pub const DEFAULT_DELAY_SECONDS: i32 = 120;

/// Longest an operator command waits for a task row a worker has locked.
const OPERATOR_LOCK_TIMEOUT: &str = "5s";

/// Parse a start instant (see [`crate::calendar::parse_instant`]).
pub fn parse_start(raw: &str) -> Result<DateTime<Utc>> {
    crate::calendar::parse_instant(raw)
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Which registry flag decides what is active.
    #[arg(long, value_enum, default_value = "prod")]
    pub env: Env,
    /// First bucket of new tasks (RFC 3339 or a date). Without it each new
    /// symbol's tasks start at its first 1m bar, so no stored bar is left
    /// out (2025-07-01 for a symbol with no bar yet).
    #[arg(long, value_parser = parse_start)]
    pub start: Option<DateTime<Utc>>,
    /// Seconds new 5m tasks wait for a quiet feed before finalizing a bucket
    /// without its last minute (a bucket is final at once when 1m data at or
    /// after its last minute exists).
    #[arg(long, default_value_t = DEFAULT_DELAY_SECONDS, value_parser = clap::value_parser!(i32).range(0..=86_400))]
    pub delay: i32,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// What one sync did.
#[derive(Debug, serde::Serialize, PartialEq, Eq)]
pub struct SyncReport {
    pub success: bool,
    pub tasks_created: i32,
    pub tasks_enabled: i32,
    pub tasks_disabled: i32,
    pub tasks_total: i32,
}

/// Create, re-enable and park tasks so they match the registry of `env`;
/// new 5m tasks get `delay` seconds (None: [`DEFAULT_DELAY_SECONDS`]).
pub async fn sync(
    client: &impl tokio_postgres::GenericClient,
    env: Env,
    start: DateTime<Utc>,
    delay: Option<i32>,
) -> Result<SyncReport> {
    let delay = delay.unwrap_or(DEFAULT_DELAY_SECONDS);
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

/// Where the tasks of one symbol that had none start.
#[derive(Debug, serde::Serialize)]
pub struct NewTaskStart {
    pub symbol: String,
    pub agg_start_utc: DateTime<Utc>,
    /// The symbol's first stored 1m bar.
    pub first_1m: Option<DateTime<Utc>>,
    /// Stored 1m bars before the start, which the tasks will not aggregate.
    pub bars_left_out: i64,
}

/// What `barkeep sync` did, with where each new symbol's tasks start.
#[derive(Debug, serde::Serialize)]
pub struct SyncOutcome {
    #[serde(flatten)]
    pub report: SyncReport,
    pub new_symbols: Vec<NewTaskStart>,
}

/// `sync` as the command does it, in one transaction: new symbols' tasks
/// start at `start`, or without one at each symbol's first 1m bar (the
/// checklist's 2025-07-01 for a symbol with no bar yet).
pub async fn sync_new_tasks(
    client: &mut Client,
    env: Env,
    start: Option<DateTime<Utc>>,
    delay: Option<i32>,
) -> Result<SyncOutcome> {
    crate::ops::require_migrated(client).await?;
    let tx = client
        .transaction()
        .await
        .context("opening a transaction")?;
    let rows = tx
        .query(
            "SELECT r.canonical_symbol,
                    (SELECT min(b.ts_utc) FROM data_bars b
                     WHERE b.canonical_symbol = r.canonical_symbol AND b.timeframe = '1m')
             FROM core_asset_registry_all r
             WHERE CASE WHEN $1 = 'prod' THEN r.active ELSE r.test_active END
               AND NOT EXISTS (SELECT 1 FROM data_agg_state s WHERE s.canonical_symbol = r.canonical_symbol)
             ORDER BY 1",
            &[&env.as_str()],
        )
        .await
        .context("looking for symbols without tasks")?;
    let fallback = parse_start(DEFAULT_START)?;
    let report = sync(&tx, env, start.unwrap_or(fallback), delay).await?;
    let mut new_symbols = Vec::new();
    for r in rows {
        let symbol: String = r.get(0);
        let first_1m: Option<DateTime<Utc>> = r.get(1);
        let agg_start = match (start, first_1m) {
            (Some(s), _) => s,
            (None, Some(first)) => first,
            (None, None) => fallback,
        };
        if start.is_none() && first_1m.is_some() {
            tx.execute(
                "UPDATE data_agg_state s SET agg_start_utc = $2, updated_at = now(),
                   last_agg_bar_ts_utc = agg_first_bucket_at_or_after(agg_symbol_calendar($1), s.timeframe, $2)
                 WHERE s.canonical_symbol = $1",
                &[&symbol, &agg_start],
            )
            .await
            .with_context(|| format!("starting the tasks of {symbol} at its first 1m bar"))?;
        }
        let bars_left_out: i64 = tx
            .query_one(
                "SELECT count(*) FROM data_bars
                 WHERE canonical_symbol = $1 AND timeframe = '1m' AND ts_utc < $2",
                &[&symbol, &agg_start],
            )
            .await
            .context("counting 1m bars before the start")?
            .get(0);
        new_symbols.push(NewTaskStart {
            symbol,
            agg_start_utc: agg_start,
            first_1m,
            bars_left_out,
        });
    }
    tx.commit().await.context("committing the sync")?;
    Ok(SyncOutcome {
        report,
        new_symbols,
    })
}

/// `barkeep sync`.
pub async fn run_sync(global: &Global, args: SyncArgs) -> Result<ExitCode> {
    let mut client = global.database().await?.connect().await?;
    let outcome = sync_new_tasks(&mut client, args.env, args.start, Some(args.delay)).await?;
    let report = &outcome.report;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "synced {} tasks for {}: {} created, {} re-enabled, {} disabled",
        report.tasks_total,
        args.env.as_str(),
        report.tasks_created,
        report.tasks_enabled,
        report.tasks_disabled
    );
    let ts = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%MZ").to_string();
    for n in &outcome.new_symbols {
        match (args.start, n.first_1m) {
            (None, Some(first)) => println!("{}: tasks start at its first 1m bar, {}", n.symbol, ts(first)),
            (None, None) => println!(
                "{}: no 1m bars yet, tasks start at {}; load its data before `sync`, or give --start",
                n.symbol,
                ts(n.agg_start_utc)
            ),
            (Some(_), _) if n.bars_left_out > 0 => eprintln!(
                "warning: {}: --start {} leaves out {} stored 1m bars (from {}); they will not be aggregated",
                n.symbol,
                ts(n.agg_start_utc),
                n.bars_left_out,
                n.first_1m.map(ts).unwrap_or_default()
            ),
            (Some(_), _) => println!("{}: tasks start at {}", n.symbol, ts(n.agg_start_utc)),
        }
    }
    if report.tasks_total == 0 {
        println!(
            "no active asset in the registry: add one with `barkeep assets add SYMBOL --class fx`"
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Let a disabled task run again (all timeframes when none is given).
    Enable(TaskTarget),
    /// Stop a task from being claimed; a run in flight loses its lease.
    Disable(TaskTarget),
    /// Put a hard_failed or disabled task back to idle with its streaks cleared.
    Reenable(TaskTarget),
    /// Set the claim priority (lower runs first; the default is 100).
    Priority {
        #[command(flatten)]
        target: TaskTarget,
        /// New priority.
        #[arg(long)]
        priority: i32,
    },
    /// Set how long a task waits for a quiet feed before finalizing a
    /// bucket (`aggregation_delay_seconds`; only tasks reading 1m bars use it).
    Delay {
        #[command(flatten)]
        target: TaskTarget,
        /// Seconds after a bucket's end.
        #[arg(long, value_parser = clap::value_parser!(i32).range(0..=86_400))]
        seconds: i32,
    },
}

#[derive(Debug, Args)]
pub struct TaskTarget {
    /// Canonical symbol.
    pub symbol: Symbol,
    /// Timeframe (5m, 15m, 1h, 4h, 1d, 1w); all of the symbol's when omitted.
    #[arg(value_parser = Timeframe::parse_derived)]
    pub timeframe: Option<Timeframe>,
}

/// Apply one operator action; returns how many tasks it changed.
pub async fn apply(client: &Client, cmd: &TaskCommand) -> Result<u64> {
    let (sql, target, priority): (&str, &TaskTarget, Option<i32>) = match cmd {
        TaskCommand::Enable(t) => (
            "UPDATE data_agg_state SET enabled = true, next_run_at = now(), updated_at = now(),
               status = CASE WHEN status = 'disabled' THEN 'idle' ELSE status END
             WHERE canonical_symbol = $1 AND ($2::text IS NULL OR timeframe = $2)",
            t,
            None,
        ),
        // Clearing the lease fences a worker still running the task.
        TaskCommand::Disable(t) => (
            "UPDATE data_agg_state SET enabled = false, status = 'disabled', lease_token = NULL,
               lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
             WHERE canonical_symbol = $1 AND ($2::text IS NULL OR timeframe = $2)",
            t,
            None,
        ),
        TaskCommand::Reenable(t) => (
            "UPDATE data_agg_state SET enabled = true, status = 'idle', hard_fail_streak = 0,
               transient_fail_streak = 0, last_error = NULL, next_run_at = now(),
               lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
             WHERE canonical_symbol = $1 AND ($2::text IS NULL OR timeframe = $2)
               AND status IN ('hard_failed', 'disabled', 'idle')",
            t,
            None,
        ),
        TaskCommand::Priority { target, priority } => (
            "UPDATE data_agg_state SET task_priority = $3, updated_at = now()
             WHERE canonical_symbol = $1 AND ($2::text IS NULL OR timeframe = $2)",
            target,
            Some(*priority),
        ),
        TaskCommand::Delay { target, seconds } => (
            "UPDATE data_agg_state SET aggregation_delay_seconds = $3, updated_at = now(),
               next_run_at = CASE WHEN status = 'idle' AND transient_fail_streak = 0
                                   AND hard_fail_streak = 0 THEN now() ELSE next_run_at END
             WHERE canonical_symbol = $1 AND ($2::text IS NULL OR timeframe = $2)",
            target,
            Some(*seconds),
        ),
    };
    // A worker frozen inside a chunk holds its task's row lock until its
    // session is ended: wait a bounded time, never for ever.
    client
        .batch_execute(&format!("SET lock_timeout = '{OPERATOR_LOCK_TIMEOUT}'"))
        .await
        .context("setting the lock timeout")?;
    let tf = target.timeframe.map(Timeframe::as_str);
    let symbol = target.symbol.as_str();
    let changed = match priority {
        Some(p) => client.execute(sql, &[&symbol, &tf, &p]).await,
        None => client.execute(sql, &[&symbol, &tf]).await,
    }
    .map_err(|e| {
        let locked = e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE);
        let err = anyhow::Error::new(e);
        if locked {
            err.context(format!(
                "a task of {symbol} is locked by a worker's open transaction \
                 (waited {OPERATOR_LOCK_TIMEOUT}); retry in a moment: a frozen \
                 worker's session is ended once its lease has expired"
            ))
        } else {
            err.context(format!("updating the tasks of {symbol}"))
        }
    })?;
    // Running workers look at the tasks again at once.
    client
        .batch_execute("NOTIFY barkeep_tasks")
        .await
        .context("notifying workers")?;
    if changed == 0 {
        bail!(
            "no task of {symbol}{} matched; run `barkeep sync` after registering it",
            tf.map(|t| format!(" {t}")).unwrap_or_default()
        );
    }
    Ok(changed)
}

/// `barkeep task …`.
pub async fn run_task(global: &Global, cmd: TaskCommand) -> Result<ExitCode> {
    let client = global.database().await?.connect().await?;
    crate::ops::require_migrated(&client).await?;
    let changed = apply(&client, &cmd).await?;
    println!("{changed} task(s) updated");
    Ok(ExitCode::SUCCESS)
}
