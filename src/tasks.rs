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
    /// First bucket of new tasks (RFC 3339 or a date).
    #[arg(long, default_value = DEFAULT_START, value_parser = parse_start)]
    pub start: DateTime<Utc>,
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
    client: &Client,
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

/// `barkeep sync`.
pub async fn run_sync(global: &Global, args: SyncArgs) -> Result<ExitCode> {
    let client = global.database().await?.connect().await?;
    let report = sync(&client, args.env, args.start, Some(args.delay)).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "synced {} tasks for {}: {} created, {} re-enabled, {} disabled",
            report.tasks_total,
            args.env.as_str(),
            report.tasks_created,
            report.tasks_enabled,
            report.tasks_disabled
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
    let changed = apply(&client, &cmd).await?;
    println!("{changed} task(s) updated");
    Ok(ExitCode::SUCCESS)
}
