//! The fast aggregation path: catch up a symbol's tasks in ladder order,
//! chunk by chunk, reading sources with binary COPY, folding them in Rust
//! and writing bars plus the cursor advance in one transaction per chunk.
//!
//! Bars a task has just written are handed to its dependents in memory
//! (5m to 15m and 1h, 1h to 4h and 1d, 1d to 1w) instead of being read back,
//! whenever the dependent's range lies inside what was written; above a cap
//! the hand-off is dropped and dependents read from the database, so memory
//! stays bounded at any backlog.

pub mod fold;
pub mod late;
#[doc(hidden)]
pub mod pause;
pub mod sink;
pub mod source;

use std::collections::HashMap;

use anyhow::{Context, Result};
use chrono::{DateTime, Duration, Utc};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::model::calendar::{bucket_start, first_bucket_at_or_after};
use crate::model::{Bar, Calendar, DerivedBar, Symbol, Timeframe};
use fold::Window;
use sink::{begin_chunk, commit, rollback, write_chunk, ChunkTarget, Written};

/// Most source bars kept in memory per timeframe for the dependents.
const HANDOFF_CAP: usize = 200_000;

/// One task of a symbol job, its cursor already bootstrapped.
#[derive(Debug, Clone)]
pub struct TaskPlan {
    pub timeframe: Timeframe,
    pub source: Timeframe,
    /// Start of the next bucket to finalize.
    pub cursor: DateTime<Utc>,
    /// `aggregation_delay_seconds`.
    pub delay: Duration,
    /// The claim's lease token (None: unfenced).
    pub lease: Option<Uuid>,
}

/// The claimed tasks of one symbol, processed together in ladder order.
#[derive(Debug, Clone)]
pub struct SymbolJob {
    pub symbol: Symbol,
    pub calendar: Calendar,
    pub tasks: Vec<TaskPlan>,
    pub now: DateTime<Utc>,
    /// Stop a task after this many non-empty buckets (None: catch up fully).
    pub max_windows: Option<u64>,
    pub derivation_version: i32,
}

/// How a task's run ended.
#[derive(Debug)]
pub enum TaskOutcome {
    /// Caught up to its horizon.
    Done,
    /// Stopped at `max_windows` with more final buckets waiting.
    More,
    /// Another worker holds the task now; nothing more was written.
    LeaseLost,
    /// The run failed; what was committed before stays.
    Failed(anyhow::Error),
}

impl TaskOutcome {
    /// The error of a failed run.
    pub fn error(&self) -> Option<&anyhow::Error> {
        match self {
            TaskOutcome::Failed(e) => Some(e),
            _ => None,
        }
    }
}

/// How far one task got.
#[derive(Debug)]
pub struct TaskRun {
    pub timeframe: Timeframe,
    pub lease: Option<Uuid>,
    pub start_cursor: DateTime<Utc>,
    /// The committed cursor (unchanged when nothing was written).
    pub new_cursor: DateTime<Utc>,
    /// Non-empty buckets processed.
    pub windows: u64,
    /// Bars that did not exist before.
    pub bars_created: u64,
    /// Bars whose values changed: the old version retired, the new inserted.
    pub bars_changed: u64,
    /// Live bars retired because their bucket no longer qualifies.
    pub bars_deleted: u64,
    /// Late or corrected buckets behind the cursor re-aggregated.
    pub buckets_reaggregated: u64,
    pub bars_quality_poor: u64,
    pub bars_skipped: u64,
    pub outcome: TaskOutcome,
    /// Wall time of the run.
    pub elapsed: std::time::Duration,
}

/// Bars of one timeframe written in this job, covering [from, to).
struct Handoff {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bars: Vec<Bar>,
}

