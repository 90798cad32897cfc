//! `barkeep alerts` as a service: the checklist's three alert conditions
//! (no success for over an hour, a hard_failed task, a hard_fail_streak
//! above 0), stalled workers (tasks overdue and no run finished for a while),
//! tasks far behind their data and 1m rows before a pinned start, each a
//! problem naming its task or symbol with a severity. The worst severity is the exit code a Nagios or cron check wants.

use anyhow::{Context, Result};
use chrono::{DateTime, Duration, Utc};
use tokio_postgres::Client;

use super::left_out;
use super::status::{self, StatusSettings, TaskStatus};

/// How bad a problem is; the order is the exit code (0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Ok,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Ok => "OK",
            Severity::Warning => "WARNING",
            Severity::Critical => "CRITICAL",
        }
    }

    /// The Nagios plugin exit code.
    pub fn exit_code(self) -> u8 {
        self as u8
    }
}

/// Which condition a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Checklist ALERT 1: a mandatory task without a success for too long.
    Lag,
    /// Checklist ALERT 2: a task in status hard_failed.
    HardFailed,
    /// Checklist ALERT 3: a task whose hard_fail_streak is above 0.
    FailStreak,
    /// Tasks overdue while no run has finished for a while.
    Stalled,
    /// A task whose data has held a complete bucket unaggregated for too long.
    Behind,
    /// 1m rows before a pinned start, which no bar covers.
    LeftOut,
    /// Nothing to watch: the database has no task.
    NoTasks,
}

/// One problem.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Alert {
    pub kind: AlertKind,
    pub severity: Severity,
    pub symbol: Option<String>,
    pub timeframe: Option<String>,
    pub message: String,
}

impl Alert {
    /// The one line a check prints for this problem.
    pub fn line(&self) -> String {
        let task = match (&self.symbol, &self.timeframe) {
            (Some(s), Some(t)) => format!("{s} {t}: "),
            (Some(s), None) => format!("{s}: "),
            _ => String::new(),
        };
        format!("{} {task}{}", self.severity.as_str(), self.message)
    }
}

/// Thresholds.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// ALERT 1: minutes without a success (the checklist's 1 hour).
    pub lag_minutes: i64,
    /// Stalled workers: minutes a task may be overdue while nothing finishes.
    pub stall_minutes: i64,
    /// Minutes the data may hold a complete bucket before its task is behind.
    pub behind_minutes: i64,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            lag_minutes: 60,
            stall_minutes: 15,
            behind_minutes: 60,
        }
    }
}

/// What `barkeep alerts` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AlertReport {
    pub now: DateTime<Utc>,
    /// The worst severity found (ok when there is no problem).
    pub severity: Severity,
    pub tasks_checked: usize,
    /// The newest finished run, from the run log or the tasks.
    pub last_run_finished_at: Option<DateTime<Utc>>,
    pub alerts: Vec<Alert>,
}

fn task_alert(t: &TaskStatus, kind: AlertKind, severity: Severity, message: String) -> Alert {
    Alert {
        kind,
        severity,
        symbol: Some(t.symbol.clone()),
        timeframe: Some(t.timeframe.clone()),
        message,
    }
}

fn error_suffix(t: &TaskStatus) -> String {
    t.last_error
        .as_deref()
        .map(|e| format!("; last error: {e}"))
        .unwrap_or_default()
}

