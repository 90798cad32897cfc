//! The live path of the worker (docs/DESIGN.md, "The live path"): tasks
//! that are close to the present finalize a bucket or two per run, so they
//! are claimed many at a time (`agg_claim_live`) and advanced in groups of
//! whole symbols by one call of `agg_advance_live`, which writes the bars,
//! moves the cursors and records every run with `agg_finish_runs` in one
//! transaction. The bars are those of the SQL face, which the tests hold
//! equal to the fast path's. A failing call is an error (the worker logs
//! and counts it, then runs the group on the fast path); its rows are read
//! column by column, never with defaults.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use tokio_postgres::Client;
use uuid::Uuid;

use super::lease::{Claim, Finished};
use crate::engine::{TaskOutcome, TaskRun};
use crate::model::{Symbol, Timeframe};

/// Most tasks advanced in one call (one transaction): small enough that
/// the first bars of a wave commit early and lanes share the wave.
pub(super) const GROUP_TASKS: usize = 120;

/// Split claims into groups of whole symbols of about `GROUP_TASKS` tasks.
pub(super) fn groups(claims: Vec<Claim>) -> Vec<Vec<Claim>> {
    let mut by_symbol: BTreeMap<Symbol, Vec<Claim>> = BTreeMap::new();
    for c in claims {
        by_symbol.entry(c.symbol.clone()).or_default().push(c);
    }
    let mut out: Vec<Vec<Claim>> = Vec::new();
    let mut current: Vec<Claim> = Vec::new();
    for (_, tasks) in by_symbol {
        if !current.is_empty() && current.len() + tasks.len() > GROUP_TASKS {
            out.push(std::mem::take(&mut current));
        }
        current.extend(tasks);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// One advanced task: its run and what `agg_finish` recorded; or, with
/// `finished` None, late data re-aggregated for a task the call did not
/// advance (its counts, no task run).
pub(super) struct Advanced {
    pub(super) symbol: Symbol,
    pub(super) run: TaskRun,
    pub(super) finished: Option<Finished>,
}

/// Advance a group of claimed live tasks in one transaction.
pub(super) async fn advance(
    client: &mut Client,
    claims: &[Claim],
    worker: &str,
    lease_seconds: i32,
) -> Result<Vec<Advanced>> {
    let symbols: Vec<&str> = claims.iter().map(|c| c.symbol.as_str()).collect();
    let tfs: Vec<Option<&str>> = claims.iter().map(|c| Some(c.timeframe.as_str())).collect();
    let tokens: Vec<Option<Uuid>> = claims.iter().map(|c| Some(c.lease)).collect();
    let claimed = (&symbols[..], &tfs[..], &tokens[..]);
    call(client, claims, claimed, worker, lease_seconds, false).await
}

/// Claim for `worker` (under a lease of `lease_seconds`) and advance, in
/// one transaction, the tasks of `symbols` that earlier live groups made
/// due: a 15m bar right after the 5m bar that completed it, without a claim
/// round in between. The worker queues these calls after the groups of a
/// claim, so every group's own bars commit first.
pub(super) async fn advance_dependents(
    client: &mut Client,
    symbols: &[Symbol],
    worker: &str,
    lease_seconds: i32,
) -> Result<Vec<Advanced>> {
    let names: Vec<&str> = symbols.iter().map(Symbol::as_str).collect();
    let no_tf: Vec<Option<&str>> = vec![None; names.len()];
    let no_token: Vec<Option<Uuid>> = vec![None; names.len()];
    let dependents = (&names[..], &no_tf[..], &no_token[..]);
    call(client, &[], dependents, worker, lease_seconds, true).await
}

/// Parallel arrays of symbols, timeframes and lease tokens.
type Tasks<'a> = (&'a [&'a str], &'a [Option<&'a str>], &'a [Option<Uuid>]);

/// One call of `agg_advance_live` in its own transaction.
async fn call(
    client: &mut Client,
    claims: &[Claim],
    (symbols, tfs, tokens): Tasks<'_>,
    worker: &str,
    lease_seconds: i32,
    take_dependents: bool,
) -> Result<Vec<Advanced>> {
    let started = std::time::Instant::now();
    let tx = client
        .transaction()
        .await
        .context("starting a live transaction")?;
    let rows = tx
        .query(
            "SELECT task_symbol, task_timeframe, outcome, task_status, cursor_from, cursor_to,
                    bars_created, bars_changed, bars_deleted, bars_quality_poor,
                    buckets_reaggregated
             FROM agg_advance_live($1::text[], $2::text[], $3::uuid[], now(), 1, $4, $5, $6)",
            &[
                &symbols,
                &tfs,
                &tokens,
                &worker,
                &lease_seconds,
                &take_dependents,
            ],
        )
        .await
        .with_context(|| format!("advancing {} live tasks", symbols.len()))?;
    tx.commit()
        .await
        .with_context(|| format!("committing {} live tasks", symbols.len()))?;
    let elapsed = started.elapsed();
    let leases: BTreeMap<(&str, &str), Uuid> = claims
        .iter()
        .map(|c| ((c.symbol.as_str(), c.timeframe.as_str()), c.lease))
        .collect();
    // Rows without a run ('late', 'lease_lost') carry no cursors; their
    // TaskRun is only counted, never recorded, so any instant does.
    let now = Utc::now();
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let row = LiveRow::read(&r)?;
        let lease = leases
            .get(&(row.symbol.as_str(), row.timeframe.as_str()))
            .copied();
        let status = |row: &LiveRow| {
            row.status.clone().with_context(|| {
                format!(
                    "agg_advance_live recorded {} {} without a status",
                    row.symbol, row.timeframe
                )
            })
        };
        let (outcome, finished) = match row.outcome.as_str() {
            "done" => (TaskOutcome::Done, Some(Finished::Recorded(status(&row)?))),
            "late" => (TaskOutcome::Done, None),
            "lease_lost" => (TaskOutcome::LeaseLost, Some(Finished::LeaseLost)),
            other => bail!(
                "agg_advance_live answered {} {} with the unknown outcome {other:?}",
                row.symbol,
                row.timeframe
            ),
        };
        let start_cursor = row.cursor_from.or(row.cursor_to).unwrap_or(now);
        out.push(Advanced {
            symbol: row.symbol,
            run: TaskRun {
                timeframe: row.timeframe,
                lease,
                start_cursor,
                new_cursor: row.cursor_to.unwrap_or(start_cursor),
                windows: 0,
                bars_created: row.bars_created,
                bars_changed: row.bars_changed,
                bars_deleted: row.bars_deleted,
                buckets_reaggregated: row.buckets_reaggregated,
                bars_quality_poor: row.bars_quality_poor,
                bars_skipped: 0,
                outcome,
                elapsed,
            },
            finished,
        });
    }
    Ok(out)
}

/// One row of `agg_advance_live`, read column by column: a NULL or
/// negative where a value belongs is an error, not a default.
struct LiveRow {
    symbol: Symbol,
    timeframe: Timeframe,
    outcome: String,
    status: Option<String>,
    cursor_from: Option<DateTime<Utc>>,
    cursor_to: Option<DateTime<Utc>>,
    bars_created: u64,
    bars_changed: u64,
    bars_deleted: u64,
    bars_quality_poor: u64,
    buckets_reaggregated: u64,
}

impl LiveRow {
    fn read(r: &tokio_postgres::Row) -> Result<Self> {
        let symbol: String = r.try_get("task_symbol").context("reading task_symbol")?;
        let timeframe: String = r
            .try_get("task_timeframe")
            .context("reading task_timeframe")?;
        let count = |column: &str| -> Result<u64> {
            let n: i32 = r
                .try_get(column)
                .with_context(|| format!("reading {column} of {symbol} {timeframe}"))?;
            u64::try_from(n).with_context(|| format!("{column} of {symbol} {timeframe} is {n}"))
        };
        Ok(Self {
            bars_created: count("bars_created")?,
            bars_changed: count("bars_changed")?,
            bars_deleted: count("bars_deleted")?,
            bars_quality_poor: count("bars_quality_poor")?,
            buckets_reaggregated: count("buckets_reaggregated")?,
            outcome: r.try_get("outcome").context("reading outcome")?,
            status: r.try_get("task_status").context("reading task_status")?,
            cursor_from: r.try_get("cursor_from").context("reading cursor_from")?,
            cursor_to: r.try_get("cursor_to").context("reading cursor_to")?,
            timeframe: Timeframe::parse(&timeframe)?,
            symbol: Symbol::parse(&symbol)?,
        })
    }
}
