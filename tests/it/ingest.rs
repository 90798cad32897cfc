//! `barkeep ingest`: formats, validation with quarantine or strict
//! rejection, duplicates and revisions, and the errors that stop a load
//! before anything reaches `data_bars`.

use std::process::Output;

use chrono::{DateTime, Utc};

use crate::common::{sample_path, stderr, stdout, TestDb};
use crate::fixtures::{audusd_db, json, write};

const GOOD_FIRST: &str = "20230601 000000;0.65141;0.65141;0.65124;0.65125;0";
const GOOD_LAST: &str = "20230601 000200;0.65125;0.65130;0.65110;0.65120;0";

fn ingest(db: &TestDb, args: &[&str]) -> Output {
    let mut all = vec!["ingest", "--symbol", "AUDUSD"];
    all.extend_from_slice(args);
    db.cli(&all)
}

async fn bars(db: &TestDb) -> i64 {
    db.count("SELECT count(*) FROM data_bars").await
}

async fn quarantined(db: &TestDb) -> i64 {
    db.count("SELECT count(*) FROM ingest_quarantine").await
}

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
async fn an_empty_file_is_an_error_naming_it() {
    let db = audusd_db().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "empty.csv", b"");
    let name = file.to_str().unwrap();
    let out = ingest(&db, &[name]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("{name} has no rows")),
        "{}",
        stderr(&out)
    );
    assert_eq!(bars(&db).await, 0);
}

