//! Where tasks start: the first bucket holding data gets its bar at every
//! timeframe (a first partial day and week included), and `verify` reads
//! the tasks' starts as one start per symbol; 1m rows older than a start
//! taken from the data move it back and get their bars on the next run,
//! while rows before a pinned start are reported by ingest, status and
//! alerts.

use barkeep::synth::{generate, SynthBar, SynthSpec};
use chrono::Utc;

use crate::common::{stderr, stdout, TestDb};
use crate::fixtures::{assert_same_bars, load_bars, ok, reference_ladder, stored, ts, write};

/// Data of `days` days from `start`, fx-like or crypto-like.
fn data(start: &str, days: i64, fx: bool, seed: u64) -> Vec<SynthBar> {
    generate(&SynthSpec {
        start: ts(start),
        minutes: days * 24 * 60,
        fx_weekends: fx,
        with_volume: !fx,
        price: if fx { 1.1 } else { 60_000.0 },
        seed,
        // No thin buckets: the first day's bar is then up to its hours alone.
        gap_probability: 0.0,
        ..SynthSpec::default()
    })
    .collect()
}

/// `verify` and `verify --deep` pass every check.
fn verify_passes(db: &TestDb) {
    for args in [&["verify"][..], &["verify", "--deep"]] {
        let out = db.cli(args);
        let text = stdout(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {text}{}",
            stderr(&out)
        );
        assert!(!text.contains("FAIL"), "{args:?}: {text}");
    }
}

#[tokio::test]
async fn data_starting_thursday_morning_gets_its_first_partial_day_and_week() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    // 2025-07-03 is a Thursday. The first day bucket holding 06:00Z starts
    // at 00:00Z (crypto) or 21:00Z the day before (the FX clock); the week
    // bucket on Monday 00:00Z or Sunday 21:00Z.
    let start = "2025-07-03T06:00:00Z";
    let cases = [
        (
            "CRTHU",
            "crypto",
            false,
            "2025-07-03T00:00:00Z",
            "2025-06-30T00:00:00Z",
        ),
        (
            "FXTHU",
            "fx",
            true,
            "2025-07-02T21:00:00Z",
            "2025-06-29T21:00:00Z",
        ),
    ];
    let mut all = Vec::new();
    for (i, (symbol, class, fx, _, _)) in cases.iter().enumerate() {
        ok(&db.cli(&["assets", "add", symbol, "--class", class]));
        let bars = data(start, 17, *fx, 40 + i as u64);
        load_bars(&c, symbol, &bars).await;
        all.push(bars);
    }
    let said = ok(&db.cli(&["sync"]));
    assert!(
        said.contains("CRTHU: tasks start at its first 1m bar, 2025-07-03 06:00Z"),
        "{said}"
    );
    ok(&db.cli(&["run", "--once"]));

    for ((symbol, _, fx, day, week), bars) in cases.iter().zip(&all) {
        // The tasks start at the buckets holding the first bar.
        for (tf, first) in [("5m", "2025-07-03T06:00:00Z"), ("1d", day), ("1w", week)] {
            let n = db
                .count(&format!(
                    "SELECT count(*) FROM data_agg_state WHERE canonical_symbol = '{symbol}'
                       AND timeframe = '{tf}' AND agg_start_utc = '{first}'"
                ))
                .await;
            assert_eq!(n, 1, "{symbol} {tf} starts at {first}");
        }
        // The first partial day is stored.
        let n = db
            .count(&format!(
                "SELECT count(*) FROM derived_data_bars WHERE canonical_symbol = '{symbol}'
                   AND timeframe = '1d' AND ts_utc = '{day}' AND deleted_at IS NULL"
            ))
            .await;
        assert_eq!(n, 1, "{symbol}: the first partial day");
        // Every bar from the first week bucket on equals the reference built
        // from the 1m rows, that week's bar included where its quality lets it be.
        let expected = reference_ladder(*fx, bars, ts(week), Utc::now());
        assert!(expected
            .iter()
            .any(|b| b.timeframe == "1d" && b.ts == ts(day)));
        assert_same_bars(&stored(&db, symbol).await, &expected);
    }
    // The crypto week from Thursday 06:00Z holds 4 of its 7 days: stored
    // (the FX week's 2 of 5 trading days are too few for a bar).
    assert_eq!(
        db.count(
            "SELECT count(*) FROM derived_data_bars WHERE canonical_symbol = 'CRTHU'
               AND timeframe = '1w' AND ts_utc = '2025-06-30 00:00+00' AND deleted_at IS NULL"
        )
        .await,
        1
    );
    verify_passes(&db);
}

