//! Validation: each kind of bad row is quarantined, or with `--strict`
//! rejects the whole file, naming file, line and reason; an overlong line
//! is one bad row read past without being held; a bar before the date floor
//! is bad.

use crate::common::{sample_path, stderr};
use crate::fixtures::{audusd_db, json, write};

use super::{bar_at, bars, ingest, quarantined, GOOD_FIRST, GOOD_LAST};

/// A HistData file with a good first and last line around `bad` (line 2)
/// is rejected whole with --strict, and without it loads the two good bars
/// and quarantines line 2 with `reason`.
async fn bad_middle_row_is_quarantined_or_rejected(bad: &[u8], reason: &str) {
    let db = audusd_db().await;
    let dir = tempfile::tempdir().unwrap();
    let mut content = Vec::new();
    content.extend_from_slice(GOOD_FIRST.as_bytes());
    content.push(b'\n');
    content.extend_from_slice(bad);
    content.push(b'\n');
    content.extend_from_slice(GOOD_LAST.as_bytes());
    content.push(b'\n');
    let file = write(dir.path(), "bars.csv", &content);
    let name = file.to_str().unwrap();
    let where_ = format!("{name}:2: ");

    let strict = ingest(&db, &[name, "--strict", "--format", "histdata"]);
    assert!(!strict.status.success(), "--strict accepted a bad row");
    let err = stderr(&strict);
    assert!(err.contains(&where_), "no {where_} in: {err}");
    assert!(err.contains(reason), "no {reason:?} in: {err}");
    assert!(err.contains("rejected (--strict)"), "{err}");
    assert_eq!(bars(&db).await, 0, "--strict left bars behind");
    assert_eq!(quarantined(&db).await, 0, "--strict left quarantine rows");

    // Lenient: the good rows load; a third of the file bad is above the
    // --max-quarantined default, so the exit code says so.
    let lenient = ingest(&db, &[name, "--json"]);
    assert_eq!(lenient.status.code(), Some(1), "{}", stderr(&lenient));
    let err = stderr(&lenient);
    assert!(err.contains("1 of 3 rows quarantined"), "{err}");
    assert!(err.contains(&where_) && err.contains(reason), "{err}");
    let summary = json(&lenient);
    assert_eq!(summary["total"]["rows_read"], 3);
    assert_eq!(summary["total"]["loaded"], 2);
    assert_eq!(summary["total"]["quarantined"], 1);
    assert_eq!(bars(&db).await, 2, "the bad row reached data_bars");
    assert!(bar_at(&db, "2023-06-01T05:01:00Z").await.is_none());
    let row = db
        .client()
        .await
        .query_one(
            "SELECT file, line, canonical_symbol, raw_line, reason FROM ingest_quarantine",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), name);
    assert_eq!(row.get::<_, i64>(1), 2);
    assert_eq!(row.get::<_, String>(2), "AUDUSD");
    assert_eq!(row.get::<_, String>(3), String::from_utf8_lossy(bad));
    assert!(row.get::<_, String>(4).contains(reason));
}

#[tokio::test]
async fn a_row_with_the_wrong_column_count_is_bad() {
    bad_middle_row_is_quarantined_or_rejected(
        b"20230601 000100;0.65125;0.65127;0.65114;0",
        "expected 6 fields separated by ';', found 5",
    )
    .await;
}

#[tokio::test]
async fn a_non_numeric_price_is_bad() {
    bad_middle_row_is_quarantined_or_rejected(
        b"20230601 000100;abc;0.65127;0.65114;0.65118;0",
        "open is not a number",
    )
    .await;
}

#[tokio::test]
async fn a_nan_price_is_bad() {
    bad_middle_row_is_quarantined_or_rejected(
        b"20230601 000100;NaN;0.65127;0.65114;0.65118;0",
        "open is not a finite number",
    )
    .await;
}

