//! The reads of a scrape, one half per connection: the tasks in one pass
//! over `data_agg_state` (each task's series, the due and expired counts,
//! the counters summed per timeframe), and, pipelined, the newest 1m bar of
//! every symbol, the run log in one pass (duration histogram, failures by
//! kind) and the quarantine size. Typed rows for [`super`] to write out.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use super::{label, DURATION_BUCKETS};
use crate::model::Timeframe;
use crate::ops::status::NEWEST_1M_OF_TASKS;

/// One task, as far as its series need it.
pub(super) struct TaskSeries {
    /// `symbol="…",timeframe="…"`, escaped once.
    pub(super) labels: String,
    pub(super) symbol: String,
    pub(super) rank: i32,
    pub(super) status: String,
    pub(super) cursor: Option<DateTime<Utc>>,
    pub(super) last_success: Option<DateTime<Utc>>,
    pub(super) hard_fail_streak: i32,
}

/// The counters kept on the tasks, summed over one timeframe.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) bars_written: i64,
    pub(super) bars_quality_poor: i64,
    pub(super) runs: i64,
    pub(super) lease_recoveries: i64,
}

/// What the task half of a scrape reads.
pub(super) struct TaskRead {
    pub(super) now: DateTime<Utc>,
    pub(super) tasks: Vec<TaskSeries>,
    pub(super) due_unclaimed: i64,
    pub(super) leases_expired: i64,
    /// By timeframe, in ladder order (rank, name).
    pub(super) counters: BTreeMap<(i32, String), Counters>,
    /// Whether the tasks have `lease_recoveries` (migration 10).
    pub(super) recoveries_kept: bool,
}

/// The tasks in one pass over `data_agg_state`.
pub(super) async fn read_tasks(client: &Client) -> Result<TaskRead> {
    let recoveries = crate::migrate::has_column(client, "data_agg_state", "lease_recoveries");
    let (_, recoveries_kept) =
        tokio::try_join!(crate::migrate::require_migrated(client), recoveries)?;
    // Only fixed text is spliced in.
    let sql = format!(
        "SELECT canonical_symbol, timeframe, status, hard_fail_streak, last_agg_bar_ts_utc,
                last_successful_at_utc,
                enabled AND status = 'idle' AND next_run_at <= now(),
                coalesce(status = 'running' AND lease_expires_at < now(), false),
                total_bars_created, total_bars_quality_poor, total_runs, {}, now()
         FROM data_agg_state",
        if recoveries_kept {
            "lease_recoveries"
        } else {
            "0::bigint"
        }
    );
    let rows = client
        .query(&sql, &[])
        .await
        .context("reading data_agg_state")?;
    let mut read = TaskRead {
        now: Utc::now(),
        tasks: Vec::with_capacity(rows.len()),
        due_unclaimed: 0,
        leases_expired: 0,
        counters: BTreeMap::new(),
        recoveries_kept,
    };
    for (i, r) in rows.iter().enumerate() {
        if i == 0 {
            read.now = r.get(12);
        }
        let symbol: String = r.get(0);
        let timeframe: &str = r.get(1);
        let rank = Timeframe::parse(timeframe)
            .map(Timeframe::rank)
            .unwrap_or(99);
        let mut labels = String::with_capacity(symbol.len() + timeframe.len() + 24);
        let _ = write!(
            labels,
            "symbol=\"{}\",timeframe=\"{}\"",
            label(&symbol),
            label(timeframe)
        );
        read.due_unclaimed += i64::from(r.get::<_, bool>(6));
        read.leases_expired += i64::from(r.get::<_, bool>(7));
        let sums = read
            .counters
            .entry((rank, timeframe.to_string()))
            .or_default();
        sums.bars_written += r.get::<_, i64>(8);
        sums.bars_quality_poor += r.get::<_, i64>(9);
        sums.runs += r.get::<_, i64>(10);
        sums.lease_recoveries += r.get::<_, i64>(11);
        read.tasks.push(TaskSeries {
            labels,
            symbol,
            rank,
            status: r.get(2),
            hard_fail_streak: r.get(3),
            cursor: r.get(4),
            last_success: r.get(5),
        });
    }
    read.tasks.sort_unstable_by(|a, b| {
        a.symbol
            .cmp(&b.symbol)
            .then(a.rank.cmp(&b.rank))
            .then(a.labels.cmp(&b.labels))
    });
    Ok(read)
}

