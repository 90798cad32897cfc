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
        /// Revert every step above this version (0 reverts everything);
        /// without it, only the newest applied step.
        #[arg(long)]
        to: Option<i64>,
        /// Revert even when a step drops tables that hold rows or columns that
        /// hold values other than their default.
        #[arg(long)]
        force: bool,
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
        DbCommand::Down { to, force } => {
            let to = match to {
                Some(to) => to,
                None => match migrate::one_step_down(&client).await? {
                    Some(to) => to,
                    None => {
                        println!("nothing to revert");
                        return Ok(ExitCode::SUCCESS);
                    }
                },
            };
            let at_risk = migrate::rows_dropped_by_down(&client, to).await?;
            let values_at_risk = migrate::values_dropped_by_down(&client, to).await?;
            if !values_at_risk.is_empty() && !force {
                let what = values_at_risk
                    .iter()
                    .map(|r| {
                        let values = if r.values == 1 { "value" } else { "values" };
                        format!(
                            "{}.{} ({} {values}, step {})",
                            r.table, r.column, r.values, r.version
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let tables = at_risk
                    .iter()
                    .map(|r| {
                        let rows = if r.rows == 1 { "row" } else { "rows" };
                        format!(
                            "; and the table {} ({} {rows}, step {})",
                            r.table, r.rows, r.version
                        )
                    })
                    .collect::<String>();
                anyhow::bail!(
                    "reverting to {to} drops columns that hold values: {what}{tables}; back them up \
                     (pg_dump) and add --force to revert anyway"
                );
            }
            if !at_risk.is_empty() && !force {
                let what = at_risk
                    .iter()
                    .map(|r| {
                        let rows = if r.rows == 1 { "row" } else { "rows" };
                        format!("{} ({} {rows}, step {})", r.table, r.rows, r.version)
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                anyhow::bail!(
                    "reverting to {to} drops tables that hold rows: {what}; back them up \
                     (`barkeep backup`, pg_dump) and add --force to revert anyway"
                );
            }
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
