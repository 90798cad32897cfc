//! `barkeep verify --deep`: recompute stored derived bars from their source
//! bars and report every one that differs, is missing or should not exist.
//! The recomputation here is deliberately naive (group by bucket, then
//! first/last/max/min/sums per the rules of SPEC §2) and shares no code with
//! the engine's streaming fold, so a bug there, or a bar changed behind
//! barkeep's back, shows up as a difference.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use crate::engine::fold::quality;
use crate::engine::source::read_bars;
use crate::model::calendar::{
    bucket_end, bucket_start, expected_candles, first_bucket_at_or_after,
};
use crate::model::{Bar, Calendar, DerivedBar, Symbol, Timeframe};

/// Which bars to recompute.
#[derive(Debug, Clone)]
pub struct DeepSettings {
    /// How many live bars, drawn at random, when no symbol is given.
    pub sample: i64,
    /// Every bar of this symbol instead of a sample (and missing bars too).
    pub symbol: Option<Symbol>,
}

/// A bar as stored or as recomputed, without its instant: the report's
/// shape of a [`DerivedBar`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BarValues {
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub vol: f64,
    pub vwap: Option<f64>,
    pub trade_count: Option<i64>,
    pub source_candles: i32,
    pub expected_candles: i32,
    pub quality_score: i16,
}

impl From<DerivedBar> for BarValues {
    fn from(d: DerivedBar) -> BarValues {
        BarValues {
            open: d.bar.open,
            high: d.bar.high,
            low: d.bar.low,
            close: d.bar.close,
            vol: d.bar.vol,
            vwap: d.bar.vwap,
            trade_count: d.bar.trade_count,
            source_candles: d.source_candles,
            expected_candles: d.expected_candles,
            quality_score: d.quality,
        }
    }
}

/// One bar that is not what its sources say.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BarDifference {
    pub symbol: String,
    pub timeframe: String,
    pub ts_utc: DateTime<Utc>,
    /// `changed`, `missing` (the sources make a bar, none is stored) or
    /// `extra` (a bar is stored, the sources make none).
    pub kind: String,
    /// The fields that differ, for `changed`.
    pub fields: Vec<String>,
    pub stored: Option<BarValues>,
    pub recomputed: Option<BarValues>,
}

/// What the deep check found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeepReport {
    /// `sample` or `symbol SYMBOL`.
    pub mode: String,
    pub bars_checked: usize,
    pub differences: Vec<BarDifference>,
}

/// The bar the sources of one bucket make, or None when too few arrived.
fn recompute(
    cal: Calendar,
    tf: Timeframe,
    start: DateTime<Utc>,
    sources: &[&Bar],
) -> Option<BarValues> {
    let first = sources.first()?;
    let last = sources.last()?;
    let expected = expected_candles(cal, tf, start);
    let count = sources.len() as i32;
    let quality_score = quality(count, expected)?;
    let mut vol = 0.0;
    let (mut num, mut den, mut weighted) = (0.0, 0.0, false);
    let mut trades: Option<i64> = None;
    for b in sources {
        vol += b.vol;
        if let Some(v) = b.vwap.filter(|_| b.vol > 0.0) {
            num += v * b.vol;
            den += b.vol;
            weighted = true;
        }
        if let Some(t) = b.trade_count {
            trades = Some(trades.unwrap_or(0) + t);
        }
    }
    Some(BarValues {
        open: first.open,
        high: sources
            .iter()
            .map(|b| b.high)
            .fold(f64::NEG_INFINITY, f64::max),
        low: sources.iter().map(|b| b.low).fold(f64::INFINITY, f64::min),
        close: last.close,
        vol,
        vwap: (weighted && den != 0.0).then(|| num / den),
        trade_count: trades,
        source_candles: count,
        expected_candles: expected,
        quality_score,
    })
}

