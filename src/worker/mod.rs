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
//!
//! # Layout
//!
//! - `scheduler`: the loop and the state it owns: claims, dispatch to the
//!   lanes, their reports, the sleep until the next due time.
//! - `jobs`: the three kinds of job (a symbol on the fast path, a live
//!   group, its dependents) and how they are planned from claims; `lanes`:
//!   the lanes that run them, one connection each (`lanes/run.rs`: how a
//!   lane runs and records each kind).
//! - `listener`: the LISTEN connection; `heartbeat`: lease renewal;
//!   `retention`: pruning the as-of history.
//! - `lease`: the task-state calls (claim, finish, release, wake, ...);
//!   `live`: the live path's calls; `retry`: backoff and reconnecting.
//! - `config`: [`WorkerConfig`] and the sessions' settings; `summary`:
//!   [`Summary`] and the log line of a task run.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use anyhow::Result;

use crate::db::Database;

mod config;
mod heartbeat;
mod jobs;
mod lanes;
mod lease;
mod listener;
mod live;
mod retention;
mod retry;
mod scheduler;
mod summary;

pub use crate::error::{is_transient, is_transient_sqlstate};
pub use config::{worker_name, WorkerConfig};
pub use summary::Summary;

use lanes::Lanes;
use lease::Leases;
use listener::Event;
use retry::Conn;
use scheduler::Scheduler;

/// What the scheduler and its lanes share: who this worker is, the leases
/// it holds and its two stop signals.
#[derive(Clone)]
struct Shared {
    /// This worker's name: the owner of its leases, and of its sessions.
    worker: String,
    lease_seconds: i32,
    /// The leases held, renewed by the heartbeat; a lane forgets a task's
    /// lease once its run is recorded.
    leases: Leases,
    /// Shutdown requested: claim nothing more, hand queued jobs back unrun.
    shutdown: CancellationToken,
    /// The grace period is over: abandon the job in flight.
    kill: CancellationToken,
}

/// Run a worker until `shutdown` is cancelled or, with `config.once`,
/// until nothing is left to do.
pub async fn run_worker(
    database: &Database,
    config: &WorkerConfig,
    shutdown: CancellationToken,
) -> Result<Summary> {
    config.validate()?;
    // `kill` ends in-flight work when the grace period is over.
    let kill = CancellationToken::new();
    let shared = Shared {
        worker: worker_name(),
        lease_seconds: config.lease_seconds,
        leases: Leases::default(),
        shutdown: shutdown.clone(),
        kill: kill.clone(),
    };
    let db = config::session_database(database, &shared.worker, config.lease_seconds);
    let lanes = Lanes::start(&db, config.concurrency, &shared);
    let heartbeat = tokio::spawn(heartbeat::run(
        Conn::new(db.clone(), "heartbeat"),
        shared.leases.clone(),
        config.lease_seconds,
        kill.clone(),
    ));
    // `--once` does not listen (the sender is kept all the same).
    let (event_tx, events) = mpsc::unbounded_channel::<Event>();
    let listener = (!config.once)
        .then(|| tokio::spawn(listener::run(db.clone(), event_tx.clone(), kill.clone())));

    let mut control = Conn::new(db.clone(), "control");
    let mut summary = Summary::default();
    // `--once` prunes before it catches up (an error ends the run, as any
    // other would); a worker left running prunes every hour beside its work.
    let retention = match config.keep_history {
        Some(keep) if !config.once => Some(tokio::spawn(retention::retention_loop(
            Conn::new(db.clone(), "retention"),
            keep,
            kill.clone(),
        ))),
        Some(keep) => {
            if let Some(client) = control.get(&shutdown).await {
                summary.history_pruned = retention::prune_older_than(client, keep).await?;
            }
            None
        }
        None => None,
    };

    let mut scheduler = Scheduler::new(config, shared, lanes, events, summary);
    let result = scheduler.run(&mut control).await;
    scheduler.wind_down(config.grace).await;
    scheduler.hand_back_cut_off(&mut control).await;
    heartbeat.abort();
    for beside in listener.into_iter().chain(retention) {
        beside.abort();
    }
    let summary = scheduler.into_summary();
    result?;
    Ok(summary)
}
