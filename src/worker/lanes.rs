//! The lanes: a fixed number of spawned loops, one connection each (kept
//! across rounds), that take [`Job`]s from one queue and send a
//! [`LaneReport`] of each back to the scheduler. A lane stops when the
//! queue closes; once shutdown is requested it hands queued jobs back unrun
//! with `agg_release`, and once the grace period is over (`kill`) it
//! abandons the job in flight, whose open chunk rolls back with the
//! connection.

mod run;

use std::sync::Arc;

use anyhow::{bail, Result};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::jobs::{Job, LaneReport};
use super::lease;
use super::retry::Conn;
use super::Shared;
use crate::db::Database;

/// The queue all lanes take from: a free lane takes the next job.
type SharedQueue = Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>>;

/// The lanes as the scheduler sees them: a queue in, reports out.
pub(super) struct Lanes {
    /// None once closed: the lanes finish what is queued and stop.
    queue: Option<mpsc::UnboundedSender<Job>>,
    reports: mpsc::UnboundedReceiver<LaneReport>,
    handles: Vec<JoinHandle<()>>,
}

impl Lanes {
    /// Start `count` lanes, each with a connection of its own to `db`.
    pub(super) fn start(db: &Database, count: usize, shared: &Shared) -> Self {
        let (queue, jobs) = mpsc::unbounded_channel::<Job>();
        let jobs: SharedQueue = Arc::new(tokio::sync::Mutex::new(jobs));
        let (report_tx, reports) = mpsc::unbounded_channel::<LaneReport>();
        let handles = (0..count)
            .map(|_| {
                let lane = Lane {
                    conn: Conn::new(db.clone(), "lane"),
                    shared: shared.clone(),
                    jobs: jobs.clone(),
                    reports: report_tx.clone(),
                };
                tokio::spawn(lane.run())
            })
            .collect();
        Self {
            queue: Some(queue),
            reports,
            handles,
        }
    }

    /// Queue a job for the next free lane.
    pub(super) fn send(&self, job: Job) -> Result<()> {
        match &self.queue {
            Some(queue) if queue.send(job).is_ok() => Ok(()),
            _ => bail!("every worker lane has stopped"),
        }
    }

    /// The next report; None when every lane has stopped.
    pub(super) async fn report(&mut self) -> Option<LaneReport> {
        self.reports.recv().await
    }

    /// A report already sent, without waiting.
    pub(super) fn report_sent(&mut self) -> Option<LaneReport> {
        self.reports.try_recv().ok()
    }

    /// Queue nothing more: each lane stops when the queue is empty.
    pub(super) fn close(&mut self) {
        self.queue = None;
    }

    /// Wait until every lane has stopped.
    pub(super) async fn join(&mut self) {
        for lane in self.handles.drain(..) {
            let _ = lane.await;
        }
    }
}

/// One lane: a connection working through jobs until the queue closes.
pub(super) struct Lane {
    pub(super) conn: Conn,
    pub(super) shared: Shared,
    jobs: SharedQueue,
    reports: mpsc::UnboundedSender<LaneReport>,
}

impl Lane {
    async fn run(mut self) {
        while let Some(job) = self.next_job().await {
            if self.shared.shutdown.is_cancelled() {
                let report = self.hand_back(job).await;
                // Handing back goes on whether or not the report is read.
                let _ = self.reports.send(report);
                continue;
            }
            let mut report = LaneReport::default();
            let done = match job {
                Job::Symbol(job) => self.run_symbol_job(&job, &mut report).await,
                Job::Live(group) => self.run_live_job(group, &mut report).await,
                Job::Dependents(symbols) => self.run_dependents_job(&symbols, &mut report).await,
            };
            if self.reports.send(report).is_err() || !done {
                return;
            }
        }
    }

    /// The next job; None when the queue is closed and empty, or at `kill`.
    async fn next_job(&self) -> Option<Job> {
        let mut jobs = self.jobs.lock().await;
        tokio::select! {
            job = jobs.recv() => job,
            _ = self.shared.kill.cancelled() => None,
        }
    }

    /// Hand a job's claimed tasks back unrun, due at once.
    async fn hand_back(&mut self, job: Job) -> LaneReport {
        let mut report = LaneReport::default();
        let Some(client) = self.conn.get(&self.shared.kill).await else {
            return report;
        };
        for (symbol, tf, lease) in job.claimed() {
            let Some(l) = lease else { continue };
            match lease::release(client, &symbol, tf, l).await {
                Ok(_) => {
                    report.released += 1;
                    lease::forget(&self.shared.leases, &symbol, tf);
                }
                Err(e) => tracing::warn!("{e:#}"),
            }
        }
        report
    }
}
