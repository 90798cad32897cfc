//! Leases and task bookkeeping of the worker: claiming due tasks with
//! `agg_claim_tasks` (and `agg_claim_live` for the live path), renewing every held lease in one batched
//! `agg_heartbeat` call, recording outcomes with `agg_finish_runs` (fenced by the
//! lease token), handing back unstarted tasks with `agg_release`, waking
//! tasks on new data with `agg_wake`, and telling transient failures from
//! hard ones. Every task-state write of the worker goes through these SQL
//! functions (sql/functions/40_tasks.sql).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::engine::{TaskOutcome, TaskRun};
use crate::error::is_transient;
use crate::model::{Env, Symbol, Timeframe};

/// A claimed task as `agg_claim_tasks` returns it.
#[derive(Debug, Clone)]
pub(super) struct Claim {
    pub(super) symbol: Symbol,
    pub(super) timeframe: Timeframe,
    pub(super) source: Timeframe,
    pub(super) cursor: Option<DateTime<Utc>>,
    pub(super) delay_seconds: i32,
    pub(super) lease: Uuid,
    pub(super) recovered: bool,
}

/// Leases this process holds, renewed by the heartbeat.
pub(super) type Leases = Arc<Mutex<HashMap<(Symbol, Timeframe), Uuid>>>;

/// What both claims return, in the order `claims_of` reads it (then whether
/// the task was recovered, and the server's now).
const CLAIM_COLUMNS: &str = "c.canonical_symbol, c.timeframe, c.source_timeframe, \
     c.last_agg_bar_ts_utc, c.aggregation_delay_seconds, c.lease_token";

/// Claim up to `max_tasks` due tasks of `env`; also returns the server's now.
pub(super) async fn claim(
    control: &Client,
    env: Env,
    worker: &str,
    max_tasks: i32,
    lease_seconds: i32,
) -> Result<(Vec<Claim>, DateTime<Utc>)> {
    let rows = control
        .query(
            &format!("SELECT {CLAIM_COLUMNS}, c.recovered, now() FROM agg_claim_tasks($1, $2, now(), $3, $4) c"),
            &[&env.as_str(), &worker, &max_tasks, &lease_seconds],
        )
        .await
        .context("claiming due tasks")?;
    claims_of(control, rows).await
}

/// Claim up to `max_tasks` due tasks of `env` that are close to the present
/// (`agg_claim_live`), for the live path.
pub(super) async fn claim_live(
    control: &Client,
    env: Env,
    worker: &str,
    max_tasks: i32,
    lease_seconds: i32,
) -> Result<(Vec<Claim>, DateTime<Utc>)> {
    let rows = control
        .query(
            // How far behind the present a live task may be is SQL's
            // (agg_live_buckets_behind): NULL takes it.
            &format!("SELECT {CLAIM_COLUMNS}, false, now() FROM agg_claim_live($1, $2, now(), $3, $4, NULL) c"),
            &[&env.as_str(), &worker, &max_tasks, &lease_seconds],
        )
        .await
        .context("claiming due live tasks")?;
    claims_of(control, rows).await
}

/// Claims from the rows of a claim query, with the server's now.
async fn claims_of(
    control: &Client,
    rows: Vec<tokio_postgres::Row>,
) -> Result<(Vec<Claim>, DateTime<Utc>)> {
    let mut now = Utc::now();
    let mut claims = Vec::with_capacity(rows.len());
    for r in rows {
        now = r.get(7);
        let symbol: String = r.get(0);
        let tf: String = r.get(1);
        let src: String = r.get(2);
        let lease: Uuid = r.get(5);
        let symbol = match Symbol::parse(&symbol) {
            Ok(s) => s,
            Err(e) => {
                // A registry row barkeep cannot name: record it as a hard
                // failure so it ends up hard_failed instead of looping.
                let error = format!("{e:#}");
                control
                    .query_one(
                        "SELECT agg_finish($1, $2, false, NULL, '{}', 'hard', $3, now(), NULL, $4)",
                        &[&symbol, &tf, &error, &lease],
                    )
                    .await
                    .with_context(|| format!("failing the task of symbol {symbol:?}"))?;
                continue;
            }
        };
        claims.push(Claim {
            symbol,
            timeframe: Timeframe::parse(&tf)?,
            source: Timeframe::parse(&src)?,
            cursor: r.get(3),
            delay_seconds: r.get(4),
            lease,
            recovered: r.get(6),
        });
    }
    Ok((claims, now))
}

