//! `barkeep backup [--out FILE]` and `barkeep restore FILE`: the task state
//! and the registry as one JSON document, put back in one transaction.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::Global;
use crate::ops::backup::{self, Backup};
use crate::ops::counted;

/// Arguments of `barkeep backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Write here (default, or `-`: standard output). An existing file is not overwritten.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
}

/// Arguments of `barkeep restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A file written by `barkeep backup`.
    pub file: PathBuf,
    /// Replace the tasks the database holds now.
    #[arg(long)]
    pub force: bool,
}

/// Run `barkeep backup`.
pub async fn run_backup(global: &Global, args: BackupArgs) -> Result<ExitCode> {
    let client = global.database().await?.connect().await?;
    let doc = backup::backup(&client).await?;
    let text = serde_json::to_string_pretty(&doc)?;
    // `-` is standard output, as for other Unix tools, not a file named `-`.
    match args.out.as_ref().filter(|p| p.as_os_str() != "-") {
        None => println!("{text}"),
        Some(path) => {
            // Write a sibling and rename, so a failed write leaves no half file.
            if path.exists() {
                bail!(
                    "{} exists; choose another --out or remove it first",
                    path.display()
                );
            }
            let tmp = path.with_extension("partial");
            let mut f = std::fs::File::create(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            f.write_all(text.as_bytes())
                .and_then(|_| f.write_all(b"\n"))
                .and_then(|_| f.sync_all())
                .with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, path)
                .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
            eprintln!(
                "backed up {} and {} to {}",
                counted(doc.core_asset_registry_all.len(), "asset"),
                counted(doc.data_agg_state.len(), "task"),
                path.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Run `barkeep restore`.
pub async fn run_restore(global: &Global, args: RestoreArgs) -> Result<ExitCode> {
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let doc = Backup::parse(&bytes).with_context(|| format!("{}", args.file.display()))?;
    let mut client = global.database().await?.connect().await?;
    let present = backup::tasks_present(&client).await?;
    if present > 0 && !args.force {
        bail!(
            "restore replaces the {present} tasks in data_agg_state with the {} of {}; add --force to do it",
            doc.data_agg_state.len(),
            args.file.display()
        );
    }
    let report = backup::restore(&mut client, &doc).await?;
    println!(
        "restored {} and {} from {} ({} replaced)",
        counted(report.assets_restored, "asset"),
        counted(report.tasks_restored, "task"),
        args.file.display(),
        counted(report.tasks_replaced, "task")
    );
    Ok(ExitCode::SUCCESS)
}
