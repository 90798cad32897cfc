//! `barkeep run --once` catches up the whole ladder; killed and restarted
//! runs, and two workers at once, end with exactly the bars of one clean
//! run; a worker that lost its lease writes nothing; `barkeep export`
//! prints what is stored.

use barkeep::engine::{SymbolJob, SymbolRunner, TaskPlan};
use barkeep::model::AssetClass;
use barkeep::model::{Calendar, Timeframe};
use barkeep::synth::SynthBar;
use chrono::{DateTime, Duration, Utc};

use crate::common::{stderr, stdout, TestDb};
use crate::fixtures::{live_bars, load_bars, load_fx, register, sample_bars, LiveBar};

/// A database holding `symbols` fx symbols of generated data, tasks synced.
async fn fx_db(symbols: &[&str], weeks: i64) -> TestDb {
    let db = TestDb::migrated().await;
    load_fx(&db.client().await, symbols, weeks * 7, 100).await;
    db
}

/// Equal bar lists, reported by the first difference rather than in full.
fn same_bars(got: &[LiveBar], expected: &[LiveBar]) {
    let first_diff = got.iter().zip(expected).position(|(g, e)| g != e);
    if let Some(i) = first_diff {
        panic!(
            "bar {i} differs:\n got      {:?}\n expected {:?}",
            got[i], expected[i]
        );
    }
    assert_eq!(got.len(), expected.len(), "bar counts differ");
}

fn run_once(db: &TestDb, extra: &[&str]) -> String {
    let mut args = vec!["run", "--once"];
    args.extend_from_slice(extra);
    let out = db.cli(&args);
    assert!(out.status.success(), "run failed: {}", stderr(&out));
    stdout(&out)
}

#[tokio::test]
async fn run_once_catches_up_the_whole_ladder_of_the_sample() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    register(&c, "AUDUSD", AssetClass::Fx, "2023-05-28T00:00:00Z").await;
    load_bars(&c, "AUDUSD", &sample_bars()).await;
    let summary: serde_json::Value = serde_json::from_str(&run_once(&db, &["--json"])).unwrap();
    let live = live_bars(&c).await;
    for tf in Timeframe::LADDER {
        let stored = live.iter().filter(|b| b.timeframe == tf.as_str()).count() as u64;
        assert!(stored > 0, "no {tf} bars");
        assert_eq!(summary["bars_created"][tf.as_str()], stored, "{tf}");
    }
    // Every task's cursor reached the present: nothing is left to finalize.
    let behind = db
        .count("SELECT count(*) FROM data_agg_state WHERE last_agg_bar_ts_utc < '2023-07-03' OR status <> 'idle'")
        .await;
    assert_eq!(behind, 0);
    // A second run has nothing to add.
    let again: serde_json::Value = serde_json::from_str(&run_once(&db, &["--json"])).unwrap();
    assert!(again["bars_created"]
        .as_object()
        .unwrap()
        .values()
        .all(|v| v == 0));
    assert_eq!(live_bars(&c).await, live);
}

