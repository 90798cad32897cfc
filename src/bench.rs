//! `barkeep bench`: barkeep against plain SQL on the same generated data,
//! side by side in one run, reported as ratios.
//!
//! In a scratch database it generates N fx symbols × W weeks of 1-minute
//! bars, then times:
//! 1. ingest: `barkeep ingest` of HistData files against a plain `COPY` of
//!    the same rows into a table with the same unique key;
//!    the merge path: the same files ingested again, every row already
//!    stored, against the same plain `COPY`;
//! 2. change tracking: the same ingest with the late-data triggers on
//!    `data_bars` enabled against disabled, every row ahead of the 5m
//!    cursors (what a live feed or a new range costs);
//! 3. catch-up: the barkeep worker building the whole default ladder from
//!    scratch against one plain `INSERT … SELECT … GROUP BY` that builds only
//!    the 5m bars (first/last through `array_agg … ORDER BY`). The worker
//!    runs as a child process (`barkeep run --once`), so its peak memory is
//!    its own; after it, the floor (see [`floor`]) is measured on the same
//!    data;
//! 4. SQL face: every symbol's 5m bars built again by
//!    `catchup_aggregation_range`, as a cron job calls it, against the same
//!    plain statement; its bars are compared with the worker's.
//!
//! `--pairs` picks which of them run; the report names the machine.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use crate::assets;
use crate::db::Database;
use crate::ingest::{self, IngestOptions};
use crate::model::{AssetClass, Env, Symbol};
use crate::synth::{self, SynthSpec};
use crate::{migrate, tasks};

mod baseline;
pub mod floor;
pub mod freshness;
pub mod machine;
mod rounds;
mod scratch;
pub mod sql_face;

use baseline::{copy_baseline, write_copy_text, BASELINE_5M};
use rounds::{median, pair};
use scratch::{
    count_bars, drop_scratch, recreate_scratch, run_worker_child, settle, tempdir, url_of,
};

pub use machine::Machine;

/// The pairs a run can time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PairKind {
    /// `barkeep ingest` against plain COPY.
    Ingest,
    /// `barkeep ingest` of files already stored (the merge path) against plain COPY.
    Merge,
    /// Ingest with change tracking against without.
    Tracking,
    /// The worker's full ladder against plain SQL 5m, with the floor.
    Catchup,
    /// `catchup_aggregation_range` (5m) against plain SQL 5m.
    SqlFace,
}

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
    /// Which pairs to time (the SQL face needs the catch-up's bars).
    pub pairs: Vec<PairKind>,
    /// The barkeep binary the catch-up runs as a child (`run --once`), so
    /// its memory is its own.
    pub worker_exe: PathBuf,
}

/// One timed pair.
#[derive(Debug, serde::Serialize)]
pub struct Pair {
    pub what: String,
    pub rows: u64,
    /// Median of barkeep's rounds.
    pub barkeep_seconds: f64,
    /// Median of the baseline's rounds.
    pub baseline_seconds: f64,
    /// Median over rounds of baseline time / barkeep time: above 1 means barkeep is faster.
    pub speedup: f64,
    pub rounds: usize,
    /// baseline / barkeep of each round.
    pub speedups: Vec<f64>,
    /// barkeep's seconds of each round.
    pub barkeep_rounds: Vec<f64>,
    /// The baseline's seconds of each round.
    pub baseline_rounds: Vec<f64>,
}

/// The catch-up against its floor (see [`floor`]).
#[derive(Debug, serde::Serialize)]
pub struct Floor {
    /// Median seconds of one binary COPY of every 1m row to the client.
    pub read_1m_seconds: f64,
    /// Median seconds of one binary COPY of every derived bar into a
    /// table shaped and indexed like `derived_data_bars`.
    pub write_bars_seconds: f64,
    /// Median of the rounds' read + write.
    pub floor_seconds: f64,
    /// Bars written by the write half (all the worker built).
    pub bars: u64,
    /// Median over rounds of barkeep's catch-up / that round's floor
    /// (1 = at the floor).
    pub barkeep_over_floor: f64,
    /// barkeep / floor of each round.
    pub rounds: Vec<f64>,
    /// read + write seconds of each round.
    pub floor_rounds: Vec<f64>,
}

