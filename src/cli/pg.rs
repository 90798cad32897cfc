//! `barkeep pg status|start|stop`: the embedded cluster.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;

use super::{print_json, Global};
use crate::pg::Cluster;

#[derive(Debug, Subcommand)]
pub enum PgCommand {
    /// Show whether the embedded cluster exists and runs.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start the embedded cluster (it also starts on demand).
    Start,
    /// Stop the embedded cluster.
    Stop,
}

pub async fn run(global: &Global, cmd: PgCommand) -> Result<ExitCode> {
    let home = global.home.clone();
    tokio::task::spawn_blocking(move || -> Result<ExitCode> {
        let cluster = Cluster::new(&home)?;
        match cmd {
            PgCommand::Status { json } => {
                let status = cluster.status()?;
                if json {
                    print_json(&status)?;
                } else {
                    println!("home:        {}", status.home.display());
                    println!("initialized: {}", status.initialized);
                    println!("running:     {}", status.running);
                    println!("data:        {}", status.data_dir.display());
                    println!("socket:      {}", status.socket_dir.display());
                    println!("binaries:    {}", status.bindir.display());
                }
            }
            PgCommand::Start => {
                cluster.ensure_running()?;
                println!("embedded cluster running at {}", cluster.home().display());
            }
            PgCommand::Stop => {
                if cluster.stop()? {
                    println!("embedded cluster stopped");
                } else {
                    println!("embedded cluster was not running");
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
    .context("managing the embedded cluster")?
}
