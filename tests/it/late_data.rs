//! Late and corrected 1m data: inserts, updates and deletes behind and
//! ahead of the cursors, through ingest and plain SQL, leave every live
//! derived bar equal to the naive reference on the final 1m data, on the
//! Rust path and the SQL face alike; a late minute costs one bucket per
//! timeframe of its own symbol; backfill gets bars; the race between a
//! catch-up chunk and a late row cannot lose the row.

use std::collections::BTreeMap;

use barkeep::assets::{AssetClass, Symbol};
use barkeep::calendar::{Calendar, Timeframe};
use barkeep::engine::{pause, SymbolJob, SymbolRunner, TaskPlan};
use barkeep::ingest::{ingest_files, IngestOptions};
use barkeep::synth::{generate, SynthBar, SynthSpec};
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use tokio_postgres::Client;

use crate::common::TestDb;
use crate::fixtures::{load_bars, register, rust_ladder, sql_ladder, ts};
use crate::reference::{assert_same_bars, reference_ladder, stored};

/// The 1m bars a test believes are stored, by time.
type Model = BTreeMap<DateTime<Utc>, SynthBar>;

fn model_of(bars: &[SynthBar]) -> Model {
    bars.iter().map(|b| (b.ts, b.clone())).collect()
}

fn bars_of(model: &Model) -> Vec<SynthBar> {
    model.values().cloned().collect()
}

/// Live derived bars of `symbol` must equal the reference on `model`.
async fn assert_reference(db: &TestDb, symbol: &str, fx: bool, model: &Model, start: &str) {
    let expected = reference_ladder(fx, &bars_of(model), ts(start), Utc::now());
    assert_same_bars(&stored(db, symbol).await, &expected);
}

