//! `barkeep ingest`: flags into [`IngestOptions`], and the summary printed.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::{print_json, Global};
use crate::assets::Symbol;
use crate::ingest::{self, Counts, Format, IngestOptions, IngestSummary, LoadPath, Zone};

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
}

pub async fn run(global: &Global, args: IngestArgs) -> Result<ExitCode> {
    let opts = IngestOptions {
        symbol: args.symbol,
        format: args.format,
        zone: args.tz,
        strict: args.strict,
        source: args.source,
        progress: std::io::stderr().is_terminal(),
    };
    let mut client = global.database().await?.connect().await?;
    let summary = ingest::ingest_files(&mut client, &args.files, &opts).await?;
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
        print_json(&summary)?;
    } else {
        print_summary(&summary);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_summary(summary: &IngestSummary) {
    let line = |name: &str, c: &Counts, extra: String| {
        println!(
            "{name}: read {}, loaded {}, revised {}, duplicates {}, superseded {}, quarantined {}{extra}",
            c.rows_read, c.loaded, c.revised, c.duplicates, c.superseded, c.quarantined
        );
    };
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
    }
    line(
        &format!("total {}", summary.symbol),
        &summary.total,
        format!(" ({:.2} s)", summary.seconds),
    );
}