/// Evaluate every alert condition.
pub async fn alerts(client: &Client, settings: &AlertSettings) -> Result<AlertReport> {
    let (now, tasks) = status::tasks(client, &StatusSettings::default()).await?;
    let mut alerts = Vec::new();
    if tasks.is_empty() {
        alerts.push(Alert {
            kind: AlertKind::NoTasks,
            severity: Severity::Warning,
            symbol: None,
            timeframe: None,
            message: "no aggregation tasks: register assets and run `barkeep sync`".into(),
        });
    }
    for t in &tasks {
        if t.status == "hard_failed" {
            alerts.push(task_alert(
                t,
                AlertKind::HardFailed,
                Severity::Critical,
                format!(
                    "hard_failed after {} failed runs (re-enable with `barkeep task reenable {} {}`){}",
                    t.hard_fail_streak,
                    t.symbol,
                    t.timeframe,
                    error_suffix(t)
                ),
            ));
        } else if t.hard_fail_streak > 0 {
            alerts.push(task_alert(
                t,
                AlertKind::FailStreak,
                Severity::Warning,
                format!("hard_fail_streak {}{}", t.hard_fail_streak, error_suffix(t)),
            ));
        }
        if t.is_mandatory && t.enabled {
            if let Some(idle) = t.minutes_since_success {
                if idle > settings.lag_minutes as f64 {
                    alerts.push(task_alert(
                        t,
                        AlertKind::Lag,
                        Severity::Critical,
                        format!(
                            "no successful run for {idle:.1} minutes (limit {})",
                            settings.lag_minutes
                        ),
                    ));
                }
            }
        }
        if t.enabled {
            if let Some(behind) = t.behind_minutes {
                if behind > settings.behind_minutes as f64 {
                    alerts.push(task_alert(
                        t,
                        AlertKind::Behind,
                        Severity::Warning,
                        format!(
                            "{behind:.1} minutes behind its data (cursor {}, newest 1m bar {}; limit {})",
                            fmt_ts(t.cursor),
                            fmt_ts(t.latest_1m),
                            settings.behind_minutes
                        ),
                    ));
                }
            }
        }
    }

    for l in left_out::left_out(client, None).await? {
        alerts.push(Alert {
            kind: AlertKind::LeftOut,
            severity: Severity::Warning,
            symbol: Some(l.symbol.clone()),
            timeframe: None,
            message: l.message(),
        });
    }

    let last_finished = last_finish(client).await?;
    let stall = Duration::minutes(settings.stall_minutes);
    let quiet = last_finished.is_none_or(|t| now - t > stall);
    if quiet {
        let rows = client
            .query(
                "SELECT canonical_symbol, timeframe, status,
                        CASE WHEN status = 'running' THEN coalesce(lease_expires_at, running_started_at_utc)
                             ELSE next_run_at END
                 FROM data_agg_state
                 WHERE enabled AND (
                   (status = 'idle' AND next_run_at < $1)
                   OR (status = 'running' AND coalesce(lease_expires_at, running_started_at_utc) < $1))
                 ORDER BY canonical_symbol, timeframe",
                &[&(now - stall)],
            )
            .await
            .context("looking for overdue tasks")?;
        let since = last_finished
            .map(|t| format!("since {}", t.format("%Y-%m-%d %H:%M:%SZ")))
            .unwrap_or_else(|| "ever".into());
        for r in rows {
            let status: String = r.get(2);
            let due: DateTime<Utc> = r.get(3);
            let what = if status == "running" {
                "lease expired"
            } else {
                "due"
            };
            alerts.push(Alert {
                kind: AlertKind::Stalled,
                severity: Severity::Critical,
                symbol: Some(r.get(0)),
                timeframe: Some(r.get(1)),
                message: format!(
                    "stalled: {what} for {:.1} minutes and no run has finished {since}; is `barkeep run` running?",
                    (now - due).num_seconds() as f64 / 60.0
                ),
            });
        }
    }

    let severity = alerts
        .iter()
        .map(|a| a.severity)
        .max()
        .unwrap_or(Severity::Ok);
    Ok(AlertReport {
        now,
        severity,
        tasks_checked: tasks.len(),
        last_run_finished_at: last_finished,
        alerts,
    })
}

fn fmt_ts(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%MZ").to_string())
        .unwrap_or_else(|| "-".into())
}

/// The newest instant a run finished: the run log's newest finish, or a
/// task's last success or attempt when the log says less.
async fn last_finish(client: &Client) -> Result<Option<DateTime<Utc>>> {
    let from_tasks: Option<DateTime<Utc>> = client
        .query_one(
            "SELECT max(greatest(last_successful_at_utc, last_attempted_at_utc)) FROM data_agg_state
             WHERE status <> 'running'",
            &[],
        )
        .await
        .context("reading task run times")?
        .get(0);
    let from_log: Option<DateTime<Utc>> = match client
        .query_one("SELECT max(finished_at) FROM agg_run_log", &[])
        .await
    {
        Ok(row) => row.get(0),
        Err(e) => {
            tracing::debug!("reading agg_run_log: {e}");
            None
        }
    };
    Ok(from_tasks.max(from_log))
}