/// Retired (soft-deleted) derived rows of `symbol` per timeframe.
async fn retired(client: &Client, symbol: &str) -> BTreeMap<String, i64> {
    client
        .query(
            "SELECT timeframe, count(*) FROM derived_data_bars
             WHERE canonical_symbol = $1 AND deleted_at IS NOT NULL GROUP BY timeframe",
            &[&symbol],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// One worker cycle on the fast path for one symbol, as the worker runs it
/// (late data first, then the ladder), with `now` chosen by the test.
async fn rust_cycle(client: &mut Client, symbol: &str, cal: Calendar, now: DateTime<Utc>) {
    let mut tasks = Vec::new();
    for tf in Timeframe::LADDER {
        let cursor: DateTime<Utc> = client
            .query_one(
                "UPDATE data_agg_state
                 SET last_agg_bar_ts_utc = coalesce(last_agg_bar_ts_utc, agg_bootstrap_cursor($1, $2))
                 WHERE canonical_symbol = $1 AND timeframe = $2 RETURNING last_agg_bar_ts_utc",
                &[&symbol, &tf.as_str()],
            )
            .await
            .unwrap()
            .get(0);
        tasks.push(TaskPlan {
            timeframe: tf,
            source: tf.source().unwrap(),
            cursor,
            delay: Duration::zero(),
            lease: None,
        });
    }
    let job = SymbolJob {
        symbol: Symbol::parse(symbol).unwrap(),
        calendar: cal,
        tasks,
        now,
        max_windows: None,
        derivation_version: 1,
    };
    let outcomes = SymbolRunner::new(client, &job).run(|_| {}).await;
    for o in outcomes {
        assert!(
            o.outcome.error().is_none(),
            "{symbol} {}: {:?}",
            o.timeframe,
            o.outcome
        );
        client
            .execute(
                "UPDATE data_agg_state SET last_agg_bar_ts_utc = greatest(last_agg_bar_ts_utc, $3)
                 WHERE canonical_symbol = $1 AND timeframe = $2",
                &[&symbol, &o.timeframe.as_str(), &o.new_cursor],
            )
            .await
            .unwrap();
    }
}

/// One cycle of the SQL face for one symbol: each task caught up to `now`
/// with catchup_aggregation_range (which re-aggregates its dirty buckets first).
async fn sql_cycle(client: &Client, symbol: &str, now: DateTime<Utc>) {
    for tf in Timeframe::LADDER {
        client
            .execute(
                "UPDATE data_agg_state SET last_agg_bar_ts_utc = agg_bootstrap_cursor($1, $2)
                 WHERE canonical_symbol = $1 AND timeframe = $2 AND last_agg_bar_ts_utc IS NULL",
                &[&symbol, &tf.as_str()],
            )
            .await
            .unwrap();
        loop {
            let r: Value = client
                .query_one(
                    "SELECT catchup_aggregation_range($1, $2, last_agg_bar_ts_utc, 500, $3, 1, false)
                     FROM data_agg_state WHERE canonical_symbol = $1 AND timeframe = $2",
                    &[&symbol, &tf.as_str(), &now],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(r["success"], true, "{symbol} {tf}: {r}");
            if r["continue"] != true {
                break;
            }
        }
    }
}

fn fx_spec(start: &str, days: i64, seed: u64) -> SynthSpec {
    SynthSpec {
        start: ts(start),
        minutes: days * 24 * 60,
        seed,
        ..SynthSpec::default()
    }
}

fn crypto_spec(start: &str, days: i64, seed: u64) -> SynthSpec {
    SynthSpec {
        start: ts(start),
        minutes: days * 24 * 60,
        fx_weekends: false,
        with_volume: true,
        price: 60_000.0,
        seed,
        ..SynthSpec::default()
    }
}

#[tokio::test]
async fn a_late_minute_reaggregates_one_bucket_per_timeframe_of_its_symbol_only() {
    let start = "2025-07-06T00:00:00Z";
    for sql_face in [true, false] {
        let db = TestDb::migrated().await;
        let c = db.client().await;
        let a: Vec<SynthBar> = generate(&fx_spec(start, 8, 31)).collect();
        let b: Vec<SynthBar> = generate(&crypto_spec(start, 3, 32)).collect();
        register(&c, "LATEA", AssetClass::Fx, start).await;
        register(&c, "LATEB", AssetClass::Crypto, start).await;
        load_bars(&c, "LATEA", &a).await;
        load_bars(&c, "LATEB", &b).await;
        sql_ladder(&c, "LATEA").await;
        sql_ladder(&c, "LATEB").await;

        // A Wednesday minute that arrives late, with a new high for the week.
        let mut model = model_of(&a);
        let late = ts("2025-07-09T10:02:00Z");
        let mut bar = model
            .range(..late)
            .next_back()
            .map(|(_, b)| b.clone())
            .unwrap();
        model.remove(&late);
        c.execute(
            "DELETE FROM data_bars WHERE canonical_symbol = 'LATEA' AND ts_utc = $1",
            &[&late],
        )
        .await
        .unwrap();
        // The delete itself is late data too: settle it first.
        c.query_one("SELECT agg_process_dirty('LATEA')", &[])
            .await
            .unwrap();
        let before = retired(&c, "LATEA").await;
        bar.ts = late;
        bar.high = 99.0;
        model.insert(late, bar.clone());
        load_bars(&c, "LATEA", &[bar]).await;
        assert_eq!(
            db.count("SELECT count(*) FROM agg_dirty_buckets").await,
            1,
            "one 5m bucket recorded"
        );

        if sql_face {
            let r: Value = c
                .query_one("SELECT agg_process_dirty('LATEA')", &[])
                .await
                .unwrap()
                .get(0);
            for tf in Timeframe::LADDER {
                let t = &r["timeframes"][tf.as_str()];
                assert_eq!(t["buckets"], 1, "{tf}: {r}");
                assert_eq!(t["bars_changed"], 1, "{tf}: {r}");
            }
            assert_eq!(
                r["timeframes"].as_object().unwrap().len(),
                6,
                "nothing else: {r}"
            );
        } else {
            let summary = rust_ladder(&db).await;
            assert_eq!(summary.tasks_failed, 0);
            assert_eq!(summary.buckets_reaggregated, 6, "{summary:?}");
            assert_eq!(summary.bars_changed, 6, "{summary:?}");
        }
        let after = retired(&c, "LATEA").await;
        for tf in Timeframe::LADDER {
            let n = after.get(tf.as_str()).copied().unwrap_or(0)
                - before.get(tf.as_str()).copied().unwrap_or(0);
            assert_eq!(n, 1, "{tf}: one old version kept");
        }
        assert!(
            retired(&c, "LATEB").await.is_empty(),
            "the other symbol is untouched"
        );
        assert_eq!(db.count("SELECT count(*) FROM agg_dirty_buckets").await, 0);
        assert_eq!(
            db.count("SELECT count(*) FROM data_bars_history WHERE change = 'deleted'")
                .await,
            1
        );
        assert_reference(&db, "LATEA", true, &model, start).await;
        assert_reference(&db, "LATEB", false, &model_of(&b), start).await;
    }
}

#[tokio::test]
async fn backfill_older_than_every_cursor_gets_its_bars_on_the_next_cycle() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let start = "2025-06-01T00:00:00Z";
    let june: Vec<SynthBar> = generate(&fx_spec("2025-06-02T00:00:00Z", 5, 41)).collect();
    let july: Vec<SynthBar> = generate(&fx_spec("2025-07-01T00:00:00Z", 10, 42)).collect();
    register(&c, "BACKFILL", AssetClass::Fx, start).await;
    load_bars(&c, "BACKFILL", &july).await;
    rust_ladder(&db).await;
    assert_reference(&db, "BACKFILL", true, &model_of(&july), start).await;
    // History of an earlier month, loaded after the catch-up, through ingest.
    let dir = tempfile::tempdir().unwrap();
    let file = write_csv(dir.path(), "june.csv", &june);
    let mut client = db.client().await;
    let opts = IngestOptions::new(Symbol::parse("BACKFILL").unwrap());
    ingest_files(&mut client, &[file], &opts).await.unwrap();
    let summary = rust_ladder(&db).await;
    assert!(summary.buckets_reaggregated > 0, "{summary:?}");
    let mut model = model_of(&july);
    for b in &june {
        model.insert(b.ts, ingested(b));
    }
    assert_reference(&db, "BACKFILL", true, &model, start).await;
}

/// A bar as ingest stores it from a headed CSV (no vwap, no trade count).
fn ingested(b: &SynthBar) -> SynthBar {
    SynthBar {
        vwap: None,
        trade_count: None,
        ..b.clone()
    }
}

fn write_csv(dir: &std::path::Path, name: &str, bars: &[SynthBar]) -> std::path::PathBuf {
    let mut text = String::from("ts,open,high,low,close,volume\n");
    for b in bars {
        text.push_str(&format!(
            "{},{:?},{:?},{:?},{:?},{:?}\n",
            b.ts.to_rfc3339(),
            b.open,
            b.high,
            b.low,
            b.close,
            b.vol
        ));
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

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

/// A random change of the 1m data.
#[derive(Debug, Clone)]
enum Change {
    /// Insert or revise the bar at minute `at` (minutes from the data start).
    Put {
        at: i64,
        bump: f64,
        vol: f64,
    },
    Delete {
        at: i64,
    },
}

/// Apply changes to the model and the database, through ingest (inserts
/// and revisions) or plain SQL (every kind).
async fn apply(
    client: &mut Client,
    symbol: &str,
    base: DateTime<Utc>,
    model: &mut Model,
    changes: &[Change],
    through_ingest: bool,
    dir: &std::path::Path,
) {
    let mut puts = Vec::new();
    for ch in changes {
        match ch {
            Change::Put { at, bump, vol } => {
                let t = base + Duration::minutes(*at);
                let prev = model
                    .range(..=t)
                    .next_back()
                    .map(|(_, b)| b.close)
                    .unwrap_or(1.1);
                let open = prev + bump;
                let close = open - bump / 2.0;
                let bar = SynthBar {
                    ts: t,
                    open,
                    high: open.max(close) + bump.abs(),
                    low: open.min(close) - bump.abs(),
                    close,
                    vol: *vol,
                    vwap: None,
                    trade_count: None,
                };
                puts.retain(|b: &SynthBar| b.ts != t);
                puts.push(bar);
            }
            Change::Delete { at } => {
                let t = base + Duration::minutes(*at);
                puts.retain(|b: &SynthBar| b.ts != t);
                model.remove(&t);
                client
                    .execute(
                        "DELETE FROM data_bars WHERE canonical_symbol = $1 AND timeframe = '1m' AND ts_utc = $2",
                        &[&symbol, &t],
                    )
                    .await
                    .unwrap();
            }
        }
    }
    if puts.is_empty() {
        return;
    }
    puts.sort_by_key(|b| b.ts);
    for b in &puts {
        // A revision keeps the stored vwap and trade count (ingest and the
        // SQL below write prices and volume only).
        let kept = model.get(&b.ts).map(|old| (old.vwap, old.trade_count));
        let (vwap, trade_count) = kept.unwrap_or((None, None));
        model.insert(
            b.ts,
            SynthBar {
                vwap,
                trade_count,
                ..b.clone()
            },
        );
    }
    if through_ingest {
        let file = write_csv(dir, "changes.csv", &puts);
        let opts = IngestOptions::new(Symbol::parse(symbol).unwrap());
        ingest_files(client, &[file], &opts).await.unwrap();
    } else {
        let t: Vec<DateTime<Utc>> = puts.iter().map(|b| b.ts).collect();
        let col = |f: fn(&SynthBar) -> f64| puts.iter().map(f).collect::<Vec<f64>>();
        client
            .execute(
                "INSERT INTO data_bars AS d (canonical_symbol, timeframe, ts_utc, open, high, low, close, vol)
                 SELECT $1, '1m', * FROM unnest($2::timestamptz[], $3::float8[], $4::float8[],
                        $5::float8[], $6::float8[], $7::float8[])
                 ON CONFLICT (canonical_symbol, timeframe, ts_utc) DO UPDATE
                   SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low,
                       close = EXCLUDED.close, vol = EXCLUDED.vol",
                &[
                    &symbol,
                    &t,
                    &col(|b| b.open),
                    &col(|b| b.high),
                    &col(|b| b.low),
                    &col(|b| b.close),
                    &col(|b| b.vol),
                ],
            )
            .await
            .unwrap();
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// One full week on either calendar (the fx week starts Sunday 17:00
    /// New York), so every timeframe up to 1w has bars.
    const DAYS: i64 = 6;
    const START: &str = "2025-06-29T21:00:00Z";

    fn change() -> impl Strategy<Value = Change> {
        let minute = 0..DAYS * 24 * 60;
        prop_oneof![
            3 => (minute.clone(), -0.01f64..0.01, 0.0f64..5.0)
                .prop_map(|(at, bump, vol)| Change::Put { at, bump, vol }),
            2 => minute.prop_map(|at| Change::Delete { at }),
        ]
    }

    /// Steps of changes, each followed by a worker cycle whose `now`
    /// moves through the data (so changes land behind and ahead of cursors).
    fn steps() -> impl Strategy<Value = Vec<(Vec<Change>, bool, i64)>> {
        prop::collection::vec(
            (
                prop::collection::vec(change(), 1..12),
                any::<bool>(),
                0..DAYS * 24,
            ),
            1..5,
        )
    }

    async fn scenario(seed: u64, crypto: bool, steps: Vec<(Vec<Change>, bool, i64)>) {
        let (class, cal) = if crypto {
            (AssetClass::Crypto, Calendar::Utc)
        } else {
            (AssetClass::Fx, Calendar::Fx)
        };
        let spec = if crypto {
            crypto_spec(START, DAYS, seed)
        } else {
            SynthSpec {
                gap_probability: 0.05,
                gap_continue_probability: 0.5,
                ..fx_spec(START, DAYS, seed)
            }
        };
        let bars: Vec<SynthBar> = generate(&spec).collect();
        let rust_db = TestDb::migrated().await;
        let sql_db = TestDb::migrated().await;
        for db in [&rust_db, &sql_db] {
            let c = db.client().await;
            register(&c, "PROP", class, START).await;
            load_bars(&c, "PROP", &bars).await;
        }
        let dir = tempfile::tempdir().unwrap();
        let base = ts(START);
        let mut rust_model = model_of(&bars);
        let mut sql_model = model_of(&bars);
        let mut rust_client = rust_db.client().await;
        let mut sql_client = sql_db.client().await;
        let mut hours: Vec<i64> = steps.iter().map(|s| s.2).collect();
        hours.sort();
        for ((changes, through_ingest, _), hour) in steps.iter().zip(hours) {
            let now = base + Duration::hours(hour);
            apply(
                &mut rust_client,
                "PROP",
                base,
                &mut rust_model,
                changes,
                *through_ingest,
                dir.path(),
            )
            .await;
            apply(
                &mut sql_client,
                "PROP",
                base,
                &mut sql_model,
                changes,
                *through_ingest,
                dir.path(),
            )
            .await;
            rust_cycle(&mut rust_client, "PROP", cal, now).await;
            sql_cycle(&sql_client, "PROP", now).await;
        }
        rust_cycle(&mut rust_client, "PROP", cal, Utc::now()).await;
        sql_cycle(&sql_client, "PROP", Utc::now()).await;
        assert_reference(&rust_db, "PROP", !crypto, &rust_model, START).await;
        assert_same_bars(
            &stored(&sql_db, "PROP").await,
            &stored(&rust_db, "PROP").await,
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]
        #[test]
        fn random_changes_behind_and_ahead_of_cursors_leave_exact_bars(
            seed in 1u64..1_000_000, crypto in any::<bool>(), steps in steps())
        {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(scenario(seed, crypto, steps));
        }

        #[test]
        fn random_changes_concurrent_with_worker_cycles_leave_exact_bars(
            seed in 1u64..1_000_000, crypto in any::<bool>(), steps in steps())
        {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(concurrent(seed, crypto, steps));
        }
    }

    /// Changes applied on one connection while worker cycles run on another.
    async fn concurrent(seed: u64, crypto: bool, steps: Vec<(Vec<Change>, bool, i64)>) {
        let (class, cal) = if crypto {
            (AssetClass::Crypto, Calendar::Utc)
        } else {
            (AssetClass::Fx, Calendar::Fx)
        };
        let spec = if crypto {
            crypto_spec(START, DAYS, seed)
        } else {
            fx_spec(START, DAYS, seed)
        };
        let bars: Vec<SynthBar> = generate(&spec).collect();
        let db = TestDb::migrated().await;
        let c = db.client().await;
        register(&c, "PROP", class, START).await;
        load_bars(&c, "PROP", &bars).await;
        let base = ts(START);
        let mut hours: Vec<i64> = steps.iter().map(|s| s.2).collect();
        hours.sort();
        let n = steps.len();
        let cycles = {
            let database = db.database.clone();
            tokio::spawn(async move {
                let mut client = database.connect().await.unwrap();
                for hour in hours {
                    rust_cycle(&mut client, "PROP", cal, base + Duration::hours(hour)).await;
                }
                for _ in 0..n {
                    rust_cycle(&mut client, "PROP", cal, Utc::now()).await;
                }
            })
        };
        let mut model = model_of(&bars);
        let dir = tempfile::tempdir().unwrap();
        let mut client = db.client().await;
        for (changes, through_ingest, _) in &steps {
            apply(
                &mut client,
                "PROP",
                base,
                &mut model,
                changes,
                *through_ingest,
                dir.path(),
            )
            .await;
        }
        cycles.await.unwrap();
        rust_cycle(&mut client, "PROP", cal, Utc::now()).await;
        assert_reference(&db, "PROP", !crypto, &model, START).await;
    }
}

/// Everything a refused call must leave alone.
async fn footprint(c: &Client) -> (i64, i64, i64, String) {
    let r = c
        .query_one(
            "SELECT (SELECT count(*) FROM derived_data_bars),
                    (SELECT count(*) FROM derived_data_bars WHERE deleted_at IS NULL),
                    (SELECT count(*) FROM agg_dirty_buckets),
                    (SELECT string_agg(timeframe || agg_start_utc::text || coalesce(last_agg_bar_ts_utc::text, ''), ',' ORDER BY timeframe)
                     FROM data_agg_state)",
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

#[tokio::test]
async fn rebuild_refuses_bad_calls_and_rebuilds_good_ones_with_a_new_version() {
    let start = "2025-07-06T00:00:00Z";
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let bars: Vec<SynthBar> = generate(&fx_spec("2025-07-01T00:00:00Z", 13, 61)).collect();
    register(&c, "REB", AssetClass::Fx, start).await;
    load_bars(&c, "REB", &bars).await;
    rust_ladder(&db).await;
    let model = model_of(&bars);
    assert_reference(&db, "REB", true, &model, start).await;
    let before = footprint(&c).await;
    for (args, says) in [
        (vec!["rebuild", "NOPE"], "unknown symbol"),
        (vec!["rebuild", "REB", "2h"], "timeframe"),
        (vec!["rebuild", "REB", "1m"], "timeframe"),
        (
            vec![
                "rebuild",
                "REB",
                "--from",
                "2025-07-10",
                "--to",
                "2025-07-09",
            ],
            "must be before",
        ),
        (
            vec![
                "rebuild",
                "REB",
                "--from",
                "2025-07-10",
                "--to",
                "2025-07-10",
            ],
            "must be before",
        ),
        (
            vec![
                "rebuild",
                "REB",
                "1h",
                "--from",
                "2024-01-01",
                "--to",
                "2024-02-01",
            ],
            "no REB 1h bars",
        ),
    ] {
        let out = db.cli(&args);
        let err = crate::common::stderr(&out);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(footprint(&c).await, before, "{args:?} changed something");
    }

    // A good call: 1h and everything above, a new version, the same values.
    let out = db.cli(&["rebuild", "REB", "1h", "--json"]);
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["derivation_version"], 2, "{report}");
    assert_reference(&db, "REB", true, &model, start).await;
    let versions: Vec<(String, i32)> = c
        .query(
            "SELECT DISTINCT timeframe, derivation_version FROM derived_data_bars
             WHERE deleted_at IS NULL ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (tf, v) in &versions {
        let bumped = ["1h", "4h", "1d", "1w"].contains(&tf.as_str());
        assert_eq!(*v, if bumped { 2 } else { 1 }, "{versions:?}");
    }

    // Moving the start earlier: the first days get their bars.
    let out = db.cli(&["rebuild", "REB", "--from", "2025-07-01"]);
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    assert_reference(&db, "REB", true, &model, "2025-07-01T00:00:00Z").await;
}

/// Bars of `export … --format json`, optionally as of an instant.
fn export(db: &TestDb, symbol: &str, tf: &str, as_of: Option<DateTime<Utc>>) -> Value {
    let stamp = as_of.map(|t| t.to_rfc3339());
    let mut args = vec!["export", symbol, tf, "--format", "json"];
    if let Some(s) = &stamp {
        args.extend(["--as-of", s.as_str()]);
    }
    let out = db.cli(&args);
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The first 1m bar from 2025-07-08 10:00 on whose 5m and 1h bars are
/// live: a correction there changes every timeframe up to 1d.
async fn first_minute_under_live_5m_and_1h_bars(c: &Client, symbol: &str) -> DateTime<Utc> {
    c.query_one(
        "SELECT min(b.ts_utc) FROM data_bars b
         WHERE b.canonical_symbol = $1 AND b.ts_utc >= (
           SELECT min(f.ts_utc) FROM derived_data_bars f
           JOIN derived_data_bars h ON h.canonical_symbol = f.canonical_symbol
             AND h.timeframe = '1h' AND h.ts_utc = date_trunc('hour', f.ts_utc)
             AND h.deleted_at IS NULL
           WHERE f.canonical_symbol = $1 AND f.timeframe = '5m' AND f.deleted_at IS NULL
             AND f.ts_utc >= '2025-07-08T10:00:00Z')",
        &[&symbol],
    )
    .await
    .unwrap()
    .get(0)
}

/// First minute of the data of [`caught_up`].
const CAUGHT_UP_FROM: &str = "2025-07-06T00:00:00Z";

/// `days` of synthetic fx bars of `symbol` (seed `seed`) loaded and caught
/// up by the worker: the database, a client, the bars and a minute under
/// live 5m and 1h bars (a correction of it changes every timeframe to 1d).
async fn caught_up(
    symbol: &str,
    days: i64,
    seed: u64,
) -> (TestDb, Client, Vec<SynthBar>, DateTime<Utc>) {
    let start = CAUGHT_UP_FROM;
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let bars: Vec<SynthBar> = generate(&fx_spec(start, days, seed)).collect();
    register(&c, symbol, AssetClass::Fx, start).await;
    load_bars(&c, symbol, &bars).await;
    rust_ladder(&db).await;
    let minute = first_minute_under_live_5m_and_1h_bars(&c, symbol).await;
    (db, c, bars, minute)
}

/// Correct one stored minute through plain SQL: its high raised by `by`.
async fn raise_high(c: &Client, symbol: &str, minute: DateTime<Utc>, by: f64) {
    let n = c
        .execute(
            "UPDATE data_bars SET high = high + $3 WHERE canonical_symbol = $1 AND ts_utc = $2",
            &[&symbol, &minute, &by],
        )
        .await
        .unwrap();
    assert_eq!(n, 1, "{symbol} {minute}");
}

/// Make every piece of kept history `days` older.
async fn age_history(c: &Client, days: i32) {
    c.execute(
        "UPDATE derived_data_bars SET deleted_at = deleted_at - make_interval(days => $1)
         WHERE deleted_at IS NOT NULL",
        &[&days],
    )
    .await
    .unwrap();
    c.execute(
        "UPDATE data_bars_history SET valid_from = valid_from - make_interval(days => $1),
                                      valid_to = valid_to - make_interval(days => $1)",
        &[&days],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn export_as_of_an_instant_returns_the_bars_as_they_stood() {
    let (db, c, bars, t) = caught_up("ASOF", 8, 71).await;
    let before = instant(&c).await;
    let old: Vec<Value> = ["1m", "1h", "1d"]
        .iter()
        .map(|tf| export(&db, "ASOF", tf, None))
        .collect();
    // A correction: one minute's high, through plain SQL, in a 5m bucket
    // whose bar and hour bar exist (so every timeframe up to 1d changes).
    raise_high(&c, "ASOF", t, 1.0).await;
    rust_ladder(&db).await;
    let after = instant(&c).await;
    for (i, tf) in ["1m", "1h", "1d"].iter().enumerate() {
        assert_eq!(
            export(&db, "ASOF", tf, Some(before)),
            old[i],
            "{tf} as of before the correction"
        );
        let now = export(&db, "ASOF", tf, Some(after));
        assert_ne!(now, old[i], "{tf} after the correction");
        assert_eq!(
            now,
            export(&db, "ASOF", tf, None),
            "{tf}: as of now is live"
        );
    }
    let mut model = model_of(&bars);
    model.get_mut(&t).unwrap().high += 1.0;
    assert_reference(&db, "ASOF", true, &model, CAUGHT_UP_FROM).await;
}

#[tokio::test]
async fn a_worker_keeping_n_days_of_history_prunes_what_is_older() {
    let (db, c, _, minute) = caught_up("KEEP", 3, 72).await;
    // One correction's history made 40 days old, then a second correction.
    raise_high(&c, "KEEP", minute, 1.0).await;
    rust_ladder(&db).await;
    let (old_versions, old_revisions) = history_rows(&c, "KEEP").await;
    assert!(old_versions > 0 && old_revisions == 1);
    age_history(&c, 40).await;
    raise_high(&c, "KEEP", minute, 1.0).await;
    rust_ladder(&db).await;
    let (versions, revisions) = history_rows(&c, "KEEP").await;
    assert!(versions > old_versions && revisions == 2);

    let keep = |db: &TestDb| -> Value {
        let out = db.cli(&[
            "run",
            "--once",
            "--no-sync",
            "--keep-history-days",
            "30",
            "--json",
        ]);
        assert!(out.status.success(), "{}", crate::common::stderr(&out));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["history_pruned"].clone()
    };
    let t = instant(&c).await;
    let pruned = keep(&db);
    assert_eq!(pruned["bar_versions"], old_versions, "{pruned}");
    assert_eq!(pruned["revisions_1m"], 1, "{pruned}");
    assert_eq!(
        history_rows(&c, "KEEP").await,
        (versions - old_versions, 1),
        "the recent correction's history stays"
    );
    let floor: DateTime<Utc> = c
        .query_one("SELECT max(pruned_before) FROM history_prunes", &[])
        .await
        .unwrap()
        .get(0);
    let since = floor - (t - Duration::days(30));
    assert!(
        since >= Duration::zero() && since < Duration::minutes(5),
        "pruned before {floor}, 30 days before {t}"
    );
    let out = db.cli(&[
        "export",
        "KEEP",
        "1h",
        "--as-of",
        &(t - Duration::days(35)).to_rfc3339(),
    ]);
    assert!(!out.status.success());
    assert!(crate::common::stderr(&out).contains("was pruned"));

    // Nothing older than 30 days is left: nothing is deleted or recorded.
    assert_eq!(keep(&db), Value::Null);
    assert_eq!(db.count("SELECT count(*) FROM history_prunes").await, 1);
    let out = db.cli(&["run", "--once", "--keep-history-days", "0"]);
    assert!(!out.status.success());
    assert!(crate::common::stderr(&out).contains("keep-history-days"));

    // A worker left running prunes at start.
    age_history(&c, 40).await;
    let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_barkeep"))
        .args(["run", "--no-sync", "--keep-history-days", "30"])
        .env("DATABASE_URL", &db.url)
        .env_remove("BARKEEP_HOME")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while history_rows(&c, "KEEP").await != (0, 0) {
        if std::time::Instant::now() > deadline {
            let _ = worker.kill();
            panic!(
                "the running worker did not prune: {:?}",
                history_rows(&c, "KEEP").await
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = worker.kill();
    let _ = worker.wait();
    assert_eq!(db.count("SELECT count(*) FROM history_prunes").await, 2);
}

/// Retired versions and earlier 1m values of the symbol: (derived, 1m).
async fn history_rows(c: &Client, symbol: &str) -> (i64, i64) {
    let r = c
        .query_one(
            "SELECT (SELECT count(*) FROM derived_data_bars
                     WHERE canonical_symbol = $1 AND deleted_at IS NOT NULL),
                    (SELECT count(*) FROM data_bars_history WHERE canonical_symbol = $1)",
            &[&symbol],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

#[tokio::test]
async fn pruning_history_keeps_as_of_reads_after_it_and_refuses_those_before() {
    let (db, c, _, minute) = caught_up("PRUNE", 3, 72).await;
    let t0 = instant(&c).await;
    // Two corrections of one minute, each re-aggregated, with an instant
    // between them: history then holds the original and the first correction.
    raise_high(&c, "PRUNE", minute, 1.0).await;
    rust_ladder(&db).await;
    let t1 = instant(&c).await;
    let at_t1: Vec<Value> = ["1m", "1h", "1d"]
        .iter()
        .map(|tf| export(&db, "PRUNE", tf, Some(t1)))
        .collect();
    raise_high(&c, "PRUNE", minute, 1.0).await;
    rust_ladder(&db).await;
    let (versions, revisions) = history_rows(&c, "PRUNE").await;
    assert!(versions >= 8 && revisions == 2, "{versions} {revisions}");

    // Without --force: a count and a refusal, nothing deleted.
    let stamp = t1.to_rfc3339();
    let out = db.cli(&["history", "prune", "--before", &stamp]);
    let err = crate::common::stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("add --force"), "{err}");
    assert!(err.contains("1 earlier 1m value"), "{err}");
    assert_eq!(history_rows(&c, "PRUNE").await, (versions, revisions));
    let future = (Utc::now() + Duration::days(1)).to_rfc3339();
    let out = db.cli(&["history", "prune", "--before", &future, "--force"]);
    assert!(!out.status.success());
    assert!(crate::common::stderr(&out).contains("in the future"));
    assert_eq!(history_rows(&c, "PRUNE").await, (versions, revisions));

    let status = |db: &TestDb| -> Value {
        let out = db.cli(&["status", "--json"]);
        assert!(out.status.success(), "{}", crate::common::stderr(&out));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["history"].clone()
    };
    let kept = status(&db);
    assert_eq!(kept["bar_versions"], versions, "{kept}");
    assert_eq!(kept["revisions_1m"], revisions, "{kept}");
    assert_eq!(kept["pruned_before"], Value::Null, "{kept}");

    let out = db.cli(&["history", "prune", "--before", &stamp, "--force"]);
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    let (left, left_1m) = history_rows(&c, "PRUNE").await;
    let kept = status(&db);
    assert_eq!(
        (&kept["bar_versions"], &kept["revisions_1m"]),
        (&left.into(), &left_1m.into())
    );
    assert_eq!(
        kept["pruned_before"]
            .as_str()
            .map(|s| s.parse::<DateTime<Utc>>().unwrap()),
        Some(t1),
        "{kept}"
    );
    assert!(left > 0 && left < versions, "{left} of {versions}");
    assert_eq!(left_1m, 1, "the value the second correction replaced stays");
    for (i, tf) in ["1m", "1h", "1d"].iter().enumerate() {
        assert_eq!(
            export(&db, "PRUNE", tf, Some(t1)),
            at_t1[i],
            "{tf} as of t1"
        );
        let now = instant(&c).await;
        assert_eq!(
            export(&db, "PRUNE", tf, Some(now)),
            export(&db, "PRUNE", tf, None),
            "{tf} as of now is live"
        );
    }
    let out = db.cli(&["export", "PRUNE", "1h", "--as-of", &t0.to_rfc3339()]);
    let err = crate::common::stderr(&out);
    assert!(!out.status.success() && out.stdout.is_empty(), "{err}");
    assert!(err.contains("was pruned"), "{err}");
}

#[tokio::test]
async fn a_calendar_changing_class_change_is_refused_unless_forced_then_rebuilt() {
    let start = "2025-07-06T00:00:00Z";
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let bars: Vec<SynthBar> = generate(&crypto_spec(start, 9, 81)).collect();
    register(&c, "SWITCH", AssetClass::Fx, start).await;
    load_bars(&c, "SWITCH", &bars).await;
    rust_ladder(&db).await;
    let model = model_of(&bars);
    assert_reference(&db, "SWITCH", true, &model, start).await;
    let before = footprint(&c).await;
    let out = db.cli(&["assets", "add", "SWITCH", "--class", "crypto"]);
    assert!(!out.status.success());
    let err = crate::common::stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(footprint(&c).await, before);
    // A class on the same calendar is no calendar change.
    let out = db.cli(&["assets", "add", "SWITCH", "--class", "metal"]);
    assert!(out.status.success(), "{}", crate::common::stderr(&out));

    let out = db.cli(&["assets", "add", "SWITCH", "--class", "crypto", "--force"]);
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    assert_reference(&db, "SWITCH", false, &model, start).await;
    // The worker agrees: nothing left to change.
    let summary = rust_ladder(&db).await;
    assert_eq!(
        summary.bars_changed + summary.bars_deleted,
        0,
        "{summary:?}"
    );
    assert_reference(&db, "SWITCH", false, &model, start).await;
}

#[tokio::test]
async fn ingest_says_what_it_revised_and_a_dry_run_changes_nothing() {
    let start = "2025-07-06T00:00:00Z";
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let bars: Vec<SynthBar> = generate(&fx_spec(start, 3, 91)).collect();
    register(&c, "DRY", AssetClass::Fx, start).await;
    load_bars(&c, "DRY", &bars).await;
    rust_ladder(&db).await;
    // Two revised bars, one new day, one bad row.
    let mut rows: Vec<SynthBar> = bars[100..102]
        .iter()
        .map(|b| SynthBar {
            high: b.high + 0.5,
            ..ingested(b)
        })
        .collect();
    rows.extend(generate(&fx_spec("2025-07-15T00:00:00Z", 1, 92)).map(|b| ingested(&b)));
    let dir = tempfile::tempdir().unwrap();
    let file = write_csv(dir.path(), "fix.csv", &rows);
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("2025-07-16T00:00:00Z,1,0.5,2,1,0\n");
    std::fs::write(&file, text).unwrap();
    let file = file.to_str().unwrap();
    let before = state(&c).await;
    let out = db.cli(&["ingest", "--symbol", "DRY", "--dry-run", "--json", file]);
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    assert_eq!(state(&c).await, before, "a dry run changed something");
    let dry: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(dry["dry_run"], true);
    let f = &dry["files"][0];
    assert_eq!(f["revised"], 2, "{dry}");
    assert_eq!(
        f["loaded"].as_u64().unwrap(),
        rows.len() as u64 - 2,
        "{dry}"
    );
    assert_eq!(f["quarantined"], 1, "{dry}");
    assert_eq!(f["revised_from"], serde_json::json!(bars[100].ts));
    assert_eq!(f["revised_to"], serde_json::json!(bars[101].ts));
    assert_eq!(f["first_ts"], serde_json::json!(bars[100].ts));

    let out = db.cli(&["ingest", "--symbol", "DRY", file]);
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    let text = crate::common::stdout(&out);
    assert!(text.contains("revised 2 bars from"), "{text}");
    assert_eq!(
        db.count("SELECT count(*) FROM data_bars_history WHERE change = 'revised'")
            .await,
        2
    );
}

/// The database's clock.
async fn instant(c: &Client) -> DateTime<Utc> {
    c.query_one("SELECT now()", &[]).await.unwrap().get(0)
}

/// What an ingest can change.
async fn state(c: &Client) -> (i64, i64, i64, i64, f64) {
    let r = c
        .query_one(
            "SELECT (SELECT count(*) FROM data_bars), (SELECT count(*) FROM ingest_quarantine),
                    (SELECT count(*) FROM data_bars_history), (SELECT count(*) FROM agg_dirty_buckets),
                    (SELECT sum(high) FROM data_bars)",
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))
}
