//! `barkeep bench`: barkeep against plain SQL on the same generated data,
//! side by side in one run, reported as ratios.
//!
//! In a scratch database it generates N fx symbols × W weeks of 1-minute
//! bars, then times:
//! 1. ingest: `barkeep ingest` of HistData files against a plain `COPY` of
//!    the same rows into a table with the same unique key;
//! 2. catch-up: the barkeep worker building the whole default ladder from
//!    scratch against one plain `INSERT … SELECT … GROUP BY` that builds only
//!    the 5m bars (first/last through `array_agg … ORDER BY`).

use std::path::PathBuf;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use crate::assets::{self, AssetClass, Symbol};
use crate::db::{quote_ident, Database};
use crate::ingest::{self, IngestOptions};
use crate::synth::{self, SynthSpec};
use crate::{migrate, tasks, worker};

pub mod freshness;

/// Settings of one benchmark run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Number of fx symbols.
    pub symbols: usize,
    /// Weeks of 1-minute bars per symbol (7,200 bars a week).
    pub weeks: i64,
    /// Scratch database (dropped and created again on the same server).
    pub scratch_db: String,
    /// Worker connections for the catch-up.
    pub concurrency: usize,
    /// Rounds of each pair (the two sides alternate; medians are reported).
    pub repeat: u32,
}

/// One timed pair.
#[derive(Debug, serde::Serialize)]
pub struct Pair {
    pub what: String,
    pub rows: u64,
    pub barkeep_seconds: f64,
    pub baseline_seconds: f64,
    /// Median over rounds of baseline time / barkeep time: above 1 means barkeep is faster.
    pub speedup: f64,
    pub rounds: usize,
    /// baseline / barkeep of each round.
    pub speedups: Vec<f64>,
}

/// Everything `bench` measured.
#[derive(Debug, serde::Serialize)]
pub struct BenchReport {
    pub symbols: usize,
    pub weeks: i64,
    pub rows_1m: u64,
    pub ingest: Pair,
    pub catchup: Pair,
    pub bars_by_timeframe: Vec<(String, i64)>,
    pub baseline_5m_bars: i64,
}

const START: &str = "2025-01-05T22:00:00Z"; // a Sunday evening, fx week open

fn start() -> Result<DateTime<Utc>> {
    Ok(DateTime::parse_from_rfc3339(START)
        .context("parsing the bench start")?
        .with_timezone(&Utc))
}

