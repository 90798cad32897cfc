//! `barkeep sync`: tasks from the registry.

use std::process::ExitCode;

use anyhow::Result;
use chrono::{DateTime, Utc};
use clap::Args;

use super::{print_json, Global};
use crate::model::calendar::parse_instant;
use crate::model::Env;
use crate::ops::counted;
use crate::tasks;

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Which registry flag decides what is active: prod (`active`), dev or test (`test_active`).
    #[arg(long, default_value = "prod")]
    pub env: Env,
    /// First bucket of new tasks (RFC 3339 or a date). Without it each new
    /// asset's tasks start at its first stored 1m bar, so no stored bar is
    /// left out (2025-07-01 for an asset with no bar yet).
    #[arg(long, value_parser = parse_instant)]
    pub start: Option<DateTime<Utc>>,
    /// Seconds new 5m tasks wait for a quiet feed before finalizing a bucket
    /// without its last minute (a bucket is final at once when 1m data at or
    /// after its last minute exists); default 120.
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..=86_400))]
    pub delay: Option<i32>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(global: &Global, args: SyncArgs) -> Result<ExitCode> {
    let client = global.database().await?.connect().await?;
    let outcome = tasks::sync_reporting_starts(&client, args.env, args.start, args.delay).await?;
    if args.json {
        print_json(&outcome)?;
        return Ok(ExitCode::SUCCESS);
    }
    let report = &outcome.report;
    println!(
        "synced {} for {}: {} created, {} re-enabled, {} disabled",
        counted(report.tasks_total, "task"),
        args.env,
        report.tasks_created,
        report.tasks_enabled,
        report.tasks_disabled
    );
    let ts = |t: Option<DateTime<Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%MZ").to_string())
            .unwrap_or_else(|| "-".into())
    };
    for n in &outcome.new_symbols {
        if n.bars_left_out > 0 {
            eprintln!(
                "warning: {}: --start {} leaves out {} stored 1m bars (from {}); they will not be aggregated",
                n.symbol,
                ts(n.agg_start_utc),
                n.bars_left_out,
                ts(n.first_1m)
            );
        } else if n.first_1m.is_none() {
            println!(
                "{}: no 1m bars yet, tasks start at {}; load its data before `sync`, or give --start",
                n.symbol,
                ts(n.agg_start_utc)
            );
        } else if args.start.is_none() {
            println!(
                "{}: tasks start at its first 1m bar, {} (each timeframe at its bucket holding it)",
                n.symbol,
                ts(n.first_1m)
            );
        } else {
            println!("{}: tasks start at {}", n.symbol, ts(n.agg_start_utc));
        }
    }
    if report.tasks_total == 0 {
        println!(
            "no active asset in the registry: add one with `barkeep assets add SYMBOL --class fx`"
        );
    }
    Ok(ExitCode::SUCCESS)
}