#[tokio::test]
async fn a_backfill_older_than_every_task_start_gets_its_bars_on_the_next_run() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    // BFCR: tasks from its data (Thursday 2025-07-10); BFFX: registered
    // before any data, so its tasks start at the default 2025-07-01.
    ok(&db.cli(&["assets", "add", "BFCR", "--class", "crypto"]));
    ok(&db.cli(&["assets", "add", "BFFX", "--class", "fx"]));
    let crypto = data("2025-06-25T13:07:00Z", 22, false, 71);
    let (older, newer): (Vec<SynthBar>, Vec<SynthBar>) = crypto
        .iter()
        .cloned()
        .partition(|b| b.ts < ts("2025-07-10T00:00:00Z"));
    load_bars(&c, "BFCR", &newer).await;
    ok(&db.cli(&["sync"]));
    ok(&db.cli(&["run", "--once"]));
    let before = db
        .count("SELECT count(*) FROM derived_data_bars WHERE canonical_symbol = 'BFCR'")
        .await;
    assert!(before > 0);

    // Plain SQL writes rows older than every task start of both symbols.
    load_bars(&c, "BFCR", &older).await;
    let fx = data("2025-06-16T09:31:00Z", 21, true, 72);
    load_bars(&c, "BFFX", &fx).await;
    // The next run builds them, with no other command.
    ok(&db.cli(&["run", "--once"]));
    for (symbol, is_fx, bars) in [("BFCR", false, &crypto), ("BFFX", true, &fx)] {
        let expected = reference_ladder(is_fx, bars, ts("2025-06-01T00:00:00Z"), Utc::now());
        assert!(expected.iter().any(|b| b.ts < ts("2025-06-30T00:00:00Z")));
        assert_same_bars(&stored(&db, symbol).await, &expected);
    }
    verify_passes(&db);

    // A rebuild of 1d from before every start moves every task of the
    // symbol back: still one start, the same bars.
    ok(&db.cli(&["rebuild", "BFCR", "1d", "--from", "2025-05-01"]));
    let expected = reference_ladder(false, &crypto, ts("2025-05-01T00:00:00Z"), Utc::now());
    assert_same_bars(&stored(&db, "BFCR").await, &expected);
    verify_passes(&db);
}

#[tokio::test]
async fn rows_before_a_pinned_start_are_reported_by_ingest_status_and_alerts() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    ok(&db.cli(&["assets", "add", "PIN", "--class", "fx"]));
    let bars = data("2025-07-01T00:00:00Z", 14, true, 81);
    let (older, newer): (Vec<SynthBar>, Vec<SynthBar>) = bars
        .iter()
        .cloned()
        .partition(|b| b.ts < ts("2025-07-08T00:00:00Z"));
    load_bars(&c, "PIN", &newer).await;
    ok(&db.cli(&["sync", "--start", "2025-07-08"]));
    ok(&db.cli(&["run", "--once"]));
    assert!(!stdout(&db.cli(&["status"])).contains("pinned start"));

    // The older rows arrive through ingest: reported, left out, start kept.
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("ts,open,high,low,close,volume\n");
    for b in &older {
        text.push_str(&format!(
            "{},{:?},{:?},{:?},{:?},{:?}\n",
            b.ts.to_rfc3339(),
            b.open,
            b.high,
            b.low,
            b.close,
            b.vol
        ));
    }
    let file = write(dir.path(), "older.csv", text.as_bytes());
    let out = db.cli(&["ingest", "--symbol", "PIN", file.to_str().unwrap()]);
    ok(&out);
    let said = format!(
        "PIN: {} 1m rows from 2025-07-01 00:00Z are before the pinned start 2025-07-08 00:00Z and get no bars",
        older.len()
    );
    assert!(
        stderr(&out).contains(&format!("warning: {said}")),
        "{}",
        stderr(&out)
    );
    let status = stdout(&db.cli(&["status"]));
    assert!(status.contains(&format!("warning: {said}")), "{status}");
    let alerts = db.cli(&["alerts"]);
    assert_eq!(alerts.status.code(), Some(1), "{}", stdout(&alerts));
    assert!(
        stdout(&alerts).contains(&format!(
            "WARNING PIN: {} 1m rows from 2025-07-01 00:00Z are before the pinned start",
            older.len()
        )),
        "{}",
        stdout(&alerts)
    );
    ok(&db.cli(&["run", "--once"]));
    assert_eq!(
        db.count(
            "SELECT count(*) FROM data_agg_state WHERE canonical_symbol = 'PIN'
               AND agg_start_utc = '2025-07-08 00:00+00' AND agg_start_pinned"
        )
        .await,
        6
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM derived_data_bars
             WHERE canonical_symbol = 'PIN' AND ts_utc < '2025-07-08 00:00+00'"
        )
        .await,
        0
    );
}
