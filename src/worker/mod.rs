//! The worker behind `barkeep run`: claim due tasks with `agg_claim_tasks`,
//! group them by symbol, run each symbol's ladder on the fast path with two
//! connections at once, keep leases alive with `agg_heartbeat`, and record
//! every outcome with `agg_finish`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use chrono::{DateTime, Duration, Utc};
use tokio_postgres::Client;

use crate::calendar::{Calendar, Timeframe};
use crate::db::Database;
use crate::engine::{SymbolJob, SymbolRunner, TaskOutcome, TaskPlan};

mod lease;
pub use lease::is_transient;
use lease::{claim, finish, forget, heartbeat_loop, release, wake_idle_tasks, Claim, Leases};

/// Arguments of `barkeep run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Catch up everything due, then exit.
    #[arg(long)]
    pub once: bool,
    /// Which registry flag marks an asset active: prod uses `active`, dev/test `test_active`.
    #[arg(long, default_value = "prod")]
    pub env: String,
    /// Symbols processed at the same time (one database connection each).
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    /// Stop a task after this many non-empty buckets per claim (it is claimed again).
    #[arg(long)]
    pub max_windows: Option<u64>,
    /// Most tasks claimed in one round.
    #[arg(long, default_value_t = 600)]
    pub batch: i32,
    /// Lease length; heartbeats renew it while work goes on.
    #[arg(long, default_value_t = 60)]
    pub lease_seconds: i32,
    /// On SIGTERM/SIGINT, how long in-flight work may take before exiting.
    #[arg(long, default_value_t = 30)]
    pub grace_seconds: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

impl RunArgs {
    /// Settings of an in-process `run --once` (demo, bench): catch up
    /// everything due in the prod env with `concurrency` lanes.
    pub fn catch_up(concurrency: usize) -> Self {
        Self {
            once: true,
            env: "prod".into(),
            concurrency,
            max_windows: None,
            batch: 600,
            lease_seconds: 60,
            grace_seconds: 30,
            json: false,
        }
    }
}

/// Totals of a worker run.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Summary {
    pub rounds: u64,
    pub tasks_run: u64,
    pub tasks_failed: u64,
    pub leases_lost: u64,
    pub leases_recovered: u64,
    /// Bars written per timeframe.
    pub bars_created: BTreeMap<String, u64>,
    pub bars_quality_poor: u64,
}

impl Summary {
    fn record(&mut self, o: &TaskOutcome) {
        self.tasks_run += 1;
        if o.error.is_some() {
            self.tasks_failed += 1;
        }
        if o.lease_lost {
            self.leases_lost += 1;
        }
        *self
            .bars_created
            .entry(o.timeframe.as_str().to_string())
            .or_default() += o.bars_created;
        self.bars_quality_poor += o.bars_quality_poor;
    }
}

fn worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// Run `barkeep run`.
pub async fn run(database: &Database, args: RunArgs) -> Result<ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    if !args.once {
        let stop = stop.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("stopping: no new claims, finishing in-flight work");
            stop.store(true, Ordering::SeqCst);
        });
    }
    let summary = run_worker(database, &args, stop).await?;
    print_summary(&summary, args.json)?;
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
        "{} task runs in {} rounds, {} failed, {} leases lost",
        summary.tasks_run, summary.rounds, summary.tasks_failed, summary.leases_lost
    );
    for tf in Timeframe::LADDER {
        let n = summary.bars_created.get(tf.as_str()).copied().unwrap_or(0);
        println!("  {:>4} {n:>10} bars", tf.as_str());
    }
    println!(
        "  poor {:>10} bars (quality <= 0)",
        summary.bars_quality_poor
    );
    Ok(())
}