pub(super) fn hold(leases: &Leases, claims: &[Claim]) {
    if let Ok(mut held) = leases.lock() {
        for c in claims {
            held.insert((c.symbol.clone(), c.timeframe), c.lease);
        }
    }
}

pub(super) fn forget(leases: &Leases, symbol: &Symbol, tf: Timeframe) {
    if let Ok(mut held) = leases.lock() {
        held.remove(&(symbol.clone(), tf));
    }
}

/// Hand an unstarted task back, due at once; not recorded as a run.
pub(super) async fn release(
    client: &Client,
    symbol: &Symbol,
    tf: Timeframe,
    lease: Uuid,
) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT agg_release($1, $2, $3, now())",
            &[&symbol.as_str(), &tf.as_str(), &lease],
        )
        .await
        .with_context(|| format!("releasing {symbol} {tf}"))?
        .get(0))
}

/// What `agg_finish` made of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Finished {
    /// Recorded; the task's new status.
    Recorded(String),
    /// The lease had been taken over; nothing was recorded.
    LeaseLost,
}

/// Record a task's run with the state machine's finish transition
/// (`agg_finish_runs`, the set-based face of `agg_finish`), fenced by its
/// lease token: a typed row, or none when the lease was lost.
pub(super) async fn finish(client: &Client, symbol: &Symbol, run: &TaskRun) -> Result<Finished> {
    let (kind, error) = match &run.outcome {
        TaskOutcome::Done | TaskOutcome::More => (None, None),
        TaskOutcome::LeaseLost => return Ok(Finished::LeaseLost),
        TaskOutcome::Failed(e) => {
            let kind = if is_transient(e) { "transient" } else { "hard" };
            (Some(kind), Some(format!("{e:#}")))
        }
    };
    let count = |n: u64, what: &str| {
        i32::try_from(n).with_context(|| format!("{n} {what} do not fit the run log"))
    };
    let row = client
        .query_opt(
            // The hard-fail threshold is SQL's (agg_hard_fail_threshold).
            "SELECT task_status FROM agg_finish_runs(
               ARRAY[$1::text], ARRAY[$2::text], ARRAY[$3::uuid], ARRAY[$4::timestamptz],
               ARRAY[$5::timestamptz], ARRAY[$6::integer], ARRAY[$7::integer], now(), NULL,
               ARRAY[$8::boolean], ARRAY[$9::text], ARRAY[$10::text])",
            &[
                &symbol.as_str(),
                &run.timeframe.as_str(),
                &run.lease,
                &run.new_cursor,
                &run.start_cursor,
                &count(run.bars_created, "bars created")?,
                &count(run.bars_quality_poor, "bars of poor quality")?,
                &matches!(run.outcome, TaskOutcome::More),
                &kind,
                &error,
            ],
        )
        .await
        .with_context(|| format!("finishing {symbol} {}", run.timeframe))?;
    Ok(match row {
        Some(r) => Finished::Recorded(r.get(0)),
        None => Finished::LeaseLost,
    })
}

/// Make the 5m tasks of `symbols` (None: every symbol) whose next bucket
/// new 1m data completed due now.
pub(super) async fn wake(control: &Client, symbols: Option<&[String]>) -> Result<i32> {
    Ok(control
        .query_one("SELECT agg_wake($1, now())", &[&symbols])
        .await
        .context("waking tasks for new 1m data")?
        .get(0))
}