/// Everything `bench` measured.
#[derive(Debug, serde::Serialize)]
pub struct BenchReport {
    pub symbols: usize,
    pub weeks: i64,
    pub rows_1m: u64,
    pub machine: Machine,
    pub ingest: Option<Pair>,
    /// barkeep = ingest of the same files again (every row already stored,
    /// the merge path); baseline = the plain COPY of the ingest pair's round.
    pub merge: Option<Pair>,
    /// barkeep = ingest with change tracking, baseline = without.
    pub tracking: Option<Pair>,
    pub catchup: Option<Pair>,
    pub floor: Option<Floor>,
    /// barkeep = `catchup_aggregation_range` building 5m, one connection,
    /// 500 windows a call; baseline = the plain SQL 5m statement.
    pub sql_face: Option<Pair>,
    /// Largest resident set of the catch-up worker (`barkeep run --once`,
    /// a child process) over all rounds, in MiB: the kernel's peak RSS of
    /// the waited-for children (`getrusage(RUSAGE_CHILDREN)`).
    pub peak_worker_mib: Option<f64>,
    pub bars_by_timeframe: Vec<(String, i64)>,
    pub baseline_5m_bars: i64,
    /// 5m bars the SQL face built, equal to the worker's (compared row by row).
    pub sql_face_5m_bars: Option<i64>,
}

const START: &str = "2025-01-05T22:00:00Z"; // a Sunday evening, fx week open

