//! `barkeep serve`: the dashboard renders tasks and a drawn chart in
//! headless Chromium, the JSON API pages bars and refuses bad requests with
//! a JSON error, the token guards every path but /health, a non-loopback
//! bind without a token refuses to start, `/metrics` is Prometheus text,
//! the open bucket of `/api/bars` and `export --partial` equals the stored
//! bar once its bucket is final, `as_of` reads what `export --as-of` reads,
//! `/api/alerts` and `/api/tasks` say what `barkeep alerts` and `status`
//! say, and lease recoveries are counted on `/metrics`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};

use barkeep::assets::AssetClass;
use barkeep::bars::{open_bucket, BarRecord};
use barkeep::calendar::{Calendar, Timeframe};
use barkeep::synth::{generate, SynthBar, SynthSpec};
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use crate::common::{stderr, stdout, TestDb};
use crate::fixtures::{demo_db, load_bars, register};

/// A running `barkeep serve`, stopped when dropped.
struct Served {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(db: &TestDb, extra: &[&str]) -> Served {
    let mut args = vec!["serve", "--addr", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut child = Command::new(env!("CARGO_BIN_EXE_barkeep"))
        .args(&args)
        .env("DATABASE_URL", &db.url)
        .env_remove("BARKEEP_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting barkeep serve");
    let out = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("barkeep serve exited before listening")
            .expect("reading serve's output");
        if let Some(a) = line.strip_prefix("barkeep serve: listening on ") {
            break a.trim().parse().expect("a socket address");
        }
    };
    Served { child, addr }
}

/// A GET over plain HTTP/1.1: (status, body).
fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let (status, _, body) = get_with_head(addr, path, token);
    (status, body)
}

/// A GET over plain HTTP/1.1: (status, the head in lower case, body).
fn get_with_head(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connecting to barkeep serve");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let head = head.to_ascii_lowercase();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, head, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
}

fn get_json(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, Value) {
    let (status, body) = get(addr, path, token);
    let json =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
    (status, json)
}

#[tokio::test]
async fn a_non_loopback_bind_without_a_token_refuses_to_start() {
    let db = TestDb::migrated().await;
    for args in [
        vec!["serve", "--addr", "0.0.0.0:0"],
        vec!["serve", "--addr", "0.0.0.0:0", "--token", " "],
    ] {
        let out = db.cli(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("token"), "{}", stderr(&out));
        assert!(
            stdout(&out).is_empty(),
            "nothing listened: {}",
            stdout(&out)
        );
    }
}

#[tokio::test]
async fn the_token_guards_every_path_but_health() {
    let db = TestDb::migrated().await;
    let server = serve(&db, &["--token", "s3cret"]);
    let (status, body) = get_json(server.addr, "/health", None);
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    for path in [
        "/",
        "/api/tasks",
        "/api/bars?symbol=X&timeframe=1h",
        "/metrics",
        "/nope",
    ] {
        let (status, body) = get_json(server.addr, path, None);
        assert_eq!(status, 401, "{path}");
        assert!(body["error"].as_str().unwrap().contains("token"), "{path}");
        let (status, body) = get_json(server.addr, path, Some("s3cret!"));
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("wrong token")),
            "{path}"
        );
    }
    let (status, _) = get(server.addr, "/api/tasks", Some("s3cret"));
    assert_eq!(status, 200);
    let (status, page) = get(server.addr, "/?token=s3cret", None);
    assert_eq!(status, 200);
    assert!(
        page.contains("LightweightCharts"),
        "the chart library is inlined"
    );
    // The server reads as the reader role, whoever the URL names.
    let (_, health) = get_json(server.addr, "/api/health", Some("s3cret"));
    assert_eq!(health["role"], "barkeep_reader");
}

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

/// The fields a stored bar and a partial one share, with the flag dropped.
fn fields(b: &BarRecord) -> BarRecord {
    BarRecord {
        is_partial: false,
        ..b.clone()
    }
}

fn from_json(v: &Value) -> BarRecord {
    serde_json::from_value::<PlainBar>(v.clone())
        .unwrap()
        .into()
}

#[derive(serde::Deserialize)]
struct PlainBar {
    ts_utc: DateTime<Utc>,
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    vol: f64,
    vwap: Option<f64>,
    trade_count: Option<i64>,
    source_timeframe: Option<String>,
    source_candles: Option<i32>,
    expected_candles: Option<i32>,
    quality_score: Option<i16>,
    is_partial: bool,
}

