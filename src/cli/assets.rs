//! `barkeep assets add|list|set`: the instrument registry.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use super::{print_json, Global};
use crate::assets;
use crate::model::{AssetClass, Symbol};

#[derive(Debug, Subcommand)]
pub enum AssetsCommand {
    /// Register an instrument (or update its class and name).
    Add {
        /// Canonical symbol, e.g. EURUSD.
        symbol: Symbol,
        /// Asset class: fx, metal (FX calendar), crypto or equity (UTC calendar).
        #[arg(long)]
        class: AssetClass,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Register it inactive in prod.
        #[arg(long)]
        inactive: bool,
        /// Change the class of a symbol that has bars although that changes
        /// its calendar: its 4h, 1d and 1w bars are rebuilt on the new one.
        #[arg(long)]
        force: bool,
    },
    /// List registered instruments.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change an instrument's flags.
    Set {
        /// Registered symbol, e.g. EURUSD.
        symbol: Symbol,
        /// Active in prod.
        #[arg(long)]
        active: Option<bool>,
        /// Active in dev and test.
        #[arg(long)]
        test_active: Option<bool>,
    },
}

pub async fn run(global: &Global, cmd: AssetsCommand) -> Result<ExitCode> {
    let client = global.database().await?.connect().await?;
    crate::migrate::require_migrated(&client).await?;
    match cmd {
        AssetsCommand::Add {
            symbol,
            class,
            name,
            inactive,
            force,
        } => {
            let mut client = client;
            if force
                && assets::calendar_change(&client, &symbol, class)
                    .await?
                    .is_some()
            {
                let change = assets::change_class(&mut client, &symbol, class).await?;
                println!(
                    "{symbol}: class {} -> {}: {} 4h/1d/1w bars of the old calendar retired, {} built on the new one",
                    change.old_class, change.new_class, change.bars_retired, change.bars_created
                );
            }
            assets::add(&client, &symbol, class, name.as_deref(), !inactive).await?;
            println!("registered {symbol} ({class})");
        }
        AssetsCommand::List { json } => {
            let assets = assets::list(&client).await?;
            if json {
                print_json(&assets)?;
            } else {
                println!(
                    "{:<12} {:<8} {:<7} {:<11}",
                    "symbol", "class", "active", "test_active"
                );
                for a in assets {
                    println!(
                        "{:<12} {:<8} {:<7} {:<11}",
                        a.canonical_symbol, a.asset_class, a.active, a.test_active
                    );
                }
            }
        }
        AssetsCommand::Set {
            symbol,
            active,
            test_active,
        } => {
            assets::set_flags(&client, &symbol, active, test_active).await?;
            println!("updated {symbol}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
