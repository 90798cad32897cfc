//! `/metrics`: Prometheus text exposition (format 0.0.4) computed from the
//! database at scrape time, so any number of workers on any machines are
//! seen through one scrape. Names follow the exporter conventions: the
//! `barkeep_` prefix, `_total` for counters, base units (`_seconds`).
//!
//! Run durations and failures by kind come from `agg_run_log`, which keeps
//! the newest 10,000 runs: they count the retained runs, so they can drop
//! when the log is pruned (Prometheus reads a drop as a counter reset).
//!
//! # Cost of a scrape
//!
//! A scrape reads on two pooled connections at once, so the database works
//! on both halves in parallel: on one, the tasks in a single pass over
//! `data_agg_state` (each task's series, the due and expired counts and the
//! counters summed per timeframe all come from those rows); on the other,
//! pipelined, the newest 1m bar of every symbol, one pass over the run log
//! for the duration histogram and the failures by kind, and the quarantine
//! size. Each task's label set is escaped and written once and reused by
//! every per-task family.
//!
//! Scrapes are never cached: each one reads the database, except that a
//! scrape arriving while another is being computed waits for it and shares
//! its result (its values were read at most one computation before it
//! arrived), so concurrent scrapers cost one computation, not one each.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::Mutex;
use tokio_postgres::Client;

use super::error::ApiError;
use super::AppState;

mod read;

use read::{Counters, LogRead, TaskRead};

/// Upper bounds of the run-duration histogram, in seconds.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The states `barkeep_tasks` always reports, zero or not.
const STATES: [&str; 4] = ["idle", "running", "hard_failed", "disabled"];

