//! Complete buckets are final as soon as their last minute lands, and
//! quiet ones at their end plus the task's delay.

use std::time::Duration as StdDuration;

use barkeep::model::AssetClass;
use chrono::{Duration, DurationRound};
use nix::sys::signal::Signal;

use crate::common::{stderr, TestDb};
use crate::fixtures::{db_now, register};

use super::{child_stderr, insert_minutes, signal, spawn, wait_count, wait_exit};

const COUNT_5M: &str =
    "SELECT count(*) FROM derived_data_bars WHERE timeframe = '5m' AND deleted_at IS NULL";

const COUNT_15M: &str =
    "SELECT count(*) FROM derived_data_bars WHERE timeframe = '15m' AND deleted_at IS NULL";

#[tokio::test]
async fn complete_buckets_are_final_when_their_last_minute_lands_and_quiet_ones_at_end_plus_delay()
{
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let now = db_now(&c).await;
    let start = now.duration_trunc(Duration::minutes(15)).unwrap() - Duration::minutes(30);
    register(&c, "BTCUSD", AssetClass::Crypto, &start.to_rfc3339()).await;
    // A long delay: nothing here becomes final by the clock alone.
    let out = db.cli(&["task", "delay", "BTCUSD", "5m", "--seconds", "3600"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut worker = spawn(&db.url, &["run", "--lease-seconds", "10"]);

    // 14 minutes: two complete 5m buckets, the third lacks its last minute.
    insert_minutes(&c, "BTCUSD", start, 0..14).await;
    wait_count(&c, COUNT_5M, 2, StdDuration::from_secs(30)).await;
    tokio::time::sleep(StdDuration::from_millis(1500)).await;
    assert_eq!(
        db.count(COUNT_5M).await,
        2,
        "an incomplete bucket was finalized"
    );
    assert_eq!(db.count(COUNT_15M).await, 0);

    // Its last minute lands: the 5m bar and the 15m bar above it follow.
    insert_minutes(&c, "BTCUSD", start, 14..15).await;
    wait_count(&c, COUNT_15M, 1, StdDuration::from_secs(30)).await;
    let full = db
        .count(
            "SELECT count(*) FROM derived_data_bars WHERE deleted_at IS NULL
             AND ((timeframe = '5m' AND source_candles = 5) OR (timeframe = '15m' AND source_candles = 3))",
        )
        .await;
    assert_eq!(full, 4, "every bar has all its sources");

    // The feed goes quiet after 3 minutes of the next bucket: it is final
    // at end + delay, with 3 of 5 minutes.
    insert_minutes(&c, "BTCUSD", start, 15..18).await;
    let end = start + Duration::minutes(20);
    let delay = (db_now(&c).await + Duration::seconds(3) - end).num_seconds() + 1;
    let out = db.cli(&[
        "task",
        "delay",
        "BTCUSD",
        "5m",
        "--seconds",
        &delay.to_string(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_count(&c, COUNT_5M, 4, StdDuration::from_secs(30)).await;
    let row = c
        .query_one(
            "SELECT b.source_candles, b.quality_score, b.created_at >= $1
             FROM derived_data_bars b WHERE b.timeframe = '5m' AND b.ts_utc = $2",
            &[
                &(end + Duration::seconds(delay)),
                &(end - Duration::minutes(5)),
            ],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 3);
    assert_eq!(row.get::<_, i16>(1), 0);
    assert!(row.get::<_, bool>(2), "finalized before end + delay");

    // A plain SQL delete of a minute behind the cursor wakes the worker
    // (the change-tracking trigger's NOTIFY), which rewrites its 5m bar
    // and the 15m bar above it (keeping the old one as history) well
    // before its next poll.
    c.execute(
        "DELETE FROM data_bars WHERE canonical_symbol = 'BTCUSD' AND ts_utc = $1",
        &[&(start + Duration::minutes(1))],
    )
    .await
    .unwrap();
    let first = start.to_rfc3339();
    wait_count(
        &c,
        &format!(
            "SELECT count(*) FROM derived_data_bars WHERE ts_utc = '{first}'
             AND ((timeframe = '5m' AND deleted_at IS NULL AND source_candles = 4)
                  OR (timeframe = '15m' AND deleted_at IS NOT NULL))"
        ),
        2,
        StdDuration::from_secs(10),
    )
    .await;

    signal(&worker, Signal::SIGTERM);
    let status = wait_exit(&mut worker, StdDuration::from_secs(30)).await;
    let log = child_stderr(&mut worker);
    assert!(status.success(), "{log}");
    assert!(log.contains("task run"), "one line per task run: {log}");
    assert!(
        log.contains("reaggregated=1 changed=1"),
        "the run that rewrote the bar says so: {log}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM data_agg_state WHERE status = 'running'")
            .await,
        0
    );
}
