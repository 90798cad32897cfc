//! Several workers on one database write each bucket once and share the
//! runs of a backlog.

use std::process::Child;
use std::time::Duration as StdDuration;

use crate::common::TestDb;
use crate::fixtures::{live_bars, load_fx};

use super::{child_stderr, clean_bars, names, spawn, wait_exit, SEEDS};

/// Bars were written exactly once: no soft-deleted rewrite, and the run
/// log counts as many created bars as are stored.
async fn written_once(db: &TestDb) {
    let all = db.count("SELECT count(*) FROM derived_data_bars").await;
    let live = db
        .count("SELECT count(*) FROM derived_data_bars WHERE deleted_at IS NULL")
        .await;
    assert_eq!(all, live, "some bucket was written more than once");
    let logged = db
        .count("SELECT coalesce(sum(bars_created), 0)::bigint FROM agg_run_log WHERE status = 'success'")
        .await;
    assert_eq!(logged, live, "the run log counts every bar once");
}

#[tokio::test]
async fn four_workers_on_one_database_write_each_bucket_once() {
    let symbols = names("FX", 6);
    let expected = clean_bars(&symbols, 14).await;
    let db = TestDb::migrated().await;
    load_fx(&db.client().await, &symbols, 14, SEEDS).await;
    let mut workers: Vec<Child> = (0..4)
        .map(|_| spawn(&db.url, &["run", "--once", "--max-windows", "500"]))
        .collect();
    for w in &mut workers {
        let status = wait_exit(w, StdDuration::from_secs(180)).await;
        let log = child_stderr(w);
        assert!(status.success(), "{log}");
    }
    assert_eq!(live_bars(&db.client().await).await, expected);
    written_once(&db).await;
    let owners = db
        .count("SELECT count(DISTINCT worker_id) FROM agg_run_log")
        .await;
    assert!(owners >= 2, "only {owners} worker(s) did any work");
}

#[tokio::test]
async fn two_workers_on_a_backlog_share_the_runs() {
    let symbols = names("SH", 16);
    let db = TestDb::migrated().await;
    load_fx(&db.client().await, &symbols, 5, SEEDS).await;
    let mut a = spawn(&db.url, &["run", "--once"]);
    let mut b = spawn(&db.url, &["run", "--once"]);
    for w in [&mut a, &mut b] {
        let status = wait_exit(w, StdDuration::from_secs(180)).await;
        let log = child_stderr(w);
        assert!(status.success(), "{log}");
    }
    let c = db.client().await;
    let rows = c
        .query(
            "SELECT worker_id, count(*) FROM agg_run_log WHERE status = 'success'
             GROUP BY worker_id ORDER BY 2",
            &[],
        )
        .await
        .unwrap();
    let counts: Vec<i64> = rows.iter().map(|r| r.get(1)).collect();
    let total: i64 = counts.iter().sum();
    eprintln!("task runs per worker: {counts:?}");
    assert_eq!(counts.len(), 2, "both workers ran tasks: {counts:?}");
    assert!(
        counts[0] * 4 >= total,
        "a fair share is at least a quarter each: {counts:?}"
    );
    written_once(&db).await;
}
