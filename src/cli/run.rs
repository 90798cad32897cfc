//! `barkeep run`: parse the worker's flags into a [`WorkerConfig`], run the
//! worker until SIGTERM/SIGINT (or, with `--once`, until nothing is left),
//! and print its summary. `--once` exits non-zero when a task's last run
//! failed.

use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::Global;
use crate::model::calendar::parse_instant;
use crate::model::{Env, Timeframe};
use crate::worker::{run_worker, Summary, WorkerConfig};

/// Arguments of `barkeep run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Catch up everything due, then exit (non-zero when a task failed).
    #[arg(long)]
    pub once: bool,
    /// Which registry flag marks an asset active: prod uses `active`, dev/test `test_active`.
    #[arg(long, default_value = "prod")]
    pub env: Env,
    /// Symbols processed at the same time (one database connection each).
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    /// Stop a task after this many non-empty buckets per claim (it is claimed again).
    #[arg(long)]
    pub max_windows: Option<u64>,
    /// Most tasks claimed at once (default: what the free lanes can run now).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Lease length; heartbeats renew it while work goes on (at most a day).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(i32).range(1..=crate::ops::backup::check::MAX_LEASE_SECONDS))]
    pub lease_seconds: i32,
    /// On SIGTERM/SIGINT, how long in-flight work may take before exiting.
    #[arg(long, default_value_t = 30)]
    pub grace_seconds: u64,
    /// First bucket of tasks the worker creates for newly active assets
    /// (it syncs its env at start and whenever the registry changes);
    /// default: as `barkeep sync`.
    #[arg(long, value_parser = parse_instant)]
    pub sync_from: Option<DateTime<Utc>>,
    /// Do not sync tasks from the registry (leave that to `barkeep sync`).
    #[arg(long)]
    pub no_sync: bool,
    /// Prune the history kept for as-of reads (retired bar versions, earlier
    /// 1m values) that stopped being live more than this many days ago: at
    /// start and every hour. As-of reads before that are refused from then
    /// on. Default: keep all history (`barkeep history prune` by hand).
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub keep_history_days: Option<u32>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

impl RunArgs {
    /// The worker's settings.
    pub fn config(&self) -> WorkerConfig {
        WorkerConfig {
            once: self.once,
            env: self.env,
            concurrency: self.concurrency,
            max_windows: self.max_windows,
            claim_size: self.batch,
            lease_seconds: self.lease_seconds,
            grace: std::time::Duration::from_secs(self.grace_seconds),
            sync: !self.no_sync,
            sync_from: self.sync_from,
            keep_history: self
                .keep_history_days
                .map(|d| chrono::Duration::days(i64::from(d))),
        }
    }
}

/// Run `barkeep run`.
pub async fn run(global: &Global, args: RunArgs) -> Result<ExitCode> {
    let config = args.config();
    config.validate()?;
    super::ignore_closed_pipes();
    let database = global.database().await?;
    let check = database.connect().await?;
    crate::migrate::require_migrated(&check).await?;
    let (tasks, assets) = tokio::try_join!(
        crate::store::tasks::count_enabled(&check),
        crate::store::registry::count(&check),
    )?;
    if assets == 0 {
        eprintln!("nothing to aggregate: register an asset with `barkeep assets add SYMBOL --class fx` and load its bars with `barkeep ingest`");
    } else if tasks == 0 && args.no_sync {
        eprintln!(
            "no enabled aggregation tasks: run `barkeep sync` (or `barkeep run` without --no-sync)"
        );
    }
    drop(check);
    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("stopping: no new claims, finishing in-flight work");
            shutdown.cancel();
        });
    }
    let summary = run_worker(&database, &config, shutdown).await?;
    print_summary(&summary, args.json)?;
    if config.once && summary.tasks_still_failing > 0 {
        eprintln!(
            "error: {} task(s) failed (see `last_error` in data_agg_state and agg_run_log)",
            summary.tasks_still_failing
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn print_summary(summary: &Summary, json: bool) -> Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(summary).context("printing the summary")?
        );
        return Ok(());
    }
    println!(
        "{} task runs in {} rounds, {} failed, {} leases lost, {} released",
        summary.tasks_run,
        summary.rounds,
        summary.tasks_failed,
        summary.leases_lost,
        summary.tasks_released
    );
    for tf in Timeframe::LADDER {
        let n = summary.bars_created.get(tf.as_str()).copied().unwrap_or(0);
        println!("  {:>4} {n:>10} bars", tf.as_str());
    }
    println!(
        "  poor {:>10} bars (quality <= 0)",
        summary.bars_quality_poor
    );
    if let Some(pruned) = &summary.history_pruned {
        println!(
            "  history pruned: {} and {}",
            crate::ops::counted(pruned.bar_versions, "retired bar version"),
            crate::ops::counted(pruned.revisions_1m, "earlier 1m value")
        );
    }
    if summary.buckets_reaggregated + summary.bars_changed + summary.bars_deleted > 0 {
        println!(
            "  late data: {} buckets re-aggregated, {} bars changed, {} deleted",
            summary.buckets_reaggregated, summary.bars_changed, summary.bars_deleted
        );
    }
    Ok(())
}
