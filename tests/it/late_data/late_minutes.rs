//! A late minute costs one bucket per timeframe of its own symbol, on the
//! SQL face and the Rust path; backfill older than every cursor gets its
//! bars on the next cycle.

use std::collections::BTreeMap;

use barkeep::ingest::{ingest_files, IngestOptions};
use barkeep::model::Timeframe;
use barkeep::model::{AssetClass, Symbol};
use barkeep::synth::{generate, SynthBar};
use serde_json::Value;
use tokio_postgres::Client;

use crate::common::TestDb;
use crate::fixtures::{load_bars, register, rust_ladder, sql_ladder, ts};

use super::{assert_reference, crypto_spec, fx_spec, ingested, model_of, write_csv};

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
