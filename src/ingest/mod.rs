//! Loading 1-minute bars from HistData, MT4 and headed CSV files (or
//! standard input) into `data_bars`, with bad rows kept in
//! `ingest_quarantine`, and the summary of what happened.
//!
//! - [`format`](mod@format): the formats, sniffing, time zones, one line → one bar.
//! - [`csv_layout`]: a headed CSV file's columns and the optional ones it carries.
//! - `lines`: reading an input line by line as bytes, overlong lines capped.
//! - [`validate`]: the per-row checks and quarantine reasons.
//! - [`read`]: streaming an input on a blocking thread in bounded batches.
//! - [`copy`]: the binary `COPY` format and row layouts.
//! - [`load`]: the new-range and merge paths, one transaction per input, counting.

pub mod copy;
pub mod csv_layout;
pub mod format;
mod lines;
pub mod load;
pub mod read;
pub mod validate;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use tokio_postgres::Client;

use crate::assets;
use crate::model::Symbol;
pub use format::{Format, Zone};
pub use load::{BadRow, Conflict, Counts, LoadPath};
pub use read::Input;

/// Settings of one ingest run, validated.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub symbol: Symbol,
    pub format: Format,
    /// Zone of MT4 stamps (required for MT4 input).
    pub zone: Option<Zone>,
    /// The pass of a repeated local hour when the file does not show it.
    pub ambiguous: Option<format::Pass>,
    pub strict: bool,
    pub source: Option<String>,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Work everything out in a transaction that is rolled back.
    pub dry_run: bool,
    /// Rows dated before this are quarantined as implausibly old.
    pub not_before: DateTime<Utc>,
}

impl IngestOptions {
    /// Options for `symbol` with every default: sniffed format, UTC, lenient.
    pub fn new(symbol: Symbol) -> Self {
        Self {
            symbol,
            format: Format::Auto,
            zone: None,
            ambiguous: None,
            strict: false,
            source: None,
            progress: false,
            dry_run: false,
            not_before: validate::default_floor(),
        }
    }
}

/// What happened to one input.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileSummary {
    pub file: String,
    pub format: Format,
    /// `new_range` (straight COPY) or `merge` (staged and merged).
    pub path: LoadPath,
    #[serde(flatten)]
    pub counts: Counts,
    /// The first bad rows (all are in `ingest_quarantine`).
    pub bad_rows: Vec<BadRow>,
    /// File-level messages: a header line skipped, columns not loaded.
    pub notes: Vec<String>,
    /// The first minutes given twice with different values (the later line
    /// was used); `counts.conflicts` says how many there are.
    pub conflicting_lines: Vec<Conflict>,
    /// Earliest and latest stamp of the good rows.
    pub first_ts: Option<DateTime<Utc>>,
    pub last_ts: Option<DateTime<Utc>>,
    /// Earliest and latest stamp of the bars revised (their previous values
    /// are kept in `data_bars_history`).
    pub revised_from: Option<DateTime<Utc>>,
    pub revised_to: Option<DateTime<Utc>>,
    pub seconds: f64,
}

/// What happened to every input.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IngestSummary {
    pub symbol: String,
    /// Nothing was changed: the counts say what a real run would do.
    pub dry_run: bool,
    pub files: Vec<FileSummary>,
    pub total: Counts,
    pub seconds: f64,
}

