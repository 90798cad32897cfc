//! `barkeep demo`: the whole job on the embedded database with the shipped
//! AUDUSD sample — migrate, register, ingest, sync tasks from the sample's
//! start, catch every timeframe up, and print bars and quality per
//! timeframe. Running it again loads nothing new and says so.

use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

use anyhow::{Context, Result};

use crate::assets::{self, AssetClass, Symbol};
use crate::cli::Global;
use crate::ingest::{self, IngestOptions};
use crate::{migrate, tasks, worker};

/// The shipped sample, embedded so the demo runs from any folder.
const SAMPLE: &[u8] = include_bytes!("../data/DAT_ASCII_AUDUSD_M1_202306.csv");
const SAMPLE_NAME: &str = "DAT_ASCII_AUDUSD_M1_202306.csv";
/// First bucket of the demo's tasks: the sample starts on 2023-06-01.
const DEMO_START: &str = "2023-06-01T00:00:00Z";

/// Arguments of `barkeep demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {}

/// Bars and quality of one timeframe.
#[derive(Debug)]
struct TimeframeLine {
    timeframe: String,
    bars: i64,
    good: i64,
    poor: i64,
    first: Option<chrono::DateTime<chrono::Utc>>,
    last: Option<chrono::DateTime<chrono::Utc>>,
}

/// Run the demo.
pub async fn run(global: &Global, _args: DemoArgs) -> Result<ExitCode> {
    let database = global.database().await?;
    let mut client = database.connect().await?;
    println!("demo: database {}", database.describe);
    let applied = migrate::up(&mut client, None).await?;
    println!("demo: migrations applied now: {}", applied.len());

    let symbol = Symbol::parse("AUDUSD")?;
    assets::add(
        &client,
        &symbol,
        AssetClass::Fx,
        Some("Australian dollar / US dollar"),
        true,
    )
    .await?;

    let sample = write_sample(&global.home)?;
    let opts = IngestOptions::new(symbol.clone());
    let summary = ingest::ingest_files(&mut client, std::slice::from_ref(&sample), &opts).await?;
    let t = &summary.total;
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

    let start = tasks::parse_start(DEMO_START)?;
    let synced = tasks::sync(&client, tasks::Env::Prod, start, None).await?;
    println!(
        "demo: tasks: {} created, {} in all (from {DEMO_START})",
        synced.tasks_created, synced.tasks_total
    );

    let config = worker::WorkerConfig::catch_up(2);
    let run = worker::run_worker(&database, &config, CancellationToken::new()).await?;
    let written: u64 = run.bars_created.values().sum();
    println!(
        "demo: worker ran {} task runs and wrote {written} bars this time",
        run.tasks_run
    );

    let lines = timeframe_lines(&client, &symbol).await?;
    println!();
    println!(
        "{:<4} {:>6} {:>7} {:>6}  {:<20}  {:<20}",
        "tf", "bars", "good%", "poor", "first", "last"
    );
    for l in &lines {
        let pct = if l.bars > 0 {
            100.0 * l.good as f64 / l.bars as f64
        } else {
            0.0
        };
        let fmt = |t: Option<chrono::DateTime<chrono::Utc>>| {
            t.map(|t| t.format("%Y-%m-%d %H:%MZ").to_string())
                .unwrap_or_default()
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

/// Write the embedded sample under the barkeep home so ingest can name it.
fn write_sample(home: &std::path::Path) -> Result<PathBuf> {
    let dir = home.join("sample");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(SAMPLE_NAME);
    std::fs::write(&path, SAMPLE).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

async fn timeframe_lines(
    client: &tokio_postgres::Client,
    symbol: &Symbol,
) -> Result<Vec<TimeframeLine>> {
    let rows = client
        .query(
            "SELECT timeframe, count(*), count(*) FILTER (WHERE quality_score >= 1),
                    count(*) FILTER (WHERE quality_score <= 0), min(ts_utc), max(ts_utc)
             FROM derived_data_bars
             WHERE canonical_symbol = $1 AND deleted_at IS NULL
             GROUP BY timeframe
             ORDER BY array_position(ARRAY['5m','15m','1h','4h','1d','1w'], timeframe)",
            &[&symbol.as_str()],
        )
        .await
        .context("summarising derived bars")?;
    Ok(rows
        .iter()
        .map(|r| TimeframeLine {
            timeframe: r.get(0),
            bars: r.get(1),
            good: r.get(2),
            poor: r.get(3),
            first: r.get(4),
            last: r.get(5),
        })
        .collect())
}