#[tokio::test]
async fn killed_runs_resumed_give_exactly_the_bars_of_one_clean_run() {
    let symbols = ["EURUSD", "GBPUSD", "USDJPY"];
    let clean = fx_db(&symbols, 12).await;
    run_once(&clean, &[]);
    let expected = live_bars(&clean.client().await).await;

    let db = fx_db(&symbols, 12).await;
    let mut seed: u64 = 0x5eed;
    // 20 kills at random moments, each after 0.1 to 1 s of work. The
    // killed runs take small chunks on one lane, so that even on a fast,
    // quiet machine the catch-up outlasts most of the kills.
    let mut progressed = Vec::new();
    for _ in 0..20 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = 100 + (seed >> 33) % 900;
        let mut child = db
            .command(&[
                "run",
                "--once",
                "--max-windows",
                "60",
                "--concurrency",
                "1",
                "--lease-seconds",
                "1",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        let _ = child.kill();
        let _ = child.wait();
        // Let the killed run's leases expire so the next run recovers them.
        tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
        progressed.push(
            db.count("SELECT count(*) FROM derived_data_bars WHERE deleted_at IS NULL")
                .await,
        );
    }
    eprintln!("bars after each kill: {progressed:?}");
    // The kills fell during the catch-up, not after it.
    let total = expected.len() as i64;
    assert!(
        progressed.iter().filter(|&&n| n < total).count() >= 10,
        "most kills should interrupt work: bars after each kill {progressed:?} of {total}"
    );
    run_once(&db, &[]);
    same_bars(&live_bars(&db.client().await).await, &expected);
    // No bucket has two live bars, no bar lies at or past its task's
    // cursor, no cursor passed its source's, and nothing is left running.
    let checks = [
        "SELECT count(*) FROM (SELECT 1 FROM derived_data_bars WHERE deleted_at IS NULL
           GROUP BY canonical_symbol, timeframe, ts_utc HAVING count(*) > 1) d",
        "SELECT count(*) FROM derived_data_bars b JOIN data_agg_state s
           USING (canonical_symbol, timeframe)
         WHERE b.deleted_at IS NULL AND b.ts_utc >= s.last_agg_bar_ts_utc",
        "SELECT count(*) FROM data_agg_state t JOIN data_agg_state s
           ON s.canonical_symbol = t.canonical_symbol AND s.timeframe = t.source_timeframe
         WHERE t.last_agg_bar_ts_utc > s.last_agg_bar_ts_utc",
        "SELECT count(*) FROM data_agg_state WHERE status <> 'idle' OR lease_token IS NOT NULL",
    ];
    for sql in checks {
        assert_eq!(db.count(sql).await, 0, "{sql}");
    }
}

