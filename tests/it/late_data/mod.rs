//! Late and corrected 1m data: inserts, updates and deletes behind and
//! ahead of the cursors, through ingest and plain SQL, leave every live
//! derived bar equal to the naive reference on the final 1m data, on the
//! Rust path and the SQL face alike. One file per topic; this one holds
//! what they share: the model of the stored 1m bars, one worker cycle as
//! the worker runs it, generated data and CSV files of it.

mod history;
mod ingest_revisions;
mod late_minutes;
mod properties;
mod race;
mod rebuild;

use std::collections::BTreeMap;

use barkeep::engine::{SymbolJob, SymbolRunner, TaskPlan};
use barkeep::model::Symbol;
use barkeep::model::{Calendar, Timeframe};
use barkeep::synth::{SynthBar, SynthSpec};
use chrono::{DateTime, Duration, Utc};
use tokio_postgres::Client;

use crate::common::TestDb;
use crate::fixtures::ts;
use crate::fixtures::{assert_same_bars, reference_ladder, stored};

/// The 1m bars a test believes are stored, by time.
type Model = BTreeMap<DateTime<Utc>, SynthBar>;

fn model_of(bars: &[SynthBar]) -> Model {
    bars.iter().map(|b| (b.ts, b.clone())).collect()
}

fn bars_of(model: &Model) -> Vec<SynthBar> {
    model.values().cloned().collect()
}

/// Live derived bars of `symbol` must equal the reference on `model`.
async fn assert_reference(db: &TestDb, symbol: &str, fx: bool, model: &Model, start: &str) {
    let expected = reference_ladder(fx, &bars_of(model), ts(start), Utc::now());
    assert_same_bars(&stored(db, symbol).await, &expected);
}

/// One worker cycle on the fast path for one symbol, as the worker runs it
/// (late data first, then the ladder), with `now` chosen by the test.
async fn rust_cycle(client: &mut Client, symbol: &str, cal: Calendar, now: DateTime<Utc>) {
    let mut tasks = Vec::new();
    for tf in Timeframe::LADDER {
        let cursor: DateTime<Utc> = client
            .query_one(
                "UPDATE data_agg_state
                 SET last_agg_bar_ts_utc = coalesce(last_agg_bar_ts_utc, agg_bootstrap_cursor($1, $2))
                 WHERE canonical_symbol = $1 AND timeframe = $2 RETURNING last_agg_bar_ts_utc",
                &[&symbol, &tf.as_str()],
            )
            .await
            .unwrap()
            .get(0);
        tasks.push(TaskPlan {
            timeframe: tf,
            source: tf.source().unwrap(),
            cursor,
            delay: Duration::zero(),
            lease: None,
        });
    }
    let job = SymbolJob {
        symbol: Symbol::parse(symbol).unwrap(),
        calendar: cal,
        tasks,
        now,
        max_windows: None,
        derivation_version: 1,
    };
    let outcomes = SymbolRunner::new(client, &job).run(|_| {}).await;
    for o in outcomes {
        assert!(
            o.outcome.error().is_none(),
            "{symbol} {}: {:?}",
            o.timeframe,
            o.outcome
        );
        client
            .execute(
                "UPDATE data_agg_state SET last_agg_bar_ts_utc = greatest(last_agg_bar_ts_utc, $3)
                 WHERE canonical_symbol = $1 AND timeframe = $2",
                &[&symbol, &o.timeframe.as_str(), &o.new_cursor],
            )
            .await
            .unwrap();
    }
}

fn fx_spec(start: &str, days: i64, seed: u64) -> SynthSpec {
    SynthSpec {
        start: ts(start),
        minutes: days * 24 * 60,
        seed,
        ..SynthSpec::default()
    }
}

fn crypto_spec(start: &str, days: i64, seed: u64) -> SynthSpec {
    SynthSpec {
        start: ts(start),
        minutes: days * 24 * 60,
        fx_weekends: false,
        with_volume: true,
        price: 60_000.0,
        seed,
        ..SynthSpec::default()
    }
}

/// A bar as ingest stores it from a headed CSV (no vwap, no trade count).
fn ingested(b: &SynthBar) -> SynthBar {
    SynthBar {
        vwap: None,
        trade_count: None,
        ..b.clone()
    }
}

fn write_csv(dir: &std::path::Path, name: &str, bars: &[SynthBar]) -> std::path::PathBuf {
    let mut text = String::from("ts,open,high,low,close,volume\n");
    for b in bars {
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
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}
