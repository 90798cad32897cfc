//! `barkeep alerts`: a Nagios/cron check. Exit 0 when all is well, 1 on a
//! warning, 2 on a critical problem; one line per problem naming its task.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::Global;
use crate::ops::alerts::{self, AlertSettings, Severity};
use crate::ops::counted;

/// Arguments of `barkeep alerts`.
#[derive(Debug, Args)]
pub struct AlertsArgs {
    /// Minutes a mandatory task may go without a success (checklist ALERT 1).
    #[arg(long, default_value_t = 60)]
    pub lag_minutes: i64,
    /// Minutes tasks may stay overdue while no run finishes (stalled workers).
    #[arg(long, default_value_t = 15)]
    pub stall_minutes: i64,
    /// Minutes the data may hold a complete bucket before its task is behind.
    #[arg(long, default_value_t = 60)]
    pub behind_minutes: i64,
    /// Print JSON (the exit code is the same).
    #[arg(long)]
    pub json: bool,
}

/// Run `barkeep alerts`.
pub async fn run(global: &Global, args: AlertsArgs) -> Result<ExitCode> {
    let client = global.database().await?.connect().await?;
    let settings = AlertSettings {
        lag_minutes: args.lag_minutes,
        stall_minutes: args.stall_minutes,
        behind_minutes: args.behind_minutes,
    };
    let report = alerts::alerts(&client, &settings).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let critical = report
            .alerts
            .iter()
            .filter(|a| a.severity == Severity::Critical)
            .count();
        let warning = report
            .alerts
            .iter()
            .filter(|a| a.severity == Severity::Warning)
            .count();
        if report.alerts.is_empty() {
            println!("OK: {}, no problem", counted(report.tasks_checked, "task"));
        } else {
            println!(
                "{}: {critical} critical, {warning} warning ({} tasks)",
                report.severity.as_str(),
                report.tasks_checked
            );
        }
        for a in &report.alerts {
            println!("{}", a.line());
        }
    }
    Ok(ExitCode::from(report.severity.exit_code()))
}
