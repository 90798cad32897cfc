//! `/api/bars`: bad requests get a 4xx with a JSON error, bars are paged
//! under the cap and match what is stored, `as_of` reads what
//! `export --as-of` reads, and a client hanging up mid-response leaves the
//! server serving.

use std::io::Write;
use std::net::TcpStream;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use crate::common::{stderr, stdout, TestDb};
use crate::fixtures::{db_now, demo_db};

use super::{get_json, serve};

#[tokio::test]
async fn bad_requests_get_a_4xx_with_a_json_error() {
    let db = demo_db().await;
    let server = serve(&db, &[]);
    let cases = [
        ("/api/bars?symbol=NOPE&timeframe=1h", 404, "unknown symbol"),
        (
            "/api/bars?symbol=AUDUSD&timeframe=2h",
            400,
            "unknown timeframe",
        ),
        ("/api/bars?timeframe=1h", 400, "symbol is required"),
        ("/api/bars?symbol=AUDUSD", 400, "timeframe is required"),
        ("/api/bars?symbol=AUD%27USD&timeframe=1h", 400, "symbol"),
        (
            "/api/bars?symbol=AUDUSD&timeframe=1h&from=2023-06-10&to=2023-06-01",
            400,
            "is after",
        ),
        (
            "/api/bars?symbol=AUDUSD&timeframe=1h&from=yesterday",
            400,
            "from:",
        ),
        (
            "/api/bars?symbol=AUDUSD&timeframe=1h&to=2023-13-45",
            400,
            "to:",
        ),
        (
            "/api/bars?symbol=AUDUSD&timeframe=1h&limit=10001",
            400,
            "cap",
        ),
        (
            "/api/bars?symbol=AUDUSD&timeframe=1h&limit=ten",
            400,
            "limit",
        ),
        (
            "/api/bars?symbol=AUDUSD&timeframe=1h&partial=maybe",
            400,
            "partial",
        ),
        (
            "/api/bars?symbol=AUDUSD&timeframe=1h&form=2023-06-01",
            400,
            "unknown parameter",
        ),
        (
            "/api/bars?symbol=AUDUSD&timeframe=1h&as_of=last%20week",
            400,
            "as_of:",
        ),
        (
            "/api/bars?symbol=AUDUSD&timeframe=1h&as_of=2023-06-10&partial=true",
            400,
            "drop partial or as_of",
        ),
        ("/api/tasks?status=sleeping", 400, "unknown task status"),
        ("/api/tasks?timeframe=1m", 400, "timeframe"),
        ("/api/tasks?limit=0", 400, "limit"),
        ("/api/tasks?limit=ten", 400, "limit"),
        ("/api/tasks?offset=-1", 400, "offset"),
        ("/api/nothing", 404, "no such path"),
    ];
    for (path, want, says) in cases {
        let (status, body) = get_json(server.addr, path, None);
        assert_eq!(status, want, "{path}: {body}");
        let error = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: {body}"));
        assert!(error.contains(says), "{path}: {error}");
    }
    // An injection attempt is a value like any other: it matches nothing.
    let (status, tasks) = get_json(
        server.addr,
        "/api/tasks?symbol=AUDUSD%27%20OR%20%271%27%3D%271",
        None,
    );
    assert_eq!(status, 400, "{tasks}");
    let left = db.count("SELECT count(*) FROM data_agg_state").await;
    assert_eq!(left, 6);
}

#[tokio::test]
async fn bars_are_paged_under_the_cap_and_match_what_is_stored() {
    let db = demo_db().await;
    let server = serve(&db, &[]);
    let stored = db
        .count(
            "SELECT count(*) FROM derived_data_bars WHERE timeframe = '5m' AND deleted_at IS NULL",
        )
        .await;
    assert!(stored > 3000, "the sample has weeks of 5m bars");
    let mut seen = Vec::new();
    let mut from = "2023-05-01T00:00:00Z".to_string();
    let mut pages = 0;
    loop {
        let (status, page) = get_json(
            server.addr,
            &format!("/api/bars?symbol=AUDUSD&timeframe=5m&from={from}&limit=1000"),
            None,
        );
        assert_eq!(status, 200, "{page}");
        pages += 1;
        let bars = page["bars"].as_array().unwrap();
        assert!(bars.len() <= 1000);
        seen.extend(
            bars.iter()
                .map(|b| b["ts_utc"].as_str().unwrap().to_string()),
        );
        match page["next"].as_str() {
            Some(next) => from = next.to_string(),
            None => break,
        }
    }
    assert_eq!(seen.len() as i64, stored);
    assert!(pages > 2);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "no bar twice, none skipped");

    // Without `from`: the newest bars, in time order, ending with the last stored.
    let (_, page) = get_json(
        server.addr,
        "/api/bars?symbol=AUDUSD&timeframe=1h&limit=10",
        None,
    );
    let bars = page["bars"].as_array().unwrap();
    assert_eq!(bars.len(), 10);
    let newest: DateTime<Utc> = db
        .client()
        .await
        .query_one(
            "SELECT max(ts_utc) FROM derived_data_bars WHERE timeframe = '1h'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let last: DateTime<Utc> = bars[9]["ts_utc"].as_str().unwrap().parse().unwrap();
    assert_eq!(last, newest);
    // The data stopped in 2023: no bucket of it is open, so no partial bar,
    // and 1m never has one.
    for tf in ["1m", "5m", "1h", "1d", "1w"] {
        let (_, page) = get_json(
            server.addr,
            &format!("/api/bars?symbol=AUDUSD&timeframe={tf}&partial=true&limit=5"),
            None,
        );
        let bars = page["bars"].as_array().unwrap();
        assert!(
            bars.iter().all(|b| b["is_partial"] == false),
            "{tf}: {page}"
        );
    }
    let out = db.cli(&[
        "export",
        "AUDUSD",
        "1m",
        "--partial",
        "--from",
        "2023-06-30",
    ]);
    assert!(stdout(&out).lines().skip(1).all(|l| l.ends_with(",false")));
}

