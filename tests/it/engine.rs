//! The Rust fast path and the SQL function `catchup_aggregation_range`
//! write identical live bars for the whole ladder: on the shipped AUDUSD
//! sample, on generated FX data across both 2025 US DST changes, and on
//! generated crypto data with volume and vwap.

use tokio_util::sync::CancellationToken;

use barkeep::assets;
use barkeep::model::{AssetClass, Symbol, Timeframe};
use barkeep::synth::{generate, SynthBar, SynthSpec};
use barkeep::worker::{run_worker, Summary, WorkerConfig};
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use tokio_postgres::Client;

use crate::common::{sample_path, TestDb};

/// Every field of a live derived bar except id and timestamps of the row.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveBar {
    pub symbol: String,
    pub timeframe: String,
    pub ts: DateTime<Utc>,
    pub ohlcv: [f64; 5],
    pub vwap: Option<f64>,
    pub trade_count: Option<i64>,
    pub source_timeframe: String,
    pub source_candles: i32,
    pub expected_candles: i32,
    pub quality: i16,
    pub is_partial: bool,
    pub derivation_version: i32,
}

pub async fn live_bars(client: &Client) -> Vec<LiveBar> {
    client
        .query(
            "SELECT canonical_symbol, timeframe, ts_utc, open, high, low, close, vol, vwap,
                    trade_count, source_timeframe, source_candles, expected_candles,
                    quality_score, is_partial, derivation_version
             FROM derived_data_bars WHERE deleted_at IS NULL
             ORDER BY canonical_symbol, timeframe, ts_utc",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| LiveBar {
            symbol: r.get(0),
            timeframe: r.get(1),
            ts: r.get(2),
            ohlcv: [r.get(3), r.get(4), r.get(5), r.get(6), r.get(7)],
            vwap: r.get(8),
            trade_count: r.get(9),
            source_timeframe: r.get(10),
            source_candles: r.get(11),
            expected_candles: r.get(12),
            quality: r.get(13),
            is_partial: r.get(14),
            derivation_version: r.get(15),
        })
        .collect()
}

/// Insert 1m bars in batches.
pub async fn load_bars(client: &Client, symbol: &str, bars: &[SynthBar]) {
    for chunk in bars.chunks(20_000) {
        let ts: Vec<DateTime<Utc>> = chunk.iter().map(|b| b.ts).collect();
        let col = |f: fn(&SynthBar) -> f64| chunk.iter().map(f).collect::<Vec<f64>>();
        let vwap: Vec<Option<f64>> = chunk.iter().map(|b| b.vwap).collect();
        let tc: Vec<Option<i64>> = chunk.iter().map(|b| b.trade_count).collect();
        client
            .execute(
                "INSERT INTO data_bars (canonical_symbol, timeframe, ts_utc, open, high, low, close, vol, vwap, trade_count, source)
                 SELECT $1, '1m', * , 'test' FROM unnest($2::timestamptz[], $3::float8[], $4::float8[],
                        $5::float8[], $6::float8[], $7::float8[], $8::float8[], $9::int8[])",
                &[&symbol, &ts, &col(|b| b.open), &col(|b| b.high), &col(|b| b.low),
                  &col(|b| b.close), &col(|b| b.vol), &vwap, &tc],
            )
            .await
            .unwrap();
    }
}

/// The shipped HistData sample (fixed UTC−5 stamps) as 1m bars.
pub fn sample_bars() -> Vec<SynthBar> {
    std::fs::read_to_string(sample_path())
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.trim().split(';').collect();
            let est = NaiveDateTime::parse_from_str(f[0], "%Y%m%d %H%M%S").unwrap();
            SynthBar {
                ts: est.and_utc() + Duration::hours(5),
                open: f[1].parse().unwrap(),
                high: f[2].parse().unwrap(),
                low: f[3].parse().unwrap(),
                close: f[4].parse().unwrap(),
                vol: f[5].parse().unwrap(),
                vwap: None,
                trade_count: None,
            }
        })
        .collect()
}

/// Register the symbol and create its ladder of tasks starting at `agg_start`.
pub async fn register(client: &Client, symbol: &str, class: AssetClass, agg_start: &str) {
    assets::add(client, &Symbol::parse(symbol).unwrap(), class, None, true)
        .await
        .unwrap();
    let start: DateTime<Utc> = agg_start.parse().unwrap();
    client
        .query_one(
            "SELECT success FROM sync_agg_state_from_registry('prod', $1)",
            &[&start],
        )
        .await
        .unwrap();
}

/// Catch the whole ladder up with the SQL function, task by task, 500
/// windows a call.
pub async fn sql_ladder(client: &Client, symbol: &str) {
    sql_ladder_in_chunks(client, symbol, 500).await
}

