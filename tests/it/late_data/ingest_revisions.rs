//! An ingest that revises stored bars says what it revised, and a dry run
//! of it changes nothing.

use barkeep::model::AssetClass;
use barkeep::synth::{generate, SynthBar};
use serde_json::Value;
use tokio_postgres::Client;

use crate::common::{stdout, TestDb};
use crate::fixtures::{load_bars, ok, register, rust_ladder};

use super::{fx_spec, ingested, write_csv};

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
    ok(&out);
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
    ok(&out);
    let text = stdout(&out);
    assert!(text.contains("revised 2 bars from"), "{text}");
    assert_eq!(
        db.count("SELECT count(*) FROM data_bars_history WHERE change = 'revised'")
            .await,
        2
    );
}
