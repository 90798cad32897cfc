//! The SQL face of the aggregation: calendar helpers, catch-up on the shipped
//! sample and on crafted buckets, cursor rules, task transitions, bad calls
//! and role privileges, each on a fresh migrated database.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use tokio_postgres::Client;

use crate::common::TestDb;
use crate::fixtures::{load_bars, sample_bars, ts};

/// One sample 1m bar: (ts, open, high, low, close).
type Ohlc = (DateTime<Utc>, f64, f64, f64, f64);

/// A migrated database with `symbols` registered as fx (through the
/// registry table, as an operator's SQL would) and tasks starting at `start`.
async fn fx_registered(symbols: &[&str], start: &str) -> (TestDb, Client) {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    client.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    for s in symbols {
        client
            .execute(
                "INSERT INTO core_asset_registry_all (canonical_symbol, asset_class) VALUES ($1, 'fx')",
                &[s],
            )
            .await
            .unwrap();
    }
    client
        .query_one(
            "SELECT * FROM sync_agg_state_from_registry('prod', $1)",
            &[&ts(start)],
        )
        .await
        .unwrap();
    (db, client)
}

async fn catchup(
    client: &Client,
    symbol: &str,
    tf: &str,
    cursor: &str,
    max: i32,
    now: &str,
    ignore: bool,
) -> Value {
    client
        .query_one(
            "SELECT catchup_aggregation_range($1, $2, $3, $4, $5, 1, $6)",
            &[&symbol, &tf, &ts(cursor), &max, &ts(now), &ignore],
        )
        .await
        .unwrap_or_else(|e| panic!("catchup {symbol} {tf} {cursor}: {e}"))
        .get(0)
}

async fn cursor_of(client: &Client, symbol: &str, tf: &str) -> DateTime<Utc> {
    client
        .query_one(
            "SELECT last_agg_bar_ts_utc FROM data_agg_state WHERE canonical_symbol = $1 AND timeframe = $2",
            &[&symbol, &tf],
        )
        .await
        .unwrap()
        .get(0)
}

async fn set_cursor(client: &Client, symbol: &str, tf: &str, cursor: &str) {
    client
        .execute(
            "UPDATE data_agg_state SET last_agg_bar_ts_utc = $3 WHERE canonical_symbol = $1 AND timeframe = $2",
            &[&symbol, &tf, &ts(cursor)],
        )
        .await
        .unwrap();
}

async fn load_sample(client: &Client, symbol: &str) -> usize {
    let bars = sample_bars();
    load_bars(client, symbol, &bars).await;
    bars.len()
}

async fn text(client: &Client, sql: &str) -> String {
    client
        .query_one(&format!("SELECT ({sql})::text"), &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get::<_, Option<String>>(0)
        .unwrap_or_default()
}

#[tokio::test]
async fn calendars_cut_buckets_on_the_fx_clock_and_in_utc() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    c.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    let cases = [
        // A summer fx day starts 17:00 New York = 21:00Z, a winter one 22:00Z.
        (
            "agg_bucket_start('fx', '1d', '2023-06-06 03:00Z')",
            "2023-06-05 21:00:00+00",
        ),
        (
            "agg_bucket_start('fx', '1d', '2023-01-10 03:00Z')",
            "2023-01-09 22:00:00+00",
        ),
        // The fx week starts Sunday 17:00 New York; Sunday evening is Monday's.
        (
            "agg_bucket_start('fx', '1w', '2023-06-07 12:00Z')",
            "2023-06-04 21:00:00+00",
        ),
        (
            "agg_bucket_start('fx', '1w', '2023-06-04 22:00Z')",
            "2023-06-04 21:00:00+00",
        ),
        (
            "agg_bucket_start('utc', '1w', '2023-06-04 22:00Z')",
            "2023-05-29 00:00:00+00",
        ),
        (
            "agg_bucket_start('utc', '1w', '2023-06-07 12:00Z')",
            "2023-06-05 00:00:00+00",
        ),
        (
            "agg_bucket_start('fx', '1h', '2023-06-07 12:34Z')",
            "2023-06-07 12:00:00+00",
        ),
        (
            "agg_bucket_start('utc', '4h', '2023-06-07 03:59Z')",
            "2023-06-07 00:00:00+00",
        ),
        // Fall back 2025-11-02: the FXT 08:00 bucket starts at the earlier
        // 01:00 New York (05:00Z) and lasts 5 h.
        (
            "agg_bucket_start('fx', '4h', '2025-11-02 05:30Z')",
            "2025-11-02 05:00:00+00",
        ),
        (
            "agg_bucket_start('fx', '4h', '2025-11-02 06:30Z')",
            "2025-11-02 05:00:00+00",
        ),
        (
            "agg_bucket_end('fx', '4h', '2025-11-02 05:00Z')",
            "2025-11-02 10:00:00+00",
        ),
        ("agg_expected_candles('fx', '4h', '2025-11-02 05:00Z')", "5"),
        (
            "agg_expected_candles('fx', '1d', '2025-11-01 21:00Z')",
            "25",
        ),
        // Spring forward 2025-03-09: the FXT 08:00 bucket lasts 3 h.
        (
            "agg_bucket_start('fx', '4h', '2025-03-09 08:59Z')",
            "2025-03-09 06:00:00+00",
        ),
        (
            "agg_bucket_end('fx', '4h', '2025-03-09 06:00Z')",
            "2025-03-09 09:00:00+00",
        ),
        ("agg_expected_candles('fx', '4h', '2025-03-09 06:00Z')", "3"),
        (
            "agg_expected_candles('fx', '1d', '2025-03-08 22:00Z')",
            "23",
        ),
        ("agg_expected_candles('fx', '1w', '2025-03-09 21:00Z')", "5"),
        (
            "agg_expected_candles('utc', '1w', '2025-03-10 00:00Z')",
            "7",
        ),
        (
            "agg_bootstrap_cursor('NOPE', '4h')",
            "2025-07-01 00:00:00+00",
        ),
    ];
    for (sql, want) in cases {
        assert_eq!(text(&c, sql).await, want, "{sql}");
    }
}

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

