//! `barkeep task enable|disable|reenable|priority`: operator transitions.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::Global;
use crate::model::{Symbol, Timeframe};
use crate::tasks::{self, TaskAction, TaskSelector};

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Let a disabled task run again (all timeframes when none is given).
    Enable(TaskTarget),
    /// Stop a task from being claimed; a run in flight loses its lease.
    Disable(TaskTarget),
    /// Put a hard_failed or disabled task back to idle with its streaks cleared.
    Reenable(TaskTarget),
    /// Set the claim priority (lower runs first; the default is 100).
    Priority {
        #[command(flatten)]
        target: TaskTarget,
        /// New priority (0 to 10000).
        #[arg(long, value_parser = clap::value_parser!(i32).range(crate::ops::backup::check::TASK_PRIORITY))]
        priority: i32,
    },
    /// Set how long a task waits for a quiet feed before finalizing a
    /// bucket (`aggregation_delay_seconds`; only tasks reading 1m bars use it).
    Delay {
        #[command(flatten)]
        target: TaskTarget,
        /// Seconds after a bucket's end.
        #[arg(long, value_parser = clap::value_parser!(i32).range(0..=86_400))]
        seconds: i32,
    },
}

#[derive(Debug, Args)]
pub struct TaskTarget {
    /// Canonical symbol.
    pub symbol: Symbol,
    /// Timeframe (5m, 15m, 1h, 4h, 1d, 1w); all of the symbol's when omitted.
    #[arg(value_parser = Timeframe::parse_derived)]
    pub timeframe: Option<Timeframe>,
}

impl From<TaskTarget> for TaskSelector {
    fn from(t: TaskTarget) -> Self {
        TaskSelector {
            symbol: t.symbol,
            timeframe: t.timeframe,
        }
    }
}

pub async fn run(global: &Global, cmd: TaskCommand) -> Result<ExitCode> {
    let (target, action) = match cmd {
        TaskCommand::Enable(t) => (t, TaskAction::Enable),
        TaskCommand::Disable(t) => (t, TaskAction::Disable),
        TaskCommand::Reenable(t) => (t, TaskAction::Reenable),
        TaskCommand::Priority { target, priority } => (target, TaskAction::Priority(priority)),
        TaskCommand::Delay { target, seconds } => (target, TaskAction::Delay(seconds)),
    };
    let client = global.database().await?.connect().await?;
    super::require_registered(&client, &target.symbol).await?;
    let changed = tasks::apply(&client, &target.into(), action).await?;
    println!("{changed} task(s) updated");
    Ok(ExitCode::SUCCESS)
}