/// The claim/process/finish loop. With `args.once` it returns when nothing
/// is due; otherwise when `stop` is set (a grace period bounds the wait).
pub async fn run_worker(
    database: &Database,
    args: &RunArgs,
    stop: Arc<AtomicBool>,
) -> Result<Summary> {
    let control = database.connect().await?;
    let worker = worker_name();
    let leases: Leases = Arc::new(Mutex::new(HashMap::new()));
    let heartbeat = tokio::spawn(heartbeat_loop(
        database.clone(),
        leases.clone(),
        args.lease_seconds,
    ));
    let mut summary = Summary::default();
    let mut idle_polls = 0u64;
    let mut progress_since_wake = true;
    let result: Result<()> = async {
        while !stop.load(Ordering::SeqCst) {
            let (claims, now) = claim(&control, args, &worker).await?;
            if claims.is_empty() {
                if args.once {
                    // A task that found its source unfinished waits for its
                    // run interval; wake the idle ones once more after any
                    // progress so `--once` ends only when nothing is final.
                    if progress_since_wake {
                        wake_idle_tasks(&control).await?;
                        progress_since_wake = false;
                        continue;
                    }
                    break;
                }
                idle_polls += 1;
                tracing::debug!(idle_polls, "nothing due");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
            summary.rounds += 1;
            summary.leases_recovered += claims.iter().filter(|c| c.recovered).count() as u64;
            {
                let mut held = leases.lock().map_err(|_| anyhow::anyhow!("lease table poisoned"))?;
                for c in &claims {
                    held.insert((c.symbol.clone(), c.timeframe), c.lease);
                }
            }
            let jobs = plan_jobs(&control, claims, now, args.max_windows).await?;
            let round = process_round(database, jobs, args, &stop, &leases);
            let outcomes = if args.once {
                round.await?
            } else {
                let grace = std::time::Duration::from_secs(args.grace_seconds);
                let stop = stop.clone();
                tokio::select! {
                    r = round => r?,
                    _ = async move {
                        while !stop.load(Ordering::SeqCst) {
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                        }
                        tokio::time::sleep(grace).await;
                    } => {
                        tracing::warn!("grace period over; unfinished leases will expire and be recovered");
                        break;
                    }
                }
            };
            for o in &outcomes {
                summary.record(o);
                progress_since_wake |= o.new_cursor > o.start_cursor || o.bars_created > 0;
            }
        }
        Ok(())
    }
    .await;
    heartbeat.abort();
    result?;
    Ok(summary)
}

/// Group claims by symbol, look up calendars, bootstrap missing cursors.
async fn plan_jobs(
    control: &Client,
    claims: Vec<Claim>,
    now: DateTime<Utc>,
    max_windows: Option<u64>,
) -> Result<Vec<SymbolJob>> {
    let symbols: Vec<String> = {
        let mut s: Vec<String> = claims.iter().map(|c| c.symbol.clone()).collect();
        s.sort();
        s.dedup();
        s
    };
    let rows = control
        .query(
            "SELECT canonical_symbol, asset_class FROM core_asset_registry_all
             WHERE canonical_symbol = ANY($1)",
            &[&symbols],
        )
        .await
        .context("reading asset classes")?;
    let calendars: HashMap<String, Calendar> = rows
        .iter()
        .map(|r| (r.get(0), Calendar::for_asset_class(r.get(1))))
        .collect();
    let mut jobs: BTreeMap<String, SymbolJob> = BTreeMap::new();
    for c in claims {
        let cursor = match c.cursor {
            Some(cursor) => cursor,
            None => control
                .query_one(
                    "SELECT agg_bootstrap_cursor($1, $2, $3)",
                    &[&c.symbol, &c.timeframe.as_str(), &now],
                )
                .await
                .with_context(|| format!("bootstrapping the {} {} cursor", c.symbol, c.timeframe))?
                .get(0),
        };
        let job = jobs.entry(c.symbol.clone()).or_insert_with(|| SymbolJob {
            symbol: c.symbol.clone(),
            calendar: calendars.get(&c.symbol).copied().unwrap_or(Calendar::Utc),
            tasks: Vec::new(),
            now,
            max_windows,
            derivation_version: 1,
        });
        job.tasks.push(TaskPlan {
            timeframe: c.timeframe,
            source: c.source,
            cursor,
            delay: Duration::seconds(c.delay_seconds.into()),
            lease: Some(c.lease),
        });
    }
    Ok(jobs.into_values().collect())
}

/// Run the jobs on `args.concurrency` connections; finish every task.
async fn process_round(
    database: &Database,
    jobs: Vec<SymbolJob>,
    args: &RunArgs,
    stop: &Arc<AtomicBool>,
    leases: &Leases,
) -> Result<Vec<TaskOutcome>> {
    let total: u64 = jobs.iter().map(|j| j.tasks.len() as u64).sum();
    let progress = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} tasks {msg}",
        ) {
            bar.set_style(style);
        }
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let queue = Arc::new(Mutex::new(VecDeque::from(jobs)));
    let mut lanes = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let database = database.clone();
        let queue = queue.clone();
        let stop = stop.clone();
        let leases = leases.clone();
        let progress = progress.clone();
        lanes.push(tokio::spawn(async move {
            lane(database, queue, stop, leases, progress).await
        }));
    }
    let mut outcomes = Vec::new();
    let mut first_error = None;
    for lane in lanes {
        match lane.await.context("a worker lane panicked")? {
            Ok(mut o) => outcomes.append(&mut o),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    progress.finish_and_clear();
    match first_error {
        Some(e) => Err(e),
        None => Ok(outcomes),
    }
}

/// One connection working through the queue of symbol jobs.
async fn lane(
    database: Database,
    queue: Arc<Mutex<VecDeque<SymbolJob>>>,
    stop: Arc<AtomicBool>,
    leases: Leases,
    progress: indicatif::ProgressBar,
) -> Result<Vec<TaskOutcome>> {
    let mut client = database.connect().await?;
    let mut outcomes = Vec::new();
    loop {
        let job = {
            let mut q = queue
                .lock()
                .map_err(|_| anyhow::anyhow!("job queue poisoned"))?;
            q.pop_front()
        };
        let Some(job) = job else { break };
        if stop.load(Ordering::SeqCst) {
            release(&client, &job, &leases).await?;
            continue;
        }
        if client.is_closed() {
            client = database.connect().await?;
        }
        let results = SymbolRunner::new(&mut client, &job).run(|_| {}).await;
        if client.is_closed() {
            client = database.connect().await?;
        }
        for o in results {
            finish(&client, &job.symbol, &o).await?;
            forget(&leases, &job.symbol, o.timeframe)?;
            progress.inc(1);
            progress.set_message(format!("{} {}", job.symbol, o.timeframe));
            outcomes.push(o);
        }
    }
    Ok(outcomes)
}