/// Sums may be added in another order by another path: allow the last bits.
fn close_enough(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn differing_fields(s: &BarValues, r: &BarValues) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |name: &str, same: bool| {
        if !same {
            out.push(name.to_string());
        }
    };
    check("open", s.open == r.open);
    check("high", s.high == r.high);
    check("low", s.low == r.low);
    check("close", s.close == r.close);
    check("vol", close_enough(s.vol, r.vol));
    check(
        "vwap",
        match (s.vwap, r.vwap) {
            (Some(a), Some(b)) => close_enough(a, b),
            (a, b) => a == b,
        },
    );
    check("trade_count", s.trade_count == r.trade_count);
    check("source_candles", s.source_candles == r.source_candles);
    check("expected_candles", s.expected_candles == r.expected_candles);
    check("quality_score", s.quality_score == r.quality_score);
    out
}

/// Stored live bars of one symbol and timeframe in [from, to).
async fn stored(
    client: &Client,
    symbol: &str,
    tf: Timeframe,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<BTreeMap<DateTime<Utc>, BarValues>> {
    let rows = client
        .query(
            "SELECT ts_utc, open, high, low, close, vol, vwap, trade_count, source_candles,
                    expected_candles, quality_score
             FROM derived_data_bars
             WHERE canonical_symbol = $1 AND timeframe = $2 AND deleted_at IS NULL AND NOT is_partial
               AND ($3::timestamptz IS NULL OR ts_utc >= $3) AND ($4::timestamptz IS NULL OR ts_utc < $4)",
            &[&symbol, &tf.as_str(), &from, &to],
        )
        .await
        .with_context(|| format!("reading stored {symbol} {tf} bars"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let derived = DerivedBar {
                bar: Bar::from_row(r),
                source_candles: r.get(8),
                expected_candles: r.get(9),
                quality: r.get(10),
            };
            (derived.bar.ts, BarValues::from(derived))
        })
        .collect())
}

/// Recompute every bucket of `sources` (time order).
fn buckets(
    cal: Calendar,
    tf: Timeframe,
    sources: &[Bar],
) -> BTreeMap<DateTime<Utc>, Option<BarValues>> {
    let mut grouped: BTreeMap<DateTime<Utc>, Vec<&Bar>> = BTreeMap::new();
    for b in sources {
        grouped
            .entry(bucket_start(cal, tf, b.ts))
            .or_default()
            .push(b);
    }
    grouped
        .into_iter()
        .map(|(start, bars)| (start, recompute(cal, tf, start, &bars)))
        .collect()
}

async fn calendar_of(client: &Client, symbol: &str) -> Result<Calendar> {
    let class: Option<String> = client
        .query_opt(
            "SELECT asset_class FROM core_asset_registry_all WHERE canonical_symbol = $1",
            &[&symbol],
        )
        .await
        .context("reading the registry")?
        .map(|r| r.get(0));
    Ok(Calendar::for_asset_class(
        class.as_deref().unwrap_or("crypto"),
    ))
}

fn compare(
    symbol: &str,
    tf: Timeframe,
    ts: DateTime<Utc>,
    stored: Option<&BarValues>,
    recomputed: Option<&BarValues>,
) -> Option<BarDifference> {
    let (kind, fields) = match (stored, recomputed) {
        (Some(s), Some(r)) => {
            let fields = differing_fields(s, r);
            if fields.is_empty() {
                return None;
            }
            ("changed", fields)
        }
        (Some(_), None) => ("extra", Vec::new()),
        (None, Some(_)) => ("missing", Vec::new()),
        (None, None) => return None,
    };
    Some(BarDifference {
        symbol: symbol.to_string(),
        timeframe: tf.as_str().to_string(),
        ts_utc: ts,
        kind: kind.into(),
        fields,
        stored: stored.cloned(),
        recomputed: recomputed.cloned(),
    })
}

