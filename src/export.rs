//! Reading bars out: the stored live bars of a symbol and timeframe (1m
//! from `data_bars`), optionally followed by the unfinished current bucket
//! computed on the fly (`is_partial = true`, never stored), and CSV output.

use std::io::Write;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use crate::assets::{self, Symbol};
use crate::calendar::{bucket_end, bucket_start, Calendar, Timeframe};
use crate::engine::fold::{combine, quality};
use crate::engine::source::read_bars;

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    pub symbol: Symbol,
    pub timeframe: Timeframe,
    /// First bar start to include.
    pub from: Option<DateTime<Utc>>,
    /// Bars starting before this instant only.
    pub to: Option<DateTime<Utc>>,
    /// Append the unfinished current bucket.
    pub partial: bool,
}

/// One exported bar.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ExportBar {
    pub ts_utc: DateTime<Utc>,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub vol: f64,
    pub vwap: Option<f64>,
    pub trade_count: Option<i64>,
    pub source_timeframe: Option<String>,
    pub source_candles: Option<i32>,
    pub expected_candles: Option<i32>,
    pub quality_score: Option<i16>,
    pub is_partial: bool,
}

/// Stored bars of `symbol` `tf` with start in [from, to), in time order.
pub async fn stored_bars(
    client: &Client,
    symbol: &str,
    tf: Timeframe,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<Vec<ExportBar>> {
    let sql = if tf == Timeframe::M1 {
        "SELECT ts_utc, open, high, low, close, vol, vwap, trade_count,
                NULL::text, NULL::int, NULL::int, NULL::smallint, false
         FROM data_bars
         WHERE canonical_symbol = $1 AND timeframe = $2
           AND ($3::timestamptz IS NULL OR ts_utc >= $3) AND ($4::timestamptz IS NULL OR ts_utc < $4)
         ORDER BY ts_utc"
    } else {
        "SELECT ts_utc, open, high, low, close, vol, vwap, trade_count,
                source_timeframe, source_candles, expected_candles, quality_score, is_partial
         FROM derived_data_bars
         WHERE canonical_symbol = $1 AND timeframe = $2 AND deleted_at IS NULL
           AND ($3::timestamptz IS NULL OR ts_utc >= $3) AND ($4::timestamptz IS NULL OR ts_utc < $4)
         ORDER BY ts_utc"
    };
    let rows = client
        .query(sql, &[&symbol, &tf.as_str(), &from, &to])
        .await
        .with_context(|| format!("reading {symbol} {tf} bars"))?;
    Ok(rows
        .iter()
        .map(|r| ExportBar {
            ts_utc: r.get(0),
            open: r.get(1),
            high: r.get(2),
            low: r.get(3),
            close: r.get(4),
            vol: r.get(5),
            vwap: r.get(6),
            trade_count: r.get(7),
            source_timeframe: r.get(8),
            source_candles: r.get(9),
            expected_candles: r.get(10),
            quality_score: r.get(11),
            is_partial: r.get(12),
        })
        .collect())
}

/// The bucket holding the newest 1m bar, when it has no stored bar yet:
/// combined from its 1m bars, flagged partial.
pub async fn partial_bar(
    client: &Client,
    symbol: &str,
    cal: Calendar,
    tf: Timeframe,
    to: Option<DateTime<Utc>>,
) -> Result<Option<ExportBar>> {
    let newest: Option<DateTime<Utc>> = client
        .query_one(
            "SELECT max(ts_utc) FROM data_bars
             WHERE canonical_symbol = $1 AND timeframe = '1m' AND ($2::timestamptz IS NULL OR ts_utc < $2)",
            &[&symbol, &to],
        )
        .await
        .with_context(|| format!("finding the newest {symbol} 1m bar"))?
        .get(0);
    let Some(newest) = newest else {
        return Ok(None);
    };
    let start = bucket_start(cal, tf, newest);
    if tf != Timeframe::M1 {
        let stored = client
            .query_opt(
                "SELECT 1 FROM derived_data_bars WHERE canonical_symbol = $1 AND timeframe = $2
                   AND ts_utc = $3 AND deleted_at IS NULL",
                &[&symbol, &tf.as_str(), &start],
            )
            .await
            .with_context(|| format!("checking the {symbol} {tf} bar at {start}"))?;
        if stored.is_some() {
            return Ok(None);
        }
    }
    let end = bucket_end(cal, tf, start);
    let sources = read_bars(client, symbol, Timeframe::M1, start, end).await?;
    let Some((bar, candles)) = combine(start, &sources) else {
        return Ok(None);
    };
    let expected = ((end - start).num_minutes()) as i32;
    Ok(Some(ExportBar {
        ts_utc: bar.ts,
        open: bar.open,
        high: bar.high,
        low: bar.low,
        close: bar.close,
        vol: bar.vol,
        vwap: bar.vwap,
        trade_count: bar.trade_count,
        source_timeframe: Some(Timeframe::M1.as_str().to_string()),
        source_candles: Some(candles),
        expected_candles: Some(expected),
        quality_score: quality(candles, expected),
        is_partial: true,
    }))
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(|x| x.to_string()).unwrap_or_default()
}

/// Write bars as CSV with a header.
pub fn write_csv(bars: &[ExportBar], mut out: impl Write) -> Result<()> {
    writeln!(out, "ts_utc,open,high,low,close,vol,vwap,trade_count,source_timeframe,source_candles,expected_candles,quality_score,is_partial")
        .context("writing the CSV header")?;
    for b in bars {
        writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{}",
            b.ts_utc.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            b.open,
            b.high,
            b.low,
            b.close,
            b.vol,
            opt(&b.vwap),
            opt(&b.trade_count),
            opt(&b.source_timeframe),
            opt(&b.source_candles),
            opt(&b.expected_candles),
            opt(&b.quality_score),
            b.is_partial
        )
        .context("writing a CSV row")?;
    }
    out.flush().context("flushing the output")
}

/// The bars `req` asks for, in time order.
pub async fn export(client: &Client, req: &ExportRequest) -> Result<Vec<ExportBar>> {
    let class = assets::class_of(client, &req.symbol).await?;
    let cal = Calendar::for_asset_class(&class);
    let symbol = req.symbol.as_str();
    let mut bars = stored_bars(client, symbol, req.timeframe, req.from, req.to).await?;
    if req.partial {
        if let Some(p) = partial_bar(client, symbol, cal, req.timeframe, req.to).await? {
            if req.from.is_none_or(|f| p.ts_utc >= f) {
                bars.push(p);
            }
        }
    }
    Ok(bars)
}
