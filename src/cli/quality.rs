//! `barkeep quality`: the checklist's daily quality query per symbol and
//! timeframe, with minute coverage; exit 1 when anything is below the threshold.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::Global;
use crate::model::{Symbol, Timeframe};
use crate::ops::quality::{self, QualitySettings, Since};

/// Arguments of `barkeep quality`.
#[derive(Debug, Args)]
pub struct QualityArgs {
    /// Window of bars: a duration back from now (24h, 7d), a date, or `all`.
    #[arg(long, default_value = "24h", value_parser = Since::parse)]
    pub since: Since,
    /// Only this symbol.
    #[arg(long)]
    pub symbol: Option<Symbol>,
    /// Only this timeframe.
    #[arg(long, value_parser = Timeframe::parse_derived)]
    pub timeframe: Option<Timeframe>,
    /// Flag percentages below this.
    #[arg(long, default_value_t = 90.0)]
    pub threshold: f64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run `barkeep quality`.
pub async fn run(global: &Global, args: QualityArgs) -> Result<ExitCode> {
    let client = global.database().await?.connect().await?;
    if let Some(symbol) = &args.symbol {
        super::require_registered(&client, symbol).await?;
    }
    let settings = QualitySettings {
        since: args.since,
        symbol: args.symbol,
        timeframe: args.timeframe,
        threshold_pct: args.threshold,
    };
    let report = quality::quality(&client, &settings).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if report.lines.is_empty() {
        let window = report
            .from
            .map(|f| format!("since {}", f.format("%Y-%m-%d %H:%MZ")))
            .unwrap_or_else(|| "at all".into());
        // History loaded from files ends long before now: say where it ends.
        let newest = quality::newest_1m_and_now(&client).await?.0;
        match newest {
            Some(n) if report.from.is_some_and(|f| n < f) => println!(
                "no derived bars {window}: the newest 1m bar is {}; try `--since {}` or `--since all`",
                n.format("%Y-%m-%d %H:%MZ"),
                (n - chrono::Duration::days(1)).format("%Y-%m-%d")
            ),
            _ => println!(
                "no derived bars {window}; try `--since all`, or run `barkeep run --once` to aggregate"
            ),
        }
    } else {
        println!(
            "{:<10} {:<4} {:>7} {:>7} {:>6} {:>9} {:>10}",
            "SYMBOL", "TF", "BARS", "GOOD", "POOR", "QUALITY%", "MINUTES%"
        );
        for l in &report.lines {
            let mut flags = Vec::new();
            if l.low_quality {
                flags.push(format!(
                    "quality below threshold (the minutes allow {:.1}%)",
                    l.minutes_allow_good_pct
                ));
            }
            if l.low_coverage {
                flags.push("minutes missing".to_string());
            }
            println!(
                "{:<10} {:<4} {:>7} {:>7} {:>6} {:>9.1} {:>10.1}  {}",
                l.symbol,
                l.timeframe,
                l.total_bars,
                l.good_bars,
                l.poor_bars,
                l.quality_pct,
                l.minute_coverage_pct,
                if flags.is_empty() {
                    String::new()
                } else {
                    format!("<- {}", flags.join(", "))
                }
            );
        }
    }
    Ok(if report.flagged() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
