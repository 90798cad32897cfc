//! The worker behind `barkeep run`: a service that claims due tasks with
//! `agg_claim_tasks`, groups them by symbol, runs each symbol's ladder on
//! the fast path in a fixed set of lanes (one connection each, kept across
//! rounds), keeps leases alive with one batched heartbeat, and records every
//! outcome with `agg_finish`.
//!
//! Left running, it sleeps until the next due time, and wakes early on
//! `LISTEN` notifications of new 1m data and registry changes (it re-syncs
//! its env's tasks then, and at start). Lost connections and database
//! restarts are retried with capped, jittered backoff; sessions of frozen
//! workers past their lease are ended so their tasks can be taken over.
//! Shutdown is a [`CancellationToken`]: in-flight work gets a grace period,
//! queued tasks are handed back with `agg_release`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Duration, Utc};
use tokio::sync::mpsc;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::db::Database;
use crate::engine::{SymbolJob, SymbolRunner, TaskOutcome, TaskPlan, TaskRun};
use crate::model::{Calendar, Env, Symbol, Timeframe};

mod lease;
mod live;
mod retention;
mod retry;
use crate::error::is_transient;
use lease::{Claim, Finished, Leases};
use retry::{Backoff, Conn};

/// Tasks claimed per free lane: a whole ladder of one symbol at best.
const TASKS_PER_LANE: usize = 6;
/// Most live tasks claimed at once (`agg_claim_live`).
const LIVE_CLAIM: usize = 2000;
/// Longest idle sleep: the poll that backs up lost notifications.
const MAX_IDLE: StdDuration = StdDuration::from_secs(60);

/// Settings of a worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Catch up everything due (waiting for other workers' live leases and
    /// for retries of its own failures), then return.
    pub once: bool,
    /// Which registry flag marks an asset active.
    pub env: Env,
    /// Lanes: symbols processed at the same time, one connection each.
    pub concurrency: usize,
    /// Stop a task after this many non-empty buckets per claim.
    pub max_windows: Option<u64>,
    /// Most tasks per claim; None sizes claims to the free lanes.
    pub claim_size: Option<usize>,
    /// Lease length; heartbeats renew it while work goes on.
    pub lease_seconds: i32,
    /// After shutdown is requested, how long in-flight work may take.
    pub grace: StdDuration,
    /// Sync the env's tasks from the registry at start and on registry
    /// changes.
    pub sync: bool,
    /// First bucket of tasks such a sync creates (None: as `barkeep sync`).
    pub sync_from: Option<DateTime<Utc>>,
    /// Prune the history kept for as-of reads that stopped being live longer
    /// ago than this, at start and every hour (None: keep it all).
    pub keep_history: Option<Duration>,
}

impl WorkerConfig {
    /// An in-process `run --once` (demo, bench, tests): catch up everything
    /// due in the prod env with `concurrency` lanes.
    pub fn catch_up(concurrency: usize) -> Self {
        Self {
            once: true,
            env: Env::Prod,
            concurrency,
            max_windows: None,
            claim_size: Some(600),
            lease_seconds: 60,
            grace: StdDuration::from_secs(30),
            sync: false,
            sync_from: None,
            keep_history: None,
        }
    }

    /// Refuse settings that cannot work.
    pub fn validate(&self) -> Result<()> {
        if self.concurrency == 0 {
            bail!("concurrency must be at least 1");
        }
        if self.max_windows == Some(0) {
            bail!("max-windows must be at least 1 (leave it out to catch up fully)");
        }
        if self.claim_size == Some(0) {
            bail!("batch must be at least 1");
        }
        if self.lease_seconds < 1 {
            bail!("lease-seconds must be at least 1");
        }
        if self.keep_history.is_some_and(|k| k < Duration::days(1)) {
            bail!("keep-history-days must be at least 1");
        }
        Ok(())
    }
}

/// Totals of a worker run.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Summary {
    pub rounds: u64,
    pub tasks_run: u64,
    pub tasks_failed: u64,
    /// Tasks whose last run in this worker failed and that were not run
    /// successfully since (`run --once` exits non-zero when this is not 0).
    pub tasks_still_failing: u64,
    pub leases_lost: u64,
    pub leases_recovered: u64,
    /// Claimed tasks handed back unrun at shutdown.
    pub tasks_released: u64,
    /// Bars written per timeframe.
    pub bars_created: BTreeMap<String, u64>,
    /// Bars rewritten with new values (the old version kept as history).
    pub bars_changed: u64,
    /// Bars retired because their bucket no longer qualifies.
    pub bars_deleted: u64,
    /// History pruned by `--once` with `keep_history` (None: nothing was).
    pub history_pruned: Option<crate::ops::history::PruneCounts>,
    /// Late or corrected buckets behind a cursor re-aggregated.
    pub buckets_reaggregated: u64,
    pub bars_quality_poor: u64,
}

