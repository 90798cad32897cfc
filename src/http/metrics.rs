//! `/metrics`: Prometheus text exposition (format 0.0.4) computed from the
//! database at scrape time, so any number of workers on any machines are
//! seen through one scrape. Names follow the exporter conventions: the
//! `barkeep_` prefix, `_total` for counters, base units (`_seconds`).
//!
//! Run durations and failures by kind come from `agg_run_log`, which keeps
//! the newest 10,000 runs: they count the retained runs, so they can drop
//! when the log is pruned (Prometheus reads a drop as a counter reset).

use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use tokio_postgres::Client;

use super::api::ApiError;
use super::AppState;
use crate::ops::status::{self, StatusSettings};

/// Upper bounds of the run-duration histogram, in seconds.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// `GET /metrics`.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let started = std::time::Instant::now();
    let client = match state.pool.get().await {
        Ok(c) => c,
        Err(e) => {
            return ApiError {
                status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
                message: format!("the database is unavailable: {e}"),
            }
            .into_response()
        }
    };
    match render(&client).await {
        Ok(mut text) => {
            family(
                &mut text,
                "barkeep_scrape_duration_seconds",
                "gauge",
                "Time this scrape took to compute.",
            );
            let _ = writeln!(
                text,
                "barkeep_scrape_duration_seconds {}",
                started.elapsed().as_secs_f64()
            );
            (
                [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                text,
            )
                .into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Minutes as seconds, to the millisecond.
fn seconds(minutes: f64) -> f64 {
    (minutes * 60_000.0).round() / 1000.0
}

/// Escape a label value (backslash, double quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Every metric family, as text.
pub async fn render(client: &Client) -> Result<String> {
    let mut out = String::with_capacity(64 * 1024);
    let (_, tasks) = status::tasks(client, &StatusSettings::default()).await?;

    family(
        &mut out,
        "barkeep_up",
        "gauge",
        "1 when the database answered this scrape.",
    );
    out.push_str("barkeep_up 1\n");

    family(
        &mut out,
        "barkeep_task_lag_seconds",
        "gauge",
        "Newest 1m bar of the symbol minus the task's cursor (start of the next bucket to finalize), never negative.",
    );
    for t in &tasks {
        if let Some(lag) = t.lag_minutes {
            let _ = writeln!(
                out,
                "barkeep_task_lag_seconds{{symbol=\"{}\",timeframe=\"{}\"}} {}",
                label(&t.symbol),
                t.timeframe,
                seconds(lag.max(0.0))
            );
        }
    }
    family(
        &mut out,
        "barkeep_task_seconds_since_success",
        "gauge",
        "Seconds since the task's last successful run.",
    );
    for t in &tasks {
        if let Some(m) = t.minutes_since_success {
            let _ = writeln!(
                out,
                "barkeep_task_seconds_since_success{{symbol=\"{}\",timeframe=\"{}\"}} {}",
                label(&t.symbol),
                t.timeframe,
                seconds(m)
            );
        }
    }
    family(
        &mut out,
        "barkeep_task_status",
        "gauge",
        "1 for the task's current status (idle, running, hard_failed, disabled).",
    );
    for t in &tasks {
        let _ = writeln!(
            out,
            "barkeep_task_status{{symbol=\"{}\",timeframe=\"{}\",status=\"{}\"}} 1",
            label(&t.symbol),
            t.timeframe,
            label(&t.status)
        );
    }
    family(
        &mut out,
        "barkeep_task_hard_fail_streak",
        "gauge",
        "Consecutive hard failures of the task.",
    );
    for t in &tasks {
        let _ = writeln!(
            out,
            "barkeep_task_hard_fail_streak{{symbol=\"{}\",timeframe=\"{}\"}} {}",
            label(&t.symbol),
            t.timeframe,
            t.hard_fail_streak
        );
    }

    family(&mut out, "barkeep_tasks", "gauge", "Tasks by status.");
    let mut by_status = std::collections::BTreeMap::<&str, u64>::new();
    for status in ["idle", "running", "hard_failed", "disabled"] {
        by_status.insert(status, 0);
    }
    for t in &tasks {
        *by_status.entry(t.status.as_str()).or_default() += 1;
    }
    for (status, n) in &by_status {
        let _ = writeln!(out, "barkeep_tasks{{status=\"{}\"}} {n}", label(status));
    }

    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE enabled AND status = 'idle' AND next_run_at <= now()),
                    count(*) FILTER (WHERE status = 'running' AND lease_expires_at < now())
             FROM data_agg_state",
            &[],
        )
        .await
        .context("counting due tasks")?;
    family(
        &mut out,
        "barkeep_tasks_due_unclaimed",
        "gauge",
        "Enabled idle tasks whose next_run_at has passed and that no worker has claimed.",
    );
    let _ = writeln!(out, "barkeep_tasks_due_unclaimed {}", row.get::<_, i64>(0));
    family(
        &mut out,
        "barkeep_leases_expired",
        "gauge",
        "Running tasks whose lease expired and that no worker has recovered yet.",
    );
    let _ = writeln!(out, "barkeep_leases_expired {}", row.get::<_, i64>(1));

    // The counters kept on the tasks, summed per timeframe; lease
    // recoveries only once migration 10 gave the tasks that column.
    let recoveries_kept: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute
                            WHERE attrelid = to_regclass('data_agg_state')
                              AND attname = 'lease_recoveries' AND NOT attisdropped)",
            &[],
        )
        .await
        .context("looking for data_agg_state.lease_recoveries")?
        .get(0);
    let counters = client
        .query(
            &format!(
                "SELECT timeframe, sum(total_bars_created)::bigint,
                        sum(total_bars_quality_poor)::bigint, sum(total_runs)::bigint, {}
                 FROM data_agg_state GROUP BY timeframe
                 ORDER BY array_position(ARRAY['5m','15m','1h','4h','1d','1w'], timeframe)",
                if recoveries_kept {
                    "sum(lease_recoveries)::bigint"
                } else {
                    "NULL::bigint"
                }
            ),
            &[],
        )
        .await
        .context("summing the task counters")?;
    let counter = |out: &mut String, name: &str, help: &str, column: usize| {
        family(out, name, "counter", help);
        for r in &counters {
            let tf: String = r.get(0);
            let n: i64 = r.get::<_, Option<i64>>(column).unwrap_or(0);
            let _ = writeln!(out, "{name}{{timeframe=\"{}\"}} {n}", label(&tf));
        }
    };
    counter(
        &mut out,
        "barkeep_bars_written_total",
        "Derived bars written by all runs, by timeframe (data_agg_state.total_bars_created).",
        1,
    );
    counter(
        &mut out,
        "barkeep_bars_quality_poor_total",
        "Derived bars written with quality_score <= 0, by timeframe.",
        2,
    );
    counter(
        &mut out,
        "barkeep_task_runs_total",
        "Finished task runs, by timeframe (data_agg_state.total_runs).",
        3,
    );
    if recoveries_kept {
        counter(
            &mut out,
            "barkeep_lease_recoveries_total",
            "Tasks taken over from a worker whose lease had expired, by timeframe (data_agg_state.lease_recoveries).",
            4,
        );
    }

    let failures = client
        .query(
            "SELECT coalesce(fail_kind, 'hard'), count(*) FROM agg_run_log
             WHERE status <> 'success' GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .context("counting failed runs")?;
    family(
        &mut out,
        "barkeep_run_failures_total",
        "counter",
        "Failed runs in the retained run log, by kind (transient, hard).",
    );
    let mut kinds: std::collections::BTreeMap<String, i64> =
        [("hard".to_string(), 0), ("transient".to_string(), 0)].into();
    for r in &failures {
        kinds.insert(r.get(0), r.get(1));
    }
    for (kind, n) in &kinds {
        let _ = writeln!(
            out,
            "barkeep_run_failures_total{{kind=\"{}\"}} {n}",
            label(kind)
        );
    }

    // One pass over the run log: a FILTER per bucket bound (each bound a
    // bind parameter), then the count and the sum. `OFFSET 0` keeps the
    // duration computed once per run rather than inlined into every FILTER,
    // and date_part is float8 where extract would be numeric.
    let filters: Vec<String> = (1..=DURATION_BUCKETS.len())
        .map(|i| format!("count(*) FILTER (WHERE d <= ${i})"))
        .collect();
    let bounds: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = DURATION_BUCKETS
        .iter()
        .map(|b| b as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    let totals = client
        .query_one(
            &format!(
                "SELECT {}, count(*), coalesce(sum(d), 0)::float8
                 FROM (SELECT date_part('epoch', finished_at - started_at) AS d
                       FROM agg_run_log WHERE finished_at IS NOT NULL OFFSET 0) runs",
                filters.join(", ")
            ),
            &bounds,
        )
        .await
        .context("reading run durations")?;
    family(
        &mut out,
        "barkeep_run_duration_seconds",
        "histogram",
        "Durations of the runs in the retained run log (agg_run_log).",
    );
    for (i, le) in DURATION_BUCKETS.iter().enumerate() {
        let n: i64 = totals.get(i);
        let _ = writeln!(
            out,
            "barkeep_run_duration_seconds_bucket{{le=\"{le}\"}} {n}"
        );
    }
    let n = DURATION_BUCKETS.len();
    let count: i64 = totals.get(n);
    let sum: f64 = totals.get(n + 1);
    let _ = writeln!(
        out,
        "barkeep_run_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(out, "barkeep_run_duration_seconds_sum {sum}");
    let _ = writeln!(out, "barkeep_run_duration_seconds_count {count}");

    let quarantined: i64 = client
        .query_one("SELECT count(*) FROM ingest_quarantine", &[])
        .await
        .context("counting the quarantine")?
        .get(0);
    family(
        &mut out,
        "barkeep_quarantine_rows",
        "gauge",
        "Rows held in the ingest quarantine.",
    );
    let _ = writeln!(out, "barkeep_quarantine_rows {quarantined}");
    Ok(out)
}