/// Span of source time read per chunk: at most about 130 thousand 1m rows.
/// Fewer, larger chunks mean fewer transactions and reads; the cost per row
/// of a read falls as the range grows. Source rows read from the database
/// are folded as they arrive (`source::fold_bars`), so a chunk holds only
/// its windows; 180 days of 1m was no faster than 90 and took more memory
/// (BENCHMARKS.md, "Folding rows as they arrive").
fn chunk_span(source: Timeframe) -> Duration {
    match source {
        Timeframe::M1 => Duration::days(90),
        Timeframe::M5 | Timeframe::M15 => Duration::days(150),
        Timeframe::H1 | Timeframe::H4 => Duration::days(600),
        Timeframe::D1 | Timeframe::W1 => Duration::days(20_000),
    }
}

/// The finality horizon H: a bucket is final when its end <= H. A task
/// reading 1m bars takes `reach` (the end of the newest 1m bar: once the
/// feed has reached a bucket's end the bucket is complete, without waiting
/// for the delay), capped at `now`, or `now - delay` when the feed is
/// quiet, whichever is later; a higher timeframe follows its source task's
/// cursor, capped at `now` (None while the source has none). The SQL rule is
/// `agg_finality_horizon` (sql/functions/30_catchup.sql); a test sweeps the
/// two over the same inputs (tests/it/state_machine.rs).
pub fn finality_horizon(
    source: Timeframe,
    now: DateTime<Utc>,
    delay: Duration,
    reach: Option<DateTime<Utc>>,
    source_cursor: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    if source != Timeframe::M1 {
        return source_cursor.map(|c| c.min(now));
    }
    let quiet = now - delay;
    Some(match reach {
        Some(reach) => quiet.max(reach.min(now)),
        None => quiet,
    })
}

/// Runs one symbol's tasks on one connection.
pub struct SymbolRunner<'c> {
    client: &'c mut Client,
    job: &'c SymbolJob,
    cursors: HashMap<Timeframe, Option<DateTime<Utc>>>,
    handoffs: HashMap<Timeframe, Handoff>,
}

impl<'c> SymbolRunner<'c> {
    pub fn new(client: &'c mut Client, job: &'c SymbolJob) -> Self {
        Self {
            client,
            job,
            cursors: HashMap::new(),
            handoffs: HashMap::new(),
        }
    }

    /// Process every task of the job in ladder order. `on_task` sees each
    /// outcome as soon as it is known (the worker finishes the task there).
    pub async fn run(mut self, mut on_task: impl FnMut(&TaskRun)) -> Vec<TaskRun> {
        let mut tasks = self.job.tasks.clone();
        tasks.sort_by_key(|t| t.timeframe);
        // Late and corrected data behind the cursors first, whole ladder.
        let late = match late::process_dirty(self.client, self.job.symbol.as_str()).await {
            Ok(report) => report,
            Err(e) => {
                tracing::warn!(symbol = %self.job.symbol, "re-aggregating late data: {e:#}");
                late::LateReport::default()
            }
        };
        let mut outcomes = Vec::with_capacity(tasks.len());
        for task in &tasks {
            let started = std::time::Instant::now();
            let mut outcome = TaskRun {
                timeframe: task.timeframe,
                lease: task.lease,
                start_cursor: task.cursor,
                new_cursor: task.cursor,
                windows: 0,
                bars_created: 0,
                bars_changed: 0,
                bars_deleted: 0,
                buckets_reaggregated: 0,
                bars_quality_poor: 0,
                bars_skipped: 0,
                outcome: TaskOutcome::Done,
                elapsed: std::time::Duration::ZERO,
            };
            if let Some(l) = late.timeframes.get(task.timeframe.as_str()) {
                outcome.buckets_reaggregated += l.buckets;
                outcome.bars_created += l.bars_created;
                outcome.bars_changed += l.bars_changed;
                outcome.bars_deleted += l.bars_deleted;
                outcome.bars_quality_poor += l.bars_quality_poor;
            }
            if let Err(e) = self.run_task(task, &mut outcome).await {
                outcome.outcome = TaskOutcome::Failed(e);
            }
            outcome.elapsed = started.elapsed();
            if matches!(
                outcome.outcome,
                TaskOutcome::LeaseLost | TaskOutcome::Failed(_)
            ) {
                // Our view of this task's cursor is no longer authoritative.
                self.cursors.remove(&task.timeframe);
                self.handoffs.remove(&task.timeframe);
            } else {
                self.cursors
                    .insert(task.timeframe, Some(outcome.new_cursor));
            }
            on_task(&outcome);
            outcomes.push(outcome);
        }
        outcomes
    }

