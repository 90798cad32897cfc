//! The open bucket: the partial bar of `/api/bars?partial=true` and
//! `export --partial` is the bar stored once its bucket is final.

use barkeep::bars::{open_bucket, BarRecord};
use barkeep::model::AssetClass;
use barkeep::model::{Calendar, Timeframe};
use barkeep::synth::{generate, SynthBar, SynthSpec};
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use crate::common::{stdout, TestDb};
use crate::fixtures::{load_bars, register};

use super::{get_json, serve};

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