impl From<PlainBar> for BarRecord {
    fn from(p: PlainBar) -> Self {
        BarRecord {
            ts_utc: p.ts_utc,
            open: p.open,
            high: p.high,
            low: p.low,
            close: p.close,
            vol: p.vol,
            vwap: p.vwap,
            trade_count: p.trade_count,
            source_timeframe: p.source_timeframe,
            source_candles: p.source_candles,
            expected_candles: p.expected_candles,
            quality_score: p.quality_score,
            is_partial: p.is_partial,
        }
    }
}

/// Catch the ladder up with the SQL function as of `now`.
async fn ladder_at(c: &tokio_postgres::Client, symbol: &str, now: DateTime<Utc>) {
    for tf in Timeframe::LADDER {
        loop {
            let r: Value = c
                .query_one(
                    "SELECT catchup_aggregation_range($1, $2, last_agg_bar_ts_utc, 5000, $3, 1, false)
                     FROM data_agg_state WHERE canonical_symbol = $1 AND timeframe = $2",
                    &[&symbol, &tf.as_str(), &now],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(r["success"], true, "{symbol} {tf}: {r}");
            if r["continue"] != true {
                break;
            }
        }
    }
}

#[tokio::test]
async fn the_open_bucket_equals_the_stored_bar_once_final() {
    // Two weeks of crypto minutes up to a Monday 00:00 UTC without its very
    // last minute: every timeframe's last bucket ends there and stays open
    // (the tasks wait for the feed, with a lateness of years) until a
    // minute after it arrives.
    let week_end: DateTime<Utc> = "2025-07-14T00:00:00Z".parse().unwrap();
    let all: Vec<SynthBar> = generate(&SynthSpec {
        start: "2025-06-30T00:00:00Z".parse().unwrap(),
        minutes: 14 * 1440 + 30,
        fx_weekends: false,
        with_volume: true,
        gap_probability: 0.0,
        seed: 7,
        ..SynthSpec::default()
    })
    .filter(|b| b.ts != week_end - Duration::minutes(1))
    .collect();
    let (later, first): (Vec<SynthBar>, Vec<SynthBar>) =
        all.into_iter().partition(|b| b.ts >= week_end);
    let db = TestDb::migrated().await;
    let c = db.client().await;
    register(&c, "BTCUSD", AssetClass::Crypto, "2025-06-30T00:00:00Z").await;
    load_bars(&c, "BTCUSD", &first).await;
    // The ladder as the feed stands at its newest minute: everything before
    // the last buckets is final and stored.
    ladder_at(&c, "BTCUSD", week_end - Duration::minutes(1)).await;
    // From here on the tasks wait for the feed with a lateness of years, so
    // the last buckets stay open at the real clock too.
    c.execute(
        "UPDATE data_agg_state SET aggregation_delay_seconds = 315360000",
        &[],
    )
    .await
    .unwrap();
    let server = serve(&db, &[]);

    let now = Utc::now();
    let mut open = Vec::new();
    for tf in Timeframe::LADDER {
        let bar = open_bucket(&c, "BTCUSD", Calendar::Utc, tf, now)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{tf} has an open bucket"));
        assert!(bar.is_partial);
        assert_eq!(
            bar.source_timeframe.as_deref(),
            tf.source().map(|s| s.as_str())
        );
        // The API and the export give the very same bar.
        let (_, page) = get_json(
            server.addr,
            &format!("/api/bars?symbol=BTCUSD&timeframe={tf}&partial=true&limit=3"),
            None,
        );
        let last = page["bars"].as_array().unwrap().last().unwrap();
        assert_eq!(from_json(last), bar, "{tf}: the API's partial bar");
        let out = db.cli(&[
            "export",
            "BTCUSD",
            tf.as_str(),
            "--partial",
            "--format",
            "json",
            "--from",
            "2025-07-07",
        ]);
        let exported: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(
            from_json(exported.last().unwrap()),
            bar,
            "{tf}: export --partial"
        );
        open.push((tf, bar));
    }
    let day = &open.iter().find(|(tf, _)| *tf == Timeframe::D1).unwrap().1;
    assert_eq!(
        day.expected_candles,
        Some(24),
        "a day is 24 hours, as stored"
    );

    // The feed moves past the last minute: every open bucket turns final,
    // and the stored bar is the partial bar, field for field.
    load_bars(&c, "BTCUSD", &later[..10]).await;
    c.execute(
        "UPDATE data_agg_state SET aggregation_delay_seconds = 0",
        &[],
    )
    .await
    .unwrap();
    ladder_at(&c, "BTCUSD", week_end + Duration::minutes(10)).await;
    for (tf, partial) in &open {
        let stored = barkeep::bars::stored(
            &c,
            "BTCUSD",
            *tf,
            barkeep::bars::Range {
                from: Some(partial.ts_utc),
                to: Some(partial.ts_utc + Duration::seconds(1)),
                limit: None,
            },
        )
        .await
        .unwrap();
        assert_eq!(stored.len(), 1, "{tf} stored its bar");
        assert_eq!(fields(&stored[0]), fields(partial), "{tf}");
        assert!(!stored[0].is_partial);
    }
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let db = demo_db().await;
    let server = serve(&db, &[]);
    let (status, text) = get(server.addr, "/metrics", None);
    assert_eq!(status, 200);
    for family in [
        "barkeep_up",
        "barkeep_task_lag_seconds",
        "barkeep_task_status",
        "barkeep_tasks_due_unclaimed",
        "barkeep_bars_written_total",
        "barkeep_run_failures_total",
        "barkeep_run_duration_seconds",
        "barkeep_leases_expired",
        "barkeep_quarantine_rows",
    ] {
        assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(name.starts_with("barkeep_"), "{line}");
        value.parse::<f64>().unwrap_or_else(|_| panic!("{line}"));
    }
    let five: i64 = db
        .count("SELECT count(*) FROM derived_data_bars WHERE timeframe = '5m'")
        .await;
    assert!(text.contains(&format!(
        "barkeep_bars_written_total{{timeframe=\"5m\"}} {five}\n"
    )));
    let runs = db.count("SELECT count(*) FROM agg_run_log").await;
    assert!(text.contains(&format!("barkeep_run_duration_seconds_count {runs}\n")));
    assert!(
        text.contains("barkeep_task_status{symbol=\"AUDUSD\",timeframe=\"1w\",status=\"idle\"} 1")
    );
}

/// The value of the one series `name` (with its labels) of an exposition.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}: {v}")))
}

