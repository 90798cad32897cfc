//! Reading bars out: the stored live bars of a symbol and timeframe (1m
//! from `data_bars`), optionally followed by the open bucket computed on the
//! fly (`is_partial = true`, never stored), with the one definition of
//! [`crate::bars::open_bucket`] that `/api/bars` uses too; and CSV output.

use std::io::Write;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use crate::assets;
use crate::bars::{self, BarRecord};
use crate::model::{Calendar, Symbol, Timeframe};

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    pub symbol: Symbol,
    pub timeframe: Timeframe,
    /// First bar start to include.
    pub from: Option<DateTime<Utc>>,
    /// Bars starting before this instant only.
    pub to: Option<DateTime<Utc>>,
    /// Append the open (unfinished) bucket, built from the ladder's source
    /// bars (see [`crate::bars`]); 1m has none.
    pub partial: bool,
    /// The bars as they stood at this instant (None: the live ones).
    pub as_of: Option<DateTime<Utc>>,
}

/// One exported bar (see [`crate::bars`]).
pub type ExportBar = BarRecord;

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
    if req.partial && req.as_of.is_some() {
        anyhow::bail!(
            "the open bucket is live only: ask for partial bars or for bars as of an instant, not both"
        );
    }
    let class = assets::class_of(client, &req.symbol).await?;
    let cal = Calendar::for_asset_class(&class);
    let symbol = req.symbol.as_str();
    let range = bars::Range {
        from: req.from,
        to: req.to,
        limit: None,
    };
    let mut rows = match req.as_of {
        Some(as_of) => bars::as_of(client, symbol, req.timeframe, range, as_of).await?,
        None => bars::stored(client, symbol, req.timeframe, range).await?,
    };
    if req.partial {
        if let Some(p) = bars::open_bucket(client, symbol, cal, req.timeframe, Utc::now()).await? {
            if req.from.is_none_or(|f| p.ts_utc >= f) && req.to.is_none_or(|t| p.ts_utc < t) {
                rows.push(p);
            }
        }
    }
    Ok(rows)
}
