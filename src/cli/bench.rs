//! `barkeep bench`: barkeep against plain SQL, side by side, as ratios.

use std::process::ExitCode;

use anyhow::{Context, Result};

use super::{print_json, Global};
use crate::bench::freshness::{self, FreshnessConfig, FreshnessReport};
use crate::bench::{self, BenchConfig, BenchReport, PairKind};
use crate::model::AssetClass;

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
    /// Pairs to time, comma-separated (sql-face needs catchup).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "ingest,merge,tracking,catchup,sql-face"
    )]
    pub pairs: Vec<PairArg>,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub what: Option<BenchWhat>,
}

/// A pair of `--pairs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PairArg {
    /// `barkeep ingest` against plain COPY.
    Ingest,
    /// `barkeep ingest` of files already stored (the merge path) against plain COPY.
    Merge,
    /// Ingest with the change-tracking trigger against without.
    Tracking,
    /// The worker's full ladder against plain SQL 5m, and the floor.
    Catchup,
    /// `catchup_aggregation_range` building 5m against plain SQL 5m.
    SqlFace,
}

impl From<PairArg> for PairKind {
    fn from(p: PairArg) -> Self {
        match p {
            PairArg::Ingest => PairKind::Ingest,
            PairArg::Merge => PairKind::Merge,
            PairArg::Tracking => PairKind::Tracking,
            PairArg::Catchup => PairKind::Catchup,
            PairArg::SqlFace => PairKind::SqlFace,
        }
    }
}

/// Benchmarks other than the default ingest and catch-up pairs.
#[derive(Debug, clap::Subcommand)]
pub enum BenchWhat {
    /// Latency of bars under a real-time feed, and the worker's CPU and memory.
    Freshness(FreshnessArgs),
}

/// Arguments of `barkeep bench freshness`.
#[derive(Debug, clap::Args)]
pub struct FreshnessArgs {
    /// Symbols fed (six tasks each).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=9999))]
    pub symbols: u32,
    /// Minutes of wall time to feed.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=240))]
    pub minutes: u32,
    /// Each minute's bars land this many seconds after the minute ends.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(0..=50))]
    pub feed_lag_seconds: u64,
    /// The worker's lanes (`run --concurrency`).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub concurrency: u32,
    /// Asset class of the symbols, which picks their calendar (fx: 4h and
    /// 1d buckets end at 17:00 New York, crypto: at UTC midnight).
    #[arg(long, default_value = "crypto", value_parser = parse_class)]
    pub class: AssetClass,
    /// Hours of 1m bars loaded before the feed starts (24 gives the first
    /// 1d bar enough sources to qualify).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=168))]
    pub preload_hours: u32,
    /// Scratch database (dropped and created again on the same server).
    #[arg(long, default_value = "barkeep_freshness")]
    pub scratch_db: String,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_class(s: &str) -> Result<AssetClass, String> {
    s.parse::<AssetClass>().map_err(|e| e.to_string())
}

pub async fn run(global: &Global, args: BenchArgs) -> Result<ExitCode> {
    if let Some(BenchWhat::Freshness(f)) = args.what {
        let config = FreshnessConfig {
            symbols: f.symbols as usize,
            minutes: f.minutes,
            feed_lag_seconds: f.feed_lag_seconds,
            concurrency: f.concurrency as usize,
            class: f.class,
            preload_hours: f.preload_hours,
            scratch_db: f.scratch_db,
        };
        let server = global.database().await?;
        let report = freshness::measure(&server, &config).await?;
        if f.json {
            print_json(&report)?;
        } else {
            print_freshness(&report);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let config = BenchConfig {
        symbols: args.symbols as usize,
        weeks: args.weeks,
        scratch_db: args.scratch_db,
        concurrency: args.concurrency as usize,
        repeat: args.repeat,
        pairs: args.pairs.iter().map(|&p| p.into()).collect(),
        worker_exe: std::env::current_exe().context("finding the barkeep binary")?,
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
    println!("{}", report.machine.summary());
    let secs = |v: &[f64]| {
        v.iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    for p in [
        &report.ingest,
        &report.merge,
        &report.tracking,
        &report.catchup,
        &report.sql_face,
    ]
    .into_iter()
    .flatten()
    {
        println!(
            "{:<46} barkeep {:>6.2} s ({:>7.0} rows/s)  baseline {:>6.2} s ({:>7.0} rows/s)  baseline/barkeep = {:.2}x (median of {} rounds: {})",
            p.what,
            p.barkeep_seconds,
            p.rows as f64 / p.barkeep_seconds.max(1e-9),
            p.baseline_seconds,
            p.rows as f64 / p.baseline_seconds.max(1e-9),
            p.speedup,
            p.rounds,
            secs(&p.speedups)
        );
        println!(
            "{:<46} rounds (s): barkeep {}  baseline {}",
            "",
            secs(&p.barkeep_rounds),
            secs(&p.baseline_rounds)
        );
    }
    if let Some(f) = &report.floor {
        println!(
            "floor: binary COPY of the 1m rows {:.2} s + COPY of {} bars into a derived_data_bars twin {:.2} s = {:.2} s (rounds: {})",
            f.read_1m_seconds,
            f.bars,
            f.write_bars_seconds,
            f.floor_seconds,
            secs(&f.floor_rounds)
        );
        println!(
            "catch-up / floor = {:.2}x (median of {} rounds: {})",
            f.barkeep_over_floor,
            f.rounds.len(),
            secs(&f.rounds)
        );
    }
    if let Some(mib) = report.peak_worker_mib {
        println!("peak worker memory: {mib:.1} MiB (largest resident set of `barkeep run --once`)");
    }
    if !report.bars_by_timeframe.is_empty() {
        let bars: Vec<String> = report
            .bars_by_timeframe
            .iter()
            .map(|(tf, n)| format!("{tf}={n}"))
            .collect();
        println!(
            "barkeep bars: {}   baseline 5m bars: {}{}",
            bars.join(" "),
            report.baseline_5m_bars,
            report
                .sql_face_5m_bars
                .map(|n| format!("   SQL face 5m bars: {n} (identical to the worker's)"))
                .unwrap_or_default()
        );
    }
}

fn print_freshness(report: &FreshnessReport) {
    println!(
        "freshness: {} {} symbols ({} tasks), {} minutes fed {} s after each minute, {} lanes; catch-up of the last {} h {:.1} s",
        report.symbols,
        report.class,
        report.tasks,
        report.minutes_fed,
        report.feed_lag_seconds,
        report.concurrency,
        report.preload_hours,
        report.catch_up_seconds
    );
    println!(
        "{:<4} {:>6} {:>9} {:>9} {:>9}  after",
        "tf", "bars", "p50 ms", "p99 ms", "max ms"
    );
    for l in &report.latencies {
        println!(
            "{:<4} {:>6} {:>9.0} {:>9.0} {:>9.0}  {}",
            l.timeframe, l.bars, l.p50_ms, l.p99_ms, l.max_ms, l.after
        );
    }
    println!(
        "worker idle:  {:.2} % CPU over {:.0} s, {:.1} MiB resident",
        report.idle.cpu_percent, report.idle.window_seconds, report.idle.rss_mib
    );
    println!(
        "worker fed:   {:.2} % CPU over {:.0} s, {:.1} MiB resident, peak {:.1} MiB",
        report.under_load.cpu_percent,
        report.under_load.window_seconds,
        report.under_load.rss_mib,
        report.peak_rss_mib
    );
}