/// Bars of `export … --format json` in [from, to), optionally as of an instant.
fn export_json(db: &TestDb, tf: &str, from: &str, to: &str, as_of: Option<&str>) -> Value {
    let mut args = vec![
        "export", "AUDUSD", tf, "--format", "json", "--from", from, "--to", to,
    ];
    if let Some(t) = as_of {
        args.extend(["--as-of", t]);
    }
    let out = db.cli(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn bars_as_of_an_instant_are_the_bars_export_as_of_reads() {
    let db = demo_db().await;
    let c = db.client().await;
    // A stored hour in the middle of the sample and its first minute.
    let hour: DateTime<Utc> = c
        .query_one(
            "SELECT ts_utc FROM derived_data_bars WHERE canonical_symbol = 'AUDUSD'
               AND timeframe = '1h' AND deleted_at IS NULL ORDER BY ts_utc OFFSET 40 LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let minute: DateTime<Utc> = c
        .query_one(
            "SELECT min(ts_utc) FROM data_bars
             WHERE canonical_symbol = 'AUDUSD' AND timeframe = '1m' AND ts_utc >= $1",
            &[&hour],
        )
        .await
        .unwrap()
        .get(0);
    assert!(minute < hour + Duration::hours(1));
    let before = db_now(&c).await;
    // A correction after `before`: that minute's high, which the 1m bar and
    // its hour take on, re-aggregated by the worker.
    let fixed = c
        .execute(
            "UPDATE data_bars SET high = high + 1
             WHERE canonical_symbol = 'AUDUSD' AND timeframe = '1m' AND ts_utc = $1",
            &[&minute],
        )
        .await
        .unwrap();
    assert_eq!(fixed, 1);
    let corrected: f64 = c
        .query_one(
            "SELECT high FROM data_bars
             WHERE canonical_symbol = 'AUDUSD' AND timeframe = '1m' AND ts_utc = $1",
            &[&minute],
        )
        .await
        .unwrap()
        .get(0);
    let out = db.cli(&["run", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let server = serve(&db, &[]);
    let stamp = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let from = stamp(minute - Duration::hours(3));
    let to = stamp(minute + Duration::hours(3));
    let as_of = stamp(before);
    for (tf, start) in [("1m", minute), ("1h", hour)] {
        let query = format!("/api/bars?symbol=AUDUSD&timeframe={tf}&from={from}&to={to}");
        let (status, old) = get_json(server.addr, &format!("{query}&as_of={as_of}"), None);
        assert_eq!(status, 200, "{old}");
        let (status, new) = get_json(server.addr, &query, None);
        assert_eq!(status, 200, "{new}");
        let at = |page: &Value| -> f64 {
            page["bars"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| {
                    b["ts_utc"]
                        .as_str()
                        .unwrap()
                        .parse::<DateTime<Utc>>()
                        .unwrap()
                        == start
                })
                .unwrap_or_else(|| panic!("{tf}: no bar at {start}: {page}"))["high"]
                .as_f64()
                .unwrap()
        };
        assert_eq!(
            at(&new),
            corrected,
            "{tf}: the live bar has the corrected high"
        );
        assert!(
            at(&old) < corrected,
            "{tf}: the bar as of before has the old one"
        );
        assert_eq!(
            old["as_of"]
                .as_str()
                .map(|s| s.parse::<DateTime<Utc>>().unwrap()),
            Some(before)
        );
        assert_eq!(new["as_of"], Value::Null);
        assert_eq!(
            old["bars"],
            export_json(&db, tf, &from, &to, Some(&as_of)),
            "{tf}: the API and export --as-of read the same bars"
        );
        assert_eq!(new["bars"], export_json(&db, tf, &from, &to, None), "{tf}");
    }

    // Once history before now is pruned, `as_of` before it is gone (410),
    // read with the reader role's rights, and `as_of` after it still answers.
    let pruned = db_now(&c).await;
    let out = db.cli(&["history", "prune", "--before", &stamp(pruned), "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let query = format!("/api/bars?symbol=AUDUSD&timeframe=1h&from={from}&to={to}");
    let (status, body) = get_json(server.addr, &format!("{query}&as_of={as_of}"), None);
    assert_eq!(status, 410, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("was pruned"),
        "{body}"
    );
    let (status, body) = get_json(
        server.addr,
        &format!("{query}&as_of={}", stamp(pruned)),
        None,
    );
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_client_hanging_up_mid_response_leaves_the_server_serving() {
    let db = demo_db().await;
    let server = serve(&db, &[]);
    // Megabytes of 1m bars asked for by clients that hang up at once (as a
    // browser leaving the page, or a load generator stopping): the server's
    // writes meet a closed socket.
    let request = format!(
        "GET /api/bars?symbol=AUDUSD&timeframe=1m&limit=10000 HTTP/1.1\r\nHost: {}\r\n\r\n",
        server.addr
    );
    for _ in 0..3 {
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.write_all(request.repeat(3).as_bytes()).unwrap();
        drop(s);
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (status, body) = get_json(server.addr, "/health", None);
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
}
