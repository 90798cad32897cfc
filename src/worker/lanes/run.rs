//! How a lane runs each kind of [`Job`]: one symbol's ladder on the fast
//! path, a group of live tasks advanced in one call, the dependents such a
//! group made due. Every run is recorded with `agg_finish` before it is
//! reported, retried through transient failures
//! ([`Lane::finish_with_retry`]). A child of the lanes, so the job types
//! never import the lane that runs them.

use anyhow::Result;

use super::Lane;
use crate::engine::{SymbolJob, SymbolRunner, TaskRun};
use crate::error::is_transient;
use crate::model::Symbol;
use crate::worker::jobs::{plan_jobs, LaneReport, LiveGroup};
use crate::worker::lease::{self, Claim, Finished};
use crate::worker::live::{self, Advanced};
use crate::worker::retry::Backoff;

impl Lane {
    /// Run one symbol's tasks on the fast path and record each run. False
    /// when `kill` ended it (the open chunk is rolled back with the
    /// connection).
    pub(in crate::worker) async fn run_symbol_job(
        &mut self,
        job: &SymbolJob,
        report: &mut LaneReport,
    ) -> bool {
        let Some(client) = self.conn.get(&self.shared.kill).await else {
            return false;
        };
        let runs = tokio::select! {
            runs = SymbolRunner::new(client, job).run(|_| {}) => runs,
            _ = self.shared.kill.cancelled() => {
                // Dropping the connection rolls the open chunk back.
                self.conn.broken();
                return false;
            }
        };
        for run in runs {
            let finished = self.finish_with_retry(&job.symbol, &run).await;
            lease::forget(&self.shared.leases, &job.symbol, run.timeframe);
            report.runs.push((job.symbol.clone(), run, finished));
        }
        true
    }

    /// Advance a group of live tasks in one call, retrying transient
    /// failures (nothing of a failed call stays). If the call cannot run at
    /// all (an older schema, a bug), the tasks go the fast path instead.
    /// False when `kill` ended it.
    pub(in crate::worker) async fn run_live_job(
        &mut self,
        group: LiveGroup,
        report: &mut LaneReport,
    ) -> bool {
        match self.advance_live(&group.claims, report).await {
            Ok(done) => done,
            Err(error) => {
                report.live_errors += 1;
                tracing::warn!(
                    tasks = group.claims.len(),
                    "live run failed; running these tasks on the fast path: {error:#}"
                );
                self.run_on_fast_path(group, report).await
            }
        }
    }

    /// The live call with its retries: Ok(false) when `kill` ended it, an
    /// error when the call cannot run.
    async fn advance_live(&mut self, claims: &[Claim], report: &mut LaneReport) -> Result<bool> {
        let (worker, lease_seconds) = (&self.shared.worker, self.shared.lease_seconds);
        let mut backoff = Backoff::default();
        loop {
            let Some(client) = self.conn.get(&self.shared.kill).await else {
                return Ok(false);
            };
            let call = tokio::select! {
                r = live::advance(client, claims, worker, lease_seconds) => r,
                _ = self.shared.kill.cancelled() => {
                    self.conn.broken();
                    return Ok(false);
                }
            };
            match call {
                Ok(advanced) => {
                    self.report_live(claims, advanced, report);
                    return Ok(true);
                }
                Err(e) if is_transient(&e) => {
                    self.conn.broken();
                    tracing::warn!(tasks = claims.len(), "live run failed, retrying: {e:#}");
                    if !backoff.wait(&self.shared.kill).await {
                        return Ok(false);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A committed live group: its runs, and its symbols for the dependents
    /// call to come.
    fn report_live(&self, claims: &[Claim], advanced: Vec<Advanced>, report: &mut LaneReport) {
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
                    lease::forget(&self.shared.leases, &a.symbol, a.run.timeframe);
                    report.runs.push((a.symbol, a.run, Some(f)));
                }
                None => report.late.push(a.run),
            }
        }
    }

    /// A live group whose call cannot run, symbol by symbol on the fast
    /// path. False when `kill` ended it.
    async fn run_on_fast_path(&mut self, group: LiveGroup, report: &mut LaneReport) -> bool {
        let Some(client) = self.conn.get(&self.shared.kill).await else {
            return false;
        };
        let jobs = match plan_jobs(client, group.claims, group.now, group.max_windows).await {
            Ok(jobs) => jobs,
            Err(e) => {
                // The leases expire and another claim redoes the tasks.
                tracing::error!("planning the fast path failed: {e:#}");
                return true;
            }
        };
        for job in jobs {
            if !self.run_symbol_job(&job, report).await {
                return false;
            }
        }
        true
    }

    /// Claim and advance the tasks of `symbols` that live groups made due. A
    /// failure leaves them due for the next claim. False when `kill` ended it.
    pub(in crate::worker) async fn run_dependents_job(
        &mut self,
        symbols: &[Symbol],
        report: &mut LaneReport,
    ) -> bool {
        let (worker, lease_seconds) = (&self.shared.worker, self.shared.lease_seconds);
        let Some(client) = self.conn.get(&self.shared.kill).await else {
            return false;
        };
        let call = tokio::select! {
            r = live::advance_dependents(client, symbols, worker, lease_seconds) => r,
            _ = self.shared.kill.cancelled() => {
                self.conn.broken();
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
                    self.conn.broken();
                }
                report.live_errors += 1;
                tracing::warn!("advancing the tasks live groups made due: {e:#}");
            }
        }
        true
    }

    /// Record a run, retrying transient failures until it is recorded or
    /// `kill` is cancelled (an unrecorded run's lease expires and another
    /// claim redoes it).
    async fn finish_with_retry(&mut self, symbol: &Symbol, run: &TaskRun) -> Option<Finished> {
        let mut backoff = Backoff::default();
        loop {
            let client = self.conn.get(&self.shared.kill).await?;
            match lease::finish(client, symbol, run).await {
                Ok(f) => return Some(f),
                Err(e) if is_transient(&e) => {
                    self.conn.broken();
                    tracing::warn!(
                        symbol = %symbol,
                        timeframe = %run.timeframe,
                        "recording a run failed, retrying: {e:#}"
                    );
                    if !backoff.wait(&self.shared.kill).await {
                        return None;
                    }
                }
                Err(e) => {
                    tracing::error!(
                        symbol = %symbol,
                        timeframe = %run.timeframe,
                        "recording a run failed: {e:#}"
                    );
                    return None;
                }
            }
        }
    }
}