/// The first bar of a data set of `weeks` weeks: START, or as many whole
/// weeks earlier as it takes for the data to end a week before today
/// (bars dated in the future would be quarantined, not loaded).
fn start(weeks: i64) -> Result<DateTime<Utc>> {
    let fixed = DateTime::parse_from_rfc3339(START)
        .context("parsing the bench start")?
        .with_timezone(&Utc);
    let latest_end = Utc::now() - chrono::Duration::weeks(1);
    let end = fixed + chrono::Duration::weeks(weeks);
    let late_by = (end - latest_end).num_seconds();
    let week = 7 * 24 * 3600;
    let back = if late_by > 0 {
        (late_by + week - 1) / week
    } else {
        0
    };
    Ok(fixed - chrono::Duration::weeks(back))
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
    let wants = |k: PairKind| args.pairs.contains(&k);
    if wants(PairKind::SqlFace) && !wants(PairKind::Catchup) {
        bail!("the sql-face pair compares its bars with the catch-up's: add catchup to --pairs");
    }
    let scratch = recreate_scratch(server, &args.scratch_db).await?;
    let mut client = scratch.connect().await?;
    migrate::up(&mut client, None).await?;
    let mut machine = Machine::describe(&client).await?;

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
    let mut merge_pairs = Vec::new();
    if wants(PairKind::Ingest) || wants(PairKind::Merge) {
        let copy_text = dir.join("copy_baseline.tsv");
        write_copy_text(&copy_text, &symbols, args.weeks)?;
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
            let baseline = copy_baseline(&client, &copy_text).await?;
            settle(&client, "DROP TABLE bench_copy_baseline").await?;
            settle(&client, "TRUNCATE data_bars").await?;
            let t = Instant::now();
            ingest_all(&mut client, &files).await?;
            ingest_pairs.push((t.elapsed().as_secs_f64(), baseline));
            if wants(PairKind::Merge) {
                settle(&client, "").await?;
                let t = Instant::now();
                ingest_all(&mut client, &files).await?;
                merge_pairs.push((t.elapsed().as_secs_f64(), baseline));
            }
        }
        if !wants(PairKind::Ingest) {
            ingest_pairs.clear();
        }
        let _ = std::fs::remove_file(&copy_text);
    }
    // Every row ahead of the cursors: tasks exist, their cursors at the start.
    tasks::sync(&client, Env::Prod, Some(start(args.weeks)?), None).await?;
    client
        .batch_execute("SELECT agg_restart_tasks(NULL, NULL, NULL, true)")
        .await
        .context("placing the cursors")?;
    let mut tracking_pairs = Vec::new();
    if wants(PairKind::Tracking) {
        for round in 1..=args.repeat {
            eprintln!(
                "bench: round {round}/{}: ingest with change tracking against without",
                args.repeat
            );
            let mut times = [0.0; 2];
            // Sides alternate which goes first, so neither always runs
            // right after the other's load.
            let mut sides = [(0, "ENABLE"), (1, "DISABLE")];
            if round % 2 == 0 {
                sides.reverse();
            }
            for (i, toggle) in sides {
                settle(
                    &client,
                    &format!("TRUNCATE data_bars; ALTER TABLE data_bars {toggle} TRIGGER data_bars_track_insert"),
                )
                .await?;
                let t = Instant::now();
                ingest_all(&mut client, &files).await?;
                times[i] = t.elapsed().as_secs_f64();
            }
            client
                .batch_execute("ALTER TABLE data_bars ENABLE TRIGGER data_bars_track_insert")
                .await
                .context("enabling change tracking again")?;
            tracking_pairs.push((times[0], times[1]));
        }
    }
    let loaded: i64 = client
        .query_one("SELECT count(*) FROM data_bars", &[])
        .await
        .context("counting 1m rows")?
        .get(0);
    if loaded as u64 != rows_1m {
        settle(&client, "TRUNCATE data_bars").await?;
        ingest_all(&mut client, &files).await?;
    }
    let dirty: i64 = client
        .query_one("SELECT count(*) FROM agg_dirty_buckets", &[])
        .await
        .context("counting dirty buckets")?
        .get(0);
    anyhow::ensure!(
        dirty == 0,
        "rows ahead of the cursors recorded {dirty} dirty buckets"
    );
    settle(&client, "VACUUM ANALYZE data_bars").await?;

    let mut catchup_pairs = Vec::new();
    let mut floor_rounds: Vec<floor::FloorTimes> = Vec::new();
    let mut face_pairs = Vec::new();
    let mut baseline_5m_bars = 0;
    let mut bars_by_timeframe = Vec::new();
    let mut sql_face_5m_bars = None;
    let mut peak_worker_mib = None;
    if wants(PairKind::Catchup) {
        let url = url_of(&scratch);
        let saved_bars = dir.join("derived_bars.copy");
        for round in 1..=args.repeat {
            eprintln!(
                "bench: round {round}/{}: full ladder by barkeep against 5m by plain SQL, and the floor",
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
                "DROP TABLE bench_baseline_5m; TRUNCATE derived_data_bars; DELETE FROM data_agg_state; TRUNCATE agg_run_log",
            )
            .await?;
            let t = Instant::now();
            tasks::sync(&client, Env::Prod, Some(start(args.weeks)?), None).await?;
            let peak = run_worker_child(&args.worker_exe, &url, args.concurrency, &dir).await?;
            catchup_pairs.push((t.elapsed().as_secs_f64(), baseline));
            peak_worker_mib = Some(peak);

            bars_by_timeframe = count_bars(&client).await?;
            let bars = floor::save_derived_bars(&client, &saved_bars).await?;
            settle(&client, "").await?;
            let read_seconds = floor::read_all_1m(&client).await?;
            let write_seconds =
                floor::write_all_bars(&client, &saved_bars, "bench_floor_bars").await?;
            let _ = std::fs::remove_file(&saved_bars);
            floor_rounds.push(floor::FloorTimes {
                read_seconds,
                write_seconds,
                bars,
            });

            if wants(PairKind::SqlFace) {
                eprintln!(
                    "bench: round {round}/{}: 5m by catchup_aggregation_range",
                    args.repeat
                );
                sql_face::keep_worker_5m(&client).await?;
                sql_face::reset_5m(&client).await?;
                settle(&client, "").await?;
                let face = sql_face::catch_up_5m(&client, &symbols).await?;
                face_pairs.push((face, baseline));
                sql_face_5m_bars = Some(sql_face::compare_with_worker(&client).await?);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);

    let floor = (!floor_rounds.is_empty()).then(|| {
        let totals: Vec<f64> = floor_rounds
            .iter()
            .map(|f| f.read_seconds + f.write_seconds)
            .collect();
        let over: Vec<f64> = catchup_pairs
            .iter()
            .zip(&totals)
            .map(|(c, f)| c.0 / f.max(1e-9))
            .collect();
        Floor {
            read_1m_seconds: median(
                &floor_rounds
                    .iter()
                    .map(|f| f.read_seconds)
                    .collect::<Vec<_>>(),
            ),
            write_bars_seconds: median(
                &floor_rounds
                    .iter()
                    .map(|f| f.write_seconds)
                    .collect::<Vec<_>>(),
            ),
            floor_seconds: median(&totals),
            bars: floor_rounds.last().map_or(0, |f| f.bars),
            barkeep_over_floor: median(&over),
            rounds: over,
            floor_rounds: totals,
        }
    });
    machine.load_at_end = machine::load_average();
    let nonempty = |what: &str, rounds: &[(f64, f64)]| {
        (!rounds.is_empty()).then(|| pair(what, rows_1m, rounds))
    };
    let report = BenchReport {
        symbols: args.symbols,
        weeks: args.weeks,
        rows_1m,
        machine,
        ingest: nonempty("ingest 1m rows", &ingest_pairs),
        merge: nonempty("ingest again: merge path vs plain COPY", &merge_pairs),
        tracking: nonempty("ingest: change tracking on vs off", &tracking_pairs),
        catchup: nonempty(
            "catch-up: barkeep full ladder vs SQL 5m only",
            &catchup_pairs,
        ),
        floor,
        sql_face: nonempty("catch-up 5m: SQL face (cron) vs SQL 5m", &face_pairs),
        peak_worker_mib,
        bars_by_timeframe,
        baseline_5m_bars,
        sql_face_5m_bars,
    };
    drop(client);
    drop_scratch(server, &args.scratch_db).await?;
    Ok(report)
}

/// `barkeep ingest` of every symbol's file, one after the other.
async fn ingest_all(client: &mut Client, files: &[(Symbol, PathBuf)]) -> Result<()> {
    for (symbol, path) in files {
        let opts = IngestOptions::new(symbol.clone());
        ingest::ingest_files(client, std::slice::from_ref(path), &opts).await?;
    }
    Ok(())
}

fn spec(i: usize, weeks: i64) -> Result<SynthSpec> {
    Ok(SynthSpec {
        start: start(weeks)?,
        minutes: weeks * 7 * 24 * 60,
        fx_weekends: true,
        gap_probability: 0.0,
        gap_continue_probability: 0.0,
        with_volume: false,
        price: 1.0 + i as f64 * 0.01,
        seed: 1000 + i as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_set_ends_a_week_before_today_on_the_same_weekday_and_hour() {
        let fixed = start(1).unwrap();
        assert_eq!(fixed.to_rfc3339(), "2025-01-05T22:00:00+00:00");
        for weeks in [26, 104, 520] {
            let s = start(weeks).unwrap();
            let end = s + chrono::Duration::weeks(weeks);
            assert!(
                end <= Utc::now() - chrono::Duration::weeks(1),
                "{weeks} weeks end {end}"
            );
            assert!(s <= fixed);
            let back = fixed - s;
            assert_eq!(
                back.num_seconds() % (7 * 24 * 3600),
                0,
                "{weeks}: whole weeks"
            );
            if back > chrono::Duration::zero() {
                assert!(
                    end + chrono::Duration::weeks(1) > Utc::now() - chrono::Duration::weeks(1),
                    "{weeks}: moved back no further than needed"
                );
            }
        }
    }
}
