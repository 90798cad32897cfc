//! `barkeep demo`: the whole job on the shipped sample, and a table of
//! bars and quality per timeframe.

use std::process::ExitCode;

use anyhow::Result;
use chrono::{DateTime, Utc};

use super::Global;
use crate::demo::{self, DEMO_START, SAMPLE_NAME};

/// Arguments of `barkeep demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Write the demo (AUDUSD, its bars and tasks) into the database that
    /// DATABASE_URL names; without this flag the demo refuses a database
    /// that comes from the environment (`--database-url` on the command
    /// line is explicit enough).
    #[arg(long)]
    pub use_database_url: bool,
}

pub async fn run(global: &Global, args: DemoArgs) -> Result<ExitCode> {
    if global.database_url_from_env && !args.use_database_url {
        return Err(crate::error::UsageError(
            "the demo registers AUDUSD and writes bars and tasks, and DATABASE_URL is set: \
             pass --use-database-url (or --database-url URL) to write into that database, \
             or unset DATABASE_URL to use the embedded cluster"
                .into(),
        )
        .into());
    }
    let database = global.database().await?;
    println!("demo: {}", database.describe);
    let report = demo::run(&database, &global.home).await?;
    println!(
        "demo: migrations applied now: {}",
        report.migrations_applied
    );
    let t = &report.ingest;
    if t.loaded == 0 && t.revised == 0 {
        println!(
            "demo: ingest of {SAMPLE_NAME}: nothing new ({} rows read, all {} already loaded)",
            t.rows_read, t.duplicates
        );
    } else {
        println!(
            "demo: ingest of {SAMPLE_NAME}: {} rows read, {} loaded, {} revised, {} duplicates, {} quarantined",
            t.rows_read, t.loaded, t.revised, t.duplicates, t.quarantined
        );
    }
    println!(
        "demo: tasks: {} created, {} in all (from {DEMO_START})",
        report.tasks_created, report.tasks_total
    );
    println!(
        "demo: worker ran {} task runs and wrote {} bars this time",
        report.task_runs, report.bars_written
    );
    println!();
    println!(
        "{:<4} {:>6} {:>7} {:>6}  {:<20}  {:<20}",
        "tf", "bars", "good%", "poor", "first", "last"
    );
    let fmt = |t: Option<DateTime<Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%MZ").to_string())
            .unwrap_or_default()
    };
    for l in &report.timeframes {
        let pct = if l.bars > 0 {
            100.0 * l.good as f64 / l.bars as f64
        } else {
            0.0
        };
        println!(
            "{:<4} {:>6} {:>6.1}% {:>6}  {:<20}  {:<20}",
            l.timeframe,
            l.bars,
            pct,
            l.poor,
            fmt(l.first),
            fmt(l.last)
        );
    }
    println!();
    println!("demo: done. Try `barkeep export AUDUSD 1h` or `barkeep db status`.");
    Ok(ExitCode::SUCCESS)
}