/// The newest exposition, shared with scrapes that arrived while it was
/// being computed.
#[derive(Default)]
pub struct Scrapes {
    newest: Mutex<Option<(Instant, Bytes)>>,
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let arrived = Instant::now();
    // Held while computing: a scrape that arrives meanwhile waits here and
    // then takes the exposition finished after it arrived.
    let mut newest = state.metrics.newest.lock().await;
    if let Some((finished, body)) = newest.as_ref() {
        if *finished >= arrived {
            return exposition(body.clone());
        }
    }
    let started = Instant::now();
    let clients = tokio::try_join!(state.pool.get(), state.pool.get());
    let (tasks_client, log_client) = match clients {
        Ok(clients) => clients,
        Err(e) => {
            return ApiError {
                status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
                message: format!("the database is unavailable: {e}"),
            }
            .into_response()
        }
    };
    let rendered = render(&tasks_client, &log_client).await;
    drop((tasks_client, log_client));
    match rendered {
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
            let body = Bytes::from(text);
            *newest = Some((Instant::now(), body.clone()));
            exposition(body)
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

fn exposition(body: Bytes) -> Response {
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// Escape a label value (backslash, double quote, newline); most values
/// need none and are borrowed as they are.
fn label(v: &str) -> Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(v);
    }
    Cow::Owned(
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n"),
    )
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A count of milliseconds as seconds, written without going through a
/// float: `3600`, `12.5`, `-0.25`.
fn write_seconds(out: &mut String, ms: i64) {
    if ms < 0 {
        out.push('-');
    }
    let ms = ms.unsigned_abs();
    let _ = write!(out, "{}", ms / 1000);
    let mut frac = ms % 1000;
    if frac != 0 {
        let mut digits = 3;
        while frac.is_multiple_of(10) {
            frac /= 10;
            digits -= 1;
        }
        let _ = write!(out, ".{frac:0digits$}");
    }
}

/// Every metric family but the scrape's own duration, as text, read on two
/// connections at once.
pub async fn render(tasks_client: &Client, log_client: &Client) -> Result<String> {
    let (tasks, log) =
        tokio::try_join!(read::read_tasks(tasks_client), read::read_log(log_client))?;
    Ok(write(&tasks, &log))
}

fn write(read: &TaskRead, log: &LogRead) -> String {
    // About 270 bytes of series per task, sized once rather than regrown.
    let mut out = String::with_capacity(16 * 1024 + read.tasks.len() * 320);

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
    for t in &read.tasks {
        let newest = log.newest_1m.get(&t.symbol);
        if let (Some(cursor), Some(newest)) = (t.cursor, newest) {
            out.push_str("barkeep_task_lag_seconds{");
            out.push_str(&t.labels);
            out.push_str("} ");
            write_seconds(&mut out, (*newest - cursor).num_milliseconds().max(0));
            out.push('\n');
        }
    }
    family(
        &mut out,
        "barkeep_task_seconds_since_success",
        "gauge",
        "Seconds since the task's last successful run.",
    );
    for t in &read.tasks {
        if let Some(at) = t.last_success {
            out.push_str("barkeep_task_seconds_since_success{");
            out.push_str(&t.labels);
            out.push_str("} ");
            write_seconds(&mut out, (read.now - at).num_milliseconds());
            out.push('\n');
        }
    }
    family(
        &mut out,
        "barkeep_task_status",
        "gauge",
        "1 for the task's current status (idle, running, hard_failed, disabled).",
    );
    for t in &read.tasks {
        out.push_str("barkeep_task_status{");
        out.push_str(&t.labels);
        out.push_str(",status=\"");
        out.push_str(&label(&t.status));
        out.push_str("\"} 1\n");
    }
    family(
        &mut out,
        "barkeep_task_hard_fail_streak",
        "gauge",
        "Consecutive hard failures of the task.",
    );
    for t in &read.tasks {
        out.push_str("barkeep_task_hard_fail_streak{");
        out.push_str(&t.labels);
        let _ = writeln!(out, "}} {}", t.hard_fail_streak);
    }

    family(&mut out, "barkeep_tasks", "gauge", "Tasks by status.");
    let mut by_status: BTreeMap<&str, u64> = STATES.iter().map(|s| (*s, 0)).collect();
    for t in &read.tasks {
        *by_status.entry(t.status.as_str()).or_default() += 1;
    }
    for (status, n) in &by_status {
        let _ = writeln!(out, "barkeep_tasks{{status=\"{}\"}} {n}", label(status));
    }

    family(
        &mut out,
        "barkeep_tasks_due_unclaimed",
        "gauge",
        "Enabled idle tasks whose next_run_at has passed and that no worker has claimed.",
    );
    let _ = writeln!(out, "barkeep_tasks_due_unclaimed {}", read.due_unclaimed);
    family(
        &mut out,
        "barkeep_leases_expired",
        "gauge",
        "Running tasks whose lease expired and that no worker has recovered yet.",
    );
    let _ = writeln!(out, "barkeep_leases_expired {}", read.leases_expired);

    let counter = |out: &mut String, name: &str, help: &str, value: fn(&Counters) -> i64| {
        family(out, name, "counter", help);
        for ((_, tf), sums) in &read.counters {
            let _ = writeln!(out, "{name}{{timeframe=\"{}\"}} {}", label(tf), value(sums));
        }
    };
    counter(
        &mut out,
        "barkeep_bars_written_total",
        "Derived bars written by all runs, by timeframe (data_agg_state.total_bars_created).",
        |c| c.bars_written,
    );
    counter(
        &mut out,
        "barkeep_bars_quality_poor_total",
        "Derived bars written with quality_score <= 0, by timeframe.",
        |c| c.bars_quality_poor,
    );
    counter(
        &mut out,
        "barkeep_task_runs_total",
        "Finished task runs, by timeframe (data_agg_state.total_runs).",
        |c| c.runs,
    );
    if read.recoveries_kept {
        counter(
            &mut out,
            "barkeep_lease_recoveries_total",
            "Tasks taken over from a worker whose lease had expired, by timeframe (data_agg_state.lease_recoveries).",
            |c| c.lease_recoveries,
        );
    }

    family(
        &mut out,
        "barkeep_run_failures_total",
        "counter",
        "Failed runs in the retained run log, by kind (transient, hard).",
    );
    for (kind, n) in &log.failures {
        let _ = writeln!(
            out,
            "barkeep_run_failures_total{{kind=\"{}\"}} {n}",
            label(kind)
        );
    }

    family(
        &mut out,
        "barkeep_run_duration_seconds",
        "histogram",
        "Durations of the runs in the retained run log (agg_run_log).",
    );
    for (le, n) in DURATION_BUCKETS.iter().zip(log.buckets) {
        let _ = writeln!(
            out,
            "barkeep_run_duration_seconds_bucket{{le=\"{le}\"}} {n}"
        );
    }
    let count = log.finished_runs;
    let _ = writeln!(
        out,
        "barkeep_run_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(out, "barkeep_run_duration_seconds_sum {}", log.duration_sum);
    let _ = writeln!(out, "barkeep_run_duration_seconds_count {count}");

    family(
        &mut out,
        "barkeep_quarantine_rows",
        "gauge",
        "Rows held in the ingest quarantine.",
    );
    let _ = writeln!(out, "barkeep_quarantine_rows {}", log.quarantined);
    out
}

#[cfg(test)]
mod tests {
    use super::{label, write_seconds};

    #[test]
    fn label_values_are_escaped_only_when_they_need_it() {
        assert_eq!(label("EURUSD"), "EURUSD");
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn milliseconds_are_written_as_seconds_as_a_float_would_print_them() {
        for ms in [
            0i64, 1, 10, 250, 999, 1000, 3_600_000, 12_500, 86_400_123, -250, -60_000,
        ] {
            let mut out = String::new();
            write_seconds(&mut out, ms);
            assert_eq!(out, format!("{}", ms as f64 / 1000.0), "{ms}");
            assert_eq!(out.parse::<f64>().unwrap(), ms as f64 / 1000.0);
        }
    }
}