#[tokio::test]
async fn metrics_say_what_the_tables_hold() {
    let db = demo_db().await;
    let c = db.client().await;
    // A run log with durations on and just past the histogram's bounds, a
    // run that never finished, and failures of both kinds; one task hard
    // failed, one due.
    c.batch_execute(
        "DELETE FROM agg_run_log;
         INSERT INTO agg_run_log (canonical_symbol, timeframe, started_at, finished_at, status, fail_kind)
         SELECT 'AUDUSD', '5m', timestamptz '2025-01-01 00:00+00',
                timestamptz '2025-01-01 00:00+00' + d * interval '1 second', s, k
         FROM (VALUES (0.005::float8, 'success', NULL), (0.0051, 'success', NULL),
                      (1.0, 'failed', 'transient'), (1.5, 'failed', NULL), (400.0, 'success', NULL)) v(d, s, k);
         INSERT INTO agg_run_log (canonical_symbol, timeframe, started_at, status)
         VALUES ('AUDUSD', '1h', now(), 'failed');
         UPDATE data_agg_state SET status = 'hard_failed', hard_fail_streak = 2 WHERE timeframe = '1d';
         UPDATE data_agg_state SET next_run_at = now() - interval '1 minute' WHERE timeframe = '4h';",
    )
    .await
    .unwrap();
    let server = serve(&db, &[]);
    let (status, text) = get(server.addr, "/metrics", None);
    assert_eq!(status, 200, "{text}");

    let bucket = |le: &str| {
        series(
            &text,
            &format!("barkeep_run_duration_seconds_bucket{{le=\"{le}\"}}"),
        )
    };
    for (le, n) in [
        ("0.005", 1.0),
        ("0.01", 2.0),
        ("0.5", 2.0),
        ("1", 3.0),
        ("2.5", 4.0),
        ("300", 4.0),
        ("+Inf", 5.0),
    ] {
        assert_eq!(bucket(le), Some(n), "le={le}: {text}");
    }
    assert_eq!(
        series(&text, "barkeep_run_duration_seconds_count"),
        Some(5.0)
    );
    let sum = series(&text, "barkeep_run_duration_seconds_sum").unwrap();
    assert!((sum - 402.5101).abs() < 1e-9, "{sum}");
    assert_eq!(
        series(&text, "barkeep_run_failures_total{kind=\"hard\"}"),
        Some(2.0)
    );
    assert_eq!(
        series(&text, "barkeep_run_failures_total{kind=\"transient\"}"),
        Some(1.0)
    );

    let rows = c
        .query(
            "SELECT s.canonical_symbol, s.timeframe, s.status, s.hard_fail_streak,
                    date_part('epoch', (SELECT max(b.ts_utc) FROM data_bars b
                                        WHERE b.canonical_symbol = s.canonical_symbol
                                          AND b.timeframe = '1m') - s.last_agg_bar_ts_utc)
             FROM data_agg_state s",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 6);
    for r in &rows {
        let labels = format!(
            "symbol=\"{}\",timeframe=\"{}\"",
            r.get::<_, &str>(0),
            r.get::<_, &str>(1)
        );
        let lag: Option<f64> = r.get(4);
        assert_eq!(
            series(&text, &format!("barkeep_task_lag_seconds{{{labels}}}")),
            lag.map(|l| l.max(0.0)),
            "{labels}"
        );
        let status: &str = r.get(2);
        assert_eq!(
            series(
                &text,
                &format!("barkeep_task_status{{{labels},status=\"{status}\"}}")
            ),
            Some(1.0),
            "{labels}"
        );
        assert_eq!(
            series(&text, &format!("barkeep_task_hard_fail_streak{{{labels}}}")),
            Some(f64::from(r.get::<_, i32>(3))),
            "{labels}"
        );
    }
    for status in ["idle", "running", "hard_failed", "disabled"] {
        let n = db
            .count(&format!(
                "SELECT count(*) FROM data_agg_state WHERE status = '{status}'"
            ))
            .await;
        assert_eq!(
            series(&text, &format!("barkeep_tasks{{status=\"{status}\"}}")),
            Some(n as f64),
            "{status}"
        );
    }
    assert_eq!(
        series(&text, "barkeep_tasks{status=\"hard_failed\"}"),
        Some(1.0)
    );
    let due = db
        .count(
            "SELECT count(*) FROM data_agg_state
             WHERE enabled AND status = 'idle' AND next_run_at <= now()",
        )
        .await;
    assert!(due >= 1);
    assert_eq!(
        series(&text, "barkeep_tasks_due_unclaimed"),
        Some(due as f64)
    );
    let runs = db
        .count("SELECT sum(total_runs)::bigint FROM data_agg_state")
        .await;
    assert_eq!(metric_sum(&text, "barkeep_task_runs_total"), Some(runs));

    // Scrapes at once all get the whole exposition.
    let scrapes: Vec<_> = (0..6)
        .map(|_| {
            let addr = server.addr;
            std::thread::spawn(move || get(addr, "/metrics", None))
        })
        .collect();
    for s in scrapes {
        let (status, body) = s.join().unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("barkeep_up 1\n"));
        assert!(body.contains("barkeep_quarantine_rows 0\n"), "{body}");
    }
}

