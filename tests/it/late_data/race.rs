//! The race between a catch-up chunk and a late row cannot lose the row:
//! committed while the chunk runs, it is recorded against the advanced
//! cursor; committed before the chunk reads, it is read.

use barkeep::engine::pause;
use barkeep::model::AssetClass;
use barkeep::model::{Calendar, Timeframe};
use barkeep::synth::{generate, SynthBar, SynthSpec};
use chrono::{DateTime, Duration, Utc};
use tokio_postgres::Client;

use crate::common::TestDb;
use crate::fixtures::{load_bars, register, ts};

use super::{assert_reference, fx_spec, model_of, rust_cycle};

/// Wait until the backend `pid` waits on a lock (checked in pg_stat_activity).
async fn until_waiting_on_lock(observer: &Client, pid: i32) {
    loop {
        let waiting: bool = observer
            .query_one(
                "SELECT coalesce(wait_event_type = 'Lock', false) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        if waiting {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_row_committing_while_a_chunk_runs_is_read_or_recorded_never_lost() {
    let start = "2025-07-01T00:00:00Z";
    let bars: Vec<SynthBar> = generate(&SynthSpec {
        gap_probability: 0.3,
        gap_continue_probability: 0.0,
        ..fx_spec(start, 4, 51)
    })
    .collect();
    let mut model = model_of(&bars);
    // Two minutes the feed missed, which arrive late.
    let missing: Vec<DateTime<Utc>> = (0..60 * 24 * 3)
        .map(|m| ts("2025-07-02T00:00:00Z") + Duration::minutes(m))
        .filter(|t| !model.contains_key(t))
        .take(2)
        .collect();
    let late_bar = |t: DateTime<Utc>| SynthBar {
        ts: t,
        open: 1.0,
        high: 50.0,
        low: 0.5,
        close: 1.0,
        vol: 0.0,
        vwap: None,
        trade_count: None,
    };

    // 1. The chunk goes first: it holds the task row, has read its sources
    //    and is paused; the late row's statement waits in the trigger for
    //    the chunk to commit, then sees the new cursor and records the bucket.
    let db = TestDb::migrated().await;
    let c = db.client().await;
    register(&c, "RACE", AssetClass::Fx, start).await;
    load_bars(&c, "RACE", &bars).await;
    let (reached, resume) = pause::arm("RACE", Timeframe::M5);
    let worker = {
        let database = db.database.clone();
        tokio::spawn(async move {
            let mut client = database.connect().await.unwrap();
            rust_cycle(&mut client, "RACE", Calendar::Fx, Utc::now()).await;
        })
    };
    reached.notified().await;
    let late = db.client().await;
    let pid: i32 = late
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let row = late_bar(missing[0]);
    let insert = tokio::spawn(async move {
        load_bars(&late, "RACE", &[row]).await;
    });
    until_waiting_on_lock(&c, pid).await;
    resume.notify_one();
    worker.await.unwrap();
    insert.await.unwrap();
    assert_eq!(
        db.count("SELECT count(*) FROM agg_dirty_buckets WHERE timeframe = '5m'")
            .await,
        1,
        "the late row is recorded against the advanced cursor"
    );
    model.insert(missing[0], late_bar(missing[0]));
    let mut client = db.client().await;
    rust_cycle(&mut client, "RACE", Calendar::Fx, Utc::now()).await;
    assert_reference(&db, "RACE", true, &model, start).await;

    // 2. The late row goes first: its transaction holds the cursor (FOR KEY
    //    SHARE) uncommitted; the chunk waits for it, then reads the row.
    let db = TestDb::migrated().await;
    let c = db.client().await;
    register(&c, "RACE", AssetClass::Fx, start).await;
    load_bars(&c, "RACE", &bars).await;
    rust_cycle(
        &mut db.client().await,
        "RACE",
        Calendar::Fx,
        ts("2025-07-01T12:00:00Z"),
    )
    .await;
    let mut late = db.client().await;
    let tx = late.transaction().await.unwrap();
    let row = late_bar(missing[1]);
    tx.execute(
        "INSERT INTO data_bars (canonical_symbol, timeframe, ts_utc, open, high, low, close, vol)
         VALUES ('RACE', '1m', $1, $2, $3, $4, $5, $6)",
        &[
            &row.ts, &row.open, &row.high, &row.low, &row.close, &row.vol,
        ],
    )
    .await
    .unwrap();
    let mut chunk_client = db.client().await;
    let pid: i32 = chunk_client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let worker = tokio::spawn(async move {
        rust_cycle(&mut chunk_client, "RACE", Calendar::Fx, Utc::now()).await;
    });
    until_waiting_on_lock(&c, pid).await;
    tx.commit().await.unwrap();
    worker.await.unwrap();
    assert_eq!(
        db.count("SELECT count(*) FROM agg_dirty_buckets").await,
        0,
        "the chunk read the row: nothing is late"
    );
    let mut model = model_of(&bars);
    model.insert(missing[1], late_bar(missing[1]));
    assert_reference(&db, "RACE", true, &model, start).await;
}
