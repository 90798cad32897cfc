//! Source gaps longer than a chunk: the fast path crosses them in one
//! transaction and still writes, and retires, exactly the bars the SQL
//! function does.

use barkeep::model::AssetClass;
use barkeep::synth::{generate, SynthBar, SynthSpec};

use crate::common::TestDb;
use crate::fixtures::{
    both_paths_agree, live_bars, load_bars, register, rust_ladder, sql_ladder, ts,
};

/// Five days of crypto minutes starting at `start`.
fn block(start: &str, seed: u64) -> Vec<SynthBar> {
    generate(&SynthSpec {
        start: start.parse().unwrap(),
        minutes: 5 * 1440,
        fx_weekends: false,
        gap_probability: 0.01,
        gap_continue_probability: 0.7,
        with_volume: true,
        price: 60_000.0,
        seed,
    })
    .collect()
}

#[tokio::test]
async fn bars_after_a_gap_of_months_match_the_sql_function() {
    let mut bars = block("2025-03-01T00:00:00Z", 21);
    bars.extend(block("2025-06-15T00:00:00Z", 22));
    let live = both_paths_agree("ETH-USD", AssetClass::Crypto, "2025-03-01T00:00:00Z", &bars).await;
    let after_gap = |tf: &str| {
        live.iter()
            .any(|b| b.timeframe == tf && b.ts >= ts("2025-06-15T00:00:00Z"))
    };
    assert!(
        after_gap("5m") && after_gap("1d"),
        "the second block has bars"
    );
    assert!(
        !live
            .iter()
            .any(|b| b.ts > ts("2025-03-07T00:00:00Z") && b.ts < ts("2025-06-14T00:00:00Z")),
        "the gap has no bars"
    );
}

#[tokio::test]
async fn a_rerun_over_a_new_gap_retires_the_bars_inside_it() {
    let first = block("2025-03-01T00:00:00Z", 31);
    let middle = block("2025-04-20T00:00:00Z", 32);
    let last = block("2025-06-15T00:00:00Z", 33);
    let rust_db = TestDb::migrated().await;
    let c = rust_db.client().await;
    register(&c, "SOL-USD", AssetClass::Crypto, "2025-03-01T00:00:00Z").await;
    for b in [&first, &middle, &last] {
        load_bars(&c, "SOL-USD", b).await;
    }
    rust_ladder(&rust_db).await;
    let before = live_bars(&c).await;
    assert!(before
        .iter()
        .any(|b| b.ts >= ts("2025-04-20T00:00:00Z") && b.ts < ts("2025-04-25T00:00:00Z")));
    // The middle block turns out to be bad data and goes away; the ladder is redone.
    c.execute(
        "DELETE FROM data_bars WHERE ts_utc >= '2025-04-01' AND ts_utc < '2025-05-01'",
        &[],
    )
    .await
    .unwrap();
    c.execute(
        "UPDATE data_agg_state SET last_agg_bar_ts_utc = '2025-03-01', status = 'idle',
                next_run_at = now()",
        &[],
    )
    .await
    .unwrap();
    let summary = rust_ladder(&rust_db).await;
    assert_eq!(summary.tasks_failed, 0);
    let after = live_bars(&c).await;
    assert!(
        !after
            .iter()
            .any(|b| b.ts > ts("2025-03-07T00:00:00Z") && b.ts < ts("2025-06-14T00:00:00Z")),
        "no live bar is left inside the new gap"
    );
    let retired = rust_db
        .count("SELECT count(*) FROM derived_data_bars WHERE deleted_at IS NOT NULL AND ts_utc >= '2025-04-01' AND ts_utc < '2025-05-01'")
        .await;
    assert!(retired > 0, "the old bars are soft-deleted, not removed");

    let sql_db = TestDb::migrated().await;
    let s = sql_db.client().await;
    register(&s, "SOL-USD", AssetClass::Crypto, "2025-03-01T00:00:00Z").await;
    load_bars(&s, "SOL-USD", &first).await;
    load_bars(&s, "SOL-USD", &last).await;
    sql_ladder(&s, "SOL-USD").await;
    assert_eq!(live_bars(&s).await, after);
}