/// Run the benchmark in a scratch database on the server of `server`.
/// Refuses a scratch name equal to the database `server` points at: the
/// benchmark drops and re-creates its scratch database.
pub async fn run(server: &Database, args: &BenchConfig) -> Result<BenchReport> {
    if server.config().get_dbname() == Some(args.scratch_db.as_str()) {
        bail!(
            "--scratch-db {} is the database barkeep is pointed at; the benchmark drops and \
             re-creates its scratch database, so give another name",
            args.scratch_db
        );
    }
    let scratch = recreate_scratch(server, &args.scratch_db).await?;
    let mut client = scratch.connect().await?;
    migrate::up(&mut client, None).await?;

    let dir = tempdir()?;
    let symbols: Vec<Symbol> = (0..args.symbols)
        .map(|i| Symbol::parse(&format!("BENCH{i:03}")))
        .collect::<Result<_>>()?;
    let mut files = Vec::new();
    let mut rows_1m = 0u64;
    eprintln!(
        "bench: generating {} symbols x {} weeks",
        args.symbols, args.weeks
    );
    for (i, symbol) in symbols.iter().enumerate() {
        assets::add(&client, symbol, AssetClass::Fx, None, true).await?;
        let spec = spec(i, args.weeks)?;
        let path = dir.join(format!("{symbol}.csv"));
        let file =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let writer = std::io::BufWriter::new(file);
        rows_1m += synth::write_histdata(synth::generate(&spec), writer)
            .with_context(|| format!("writing {}", path.display()))?;
        files.push((symbol.clone(), path));
    }

    let mut ingest_pairs = Vec::new();
    let mut catchup_pairs = Vec::new();
    let mut baseline_5m_bars = 0;
    for round in 1..=args.repeat {
        eprintln!(
            "bench: round {round}/{}: ingest ({rows_1m} rows) against plain COPY",
            args.repeat
        );
        settle(
            &client,
            "TRUNCATE data_bars; DROP TABLE IF EXISTS bench_copy_baseline",
        )
        .await?;
        let baseline = copy_baseline(&client, &symbols, args.weeks).await?;
        settle(&client, "").await?;
        let t = Instant::now();
        for (symbol, path) in &files {
            let opts = IngestOptions::new(symbol.clone());
            ingest::ingest_files(&mut client, std::slice::from_ref(path), &opts).await?;
        }
        ingest_pairs.push((t.elapsed().as_secs_f64(), baseline));
    }
    settle(&client, "VACUUM ANALYZE data_bars").await?;
    for round in 1..=args.repeat {
        eprintln!(
            "bench: round {round}/{}: full ladder by barkeep against 5m by plain SQL",
            args.repeat
        );
        settle(&client, "DROP TABLE IF EXISTS bench_baseline_5m").await?;
        let t = Instant::now();
        client
            .batch_execute(BASELINE_5M)
            .await
            .context("running the plain-SQL 5m baseline")?;
        let baseline = t.elapsed().as_secs_f64();
        baseline_5m_bars = client
            .query_one("SELECT count(*) FROM bench_baseline_5m", &[])
            .await
            .context("counting baseline bars")?
            .get(0);
        settle(
            &client,
            "TRUNCATE derived_data_bars; DELETE FROM data_agg_state; TRUNCATE agg_run_log",
        )
        .await?;
        let t = Instant::now();
        tasks::sync(&client, tasks::Env::Prod, Some(start()?), None).await?;
        let config = worker::WorkerConfig::catch_up(args.concurrency);
        worker::run_worker(&scratch, &config, CancellationToken::new()).await?;
        catchup_pairs.push((t.elapsed().as_secs_f64(), baseline));
    }

    let rows = client
        .query(
            "SELECT timeframe, count(*) FROM derived_data_bars WHERE deleted_at IS NULL
             GROUP BY timeframe ORDER BY array_position(ARRAY['5m','15m','1h','4h','1d','1w'], timeframe)",
            &[],
        )
        .await
        .context("counting derived bars")?;
    let bars_by_timeframe = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let _ = std::fs::remove_dir_all(&dir);

    let report = BenchReport {
        symbols: args.symbols,
        weeks: args.weeks,
        rows_1m,
        ingest: pair("ingest 1m rows", rows_1m, &ingest_pairs),
        catchup: pair(
            "catch-up: barkeep full ladder vs SQL 5m only",
            rows_1m,
            &catchup_pairs,
        ),
        bars_by_timeframe,
        baseline_5m_bars,
    };
    drop(client);
    drop_scratch(server, &args.scratch_db).await?;
    Ok(report)
}

