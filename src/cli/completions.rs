//! `barkeep completions bash|zsh|fish`: shell completion scripts generated
//! from the command definitions, so they never fall behind the flags.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, CommandFactory};

/// Arguments of `barkeep completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Print the completion script for the chosen shell on standard output.
pub fn run(args: CompletionsArgs) -> Result<ExitCode> {
    let mut command = super::Cli::command();
    clap_complete::generate(args.shell, &mut command, "barkeep", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
