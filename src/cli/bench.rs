//! `barkeep bench`: barkeep against plain SQL, side by side, as ratios.

use std::process::ExitCode;

use anyhow::Result;

use super::{print_json, Global};
use crate::bench::{self, BenchConfig, BenchReport};

/// Arguments of `barkeep bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Number of fx symbols.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub symbols: u32,
    /// Weeks of 1-minute bars per symbol (7,200 bars a week).
    #[arg(long, default_value_t = 26, value_parser = clap::value_parser!(i64).range(1..=520))]
    pub weeks: i64,
    /// Scratch database (dropped and created again on the same server).
    #[arg(long, default_value = "barkeep_bench")]
    pub scratch_db: String,
    /// Worker connections for the catch-up.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub concurrency: u32,
    /// Rounds of each pair (the two sides alternate; medians are reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub repeat: u32,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(global: &Global, args: BenchArgs) -> Result<ExitCode> {
    let config = BenchConfig {
        symbols: args.symbols as usize,
        weeks: args.weeks,
        scratch_db: args.scratch_db,
        concurrency: args.concurrency as usize,
        repeat: args.repeat,
    };
    let server = global.database().await?;
    let report = bench::run(&server, &config).await?;
    if args.json {
        print_json(&report)?;
    } else {
        print_report(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_report(report: &BenchReport) {
    println!(
        "barkeep bench: {} fx symbols x {} weeks = {} 1m rows",
        report.symbols, report.weeks, report.rows_1m
    );
    for p in [&report.ingest, &report.catchup] {
        println!(
            "{:<46} barkeep {:>6.2} s ({:>7.0} rows/s)  baseline {:>6.2} s ({:>7.0} rows/s)  baseline/barkeep = {:.2}x (median of {} rounds: {})",
            p.what,
            p.barkeep_seconds,
            p.rows as f64 / p.barkeep_seconds.max(1e-9),
            p.baseline_seconds,
            p.rows as f64 / p.baseline_seconds.max(1e-9),
            p.speedup,
            p.rounds,
            p.speedups.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(" ")
        );
    }
    let bars: Vec<String> = report
        .bars_by_timeframe
        .iter()
        .map(|(tf, n)| format!("{tf}={n}"))
        .collect();
    println!(
        "barkeep bars: {}   baseline 5m bars: {}",
        bars.join(" "),
        report.baseline_5m_bars
    );
}