/// Headless Chromium with a fresh profile and nothing that calls home.
fn chromium(profile: &std::path::Path, extra: &[&str], url: &str) -> std::process::Output {
    let binary = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect(
            "Chromium is required for the dashboard test: apt-get install chromium (.ci/run does)",
        );
    let user_data = format!("--user-data-dir={}", profile.display());
    let mut args = vec![
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--window-size=1400,1900",
        "--virtual-time-budget=20000",
        user_data.as_str(),
    ];
    args.extend_from_slice(extra);
    args.push(url);
    Command::new(binary)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .expect("running chromium")
}

/// The `data-*` attributes of the page's self-check element.
fn selfcheck(dom: &str) -> std::collections::HashMap<String, String> {
    let start = dom
        .find("id=\"selfcheck\"")
        .expect("the page has its self-check element");
    let tag_start = dom[..start].rfind('<').unwrap();
    let tag = &dom[tag_start..tag_start + dom[tag_start..].find('>').unwrap()];
    tag.split(" data-")
        .skip(1)
        .filter_map(|kv| {
            let (k, v) = kv.split_once("=\"")?;
            Some((k.to_string(), v[..v.find('"')?].to_string()))
        })
        .collect()
}

#[tokio::test]
async fn the_dashboard_renders_tasks_and_a_drawn_chart_in_chromium() {
    let db = demo_db().await;
    let server = serve(&db, &["--token", "t0ken"]);
    let profile = tempfile::tempdir().unwrap();
    let url = format!(
        "http://{}/?token=t0ken&symbol=AUDUSD&timeframe=1h",
        server.addr
    );
    let out = chromium(profile.path(), &["--dump-dom"], &url);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let check = selfcheck(&dom);
    assert_eq!(
        check.get("errors").map(String::as_str),
        Some(""),
        "{check:?}"
    );
    assert_eq!(
        check.get("ready").map(String::as_str),
        Some("1"),
        "{check:?}"
    );
    assert_eq!(check["task-rows"], "6", "one row per task: {check:?}");
    let hours = db
        .count(
            "SELECT count(*) FROM derived_data_bars WHERE timeframe = '1h' AND deleted_at IS NULL",
        )
        .await;
    assert_eq!(
        check["bars"],
        hours.to_string(),
        "the chart got every 1h bar: {check:?}"
    );
    let pixels: usize = check["candle-pixels"].parse().unwrap();
    assert!(pixels > 2000, "candles are drawn on the canvas: {check:?}");
    for text in [
        "AUDUSD",
        "hard_failed",
        "Quality per timeframe",
        "Recent runs",
    ] {
        assert!(dom.contains(text), "{text}");
    }
    assert!(
        dom.contains("<td>1w</td>"),
        "the task table lists the ladder"
    );

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let flag = format!("--screenshot={}", shot.display());
    let profile = tempfile::tempdir().unwrap();
    let out = chromium(profile.path(), &[flag.as_str()], &url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).expect("the screenshot was saved");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    if let Ok(to) = std::env::var("BARKEEP_SAVE_SCREENSHOT") {
        std::fs::copy(&shot, to).unwrap();
    }

    // More tasks than the table draws: the first 500 are drawn and the
    // count says how many there are.
    db.client()
        .await
        .batch_execute(
            "INSERT INTO core_asset_registry_all (canonical_symbol, asset_class, active)
             SELECT 'X' || lpad(i::text, 3, '0') || 'USD', 'crypto', true
             FROM generate_series(1, 100) i",
        )
        .await
        .unwrap();
    let out = db.cli(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let tasks = db.count("SELECT count(*) FROM data_agg_state").await;
    assert!(tasks > 500, "{tasks} tasks");
    let profile = tempfile::tempdir().unwrap();
    let out = chromium(profile.path(), &["--dump-dom"], &url);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    let check = selfcheck(&dom);
    assert_eq!(check["task-rows"], "500", "{check:?}");
    assert!(
        dom.contains(&format!(
            "{tasks} (first 500 shown; filter to see the rest)"
        )),
        "the count says what is not drawn"
    );
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
    let before: DateTime<Utc> = c.query_one("SELECT now()", &[]).await.unwrap().get(0);
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
    let pruned: DateTime<Utc> = c.query_one("SELECT now()", &[]).await.unwrap().get(0);
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

/// The sum over timeframes of a counter family of `/metrics`.
fn metric_sum(text: &str, family: &str) -> Option<i64> {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .collect();
    (!lines.is_empty()).then(|| {
        lines
            .iter()
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<i64>().unwrap())
            .sum()
    })
}

#[tokio::test]
async fn a_task_taken_over_from_an_expired_lease_counts_as_a_lease_recovery() {
    let db = demo_db().await;
    let c = db.client().await;
    let server = serve(&db, &[]);
    let (_, text) = get(server.addr, "/metrics", None);
    assert!(
        text.contains("# TYPE barkeep_lease_recoveries_total counter"),
        "{text}"
    );
    assert_eq!(metric_sum(&text, "barkeep_lease_recoveries_total"), Some(0));

    // A worker claims two tasks in a day's time with a one-minute lease and
    // is never heard of again; the next day a second worker claims
    // everything due, taking those two over.
    let claim = |worker: &'static str, days: i32, max: i32| {
        let c = &c;
        async move {
            c.query(
                "SELECT c.timeframe, c.recovered FROM agg_claim_tasks('prod', $1,
                   now() + make_interval(days => $2), $3, 60) c",
                &[&worker, &days, &max],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, bool>(1)))
            .collect::<Vec<_>>()
        }
    };
    let first = claim("frozen", 1, 2).await;
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(first.iter().all(|(_, recovered)| !recovered));
    let (_, text) = get(server.addr, "/metrics", None);
    assert_eq!(
        metric_sum(&text, "barkeep_lease_recoveries_total"),
        Some(0),
        "a claim of idle tasks recovers nothing"
    );
    let second = claim("rescuer", 2, 10).await;
    let recovered: Vec<&String> = second
        .iter()
        .filter(|(_, r)| *r)
        .map(|(tf, _)| tf)
        .collect();
    assert_eq!(recovered.len(), 2, "{second:?}");
    // Renewing the rescuer's leases is no recovery either.
    c.execute(
        "SELECT agg_heartbeat(canonical_symbol, timeframe, lease_token, now() + interval '2 days', 60)
         FROM data_agg_state WHERE status = 'running'",
        &[],
    )
    .await
    .unwrap();

    let (_, text) = get(server.addr, "/metrics", None);
    assert_eq!(
        metric_sum(&text, "barkeep_lease_recoveries_total"),
        Some(2),
        "{text}"
    );
    for tf in recovered {
        assert!(
            text.contains(&format!(
                "barkeep_lease_recoveries_total{{timeframe=\"{tf}\"}} 1\n"
            )),
            "{tf}: {text}"
        );
    }
    assert_eq!(
        db.count("SELECT sum(lease_recoveries)::bigint FROM data_agg_state")
            .await,
        2
    );
}

