//! `barkeep export`: print the stored live bars of a symbol and timeframe
//! (1m from `data_bars`) as CSV or JSON, optionally followed by the open
//! bucket computed on the fly (`is_partial = true`, never stored), with the
//! one definition of [`crate::bars::open_bucket`] that `/api/bars` uses too.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use crate::assets::{self, Symbol};
use crate::bars::{self, BarRecord};
use crate::calendar::{Calendar, Timeframe};
use crate::cli::Global;

/// Output formats of `barkeep export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Json,
}

/// Arguments of `barkeep export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Canonical symbol, e.g. EURUSD.
    pub symbol: Symbol,
    /// 1m, 5m, 15m, 1h, 4h, 1d or 1w.
    pub timeframe: Timeframe,
    /// First bar start to include (RFC 3339, `YYYY-MM-DD` or `YYYY-MM-DD HH:MM`, UTC).
    #[arg(long, value_parser = crate::calendar::parse_instant)]
    pub from: Option<DateTime<Utc>>,
    /// Bars starting before this instant only.
    #[arg(long, value_parser = crate::calendar::parse_instant)]
    pub to: Option<DateTime<Utc>>,
    #[arg(long, value_enum, default_value = "csv")]
    pub format: Format,
    /// Append the open (unfinished) bucket, built from the ladder's source
    /// bars and flagged `is_partial` (see `crate::bars`); 1m has none.
    #[arg(long)]
    pub partial: bool,
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

/// Run `barkeep export`.
pub async fn run(global: &Global, args: ExportArgs) -> Result<ExitCode> {
    let database = global.database().await?;
    let client = database.connect().await?;
    let class = assets::class_of(&client, &args.symbol).await?;
    let cal = Calendar::for_asset_class(&class);
    let symbol = args.symbol.as_str();
    let range = bars::Range {
        from: args.from,
        to: args.to,
        limit: None,
    };
    let mut rows = bars::stored(&client, symbol, args.timeframe, range).await?;
    if args.partial {
        let open = bars::open_bucket(&client, symbol, cal, args.timeframe, Utc::now()).await?;
        if let Some(p) = open {
            if args.from.is_none_or(|f| p.ts_utc >= f) && args.to.is_none_or(|t| p.ts_utc < t) {
                rows.push(p);
            }
        }
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match args.format {
        Format::Csv => write_csv(&rows, &mut out)?,
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &rows).context("writing JSON")?;
            writeln!(out).context("writing JSON")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
