//! The work a lane does: the three kinds of [`Job`] the scheduler queues
//! (one symbol's ladder on the fast path, a group of live tasks advanced in
//! one call, the dependents such a group made due), how they are planned
//! from claims ([`plan_jobs`]), and [`LaneReport`], what a lane sends back.
//! How a lane runs each is in `lanes/run.rs`.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result};
use chrono::{DateTime, Duration, Utc};
use tokio_postgres::Client;

use super::lease::{Claim, Finished};
use crate::engine::{SymbolJob, TaskPlan, TaskRun};
use crate::model::Symbol;
use crate::model::{Calendar, Timeframe};

/// Work for a lane.
pub(super) enum Job {
    /// One symbol's claimed tasks, on the fast path.
    Symbol(SymbolJob),
    /// Claimed live tasks of whole symbols, advanced in one call.
    Live(LiveGroup),
    /// The tasks of these symbols that live groups made due (15m, 1h, ...
    /// after 5m), claimed and advanced in one call.
    Dependents(Vec<Symbol>),
}

/// Claimed live tasks of whole symbols; the claim's time and `max_windows`
/// serve the fast path if the live call cannot run.
pub(super) struct LiveGroup {
    pub(super) claims: Vec<Claim>,
    pub(super) now: DateTime<Utc>,
    pub(super) max_windows: Option<u64>,
}

impl Job {
    /// The claimed tasks of this job and their leases, to hand back when it
    /// is not run. Dependents are claimed inside their call: none yet.
    pub(super) fn claimed(&self) -> Vec<(Symbol, Timeframe, Option<uuid::Uuid>)> {
        match self {
            Job::Symbol(j) => j
                .tasks
                .iter()
                .map(|t| (j.symbol.clone(), t.timeframe, t.lease))
                .collect(),
            Job::Live(group) => group
                .claims
                .iter()
                .map(|c| (c.symbol.clone(), c.timeframe, Some(c.lease)))
                .collect(),
            Job::Dependents(_) => Vec::new(),
        }
    }
}

/// What a lane did with one job.
#[derive(Default)]
pub(super) struct LaneReport {
    pub(super) runs: Vec<(Symbol, TaskRun, Option<Finished>)>,
    pub(super) released: u64,
    /// A live group committed: the symbols whose dependents (15m after
    /// 5m, ...) are to be taken next, once the group's own rows are free.
    pub(super) dependents: Option<Vec<Symbol>>,
    /// Late data re-aggregated for tasks no run of this job held: counts only.
    pub(super) late: Vec<TaskRun>,
    /// Live calls that failed (logged; their tasks ran on the fast path).
    pub(super) live_errors: u64,
}

/// Group claims by symbol, look up calendars, bootstrap missing cursors.
pub(super) async fn plan_jobs(
    control: &Client,
    claims: Vec<Claim>,
    now: DateTime<Utc>,
    max_windows: Option<u64>,
) -> Result<Vec<SymbolJob>> {
    let symbols: Vec<String> = {
        let mut s: Vec<String> = claims.iter().map(|c| c.symbol.to_string()).collect();
        s.sort();
        s.dedup();
        s
    };
    let rows = control
        .query(
            "SELECT canonical_symbol, asset_class FROM core_asset_registry_all
             WHERE canonical_symbol = ANY($1)",
            &[&symbols],
        )
        .await
        .context("reading asset classes")?;
    let calendars: HashMap<String, Calendar> = rows
        .iter()
        .map(|r| (r.get(0), Calendar::for_asset_class(r.get(1))))
        .collect();
    let mut jobs: BTreeMap<Symbol, SymbolJob> = BTreeMap::new();
    for c in claims {
        let cursor = match c.cursor {
            Some(cursor) => cursor,
            None => control
                .query_one(
                    "SELECT agg_bootstrap_cursor($1, $2, $3)",
                    &[&c.symbol.as_str(), &c.timeframe.as_str(), &now],
                )
                .await
                .with_context(|| format!("bootstrapping the {} {} cursor", c.symbol, c.timeframe))?
                .get(0),
        };
        let job = jobs.entry(c.symbol.clone()).or_insert_with(|| SymbolJob {
            symbol: c.symbol.clone(),
            calendar: calendars
                .get(c.symbol.as_str())
                .copied()
                .unwrap_or(Calendar::Utc),
            tasks: Vec::new(),
            now,
            max_windows,
            derivation_version: 1,
        });
        job.tasks.push(TaskPlan {
            timeframe: c.timeframe,
            source: c.source,
            cursor,
            delay: Duration::seconds(c.delay_seconds.into()),
            lease: Some(c.lease),
        });
    }
    Ok(jobs.into_values().collect())
}