/// An alert report with the parts that move with the clock taken out: the
/// report's time, and the digits of the messages (minutes elapsed).
fn steady(mut report: Value) -> Value {
    report.as_object_mut().unwrap().remove("now");
    for alert in report["alerts"].as_array_mut().unwrap() {
        let message: String = alert["message"]
            .as_str()
            .unwrap()
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .collect();
        alert["message"] = Value::String(message);
    }
    report
}

#[tokio::test]
async fn the_api_reports_the_alerts_and_tasks_the_command_line_reports() {
    let db = demo_db().await;
    let c = db.client().await;
    // Three problems: a hard_failed task, a failure streak, a mandatory task
    // without a success for two hours.
    c.batch_execute(
        "UPDATE data_agg_state SET status = 'hard_failed', hard_fail_streak = 3,
           last_error = 'bad source bar' WHERE timeframe = '1d';
         UPDATE data_agg_state SET hard_fail_streak = 1, last_error = 'timeout'
           WHERE timeframe = '4h';
         UPDATE data_agg_state SET last_successful_at_utc = now() - interval '2 hours'
           WHERE timeframe = '15m';",
    )
    .await
    .unwrap();
    let server = serve(&db, &[]);
    let (status, api) = get_json(server.addr, "/api/alerts", None);
    assert_eq!(status, 200, "{api}");
    let out = db.cli(&["alerts", "--json"]);
    assert_eq!(out.status.code(), Some(2), "critical: {}", stderr(&out));
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&str> = api["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    for kind in ["hard_failed", "fail_streak", "lag"] {
        assert!(kinds.contains(&kind), "{kind}: {api}");
    }
    assert_eq!(api["severity"], "critical");
    assert_eq!(steady(api), steady(cli));

    let (status, tasks) = get_json(server.addr, "/api/tasks", None);
    assert_eq!(status, 200, "{tasks}");
    let out = db.cli(&["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let keyed = |tasks: &Value| -> Vec<Value> {
        tasks
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let mut t = t.clone();
                t.as_object_mut().unwrap().remove("minutes_since_success");
                t
            })
            .collect()
    };
    assert_eq!(keyed(&tasks), keyed(&report["tasks"]));
    let (_, failed) = get_json(server.addr, "/api/tasks?status=hard-failed", None);
    assert_eq!(failed.as_array().unwrap().len(), 1, "{failed}");
    assert_eq!(failed[0]["timeframe"], "1d");

    // Pages: `limit` and `offset` cut the same list, and the total matching
    // is in a header.
    let all = keyed(&tasks);
    assert!(all.len() >= 4, "{tasks}");
    let total = format!("x-total-count: {}\r\n", all.len());
    let (status, head, body) = get_with_head(server.addr, "/api/tasks?limit=2&offset=1", None);
    assert_eq!(status, 200, "{body}");
    assert!(head.contains(&total), "{head}");
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(keyed(&page), all[1..3].to_vec());
    let (_, head, body) = get_with_head(
        server.addr,
        &format!("/api/tasks?offset={}", all.len() - 1),
        None,
    );
    assert!(head.contains(&total), "{head}");
    let last: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(keyed(&last), all[all.len() - 1..].to_vec());
    let (_, past) = get_json(server.addr, "/api/tasks?offset=1000000", None);
    assert_eq!(past, Value::Array(vec![]));
    let (_, head, _) = get_with_head(server.addr, "/api/tasks?status=hard-failed&limit=5", None);
    assert!(head.contains("x-total-count: 1\r\n"), "{head}");
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