    /// The committed cursor of the task (symbol, tf), from this job or the database.
    async fn cursor_of(&mut self, tf: Timeframe) -> Result<Option<DateTime<Utc>>> {
        if let Some(c) = self.cursors.get(&tf) {
            return Ok(*c);
        }
        let row = self
            .client
            .query_opt(
                "SELECT last_agg_bar_ts_utc FROM data_agg_state
                 WHERE canonical_symbol = $1 AND timeframe = $2",
                &[&self.job.symbol.as_str(), &tf.as_str()],
            )
            .await
            .with_context(|| format!("reading the {} {tf} cursor", self.job.symbol))?;
        let cursor = row.and_then(|r| r.get::<_, Option<DateTime<Utc>>>(0));
        self.cursors.insert(tf, cursor);
        Ok(cursor)
    }

    /// The windows of `task` over [from, to), folded from the hand-off when
    /// it covers the range, else from the database as the rows arrive.
    async fn windows(
        &mut self,
        task: &TaskPlan,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Window>> {
        let (cal, tf, source) = (self.job.calendar, task.timeframe, task.source);
        if let Some(h) = self.handoffs.get(&source) {
            if h.from <= from && to <= h.to {
                let lo = h.bars.partition_point(|b| b.ts < from);
                let hi = h.bars.partition_point(|b| b.ts < to);
                return Ok(fold::fold_all(cal, tf, &h.bars[lo..hi]));
            }
        }
        let symbol = self.job.symbol.as_str();
        source::fold_bars(self.client, symbol, source, from, to, cal, tf).await
    }

    /// Where the source gap starting at `from` ends: the start of the bucket
    /// of the next source bar before `limit`, or `limit`.
    async fn gap_end(
        &mut self,
        task: &TaskPlan,
        from: DateTime<Utc>,
        limit: DateTime<Utc>,
    ) -> Result<DateTime<Utc>> {
        let symbol = self.job.symbol.as_str();
        let next: Option<DateTime<Utc>> = self
            .client
            .query_one(
                "SELECT agg_next_source_ts($1, $2, $3, $4)",
                &[&symbol, &task.source.as_str(), &from, &limit],
            )
            .await
            .with_context(|| format!("finding the next {symbol} {} bar", task.source))?
            .get(0);
        Ok(match next {
            Some(ts) => bucket_start(self.job.calendar, task.timeframe, ts).clamp(from, limit),
            None => limit,
        })
    }

    /// The finality horizon of `task` (docs/DESIGN.md, "Finality"), from
    /// what [`finality_horizon`] reads. None: the source task has no cursor yet.
    async fn horizon(&mut self, task: &TaskPlan) -> Result<Option<DateTime<Utc>>> {
        let now = self.job.now;
        if task.source != Timeframe::M1 {
            let source_cursor = self.cursor_of(task.source).await?;
            return Ok(finality_horizon(
                task.source,
                now,
                task.delay,
                None,
                source_cursor,
            ));
        }
        let reach: Option<DateTime<Utc>> = self
            .client
            .query_one(
                "SELECT max(ts_utc) + interval '1 minute' FROM data_bars
                 WHERE canonical_symbol = $1 AND timeframe = '1m'",
                &[&self.job.symbol.as_str()],
            )
            .await
            .with_context(|| format!("reading how far the {} 1m data reaches", self.job.symbol))?
            .get(0);
        Ok(finality_horizon(task.source, now, task.delay, reach, None))
    }

    async fn run_task(&mut self, task: &TaskPlan, out: &mut TaskRun) -> Result<()> {
        let job = self.job;
        let (cal, tf) = (job.calendar, task.timeframe);
        let Some(horizon) = self.horizon(task).await? else {
            return Ok(());
        };
        let limit = bucket_start(cal, tf, horizon);
        let mut cursor = task.cursor;
        // Only timeframes a later task of this job reads from are worth keeping.
        let keep = job.tasks.iter().any(|t| t.source == tf);
        let mut handoff = Handoff {
            from: cursor,
            to: cursor,
            bars: Vec::new(),
        };
        let target = ChunkTarget {
            symbol: job.symbol.as_str(),
            calendar: cal,
            timeframe: tf,
            source: task.source,
            lease: task.lease,
            derivation_version: job.derivation_version,
        };
        while cursor < limit {
            if !begin_chunk(self.client, &target).await? {
                out.outcome = TaskOutcome::LeaseLost;
                return Ok(());
            }
            let step = self.chunk(task, &target, cursor, limit, out).await;
            let (chunk_end, bars, written) = match step {
                Ok(Some(done)) => done,
                Ok(None) => {
                    rollback(self.client).await;
                    break;
                }
                Err(e) => {
                    rollback(self.client).await;
                    return Err(e);
                }
            };
            commit(self.client, || {
                format!("{} {tf} bars up to {chunk_end}", job.symbol)
            })
            .await?;
            out.bars_created += written.created;
            out.bars_changed += written.changed;
            out.bars_deleted += written.deleted;
            out.bars_quality_poor += written.poor;
            cursor = chunk_end;
            out.new_cursor = cursor;
            if keep && handoff.bars.len() + bars.len() <= HANDOFF_CAP {
                handoff.bars.extend(bars);
                handoff.to = cursor;
            }
            if matches!(out.outcome, TaskOutcome::More) {
                break;
            }
        }
        if !matches!(out.outcome, TaskOutcome::More) && limit > out.new_cursor {
            out.new_cursor = limit;
        }
        if keep && handoff.to > handoff.from {
            self.handoffs.insert(tf, handoff);
        }
        Ok(())
    }

    /// One chunk inside its open transaction, the task row already locked:
    /// read the sources of [cursor, …), fold, write by the protocol and move
    /// the cursor. None when there is nothing to write.
    async fn chunk(
        &mut self,
        task: &TaskPlan,
        target: &ChunkTarget<'_>,
        cursor: DateTime<Utc>,
        limit: DateTime<Utc>,
        out: &mut TaskRun,
    ) -> Result<Option<(DateTime<Utc>, Vec<Bar>, Written)>> {
        let job = self.job;
        let (cal, tf) = (job.calendar, task.timeframe);
        let mut chunk_end =
            first_bucket_at_or_after(cal, tf, cursor + chunk_span(task.source)).min(limit);
        let mut windows = self.windows(task, cursor, chunk_end).await?;
        pause::point(job.symbol.as_str(), tf).await;
        if windows.is_empty() && chunk_end < limit {
            // A gap (a weekend, a halt, the time after the last source
            // bar): stretch the chunk over it so one transaction covers
            // it rather than one per span.
            chunk_end = self.gap_end(task, chunk_end, limit).await?;
        }
        if let Some(max) = job.max_windows {
            let room = max.saturating_sub(out.windows) as usize;
            if windows.len() >= room {
                windows.truncate(room);
                chunk_end = windows.last().map(|w| w.end).unwrap_or(cursor);
                out.outcome = TaskOutcome::More;
            }
        }
        if chunk_end <= cursor {
            return Ok(None);
        }
        let bars: Vec<&DerivedBar> = windows.iter().filter_map(|w| w.bar.as_ref()).collect();
        let written = write_chunk(self.client, target, cursor, chunk_end, &bars).await?;
        out.windows += windows.len() as u64;
        out.bars_skipped += (windows.len() - bars.len()) as u64;
        let made = bars.iter().map(|b| b.bar.clone()).collect();
        Ok(Some((chunk_end, made, written)))
    }
}