#[tokio::test]
async fn bad_calls_raise_with_the_value_and_change_nothing() {
    let (db, c) = fx_registered(&["EURUSD"], "2025-07-01T00:00:00Z").await;
    c.execute("INSERT INTO core_asset_registry_all (canonical_symbol, asset_class) VALUES ('NOTASK', 'fx')", &[])
        .await
        .unwrap();
    let state = "SELECT count(*) + coalesce(sum(extract(epoch FROM last_agg_bar_ts_utc)), 0)::bigint FROM data_agg_state";
    let before = (
        db.count(state).await,
        db.count("SELECT count(*) FROM derived_data_bars").await,
    );
    let cases = [
        (
            "catchup_aggregation_range('XXXYYY', '5m', '2025-07-01 00:00Z', 10, now(), 1, false)",
            "XXXYYY",
        ),
        (
            "catchup_aggregation_range('EURUSD', '7m', '2025-07-01 00:00Z', 10, now(), 1, false)",
            "7m",
        ),
        (
            "catchup_aggregation_range('EURUSD', '1m', '2025-07-01 00:00Z', 10, now(), 1, false)",
            "1m",
        ),
        (
            "catchup_aggregation_range('NOTASK', '5m', '2025-07-01 00:00Z', 10, now(), 1, false)",
            "NOTASK",
        ),
        (
            "catchup_aggregation_range('EURUSD', '5m', '2025-07-01 00:03Z', 10, now(), 1, false)",
            "00:03",
        ),
        (
            "catchup_aggregation_range('EURUSD', '5m', '2025-07-01 00:00Z', 0, now(), 1, false)",
            "got 0",
        ),
        (
            "catchup_aggregation_range('EURUSD', '5m', NULL, 10, now(), 1, false)",
            "NULL",
        ),
        ("agg_get_due_tasks('staging', now(), 10, 10)", "staging"),
        ("sync_agg_state_from_registry('staging', now())", "staging"),
        (
            "agg_finish('EURUSD', '2h', true, NULL, '{}', NULL, NULL, now(), 3)",
            "2h",
        ),
    ];
    for (call, needle) in cases {
        let err = c
            .query(&format!("SELECT * FROM {call}"), &[])
            .await
            .expect_err(call);
        let msg = err
            .as_db_error()
            .map(|e| e.message().to_string())
            .unwrap_or_default();
        assert!(msg.contains(needle), "{call}: {msg}");
    }
    assert_eq!(
        before,
        (
            db.count(state).await,
            db.count("SELECT count(*) FROM derived_data_bars").await
        )
    );
}

