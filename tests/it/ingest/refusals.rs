//! The errors that stop a load before anything reaches `data_bars`: an
//! empty or missing file, an unknown or malformed symbol, an unknown zone,
//! a CSV without a header.

use crate::common::{sample_path, stderr};
use crate::fixtures::{audusd_db, write};

use super::{bars, ingest};

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