impl Summary {
    fn record(&mut self, run: &TaskRun) {
        self.tasks_run += 1;
        match run.outcome {
            TaskOutcome::Failed(_) => self.tasks_failed += 1,
            TaskOutcome::LeaseLost => self.leases_lost += 1,
            TaskOutcome::Done | TaskOutcome::More => {}
        }
        self.count_bars(run);
    }

    /// The bars a run wrote and the buckets it re-aggregated.
    fn count_bars(&mut self, run: &TaskRun) {
        *self
            .bars_created
            .entry(run.timeframe.as_str().to_string())
            .or_default() += run.bars_created;
        self.bars_changed += run.bars_changed;
        self.bars_deleted += run.bars_deleted;
        self.buckets_reaggregated += run.buckets_reaggregated;
        self.bars_quality_poor += run.bars_quality_poor;
    }
}

/// This process's name in leases and session names: host:pid and a
/// random tag, so two containers with the same host name and pid (both
/// pid 1, say) never take each other's leases for their own.
pub fn worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let tag = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}:{}:{}", std::process::id(), &tag[..6])
}

/// The database as the worker's sessions see it: named after the worker
/// (so a frozen worker's sessions can be found), TCP keepalives, and
/// timeouts that end a transaction left open by a frozen worker within
/// about one lease.
fn session_database(database: &Database, worker: &str, lease_seconds: i32) -> Database {
    database.tuned(|config| {
        let name: String = format!("barkeep {worker}").chars().take(63).collect();
        config.application_name(name);
        let lease_ms = i64::from(lease_seconds.max(1)) * 1000;
        let statement_ms = (2 * lease_ms).max(60_000);
        let mut options = config
            .get_options()
            .map(|o| format!("{o} "))
            .unwrap_or_default();
        options.push_str(&format!(
            "-c idle_in_transaction_session_timeout={lease_ms} -c statement_timeout={statement_ms} -c lock_timeout={lease_ms}"
        ));
        config.options(options);
        config
            .keepalives(true)
            .keepalives_idle(StdDuration::from_secs(10))
            .keepalives_interval(StdDuration::from_secs(5))
            .keepalives_retries(3)
            .connect_timeout(StdDuration::from_secs(10));
    })
}

/// Work for a lane.
enum Job {
    /// One symbol's claimed tasks, on the fast path.
    Symbol(SymbolJob),
    /// Claimed live tasks of whole symbols, advanced in one call; the
    /// claim's time and `max_windows` serve the fast path if that call
    /// cannot run.
    Live(Vec<Claim>, DateTime<Utc>, Option<u64>),
    /// The tasks of these symbols that live groups made due (15m, 1h, ...
    /// after 5m), claimed and advanced in one call.
    Dependents(Vec<Symbol>),
}

/// What a lane did with one job.
#[derive(Default)]
struct LaneReport {
    runs: Vec<(Symbol, TaskRun, Option<Finished>)>,
    released: u64,
    /// A live group committed: the symbols whose dependents (15m after
    /// 5m, ...) are to be taken next, once the group's own rows are free.
    dependents: Option<Vec<Symbol>>,
    /// Late data re-aggregated for tasks no run of this job held: counts only.
    late: Vec<TaskRun>,
}

/// Something the listening connection heard.
#[derive(Debug)]
enum Event {
    /// New 1m data for these symbols (None: too many to name).
    Data(Option<Vec<String>>),
    Registry,
    /// An operator changed tasks.
    Tasks,
    /// (Re)connected: notifications may have been missed.
    Listening,
}