/// Medians of (barkeep, baseline) rounds, and the median of the per-round
/// ratios (a round's two sides ran back to back, so their ratio is what
/// survives a machine whose speed drifts).
fn pair(what: &str, rows: u64, rounds: &[(f64, f64)]) -> Pair {
    let barkeep: Vec<f64> = rounds.iter().map(|r| r.0).collect();
    let baseline: Vec<f64> = rounds.iter().map(|r| r.1).collect();
    let ratios: Vec<f64> = rounds.iter().map(|r| r.1 / r.0.max(1e-9)).collect();
    Pair {
        what: what.into(),
        rows,
        barkeep_seconds: median(&barkeep),
        baseline_seconds: median(&baseline),
        speedup: median(&ratios),
        rounds: rounds.len(),
        speedups: ratios,
    }
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Run `sql` (if any), then checkpoint, so that neither side of a pair pays
/// for the other's dirty buffers.
async fn settle(client: &Client, sql: &str) -> Result<()> {
    if !sql.is_empty() {
        client
            .batch_execute(sql)
            .await
            .with_context(|| format!("running {sql}"))?;
    }
    client
        .batch_execute("CHECKPOINT")
        .await
        .context("checkpointing")
}

fn spec(i: usize, weeks: i64) -> Result<SynthSpec> {
    Ok(SynthSpec {
        start: start()?,
        minutes: weeks * 7 * 24 * 60,
        fx_weekends: true,
        gap_probability: 0.0,
        gap_continue_probability: 0.0,
        with_volume: false,
        price: 1.0 + i as f64 * 0.01,
        seed: 1000 + i as u64,
    })
}

/// The plain-SQL 5m aggregation users write by hand, into a table shaped
/// like `derived_data_bars` with the same indexes.
const BASELINE_5M: &str = "
CREATE TABLE bench_baseline_5m (LIKE derived_data_bars INCLUDING ALL);
INSERT INTO bench_baseline_5m (canonical_symbol, timeframe, ts_utc, open, high, low, close, vol,
       source_timeframe, source_candles, expected_candles, quality_score)
SELECT canonical_symbol, '5m', date_bin('5 minutes', ts_utc, TIMESTAMPTZ 'epoch'),
       (array_agg(open ORDER BY ts_utc))[1], max(high), min(low),
       (array_agg(close ORDER BY ts_utc DESC))[1], sum(vol), '1m', count(*), 5, 2
FROM data_bars WHERE timeframe = '1m' GROUP BY 1, 3";

/// Time a plain COPY of the same rows into a table with the same unique key.
async fn copy_baseline(client: &Client, symbols: &[Symbol], weeks: i64) -> Result<f64> {
    use futures_util::SinkExt;
    client
        .batch_execute(
            "CREATE TABLE bench_copy_baseline (LIKE data_bars INCLUDING DEFAULTS);
             CREATE UNIQUE INDEX ON bench_copy_baseline (canonical_symbol, timeframe, ts_utc);",
        )
        .await
        .context("creating the COPY baseline table")?;
    // Rows are formatted before the clock starts: the baseline pays for COPY only.
    let mut text = Vec::new();
    for (i, symbol) in symbols.iter().enumerate() {
        for b in synth::generate(&spec(i, weeks)?) {
            use std::io::Write;
            writeln!(
                text,
                "{symbol}\t1m\t{}\t{}\t{}\t{}\t{}\t{}",
                b.ts.to_rfc3339(),
                b.open,
                b.high,
                b.low,
                b.close,
                b.vol
            )
            .context("formatting COPY rows")?;
        }
    }
    let t = Instant::now();
    let sink = client
        .copy_in("COPY bench_copy_baseline (canonical_symbol, timeframe, ts_utc, open, high, low, close, vol) FROM STDIN")
        .await
        .context("starting the baseline COPY")?;
    futures_util::pin_mut!(sink);
    for piece in text.chunks(1 << 20) {
        sink.send(bytes::Bytes::copy_from_slice(piece))
            .await
            .context("sending baseline COPY data")?;
    }
    sink.as_mut()
        .finish()
        .await
        .context("finishing the baseline COPY")?;
    Ok(t.elapsed().as_secs_f64())
}

async fn recreate_scratch(server: &Database, name: &str) -> Result<Database> {
    drop_scratch(server, name).await?;
    let admin = server.connect().await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {}", quote_ident(name)))
        .await
        .with_context(|| format!("creating scratch database {name}"))?;
    let mut config = server.config().clone();
    config.dbname(name);
    Ok(Database::from_config(config))
}

async fn drop_scratch(server: &Database, name: &str) -> Result<()> {
    let admin = server.connect().await?;
    admin
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(name)
        ))
        .await
        .with_context(|| format!("dropping scratch database {name}"))
}

fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("barkeep-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
