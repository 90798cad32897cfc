//! The scheduler: the worker's loop and the state it owns. Each turn it
//! does one step of bookkeeping on the control connection (sync the env's
//! tasks, wake what new data made due, claim for the free lanes, hand back
//! orphaned leases, end frozen sessions), then sleeps until the next due
//! time, a lane's report, a notification or shutdown. A failed step is
//! retried after a backoff; with `--once` a hard failure ends the run.

mod claims;

use std::collections::HashSet;
use std::time::Duration as StdDuration;

use anyhow::Result;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::heartbeat;
use super::jobs::{Job, LaneReport};
use super::lanes::Lanes;
use super::lease;
use super::listener::Event;
use super::retry::{Backoff, Conn};
use super::summary::{log_run, Summary};
use super::{Shared, WorkerConfig};
use crate::engine::TaskOutcome;
use crate::error::is_transient;
use crate::model::Symbol;
use crate::model::Timeframe;

/// Longest idle sleep: the poll that backs up lost notifications.
const MAX_IDLE: StdDuration = StdDuration::from_secs(60);

/// The worker's loop and everything it keeps between turns.
pub(super) struct Scheduler<'a> {
    config: &'a WorkerConfig,
    /// This worker's name, its leases and its stop signals.
    shared: Shared,
    lanes: Lanes,
    /// What the listener hears (nothing with `--once`).
    events: mpsc::UnboundedReceiver<Event>,
    claim_wanted: bool,
    sync_wanted: bool,
    /// Symbols with new 1m data to wake (Some(None): all).
    wake: Option<Option<Vec<String>>>,
    /// Jobs queued or running in a lane.
    in_flight: usize,
    /// Tasks whose last run here failed.
    failing: HashSet<(Symbol, Timeframe)>,
    /// `--once` said once that it waits for other workers and retries.
    said_waiting: bool,
    summary: Summary,
}

impl<'a> Scheduler<'a> {
    /// A scheduler for `lanes`, starting from `summary` (what the run did
    /// before its loop: history pruned at start).
    pub(super) fn new(
        config: &'a WorkerConfig,
        shared: Shared,
        lanes: Lanes,
        events: mpsc::UnboundedReceiver<Event>,
        summary: Summary,
    ) -> Self {
        Self {
            config,
            shared,
            lanes,
            events,
            claim_wanted: true,
            sync_wanted: config.sync,
            // `--once` starts by waking what new or late data made due.
            wake: config.once.then_some(None),
            in_flight: 0,
            failing: HashSet::new(),
            said_waiting: false,
            summary,
        }
    }

    /// Turn until shutdown or, with `--once`, until nothing is left to do.
    pub(super) async fn run(&mut self, control: &mut Conn) -> Result<()> {
        let mut backoff = Backoff::default();
        loop {
            if self.shared.shutdown.is_cancelled() {
                return Ok(());
            }
            let Some(client) = control.get(&self.shared.shutdown).await else {
                return Ok(());
            };
            let wait = match self.step(client).await {
                Ok(wait) => {
                    backoff.reset();
                    wait
                }
                Err(e) => {
                    if is_transient(&e) {
                        control.broken();
                        tracing::warn!("database trouble, retrying: {e:#}");
                    } else if self.config.once {
                        return Err(e);
                    } else {
                        tracing::error!("worker step failed, retrying: {e:#}");
                    }
                    if !backoff.wait(&self.shared.shutdown).await {
                        return Ok(());
                    }
                    continue;
                }
            };
            let Some(wait) = wait else { continue };
            if self.config.once && self.in_flight == 0 && wait.is_zero() && !self.claim_wanted {
                return Ok(());
            }
            if !self.sleep(wait).await? {
                return Ok(());
            }
        }
    }

    /// One step of bookkeeping. None: step again at once; else how long to
    /// sleep (zero for `--once`: nothing is left).
    async fn step(&mut self, client: &Client) -> Result<Option<StdDuration>> {
        if self.sync_wanted {
            self.sync_tasks(client).await?;
        }
        if let Some(symbols) = self.wake.take() {
            let woke = lease::wake(client, symbols.as_deref()).await?;
            tracing::debug!(woke, "new 1m data");
            self.claim_wanted |= woke > 0;
        }
        let free = self.config.concurrency.saturating_sub(self.in_flight);
        if self.claim_wanted && free > 0 {
            if !self.claim_live(client).await? {
                self.claim_catch_up(client, free).await?;
            }
            return Ok(None);
        }
        if self.claim_wanted {
            // Lanes are busy: wait for a report.
            return Ok(Some(MAX_IDLE));
        }
        if self.in_flight == 0 && self.release_orphans(client).await? {
            return Ok(None);
        }
        self.next_wait(client).await.map(Some)
    }

    /// Sync the env's tasks from the registry.
    async fn sync_tasks(&mut self, client: &Client) -> Result<()> {
        let config = self.config;
        let r = crate::tasks::sync(client, config.env, config.sync_from, None).await?;
        if r.tasks_created + r.tasks_enabled + r.tasks_disabled > 0 {
            tracing::info!(
                created = r.tasks_created,
                enabled = r.tasks_enabled,
                disabled = r.tasks_disabled,
                "synced tasks from the registry"
            );
        }
        self.sync_wanted = false;
        self.claim_wanted = true;
        Ok(())
    }

