//! Loading 1-minute bars: formats, validation, quarantine and `COPY`.

use std::process::ExitCode;

use anyhow::{bail, Result};

use crate::cli::Global;

/// Arguments of `barkeep ingest`.
#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Files to load, or `-` for standard input.
    #[arg(required = true)]
    pub files: Vec<std::path::PathBuf>,
    /// Symbol the rows belong to.
    #[arg(long)]
    pub symbol: String,
}

/// Run `barkeep ingest`.
pub async fn run(_global: &Global, _args: IngestArgs) -> Result<ExitCode> {
    bail!("ingest is being built")
}
