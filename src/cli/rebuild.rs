//! `barkeep rebuild SYMBOL [TIMEFRAME] [--from] [--to]`: the arguments,
//! the call of the rebuild service and its report.

use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use super::Global;
use crate::engine::late::LateCounts;
use crate::model::{Symbol, Timeframe};
use crate::rebuild::{rebuild, RebuildSettings};

/// Arguments of `barkeep rebuild`.
#[derive(Debug, clap::Args)]
pub struct RebuildArgs {
    /// Registered symbol, e.g. EURUSD.
    pub symbol: Symbol,
    /// Lowest timeframe to rebuild, 5m (default) to 1w; every timeframe
    /// built from it follows.
    #[arg(value_parser = Timeframe::parse_derived)]
    pub timeframe: Option<Timeframe>,
    /// First instant (default: the symbol's first 1m bar at or after the
    /// task's start); earlier than the task's start moves the start of every
    /// task of the symbol back.
    #[arg(long, value_parser = crate::model::calendar::parse_instant)]
    pub from: Option<DateTime<Utc>>,
    /// End, exclusive (default: how far the task has aggregated).
    #[arg(long, value_parser = crate::model::calendar::parse_instant)]
    pub to: Option<DateTime<Utc>>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run `barkeep rebuild`.
pub async fn run(global: &Global, args: RebuildArgs) -> Result<ExitCode> {
    let settings = RebuildSettings {
        symbol: args.symbol,
        timeframe: args.timeframe.unwrap_or(Timeframe::M5),
        from: args.from,
        to: args.to,
    };
    let client = global.database().await?.connect().await?;
    super::require_registered(&client, &settings.symbol).await?;
    let report = rebuild(&client, &settings).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("printing the report")?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "rebuilt {} {} and above from {} to {} as derivation_version {}: {} buckets{}",
        report.symbol,
        report.timeframe,
        report.from.to_rfc3339(),
        report.to.to_rfc3339(),
        report.derivation_version,
        report.buckets_marked,
        if report.start_moved {
            " (task start moved back)"
        } else {
            ""
        }
    );
    for (tf, c) in &report.late.timeframes {
        println!(
            "  {tf:>4} {:>8} buckets: {} unchanged, {} changed, {} created, {} deleted",
            c.buckets, c.bars_unchanged, c.bars_changed, c.bars_created, c.bars_deleted
        );
    }
    // A bar recomputed equal keeps its row: only the changed ones left a
    // retired version behind.
    let total = |f: fn(&LateCounts) -> u64| report.late.timeframes.values().map(f).sum::<u64>();
    println!(
        "{} bars unchanged, {} changed",
        total(|c| c.bars_unchanged),
        total(|c| c.bars_changed)
    );
    Ok(ExitCode::SUCCESS)
}
