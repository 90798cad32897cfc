//! `catchup_aggregation_range`: on the sample it matches an independent 5m
//! reference; chunks stop at max windows and walk over weekends; a stale
//! cursor changes nothing; quality follows the integer thresholds; derived
//! timeframes wait for their source cursor; a bucket that no longer
//! qualifies loses its bar.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::fixtures::{sample_bars, ts};

use super::{catchup, cursor_of, fx_registered, load_sample, set_cursor, text};

/// One sample 1m bar: (ts, open, high, low, close).
type Ohlc = (DateTime<Utc>, f64, f64, f64, f64);

#[tokio::test]
async fn catchup_on_the_sample_matches_an_independent_5m_reference() {
    let (_db, c) = fx_registered(&["AUDUSD"], "2023-06-01T00:00:00Z").await;
    assert_eq!(load_sample(&c, "AUDUSD").await, 16_875);
    // The feed is quiet after Friday's close: with no delay the buckets up
    // to `now` are final by the clock.
    c.execute(
        "UPDATE data_agg_state SET aggregation_delay_seconds = 0",
        &[],
    )
    .await
    .unwrap();
    let start = cursor_of(&c, "AUDUSD", "5m").await;
    assert_eq!(start, ts("2023-06-01T00:00:00Z"));

    let r = catchup(
        &c,
        "AUDUSD",
        "5m",
        "2023-06-01T00:00:00Z",
        100_000,
        "2023-07-01T00:00:00Z",
        false,
    )
    .await;
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["continue"], false);
    assert_eq!(
        cursor_of(&c, "AUDUSD", "5m").await,
        ts("2023-07-01T00:00:00Z")
    );

    // Reference: floor every stamp to 5 minutes, first/last by time, counts.
    let mut buckets: BTreeMap<i64, Vec<Ohlc>> = BTreeMap::new();
    for b in sample_bars() {
        if b.ts < ts("2023-07-01T00:00:00Z") {
            buckets
                .entry(b.ts.timestamp() / 300 * 300)
                .or_default()
                .push((b.ts, b.open, b.high, b.low, b.close));
        }
    }
    let mut want = Vec::new();
    for (b, mut rows) in buckets {
        rows.sort_by_key(|r| r.0);
        let q = match rows.len() {
            5.. => 2,
            4 => 1,
            3 => 0,
            _ => continue,
        };
        let high = rows.iter().map(|r| r.2).fold(f64::MIN, f64::max);
        let low = rows.iter().map(|r| r.3).fold(f64::MAX, f64::min);
        want.push((
            b,
            rows[0].1,
            high,
            low,
            rows[rows.len() - 1].4,
            rows.len() as i32,
            q,
        ));
    }
    let got: Vec<(i64, f64, f64, f64, f64, i32, i16)> = c
        .query(
            "SELECT extract(epoch FROM ts_utc)::bigint, open, high, low, close, source_candles, quality_score
             FROM derived_data_bars WHERE timeframe = '5m' AND deleted_at IS NULL ORDER BY ts_utc",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6)))
        .collect();
    let want: Vec<_> = want
        .into_iter()
        .map(|w| (w.0, w.1, w.2, w.3, w.4, w.5, w.6 as i16))
        .collect();
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
    assert_eq!(r["bars_created"], got.len());

    // Up the ladder: the bar at 2023-06-06 03:00Z lands in the fx day of 2023-06-05 21:00Z.
    catchup(
        &c,
        "AUDUSD",
        "1h",
        "2023-06-01T00:00:00Z",
        100_000,
        "2023-07-01T00:00:00Z",
        false,
    )
    .await;
    let day_cursor = cursor_of(&c, "AUDUSD", "1d").await;
    let r = catchup(
        &c,
        "AUDUSD",
        "1d",
        &day_cursor.to_rfc3339(),
        100_000,
        "2023-07-01T00:00:00Z",
        false,
    )
    .await;
    assert_eq!(r["success"], true, "{r}");
    let label = text(
        &c,
        "SELECT ts_utc FROM derived_data_bars WHERE timeframe = '1d' AND deleted_at IS NULL
         AND ts_utc <= '2023-06-06 03:00Z' ORDER BY ts_utc DESC LIMIT 1",
    )
    .await;
    assert_eq!(label, "2023-06-05 21:00:00+00");
}

