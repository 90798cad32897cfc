//! Loading 1-minute bars from HistData, MT4 and headed CSV files (or
//! standard input) into `data_bars`, with bad rows kept in
//! `ingest_quarantine`, and the summary of what happened.
//!
//! - [`format`]: the formats, sniffing, time zones, one line → one bar.
//! - [`validate`]: the per-row checks and quarantine reasons.
//! - [`read`]: streaming an input on a blocking thread in bounded batches.
//! - [`copy`]: the binary `COPY` format and row layouts.
//! - [`load`]: the new-range and merge paths, one transaction per input, counting.

pub mod copy;
pub mod format;
pub mod load;
pub mod read;
pub mod validate;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_postgres::Client;

use crate::assets::{self, Symbol};
pub use format::{Format, Zone};
pub use load::{BadRow, Counts, LoadPath};
pub use read::Input;

/// Settings of one ingest run, validated.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub symbol: Symbol,
    pub format: Format,
    /// Zone of MT4 stamps.
    pub zone: Zone,
    pub strict: bool,
    pub source: Option<String>,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

impl IngestOptions {
    /// Options for `symbol` with every default: sniffed format, UTC, lenient.
    pub fn new(symbol: Symbol) -> Self {
        Self {
            symbol,
            format: Format::Auto,
            zone: Zone::default(),
            strict: false,
            source: None,
            progress: false,
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
    pub seconds: f64,
}

/// What happened to every input.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IngestSummary {
    pub symbol: String,
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
    let missing: Vec<String> = inputs
        .iter()
        .filter_map(|i| match i {
            Input::File(p) if !p.is_file() => Some(p.display().to_string()),
            _ => None,
        })
        .collect();
    if !missing.is_empty() {
        bail!("no such file: {}; nothing was loaded", missing.join(", "));
    }
    assets::class_of(client, &opts.symbol).await?;
    let target = load::Target {
        symbol: &opts.symbol,
        source: opts.source.as_deref(),
        strict: opts.strict,
    };
    let mut summary = IngestSummary {
        symbol: opts.symbol.to_string(),
        files: Vec::new(),
        total: Counts::default(),
        seconds: 0.0,
    };
    for input in &inputs {
        let label = input.label();
        let plan = read::ReadPlan {
            format: opts.format,
            zone: opts.zone,
            now: Utc::now(),
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
        summary.total += loaded.counts;
        summary.files.push(FileSummary {
            file: label,
            format: loaded.format,
            path: loaded.path,
            counts: loaded.counts,
            bad_rows: loaded.bad_rows,
            seconds: file_started.elapsed().as_secs_f64(),
        });
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
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
