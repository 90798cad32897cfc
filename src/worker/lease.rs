//! Leases and task bookkeeping of the worker: claiming due tasks with
//! `agg_claim_tasks`, renewing held leases with `agg_heartbeat`, recording
//! outcomes with `agg_finish` (fenced by the lease token), handing back
//! unstarted tasks, and telling transient failures from hard ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;
use uuid::Uuid;

use super::RunArgs;
use crate::calendar::Timeframe;
use crate::db::Database;
use crate::engine::{SymbolJob, TaskOutcome};

/// A claimed task as `agg_claim_tasks` returns it.
#[derive(Debug, Clone)]
pub(super) struct Claim {
    pub(super) symbol: String,
    pub(super) timeframe: Timeframe,
    pub(super) source: Timeframe,
    pub(super) cursor: Option<DateTime<Utc>>,
    pub(super) delay_seconds: i32,
    pub(super) lease: Uuid,
    pub(super) recovered: bool,
}

/// Leases this process holds, renewed by the heartbeat.
pub(super) type Leases = Arc<Mutex<HashMap<(String, Timeframe), Uuid>>>;

/// Whether an error is worth retrying soon rather than counting as a hard failure.
pub fn is_transient(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        if let Some(pg) = cause.downcast_ref::<tokio_postgres::Error>() {
            if pg.is_closed() {
                return true;
            }
            if let Some(code) = pg.code() {
                return [
                    SqlState::T_R_SERIALIZATION_FAILURE,
                    SqlState::T_R_DEADLOCK_DETECTED,
                    SqlState::QUERY_CANCELED,
                    SqlState::LOCK_NOT_AVAILABLE,
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::CONNECTION_FAILURE,
                    SqlState::CONNECTION_EXCEPTION,
                    SqlState::TOO_MANY_CONNECTIONS,
                ]
                .contains(code);
            }
            // No SQL state: the socket or protocol failed underneath us.
            return true;
        }
        cause.downcast_ref::<std::io::Error>().is_some()
    })
}

pub(super) async fn wake_idle_tasks(control: &Client) -> Result<()> {
    control
        .execute(
            "UPDATE data_agg_state SET next_run_at = now()
             WHERE enabled AND status = 'idle' AND next_run_at > now()",
            &[],
        )
        .await
        .context("waking idle tasks")?;
    Ok(())
}

pub(super) async fn claim(
    control: &Client,
    args: &RunArgs,
    worker: &str,
) -> Result<(Vec<Claim>, DateTime<Utc>)> {
    let rows = control
        .query(
            "SELECT c.canonical_symbol, c.timeframe, c.source_timeframe, c.last_agg_bar_ts_utc,
                    c.aggregation_delay_seconds, c.lease_token, c.recovered, now()
             FROM agg_claim_tasks($1, $2, now(), $3, $4) c",
            &[&args.env, &worker, &args.batch, &args.lease_seconds],
        )
        .await
        .context("claiming due tasks")?;
    let mut now = Utc::now();
    let mut claims = Vec::with_capacity(rows.len());
    for r in rows {
        now = r.get(7);
        let tf: String = r.get(1);
        let src: String = r.get(2);
        claims.push(Claim {
            symbol: r.get(0),
            timeframe: Timeframe::parse(&tf)?,
            source: Timeframe::parse(&src)?,
            cursor: r.get(3),
            delay_seconds: r.get(4),
            lease: r.get(5),
            recovered: r.get(6),
        });
    }
    Ok((claims, now))
}

pub(super) fn forget(leases: &Leases, symbol: &str, tf: Timeframe) -> Result<()> {
    leases
        .lock()
        .map_err(|_| anyhow::anyhow!("lease table poisoned"))?
        .remove(&(symbol.to_string(), tf));
    Ok(())
}

/// Hand unstarted tasks back as due now (a successful no-op finish).
pub(super) async fn release(client: &Client, job: &SymbolJob, leases: &Leases) -> Result<()> {
    for t in &job.tasks {
        let stats = serde_json::json!({
            "lease_token": t.lease.map(|l| l.to_string()),
            "bars_created": 0, "bars_quality_poor": 0, "continue": true,
        });
        client
            .query_one(
                "SELECT agg_finish($1, $2, true, $3, $4, NULL, NULL, now(), 3)",
                &[&job.symbol, &t.timeframe.as_str(), &t.cursor, &stats],
            )
            .await
            .with_context(|| format!("releasing {} {}", job.symbol, t.timeframe))?;
        forget(leases, &job.symbol, t.timeframe)?;
    }
    Ok(())
}

/// Record a task's outcome with `agg_finish` (fenced by the lease token).
pub(super) async fn finish(client: &Client, symbol: &str, o: &TaskOutcome) -> Result<()> {
    if o.lease_lost {
        tracing::warn!(symbol, timeframe = %o.timeframe, "lease lost; another worker owns the task");
        return Ok(());
    }
    let stats = serde_json::json!({
        "lease_token": o.lease.map(|l| l.to_string()),
        "windows_processed": o.windows,
        "bars_created": o.bars_created,
        "bars_quality_poor": o.bars_quality_poor,
        "bars_skipped": o.bars_skipped,
        "continue": o.more,
        "cursor_from": o.start_cursor,
    });
    let (success, kind, error) = match &o.error {
        None => (true, None, None),
        Some(e) => {
            let kind = if is_transient(e) { "transient" } else { "hard" };
            tracing::warn!(symbol, timeframe = %o.timeframe, kind, "task failed: {e:#}");
            (false, Some(kind), Some(format!("{e:#}")))
        }
    };
    client
        .query_one(
            "SELECT agg_finish($1, $2, $3, $4, $5, $6, $7, now(), 3)",
            &[
                &symbol,
                &o.timeframe.as_str(),
                &success,
                &o.new_cursor,
                &stats,
                &kind,
                &error,
            ],
        )
        .await
        .with_context(|| format!("finishing {symbol} {}", o.timeframe))?;
    Ok(())
}

/// Renew every held lease a few times per lease period.
pub(super) async fn heartbeat_loop(database: Database, leases: Leases, lease_seconds: i32) {
    let period = std::time::Duration::from_secs((lease_seconds.max(3) / 3) as u64);
    let mut client: Option<Client> = None;
    loop {
        tokio::time::sleep(period).await;
        let held: Vec<((String, Timeframe), Uuid)> = match leases.lock() {
            Ok(l) => l.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            Err(_) => return,
        };
        if held.is_empty() {
            continue;
        }
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = database.connect().await.ok();
        }
        let Some(c) = client.as_ref() else { continue };
        for ((symbol, tf), lease) in held {
            if let Err(e) = c
                .query_one(
                    "SELECT agg_heartbeat($1, $2, $3, now(), $4)",
                    &[&symbol, &tf.as_str(), &lease, &lease_seconds],
                )
                .await
            {
                tracing::warn!("heartbeat for {symbol} {tf} failed: {e}");
            }
        }
    }
}
