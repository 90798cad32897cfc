//! The calendar helpers in SQL cut buckets on the fx clock and in UTC.

use crate::common::TestDb;

use super::text;

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
