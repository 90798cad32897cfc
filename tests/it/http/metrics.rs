//! `/metrics`: Prometheus text that says what the tables hold, whole under
//! concurrent scrapes, with lease recoveries counted per timeframe.

use crate::fixtures::demo_db;

use super::{get, serve};

/// The sum over timeframes of a counter family of `/metrics`.
fn metric_sum(text: &str, family: &str) -> Option<i64> {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .collect();
    (!lines.is_empty()).then(|| {
        lines
            .iter()
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<i64>().unwrap())
            .sum()
    })
}

/// The value of the one series `name` (with its labels) of an exposition.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}: {v}")))
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let db = demo_db().await;
    let server = serve(&db, &[]);
    let (status, text) = get(server.addr, "/metrics", None);
    assert_eq!(status, 200);
    for family in [
        "barkeep_up",
        "barkeep_task_lag_seconds",
        "barkeep_task_status",
        "barkeep_tasks_due_unclaimed",
        "barkeep_bars_written_total",
        "barkeep_run_failures_total",
        "barkeep_run_duration_seconds",
        "barkeep_leases_expired",
        "barkeep_quarantine_rows",
    ] {
        assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(name.starts_with("barkeep_"), "{line}");
        value.parse::<f64>().unwrap_or_else(|_| panic!("{line}"));
    }
    let five: i64 = db
        .count("SELECT count(*) FROM derived_data_bars WHERE timeframe = '5m'")
        .await;
    assert!(text.contains(&format!(
        "barkeep_bars_written_total{{timeframe=\"5m\"}} {five}\n"
    )));
    let runs = db.count("SELECT count(*) FROM agg_run_log").await;
    assert!(text.contains(&format!("barkeep_run_duration_seconds_count {runs}\n")));
    assert!(
        text.contains("barkeep_task_status{symbol=\"AUDUSD\",timeframe=\"1w\",status=\"idle\"} 1")
    );
}

#[tokio::test]
async fn metrics_say_what_the_tables_hold() {
    let db = demo_db().await;
    let c = db.client().await;
    // A run log with durations on and just past the histogram's bounds, a
    // run that never finished, and failures of both kinds; one task hard
    // failed, one due.
    c.batch_execute(
        "DELETE FROM agg_run_log;
         INSERT INTO agg_run_log (canonical_symbol, timeframe, started_at, finished_at, status, fail_kind)
         SELECT 'AUDUSD', '5m', timestamptz '2025-01-01 00:00+00',
                timestamptz '2025-01-01 00:00+00' + d * interval '1 second', s, k
         FROM (VALUES (0.005::float8, 'success', NULL), (0.0051, 'success', NULL),
                      (1.0, 'failed', 'transient'), (1.5, 'failed', NULL), (400.0, 'success', NULL)) v(d, s, k);
         INSERT INTO agg_run_log (canonical_symbol, timeframe, started_at, status)
         VALUES ('AUDUSD', '1h', now(), 'failed');
         UPDATE data_agg_state SET status = 'hard_failed', hard_fail_streak = 2 WHERE timeframe = '1d';
         UPDATE data_agg_state SET next_run_at = now() - interval '1 minute' WHERE timeframe = '4h';",
    )
    .await
    .unwrap();
    let server = serve(&db, &[]);
    let (status, text) = get(server.addr, "/metrics", None);
    assert_eq!(status, 200, "{text}");

    let bucket = |le: &str| {
        series(
            &text,
            &format!("barkeep_run_duration_seconds_bucket{{le=\"{le}\"}}"),
        )
    };
    for (le, n) in [
        ("0.005", 1.0),
        ("0.01", 2.0),
        ("0.5", 2.0),
        ("1", 3.0),
        ("2.5", 4.0),
        ("300", 4.0),
        ("+Inf", 5.0),
    ] {
        assert_eq!(bucket(le), Some(n), "le={le}: {text}");
    }
    assert_eq!(
        series(&text, "barkeep_run_duration_seconds_count"),
        Some(5.0)
    );
    let sum = series(&text, "barkeep_run_duration_seconds_sum").unwrap();
    assert!((sum - 402.5101).abs() < 1e-9, "{sum}");
    assert_eq!(
        series(&text, "barkeep_run_failures_total{kind=\"hard\"}"),
        Some(2.0)
    );
    assert_eq!(
        series(&text, "barkeep_run_failures_total{kind=\"transient\"}"),
        Some(1.0)
    );

    let rows = c
        .query(
            "SELECT s.canonical_symbol, s.timeframe, s.status, s.hard_fail_streak,
                    date_part('epoch', (SELECT max(b.ts_utc) FROM data_bars b
                                        WHERE b.canonical_symbol = s.canonical_symbol
                                          AND b.timeframe = '1m') - s.last_agg_bar_ts_utc)
             FROM data_agg_state s",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 6);
    for r in &rows {
        let labels = format!(
            "symbol=\"{}\",timeframe=\"{}\"",
            r.get::<_, &str>(0),
            r.get::<_, &str>(1)
        );
        let lag: Option<f64> = r.get(4);
        assert_eq!(
            series(&text, &format!("barkeep_task_lag_seconds{{{labels}}}")),
            lag.map(|l| l.max(0.0)),
            "{labels}"
        );
        let status: &str = r.get(2);
        assert_eq!(
            series(
                &text,
                &format!("barkeep_task_status{{{labels},status=\"{status}\"}}")
            ),
            Some(1.0),
            "{labels}"
        );
        assert_eq!(
            series(&text, &format!("barkeep_task_hard_fail_streak{{{labels}}}")),
            Some(f64::from(r.get::<_, i32>(3))),
            "{labels}"
        );
    }
    for status in ["idle", "running", "hard_failed", "disabled"] {
        let n = db
            .count(&format!(
                "SELECT count(*) FROM data_agg_state WHERE status = '{status}'"
            ))
            .await;
        assert_eq!(
            series(&text, &format!("barkeep_tasks{{status=\"{status}\"}}")),
            Some(n as f64),
            "{status}"
        );
    }
    assert_eq!(
        series(&text, "barkeep_tasks{status=\"hard_failed\"}"),
        Some(1.0)
    );
    let due = db
        .count(
            "SELECT count(*) FROM data_agg_state
             WHERE enabled AND status = 'idle' AND next_run_at <= now()",
        )
        .await;
    assert!(due >= 1);
    assert_eq!(
        series(&text, "barkeep_tasks_due_unclaimed"),
        Some(due as f64)
    );
    let runs = db
        .count("SELECT sum(total_runs)::bigint FROM data_agg_state")
        .await;
    assert_eq!(metric_sum(&text, "barkeep_task_runs_total"), Some(runs));

    // Scrapes at once all get the whole exposition.
    let scrapes: Vec<_> = (0..6)
        .map(|_| {
            let addr = server.addr;
            std::thread::spawn(move || get(addr, "/metrics", None))
        })
        .collect();
    for s in scrapes {
        let (status, body) = s.join().unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("barkeep_up 1\n"));
        assert!(body.contains("barkeep_quarantine_rows 0\n"), "{body}");
    }
}

