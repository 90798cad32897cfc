//! The Rust fast path and the SQL function `catchup_aggregation_range`
//! write identical live bars for the whole ladder: on the shipped AUDUSD
//! sample, on generated FX data across both 2025 US DST changes, and on
//! generated crypto data with volume and vwap.

use barkeep::model::AssetClass;
use barkeep::synth::{generate, SynthSpec};

use crate::common::TestDb;
use crate::fixtures::{
    both_paths_agree, both_paths_agree_in_chunks, live_bars, load_bars, register, rust_ladder,
    sample_bars, sql_ladder,
};

/// The worker folds 1m rows as they arrive in heap order and reads a range
/// again sorted when they are not in time order: rows inserted newest first
/// (and some revised, so their new versions sit elsewhere in the heap) must
/// give the same bars as the SQL path.
#[tokio::test]
async fn rows_stored_out_of_time_order_give_the_same_bars() {
    let mut bars = sample_bars();
    bars.reverse();
    let sql_db = TestDb::migrated().await;
    let rust_db = TestDb::migrated().await;
    for db in [&sql_db, &rust_db] {
        let c = db.client().await;
        register(&c, "AUDUSD", AssetClass::Fx, "2023-05-28T00:00:00Z").await;
        load_bars(&c, "AUDUSD", &bars).await;
        c.execute(
            "UPDATE data_bars SET close = close + 0.0001, high = high + 0.0001
             WHERE canonical_symbol = 'AUDUSD' AND extract(minute FROM ts_utc)::int % 7 = 3",
            &[],
        )
        .await
        .unwrap();
        // With statistics the planner reads most of the table by a
        // sequential or bitmap scan, in heap order, not by the index.
        c.execute("ANALYZE data_bars", &[]).await.unwrap();
    }
    sql_ladder(&sql_db.client().await, "AUDUSD").await;
    let summary = rust_ladder(&rust_db).await;
    assert_eq!(summary.tasks_failed, 0);
    let by_sql = live_bars(&sql_db.client().await).await;
    let by_rust = live_bars(&rust_db.client().await).await;
    assert!(by_sql.iter().any(|b| b.timeframe == "1w"), "no weekly bars");
    assert_eq!(by_sql.len(), by_rust.len(), "bar counts differ");
    for (s, r) in by_sql.iter().zip(&by_rust) {
        assert_eq!(s, r);
    }
}

#[tokio::test]
async fn the_fast_path_and_the_sql_function_agree_on_the_audusd_sample() {
    let bars = sample_bars();
    assert_eq!(bars.len(), 16_875);
    let live = both_paths_agree("AUDUSD", AssetClass::Fx, "2023-05-28T00:00:00Z", &bars).await;
    let days: Vec<_> = live.iter().filter(|b| b.timeframe == "1d").collect();
    assert!(
        days.iter()
            .all(|b| b.ts.format("%H:%M").to_string() == "21:00"),
        "summer fx days start 21:00Z"
    );
}

#[tokio::test]
async fn the_fast_path_and_the_sql_function_agree_across_both_2025_dst_changes() {
    let mut bars = Vec::new();
    // The US changes fall on Sunday 02:00 New York, inside the FX weekend:
    // trade through the weekends so the 3 h and 5 h buckets get bars.
    for (start, seed) in [("2025-03-02T00:00:00Z", 7), ("2025-10-26T00:00:00Z", 8)] {
        bars.extend(generate(&SynthSpec {
            start: start.parse().unwrap(),
            minutes: 2 * 7 * 1440,
            fx_weekends: false,
            gap_probability: 0.01,
            gap_continue_probability: 0.8,
            seed,
            ..SynthSpec::default()
        }));
    }
    let live = both_paths_agree("EURUSD", AssetClass::Fx, "2025-02-01T00:00:00Z", &bars).await;
    let lengths: Vec<i32> = live
        .iter()
        .filter(|b| b.timeframe == "4h")
        .map(|b| b.expected_candles)
        .collect();
    assert!(
        lengths.contains(&3) && lengths.contains(&5),
        "the 3 h and 5 h buckets are there"
    );
}

#[tokio::test]
async fn the_fast_path_and_the_sql_function_agree_on_crypto_with_volume() {
    let bars: Vec<_> = generate(&SynthSpec {
        start: "2025-03-01T00:00:00Z".parse().unwrap(),
        minutes: 3 * 7 * 1440,
        fx_weekends: false,
        gap_probability: 0.01,
        gap_continue_probability: 0.7,
        with_volume: true,
        price: 60_000.0,
        seed: 11,
    })
    .collect();
    let live = both_paths_agree("BTC-USD", AssetClass::Crypto, "2025-03-01T00:00:00Z", &bars).await;
    assert!(live
        .iter()
        .any(|b| b.vwap.is_some() && b.trade_count.is_some()));
    let weeks: Vec<_> = live.iter().filter(|b| b.timeframe == "1w").collect();
    assert!(weeks
        .iter()
        .all(|b| b.ts.format("%a %H:%M").to_string() == "Mon 00:00"));
}

#[tokio::test]
async fn the_sql_function_in_small_chunks_agrees_with_the_fast_path() {
    // Seven buckets a call: chunk ends fall inside weeks, on weekends and
    // gaps, in every timeframe, whether it reads 1m rows or derived bars.
    let bars: Vec<_> = generate(&SynthSpec {
        start: "2025-01-05T22:00:00Z".parse().unwrap(),
        minutes: 5 * 7 * 1440,
        fx_weekends: true,
        gap_probability: 0.02,
        gap_continue_probability: 0.9,
        seed: 21,
        ..SynthSpec::default()
    })
    .collect();
    let live =
        both_paths_agree_in_chunks("GBPUSD", AssetClass::Fx, "2025-01-05T22:00:00Z", &bars, 7)
            .await;
    let days = live.iter().filter(|b| b.timeframe == "1d").count();
    assert!(days > 3 * 7, "{days} daily bars: 1d took several chunks");
}
