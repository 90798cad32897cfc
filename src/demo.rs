//! `barkeep demo`: the whole job on the embedded database with the shipped
//! AUDUSD sample — migrate, register, ingest, sync tasks from the sample's
//! start, catch every timeframe up, and print bars and quality per
//! timeframe. Running it again loads nothing new and says so.

use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use crate::assets;
use crate::db::Database;
use crate::ingest::{self, Counts, IngestOptions};
use crate::model::{AssetClass, Env, Symbol};
use crate::{migrate, tasks, worker};

/// The shipped sample, embedded so the demo runs from any folder.
const SAMPLE: &[u8] = include_bytes!("../data/DAT_ASCII_AUDUSD_M1_202306.csv");
/// The sample's file name.
pub const SAMPLE_NAME: &str = "DAT_ASCII_AUDUSD_M1_202306.csv";
/// First bucket of the demo's tasks: the sample starts on 2023-06-01.
pub const DEMO_START: &str = "2023-06-01T00:00:00Z";

/// Bars and quality of one timeframe.
#[derive(Debug, serde::Serialize)]
pub struct TimeframeLine {
    pub timeframe: String,
    pub bars: i64,
    pub good: i64,
    pub poor: i64,
    pub first: Option<DateTime<Utc>>,
    pub last: Option<DateTime<Utc>>,
}

/// What one demo run did.
#[derive(Debug, serde::Serialize)]
pub struct DemoReport {
    pub database: String,
    pub migrations_applied: usize,
    pub ingest: Counts,
    pub tasks_created: i32,
    pub tasks_total: i32,
    pub task_runs: u64,
    pub bars_written: u64,
    pub timeframes: Vec<TimeframeLine>,
}

/// Run the demo on `database`; the sample file is written under `home`.
pub async fn run(database: &Database, home: &Path) -> Result<DemoReport> {
    let mut client = database.connect().await?;
    let applied = migrate::up(&mut client, None).await?;

    let symbol = Symbol::parse("AUDUSD")?;
    assets::add(
        &client,
        &symbol,
        AssetClass::Fx,
        Some("Australian dollar / US dollar"),
        true,
    )
    .await?;

    let sample = write_sample(home)?;
    let opts = IngestOptions::new(symbol.clone());
    let summary = ingest::ingest_files(&mut client, std::slice::from_ref(&sample), &opts).await?;

    let start = crate::model::calendar::parse_instant(DEMO_START)?;
    let synced = tasks::sync(&client, Env::Prod, Some(start), None).await?;

    let config = worker::WorkerConfig::catch_up(2);
    let run = worker::run_worker(database, &config, CancellationToken::new()).await?;

    Ok(DemoReport {
        database: database.describe.clone(),
        migrations_applied: applied.len(),
        ingest: summary.total,
        tasks_created: synced.tasks_created,
        tasks_total: synced.tasks_total,
        task_runs: run.tasks_run,
        bars_written: run.bars_created.values().sum(),
        timeframes: timeframe_lines(&client, &symbol).await?,
    })
}

/// Write the embedded sample under the barkeep home so ingest can name it.
fn write_sample(home: &Path) -> Result<PathBuf> {
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
