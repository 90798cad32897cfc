//! `barkeep ingest`: one file per topic (formats, bad rows, duplicates and
//! revisions, the errors that stop a load before anything reaches
//! `data_bars`); this one holds what they share: a load of AUDUSD through
//! the binary and the counts and bars it leaves.

mod bad_rows;
mod formats;
mod merges;
mod refusals;

use std::process::Output;

use chrono::{DateTime, Utc};

use crate::common::TestDb;

/// Two good HistData rows, the first and last minute of a small file.
const GOOD_FIRST: &str = "20230601 000000;0.65141;0.65141;0.65124;0.65125;0";
const GOOD_LAST: &str = "20230601 000200;0.65125;0.65130;0.65110;0.65120;0";

/// `barkeep ingest --symbol AUDUSD` with `args`.
fn ingest(db: &TestDb, args: &[&str]) -> Output {
    let mut all = vec!["ingest", "--symbol", "AUDUSD"];
    all.extend_from_slice(args);
    db.cli(&all)
}

/// Rows of `data_bars`.
async fn bars(db: &TestDb) -> i64 {
    db.count("SELECT count(*) FROM data_bars").await
}

/// Rows of `ingest_quarantine`.
async fn quarantined(db: &TestDb) -> i64 {
    db.count("SELECT count(*) FROM ingest_quarantine").await
}

/// The stored AUDUSD 1m bar at `ts`: prices, volume and source.
async fn bar_at(db: &TestDb, ts: &str) -> Option<(f64, f64, f64, f64, f64, String)> {
    let ts: DateTime<Utc> = ts.parse().unwrap();
    db.client()
        .await
        .query_opt(
            "SELECT open, high, low, close, vol, source FROM data_bars
             WHERE canonical_symbol = 'AUDUSD' AND timeframe = '1m' AND ts_utc = $1",
            &[&ts],
        )
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
}
