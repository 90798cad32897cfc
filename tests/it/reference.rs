//! Derived bars against a deliberately naive reference implementation of
//! docs/DESIGN.md (bars, calendars, finality), written here independently
//! of `src/`: bucket labels are found by walking minute by minute on the
//! New York clock, bars by grouping in a BTreeMap, quality by the ratio
//! thresholds.

use std::collections::{BTreeMap, HashMap};

use barkeep::synth::{self, SynthBar, SynthSpec};
use chrono::{DateTime, Datelike, Duration, NaiveDateTime, Timelike, Utc};
use chrono_tz::America::New_York;

use crate::common::{sample_path, TestDb};
use crate::fixtures::{load_bars, ok, sample_bars, ts};

/// One bar as the reference computes it and as the database stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct RefBar {
    pub timeframe: String,
    pub ts: DateTime<Utc>,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub vol: f64,
    pub vwap: Option<f64>,
    pub trade_count: Option<i64>,
    pub source_timeframe: String,
    pub source_candles: i32,
    pub expected_candles: i32,
    pub quality_score: i16,
}

/// A source bar: a 1m bar or a reference bar of a lower timeframe.
#[derive(Debug, Clone)]
struct Src {
    ts: DateTime<Utc>,
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    vol: f64,
    vwap: Option<f64>,
    trade_count: Option<i64>,
}

const LADDER: [(&str, &str); 6] = [
    ("5m", "1m"),
    ("15m", "5m"),
    ("1h", "5m"),
    ("4h", "1h"),
    ("1d", "1h"),
    ("1w", "1d"),
];

fn minutes_of(tf: &str) -> i64 {
    match tf {
        "1m" => 1,
        "5m" => 5,
        "15m" => 15,
        "1h" => 60,
        "4h" => 240,
        "1d" => 1440,
        "1w" => 10080,
        other => panic!("unknown timeframe {other}"),
    }
}

/// FXT wall clock: New York wall time plus seven hours.
fn fxt(ts: DateTime<Utc>) -> NaiveDateTime {
    ts.with_timezone(&New_York).naive_local() + Duration::hours(7)
}

/// The bucket key of an instant: which bucket it falls in, as a comparable value.
fn key(fx: bool, tf: &str, ts: DateTime<Utc>) -> NaiveDateTime {
    let uses_fxt = fx && matches!(tf, "4h" | "1d" | "1w");
    let local = if uses_fxt { fxt(ts) } else { ts.naive_utc() };
    let day = local.date();
    match tf {
        "1w" => {
            let monday = day - Duration::days(day.weekday().num_days_from_monday() as i64);
            monday.and_hms_opt(0, 0, 0).unwrap()
        }
        "1d" => day.and_hms_opt(0, 0, 0).unwrap(),
        _ => {
            let step = minutes_of(tf);
            let minute_of_day = (local.hour() * 60 + local.minute()) as i64;
            let floored = minute_of_day - minute_of_day % step;
            day.and_hms_opt(0, 0, 0).unwrap() + Duration::minutes(floored)
        }
    }
}

/// Finds bucket starts and ends by walking minute by minute.
struct Buckets {
    fx: bool,
    cache: HashMap<(String, NaiveDateTime), (DateTime<Utc>, DateTime<Utc>)>,
}

impl Buckets {
    fn new(fx: bool) -> Self {
        Self {
            fx,
            cache: HashMap::new(),
        }
    }

    /// (start, end) of the bucket holding `ts`.
    fn of(&mut self, tf: &str, ts: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let k = key(self.fx, tf, ts);
        if let Some(found) = self.cache.get(&(tf.to_string(), k)) {
            return *found;
        }
        let minute = Duration::minutes(1);
        let mut start = ts - Duration::seconds(ts.timestamp().rem_euclid(60));
        while key(self.fx, tf, start - minute) == k {
            start -= minute;
        }
        let mut end = start + minute;
        while key(self.fx, tf, end) == k {
            end += minute;
        }
        self.cache.insert((tf.to_string(), k), (start, end));
        (start, end)
    }
}