/// The same, `windows` buckets a call.
pub async fn sql_ladder_in_chunks(client: &Client, symbol: &str, windows: i32) {
    for tf in Timeframe::LADDER {
        client
            .execute(
                "UPDATE data_agg_state SET last_agg_bar_ts_utc = agg_bootstrap_cursor($1, $2)
                 WHERE canonical_symbol = $1 AND timeframe = $2 AND last_agg_bar_ts_utc IS NULL",
                &[&symbol, &tf.as_str()],
            )
            .await
            .unwrap();
        loop {
            let r: serde_json::Value = client
                .query_one(
                    "SELECT catchup_aggregation_range($1, $2, last_agg_bar_ts_utc, $3, now(), 1, false)
                     FROM data_agg_state WHERE canonical_symbol = $1 AND timeframe = $2",
                    &[&symbol, &tf.as_str(), &windows],
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

pub fn run_args() -> WorkerConfig {
    WorkerConfig {
        grace: std::time::Duration::from_secs(5),
        ..WorkerConfig::catch_up(2)
    }
}

/// Catch everything up with the worker's fast path, in-process.
pub async fn rust_ladder(db: &TestDb) -> Summary {
    run_worker(&db.database, &run_args(), CancellationToken::new())
        .await
        .unwrap()
}

/// Load the same bars into two databases, catch up one with SQL and the
/// other with the fast path, and demand identical live bars.
pub async fn both_paths_agree(
    symbol: &str,
    class: AssetClass,
    agg_start: &str,
    bars: &[SynthBar],
) -> Vec<LiveBar> {
    both_paths_agree_in_chunks(symbol, class, agg_start, bars, 500).await
}

/// The same with the SQL function called for `windows` buckets at a time.
pub async fn both_paths_agree_in_chunks(
    symbol: &str,
    class: AssetClass,
    agg_start: &str,
    bars: &[SynthBar],
    windows: i32,
) -> Vec<LiveBar> {
    let sql_db = TestDb::migrated().await;
    let rust_db = TestDb::migrated().await;
    for db in [&sql_db, &rust_db] {
        let c = db.client().await;
        register(&c, symbol, class, agg_start).await;
        load_bars(&c, symbol, bars).await;
    }
    sql_ladder_in_chunks(&sql_db.client().await, symbol, windows).await;
    let summary = rust_ladder(&rust_db).await;
    assert_eq!(summary.tasks_failed, 0);
    let by_sql = live_bars(&sql_db.client().await).await;
    let by_rust = live_bars(&rust_db.client().await).await;
    for tf in Timeframe::LADDER {
        let n = by_sql.iter().filter(|b| b.timeframe == tf.as_str()).count();
        assert!(n > 0, "the SQL path built no {tf} bars");
    }
    assert_eq!(by_sql.len(), by_rust.len(), "bar counts differ");
    for (s, r) in by_sql.iter().zip(&by_rust) {
        assert_eq!(s, r);
    }
    let cursors = |db: &TestDb| {
        let db = db.database.clone();
        async move {
            db.connect()
                .await
                .unwrap()
                .query(
                    "SELECT timeframe, last_agg_bar_ts_utc FROM data_agg_state ORDER BY timeframe",
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, Option<DateTime<Utc>>>(1)))
                .collect::<Vec<_>>()
        }
    };
    let sql_cursors = cursors(&sql_db).await;
    let rust_cursors = cursors(&rust_db).await;
    // Both catch up to "now", read at slightly different moments: compare the
    // cursors of the slow timeframes, which cannot differ by seconds.
    for (s, r) in sql_cursors.iter().zip(&rust_cursors) {
        if ["4h", "1d", "1w"].contains(&s.0.as_str()) {
            assert_eq!(s, r);
        }
    }
    by_rust
}

/// The worker folds 1m rows as they arrive in heap order and reads a range
/// again sorted when they are not in time order: rows inserted newest first
/// (and some revised, so their new versions sit elsewhere in the heap) must
/// give the same bars as the SQL path.
#[tokio::test]
async fn rows_stored_out_of_time_order_give_the_same_bars() {
    let mut bars = sample_bars();
    bars.reverse();
    let sql_db = TestDb::migrated().await;
    let rust_db = TestDb::migrated().await;
    for db in [&sql_db, &rust_db] {
        let c = db.client().await;
        register(&c, "AUDUSD", AssetClass::Fx, "2023-05-28T00:00:00Z").await;
        load_bars(&c, "AUDUSD", &bars).await;
        c.execute(
            "UPDATE data_bars SET close = close + 0.0001, high = high + 0.0001
             WHERE canonical_symbol = 'AUDUSD' AND extract(minute FROM ts_utc)::int % 7 = 3",
            &[],
        )
        .await
        .unwrap();
        // With statistics the planner reads most of the table by a
        // sequential or bitmap scan, in heap order, not by the index.
        c.execute("ANALYZE data_bars", &[]).await.unwrap();
    }
    sql_ladder(&sql_db.client().await, "AUDUSD").await;
    let summary = rust_ladder(&rust_db).await;
    assert_eq!(summary.tasks_failed, 0);
    let by_sql = live_bars(&sql_db.client().await).await;
    let by_rust = live_bars(&rust_db.client().await).await;
    assert!(by_sql.iter().any(|b| b.timeframe == "1w"), "no weekly bars");
    assert_eq!(by_sql.len(), by_rust.len(), "bar counts differ");
    for (s, r) in by_sql.iter().zip(&by_rust) {
        assert_eq!(s, r);
    }
}

#[tokio::test]
async fn the_fast_path_and_the_sql_function_agree_on_the_audusd_sample() {
    let bars = sample_bars();
    assert_eq!(bars.len(), 16_875);
    let live = both_paths_agree("AUDUSD", AssetClass::Fx, "2023-05-28T00:00:00Z", &bars).await;
    let days: Vec<_> = live.iter().filter(|b| b.timeframe == "1d").collect();
    assert!(
        days.iter()
            .all(|b| b.ts.format("%H:%M").to_string() == "21:00"),
        "summer fx days start 21:00Z"
    );
}

#[tokio::test]
async fn the_fast_path_and_the_sql_function_agree_across_both_2025_dst_changes() {
    let mut bars = Vec::new();
    // The US changes fall on Sunday 02:00 New York, inside the FX weekend:
    // trade through the weekends so the 3 h and 5 h buckets get bars.
    for (start, seed) in [("2025-03-02T00:00:00Z", 7), ("2025-10-26T00:00:00Z", 8)] {
        bars.extend(generate(&SynthSpec {
            start: start.parse().unwrap(),
            minutes: 2 * 7 * 1440,
            fx_weekends: false,
            gap_probability: 0.01,
            gap_continue_probability: 0.8,
            seed,
            ..SynthSpec::default()
        }));
    }
    let live = both_paths_agree("EURUSD", AssetClass::Fx, "2025-02-01T00:00:00Z", &bars).await;
    let lengths: Vec<i32> = live
        .iter()
        .filter(|b| b.timeframe == "4h")
        .map(|b| b.expected_candles)
        .collect();
    assert!(
        lengths.contains(&3) && lengths.contains(&5),
        "the 3 h and 5 h buckets are there"
    );
}

#[tokio::test]
async fn the_fast_path_and_the_sql_function_agree_on_crypto_with_volume() {
    let bars: Vec<_> = generate(&SynthSpec {
        start: "2025-03-01T00:00:00Z".parse().unwrap(),
        minutes: 3 * 7 * 1440,
        fx_weekends: false,
        gap_probability: 0.01,
        gap_continue_probability: 0.7,
        with_volume: true,
        price: 60_000.0,
        seed: 11,
    })
    .collect();
    let live = both_paths_agree("BTC-USD", AssetClass::Crypto, "2025-03-01T00:00:00Z", &bars).await;
    assert!(live
        .iter()
        .any(|b| b.vwap.is_some() && b.trade_count.is_some()));
    let weeks: Vec<_> = live.iter().filter(|b| b.timeframe == "1w").collect();
    assert!(weeks
        .iter()
        .all(|b| b.ts.format("%a %H:%M").to_string() == "Mon 00:00"));
}

#[tokio::test]
async fn the_sql_function_in_small_chunks_agrees_with_the_fast_path() {
    // Seven buckets a call: chunk ends fall inside weeks, on weekends and
    // gaps, in every timeframe, whether it reads 1m rows or derived bars.
    let bars: Vec<_> = generate(&SynthSpec {
        start: "2025-01-05T22:00:00Z".parse().unwrap(),
        minutes: 5 * 7 * 1440,
        fx_weekends: true,
        gap_probability: 0.02,
        gap_continue_probability: 0.9,
        seed: 21,
        ..SynthSpec::default()
    })
    .collect();
    let live =
        both_paths_agree_in_chunks("GBPUSD", AssetClass::Fx, "2025-01-05T22:00:00Z", &bars, 7)
            .await;
    let days = live.iter().filter(|b| b.timeframe == "1d").count();
    assert!(days > 3 * 7, "{days} daily bars: 1d took several chunks");
}