/// Renew every lease in `held` in one round trip; returns the leases that
/// are no longer ours.
pub(super) async fn heartbeat(
    client: &Client,
    held: &[((Symbol, Timeframe), Uuid)],
    lease_seconds: i32,
) -> Result<Vec<Uuid>> {
    let symbols: Vec<&str> = held.iter().map(|((s, _), _)| s.as_str()).collect();
    let tfs: Vec<&str> = held.iter().map(|((_, tf), _)| tf.as_str()).collect();
    let tokens: Vec<Uuid> = held.iter().map(|(_, l)| *l).collect();
    let rows = client
        .query(
            "SELECT t.tok FROM unnest($1::text[], $2::text[], $3::uuid[]) AS t (sym, tf, tok)
             WHERE NOT agg_heartbeat(t.sym, t.tf, t.tok, now(), $4)",
            &[&symbols, &tfs, &tokens, &lease_seconds],
        )
        .await
        .context("renewing leases")?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// When the worker should look again: the earliest `next_run_at` of its
/// env's idle tasks or lease expiry of running ones, and whether a running
/// task's lease has expired (a frozen or dead worker).
pub(super) async fn next_due(
    control: &Client,
    env: Env,
) -> Result<(Option<DateTime<Utc>>, bool, DateTime<Utc>)> {
    let row = control
        .query_one(
            "SELECT least(min(s.next_run_at) FILTER (WHERE s.status = 'idle'),
                          min(s.lease_expires_at) FILTER (WHERE s.status = 'running')),
                    coalesce(bool_or(s.status = 'running' AND s.lease_expires_at < now()), false),
                    now()
             FROM data_agg_state s
             JOIN core_asset_registry_all r ON r.canonical_symbol = s.canonical_symbol
             WHERE s.enabled AND s.status IN ('idle', 'running')
               AND CASE WHEN $1 = 'prod' THEN r.active ELSE r.test_active END",
            &[&env.as_str()],
        )
        .await
        .context("looking up the next due task")?;
    Ok((row.get(0), row.get(1), row.get(2)))
}

/// End the sessions of workers frozen past their lease (they hold row
/// locks the claim skips); returns how many were ended.
pub(super) async fn end_frozen_sessions(control: &Client, lease_seconds: i32) -> Result<i32> {
    let grace = (lease_seconds / 4).clamp(1, 15);
    Ok(control
        .query_one("SELECT agg_end_frozen_sessions(now(), $1)", &[&grace])
        .await
        .context("ending frozen worker sessions")?
        .get(0))
}

/// Tasks of `env` another worker is running under a live lease.
pub(super) async fn foreign_live_leases(control: &Client, env: Env, worker: &str) -> Result<i64> {
    Ok(control
        .query_one(
            "SELECT count(*) FROM data_agg_state s
             JOIN core_asset_registry_all r ON r.canonical_symbol = s.canonical_symbol
             WHERE s.enabled AND s.status = 'running' AND s.lease_expires_at >= now()
               AND s.lease_owner IS DISTINCT FROM $2
               AND CASE WHEN $1 = 'prod' THEN r.active ELSE r.test_active END",
            &[&env.as_str(), &worker],
        )
        .await
        .context("looking for other workers' leases")?
        .get(0))
}

/// Of `keys`, the tasks still waiting for a retry (idle and enabled after
/// a failure this worker recorded).
pub(super) async fn awaiting_retry(control: &Client, keys: &[(Symbol, Timeframe)]) -> Result<i64> {
    let symbols: Vec<&str> = keys.iter().map(|(s, _)| s.as_str()).collect();
    let tfs: Vec<&str> = keys.iter().map(|(_, tf)| tf.as_str()).collect();
    Ok(control
        .query_one(
            "SELECT count(*) FROM data_agg_state s
             JOIN unnest($1::text[], $2::text[]) AS k (sym, tf)
               ON s.canonical_symbol = k.sym AND s.timeframe = k.tf
             WHERE s.enabled AND s.status IN ('idle', 'running')
               AND (s.transient_fail_streak > 0 OR s.hard_fail_streak > 0)",
            &[&symbols, &tfs],
        )
        .await
        .context("looking up tasks waiting for a retry")?
        .get(0))
}

/// Hand back every task this worker holds in the database. Called only
/// when nothing is in flight, so each such lease belongs to no job: a claim
/// whose answer was lost with the connection (the server committed it, then
/// the connection died), or whose jobs could not be planned. Returns how
/// many were handed back.
pub(super) async fn release_orphans(control: &Client, worker: &str) -> Result<i64> {
    Ok(control
        .query_one(
            "SELECT count(*) FILTER (WHERE agg_release(s.canonical_symbol, s.timeframe, s.lease_token, now()))
             FROM data_agg_state s
             WHERE s.status = 'running' AND s.lease_owner = $1",
            &[&worker],
        )
        .await
        .context("handing back tasks of a lost claim")?
        .get(0))
}
