//! `barkeep history prune`: delete the retired versions of derived bars and
//! the earlier values of 1m bars that stopped being live before an instant.
//! Without `--force` it only says what it would delete; with it, as-of reads
//! before the instant are refused from then on.

use std::process::ExitCode;

use anyhow::{bail, Result};
use chrono::{DateTime, Utc};
use clap::Subcommand;

use super::Global;
use crate::model::Symbol;
use crate::ops::counted;
use crate::ops::history;

#[derive(Debug, Subcommand)]
pub enum HistoryCommand {
    /// Delete history that stopped being live before an instant (asks for --force).
    Prune {
        /// Delete versions that stopped being live at or before this instant
        /// (RFC 3339 or a date); as-of reads before it are refused afterwards.
        #[arg(long, value_parser = crate::model::calendar::parse_instant)]
        before: DateTime<Utc>,
        /// Only this symbol's history (default: every symbol).
        #[arg(long)]
        symbol: Option<Symbol>,
        /// Delete; without it the command only counts.
        #[arg(long)]
        force: bool,
    },
}

/// Run `barkeep history …`.
pub async fn run(global: &Global, cmd: HistoryCommand) -> Result<ExitCode> {
    let HistoryCommand::Prune {
        before,
        symbol,
        force,
    } = cmd;
    let mut client = global.database().await?.connect().await?;
    if let Some(symbol) = &symbol {
        super::require_registered(&client, symbol).await?;
    }
    let whose = symbol
        .as_ref()
        .map_or_else(|| "every symbol".to_string(), |s| s.to_string());
    let stamp = before.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    if !force {
        let would = history::count(&client, symbol.as_ref(), before).await?;
        bail!(
            "pruning the history of {whose} before {stamp} would delete {} and {}, and \
             refuse as-of reads before {stamp} from then on; add --force to do it",
            counted(would.bar_versions, "retired bar version"),
            counted(would.revisions_1m, "earlier 1m value"),
        );
    }
    let done = history::prune(
        &mut client,
        symbol.as_ref(),
        before,
        history::Record::Always,
    )
    .await?;
    println!(
        "pruned the history of {whose} before {stamp}: deleted {} and {}; \
         as-of reads before {stamp} are refused",
        counted(done.bar_versions, "retired bar version"),
        counted(done.revisions_1m, "earlier 1m value"),
    );
    Ok(ExitCode::SUCCESS)
}
