//! `barkeep db up|down|status`: the schema migrations and SQL function files.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use super::{print_json, Global};
use crate::migrate;

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Apply pending migrations and changed SQL function files.
    Up {
        /// Stop after this version.
        #[arg(long)]
        to: Option<i64>,
    },
    /// Revert migrations.
    Down {
        /// Revert every step above this version (0 reverts everything).
        #[arg(long, default_value_t = 0)]
        to: i64,
    },
    /// List migrations and whether each is applied.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(global: &Global, cmd: DbCommand) -> Result<ExitCode> {
    let database = global.database().await?;
    let mut client = database.connect().await?;
    match cmd {
        DbCommand::Up { to } => {
            let applied = migrate::up(&mut client, to).await?;
            if applied.is_empty() {
                println!("database is up to date");
            }
            for v in applied {
                println!("applied migration {v}");
            }
        }
        DbCommand::Down { to } => {
            let reverted = migrate::down(&mut client, to).await?;
            if reverted.is_empty() {
                println!("nothing to revert");
            }
            for v in reverted {
                println!("reverted migration {v}");
            }
        }
        DbCommand::Status { json } => {
            let steps = migrate::status(&client).await?;
            if json {
                print_json(&steps)?;
            } else {
                for s in steps {
                    let state = match (s.applied, s.checksum_ok) {
                        (true, true) => "applied",
                        (true, false) => "applied, EDITED since",
                        _ => "pending",
                    };
                    println!("{:>4}  {:<40} {state}", s.version, s.name);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
