//! `barkeep ingest`: flags into [`IngestOptions`], and the summary printed.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use chrono::{DateTime, Utc};

use super::{print_json, Global};
use crate::ingest::format::Pass;
use crate::ingest::{self, Counts, Format, IngestOptions, IngestSummary, LoadPath, Zone};
use crate::model::Symbol;
use crate::ops::counted;
use crate::ops::left_out::left_out;

/// Arguments of `barkeep ingest`.
#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Files to load, or `-` for standard input.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Registered symbol the rows belong to, e.g. AUDUSD.
    #[arg(long)]
    pub symbol: Symbol,
    /// Input format: auto (tell from the first line), histdata, mt4 or csv.
    #[arg(long, default_value = "auto")]
    pub format: Format,
    /// Zone of MT4 stamps: an IANA name (Europe/Athens), an offset (+02:00)
    /// or UTC. Required for MT4 input: its stamps are the broker's server time.
    #[arg(long)]
    pub tz: Option<Zone>,
    /// In the repeated hour of a fall-back night, which pass a stamp means
    /// when the file does not show it (it starts inside that hour): earlier
    /// or later. Without it such rows are quarantined, never guessed.
    #[arg(long)]
    pub ambiguous: Option<Pass>,
    /// Reject a whole file when any row is bad, or a minute is given twice
    /// with different values, instead of quarantining the row (or using the
    /// last of the two).
    #[arg(long)]
    pub strict: bool,
    /// Exit 1 when more than this percentage of a file's rows is
    /// quarantined (the rows that were good stay loaded).
    #[arg(long, default_value_t = 5.0)]
    pub max_quarantined: f64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Value of `data_bars.source` (default: the format's name).
    #[arg(long)]
    pub source: Option<String>,
    /// Say what would be loaded, revised and quarantined, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Quarantine rows dated before this as implausibly old (default 1970-01-01).
    #[arg(long, value_parser = crate::model::calendar::parse_instant)]
    pub not_before: Option<DateTime<Utc>>,
}

pub async fn run(global: &Global, args: IngestArgs) -> Result<ExitCode> {
    let opts = IngestOptions {
        symbol: args.symbol,
        format: args.format,
        zone: args.tz,
        ambiguous: args.ambiguous,
        strict: args.strict,
        source: args.source,
        progress: std::io::stderr().is_terminal(),
        dry_run: args.dry_run,
        not_before: args
            .not_before
            .unwrap_or_else(ingest::validate::default_floor),
    };
    let mut client = global.database().await?.connect().await?;
    let summary = ingest::ingest_files(&mut client, &args.files, &opts).await?;
    for file in &summary.files {
        for c in &file.conflicting_lines {
            eprintln!(
                "conflict {}:{} and {}:{}: minute {} given twice with different values; line {} used",
                file.file,
                c.earlier_line,
                file.file,
                c.later_line,
                c.ts.to_rfc3339(),
                c.later_line
            );
        }
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
        print_json(&summary)?;
    } else {
        print_summary(&summary);
    }
    // Rows before a pinned start get no bars: say so where they arrive.
    if !summary.dry_run {
        for l in left_out(&client, Some(&summary.symbol)).await? {
            eprintln!("warning: {}", l.line());
        }
    }
    let problems = ingest::file_problems(&summary, args.max_quarantined);
    for p in &problems {
        eprintln!("error: {p}");
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_summary(summary: &IngestSummary) {
    let verb = if summary.dry_run {
        "would load"
    } else {
        "loaded"
    };
    let line = |name: &str, c: &Counts, extra: String| {
        let conflicts = if c.conflicts > 0 {
            format!(", same-minute conflicts {}", c.conflicts)
        } else {
            String::new()
        };
        let already = if c.already_quarantined > 0 {
            format!(
                " ({} already in quarantine from an earlier load)",
                c.already_quarantined
            )
        } else {
            String::new()
        };
        println!(
            "{name}: read {}, {verb} {}, revised {}, duplicates {}, superseded {}, quarantined {}{already}{conflicts}{extra}",
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
                "  revised {} from {} to {} (previous values kept in data_bars_history)",
                counted(f.counts.revised, "bar"),
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
