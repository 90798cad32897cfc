//! `barkeep sync`: tasks from the registry.

use std::process::ExitCode;

use anyhow::Result;
use chrono::{DateTime, Utc};
use clap::Args;

use super::{print_json, Global};
use crate::calendar::parse_instant;
use crate::tasks::{self, Env};

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Which registry flag decides what is active: prod (`active`), dev or test (`test_active`).
    #[arg(long, default_value = "prod")]
    pub env: Env,
    /// First bucket of new tasks (RFC 3339 or a date).
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
    let report = tasks::sync(&client, args.env, args.start, args.delay).await?;
    if args.json {
        print_json(&report)?;
    } else {
        println!(
            "synced {} tasks for {}: {} created, {} re-enabled, {} disabled",
            report.tasks_total,
            args.env,
            report.tasks_created,
            report.tasks_enabled,
            report.tasks_disabled
        );
    }
    Ok(ExitCode::SUCCESS)
}
