//! What a worker run adds up to ([`Summary`], printed by `barkeep run` and
//! returned to the demo, the bench and the tests) and the one log line
//! each finished task run gets.

use std::collections::BTreeMap;

use super::lease::Finished;
use crate::engine::{TaskOutcome, TaskRun};
use crate::error::is_transient;
use crate::model::Symbol;

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
    /// Live calls (`agg_advance_live`) that failed with an error; their
    /// tasks went to the fast path or wait for the next claim.
    pub live_errors: u64,
}

impl Summary {
    pub(super) fn record(&mut self, run: &TaskRun) {
        self.tasks_run += 1;
        match run.outcome {
            TaskOutcome::Failed(_) => self.tasks_failed += 1,
            TaskOutcome::LeaseLost => self.leases_lost += 1,
            TaskOutcome::Done | TaskOutcome::More => {}
        }
        self.count_bars(run);
    }

    /// The bars a run wrote and the buckets it re-aggregated.
    pub(super) fn count_bars(&mut self, run: &TaskRun) {
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

/// One line per finished task run.
pub(super) fn log_run(symbol: &Symbol, run: &TaskRun, finished: Option<&Finished>) {
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
