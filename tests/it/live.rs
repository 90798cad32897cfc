//! The live path: tasks close to the present are claimed many at a time
//! and advanced in one call per group of symbols (`agg_claim_live`,
//! `agg_advance_live`). Their bars must equal the reference, with late and
//! corrected data behind the cursors in the same runs, on both calendars.

use barkeep::model::AssetClass;
use barkeep::synth::{generate, SynthBar, SynthSpec};
use chrono::{DateTime, Duration, DurationRound, Utc};

use crate::common::{stderr, TestDb};
use crate::fixtures::{assert_same_bars, db_now, load_bars, reference_ladder, register, stored};

fn bars(start: DateTime<Utc>, fx: bool, seed: u64) -> Vec<SynthBar> {
    generate(&SynthSpec {
        start,
        minutes: 3 * 1440,
        fx_weekends: fx,
        with_volume: !fx,
        seed,
        ..SynthSpec::default()
    })
    .collect()
}

#[tokio::test]
async fn live_tasks_advance_in_groups_and_match_the_reference_with_late_data() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let now = db_now(&c).await;
    // The data reaches the last 5-minute mark; the long quiet-feed delay
    // makes that reach the finality horizon of every timeframe.
    let top = now.duration_trunc(Duration::minutes(5)).unwrap();
    let start = top - Duration::days(3);
    let cases = [("EURUSD", true, 41_u64), ("BTCUSD", false, 42_u64)];
    let mut all = Vec::new();
    for (symbol, fx, seed) in cases {
        let class = if fx {
            AssetClass::Fx
        } else {
            AssetClass::Crypto
        };
        register(&c, symbol, class, &start.to_rfc3339()).await;
        c.execute("SELECT agg_task_delay($1, NULL, 86400)", &[&symbol])
            .await
            .unwrap();
        let mut b = bars(start, fx, seed);
        b.retain(|x| x.ts < top);
        let (old, recent): (Vec<SynthBar>, Vec<SynthBar>) = b
            .iter()
            .cloned()
            .partition(|x| x.ts < top - Duration::minutes(20));
        load_bars(&c, symbol, &old).await;
        all.push((symbol, fx, b, recent));
    }
    // First catch-up: cursors start days back, so the fast path runs.
    let out = db.cli(&["run", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The last 20 minutes arrive, one minute far behind every cursor is
    // corrected and another deleted: the next run finds every task close to
    // the present.
    for (symbol, _, b, recent) in all.iter_mut() {
        load_bars(&c, symbol, recent).await;
        let (revised, gone) = (b[100].ts, b[700].ts);
        c.execute(
            "UPDATE data_bars SET high = high + 1, close = close + 0.5
             WHERE canonical_symbol = $1 AND timeframe = '1m' AND ts_utc = $2",
            &[symbol, &revised],
        )
        .await
        .unwrap();
        c.execute(
            "DELETE FROM data_bars WHERE canonical_symbol = $1 AND timeframe = '1m' AND ts_utc = $2",
            &[symbol, &gone],
        )
        .await
        .unwrap();
        b[100].high += 1.0;
        b[100].close += 0.5;
        b.remove(700);
    }
    let near: i64 = c
        .query_one(
            "SELECT count(*) FROM data_agg_state
             WHERE last_agg_bar_ts_utc >= now() - agg_timeframe_interval(timeframe) * 12",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(near, 12, "every task is close to the present");
    let out = db.cli(&["run", "--once"]);
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("advanced live tasks"),
        "the live path ran: {log}"
    );
    for (symbol, fx, b, _) in &all {
        let expected = reference_ladder(*fx, b, start, top);
        assert_same_bars(&stored(&db, symbol).await, &expected);
    }
    // Every task is idle, caught up to the data's reach, and recorded.
    let behind: i64 = c
        .query_one(
            "SELECT count(*) FROM data_agg_state
             WHERE status <> 'idle' OR lease_token IS NOT NULL
                OR agg_bucket_end(agg_symbol_calendar(canonical_symbol), timeframe, last_agg_bar_ts_utc)
                   <= agg_horizon(canonical_symbol, timeframe, now())",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(behind, 0, "a task was left behind or running");
    // Marks at or after a cursor are buckets not final yet (a 1h bar of
    // today rewritten marks today's 1d bucket): they wait for the cursor.
    let dirty: i64 = c
        .query_one(
            "SELECT count(*) FROM agg_dirty_buckets d
             JOIN data_agg_state s USING (canonical_symbol, timeframe)
             WHERE d.ts_utc < s.last_agg_bar_ts_utc",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(dirty, 0, "late data left unprocessed");
}

/// Three crypto symbols whose 5m tasks are 30 minutes behind the last
/// 5-minute mark, with the 1m bars of those 30 minutes; returns the mark.
async fn three_live_symbols(c: &tokio_postgres::Client) -> DateTime<Utc> {
    let now = db_now(c).await;
    let top = now.duration_trunc(Duration::minutes(5)).unwrap();
    for symbol in ["AAAUSD", "BBBUSD", "CCCUSD"] {
        register(
            c,
            symbol,
            AssetClass::Crypto,
            &(top - Duration::minutes(30)).to_rfc3339(),
        )
        .await;
        c.execute(
            "INSERT INTO data_bars (canonical_symbol, timeframe, ts_utc, open, high, low, close, vol, source)
             SELECT $1, '1m', t, 10, 11, 9, 10.5, 1, 'test'
             FROM generate_series($2::timestamptz - interval '30 minutes', $2::timestamptz - interval '1 minute',
                                  interval '1 minute') t",
            &[&symbol, &top],
        )
        .await
        .unwrap();
        c.execute(
            "UPDATE data_agg_state SET last_agg_bar_ts_utc = $2::timestamptz - interval '30 minutes'
             WHERE canonical_symbol = $1 AND timeframe = '5m'",
            &[&symbol, &top],
        )
        .await
        .unwrap();
    }
    top
}

/// CCCUSD's bars cannot be written.
async fn refuse_ccc_bars(c: &tokio_postgres::Client) {
    c.batch_execute(
        "CREATE FUNCTION refuse_ccc() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.canonical_symbol = 'CCCUSD' THEN RAISE EXCEPTION 'no bars for CCCUSD'; END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_ccc BEFORE INSERT ON derived_data_bars
           FOR EACH ROW EXECUTE FUNCTION refuse_ccc();",
    )
    .await
    .unwrap();
}

/// The 5m tasks: symbol, status, hard-fail streak, lease cleared, the last
/// error names CCCUSD's refusal, cursor still 30 minutes back, live bars.
async fn five_minute_state(
    c: &tokio_postgres::Client,
    top: DateTime<Utc>,
) -> Vec<(String, String, i32, bool, bool, bool, i64)> {
    let state = c
        .query(
            "SELECT s.canonical_symbol, s.status, s.hard_fail_streak, s.lease_token IS NULL,
                    coalesce(s.last_error, ''), s.last_agg_bar_ts_utc = $1::timestamptz - interval '30 minutes',
                    (SELECT count(*) FROM derived_data_bars d
                     WHERE d.canonical_symbol = s.canonical_symbol AND d.timeframe = '5m')
             FROM data_agg_state s WHERE s.timeframe = '5m' ORDER BY 1",
            &[&top],
        )
        .await
        .unwrap();
    state
        .iter()
        .map(|r| {
            let error: String = r.get(4);
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                error.contains("no bars for CCCUSD"),
                r.get(5),
                r.get(6),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_live_group_fences_leases_and_a_failure_is_an_error() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let top = three_live_symbols(&c).await;
    let claimed = c
        .query(
            "SELECT canonical_symbol, timeframe, lease_token
             FROM agg_claim_live('prod', 'tester', now(), 100, 60, 12) WHERE timeframe = '5m'
             ORDER BY canonical_symbol",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3, "the three 5m tasks are live");
    let symbols: Vec<String> = claimed.iter().map(|r| r.get(0)).collect();
    let tfs: Vec<String> = claimed.iter().map(|r| r.get(1)).collect();
    let mut tokens: Vec<uuid::Uuid> = claimed.iter().map(|r| r.get(2)).collect();
    // BBBUSD's lease was taken over meanwhile; CCCUSD's bars cannot be
    // written.
    tokens[1] = uuid::Uuid::new_v4();
    refuse_ccc_bars(&c).await;
    let advance = "SELECT task_symbol, outcome, bars_created
                   FROM agg_advance_live($1::text[], $2::text[], $3::uuid[], now(), 1)
                   ORDER BY task_symbol";
    // The failure is the call's error, not a quiet fallback: nothing of
    // the group changed.
    let err = c
        .query(advance, &[&symbols, &tfs, &tokens])
        .await
        .expect_err("a bar that cannot be written fails the call");
    assert!(
        format!("{err:?}").contains("no bars for CCCUSD"),
        "the error is the refusal: {err:?}"
    );
    assert_eq!(
        five_minute_state(&c, top).await,
        vec![
            ("AAAUSD".into(), "running".into(), 0, false, false, true, 0),
            ("BBBUSD".into(), "running".into(), 0, false, false, true, 0),
            ("CCCUSD".into(), "running".into(), 0, false, false, true, 0),
        ]
    );
    c.batch_execute("DROP TRIGGER refuse_ccc ON derived_data_bars")
        .await
        .unwrap();
    let rows = c.query(advance, &[&symbols, &tfs, &tokens]).await.unwrap();
    let got: Vec<(String, String, i32)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("AAAUSD".to_string(), "done".to_string(), 6),
            ("BBBUSD".to_string(), "lease_lost".to_string(), 0),
            ("CCCUSD".to_string(), "done".to_string(), 6),
        ]
    );
    let state = five_minute_state(&c, top).await;
    assert_eq!(
        state,
        vec![
            ("AAAUSD".into(), "idle".into(), 0, true, false, false, 6),
            // Not ours any more: untouched, still running under its lease.
            ("BBBUSD".into(), "running".into(), 0, false, false, true, 0),
            ("CCCUSD".into(), "idle".into(), 0, true, false, false, 6),
        ]
    );
}

#[tokio::test]
async fn a_failed_live_group_is_logged_counted_and_its_failures_recorded_per_task() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let top = three_live_symbols(&c).await;
    refuse_ccc_bars(&c).await;
    let out = db.cli(&["run", "--once", "--json"]);
    let log = stderr(&out);
    assert!(
        log.contains("live run failed") && log.contains("no bars for CCCUSD"),
        "the live error is logged: {log}"
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON summary");
    assert!(
        summary["live_errors"].as_u64().unwrap_or(0) >= 1,
        "the live error is counted: {summary}"
    );
    // The fast path ran the group task by task: CCCUSD's failures are its
    // own (`--once` retries it up to the hard-fail threshold), the others
    // went on.
    assert_eq!(
        five_minute_state(&c, top).await,
        vec![
            ("AAAUSD".into(), "idle".into(), 0, true, false, false, 6),
            ("BBBUSD".into(), "idle".into(), 0, true, false, false, 6),
            (
                "CCCUSD".into(),
                "hard_failed".into(),
                3,
                true,
                true,
                true,
                0
            ),
        ]
    );
}