#[tokio::test]
async fn an_infinite_price_is_bad() {
    bad_middle_row_is_quarantined_or_rejected(
        b"20230601 000100;0.65125;inf;0.65114;0.65118;0",
        "high is not a finite number",
    )
    .await;
}

#[tokio::test]
async fn a_negative_price_is_bad() {
    bad_middle_row_is_quarantined_or_rejected(
        b"20230601 000100;0.65125;0.65127;-0.65114;0.65118;0",
        "low must be above 0",
    )
    .await;
}

#[tokio::test]
async fn a_zero_price_is_bad() {
    bad_middle_row_is_quarantined_or_rejected(
        b"20230601 000100;0.65125;0.65127;0.65114;0;0",
        "close must be above 0",
    )
    .await;
}

#[tokio::test]
async fn a_high_below_the_body_is_bad() {
    bad_middle_row_is_quarantined_or_rejected(
        b"20230601 000100;0.65125;0.65120;0.65114;0.65118;0",
        "high 0.6512 is below max(open, close) 0.65125",
    )
    .await;
}

#[tokio::test]
async fn a_low_above_the_body_is_bad() {
    bad_middle_row_is_quarantined_or_rejected(
        b"20230601 000100;0.65125;0.65127;0.65120;0.65118;0",
        "low 0.6512 is above min(open, close) 0.65118",
    )
    .await;
}

#[tokio::test]
async fn a_negative_volume_is_bad() {
    bad_middle_row_is_quarantined_or_rejected(
        b"20230601 000100;0.65125;0.65127;0.65114;0.65118;-3",
        "volume must be 0 or more",
    )
    .await;
}

#[tokio::test]
async fn a_timestamp_off_the_whole_minute_is_bad() {
    bad_middle_row_is_quarantined_or_rejected(
        b"20230601 000130;0.65125;0.65127;0.65114;0.65118;0",
        "is not on a whole minute",
    )
    .await;
}

#[tokio::test]
async fn a_bar_in_the_future_is_bad() {
    bad_middle_row_is_quarantined_or_rejected(
        b"20990601 000100;0.65125;0.65127;0.65114;0.65118;0",
        "bar starts in the future",
    )
    .await;
}

#[tokio::test]
async fn an_unparseable_timestamp_is_bad() {
    bad_middle_row_is_quarantined_or_rejected(
        b"2023-06-01 00:01;0.65125;0.65127;0.65114;0.65118;0",
        "unparseable timestamp",
    )
    .await;
}

#[tokio::test]
async fn non_utf8_bytes_make_one_bad_row_not_a_dead_file() {
    bad_middle_row_is_quarantined_or_rejected(
        b"20230601 000100;0.651\xff25;0.65127;0.65114;0.65118;0",
        "not valid UTF-8",
    )
    .await;
}