async fn claim(c: &Client, now: &str, lease: i32) -> Vec<(String, String, uuid::Uuid, bool)> {
    c.query(
        "SELECT canonical_symbol, timeframe, lease_token, recovered FROM agg_claim_tasks('prod', 'w1', $1, 100, $2)",
        &[&ts(now), &lease],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

async fn finish(
    c: &Client,
    tf: &str,
    ok: bool,
    stats: Value,
    kind: Option<&str>,
    now: &str,
) -> Value {
    c.query_one(
        "SELECT agg_finish('EURUSD', $1, $2, NULL, $3, $4, 'boom', $5, 3)",
        &[&tf, &ok, &stats, &kind, &ts(now)],
    )
    .await
    .unwrap()
    .get(0)
}

async fn task_state(c: &Client, tf: &str) -> (String, i32, i32, DateTime<Utc>) {
    let r = c
        .query_one(
            "SELECT status, hard_fail_streak, transient_fail_streak, next_run_at FROM data_agg_state
             WHERE canonical_symbol = 'EURUSD' AND timeframe = $1",
            &[&tf],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

#[tokio::test]
async fn claims_and_finishes_move_tasks_through_their_states() {
    let (db, c) = fx_registered(&["EURUSD"], "2025-07-01T00:00:00Z").await;
    let now = "2030-01-01T00:00:00Z";
    let claimed = claim(&c, now, 60).await;
    let order: Vec<&str> = claimed.iter().map(|t| t.1.as_str()).collect();
    assert_eq!(order, ["5m", "15m", "1h", "4h", "1d", "1w"]);
    assert!(claimed.iter().all(|t| !t.3));
    assert!(
        claim(&c, now, 60).await.is_empty(),
        "running tasks are not claimed twice"
    );

    // Success: idle, streak cleared, counters added.
    let token = claimed[0].2.to_string();
    let r = finish(
        &c,
        "5m",
        true,
        serde_json::json!({"lease_token": token, "bars_created": 7}),
        None,
        now,
    )
    .await;
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(task_state(&c, "5m").await.0, "idle");
    assert_eq!(
        db.count("SELECT total_bars_created FROM data_agg_state WHERE timeframe = '5m'")
            .await,
        7
    );

    // A finish with a lost lease changes nothing.
    let r = finish(
        &c,
        "15m",
        true,
        serde_json::json!({"lease_token": uuid::Uuid::nil().to_string()}),
        None,
        now,
    )
    .await;
    assert_eq!(r["reason"], "lease_lost");
    assert_eq!(task_state(&c, "15m").await.0, "running");

    // Transient: backoff, no hard streak.
    let r = finish(
        &c,
        "1h",
        false,
        serde_json::json!({}),
        Some("transient"),
        now,
    )
    .await;
    assert_eq!(r["status"], "idle");
    let (status, hard, transient, next) = task_state(&c, "1h").await;
    assert_eq!((status.as_str(), hard, transient), ("idle", 0, 1));
    assert_eq!(next, ts(now) + Duration::seconds(5));

    // Hard failures: hard_failed at the third for a mandatory task…
    for i in 1..=3 {
        c.execute(
            "UPDATE data_agg_state SET status = 'running' WHERE timeframe = '4h'",
            &[],
        )
        .await
        .unwrap();
        finish(&c, "4h", false, serde_json::json!({}), Some("hard"), now).await;
        let (status, hard, ..) = task_state(&c, "4h").await;
        assert_eq!(hard, i);
        assert_eq!(status, if i < 3 { "idle" } else { "hard_failed" });
    }
    // …and disabled for an optional one.
    c.execute("UPDATE data_agg_state SET is_mandatory = false, hard_fail_streak = 2 WHERE timeframe = '1d'", &[])
        .await
        .unwrap();
    finish(&c, "1d", false, serde_json::json!({}), None, now).await;
    assert_eq!(task_state(&c, "1d").await.0, "disabled");

    // An expired lease is recovered by the next claim; the old holder is fenced.
    let old = claimed[5].2.to_string();
    let later = "2030-01-01T00:02:00Z";
    let again = claim(&c, later, 60).await;
    let week = again.iter().find(|t| t.1 == "1w").expect("1w recovered");
    assert!(week.3, "recovered flag");
    let r = finish(
        &c,
        "1w",
        true,
        serde_json::json!({"lease_token": old}),
        None,
        later,
    )
    .await;
    assert_eq!(r["reason"], "lease_lost");
    assert_eq!(db.count("SELECT count(*) FROM agg_run_log").await, 6);
}

#[tokio::test]
async fn roles_can_run_only_what_they_are_granted() {
    let (_db, c) = fx_registered(&["EURUSD"], "2025-07-01T00:00:00Z").await;
    let attempt = |role: &'static str, call: &'static str| {
        let c = &c;
        async move {
            c.batch_execute(&format!("SET ROLE {role}")).await.unwrap();
            let r = c.query(&format!("SELECT * FROM {call}"), &[]).await;
            c.batch_execute("RESET ROLE").await.unwrap();
            r.map(|_| ())
                .map_err(|e| e.code().map(|c| c.code().to_string()))
        }
    };
    let due = "agg_get_due_tasks('prod', now(), 10, 10)";
    let catch =
        "catchup_aggregation_range('EURUSD', '5m', '2025-07-01 00:00Z', 10, now(), 1, false)";
    let sync = "sync_agg_state_from_registry('prod', '2025-07-01')";
    assert_eq!(attempt("barkeep_reader", due).await, Ok(()));
    assert_eq!(attempt("barkeep_worker", catch).await, Ok(()));
    assert_eq!(attempt("barkeep_worker", sync).await, Ok(()));
    let denied = Err(Some("42501".to_string()));
    assert_eq!(attempt("barkeep_reader", catch).await, denied);
    assert_eq!(attempt("barkeep_ingest", due).await, denied);
    assert_eq!(attempt("barkeep_ingest", sync).await, denied);
}
