//! A worker frozen mid-copy is taken over when its lease expires and
//! changes nothing when it wakes.

use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Utc};
use nix::sys::signal::Signal;
use tokio_postgres::Client;

use crate::common::{stderr, TestDb};
use crate::fixtures::{live_bars, load_fx};

use super::{child_stderr, clean_bars, names, signal, spawn, wait_exit, SEEDS};

/// A snapshot of every stored bar row, deleted ones included.
async fn all_bar_rows(c: &Client) -> Vec<String> {
    c.query("SELECT b::text FROM derived_data_bars b ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn a_worker_frozen_mid_copy_is_taken_over_and_changes_nothing_when_it_wakes() {
    let symbols = names("FZ", 3);
    let expected = clean_bars(&symbols, 28).await;
    let db = TestDb::migrated().await;
    load_fx(&db.client().await, &symbols, 28, SEEDS).await;
    let c = db.client().await;
    let lease = 10;
    let mut a = spawn(
        &db.url,
        &[
            "run",
            "--lease-seconds",
            &lease.to_string(),
            "--max-windows",
            "3000",
            "--concurrency",
            "1",
        ],
    );
    let pattern = format!("barkeep %:{}:%", a.id());
    // Stop the worker when the server shows it inside a COPY of bars, and
    // keep it stopped if it still is (its chunk transaction open, its task
    // row locked); otherwise let it go on and watch for the next COPY.
    let in_copy = "SELECT count(*) FROM pg_stat_activity a
                   WHERE a.application_name LIKE $1 AND a.state = 'active'
                     AND a.query LIKE 'COPY derived_data_bars%'";
    let mut frozen = None;
    let watch = Instant::now();
    while watch.elapsed() < StdDuration::from_secs(60) {
        let seen: i64 = c.query_one(in_copy, &[&pattern]).await.unwrap().get(0);
        if seen == 0 {
            tokio::time::sleep(StdDuration::from_millis(2)).await;
            continue;
        }
        signal(&a, Signal::SIGSTOP);
        let still: i64 = c.query_one(in_copy, &[&pattern]).await.unwrap().get(0);
        if still > 0 {
            frozen = Some(Instant::now());
            break;
        }
        signal(&a, Signal::SIGCONT);
    }
    let frozen = frozen.expect("never caught the worker inside a COPY");
    let task: (String, String) = {
        let r = c
            .query_one(
                "SELECT canonical_symbol, timeframe FROM data_agg_state
                 WHERE status = 'running' ORDER BY running_started_at_utc LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };

    // An operator command on the locked task returns within seconds.
    let t = Instant::now();
    let out = db.cli(&["task", "disable", &task.0, &task.1]);
    let took = t.elapsed();
    eprintln!(
        "task disable on a task locked by a frozen worker returned in {took:?}: {}",
        stderr(&out).trim()
    );
    assert!(took < StdDuration::from_secs(lease as u64), "{took:?}");
    if out.status.success() {
        let out = db.cli(&["task", "reenable", &task.0, &task.1]);
        assert!(out.status.success(), "{}", stderr(&out));
    }

    // Another worker takes the task over once the lease has expired.
    let out = db.cli(&["run", "--once", "--lease-seconds", &lease.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The run log shows the takeover when the task's run was logged; the
    // bars below are what must hold either way.
    let taken_over: Option<DateTime<Utc>> = c
        .query_one(
            "SELECT max(finished_at) FROM agg_run_log
             WHERE canonical_symbol = $1 AND timeframe = $2",
            &[&task.0, &task.1],
        )
        .await
        .unwrap()
        .get(0);
    eprintln!(
        "frozen task finished by another worker {:?} after the freeze (lease {lease} s)",
        frozen.elapsed()
    );
    let _ = taken_over;
    assert_eq!(live_bars(&c).await, expected);

    // The frozen worker wakes up: it owns nothing any more and writes nothing.
    let before = all_bar_rows(&c).await;
    signal(&a, Signal::SIGCONT);
    tokio::time::sleep(StdDuration::from_secs(3)).await;
    signal(&a, Signal::SIGTERM);
    let status = wait_exit(&mut a, StdDuration::from_secs(40)).await;
    let log = child_stderr(&mut a);
    assert!(status.success(), "{log}");
    assert_eq!(
        all_bar_rows(&c).await,
        before,
        "the woken worker changed bars"
    );
    assert_eq!(live_bars(&c).await, expected);
    assert_eq!(
        db.count("SELECT count(*) FROM data_agg_state WHERE status = 'running'")
            .await,
        0
    );
}