#[tokio::test]
async fn chunks_stop_at_max_windows_and_weekends_do_not_stall() {
    let (_db, c) = fx_registered(&["AUDUSD"], "2023-06-01T00:00:00Z").await;
    load_sample(&c, "AUDUSD").await;
    // The last sample bars of Friday 2023-06-02 are before 21:00Z; the next on Sunday evening.
    set_cursor(&c, "AUDUSD", "5m", "2023-06-02T20:40:00Z").await;
    let r = catchup(
        &c,
        "AUDUSD",
        "5m",
        "2023-06-02T20:40:00Z",
        10,
        "2023-07-01T00:00:00Z",
        false,
    )
    .await;
    assert_eq!(r["continue"], true, "{r}");
    assert_eq!(r["windows_processed"], 10);
    assert_eq!(r["reason"], "max_windows");
    let cursor = cursor_of(&c, "AUDUSD", "5m").await;
    assert!(
        cursor > ts("2023-06-04T20:00:00Z"),
        "the weekend was walked over: {cursor}"
    );
    assert_eq!(
        r["cursor_advanced_to"]
            .as_str()
            .map(|s| ts(&s.replace(' ', "T"))),
        Some(cursor)
    );
    // The next chunk starts where this one stopped.
    let r2 = catchup(
        &c,
        "AUDUSD",
        "5m",
        &cursor.to_rfc3339(),
        10,
        "2023-07-01T00:00:00Z",
        false,
    )
    .await;
    assert_eq!(r2["windows_processed"], 10);
}

#[tokio::test]
async fn a_stale_cursor_changes_nothing() {
    let (db, c) = fx_registered(&["EURUSD"], "2025-07-01T00:00:00Z").await;
    c.batch_execute(
        "INSERT INTO data_bars (canonical_symbol, timeframe, ts_utc, open, high, low, close, vol)
         SELECT 'EURUSD', '1m', t, 1, 1, 1, 1, 1 FROM generate_series(timestamptz '2025-07-01 00:00Z', '2025-07-01 00:59Z', '1 minute') t",
    )
    .await
    .unwrap();
    let r = catchup(
        &c,
        "EURUSD",
        "5m",
        "2025-07-01T00:10:00Z",
        100,
        "2025-07-02T00:00:00Z",
        false,
    )
    .await;
    assert_eq!(r["success"], false);
    assert_eq!(r["reason"], "cursor_moved");
    assert_eq!(db.count("SELECT count(*) FROM derived_data_bars").await, 0);
    assert_eq!(
        cursor_of(&c, "EURUSD", "5m").await,
        ts("2025-07-01T00:00:00Z")
    );
}

#[tokio::test]
async fn quality_follows_the_integer_thresholds() {
    let (db, c) = fx_registered(&["EURUSD"], "2025-07-01T00:00:00Z").await;
    // 5m buckets with 5, 4, 3 and 2 one-minute bars.
    c.batch_execute(
        "INSERT INTO data_bars (canonical_symbol, timeframe, ts_utc, open, high, low, close, vol)
         SELECT 'EURUSD', '1m', timestamptz '2025-07-01 00:00Z' + (b * 5 + m) * interval '1 minute', 1, 1, 1, 1, 1
         FROM (VALUES (0, 5), (1, 4), (2, 3), (3, 2)) AS k (b, n), generate_series(0, 4) m WHERE m < n;
         INSERT INTO derived_data_bars (canonical_symbol, timeframe, ts_utc, open, high, low, close, vol,
           source_timeframe, source_candles, expected_candles, quality_score)
         SELECT 'EURUSD', '5m', timestamptz '2025-07-02 00:00Z' + h * interval '1 hour' + m * interval '5 minutes',
                1, 1, 1, 1, 1, '1m', 5, 5, 2
         FROM (VALUES (0, 12), (1, 10), (2, 8), (3, 7), (4, 6)) AS k (h, n), generate_series(0, 11) m WHERE m < n;",
    )
    .await
    .unwrap();
    catchup(
        &c,
        "EURUSD",
        "5m",
        "2025-07-01T00:00:00Z",
        100,
        "2025-07-01T01:00:00Z",
        false,
    )
    .await;
    let q5 = text(
        &c,
        "SELECT string_agg(source_candles || '->' || quality_score, ' ' ORDER BY ts_utc)
         FROM derived_data_bars WHERE timeframe = '5m' AND ts_utc < '2025-07-02'",
    )
    .await;
    assert_eq!(q5, "5->2 4->1 3->0");

    set_cursor(&c, "EURUSD", "5m", "2025-07-03T00:00:00Z").await;
    let r = catchup(
        &c,
        "EURUSD",
        "1h",
        "2025-07-01T00:00:00Z",
        100,
        "2025-07-03T00:00:00Z",
        false,
    )
    .await;
    // The 00:00 hour holds only the three 5m bars above: skipped too.
    assert_eq!(r["windows_processed"], 6, "{r}");
    assert_eq!(r["bars_skipped"], 2, "{r}");
    assert_eq!(r["bars_quality_poor"], 2, "{r}");
    let q1h = text(
        &c,
        "SELECT string_agg(source_candles || '->' || quality_score, ' ' ORDER BY ts_utc)
         FROM derived_data_bars WHERE timeframe = '1h'",
    )
    .await;
    assert_eq!(q1h, "12->2 10->1 8->0 7->-1");
    assert_eq!(
        db.count("SELECT count(*) FROM derived_data_bars WHERE timeframe = '1h' AND ts_utc = '2025-07-02 04:00Z'").await,
        0
    );
}