/// Run a worker until `shutdown` is cancelled or, with `config.once`,
/// until nothing is left to do.
pub async fn run_worker(
    database: &Database,
    config: &WorkerConfig,
    shutdown: CancellationToken,
) -> Result<Summary> {
    config.validate()?;
    let worker = worker_name();
    let db = session_database(database, &worker, config.lease_seconds);
    let leases: Leases = Arc::new(Mutex::new(HashMap::new()));
    // `kill` ends in-flight work when the grace period is over.
    let kill = CancellationToken::new();

    let (job_tx, job_rx) = mpsc::unbounded_channel::<Job>();
    let job_rx = Arc::new(tokio::sync::Mutex::new(job_rx));
    let (report_tx, mut report_rx) = mpsc::unbounded_channel::<LaneReport>();
    let mut lanes = Vec::new();
    for _ in 0..config.concurrency {
        lanes.push(tokio::spawn(lane(
            Conn::new(db.clone(), "lane"),
            (worker.clone(), config.lease_seconds),
            job_rx.clone(),
            report_tx.clone(),
            leases.clone(),
            shutdown.clone(),
            kill.clone(),
        )));
    }
    drop(report_tx);
    let heartbeat = tokio::spawn(heartbeat_loop(
        Conn::new(db.clone(), "heartbeat"),
        leases.clone(),
        config.lease_seconds,
        kill.clone(),
    ));
    let (event_tx, mut event_rx) = mpsc::unbounded_channel::<Event>();
    let listener = if config.once {
        None
    } else {
        Some(tokio::spawn(listen_loop(
            db.clone(),
            event_tx,
            kill.clone(),
        )))
    };

    let mut control = Conn::new(db.clone(), "control");
    let mut summary = Summary::default();
    // `--once` prunes before it catches up (an error ends the run, as any
    // other would); a worker left running prunes every hour beside its work.
    let mut retention = None;
    if let Some(keep) = config.keep_history {
        if config.once {
            if let Some(client) = control.get(&shutdown).await {
                summary.history_pruned = retention::prune_older_than(client, keep).await?;
            }
        } else {
            retention = Some(tokio::spawn(retention::retention_loop(
                Conn::new(db.clone(), "retention"),
                keep,
                kill.clone(),
            )));
        }
    }
    let mut state = LoopState {
        claim_wanted: true,
        sync_wanted: config.sync,
        // `--once` starts by waking what new or late data made due.
        wake: config.once.then_some(None),
        in_flight: 0,
        failing: HashSet::new(),
        said_waiting: false,
    };
    let result = main_loop(
        &mut control,
        config,
        &worker,
        &leases,
        &job_tx,
        &mut report_rx,
        &mut event_rx,
        &shutdown,
        &mut state,
        &mut summary,
    )
    .await;

    // Stop: no new claims; lanes hand back queued jobs and finish the one
    // they run, within the grace period.
    drop(job_tx);
    let drain = async {
        while let Some(report) = report_rx.recv().await {
            absorb(&mut summary, &mut state, report);
        }
    };
    if tokio::time::timeout(config.grace, drain).await.is_err() {
        tracing::warn!("grace period over; abandoning in-flight work and handing its tasks back");
    }
    kill.cancel();
    for l in lanes {
        let _ = l.await;
    }
    while let Ok(report) = report_rx.try_recv() {
        absorb(&mut summary, &mut state, report);
    }
    // Leases still held belong to work that was cut off: hand them back.
    let left: Vec<((Symbol, Timeframe), uuid::Uuid)> = leases
        .lock()
        .map(|l| l.iter().map(|(k, v)| (k.clone(), *v)).collect())
        .unwrap_or_default();
    if !left.is_empty() {
        let give_up = CancellationToken::new();
        let timer = give_up.clone();
        tokio::spawn(async move {
            tokio::time::sleep(StdDuration::from_secs(5)).await;
            timer.cancel();
        });
        if let Some(client) = control.get(&give_up).await {
            for ((symbol, tf), lease) in left {
                if lease::release(client, &symbol, tf, lease).await.is_ok() {
                    summary.tasks_released += 1;
                }
            }
        }
    }
    heartbeat.abort();
    if let Some(l) = listener {
        l.abort();
    }
    if let Some(r) = retention {
        r.abort();
    }
    summary.tasks_still_failing = state.failing.len() as u64;
    result?;
    Ok(summary)
}

struct LoopState {
    claim_wanted: bool,
    sync_wanted: bool,
    /// Symbols with new 1m data to wake (Some(None): all).
    wake: Option<Option<Vec<String>>>,
    in_flight: usize,
    /// Tasks whose last run here failed.
    failing: HashSet<(Symbol, Timeframe)>,
    said_waiting: bool,
}