#[tokio::test]
async fn an_unknown_symbol_loads_nothing() {
    let db = audusd_db().await;
    let out = db.cli(&[
        "ingest",
        "--symbol",
        "EURUSD",
        sample_path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown symbol EURUSD"),
        "{}",
        stderr(&out)
    );
    assert_eq!(bars(&db).await, 0);
}

#[tokio::test]
async fn a_symbol_with_sql_metacharacters_is_refused_and_data_bars_survives() {
    let db = audusd_db().await;
    let out = db.cli(&[
        "ingest",
        "--symbol",
        "EUR'USD; DROP TABLE data_bars;--",
        sample_path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("--symbol") && err.contains("only A-Z, 0-9"),
        "{err}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'data_bars'")
            .await,
        1
    );
    assert_eq!(bars(&db).await, 0);
}

#[tokio::test]
async fn a_missing_file_is_named_and_stops_every_file_from_loading() {
    let db = audusd_db().await;
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.csv");
    let out = ingest(
        &db,
        &[sample_path().to_str().unwrap(), missing.to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("no such file: {}", missing.display())),
        "{}",
        stderr(&out)
    );
    assert_eq!(bars(&db).await, 0, "the existing file was loaded anyway");
}

#[tokio::test]
async fn the_sample_loads_once_and_a_second_load_is_all_duplicates() {
    let db = audusd_db().await;
    let sample = sample_path();
    let first = ingest(&db, &[sample.to_str().unwrap(), "--json"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let s = json(&first);
    assert_eq!(s["total"]["rows_read"], 16_875);
    assert_eq!(s["total"]["loaded"], 16_875);
    assert_eq!(s["files"][0]["format"], "histdata");
    assert_eq!(bars(&db).await, 16_875);
    // 2023-06-01 00:00 EST is 05:00 UTC.
    let (open, _, _, close, _, source) = bar_at(&db, "2023-06-01T05:00:00Z").await.unwrap();
    assert_eq!(
        (open, close, source.as_str()),
        (0.65141, 0.65125, "histdata")
    );

    let second = ingest(&db, &[sample.to_str().unwrap(), "--json"]);
    assert!(second.status.success(), "{}", stderr(&second));
    let s = json(&second);
    assert_eq!(s["total"]["loaded"], 0);
    assert_eq!(s["total"]["duplicates"], 16_875);
    assert_eq!(s["total"]["revised"], 0);
    assert_eq!(bars(&db).await, 16_875);
}

#[tokio::test]
async fn a_changed_row_is_a_revision_updated_in_place() {
    let db = audusd_db().await;
    let sample = sample_path();
    assert!(ingest(&db, &[sample.to_str().unwrap()]).status.success());
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "fix.csv",
        b"20230601 000000;0.65141;0.65150;0.65124;0.65149;7\n20230601 000100;0.651250;0.651270;0.651140;0.651180;0\n",
    );
    let out = ingest(
        &db,
        &[file.to_str().unwrap(), "--json", "--source", "vendor-fix"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let s = json(&out);
    assert_eq!(s["total"]["revised"], 1);
    assert_eq!(s["total"]["duplicates"], 1);
    assert_eq!(s["total"]["loaded"], 0);
    assert_eq!(s["files"][0]["path"], "merge");
    assert_eq!(bars(&db).await, 16_875);
    let bar = bar_at(&db, "2023-06-01T05:00:00Z").await.unwrap();
    assert_eq!(
        bar,
        (0.65141, 0.6515, 0.65124, 0.65149, 7.0, "vendor-fix".into())
    );
}

#[tokio::test]
async fn one_merge_inserts_revises_and_skips_in_the_same_file() {
    let db = audusd_db().await;
    let sample = std::fs::read_to_string(sample_path()).unwrap();
    assert!(ingest(&db, &[sample_path().to_str().unwrap()])
        .status
        .success());
    let mut lines = sample.lines();
    let (same, second) = (lines.next().unwrap(), lines.next().unwrap());
    // The second minute with another close, and a Saturday minute the sample
    // does not have, inside the sample's range.
    let mut changed: Vec<&str> = second.split(';').collect();
    changed[4] = "0.651200";
    let input = format!(
        "{same}\n{}\n20230603 120000;0.66000;0.66100;0.65900;0.66050;0\n",
        changed.join(";")
    );
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "mixed.csv", input.as_bytes());
    let out = ingest(&db, &[file.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = json(&out);
    assert_eq!(s["files"][0]["path"], "merge");
    assert_eq!(
        (
            &s["total"]["loaded"],
            &s["total"]["revised"],
            &s["total"]["duplicates"]
        ),
        (&1.into(), &1.into(), &1.into())
    );
    assert_eq!(bars(&db).await, 16_876);
    let (_, _, _, close, _, _) = bar_at(&db, "2023-06-01T05:01:00Z").await.unwrap();
    assert_eq!(close, 0.6512);
    let new = bar_at(&db, "2023-06-03T17:00:00Z").await.unwrap();
    assert_eq!(new, (0.66, 0.661, 0.659, 0.6605, 0.0, "histdata".into()));
    // Loading the same file again finds nothing to do.
    let again = ingest(&db, &[file.to_str().unwrap(), "--json"]);
    assert!(again.status.success(), "{}", stderr(&again));
    let s = json(&again);
    assert_eq!(
        (
            &s["total"]["loaded"],
            &s["total"]["revised"],
            &s["total"]["duplicates"]
        ),
        (&0.into(), &0.into(), &3.into())
    );
}

#[tokio::test]
async fn a_row_repeated_within_a_file_takes_its_last_line() {
    let db = audusd_db().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "twice.csv",
        format!("{GOOD_FIRST}\n20230601 000000;0.65141;0.65160;0.65124;0.65155;0\n{GOOD_LAST}\n")
            .as_bytes(),
    );
    let out = ingest(&db, &[file.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = json(&out);
    assert_eq!(s["total"]["loaded"], 2);
    assert_eq!(s["total"]["superseded"], 1);
    let (_, high, _, close, _, _) = bar_at(&db, "2023-06-01T05:00:00Z").await.unwrap();
    assert_eq!((high, close), (0.6516, 0.65155));
}

#[tokio::test]
async fn an_overlap_found_only_after_the_first_batch_still_merges() {
    let db = audusd_db().await;
    let sample = std::fs::read_to_string(sample_path()).unwrap();
    let last = sample.lines().last().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tail = write(dir.path(), "tail.csv", format!("{last}\n").as_bytes());
    assert!(ingest(&db, &[tail.to_str().unwrap()]).status.success());
    let out = ingest(&db, &[sample_path().to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = json(&out);
    assert_eq!(s["total"]["loaded"], 16_874);
    assert_eq!(s["total"]["duplicates"], 1);
    assert_eq!(s["files"][0]["path"], "merge");
    assert_eq!(bars(&db).await, 16_875);
}

#[tokio::test]
async fn standard_input_is_read_for_a_dash() {
    let db = audusd_db().await;
    let input = format!("{GOOD_FIRST}\n{GOOD_LAST}\n");
    let out = db.cli_with_stdin(
        &["ingest", "--symbol", "audusd", "-", "--json"],
        Some(input.as_bytes()),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let s = json(&out);
    assert_eq!(s["files"][0]["file"], "<stdin>");
    assert_eq!(s["total"]["loaded"], 2);
    assert_eq!(bars(&db).await, 2);
}

#[tokio::test]
async fn mt4_stamps_follow_the_given_zone_through_daylight_saving() {
    let db = audusd_db().await;
    let dir = tempfile::tempdir().unwrap();
    // Athens is UTC+3 in June (summer time) and UTC+2 in January.
    let file = write(
        dir.path(),
        "mt4.csv",
        b"2023.06.01,03:00,0.65141,0.65141,0.65124,0.65125,12\r\n2023.01.10,02:00,0.68000,0.68010,0.67990,0.68005,3\r\n",
    );
    let out = ingest(
        &db,
        &[file.to_str().unwrap(), "--tz", "Europe/Athens", "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["files"][0]["format"], "mt4");
    let summer = bar_at(&db, "2023-06-01T00:00:00Z").await.unwrap();
    assert_eq!((summer.4, summer.5.as_str()), (12.0, "mt4"));
    assert!(bar_at(&db, "2023-01-10T00:00:00Z").await.is_some());

    let fixed = write(
        dir.path(),
        "fixed.csv",
        b"2023.06.02,02:00,0.65141,0.65141,0.65124,0.65125,1\n",
    );
    let out = ingest(&db, &[fixed.to_str().unwrap(), "--tz", "+02:00"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(bar_at(&db, "2023-06-02T00:00:00Z").await.is_some());
    assert_eq!(bars(&db).await, 3);
}

#[tokio::test]
async fn an_unknown_zone_is_refused_before_loading() {
    let db = audusd_db().await;
    let out = ingest(
        &db,
        &[sample_path().to_str().unwrap(), "--tz", "Mars/Olympus"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown time zone"),
        "{}",
        stderr(&out)
    );
    assert_eq!(bars(&db).await, 0);
}

#[tokio::test]
async fn headed_csv_takes_iso_and_epoch_times() {
    let db = audusd_db().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "bars.csv",
        b"ts,open,high,low,close,volume\n\
          2023-06-01T00:00:00Z,1.1,1.2,1.0,1.15,10\n\
          2023-06-01 03:01:00+03:00,1.15,1.2,1.1,1.12,5\n\
          1685577720,1.12,1.13,1.11,1.11,0\n\
          2023-06-01T00:03:00,1.11,1.12,1.1,1.1,0\n",
    );
    let out = ingest(&db, &[file.to_str().unwrap(), "--json"]);
    // One row of four quarantined is above the --max-quarantined default.
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let s = json(&out);
    assert_eq!(s["files"][0]["format"], "csv");
    assert_eq!(s["total"]["loaded"], 3);
    assert_eq!(s["total"]["quarantined"], 1);
    assert!(stderr(&out).contains(&format!("{}:5: ", file.display())));
    assert!(stderr(&out).contains("has no UTC offset"));
    for ts in [
        "2023-06-01T00:00:00Z",
        "2023-06-01T00:01:00Z",
        "2023-06-01T00:02:00Z",
    ] {
        assert!(bar_at(&db, ts).await.is_some(), "no bar at {ts}");
    }
    assert_eq!(bar_at(&db, "2023-06-01T00:00:00Z").await.unwrap().4, 10.0);
}

#[tokio::test]
async fn a_csv_without_a_header_is_refused_whole() {
    let db = audusd_db().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "bare.csv",
        b"when,o,h,l,c\n1685577600,1,1,1,1\n",
    );
    let out = ingest(&db, &[file.to_str().unwrap(), "--format", "csv"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the header must name the columns"),
        "{}",
        stderr(&out)
    );
    assert_eq!(bars(&db).await, 0);
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

/// Bars of the headed CSV below: ts, vwap, trade_count as stored.
async fn vwaps(db: &TestDb) -> Vec<(DateTime<Utc>, Option<f64>, Option<i64>)> {
    db.client()
        .await
        .query(
            "SELECT ts_utc, vwap, trade_count FROM data_bars ORDER BY ts_utc",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn headed_csv_loads_vwap_and_trade_count_and_names_columns_it_leaves() {
    let db = audusd_db().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "bars.csv",
        b"ts,open,high,low,close,volume,vwap,trades,spread\n\
          2023-06-01T00:00:00Z,1.1,1.2,1.0,1.15,10,1.12,7,0.1\n\
          2023-06-01T00:01:00Z,1.15,1.2,1.1,1.12,5,,,0.1\n",
    );
    let name = file.to_str().unwrap();
    let out = ingest(&db, &[name, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("columns not loaded"), "{err}");
    assert!(err.contains("spread"), "{err}");
    let t0: DateTime<Utc> = "2023-06-01T00:00:00Z".parse().unwrap();
    let t1: DateTime<Utc> = "2023-06-01T00:01:00Z".parse().unwrap();
    assert_eq!(
        vwaps(&db).await,
        vec![(t0, Some(1.12), Some(7)), (t1, None, None)]
    );

    // A changed vwap or trade count is a revision, kept in the history.
    let fix = write(
        dir.path(),
        "fix.csv",
        b"ts,open,high,low,close,volume,vwap,trade_count\n\
          2023-06-01T00:00:00Z,1.1,1.2,1.0,1.15,10,1.13,7\n\
          2023-06-01T00:01:00Z,1.15,1.2,1.1,1.12,5,,\n",
    );
    let out = ingest(&db, &[fix.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = json(&out);
    assert_eq!(s["total"]["revised"], 1);
    assert_eq!(s["total"]["duplicates"], 1);
    assert_eq!(vwaps(&db).await[0], (t0, Some(1.13), Some(7)));
    assert_eq!(
        db.count("SELECT count(*) FROM data_bars_history WHERE vwap = 1.12")
            .await,
        1
    );

    // A file without the columns says nothing about them: the same prices
    // are duplicates, changed prices a revision that keeps the stored values.
    let plain = write(
        dir.path(),
        "plain.csv",
        b"ts,open,high,low,close,volume
          2023-06-01T00:00:00Z,1.1,1.2,1.0,1.15,10
",
    );
    let out = ingest(&db, &[plain.to_str().unwrap(), "--json"]);
    assert_eq!(json(&out)["total"]["duplicates"], 1, "{}", stdout(&out));
    let moved = write(
        dir.path(),
        "moved.csv",
        b"ts,open,high,low,close,volume
          2023-06-01T00:00:00Z,1.1,1.2,1.0,1.16,10
",
    );
    let out = ingest(&db, &[moved.to_str().unwrap(), "--json"]);
    assert_eq!(json(&out)["total"]["revised"], 1, "{}", stdout(&out));
    assert_eq!(vwaps(&db).await[0], (t0, Some(1.13), Some(7)));

    // A blank field of a column the file has clears the stored value.
    let cleared = write(
        dir.path(),
        "cleared.csv",
        b"ts,open,high,low,close,volume,vwap
          2023-06-01T00:00:00Z,1.1,1.2,1.0,1.16,10,
",
    );
    let out = ingest(&db, &[cleared.to_str().unwrap(), "--json"]);
    assert_eq!(json(&out)["total"]["revised"], 1, "{}", stdout(&out));
    assert_eq!(vwaps(&db).await[0], (t0, None, Some(7)));
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
