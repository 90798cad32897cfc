//! The command line: clap definitions of every command and flag, one file
//! per command. Each file turns flags into the settings of a service in the
//! library, calls it, and prints its report as text or `--json`. Nothing
//! below this module knows clap or prints a report.

mod alerts;
mod assets;
mod backup;
mod bench;
mod completions;
mod db;
mod demo;
mod export;
mod history;
mod ingest;
mod pg;
mod quality;
mod quarantine;
mod rebuild;
mod run;
mod status;
mod sync;
mod task;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

mod serve;

use crate::db::Database;

/// Keeps 5m, 15m, 1h, 4h, 1d and 1w bars aggregated from 1-minute bars in PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "barkeep", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes (listed apart in each command's help).
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// PostgreSQL URL; without it barkeep uses its embedded cluster.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// Folder of the embedded cluster.
    #[arg(long, env = "BARKEEP_HOME", default_value = ".barkeep", global = true)]
    pub home: PathBuf,
    /// Log more (repeat for even more). `BARKEEP_LOG` (a tracing filter
    /// such as `barkeep=debug`) overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Log lines as text or as one JSON object per line.
    #[arg(
        long,
        value_enum,
        env = "BARKEEP_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    /// True when the database URL came from the `DATABASE_URL` environment
    /// variable rather than `--database-url` on the command line.
    #[arg(skip)]
    pub database_url_from_env: bool,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl Global {
    /// Resolve the database, starting the embedded cluster when needed.
    pub async fn database(&self) -> Result<Database> {
        Database::resolve(self.database_url.as_deref(), self.home.clone()).await
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole job on the embedded database with the shipped sample data.
    Demo(demo::DemoArgs),
    /// Manage the embedded PostgreSQL cluster.
    #[command(subcommand)]
    Pg(pg::PgCommand),
    /// Apply, revert or inspect the schema migrations.
    #[command(subcommand)]
    Db(db::DbCommand),
    /// Register and configure instruments.
    #[command(subcommand)]
    Assets(assets::AssetsCommand),
    /// Load 1-minute bars from HistData, MT4 or headed CSV files.
    Ingest(ingest::IngestArgs),
    /// Create and update aggregation tasks from the registry.
    Sync(sync::SyncArgs),
    /// Enable, disable, re-enable or re-prioritise aggregation tasks.
    #[command(subcommand)]
    Task(task::TaskCommand),
    /// Claim due tasks and aggregate them (forever, or `--once`).
    Run(run::RunArgs),
    /// Print stored bars as CSV or JSON.
    Export(export::ExportArgs),
    /// Recompute derived bars of a range (cascading up, new derivation_version).
    Rebuild(rebuild::RebuildArgs),
    /// Time barkeep against plain SQL on the same generated data.
    Bench(bench::BenchArgs),
    /// Serve the dashboard, the JSON API and Prometheus /metrics.
    Serve(serve::ServeArgs),
    /// Show every task's state, cursor, lag and errors, and the quarantine.
    Status(status::StatusArgs),
    /// Check the alert conditions; exit 0 ok, 1 warning, 2 critical.
    Alerts(alerts::AlertsArgs),
    /// Share of good bars and of 1m minutes present, per symbol and timeframe.
    Quality(quality::QualityArgs),
    /// List or purge the rows ingest quarantined.
    #[command(subcommand)]
    Quarantine(quarantine::QuarantineCommand),
    /// Run the checklist's verification steps and success criteria (and `--deep`).
    Verify(verify::VerifyArgs),
    /// Prune the history kept for as-of reads (retired bar versions, 1m revisions).
    #[command(subcommand)]
    History(history::HistoryCommand),
    /// Write the task state and the registry to a JSON file.
    Backup(backup::BackupArgs),
    /// Put back a file written by `barkeep backup`.
    Restore(backup::RestoreArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let mut cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let on_command_line = std::env::args_os().any(|a| {
        let a = a.to_string_lossy();
        a == "--database-url" || a.starts_with("--database-url=")
    });
    cli.global.database_url_from_env = cli.global.database_url.is_some() && !on_command_line;
    init_tracing(cli.global.verbose, cli.global.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

use crate::error::UsageError;

/// Print a command-line mistake as one line (what is wrong, and a similar
/// name when clap knows one) and exit 2; help and version print as usual.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    eprintln!("{}", one_line(&e.render().to_string()));
    ExitCode::from(2)
}

/// clap's error text on one line: its first paragraph joined, plus a
/// "similar name" tip.
fn one_line(rendered: &str) -> String {
    let head = rendered
        .split("\n\n")
        .next()
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let similar = rendered
        .lines()
        .filter_map(|l| l.trim().strip_prefix("tip: "))
        .find(|t| t.starts_with("a similar"));
    match similar {
        Some(tip) => format!("{head} ({tip})"),
        None => head,
    }
}

/// Refuse a symbol the registry does not hold, as a usage error.
pub async fn require_registered(
    client: &tokio_postgres::Client,
    symbol: &crate::model::Symbol,
) -> Result<()> {
    crate::migrate::require_migrated(client).await?;
    let known = crate::store::registry::is_registered(client, symbol).await?;
    if !known {
        return Err(UsageError(format!(
            "unknown symbol {symbol}: register it with `barkeep assets add {symbol} --class fx` (see `barkeep assets list`)"
        ))
        .into());
    }
    Ok(())
}

/// Logs go to stderr: by default warnings, and one line per task run of
/// the worker; `-v` adds barkeep's info, `-vv` its debug lines (the SQL
/// driver stays at info); `BARKEEP_LOG` replaces the filter. No colour
/// codes unless stderr is a terminal.
fn init_tracing(verbose: u8, format: LogFormat) {
    use std::io::IsTerminal;
    let default = match verbose {
        0 => "warn,barkeep::worker=info",
        1 => "warn,barkeep=info",
        _ => "info,barkeep=debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BARKEEP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}

/// Run one parsed command.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    let global = cli.global;
    match cli.command {
        Command::Demo(args) => demo::run(&global, args).await,
        Command::Pg(cmd) => pg::run(&global, cmd).await,
        Command::Db(cmd) => db::run(&global, cmd).await,
        Command::Assets(cmd) => assets::run(&global, cmd).await,
        Command::Ingest(args) => ingest::run(&global, args).await,
        Command::Sync(args) => sync::run(&global, args).await,
        Command::Task(cmd) => task::run(&global, cmd).await,
        Command::Run(args) => run::run(&global, args).await,
        Command::Export(args) => export::run(&global, args).await,
        Command::Rebuild(args) => rebuild::run(&global, args).await,
        Command::Bench(args) => bench::run(&global, args).await,
        Command::Serve(args) => serve::run(&global, args).await,
        Command::Status(args) => status::run(&global, args).await,
        Command::Alerts(args) => alerts::run(&global, args).await,
        Command::Quality(args) => quality::run(&global, args).await,
        Command::Quarantine(cmd) => quarantine::run(&global, cmd).await,
        Command::Verify(args) => verify::run(&global, args).await,
        Command::History(cmd) => history::run(&global, cmd).await,
        Command::Backup(args) => backup::run_backup(&global, args).await,
        Command::Restore(args) => backup::run_restore(&global, args).await,
        Command::Completions(args) => completions::run(args),
    }
}

/// Print `value` as pretty JSON on standard output.
pub(crate) fn print_json(value: &impl serde::Serialize) -> Result<()> {
    use anyhow::Context;
    println!(
        "{}",
        serde_json::to_string_pretty(value).context("writing JSON")?
    );
    Ok(())
}

/// Long-running services ignore SIGPIPE. The binary dies on a closed pipe
/// so `barkeep export … | head` ends quietly (src/main.rs); a server writing
/// to a socket its client closed, or a worker writing to a database
/// connection the server dropped (a restart, over a Unix socket), would die
/// the same way. Here a closed socket is an error of one write instead,
/// which the caller reports or retries.
pub(crate) fn ignore_closed_pipes() {
    #[cfg(unix)]
    // SAFETY: ignoring a signal installs no handler code, so nothing runs in
    // signal context; sigaction is process-wide and safe with threads.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigIgn,
        );
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{one_line, Cli};

    fn message(args: &[&str]) -> String {
        let e = Cli::try_parse_from(args).expect_err("a usage error");
        one_line(&e.render().to_string())
    }

    #[test]
    fn command_line_mistakes_are_one_line() {
        let typo = message(&["barkeep", "statsu"]);
        assert_eq!(
            typo,
            "error: unrecognized subcommand 'statsu' (a similar subcommand exists: 'status')"
        );
        let missing = message(&["barkeep", "ingest", "x.csv"]);
        assert!(!missing.contains('\n'), "{missing}");
        assert!(missing.contains("--symbol <SYMBOL>"), "{missing}");
        let flag = message(&["barkeep", "alerts", "--no-such-flag"]);
        assert_eq!(flag, "error: unexpected argument '--no-such-flag' found");
    }
}