fn expected(fx: bool, tf: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> i32 {
    match tf {
        "5m" => 5,
        "15m" => 3,
        "1h" => 12,
        "4h" | "1d" => ((end - start).num_minutes() / 60) as i32,
        "1w" => {
            if fx {
                5
            } else {
                7
            }
        }
        other => panic!("unknown timeframe {other}"),
    }
}

fn quality(source: i32, expected: i32) -> Option<i16> {
    let r = source as f64 / expected as f64;
    if r >= 1.0 {
        Some(2)
    } else if r >= 0.8 {
        Some(1)
    } else if r >= 0.6 {
        Some(0)
    } else if r >= 0.55 {
        Some(-1)
    } else {
        None
    }
}

/// Every derived bar of the default ladder for one instrument whose tasks
/// start at `agg_start`, with everything before `now` final.
pub fn reference_ladder(
    fx: bool,
    bars: &[Src1m],
    agg_start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<RefBar> {
    let mut buckets = Buckets::new(fx);
    let mut by_tf: HashMap<&str, Vec<Src>> = HashMap::new();
    by_tf.insert(
        "1m",
        bars.iter()
            .map(|b| Src {
                ts: b.ts,
                open: b.open,
                high: b.high,
                low: b.low,
                close: b.close,
                vol: b.vol,
                vwap: b.vwap,
                trade_count: b.trade_count,
            })
            .collect(),
    );
    let mut out = Vec::new();
    for (tf, source_tf) in LADDER {
        let mut groups: BTreeMap<DateTime<Utc>, (DateTime<Utc>, Vec<Src>)> = BTreeMap::new();
        for s in &by_tf[source_tf] {
            let (start, end) = buckets.of(tf, s.ts);
            groups
                .entry(start)
                .or_insert_with(|| (end, Vec::new()))
                .1
                .push(s.clone());
        }
        let mut made = Vec::new();
        for (start, (end, mut group)) in groups {
            if start < agg_start || end > now {
                continue;
            }
            group.sort_by_key(|s| s.ts);
            let exp = expected(fx, tf, start, end);
            let Some(q) = quality(group.len() as i32, exp) else {
                continue;
            };
            let mut vol = 0.0;
            let mut pv = 0.0;
            let mut pv_vol = 0.0;
            let mut trades: Option<i64> = None;
            for s in &group {
                vol += s.vol;
                if let (Some(vw), true) = (s.vwap, s.vol > 0.0) {
                    pv += vw * s.vol;
                    pv_vol += s.vol;
                }
                if let Some(t) = s.trade_count {
                    trades = Some(trades.unwrap_or(0) + t);
                }
            }
            let bar = RefBar {
                timeframe: tf.to_string(),
                ts: start,
                open: group[0].open,
                high: group.iter().map(|s| s.high).fold(f64::MIN, f64::max),
                low: group.iter().map(|s| s.low).fold(f64::MAX, f64::min),
                close: group[group.len() - 1].close,
                vol,
                vwap: if pv_vol > 0.0 {
                    Some(pv / pv_vol)
                } else {
                    None
                },
                trade_count: trades,
                source_timeframe: source_tf.to_string(),
                source_candles: group.len() as i32,
                expected_candles: exp,
                quality_score: q,
            };
            made.push(Src {
                ts: bar.ts,
                open: bar.open,
                high: bar.high,
                low: bar.low,
                close: bar.close,
                vol: bar.vol,
                vwap: bar.vwap,
                trade_count: bar.trade_count,
            });
            out.push(bar);
        }
        by_tf.insert(tf, made);
    }
    out.sort_by_key(|b| (minutes_of(&b.timeframe), b.ts));
    out
}

/// A raw 1-minute bar as the tests load it.
pub type Src1m = SynthBar;

/// Load 1m bars into data_bars (the engine tests' loader).
async fn load(db: &TestDb, symbol: &str, bars: &[Src1m]) {
    load_bars(&db.client().await, symbol, bars).await;
}

/// The live derived bars of one symbol, in the reference's order.
pub async fn stored(db: &TestDb, symbol: &str) -> Vec<RefBar> {
    let client = db.client().await;
    let rows = client
        .query(
            "SELECT timeframe, ts_utc, open, high, low, close, vol, vwap, trade_count, source_timeframe,
                    source_candles, expected_candles, quality_score, is_partial
             FROM derived_data_bars WHERE canonical_symbol = $1 AND deleted_at IS NULL",
            &[&symbol],
        )
        .await
        .unwrap();
    let mut bars: Vec<RefBar> = rows
        .iter()
        .map(|r| {
            assert!(!r.get::<_, bool>(13), "a stored bar is flagged partial");
            RefBar {
                timeframe: r.get(0),
                ts: r.get(1),
                open: r.get(2),
                high: r.get(3),
                low: r.get(4),
                close: r.get(5),
                vol: r.get(6),
                vwap: r.get(7),
                trade_count: r.get(8),
                source_timeframe: r.get(9),
                source_candles: r.get(10),
                expected_candles: r.get(11),
                quality_score: r.get(12),
            }
        })
        .collect();
    bars.sort_by_key(|b| (minutes_of(&b.timeframe), b.ts));
    bars
}

/// Assert two bar lists are equal, reporting the first difference readably.
pub fn assert_same_bars(actual: &[RefBar], expected: &[RefBar]) {
    for (a, e) in actual.iter().zip(expected) {
        assert_eq!(a, e, "first differing bar");
    }
    assert_eq!(actual.len(), expected.len(), "bar counts differ");
}

/// Register, sync from `start`, run the worker to the end, return stored bars.
async fn aggregate(db: &TestDb, symbol: &str, class: &str, start: &str) -> Vec<RefBar> {
    ok(&db.cli(&["assets", "add", symbol, "--class", class]));
    ok(&db.cli(&["sync", "--env", "prod", "--start", start]));
    ok(&db.cli(&["run", "--once"]));
    stored(db, symbol).await
}

#[tokio::test]
async fn the_shipped_sample_matches_the_reference_bar_for_bar() {
    let db = TestDb::migrated().await;
    let bars = sample_bars();
    assert_eq!(bars.len(), 16_875);
    ok(&db.cli(&["assets", "add", "AUDUSD", "--class", "fx"]));
    ok(&db.cli(&[
        "ingest",
        "--symbol",
        "AUDUSD",
        sample_path().to_str().unwrap(),
    ]));
    let actual = aggregate(&db, "AUDUSD", "fx", "2023-06-01T00:00:00Z").await;
    let expected = reference_ladder(true, &bars, ts("2023-06-01T00:00:00Z"), Utc::now());
    for tf in ["5m", "15m", "1h", "4h", "1d", "1w"] {
        assert!(
            expected.iter().any(|b| b.timeframe == tf),
            "reference has no {tf} bar"
        );
    }
    assert_same_bars(&actual, &expected);
}

#[tokio::test]
async fn generated_fx_across_both_2025_dst_changes_matches_the_reference() {
    let db = TestDb::migrated().await;
    // Around the clock (no weekend closure) so the 3 h/5 h and 23 h/25 h
    // buckets of the DST weekends hold data; with gaps for quality scores.
    let mut bars = Vec::new();
    for (start, seed) in [("2025-03-05T00:00:00Z", 7), ("2025-10-29T00:00:00Z", 8)] {
        let spec = SynthSpec {
            start: ts(start),
            minutes: 9 * 24 * 60,
            fx_weekends: false,
            gap_probability: 0.01,
            gap_continue_probability: 0.8,
            seed,
            ..SynthSpec::default()
        };
        bars.extend(synth::generate(&spec));
    }
    load(&db, "EURUSD", &bars).await;
    let actual = aggregate(&db, "EURUSD", "fx", "2025-03-01T00:00:00Z").await;
    let expected = reference_ladder(true, &bars, ts("2025-03-01T00:00:00Z"), Utc::now());
    let long_days: Vec<_> = expected
        .iter()
        .filter(|b| b.timeframe == "1d" && b.expected_candles != 24)
        .collect();
    assert_eq!(
        long_days.len(),
        2,
        "one 23 h and one 25 h fx day: {long_days:?}"
    );
    assert_same_bars(&actual, &expected);
}

#[tokio::test]
async fn generated_fx_with_weekends_and_crypto_with_volume_match_the_reference() {
    let db = TestDb::migrated().await;
    let fx_bars: Vec<_> = synth::generate(&SynthSpec {
        start: ts("2025-06-25T00:00:00Z"),
        minutes: 21 * 24 * 60,
        seed: 11,
        ..SynthSpec::default()
    })
    .collect();
    let crypto_bars: Vec<_> = synth::generate(&SynthSpec {
        start: ts("2025-06-25T00:00:00Z"),
        minutes: 21 * 24 * 60,
        fx_weekends: false,
        with_volume: true,
        price: 60_000.0,
        seed: 12,
        ..SynthSpec::default()
    })
    .collect();
    load(&db, "GBPUSD", &fx_bars).await;
    load(&db, "BTCUSD", &crypto_bars).await;
    ok(&db.cli(&["assets", "add", "GBPUSD", "--class", "fx"]));
    let crypto = aggregate(&db, "BTCUSD", "crypto", "2025-07-01T00:00:00Z").await;
    let fx = stored(&db, "GBPUSD").await;
    assert_same_bars(
        &fx,
        &reference_ladder(true, &fx_bars, ts("2025-07-01T00:00:00Z"), Utc::now()),
    );
    let expected_crypto =
        reference_ladder(false, &crypto_bars, ts("2025-07-01T00:00:00Z"), Utc::now());
    assert!(expected_crypto
        .iter()
        .any(|b| b.vwap.is_some() && b.trade_count.is_some()));
    assert_same_bars(&crypto, &expected_crypto);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]
        #[test]
        fn random_gaps_never_change_the_agreement(seed in 1u64..1_000_000, gap in 0.0f64..0.4, run_on in 0.0f64..0.97, crypto in any::<bool>()) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let db = TestDb::migrated().await;
                let bars: Vec<_> = synth::generate(&SynthSpec {
                    start: ts("2025-07-03T13:17:00Z"),
                    minutes: 10 * 24 * 60,
                    fx_weekends: !crypto,
                    gap_probability: gap,
                    gap_continue_probability: run_on,
                    with_volume: crypto,
                    seed,
                    ..SynthSpec::default()
                })
                .collect();
                load(&db, "PROP", &bars).await;
                let class = if crypto { "crypto" } else { "fx" };
                let actual = aggregate(&db, "PROP", class, "2025-07-01T00:00:00Z").await;
                assert_same_bars(&actual, &reference_ladder(!crypto, &bars, ts("2025-07-01T00:00:00Z"), Utc::now()));
            });
        }
    }
}