fn absorb(summary: &mut Summary, state: &mut LoopState, report: LaneReport) {
    state.in_flight = state.in_flight.saturating_sub(1);
    summary.tasks_released += report.released;
    for run in &report.late {
        summary.count_bars(run);
    }
    for (symbol, run, finished) in &report.runs {
        summary.record(run);
        log_run(symbol, run, finished.as_ref());
        let key = (symbol.clone(), run.timeframe);
        match &run.outcome {
            TaskOutcome::Failed(_) => {
                state.failing.insert(key);
            }
            TaskOutcome::Done | TaskOutcome::More => {
                state.failing.remove(&key);
            }
            TaskOutcome::LeaseLost => {}
        }
    }
}

/// One line per finished task run.
fn log_run(symbol: &Symbol, run: &TaskRun, finished: Option<&Finished>) {
    let ms = run.elapsed.as_millis() as u64;
    let cursor = run.new_cursor.to_rfc3339();
    let status = match finished {
        Some(Finished::Recorded(s)) => s.as_str(),
        Some(Finished::LeaseLost) => "lease lost",
        None => "not recorded",
    };
    // Late or corrected data behind the cursor: the line says what it
    // changed (a None field is left out of the line).
    let late = run.buckets_reaggregated + run.bars_changed + run.bars_deleted > 0;
    match &run.outcome {
        TaskOutcome::Done | TaskOutcome::More => tracing::info!(
            symbol = %symbol,
            timeframe = %run.timeframe,
            bars = run.bars_created,
            reaggregated = late.then_some(run.buckets_reaggregated),
            changed = late.then_some(run.bars_changed),
            deleted = late.then_some(run.bars_deleted),
            cursor,
            ms,
            more = matches!(run.outcome, TaskOutcome::More),
            "task run"
        ),
        TaskOutcome::LeaseLost => tracing::warn!(
            symbol = %symbol,
            timeframe = %run.timeframe,
            bars = run.bars_created,
            ms,
            "lease lost: another worker owns the task now; stopped"
        ),
        TaskOutcome::Failed(e) => tracing::warn!(
            symbol = %symbol,
            timeframe = %run.timeframe,
            kind = if is_transient(e) { "transient" } else { "hard" },
            status,
            ms,
            "task run failed: {e:#}"
        ),
    }
}

