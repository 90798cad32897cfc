//! The live path of the worker (docs/DESIGN.md, "The live path"): tasks
//! that are close to the present finalize a bucket or two per run, so they
//! are claimed many at a time (`agg_claim_live`) and advanced in groups of
//! whole symbols by one call of `agg_advance_live`, which writes the bars,
//! moves the cursors and records every run with `agg_finish` in one
//! transaction. The bars are those of the SQL face, which the tests hold
//! equal to the fast path's.

use std::collections::BTreeMap;

use anyhow::{anyhow, Context, Result};
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
                    buckets_reaggregated, error_text
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
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let symbol: String = r.get(0);
        let tf: String = r.get(1);
        let outcome: String = r.get(2);
        let status: Option<String> = r.get(3);
        let from: Option<DateTime<Utc>> = r.get(4);
        let to: Option<DateTime<Utc>> = r.get(5);
        let count = |i: usize| -> u64 { u64::try_from(r.get::<_, i32>(i)).unwrap_or(0) };
        let error: Option<String> = r.get(11);
        let lease = leases.get(&(symbol.as_str(), tf.as_str())).copied();
        let (outcome, finished) = match outcome.as_str() {
            "done" => (
                TaskOutcome::Done,
                Some(Finished::Recorded(status.unwrap_or_else(|| "idle".into()))),
            ),
            "late" => (TaskOutcome::Done, None),
            "lease_lost" => (TaskOutcome::LeaseLost, Some(Finished::LeaseLost)),
            _ => (
                TaskOutcome::Failed(anyhow!(
                    "{}",
                    error.unwrap_or_else(|| "the live run failed".into())
                )),
                Some(Finished::Recorded(status.unwrap_or_else(|| "idle".into()))),
            ),
        };
        let cursor = to.or(from).unwrap_or_else(Utc::now);
        out.push(Advanced {
            symbol: Symbol::parse(&symbol)?,
            run: TaskRun {
                timeframe: Timeframe::parse(&tf)?,
                lease,
                start_cursor: from.unwrap_or(cursor),
                new_cursor: cursor,
                windows: 0,
                bars_created: count(6),
                bars_changed: count(7),
                bars_deleted: count(8),
                buckets_reaggregated: count(10),
                bars_quality_poor: count(9),
                bars_skipped: 0,
                outcome,
                elapsed,
            },
            finished,
        });
    }
    Ok(out)
}