/// Run the deep check.
pub async fn deep(client: &Client, settings: &DeepSettings) -> Result<DeepReport> {
    match &settings.symbol {
        Some(symbol) => whole_symbol(client, symbol).await,
        None => sample(client, settings.sample).await,
    }
}

async fn sample(client: &Client, n: i64) -> Result<DeepReport> {
    let rows = client
        .query(
            "SELECT canonical_symbol, timeframe, ts_utc FROM derived_data_bars
             WHERE deleted_at IS NULL AND NOT is_partial ORDER BY random() LIMIT $1",
            &[&n.max(0)],
        )
        .await
        .context("drawing a sample of stored bars")?;
    let mut calendars: BTreeMap<String, Calendar> = BTreeMap::new();
    let mut differences = Vec::new();
    for r in &rows {
        let (symbol, tf_name, ts): (String, String, DateTime<Utc>) = (r.get(0), r.get(1), r.get(2));
        let Ok(tf) = Timeframe::parse_derived(&tf_name) else {
            continue;
        };
        let Some(source) = tf.source() else { continue };
        let cal = match calendars.get(&symbol) {
            Some(c) => *c,
            None => {
                let c = calendar_of(client, &symbol).await?;
                calendars.insert(symbol.clone(), c);
                c
            }
        };
        let end = bucket_end(cal, tf, ts);
        let sources = read_bars(client, &symbol, source, ts, end).await?;
        let recomputed = buckets(cal, tf, &sources).remove(&ts).flatten();
        let stored = stored(client, &symbol, tf, Some(ts), Some(end)).await?;
        differences.extend(compare(
            &symbol,
            tf,
            ts,
            stored.get(&ts),
            recomputed.as_ref(),
        ));
    }
    Ok(DeepReport {
        mode: "sample".into(),
        bars_checked: rows.len(),
        differences,
    })
}

async fn whole_symbol(client: &Client, symbol: &Symbol) -> Result<DeepReport> {
    let symbol = symbol.as_str();
    let cal = calendar_of(client, symbol).await?;
    let mut checked = 0;
    let mut differences = Vec::new();
    for tf in Timeframe::LADDER {
        let Some(source) = tf.source() else { continue };
        let task = client
            .query_opt(
                "SELECT agg_start_utc, last_agg_bar_ts_utc FROM data_agg_state
                 WHERE canonical_symbol = $1 AND timeframe = $2",
                &[&symbol, &tf.as_str()],
            )
            .await
            .context("reading the task")?;
        let (start, cursor): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = match &task {
            Some(r) => (r.get(0), r.get(1)),
            None => (None, None),
        };
        let stored = stored(client, symbol, tf, None, None).await?;
        let first_stored = stored.keys().next().copied();
        let last_stored_end = stored.keys().next_back().map(|t| bucket_end(cal, tf, *t));
        let bootstrap = start.map(|s| first_bucket_at_or_after(cal, tf, s));
        let from = [first_stored, bootstrap].into_iter().flatten().min();
        let to = [cursor, last_stored_end].into_iter().flatten().max();
        let (Some(from), Some(to)) = (from, to) else {
            continue;
        };
        let sources = read_bars(client, symbol, source, from, to).await?;
        let recomputed = buckets(cal, tf, &sources);
        checked += stored.len();
        for (ts, s) in &stored {
            let r = recomputed.get(ts).and_then(|r| r.as_ref());
            differences.extend(compare(symbol, tf, *ts, Some(s), r));
        }
        // A bucket the task has passed whose sources make a bar must hold one.
        if let (Some(boot), Some(cursor)) = (bootstrap, cursor) {
            for (ts, r) in &recomputed {
                if *ts >= boot && bucket_end(cal, tf, *ts) <= cursor && !stored.contains_key(ts) {
                    differences.extend(compare(symbol, tf, *ts, None, r.as_ref()));
                }
            }
        }
    }
    Ok(DeepReport {
        mode: format!("symbol {symbol}"),
        bars_checked: checked,
        differences,
    })
}
