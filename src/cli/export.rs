//! `barkeep export`: bars as CSV or JSON on standard output.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};

use super::Global;
use crate::export::{self, write_csv, ExportRequest};
use crate::model::calendar::parse_instant;
use crate::model::{Symbol, Timeframe};

/// Arguments of `barkeep export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Canonical symbol, e.g. EURUSD.
    pub symbol: Symbol,
    /// 1m, 5m, 15m, 1h, 4h, 1d or 1w.
    pub timeframe: Timeframe,
    /// First bar start to include (RFC 3339, `YYYY-MM-DD` or `YYYY-MM-DD HH:MM`, UTC).
    #[arg(long, value_parser = parse_instant)]
    pub from: Option<DateTime<Utc>>,
    /// Bars starting before this instant only.
    #[arg(long, value_parser = parse_instant)]
    pub to: Option<DateTime<Utc>>,
    /// Output format: csv or json.
    #[arg(long, default_value = "csv", value_parser = ["csv", "json"])]
    pub format: String,
    /// Append the unfinished current bucket, computed from 1m bars.
    #[arg(long, conflicts_with = "as_of")]
    pub partial: bool,
    /// The bars as they stood at this instant (earlier versions of bars
    /// corrected since): reproduces an earlier read.
    #[arg(long, value_parser = parse_instant)]
    pub as_of: Option<DateTime<Utc>>,
}

pub async fn run(global: &Global, args: ExportArgs) -> Result<ExitCode> {
    let client = global.database().await?.connect().await?;
    let req = ExportRequest {
        symbol: args.symbol,
        timeframe: args.timeframe,
        from: args.from,
        to: args.to,
        partial: args.partial,
        as_of: args.as_of,
    };
    let bars = export::export(&client, &req).await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match args.format.as_str() {
        "csv" => write_csv(&bars, &mut out)?,
        "json" => {
            serde_json::to_writer_pretty(&mut out, &bars).context("writing JSON")?;
            writeln!(out).context("writing JSON")?;
            out.flush().context("flushing the output")?;
        }
        other => bail!("unknown format {other:?}"),
    }
    Ok(ExitCode::SUCCESS)
}
