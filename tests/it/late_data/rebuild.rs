//! `rebuild` and a calendar-changing class change: bad calls are refused
//! and change nothing; good ones rebuild the bars with a new derivation
//! version, equal to the reference.

use std::collections::BTreeMap;

use barkeep::model::AssetClass;
use barkeep::synth::{generate, SynthBar};
use serde_json::Value;
use tokio_postgres::Client;

use crate::common::{stderr, TestDb};
use crate::fixtures::{load_bars, ok, register, rust_ladder};

use super::{assert_reference, crypto_spec, fx_spec, model_of};

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
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(footprint(&c).await, before, "{args:?} changed something");
    }

    // A good call: 1h and everything above, a new version, the same values.
    let out = db.cli(&["rebuild", "REB", "1h", "--json"]);
    ok(&out);
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
    ok(&out);
    assert_reference(&db, "REB", true, &model, "2025-07-01T00:00:00Z").await;
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
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(footprint(&c).await, before);
    // A class on the same calendar is no calendar change.
    let out = db.cli(&["assets", "add", "SWITCH", "--class", "metal"]);
    ok(&out);

    let out = db.cli(&["assets", "add", "SWITCH", "--class", "crypto", "--force"]);
    ok(&out);
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

/// Every live derived bar's values, by timeframe and bucket.
async fn live_values(c: &Client) -> BTreeMap<(String, String), String> {
    c.query(
        "SELECT timeframe, ts_utc::text,
                concat_ws(',', open, high, low, close, vol, vwap, trade_count, source_candles,
                          expected_candles, quality_score, source_timeframe)
         FROM derived_data_bars WHERE deleted_at IS NULL",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| ((r.get(0), r.get(1)), r.get(2)))
    .collect()
}

/// The retired versions, by timeframe and bucket.
async fn retired(c: &Client) -> Vec<(String, String)> {
    c.query(
        "SELECT timeframe, ts_utc::text FROM derived_data_bars
         WHERE deleted_at IS NOT NULL ORDER BY 1, 2",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

#[tokio::test]
async fn a_rebuild_of_unchanged_data_retires_nothing_and_of_changed_data_only_the_changed_bars() {
    let start = "2025-07-01T00:00:00Z";
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let bars: Vec<SynthBar> = generate(&fx_spec(start, 9, 67)).collect();
    register(&c, "SAME", AssetClass::Fx, start).await;
    load_bars(&c, "SAME", &bars).await;
    rust_ladder(&db).await;
    let model = model_of(&bars);
    let before = live_values(&c).await;

    for round in 1..=2 {
        let out = db.cli(&["rebuild", "SAME"]);
        let said = ok(&out);
        assert_eq!(retired(&c).await, Vec::new(), "round {round}: {said}");
        assert_eq!(live_values(&c).await, before, "round {round}");
        let line = format!("{} bars unchanged, 0 changed", before.len());
        assert!(said.contains(&line), "round {round}: {said}");
        assert_reference(&db, "SAME", true, &model, start).await;
    }
    // The unchanged bars carry the rebuild's version in place.
    let versions: Vec<i32> = c
        .query(
            "SELECT DISTINCT derivation_version FROM derived_data_bars ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![3]);

    // A real change: one 1m price moves; the rebuild retires exactly the
    // bars whose values changed, one version each.
    let moved = bars[3000].ts;
    c.execute(
        "UPDATE data_bars SET high = high + 1, close = high + 1
         WHERE canonical_symbol = 'SAME' AND timeframe = '1m' AND ts_utc = $1",
        &[&moved],
    )
    .await
    .unwrap();
    let out = db.cli(&["rebuild", "SAME"]);
    let said = ok(&out);
    let after = live_values(&c).await;
    let changed: Vec<(String, String)> = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect();
    assert!(!changed.is_empty());
    assert_eq!(after.len(), before.len());
    assert_eq!(retired(&c).await, changed, "{said}");
    let line = format!(
        "{} bars unchanged, {} changed",
        before.len() - changed.len(),
        changed.len()
    );
    assert!(said.contains(&line), "{said}");
}
