//! The formats: standard input for a dash, MT4 stamps in a given zone
//! through daylight saving, headed CSV with ISO or epoch times, vwap and
//! trade count.

use chrono::{DateTime, Utc};

use crate::common::{stderr, stdout, TestDb};
use crate::fixtures::{audusd_db, json, write};

use super::{bar_at, bars, ingest, GOOD_FIRST, GOOD_LAST};

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