/// What the other half of a scrape reads.
pub(super) struct LogRead {
    pub(super) newest_1m: HashMap<String, DateTime<Utc>>,
    /// Runs whose duration is at most each bound of [`DURATION_BUCKETS`].
    pub(super) buckets: [i64; DURATION_BUCKETS.len()],
    pub(super) finished_runs: i64,
    pub(super) duration_sum: f64,
    pub(super) failures: BTreeMap<String, i64>,
    pub(super) quarantined: i64,
}

/// The newest 1m bar of every symbol with a task, the run log in one pass,
/// and the quarantine size, pipelined on one connection.
pub(super) async fn read_log(client: &Client) -> Result<LogRead> {
    // width_bucket over the negated bounds, ascending, counts the bounds at
    // or above a run's duration (k): the run falls in bucket i (ascending,
    // `le` inclusive) exactly when k >= buckets - i. `OFFSET 0` computes the
    // duration once per run; date_part is float8 where extract is numeric.
    let negated: Vec<f64> = DURATION_BUCKETS.iter().rev().map(|b| -b).collect();
    let every_symbol: Option<&str> = None;
    let newest_params: [&(dyn ToSql + Sync); 1] = [&every_symbol];
    let runs_params: [&(dyn ToSql + Sync); 1] = [&negated];
    let newest = client.query(NEWEST_1M_OF_TASKS, &newest_params);
    let runs = client.query(
        "SELECT width_bucket(-d, $1::float8[]), failed, count(*), coalesce(sum(d), 0)::float8
         FROM (SELECT CASE WHEN finished_at IS NOT NULL
                           THEN date_part('epoch', finished_at - started_at) END AS d,
                      CASE WHEN status <> 'success' THEN coalesce(fail_kind, 'hard') END AS failed
               FROM agg_run_log OFFSET 0) runs
         GROUP BY 1, 2",
        &runs_params,
    );
    let quarantine = client.query_one("SELECT count(*) FROM ingest_quarantine", &[]);
    let (newest, runs, quarantine) = tokio::join!(newest, runs, quarantine);
    let newest = newest.context("finding each symbol's newest 1m bar")?;
    let runs = runs.context("reading the run log")?;
    let quarantined: i64 = quarantine.context("counting the quarantine")?.get(0);

    let mut read = LogRead {
        newest_1m: HashMap::with_capacity(newest.len()),
        buckets: [0; DURATION_BUCKETS.len()],
        finished_runs: 0,
        duration_sum: 0.0,
        failures: [("hard".to_string(), 0), ("transient".to_string(), 0)].into(),
        quarantined,
    };
    for r in &newest {
        if let Some(ts) = r.get::<_, Option<DateTime<Utc>>>(1) {
            read.newest_1m.insert(r.get(0), ts);
        }
    }
    let n = DURATION_BUCKETS.len();
    for r in &runs {
        let at_or_above: Option<i32> = r.get(0);
        let failed: Option<String> = r.get(1);
        let count: i64 = r.get(2);
        if let Some(k) = at_or_above {
            read.finished_runs += count;
            read.duration_sum += r.get::<_, f64>(3);
            let first = n.saturating_sub(k.max(0) as usize);
            for bucket in &mut read.buckets[first..] {
                *bucket += count;
            }
        }
        if let Some(kind) = failed {
            *read.failures.entry(kind).or_default() += count;
        }
    }
    Ok(read)
}
