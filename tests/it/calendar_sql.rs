//! The calendar in SQL equals the calendar in Rust: bucket starts, ends and
//! expected counts at every hour of 2000–2040 (every US daylight-saving
//! change in between) for both calendars and every timeframe, the ladder,
//! the quality thresholds, and asset classes written in any case.

use barkeep::engine::fold::quality;
use barkeep::model::calendar::{bucket_end, bucket_start, expected_candles};
use barkeep::model::{Calendar, Timeframe};
use chrono::{Duration, TimeZone, Utc};
use sha2::{Digest, Sha256};

use crate::common::TestDb;

const FIRST_YEAR: i32 = 2000;
const LAST_YEAR: i32 = 2040;

/// Two texts per year: the bucket start (epoch seconds) of every hour of
/// `year`, in hour order; and for every distinct bucket start first met in
/// that year, its end and expected source count (both depend on the start
/// alone, so each is computed once).
fn rust_year(cal: Calendar, tf: Timeframe, year: i32) -> (String, String) {
    let mut h = Utc.with_ymd_and_hms(year, 1, 1, 0, 0, 0).unwrap();
    let end = Utc.with_ymd_and_hms(year + 1, 1, 1, 0, 0, 0).unwrap();
    let mut starts = Vec::new();
    let mut buckets = String::new();
    let mut previous = None;
    // A bucket already met at the last hour of the year before is not new.
    if let Some(before) = h.checked_sub_signed(Duration::hours(1)) {
        previous = Some(bucket_start(cal, tf, before));
    }
    while h < end {
        let s = bucket_start(cal, tf, h);
        starts.push(s.timestamp().to_string());
        if previous != Some(s) {
            let e = bucket_end(cal, tf, s);
            let x = expected_candles(cal, tf, s);
            buckets.push_str(&format!("{},{},{};", s.timestamp(), e.timestamp(), x));
            previous = Some(s);
        }
        h += Duration::hours(1);
    }
    (starts.join(","), buckets)
}

fn hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The same two texts from the SQL helpers, digested per year. The
/// calendar and timeframe are parameters, so each plan folds them.
const SQL_YEARS: &str = "
WITH hours AS (
  SELECT h, agg_bucket_start($1, $2, h) AS s
  FROM generate_series($3::timestamptz, $4::timestamptz - interval '1 hour', interval '1 hour') AS h
), starts AS (
  SELECT extract(year FROM h AT TIME ZONE 'UTC')::int AS y,
         encode(sha256(convert_to(string_agg(extract(epoch FROM s)::bigint::text, ',' ORDER BY h), 'UTF8')), 'hex') AS d
  FROM hours GROUP BY 1
), buckets AS (
  SELECT extract(year FROM first_h AT TIME ZONE 'UTC')::int AS y,
         encode(sha256(convert_to(string_agg(
           extract(epoch FROM s)::bigint || ',' || extract(epoch FROM agg_bucket_end($1, $2, s))::bigint
             || ',' || agg_expected_candles($1, $2, s) || ';', '' ORDER BY s), 'UTF8')), 'hex') AS d
  FROM (SELECT s, min(h) AS first_h FROM hours GROUP BY s) b GROUP BY 1
)
SELECT starts.y, starts.d, buckets.d FROM starts JOIN buckets USING (y) ORDER BY 1";

#[tokio::test]
async fn sql_buckets_equal_rust_buckets_every_hour_of_2000_to_2040() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    // The first bucket of 2000 may start in 1999: sweep from its last hour.
    let from = Utc
        .with_ymd_and_hms(FIRST_YEAR - 1, 12, 31, 23, 0, 0)
        .unwrap();
    let to = Utc.with_ymd_and_hms(LAST_YEAR + 1, 1, 1, 0, 0, 0).unwrap();
    // Classes as users write them: the SQL must read them as Rust does.
    for (class, cal) in [(" FX ", Calendar::Fx), ("Crypto", Calendar::Utc)] {
        assert_eq!(Calendar::for_asset_class(class), cal);
        let sql_cal: String = client
            .query_one("SELECT agg_calendar($1)", &[&class])
            .await
            .expect("reading the SQL calendar of a class")
            .get(0);
        assert_eq!(sql_cal, cal.as_str(), "calendar of {class:?}");
        for tf in Timeframe::LADDER {
            let rows = client
                .query(SQL_YEARS, &[&sql_cal, &tf.as_str(), &from, &to])
                .await
                .expect("sweeping the SQL calendar");
            let mut years = 0;
            for row in rows {
                let year: i32 = row.get(0);
                if year < FIRST_YEAR {
                    continue;
                }
                years += 1;
                let (starts, buckets) = rust_year(cal, tf, year);
                let sql_starts: String = row.get(1);
                let sql_buckets: String = row.get(2);
                assert_eq!(
                    hex(&starts),
                    sql_starts,
                    "{class:?} {tf}: bucket starts of the hours of {year} differ"
                );
                assert_eq!(
                    hex(&buckets),
                    sql_buckets,
                    "{class:?} {tf}: bucket ends or expected counts of {year} differ"
                );
            }
            assert_eq!(years, LAST_YEAR - FIRST_YEAR + 1, "{class:?} {tf}");
        }
    }
}

#[tokio::test]
async fn the_ladder_and_quality_are_the_same_in_sql_and_rust() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    for tf in Timeframe::LADDER {
        let row = client
            .query_one(
                "SELECT agg_source_timeframe($1), agg_timeframe_rank($1)",
                &[&tf.as_str()],
            )
            .await
            .expect("reading the SQL ladder");
        let source: String = row.get(0);
        let rank: i32 = row.get(1);
        assert_eq!(
            Some(source.as_str()),
            tf.source().map(Timeframe::as_str),
            "{tf}"
        );
        assert_eq!(rank, tf.rank(), "{tf}");
    }
    let not_derived: Option<String> = client
        .query_one("SELECT agg_source_timeframe('1m')", &[])
        .await
        .expect("1m")
        .get(0);
    assert_eq!(not_derived, None);

    let rows = client
        .query(
            "SELECT s, e, agg_quality(s, e) FROM generate_series(0, 60) s, generate_series(1, 60) e",
            &[],
        )
        .await
        .expect("reading SQL quality");
    assert_eq!(rows.len(), 61 * 60);
    for row in rows {
        let (s, e): (i32, i32) = (row.get(0), row.get(1));
        let sql: Option<i16> = row.get(2);
        assert_eq!(sql, quality(s, e), "quality of {s} of {e}");
    }
}

#[tokio::test]
async fn a_symbol_registered_with_an_upper_case_class_is_cut_on_its_calendar() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO core_asset_registry_all (canonical_symbol, asset_class) VALUES ('EURUSD', 'FX');
             INSERT INTO core_asset_registry_all (canonical_symbol, asset_class) VALUES ('XAUUSD', ' Metal ');",
        )
        .await
        .expect("registering");
    for symbol in ["EURUSD", "XAUUSD"] {
        let cal: String = client
            .query_one("SELECT agg_symbol_calendar($1)", &[&symbol])
            .await
            .expect("calendar")
            .get(0);
        assert_eq!(cal, "fx", "{symbol}");
    }
}