    /// Nothing to claim now: end the sessions of workers frozen past their
    /// lease, and sleep until the next due time (at most [`MAX_IDLE`]).
    async fn next_wait(&mut self, client: &Client) -> Result<StdDuration> {
        let config = self.config;
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
        if config.once && self.in_flight == 0 {
            return self.once_wait(client, due, expired, now).await;
        }
        let wait = match due {
            Some(d) => (d - now).to_std().unwrap_or_default(),
            None => MAX_IDLE,
        };
        Ok(wait.clamp(StdDuration::from_millis(250), MAX_IDLE))
    }

    /// `--once` with nothing in flight: zero when it is done (no other
    /// worker's live lease, no retry of its own failures, no expired lease
    /// to recover), else a short wait for those.
    async fn once_wait(
        &mut self,
        client: &Client,
        due: Option<DateTime<Utc>>,
        expired: bool,
        now: DateTime<Utc>,
    ) -> Result<StdDuration> {
        let foreign =
            lease::foreign_live_leases(client, self.config.env, &self.shared.worker).await?;
        let keys: Vec<_> = self.failing.iter().cloned().collect();
        let retrying = if keys.is_empty() {
            0
        } else {
            lease::awaiting_retry(client, &keys).await?
        };
        if foreign == 0 && retrying == 0 && !expired {
            return Ok(StdDuration::ZERO);
        }
        if !self.said_waiting {
            tracing::info!(
                other_workers_tasks = foreign,
                retries = retrying,
                "nothing to claim yet; waiting for other workers' tasks and retries"
            );
            self.said_waiting = true;
        }
        Ok(due
            .map(|d| (d - now).to_std().unwrap_or_default())
            .unwrap_or(MAX_IDLE)
            .clamp(StdDuration::from_millis(200), StdDuration::from_secs(1)))
    }

    /// Queue a job for the lanes.
    fn dispatch(&mut self, job: Job) -> Result<()> {
        self.in_flight += 1;
        self.lanes.send(job)
    }

    /// Sleep until `wait` is over, a lane reports or a notification
    /// arrives; false at shutdown.
    async fn sleep(&mut self, wait: StdDuration) -> Result<bool> {
        tokio::select! {
            report = self.lanes.report() => match report {
                Some(report) => self.on_report(report)?,
                None => anyhow::bail!("every worker lane has stopped"),
            },
            Some(event) = self.events.recv() => self.on_event(event),
            _ = tokio::time::sleep(wait) => self.claim_wanted = true,
            _ = self.shared.shutdown.cancelled() => return Ok(false),
        }
        Ok(true)
    }

    /// A lane finished a job: count it, claim again, and queue the
    /// dependents of a live group that committed.
    fn on_report(&mut self, mut report: LaneReport) -> Result<()> {
        let dependents = report.dependents.take();
        self.absorb(report);
        self.claim_wanted = true;
        match dependents {
            Some(symbols) => self.dispatch(Job::Dependents(symbols)),
            None => Ok(()),
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Data(symbols) => {
                let merged = match (self.wake.take(), symbols) {
                    (Some(None), _) | (_, None) => None,
                    (Some(Some(mut a)), Some(b)) => {
                        a.extend(b);
                        Some(a)
                    }
                    (None, Some(b)) => Some(b),
                };
                self.wake = Some(merged);
            }
            Event::Registry => self.sync_wanted = self.config.sync,
            Event::Tasks => self.claim_wanted = true,
            Event::Listening => {
                self.wake = Some(None);
                self.sync_wanted = self.config.sync;
                self.claim_wanted = true;
            }
        }
    }

    /// Count a lane's report and log its runs.
    fn absorb(&mut self, report: LaneReport) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.summary.tasks_released += report.released;
        self.summary.live_errors += report.live_errors;
        for run in &report.late {
            self.summary.count_bars(run);
        }
        for (symbol, run, finished) in &report.runs {
            self.summary.record(run);
            log_run(symbol, run, finished.as_ref());
            let key = (symbol.clone(), run.timeframe);
            match &run.outcome {
                TaskOutcome::Failed(_) => {
                    self.failing.insert(key);
                }
                TaskOutcome::Done | TaskOutcome::More => {
                    self.failing.remove(&key);
                }
                TaskOutcome::LeaseLost => {}
            }
        }
    }

    /// Stop: no new claims; lanes hand back queued jobs and finish the one
    /// they run within `grace`, after which `kill` abandons it.
    pub(super) async fn wind_down(&mut self, grace: StdDuration) {
        self.lanes.close();
        let drain = async {
            while let Some(report) = self.lanes.report().await {
                self.absorb(report);
            }
        };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!(
                "grace period over; abandoning in-flight work and handing its tasks back"
            );
        }
        self.shared.kill.cancel();
        self.lanes.join().await;
        while let Some(report) = self.lanes.report_sent() {
            self.absorb(report);
        }
    }

    /// Leases still held belong to work that was cut off: hand them back,
    /// giving up after a few seconds (they expire anyway).
    pub(super) async fn hand_back_cut_off(&mut self, control: &mut Conn) {
        let left = heartbeat::held(&self.shared.leases).unwrap_or_default();
        if left.is_empty() {
            return;
        }
        let give_up = CancellationToken::new();
        let timer = give_up.clone();
        tokio::spawn(async move {
            tokio::time::sleep(StdDuration::from_secs(5)).await;
            timer.cancel();
        });
        if let Some(client) = control.get(&give_up).await {
            for ((symbol, tf), lease) in left {
                if lease::release(client, &symbol, tf, lease).await.is_ok() {
                    self.summary.tasks_released += 1;
                }
            }
        }
    }

    /// The run's totals.
    pub(super) fn into_summary(self) -> Summary {
        Summary {
            tasks_still_failing: self.failing.len() as u64,
            ..self.summary
        }
    }
}