#[tokio::test]
async fn two_workers_in_parallel_give_the_same_bars_as_one() {
    let symbols = ["EURUSD", "GBPUSD", "AUDUSD", "NZDUSD"];
    let single = fx_db(&symbols, 3).await;
    run_once(&single, &[]);
    let expected = live_bars(&single.client().await).await;

    let db = fx_db(&symbols, 3).await;
    let spawn = || {
        db.command(&["run", "--once", "--max-windows", "500", "--batch", "6"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // Work left behind by a skipped lock is picked up by a last pass.
    run_once(&db, &[]);
    same_bars(&live_bars(&db.client().await).await, &expected);
    let failures = db
        .count("SELECT count(*) FROM agg_run_log WHERE status <> 'success'")
        .await;
    assert_eq!(failures, 0);
}

#[tokio::test]
async fn a_worker_that_lost_its_lease_writes_nothing() {
    let db = fx_db(&["EURUSD"], 2).await;
    let mut c = db.client().await;
    let row = c
        .query_one(
            "SELECT lease_token, last_agg_bar_ts_utc FROM agg_claim_tasks('prod', 'old', now(), 1, 60)",
            &[],
        )
        .await
        .unwrap();
    let old_lease: uuid::Uuid = row.get(0);
    let cursor_before: Option<DateTime<Utc>> = row.get(1);
    // The lease expired and another worker took the task over.
    c.execute(
        "UPDATE data_agg_state SET lease_token = gen_random_uuid() WHERE timeframe = '5m'",
        &[],
    )
    .await
    .unwrap();
    let job = SymbolJob {
        symbol: barkeep::model::Symbol::parse("EURUSD").unwrap(),
        calendar: Calendar::Fx,
        tasks: vec![TaskPlan {
            timeframe: Timeframe::M5,
            source: Timeframe::M1,
            cursor: cursor_before.unwrap(),
            delay: Duration::zero(),
            lease: Some(old_lease),
        }],
        now: Utc::now(),
        max_windows: None,
        derivation_version: 1,
    };
    let outcomes = SymbolRunner::new(&mut c, &job).run(|_| {}).await;
    assert!(matches!(
        outcomes[0].outcome,
        barkeep::engine::TaskOutcome::LeaseLost
    ));
    assert_eq!(outcomes[0].bars_created, 0);
    assert_eq!(db.count("SELECT count(*) FROM derived_data_bars").await, 0);
    let cursor_after: Option<DateTime<Utc>> = c
        .query_one(
            "SELECT last_agg_bar_ts_utc FROM data_agg_state WHERE timeframe = '5m'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(cursor_after, cursor_before, "the cursor did not move");
}

#[tokio::test]
async fn export_prints_what_is_stored_and_a_partial_bar_on_request() {
    let db = fx_db(&["EURUSD"], 2).await;
    run_once(&db, &[]);
    let c = db.client().await;
    let stored = live_bars(&c).await;
    let hours: Vec<_> = stored.iter().filter(|b| b.timeframe == "1h").collect();

    let out = db.cli(&["export", "EURUSD", "1h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let csv = stdout(&out);
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("ts_utc,open,high,low,close"));
    assert_eq!(lines.len(), hours.len() + 1);
    let first: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(first[0].parse::<DateTime<Utc>>().unwrap(), hours[0].ts);
    assert_eq!(first[1].parse::<f64>().unwrap(), hours[0].ohlcv[0]);

    let out = db.cli(&[
        "export",
        "EURUSD",
        "1d",
        "--format",
        "json",
        "--from",
        "2025-07-07",
    ]);
    let json: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).unwrap();
    let days: Vec<_> = stored
        .iter()
        .filter(|b| {
            b.timeframe == "1d" && b.ts >= "2025-07-07T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        })
        .collect();
    assert_eq!(json.len(), days.len());
    assert_eq!(json[0]["close"].as_f64().unwrap(), days[0].ohlcv[3]);
    assert!(json.iter().all(|b| b["is_partial"] == false));

    // A 1m bar in the current minute makes an unfinished 5m bucket.
    let now = Utc::now();
    let minute = now
        - Duration::seconds(now.timestamp() % 60)
        - Duration::nanoseconds(now.timestamp_subsec_nanos() as i64);
    load_bars(
        &c,
        "EURUSD",
        &[SynthBar {
            ts: minute,
            open: 1.2,
            high: 1.3,
            low: 1.1,
            close: 1.25,
            vol: 0.0,
            vwap: None,
            trade_count: None,
        }],
    )
    .await;
    let out = db.cli(&[
        "export",
        "EURUSD",
        "5m",
        "--partial",
        "--from",
        "2025-07-01",
    ]);
    let csv = stdout(&out);
    let last = csv.lines().last().unwrap();
    assert!(last.ends_with(",true"), "{last}");
    assert!(last.contains(",1.2,1.3,1.1,1.25,"), "{last}");
    let stored_now = db
        .count("SELECT count(*) FROM derived_data_bars WHERE is_partial")
        .await;
    assert_eq!(stored_now, 0, "the partial bar is never stored");
}

#[tokio::test]
async fn sigterm_stops_a_running_worker_cleanly_and_releases_its_tasks() {
    let db = fx_db(&["EURUSD", "GBPUSD"], 8).await;
    let mut child = db
        .command(&["run", "--grace-seconds", "20"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "worker still running 40 s after SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(status.success(), "worker exited with {status}");
    let running = db
        .count("SELECT count(*) FROM data_agg_state WHERE status = 'running'")
        .await;
    assert_eq!(running, 0, "a task was left running after a clean stop");
    // What was written is whole: a fresh run finishes the job with the same
    // bars as a worker that was never stopped.
    run_once(&db, &[]);
    let stopped = live_bars(&db.client().await).await;
    let clean = fx_db(&["EURUSD", "GBPUSD"], 8).await;
    run_once(&clean, &[]);
    same_bars(&stopped, &live_bars(&clean.client().await).await);
}