#[tokio::test]
async fn derived_timeframes_wait_for_their_source_cursor() {
    let (_db, c) = fx_registered(&["EURUSD"], "2025-07-01T00:00:00Z").await;
    c.batch_execute(
        "INSERT INTO data_bars (canonical_symbol, timeframe, ts_utc, open, high, low, close, vol)
         SELECT 'EURUSD', '1m', t, 1, 1, 1, 1, 1 FROM generate_series(timestamptz '2025-07-01 00:00Z', '2025-07-01 02:59Z', '1 minute') t",
    )
    .await
    .unwrap();
    // 5m has only reached 01:30: 1h may finalize the 00:00 bucket only.
    catchup(
        &c,
        "EURUSD",
        "5m",
        "2025-07-01T00:00:00Z",
        100,
        "2025-07-01T01:30:00Z",
        false,
    )
    .await;
    let r = catchup(
        &c,
        "EURUSD",
        "1h",
        "2025-07-01T00:00:00Z",
        100,
        "2025-07-02T00:00:00Z",
        false,
    )
    .await;
    assert_eq!(r["bars_created"], 1, "{r}");
    assert_eq!(
        cursor_of(&c, "EURUSD", "1h").await,
        ts("2025-07-01T01:00:00Z")
    );
    // ignore_confirmation looks at the clock only.
    let r = catchup(
        &c,
        "EURUSD",
        "1h",
        "2025-07-01T01:00:00Z",
        100,
        "2025-07-02T00:00:00Z",
        true,
    )
    .await;
    assert_eq!(r["cursor_advanced_to"], "2025-07-02T00:00:00+00:00", "{r}");
    // Without a source cursor nothing is final.
    c.batch_execute("UPDATE data_agg_state SET last_agg_bar_ts_utc = NULL WHERE timeframe = '1h'")
        .await
        .unwrap();
    let r = catchup(
        &c,
        "EURUSD",
        "4h",
        &cursor_of(&c, "EURUSD", "4h").await.to_rfc3339(),
        100,
        "2025-07-02T00:00:00Z",
        false,
    )
    .await;
    assert_eq!(r["reason"], "waiting_for_source", "{r}");
}

#[tokio::test]
async fn a_bucket_that_no_longer_qualifies_loses_its_bar() {
    let (db, c) = fx_registered(&["EURUSD"], "2025-07-01T00:00:00Z").await;
    c.batch_execute(
        "INSERT INTO data_bars (canonical_symbol, timeframe, ts_utc, open, high, low, close, vol)
         SELECT 'EURUSD', '1m', t, 1, 1, 1, 1, 1 FROM generate_series(timestamptz '2025-07-01 00:00Z', '2025-07-01 00:09Z', '1 minute') t",
    )
    .await
    .unwrap();
    catchup(
        &c,
        "EURUSD",
        "5m",
        "2025-07-01T00:00:00Z",
        100,
        "2025-07-01T00:10:00Z",
        false,
    )
    .await;
    assert_eq!(
        db.count("SELECT count(*) FROM derived_data_bars WHERE deleted_at IS NULL")
            .await,
        2
    );
    c.batch_execute("DELETE FROM data_bars WHERE ts_utc >= '2025-07-01 00:05Z' AND ts_utc < '2025-07-01 00:08Z'")
        .await
        .unwrap();
    set_cursor(&c, "EURUSD", "5m", "2025-07-01T00:00:00Z").await;
    let r = catchup(
        &c,
        "EURUSD",
        "5m",
        "2025-07-01T00:00:00Z",
        100,
        "2025-07-01T00:10:00Z",
        false,
    )
    .await;
    assert_eq!(
        (
            r["bars_deleted"].clone(),
            r["bars_created"].clone(),
            r["bars_updated"].clone()
        ),
        (1.into(), 0.into(), 0.into()),
        "{r}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM derived_data_bars WHERE ts_utc = '2025-07-01 00:05Z' AND deleted_at IS NOT NULL").await,
        1
    );
}