#[allow(clippy::too_many_arguments)]
async fn main_loop(
    control: &mut Conn,
    config: &WorkerConfig,
    worker: &str,
    leases: &Leases,
    job_tx: &mpsc::UnboundedSender<Job>,
    report_rx: &mut mpsc::UnboundedReceiver<LaneReport>,
    event_rx: &mut mpsc::UnboundedReceiver<Event>,
    shutdown: &CancellationToken,
    state: &mut LoopState,
    summary: &mut Summary,
) -> Result<()> {
    let mut backoff = Backoff::default();
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let Some(client) = control.get(shutdown).await else {
            return Ok(());
        };
        // One step of bookkeeping; a failure is retried after a backoff.
        let step: Result<Option<StdDuration>> = async {
            if state.sync_wanted {
                let r = crate::tasks::sync(client, config.env, config.sync_from, None).await?;
                if r.tasks_created + r.tasks_enabled + r.tasks_disabled > 0 {
                    tracing::info!(
                        created = r.tasks_created,
                        enabled = r.tasks_enabled,
                        disabled = r.tasks_disabled,
                        "synced tasks from the registry"
                    );
                }
                state.sync_wanted = false;
                state.claim_wanted = true;
            }
            if let Some(symbols) = state.wake.take() {
                let woke = lease::wake(client, symbols.as_deref()).await?;
                tracing::debug!(woke, "new 1m data");
                state.claim_wanted |= woke > 0;
            }
            let free = config.concurrency.saturating_sub(state.in_flight);
            if state.claim_wanted && free > 0 {
                // Tasks close to the present first, many at a time, in
                // groups of whole symbols (the live path).
                let (live, now) = lease::claim_live(
                    client,
                    config.env,
                    worker,
                    LIVE_CLAIM as i32,
                    config.lease_seconds,
                )
                .await?;
                if !live.is_empty() {
                    summary.rounds += 1;
                    lease::hold(leases, &live);
                    let groups = live::groups(live);
                    // Every group's own bars first, then what they made due.
                    // Every group's own bars first; a group's dependents
                    // are queued when its report comes back (behind the
                    // groups still queued, and never beside their group).
                    let jobs = groups
                        .into_iter()
                        .map(|g| Job::Live(g, now, config.max_windows));
                    for job in jobs {
                        state.in_flight += 1;
                        if job_tx.send(job).is_err() {
                            bail!("every worker lane has stopped");
                        }
                    }
                    return Ok(None);
                }
                let size = config
                    .claim_size
                    .unwrap_or(free * TASKS_PER_LANE)
                    .min(i32::MAX as usize) as i32;
                let (claims, now) =
                    lease::claim(client, config.env, worker, size, config.lease_seconds).await?;
                if claims.is_empty() {
                    state.claim_wanted = false;
                } else {
                    summary.rounds += 1;
                    let recovered = claims.iter().filter(|c| c.recovered).count() as u64;
                    if recovered > 0 {
                        tracing::warn!(recovered, "took over tasks whose lease had expired");
                    }
                    summary.leases_recovered += recovered;
                    lease::hold(leases, &claims);
                    state.claim_wanted = claims.len() as i32 >= size;
                    let jobs = plan_jobs(client, claims, now, config.max_windows).await?;
                    for job in jobs {
                        state.in_flight += 1;
                        if job_tx.send(Job::Symbol(job)).is_err() {
                            bail!("every worker lane has stopped");
                        }
                    }
                }
                return Ok(None);
            }
            if state.claim_wanted {
                // Lanes are busy: wait for a report.
                return Ok(Some(MAX_IDLE));
            }
            if state.in_flight == 0 {
                // No job is in flight, so no lease of this worker belongs to
                // one: a claim whose answer was lost with the connection, or
                // whose jobs could not be planned, left it. Forget them all
                // (the heartbeat would renew them for ever) and hand back
                // every task the database still shows as ours.
                if let Ok(mut held) = leases.lock() {
                    held.clear();
                }
                let orphans = lease::release_orphans(client, worker).await?;
                if orphans > 0 {
                    tracing::warn!(
                        tasks = orphans,
                        "handed back tasks of a claim that never ran"
                    );
                    state.claim_wanted = true;
                    return Ok(None);
                }
            }
            let (due, expired, now) = lease::next_due(client, config.env).await?;
            if expired {
                let ended = lease::end_frozen_sessions(client, config.lease_seconds).await?;
                if ended > 0 {
                    tracing::warn!(
                        ended,
                        "ended the sessions of workers frozen past their lease"
                    );
                }
            }
            if config.once && state.in_flight == 0 {
                let foreign = lease::foreign_live_leases(client, config.env, worker).await?;
                let keys: Vec<_> = state.failing.iter().cloned().collect();
                let retrying = if keys.is_empty() {
                    0
                } else {
                    lease::awaiting_retry(client, &keys).await?
                };
                if foreign == 0 && retrying == 0 && !expired {
                    return Ok(Some(StdDuration::ZERO));
                }
                if !state.said_waiting {
                    tracing::info!(
                        other_workers_tasks = foreign,
                        retries = retrying,
                        "nothing to claim yet; waiting for other workers' tasks and retries"
                    );
                    state.said_waiting = true;
                }
                let wait = due
                    .map(|d| (d - now).to_std().unwrap_or_default())
                    .unwrap_or(MAX_IDLE)
                    .clamp(StdDuration::from_millis(200), StdDuration::from_secs(1));
                return Ok(Some(wait));
            }
            let wait = match due {
                Some(d) => (d - now).to_std().unwrap_or_default(),
                None => MAX_IDLE,
            };
            Ok(Some(wait.clamp(StdDuration::from_millis(250), MAX_IDLE)))
        }
        .await;
        let wait = match step {
            Ok(w) => {
                backoff.reset();
                w
            }
            Err(e) if is_transient(&e) => {
                control.broken();
                tracing::warn!("database trouble, retrying: {e:#}");
                if !backoff.wait(shutdown).await {
                    return Ok(());
                }
                continue;
            }
            Err(e) => {
                if config.once {
                    return Err(e);
                }
                tracing::error!("worker step failed, retrying: {e:#}");
                if !backoff.wait(shutdown).await {
                    return Ok(());
                }
                continue;
            }
        };
        let Some(wait) = wait else { continue };
        if config.once && state.in_flight == 0 && wait.is_zero() && !state.claim_wanted {
            return Ok(());
        }
        tokio::select! {
            report = report_rx.recv() => match report {
                Some(mut report) => {
                    let dependents = report.dependents.take();
                    absorb(summary, state, report);
                    state.claim_wanted = true;
                    if let Some(symbols) = dependents {
                        state.in_flight += 1;
                        if job_tx.send(Job::Dependents(symbols)).is_err() {
                            bail!("every worker lane has stopped");
                        }
                    }
                }
                None => bail!("every worker lane has stopped"),
            },
            Some(event) = event_rx.recv() => match event {
                Event::Data(symbols) => {
                    let merged = match (state.wake.take(), symbols) {
                        (Some(None), _) | (_, None) => None,
                        (Some(Some(mut a)), Some(b)) => {
                            a.extend(b);
                            Some(a)
                        }
                        (None, Some(b)) => Some(b),
                    };
                    state.wake = Some(merged);
                }
                Event::Registry => state.sync_wanted = config.sync,
                Event::Tasks => state.claim_wanted = true,
                Event::Listening => {
                    state.wake = Some(None);
                    state.sync_wanted = config.sync;
                    state.claim_wanted = true;
                }
            },
            _ = tokio::time::sleep(wait) => state.claim_wanted = true,
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
}

/// Group claims by symbol, look up calendars, bootstrap missing cursors.
async fn plan_jobs(
    control: &Client,
    claims: Vec<Claim>,
    now: DateTime<Utc>,
    max_windows: Option<u64>,
) -> Result<Vec<SymbolJob>> {
    let symbols: Vec<String> = {
        let mut s: Vec<String> = claims.iter().map(|c| c.symbol.to_string()).collect();
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
    let mut jobs: BTreeMap<Symbol, SymbolJob> = BTreeMap::new();
    for c in claims {
        let cursor = match c.cursor {
            Some(cursor) => cursor,
            None => control
                .query_one(
                    "SELECT agg_bootstrap_cursor($1, $2, $3)",
                    &[&c.symbol.as_str(), &c.timeframe.as_str(), &now],
                )
                .await
                .with_context(|| format!("bootstrapping the {} {} cursor", c.symbol, c.timeframe))?
                .get(0),
        };
        let job = jobs.entry(c.symbol.clone()).or_insert_with(|| SymbolJob {
            symbol: c.symbol.clone(),
            calendar: calendars
                .get(c.symbol.as_str())
                .copied()
                .unwrap_or(Calendar::Utc),
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

/// One lane: a connection working through jobs until the queue closes.
/// After `stop`, queued jobs are handed back unrun; `kill` abandons the job
/// in flight.
async fn lane(
    mut conn: Conn,
    (worker, lease_seconds): (String, i32),
    jobs: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>>,
    reports: mpsc::UnboundedSender<LaneReport>,
    leases: Leases,
    stop: CancellationToken,
    kill: CancellationToken,
) {
    loop {
        let job = {
            let mut rx = jobs.lock().await;
            tokio::select! {
                j = rx.recv() => j,
                _ = kill.cancelled() => None,
            }
        };
        let Some(job) = job else { return };
        let mut report = LaneReport::default();
        if stop.is_cancelled() {
            let tasks: Vec<(Symbol, Timeframe, Option<uuid::Uuid>)> = match &job {
                Job::Symbol(j) => j
                    .tasks
                    .iter()
                    .map(|t| (j.symbol.clone(), t.timeframe, t.lease))
                    .collect(),
                Job::Live(claims, _, _) => claims
                    .iter()
                    .map(|c| (c.symbol.clone(), c.timeframe, Some(c.lease)))
                    .collect(),
                Job::Dependents(_) => Vec::new(),
            };
            if let Some(client) = conn.get(&kill).await {
                for (symbol, tf, lease) in tasks {
                    let Some(l) = lease else { continue };
                    match lease::release(client, &symbol, tf, l).await {
                        Ok(_) => {
                            report.released += 1;
                            lease::forget(&leases, &symbol, tf);
                        }
                        Err(e) => tracing::warn!("{e:#}"),
                    }
                }
            }
            let _ = reports.send(report);
            continue;
        }
        let done = match job {
            Job::Symbol(job) => run_symbol_job(&mut conn, &job, &leases, &kill, &mut report).await,
            Job::Live(claims, now, max_windows) => {
                let live = LiveRun {
                    worker: &worker,
                    lease_seconds,
                    now,
                    max_windows,
                };
                run_live_job(&mut conn, &live, claims, &leases, &kill, &mut report).await
            }
            Job::Dependents(symbols) => {
                run_dependents_job(
                    &mut conn,
                    &symbols,
                    (&worker, lease_seconds),
                    &kill,
                    &mut report,
                )
                .await
            }
        };
        if reports.send(report).is_err() || !done {
            return;
        }
    }
}

/// Run one symbol's tasks on the fast path and record each run. False when
/// `kill` ended it (the open chunk is rolled back with the connection).
async fn run_symbol_job(
    conn: &mut Conn,
    job: &SymbolJob,
    leases: &Leases,
    kill: &CancellationToken,
    report: &mut LaneReport,
) -> bool {
    let Some(client) = conn.get(kill).await else {
        return false;
    };
    let runs = tokio::select! {
        runs = SymbolRunner::new(client, job).run(|_| {}) => runs,
        _ = kill.cancelled() => {
            // Dropping the connection rolls the open chunk back.
            conn.broken();
            return false;
        }
    };
    for run in runs {
        let finished = finish_with_retry(conn, &job.symbol, &run, kill).await;
        lease::forget(leases, &job.symbol, run.timeframe);
        report.runs.push((job.symbol.clone(), run, finished));
    }
    true
}

/// Advance a group of live tasks in one call, retrying transient failures
/// (nothing of a failed call stays). If the call cannot run at all (an
/// older schema, a bug), the tasks go the fast path instead. False when
/// `kill` ended it.
/// Claim and advance the tasks of `symbols` that live groups made due. A
/// failure leaves them due for the next claim. False when `kill` ended it.
async fn run_dependents_job(
    conn: &mut Conn,
    symbols: &[Symbol],
    (worker, lease_seconds): (&str, i32),
    kill: &CancellationToken,
    report: &mut LaneReport,
) -> bool {
    let Some(client) = conn.get(kill).await else {
        return false;
    };
    let call = tokio::select! {
        r = live::advance_dependents(client, symbols, worker, lease_seconds) => r,
        _ = kill.cancelled() => {
            conn.broken();
            return false;
        }
    };
    match call {
        Ok(advanced) => {
            if !advanced.is_empty() {
                tracing::info!(tasks = advanced.len(), "advanced live tasks made due");
            }
            for a in advanced {
                match a.finished {
                    Some(f) => report.runs.push((a.symbol, a.run, Some(f))),
                    None => report.late.push(a.run),
                }
            }
        }
        Err(e) => {
            if is_transient(&e) {
                conn.broken();
            }
            tracing::warn!("advancing the tasks live groups made due: {e:#}");
        }
    }
    true
}

/// Who advances a live group, and what the fast path needs if it must.
struct LiveRun<'a> {
    worker: &'a str,
    lease_seconds: i32,
    now: DateTime<Utc>,
    max_windows: Option<u64>,
}

async fn run_live_job(
    conn: &mut Conn,
    live: &LiveRun<'_>,
    claims: Vec<Claim>,
    leases: &Leases,
    kill: &CancellationToken,
    report: &mut LaneReport,
) -> bool {
    let mut backoff = Backoff::default();
    let error = loop {
        let Some(client) = conn.get(kill).await else {
            return false;
        };
        let call = tokio::select! {
            r = live::advance(client, &claims, live.worker, live.lease_seconds) => r,
            _ = kill.cancelled() => {
                conn.broken();
                return false;
            }
        };
        match call {
            Ok(advanced) => {
                tracing::info!(
                    tasks = advanced.len(),
                    ms = advanced
                        .first()
                        .map(|a| a.run.elapsed.as_millis() as u64)
                        .unwrap_or(0),
                    "advanced live tasks"
                );
                let mut symbols: Vec<Symbol> = claims.iter().map(|c| c.symbol.clone()).collect();
                symbols.dedup();
                report.dependents = Some(symbols);
                for a in advanced {
                    match a.finished {
                        Some(f) => {
                            lease::forget(leases, &a.symbol, a.run.timeframe);
                            report.runs.push((a.symbol, a.run, Some(f)));
                        }
                        None => report.late.push(a.run),
                    }
                }
                return true;
            }
            Err(e) if is_transient(&e) => {
                conn.broken();
                tracing::warn!(tasks = claims.len(), "live run failed, retrying: {e:#}");
                if !backoff.wait(kill).await {
                    return false;
                }
            }
            Err(e) => break e,
        }
    };
    tracing::warn!(
        tasks = claims.len(),
        "live run failed; running these tasks on the fast path: {error:#}"
    );
    let Some(client) = conn.get(kill).await else {
        return false;
    };
    let jobs = match plan_jobs(client, claims, live.now, live.max_windows).await {
        Ok(jobs) => jobs,
        Err(e) => {
            // The leases expire and another claim redoes the tasks.
            tracing::error!("planning the fast path failed: {e:#}");
            return true;
        }
    };
    for job in jobs {
        if !run_symbol_job(conn, &job, leases, kill, report).await {
            return false;
        }
    }
    true
}

/// Record a run, retrying transient failures until it is recorded or
/// `kill` is cancelled (an unrecorded run's lease expires and another
/// claim redoes it).
async fn finish_with_retry(
    conn: &mut Conn,
    symbol: &Symbol,
    run: &TaskRun,
    kill: &CancellationToken,
) -> Option<Finished> {
    let mut backoff = Backoff::default();
    loop {
        let client = conn.get(kill).await?;
        match lease::finish(client, symbol, run).await {
            Ok(f) => return Some(f),
            Err(e) if is_transient(&e) => {
                conn.broken();
                tracing::warn!(symbol = %symbol, timeframe = %run.timeframe, "recording a run failed, retrying: {e:#}");
                if !backoff.wait(kill).await {
                    return None;
                }
            }
            Err(e) => {
                tracing::error!(symbol = %symbol, timeframe = %run.timeframe, "recording a run failed: {e:#}");
                return None;
            }
        }
    }
}

/// Renew every held lease a few times per lease period, in one call.
async fn heartbeat_loop(
    mut conn: Conn,
    leases: Leases,
    lease_seconds: i32,
    kill: CancellationToken,
) {
    let period =
        StdDuration::from_millis((u64::try_from(lease_seconds).unwrap_or(1) * 1000 / 3).max(200));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = kill.cancelled() => return,
        }
        let held: Vec<((Symbol, Timeframe), uuid::Uuid)> = match leases.lock() {
            Ok(l) => l.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            Err(_) => return,
        };
        if held.is_empty() {
            continue;
        }
        let Some(client) = conn.get(&kill).await else {
            return;
        };
        match lease::heartbeat(client, &held, lease_seconds).await {
            Ok(lost) if !lost.is_empty() => {
                tracing::debug!(lost = lost.len(), "leases no longer held");
            }
            Ok(_) => {}
            Err(e) => {
                conn.broken();
                tracing::warn!("heartbeat failed, retrying: {e:#}");
            }
        }
    }
}

/// Keep a LISTEN connection open on barkeep_data, barkeep_registry and
/// barkeep_tasks (operator commands),
/// reconnecting with backoff, and pass what it hears on.
async fn listen_loop(db: Database, events: mpsc::UnboundedSender<Event>, kill: CancellationToken) {
    let mut backoff = Backoff::default();
    loop {
        let connected = async {
            let (client, rx) = db.connect_listening().await?;
            client
                .batch_execute("LISTEN barkeep_data; LISTEN barkeep_registry; LISTEN barkeep_tasks")
                .await
                .context("listening for new data")?;
            anyhow::Ok((client, rx))
        }
        .await;
        match connected {
            Ok((client, mut rx)) => {
                if backoff.attempts() > 0 {
                    tracing::warn!("listening for new data again");
                }
                backoff.reset();
                if events.send(Event::Listening).is_err() {
                    return;
                }
                loop {
                    tokio::select! {
                        n = rx.recv() => match n {
                            Some(n) => {
                                let event = match n.channel() {
                                    "barkeep_registry" => Event::Registry,
                                    "barkeep_tasks" => Event::Tasks,
                                    _ if n.payload() == "*" => Event::Data(None),
                                    _ => Event::Data(Some(
                                        n.payload().split(',').map(str::to_string).collect(),
                                    )),
                                };
                                if events.send(event).is_err() {
                                    return;
                                }
                            }
                            None => break,
                        },
                        _ = kill.cancelled() => return,
                    }
                }
                drop(client);
                tracing::warn!("the listening connection closed; reconnecting (polling meanwhile)");
            }
            Err(e) => {
                if backoff.attempts() == 0 {
                    tracing::warn!("cannot listen for new data, retrying: {e:#}");
                }
            }
        }
        if !backoff.wait(&kill).await {
            return;
        }
    }
}
