//! Random inserts, revisions and deletes behind and ahead of the cursors,
//! through ingest and plain SQL, between worker cycles and during them,
//! leave bars equal to the naive reference, on the Rust path and the SQL
//! face alike.

use barkeep::ingest::{ingest_files, IngestOptions};
use barkeep::model::{AssetClass, Symbol};
use barkeep::model::{Calendar, Timeframe};
use barkeep::synth::{generate, SynthBar, SynthSpec};
use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use serde_json::Value;
use tokio_postgres::Client;

use crate::common::TestDb;
use crate::fixtures::{assert_same_bars, stored};
use crate::fixtures::{load_bars, register, ts};

use super::{assert_reference, crypto_spec, fx_spec, model_of, rust_cycle, write_csv, Model};

/// One cycle of the SQL face for one symbol: each task caught up to `now`
/// with catchup_aggregation_range (which re-aggregates its dirty buckets first).
async fn sql_cycle(client: &Client, symbol: &str, now: DateTime<Utc>) {
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
            let r: Value = client
                .query_one(
                    "SELECT catchup_aggregation_range($1, $2, last_agg_bar_ts_utc, 500, $3, 1, false)
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

/// A random change of the 1m data.
#[derive(Debug, Clone)]
enum Change {
    /// Insert or revise the bar at minute `at` (minutes from the data start).
    Put {
        at: i64,
        bump: f64,
        vol: f64,
    },
    Delete {
        at: i64,
    },
}

/// Apply changes to the model and the database, through ingest (inserts
/// and revisions) or plain SQL (every kind).
async fn apply(
    client: &mut Client,
    symbol: &str,
    base: DateTime<Utc>,
    model: &mut Model,
    changes: &[Change],
    through_ingest: bool,
    dir: &std::path::Path,
) {
    let mut puts = Vec::new();
    for ch in changes {
        match ch {
            Change::Put { at, bump, vol } => {
                let t = base + Duration::minutes(*at);
                let prev = model
                    .range(..=t)
                    .next_back()
                    .map(|(_, b)| b.close)
                    .unwrap_or(1.1);
                let open = prev + bump;
                let close = open - bump / 2.0;
                let bar = SynthBar {
                    ts: t,
                    open,
                    high: open.max(close) + bump.abs(),
                    low: open.min(close) - bump.abs(),
                    close,
                    vol: *vol,
                    vwap: None,
                    trade_count: None,
                };
                puts.retain(|b: &SynthBar| b.ts != t);
                puts.push(bar);
            }
            Change::Delete { at } => {
                let t = base + Duration::minutes(*at);
                puts.retain(|b: &SynthBar| b.ts != t);
                model.remove(&t);
                client
                    .execute(
                        "DELETE FROM data_bars WHERE canonical_symbol = $1 AND timeframe = '1m' AND ts_utc = $2",
                        &[&symbol, &t],
                    )
                    .await
                    .unwrap();
            }
        }
    }
    if puts.is_empty() {
        return;
    }
    puts.sort_by_key(|b| b.ts);
    for b in &puts {
        // A revision keeps the stored vwap and trade count (ingest and the
        // SQL below write prices and volume only).
        let kept = model.get(&b.ts).map(|old| (old.vwap, old.trade_count));
        let (vwap, trade_count) = kept.unwrap_or((None, None));
        model.insert(
            b.ts,
            SynthBar {
                vwap,
                trade_count,
                ..b.clone()
            },
        );
    }
    if through_ingest {
        let file = write_csv(dir, "changes.csv", &puts);
        let opts = IngestOptions::new(Symbol::parse(symbol).unwrap());
        ingest_files(client, &[file], &opts).await.unwrap();
    } else {
        let t: Vec<DateTime<Utc>> = puts.iter().map(|b| b.ts).collect();
        let col = |f: fn(&SynthBar) -> f64| puts.iter().map(f).collect::<Vec<f64>>();
        client
            .execute(
                "INSERT INTO data_bars AS d (canonical_symbol, timeframe, ts_utc, open, high, low, close, vol)
                 SELECT $1, '1m', * FROM unnest($2::timestamptz[], $3::float8[], $4::float8[],
                        $5::float8[], $6::float8[], $7::float8[])
                 ON CONFLICT (canonical_symbol, timeframe, ts_utc) DO UPDATE
                   SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low,
                       close = EXCLUDED.close, vol = EXCLUDED.vol",
                &[
                    &symbol,
                    &t,
                    &col(|b| b.open),
                    &col(|b| b.high),
                    &col(|b| b.low),
                    &col(|b| b.close),
                    &col(|b| b.vol),
                ],
            )
            .await
            .unwrap();
    }
}

/// One full week on either calendar (the fx week starts Sunday 17:00
/// New York), so every timeframe up to 1w has bars.
const DAYS: i64 = 6;
const START: &str = "2025-06-29T21:00:00Z";

fn change() -> impl Strategy<Value = Change> {
    let minute = 0..DAYS * 24 * 60;
    prop_oneof![
        3 => (minute.clone(), -0.01f64..0.01, 0.0f64..5.0)
            .prop_map(|(at, bump, vol)| Change::Put { at, bump, vol }),
        2 => minute.prop_map(|at| Change::Delete { at }),
    ]
}

/// Steps of changes, each followed by a worker cycle whose `now`
/// moves through the data (so changes land behind and ahead of cursors).
fn steps() -> impl Strategy<Value = Vec<(Vec<Change>, bool, i64)>> {
    prop::collection::vec(
        (
            prop::collection::vec(change(), 1..12),
            any::<bool>(),
            0..DAYS * 24,
        ),
        1..5,
    )
}

async fn scenario(seed: u64, crypto: bool, steps: Vec<(Vec<Change>, bool, i64)>) {
    let (class, cal) = if crypto {
        (AssetClass::Crypto, Calendar::Utc)
    } else {
        (AssetClass::Fx, Calendar::Fx)
    };
    let spec = if crypto {
        crypto_spec(START, DAYS, seed)
    } else {
        SynthSpec {
            gap_probability: 0.05,
            gap_continue_probability: 0.5,
            ..fx_spec(START, DAYS, seed)
        }
    };
    let bars: Vec<SynthBar> = generate(&spec).collect();
    let rust_db = TestDb::migrated().await;
    let sql_db = TestDb::migrated().await;
    for db in [&rust_db, &sql_db] {
        let c = db.client().await;
        register(&c, "PROP", class, START).await;
        load_bars(&c, "PROP", &bars).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = ts(START);
    let mut rust_model = model_of(&bars);
    let mut sql_model = model_of(&bars);
    let mut rust_client = rust_db.client().await;
    let mut sql_client = sql_db.client().await;
    let mut hours: Vec<i64> = steps.iter().map(|s| s.2).collect();
    hours.sort();
    for ((changes, through_ingest, _), hour) in steps.iter().zip(hours) {
        let now = base + Duration::hours(hour);
        apply(
            &mut rust_client,
            "PROP",
            base,
            &mut rust_model,
            changes,
            *through_ingest,
            dir.path(),
        )
        .await;
        apply(
            &mut sql_client,
            "PROP",
            base,
            &mut sql_model,
            changes,
            *through_ingest,
            dir.path(),
        )
        .await;
        rust_cycle(&mut rust_client, "PROP", cal, now).await;
        sql_cycle(&sql_client, "PROP", now).await;
    }
    rust_cycle(&mut rust_client, "PROP", cal, Utc::now()).await;
    sql_cycle(&sql_client, "PROP", Utc::now()).await;
    assert_reference(&rust_db, "PROP", !crypto, &rust_model, START).await;
    assert_same_bars(
        &stored(&sql_db, "PROP").await,
        &stored(&rust_db, "PROP").await,
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]
    #[test]
    fn random_changes_behind_and_ahead_of_cursors_leave_exact_bars(
        seed in 1u64..1_000_000, crypto in any::<bool>(), steps in steps())
    {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(scenario(seed, crypto, steps));
    }

    #[test]
    fn random_changes_concurrent_with_worker_cycles_leave_exact_bars(
        seed in 1u64..1_000_000, crypto in any::<bool>(), steps in steps())
    {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(concurrent(seed, crypto, steps));
    }
}

/// Changes applied on one connection while worker cycles run on another.
async fn concurrent(seed: u64, crypto: bool, steps: Vec<(Vec<Change>, bool, i64)>) {
    let (class, cal) = if crypto {
        (AssetClass::Crypto, Calendar::Utc)
    } else {
        (AssetClass::Fx, Calendar::Fx)
    };
    let spec = if crypto {
        crypto_spec(START, DAYS, seed)
    } else {
        fx_spec(START, DAYS, seed)
    };
    let bars: Vec<SynthBar> = generate(&spec).collect();
    let db = TestDb::migrated().await;
    let c = db.client().await;
    register(&c, "PROP", class, START).await;
    load_bars(&c, "PROP", &bars).await;
    let base = ts(START);
    let mut hours: Vec<i64> = steps.iter().map(|s| s.2).collect();
    hours.sort();
    let n = steps.len();
    let cycles = {
        let database = db.database.clone();
        tokio::spawn(async move {
            let mut client = database.connect().await.unwrap();
            for hour in hours {
                rust_cycle(&mut client, "PROP", cal, base + Duration::hours(hour)).await;
            }
            for _ in 0..n {
                rust_cycle(&mut client, "PROP", cal, Utc::now()).await;
            }
        })
    };
    let mut model = model_of(&bars);
    let dir = tempfile::tempdir().unwrap();
    let mut client = db.client().await;
    for (changes, through_ingest, _) in &steps {
        apply(
            &mut client,
            "PROP",
            base,
            &mut model,
            changes,
            *through_ingest,
            dir.path(),
        )
        .await;
    }
    cycles.await.unwrap();
    rust_cycle(&mut client, "PROP", cal, Utc::now()).await;
    assert_reference(&db, "PROP", !crypto, &model, START).await;
}
