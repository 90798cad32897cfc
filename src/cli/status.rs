//! `barkeep status`: every task's state as a table (bad states stand out on
//! a terminal) or JSON, and the quarantine's size and newest entries.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::Global;
use crate::model::{Symbol, Timeframe};
use crate::ops::counted;
use crate::ops::status::{self, StatusSettings, TaskState};

/// Arguments of `barkeep status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this symbol's tasks.
    #[arg(long)]
    pub symbol: Option<Symbol>,
    /// Only this timeframe (5m, 15m, 1h, 4h, 1d, 1w).
    #[arg(long, value_parser = Timeframe::parse_derived)]
    pub timeframe: Option<Timeframe>,
    /// Only tasks in this state (idle, running, hard_failed, disabled).
    #[arg(long, value_parser = TaskState::parse)]
    pub status: Option<TaskState>,
    /// How many of the newest quarantined rows to show.
    #[arg(long, default_value_t = 5)]
    pub quarantine: i64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

const RED: &str = "\x1b[31;1m";
const YELLOW: &str = "\x1b[33m";
const RESET: &str = "\x1b[0m";

/// A duration in minutes as a person reads it: `42m`, `5h07m`, `3d04h`,
/// `812d`; `-` when unknown. Below zero is shown as `0m`: a cursor past the
/// newest 1m bar (the data stopped, the task finalized the empty buckets
/// since) is not behind at all; `--json` keeps the checklist's signed value.
fn duration(m: Option<f64>) -> String {
    let Some(m) = m else {
        return "-".into();
    };
    let total = m.max(0.0).round() as i64;
    let (days, hours, mins) = (total / 1440, total / 60 % 24, total % 60);
    if total < 60 {
        format!("{mins}m")
    } else if total < 2 * 1440 {
        format!("{}h{mins:02}m", total / 60)
    } else if days < 100 {
        format!("{days}d{hours:02}h")
    } else {
        format!("{days}d")
    }
}

/// Run `barkeep status`.
pub async fn run(global: &Global, args: StatusArgs) -> Result<ExitCode> {
    let client = global.database().await?.connect().await?;
    if let Some(symbol) = &args.symbol {
        super::require_registered(&client, symbol).await?;
    }
    let settings = StatusSettings {
        symbol: args.symbol,
        timeframe: args.timeframe,
        status: args.status,
        quarantine_newest: args.quarantine,
    };
    let report = status::status(&client, &settings).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    if report.tasks_in_database == 0 {
        println!("no aggregation tasks yet: register assets (`barkeep assets add`), then run `barkeep sync`");
    } else if report.tasks.is_empty() {
        println!(
            "no task matches (the database has {} tasks)",
            report.tasks_in_database
        );
    } else {
        let color = std::io::stdout().is_terminal();
        println!(
            "{:<10} {:<4} {:<11} {:<17} {:>9} {:>9} {:>10} {:>6}  LAST ERROR",
            "SYMBOL", "TF", "STATUS", "CURSOR", "LAG", "BEHIND", "SINCE OK", "STREAK"
        );
        for t in &report.tasks {
            let status = if t.enabled || t.status == "disabled" {
                t.status.clone()
            } else {
                format!("{} (off)", t.status)
            };
            let line = format!(
                "{:<10} {:<4} {:<11} {:<17} {:>9} {:>9} {:>10} {:>6}  {}",
                t.symbol,
                t.timeframe,
                status,
                t.cursor
                    .map(|c| c.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_else(|| "-".into()),
                duration(t.lag_minutes),
                duration(t.behind_minutes),
                duration(t.minutes_since_success),
                t.hard_fail_streak,
                t.last_error.as_deref().unwrap_or("")
            );
            let paint = if t.status == "hard_failed" || t.hard_fail_streak > 0 {
                Some(RED)
            } else if t.is_bad() || t.behind_minutes.is_some_and(|b| b > 60.0) {
                Some(YELLOW)
            } else {
                None
            };
            match paint {
                Some(c) if color => println!("{c}{line}{RESET}"),
                _ => println!("{line}"),
            }
        }
    }
    let q = &report.quarantine;
    println!();
    println!(
        "quarantine: {} from {}{}",
        counted(q.rows, "row"),
        counted(q.files, "file"),
        if q.rows > 0 {
            " (see `barkeep quarantine list`)"
        } else {
            ""
        }
    );
    for e in &q.newest {
        println!(
            "  {} {}: {}",
            e.quarantined_at.format("%Y-%m-%d %H:%M"),
            e.location(),
            e.reason
        );
    }
    let h = &report.history;
    println!(
        "history: {} and {} kept for as-of reads{}{}",
        counted(h.kept.bar_versions, "retired bar version"),
        counted(h.kept.revisions_1m, "earlier 1m value"),
        h.pruned_before
            .map(|t| format!(", pruned before {}", t.format("%Y-%m-%d %H:%M")))
            .unwrap_or_default(),
        if h.kept.bar_versions + h.kept.revisions_1m > 0 {
            " (`barkeep history prune` or `run --keep-history-days N` bounds it)"
        } else {
            ""
        }
    );
    for l in &report.left_out {
        println!("warning: {}", l.line());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::duration;

    #[test]
    fn durations_read_as_minutes_hours_and_days_and_never_below_zero() {
        assert_eq!(duration(None), "-");
        assert_eq!(duration(Some(-1_808_447.0)), "0m");
        assert_eq!(duration(Some(0.4)), "0m");
        assert_eq!(duration(Some(42.0)), "42m");
        assert_eq!(duration(Some(307.0)), "5h07m");
        assert_eq!(duration(Some(4_560.0)), "3d04h");
        assert_eq!(duration(Some(1_169_280.0)), "812d");
    }
}