/// Load `files` (a path of `-` is standard input) for `opts.symbol`, one
/// transaction per file. The symbol must be registered and every file must
/// exist before anything is loaded. A file that fails (no rows, `--strict`
/// with a bad row, a database error) leaves nothing behind and stops the
/// run; files before it stay loaded.
pub async fn ingest_files(
    client: &mut Client,
    files: &[PathBuf],
    opts: &IngestOptions,
) -> Result<IngestSummary> {
    let started = std::time::Instant::now();
    let inputs: Vec<Input> = files.iter().map(|f| Input::from_arg(f)).collect();
    for input in &inputs {
        let Input::File(p) = input else { continue };
        match std::fs::metadata(p) {
            Err(_) => bail!("no such file: {}; nothing was loaded", p.display()),
            Ok(m) if m.is_dir() => bail!(
                "{} is a directory: give the files in it (e.g. {}/*.csv); nothing was loaded",
                p.display(),
                p.display()
            ),
            Ok(m) => {
                use std::os::unix::fs::FileTypeExt;
                let t = m.file_type();
                if t.is_char_device() || t.is_block_device() || t.is_socket() {
                    bail!(
                        "{} is a device, not a file of bars; nothing was loaded",
                        p.display()
                    );
                }
            }
        }
    }
    crate::migrate::require_migrated(client).await?;
    // The merge path stages a file's rows in a temporary table. With the
    // server's default temp_buffers (8 MB, about 80,000 rows) a larger file
    // is written out to disk and read back by each statement of the merge.
    // Local buffers are taken only as a table grows, and the setting cannot
    // change once the session has used a temporary table: then it stays.
    if let Err(e) = client.batch_execute("SET temp_buffers = '128MB'").await {
        tracing::debug!("keeping the session's temp_buffers: {e}");
    }
    assets::class_of(client, &opts.symbol).await?;
    warn_on_other_symbols(client, &inputs, &opts.symbol).await?;
    let target = load::Target {
        symbol: &opts.symbol,
        source: opts.source.as_deref(),
        strict: opts.strict,
        dry_run: opts.dry_run,
    };
    let mut summary = IngestSummary {
        symbol: opts.symbol.to_string(),
        dry_run: opts.dry_run,
        files: Vec::new(),
        total: Counts::default(),
        seconds: 0.0,
    };
    for input in &inputs {
        let label = input.label();
        let plan = read::ReadPlan {
            format: opts.format,
            zone: opts.zone,
            ambiguous: opts.ambiguous,
            now: Utc::now(),
            not_before: opts.not_before,
        };
        let progress = opts.progress.then(|| progress_bar(input));
        let file_started = std::time::Instant::now();
        let outcome = load::load(client, input, plan, &target, progress.as_ref()).await;
        if let Some(p) = &progress {
            p.finish_and_clear();
        }
        let loaded = outcome.with_context(|| {
            let done = summary.files.len();
            if done == 0 {
                format!("loading {label}")
            } else {
                format!("loading {label} ({done} earlier file(s) were loaded and committed)")
            }
        })?;
        for note in &loaded.notes {
            tracing::warn!("{note}");
        }
        summary.total += loaded.counts;
        summary.files.push(FileSummary {
            file: label,
            format: loaded.format,
            path: loaded.path,
            counts: loaded.counts,
            bad_rows: loaded.bad_rows,
            notes: loaded.notes,
            conflicting_lines: loaded.conflicts,
            first_ts: loaded.span.map(|s| s.0),
            last_ts: loaded.span.map(|s| s.1),
            revised_from: loaded.revised_span.map(|s| s.0),
            revised_to: loaded.revised_span.map(|s| s.1),
            seconds: file_started.elapsed().as_secs_f64(),
        });
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Warn when a file's name names another symbol than the one its rows are
/// loaded for (`DAT_ASCII_EURUSD_M1_2023.csv --symbol AUDUSD`): a registered
/// symbol anywhere in the name, or any symbol where HistData's names put it
/// (`DAT_<kind>_<SYMBOL>_…`), registered or not.
async fn warn_on_other_symbols(client: &Client, inputs: &[Input], symbol: &Symbol) -> Result<()> {
    let rows = client
        .query("SELECT canonical_symbol FROM core_asset_registry_all", &[])
        .await
        .context("reading the registry")?;
    let known: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    for input in inputs {
        let Input::File(p) = input else { continue };
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_uppercase())
            .unwrap_or_default();
        let tokens: Vec<&str> = name
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|t| !t.is_empty())
            .collect();
        if tokens.contains(&symbol.as_str()) {
            continue;
        }
        let histdata = match tokens.as_slice() {
            ["DAT", _, named, ..] if named.len() >= 3 => Some(*named),
            _ => None,
        };
        if let Some(other) = known
            .iter()
            .map(String::as_str)
            .find(|k| *k != symbol.as_str() && tokens.contains(k))
            .or(histdata)
        {
            tracing::warn!(
                "{}: the file name names {other}, but its rows are loaded for {symbol}",
                p.display()
            );
        }
    }
    Ok(())
}

fn progress_bar(input: &Input) -> ProgressBar {
    let bar = match input.size() {
        Some(len) => ProgressBar::new(len).with_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{msg} {spinner} {bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.set_message(input.label());
    bar
}
/// Files an operator must look at: nothing loadable, or too many bad rows.
pub fn file_problems(summary: &IngestSummary, max_quarantined_pct: f64) -> Vec<String> {
    let mut problems = Vec::new();
    for f in &summary.files {
        let c = &f.counts;
        let usable = c.loaded + c.revised + c.duplicates + c.superseded;
        if usable == 0 {
            problems.push(format!(
                "{}: no loadable row ({} read, {} quarantined)",
                f.file, c.rows_read, c.quarantined
            ));
        } else if c.rows_read > 0 {
            let pct = 100.0 * c.quarantined as f64 / c.rows_read as f64;
            if pct > max_quarantined_pct {
                problems.push(format!(
                    "{}: {} of {} rows quarantined ({pct:.1}%, above --max-quarantined {max_quarantined_pct}); \
                     the good rows are loaded, see `barkeep quarantine list --file {}`",
                    f.file, c.quarantined, c.rows_read, f.file
                ));
            }
        }
    }
    problems
}