#[tokio::test]
async fn a_task_taken_over_from_an_expired_lease_counts_as_a_lease_recovery() {
    let db = demo_db().await;
    let c = db.client().await;
    let server = serve(&db, &[]);
    let (_, text) = get(server.addr, "/metrics", None);
    assert!(
        text.contains("# TYPE barkeep_lease_recoveries_total counter"),
        "{text}"
    );
    assert_eq!(metric_sum(&text, "barkeep_lease_recoveries_total"), Some(0));

    // A worker claims two tasks in a day's time with a one-minute lease and
    // is never heard of again; the next day a second worker claims
    // everything due, taking those two over.
    let claim = |worker: &'static str, days: i32, max: i32| {
        let c = &c;
        async move {
            c.query(
                "SELECT c.timeframe, c.recovered FROM agg_claim_tasks('prod', $1,
                   now() + make_interval(days => $2), $3, 60) c",
                &[&worker, &days, &max],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, bool>(1)))
            .collect::<Vec<_>>()
        }
    };
    let first = claim("frozen", 1, 2).await;
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(first.iter().all(|(_, recovered)| !recovered));
    let (_, text) = get(server.addr, "/metrics", None);
    assert_eq!(
        metric_sum(&text, "barkeep_lease_recoveries_total"),
        Some(0),
        "a claim of idle tasks recovers nothing"
    );
    let second = claim("rescuer", 2, 10).await;
    let recovered: Vec<&String> = second
        .iter()
        .filter(|(_, r)| *r)
        .map(|(tf, _)| tf)
        .collect();
    assert_eq!(recovered.len(), 2, "{second:?}");
    // Renewing the rescuer's leases is no recovery either.
    c.execute(
        "SELECT agg_heartbeat(canonical_symbol, timeframe, lease_token, now() + interval '2 days', 60)
         FROM data_agg_state WHERE status = 'running'",
        &[],
    )
    .await
    .unwrap();

    let (_, text) = get(server.addr, "/metrics", None);
    assert_eq!(
        metric_sum(&text, "barkeep_lease_recoveries_total"),
        Some(2),
        "{text}"
    );
    for tf in recovered {
        assert!(
            text.contains(&format!(
                "barkeep_lease_recoveries_total{{timeframe=\"{tf}\"}} 1\n"
            )),
            "{tf}: {text}"
        );
    }
    assert_eq!(
        db.count("SELECT sum(lease_recoveries)::bigint FROM data_agg_state")
            .await,
        2
    );
}
