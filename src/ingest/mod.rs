//! `barkeep ingest`: loading 1-minute bars from HistData, MT4 and headed
//! CSV files (or standard input) into `data_bars`, with bad rows kept in
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

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use tokio_postgres::Client;

use crate::assets::{self, Symbol};
use crate::cli::Global;
pub use format::{Format, Zone};
pub use load::{BadRow, Counts, LoadPath};
pub use read::Input;

/// Arguments of `barkeep ingest`.
#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Files to load, or `-` for standard input.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Registered symbol the rows belong to, e.g. AUDUSD.
    #[arg(long)]
    pub symbol: String,
    /// Input format; `auto` tells from the first line.
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    pub format: Format,
    /// Zone of MT4 stamps: an IANA name (Europe/Athens) or an offset (+02:00).
    #[arg(long, default_value = "UTC")]
    pub tz: Zone,
    /// Reject a whole file when any row is bad, instead of quarantining the row.
    #[arg(long)]
    pub strict: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Value of `data_bars.source` (default: the format's name).
    #[arg(long)]
    pub source: Option<String>,
    /// Say what would be loaded, revised and quarantined, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

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
    /// Work everything out in a transaction that is rolled back.
    pub dry_run: bool,
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
            dry_run: false,
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

/// Run `barkeep ingest`.
pub async fn run(global: &Global, args: IngestArgs) -> Result<ExitCode> {
    let symbol = Symbol::parse(&args.symbol).context("checking --symbol")?;
    let opts = IngestOptions {
        symbol,
        format: args.format,
        zone: args.tz,
        strict: args.strict,
        source: args.source,
        progress: std::io::stderr().is_terminal(),
        dry_run: args.dry_run,
    };
    let database = global.database().await?;
    let mut client = database.connect().await?;
    let summary = ingest_files(&mut client, &args.files, &opts).await?;
    for file in &summary.files {
        for bad in &file.bad_rows {
            eprintln!("quarantined {}:{}: {}", file.file, bad.line, bad.reason);
        }
        let more = file
            .counts
            .quarantined
            .saturating_sub(file.bad_rows.len() as u64);
        if more > 0 {
            eprintln!(
                "… and {more} more bad rows of {} in ingest_quarantine",
                file.file
            );
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).context("writing the summary as JSON")?
        );
    } else {
        print_summary(&summary);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_summary(summary: &IngestSummary) {
    let verb = if summary.dry_run {
        "would load"
    } else {
        "loaded"
    };
    let line = |name: &str, c: &Counts, extra: String| {
        println!(
            "{name}: read {}, {verb} {}, revised {}, duplicates {}, superseded {}, quarantined {}{extra}",
            c.rows_read, c.loaded, c.revised, c.duplicates, c.superseded, c.quarantined
        );
    };
    let stamp = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for f in &summary.files {
        let path = match f.path {
            LoadPath::NewRange => "new range",
            LoadPath::Merge => "merge",
        };
        line(
            &f.file,
            &f.counts,
            format!(" ({}, {path}, {:.2} s)", f.format, f.seconds),
        );
        if let (Some(first), Some(last)) = (f.first_ts, f.last_ts) {
            println!("  rows from {} to {}", stamp(first), stamp(last));
        }
        if let (Some(from), Some(to)) = (f.revised_from, f.revised_to) {
            println!(
                "  revised {} bars from {} to {} (previous values kept in data_bars_history)",
                f.counts.revised,
                stamp(from),
                stamp(to)
            );
        }
    }
    if summary.dry_run {
        println!("dry run: nothing was changed");
    }
    line(
        &format!("total {}", summary.symbol),
        &summary.total,
        format!(" ({:.2} s)", summary.seconds),
    );
}