#[tokio::test]
async fn strict_rejects_the_whole_file_and_names_each_bad_row() {
    let db = audusd_db().await;
    let dir = tempfile::tempdir().unwrap();
    let content = std::fs::read_to_string(sample_path()).unwrap();
    let mut lines: Vec<&str> = content.lines().collect();
    lines[99] = "20230601 014000;x;0.65;0.65;0.65;0";
    lines[9999] = "20230601 014000;0.65;0.65;0.65;0.65";
    let file = write(dir.path(), "two_bad.csv", lines.join("\n").as_bytes());
    let name = file.to_str().unwrap();
    let out = ingest(&db, &[name, "--strict"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("2 bad rows of 16875"), "{err}");
    assert!(
        err.contains(&format!("{name}:100: open is not a number")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{name}:10000: expected 6 fields")),
        "{err}"
    );
    assert_eq!(bars(&db).await, 0);
    assert_eq!(quarantined(&db).await, 0);
}

#[tokio::test]
async fn quarantine_rows_carry_file_line_and_reason_for_each_format() {
    let db = audusd_db().await;
    let dir = tempfile::tempdir().unwrap();
    let mt4 = write(
        dir.path(),
        "mt4.csv",
        b"2023.06.01,00:00,1.1,1.2,1.0,1.15,1\n\n2023.06.01,00:01,1.1,1.0,1.0,1.15,1\n",
    );
    let csv = write(
        dir.path(),
        "h.csv",
        b"ts,open,high,low,close\n1685577600,1,1,1,1\n1685577660,1,1,1\n",
    );
    let out = ingest(
        &db,
        &[
            mt4.to_str().unwrap(),
            csv.to_str().unwrap(),
            "--tz",
            "UTC",
            "--json",
        ],
    );
    // Half of each file is bad: above the --max-quarantined default.
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let s = json(&out);
    assert_eq!(s["total"]["quarantined"], 2);
    let rows = db
        .client()
        .await
        .query(
            "SELECT file, line, reason FROM ingest_quarantine ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, i64, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(got[0].0, mt4.to_str().unwrap());
    assert_eq!(got[0].1, 3, "blank lines still count as lines");
    assert!(got[0].2.contains("high 1 is below"), "{got:?}");
    assert_eq!(got[1].0, csv.to_str().unwrap());
    assert_eq!(got[1].1, 3);
    assert!(got[1].2.contains("expected 5 fields"), "{got:?}");
}

#[tokio::test]
async fn a_price_whose_sums_overflow_is_bad() {
    bad_middle_row_is_quarantined_or_rejected(
        b"20230601 000100;0.65125;1e308;0.65114;0.65118;0",
        "high 1e308 is out of range",
    )
    .await;
}

#[tokio::test]
async fn a_volume_whose_sums_overflow_is_bad() {
    bad_middle_row_is_quarantined_or_rejected(
        b"20230601 000100;0.65125;0.65127;0.65114;0.65118;1.7e308",
        "volume 1.7e308 is out of range",
    )
    .await;
}

#[tokio::test]
async fn a_value_beyond_double_precision_is_bad() {
    bad_middle_row_is_quarantined_or_rejected(
        b"20230601 000100;1e400;0.65127;0.65114;0.65118;0",
        "open is not a finite number",
    )
    .await;
}

#[tokio::test]
async fn a_vwap_or_trade_count_out_of_range_is_bad() {
    let db = audusd_db().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "bars.csv",
        b"ts,open,high,low,close,volume,vwap,trade_count\n\
          2023-06-01T00:00:00Z,1.1,1.2,1.0,1.15,10,1e308,7\n\
          2023-06-01T00:01:00Z,1.15,1.2,1.1,1.12,5,1.15,1e300\n\
          2023-06-01T00:02:00Z,1.15,1.2,1.1,1.12,5,NaN,1\n\
          2023-06-01T00:03:00Z,1.15,1.2,1.1,1.12,5,1.15,2.5\n\
          2023-06-01T00:04:00Z,1.15,1.2,1.1,1.12,5,1.15,3\n",
    );
    let name = file.to_str().unwrap();
    let out = ingest(&db, &[name, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    for expected in [
        format!("{name}:2: vwap 1e308 is out of range"),
        format!("{name}:3: trade_count 1e300 is out of range"),
        format!("{name}:4: vwap is not a finite number"),
        format!("{name}:5: trade_count must be a whole number"),
    ] {
        assert!(err.contains(&expected), "no {expected:?} in {err}");
    }
    assert_eq!(json(&out)["total"]["loaded"], 1);
    assert_eq!(quarantined(&db).await, 4);
}

/// A line of `len` bytes that no format reads as a bar.
fn overlong(len: usize) -> Vec<u8> {
    let mut line = b"20230601 000100;".to_vec();
    line.resize(len, b'7');
    line
}

#[tokio::test]
async fn an_overlong_line_is_one_bad_row_read_past_without_holding_it() {
    let db = audusd_db().await;
    let dir = tempfile::tempdir().unwrap();
    let long = 64 << 20;
    let mut content = format!("{GOOD_FIRST}\n").into_bytes();
    content.extend_from_slice(&overlong(long));
    content.extend_from_slice(format!("\n{GOOD_LAST}\n").as_bytes());
    let file = write(dir.path(), "long.csv", &content);
    drop(content);
    let name = file.to_str().unwrap();
    let (out, peak_kib) = db.cli_peak_memory(&["ingest", "--symbol", "AUDUSD", name, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{name}:2: line is {long} bytes long")),
        "{err}"
    );
    let s = json(&out);
    assert_eq!(s["total"]["loaded"], 2, "the rows after it were not loaded");
    assert_eq!(s["total"]["quarantined"], 1);
    assert!(bar_at(&db, "2023-06-01T05:02:00Z").await.is_some());
    let raw_len = db
        .count("SELECT length(raw_line)::bigint FROM ingest_quarantine")
        .await;
    assert!(raw_len < 5_000, "{raw_len} characters of the line kept");
    assert!(
        peak_kib < 48 * 1024,
        "ingest of a 64 MiB line peaked at {peak_kib} KiB: the line was held"
    );
}

#[tokio::test]
async fn an_overlong_line_in_headed_csv_is_one_bad_row_between_good_ones() {
    let db = audusd_db().await;
    let dir = tempfile::tempdir().unwrap();
    let mut content = b"ts,open,high,low,close\n2023-06-01T00:00:00Z,1.1,1.2,1.0,1.15\n".to_vec();
    content.extend_from_slice(&overlong(200_000));
    content.extend_from_slice(b"\n2023-06-01T00:01:00Z,1.1,1.2,1.0,1.15\n");
    content.extend_from_slice(&overlong(70_000));
    content.extend_from_slice(b"\n\"2023-06-01T00:02:00Z\",1.1,1.2,1.0,1.15\n");
    let file = write(dir.path(), "long.csv", &content);
    let name = file.to_str().unwrap();
    let out = ingest(&db, &[name, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{name}:3: line is 200000 bytes long")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{name}:5: line is 70000 bytes long")),
        "{err}"
    );
    let s = json(&out);
    assert_eq!(s["total"]["loaded"], 3);
    assert_eq!(s["total"]["quarantined"], 2);
    let lines: Vec<i64> = db
        .client()
        .await
        .query("SELECT line FROM ingest_quarantine ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(lines, vec![3, 5], "bad rows in file order");
}

#[tokio::test]
async fn a_bar_dated_1800_is_quarantined_and_the_floor_can_be_moved() {
    let db = audusd_db().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "old.csv",
        format!("{GOOD_FIRST}\n18000601 000100;0.65141;0.65160;0.65124;0.65155;0\n{GOOD_LAST}\n")
            .as_bytes(),
    );
    let name = file.to_str().unwrap();
    let out = ingest(&db, &[name, "--max-quarantined", "50"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("old.csv:2: bar starts before 1970-01-01T00:00:00+00:00 (1800-06-01T05:01:00+00:00 is implausibly old"),
        "{}",
        stderr(&out)
    );
    assert_eq!(bars(&db).await, 2);
    assert_eq!(quarantined(&db).await, 1);

    // A later floor quarantines what is before it.
    let file = write(
        dir.path(),
        "floor.csv",
        b"20230601 000500;0.65141;0.65160;0.65124;0.65155;0\n20230602 000000;0.65141;0.65160;0.65124;0.65155;0\n",
    );
    let out = ingest(
        &db,
        &[
            file.to_str().unwrap(),
            "--not-before",
            "2023-06-02",
            "--max-quarantined",
            "50",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("floor.csv:1: bar starts before 2023-06-02T00:00:00+00:00"),
        "{}",
        stderr(&out)
    );
    assert_eq!(bars(&db).await, 3);
}
