//! `barkeep quarantine list|purge`: the rows ingest refused, and removing
//! them once handled. A purge says what it deletes: a filter, or `--force`
//! for everything.

use std::process::ExitCode;

use anyhow::Result;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};

use super::Global;
use crate::model::Symbol;
use crate::ops::counted;
use crate::ops::quarantine::{self, QuarantineFilter};

#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// Show quarantined rows, newest first.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many rows.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete quarantined rows matching a filter (or all of them with --force).
    Purge {
        #[command(flatten)]
        filter: FilterArgs,
        /// Delete every quarantined row when no filter is given.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Rows of this file (as you name it: relative, absolute or through a link; `-` for standard input).
    #[arg(long)]
    pub file: Option<String>,
    /// Rows of this symbol.
    #[arg(long)]
    pub symbol: Option<Symbol>,
    /// Rows quarantined before this instant (RFC 3339 or a date).
    #[arg(long, value_parser = crate::model::calendar::parse_instant)]
    pub before: Option<DateTime<Utc>>,
}

impl FilterArgs {
    fn filter(self) -> QuarantineFilter {
        QuarantineFilter {
            file: self.file,
            symbol: self.symbol,
            before: self.before,
        }
    }
}

/// Longest raw line a text listing shows (`--json` has it whole).
const RAW_CHARS: usize = 200;

/// Run `barkeep quarantine …`.
pub async fn run(global: &Global, cmd: QuarantineCommand) -> Result<ExitCode> {
    let client = global.database().await?.connect().await?;
    let symbol = match &cmd {
        QuarantineCommand::List { filter, .. } | QuarantineCommand::Purge { filter, .. } => {
            filter.symbol.clone()
        }
    };
    if let Some(symbol) = symbol {
        // A typo lists nothing and purges nothing: say so, unless rows of
        // the symbol are there (its asset may be gone from the registry).
        let only_symbol = QuarantineFilter {
            symbol: Some(symbol.clone()),
            ..QuarantineFilter::default()
        };
        if quarantine::count(&client, &only_symbol).await? == 0 {
            super::require_registered(&client, &symbol).await?;
        }
    }
    match cmd {
        QuarantineCommand::List {
            filter,
            limit,
            json,
        } => {
            let filter = filter.filter();
            let total = quarantine::count(&client, &filter).await?;
            let rows = quarantine::list(&client, &filter, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{} ({})",
                    counted(total, "quarantined row"),
                    filter.describe()
                );
                for e in &rows {
                    println!(
                        "{:>8} {} {} [{}] {}: {}",
                        e.id,
                        e.quarantined_at.format("%Y-%m-%d %H:%M"),
                        e.location(),
                        e.symbol.as_deref().unwrap_or("-"),
                        e.reason,
                        crate::ops::shorten(&e.raw_line, RAW_CHARS)
                    );
                }
                if (rows.len() as i64) < total {
                    println!("… {} more (raise --limit)", total - rows.len() as i64);
                }
            }
        }
        QuarantineCommand::Purge { filter, force } => {
            let filter = filter.filter();
            let deleted = quarantine::purge(&client, &filter, force).await?;
            println!(
                "purged {} ({})",
                counted(deleted, "quarantined row"),
                filter.describe()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
