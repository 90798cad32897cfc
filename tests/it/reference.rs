//! Derived bars against the naive reference of `fixtures::reference`: the
//! shipped sample, generated fx across both 2025 DST changes, fx with
//! weekends and crypto with volume, and random gaps, bar for bar.

use barkeep::synth::{self, SynthBar, SynthSpec};
use chrono::Utc;

use crate::common::{sample_path, TestDb};
use crate::fixtures::{
    assert_same_bars, load_bars, ok, reference_ladder, sample_bars, stored, ts, RefBar,
};

/// Load 1m bars into data_bars (the engine tests' loader).
async fn load(db: &TestDb, symbol: &str, bars: &[SynthBar]) {
    load_bars(&db.client().await, symbol, bars).await;
}

/// Register, sync from `start`, run the worker to the end, return stored bars.
async fn aggregate(db: &TestDb, symbol: &str, class: &str, start: &str) -> Vec<RefBar> {
    ok(&db.cli(&["assets", "add", symbol, "--class", class]));
    ok(&db.cli(&["sync", "--env", "prod", "--start", start]));
    ok(&db.cli(&["run", "--once"]));
    stored(db, symbol).await
}

#[tokio::test]
async fn the_shipped_sample_matches_the_reference_bar_for_bar() {
    let db = TestDb::migrated().await;
    let bars = sample_bars();
    assert_eq!(bars.len(), 16_875);
    ok(&db.cli(&["assets", "add", "AUDUSD", "--class", "fx"]));
    ok(&db.cli(&[
        "ingest",
        "--symbol",
        "AUDUSD",
        sample_path().to_str().unwrap(),
    ]));
    let actual = aggregate(&db, "AUDUSD", "fx", "2023-06-01T00:00:00Z").await;
    let expected = reference_ladder(true, &bars, ts("2023-06-01T00:00:00Z"), Utc::now());
    for tf in ["5m", "15m", "1h", "4h", "1d", "1w"] {
        assert!(
            expected.iter().any(|b| b.timeframe == tf),
            "reference has no {tf} bar"
        );
    }
    assert_same_bars(&actual, &expected);
}

#[tokio::test]
async fn generated_fx_across_both_2025_dst_changes_matches_the_reference() {
    let db = TestDb::migrated().await;
    // Around the clock (no weekend closure) so the 3 h/5 h and 23 h/25 h
    // buckets of the DST weekends hold data; with gaps for quality scores.
    let mut bars = Vec::new();
    for (start, seed) in [("2025-03-05T00:00:00Z", 7), ("2025-10-29T00:00:00Z", 8)] {
        let spec = SynthSpec {
            start: ts(start),
            minutes: 9 * 24 * 60,
            fx_weekends: false,
            gap_probability: 0.01,
            gap_continue_probability: 0.8,
            seed,
            ..SynthSpec::default()
        };
        bars.extend(synth::generate(&spec));
    }
    load(&db, "EURUSD", &bars).await;
    let actual = aggregate(&db, "EURUSD", "fx", "2025-03-01T00:00:00Z").await;
    let expected = reference_ladder(true, &bars, ts("2025-03-01T00:00:00Z"), Utc::now());
    let long_days: Vec<_> = expected
        .iter()
        .filter(|b| b.timeframe == "1d" && b.expected_candles != 24)
        .collect();
    assert_eq!(
        long_days.len(),
        2,
        "one 23 h and one 25 h fx day: {long_days:?}"
    );
    assert_same_bars(&actual, &expected);
}

#[tokio::test]
async fn generated_fx_with_weekends_and_crypto_with_volume_match_the_reference() {
    let db = TestDb::migrated().await;
    let fx_bars: Vec<_> = synth::generate(&SynthSpec {
        start: ts("2025-06-25T00:00:00Z"),
        minutes: 21 * 24 * 60,
        seed: 11,
        ..SynthSpec::default()
    })
    .collect();
    let crypto_bars: Vec<_> = synth::generate(&SynthSpec {
        start: ts("2025-06-25T00:00:00Z"),
        minutes: 21 * 24 * 60,
        fx_weekends: false,
        with_volume: true,
        price: 60_000.0,
        seed: 12,
        ..SynthSpec::default()
    })
    .collect();
    load(&db, "GBPUSD", &fx_bars).await;
    load(&db, "BTCUSD", &crypto_bars).await;
    ok(&db.cli(&["assets", "add", "GBPUSD", "--class", "fx"]));
    let crypto = aggregate(&db, "BTCUSD", "crypto", "2025-07-01T00:00:00Z").await;
    let fx = stored(&db, "GBPUSD").await;
    assert_same_bars(
        &fx,
        &reference_ladder(true, &fx_bars, ts("2025-07-01T00:00:00Z"), Utc::now()),
    );
    let expected_crypto =
        reference_ladder(false, &crypto_bars, ts("2025-07-01T00:00:00Z"), Utc::now());
    assert!(expected_crypto
        .iter()
        .any(|b| b.vwap.is_some() && b.trade_count.is_some()));
    assert_same_bars(&crypto, &expected_crypto);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]
        #[test]
        fn random_gaps_never_change_the_agreement(seed in 1u64..1_000_000, gap in 0.0f64..0.4, run_on in 0.0f64..0.97, crypto in any::<bool>()) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let db = TestDb::migrated().await;
                let bars: Vec<_> = synth::generate(&SynthSpec {
                    start: ts("2025-07-03T13:17:00Z"),
                    minutes: 10 * 24 * 60,
                    fx_weekends: !crypto,
                    gap_probability: gap,
                    gap_continue_probability: run_on,
                    with_volume: crypto,
                    seed,
                    ..SynthSpec::default()
                })
                .collect();
                load(&db, "PROP", &bars).await;
                let class = if crypto { "crypto" } else { "fx" };
                let actual = aggregate(&db, "PROP", class, "2025-07-01T00:00:00Z").await;
                assert_same_bars(&actual, &reference_ladder(!crypto, &bars, ts("2025-07-01T00:00:00Z"), Utc::now()));
            });
        }
    }
}
