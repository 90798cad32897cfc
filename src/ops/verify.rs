//! `barkeep verify` as a service: the checklist's Steps 2–6 and its 12
//! success criteria, the security properties of the SQL face (docs/DESIGN.md), and (`--deep`) a
//! recomputation of stored bars from their sources. Each check is PASS,
//! FAIL or SKIP with the value observed. Criteria the checklist ties to its
//! own constants (start 2025-07-01, priority 100) are judged against how
//! the tasks were synced: one start per symbol, one priority for all; its
//! daily quality window (criterion 12) ends at the newest data, not at the
//! wall clock.
//! Nothing here writes: the sync of Step 6 runs in a rolled-back transaction.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use super::quality::{self, QualityLine, QualitySettings, Since};
use super::status::{self, StatusSettings};
use crate::migrate;
use crate::model::calendar::first_bucket_at_or_after;
use crate::model::{Calendar, Timeframe};

pub mod deep;

pub use deep::{DeepReport, DeepSettings};

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Outcome {
    Pass,
    Fail,
    Skip,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "SKIP",
        }
    }
}

/// One check and what it saw.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// Stable name: `step2`, `step5.enabled`, `criterion9`, `security.definer`…
    pub id: String,
    pub title: String,
    pub outcome: Outcome,
    pub observed: String,
}

/// What to verify beyond the checklist.
#[derive(Debug, Clone, Default)]
pub struct VerifySettings {
    /// Recompute stored bars from their sources.
    pub deep: Option<DeepSettings>,
}

/// What `barkeep verify` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyReport {
    pub checks: Vec<Check>,
    pub deep: Option<DeepReport>,
    /// True when every check passed (none failed, none skipped) and the deep
    /// check found no difference.
    pub passed: bool,
}

/// The checklist's five functions with their argument types.
pub const CHECKLIST_FUNCTIONS: [(&str, &str); 5] = [
    ("agg_bootstrap_cursor", "text, text, timestamp with time zone"),
    (
        "catchup_aggregation_range",
        "text, text, timestamp with time zone, integer, timestamp with time zone, integer, boolean",
    ),
    (
        "agg_finish",
        "text, text, boolean, timestamp with time zone, jsonb, text, text, timestamp with time zone, integer",
    ),
    ("agg_get_due_tasks", "text, timestamp with time zone, integer, integer"),
    ("sync_agg_state_from_registry", "text, timestamp with time zone"),
];

/// Functions that write task state besides the five: the security
/// properties of the SQL face (docs/DESIGN.md) hold for them too.
const OTHER_DEFINER_FUNCTIONS: [&str; 2] = ["agg_claim_tasks", "agg_heartbeat"];

struct Checks(Vec<Check>);

impl Checks {
    fn push(&mut self, id: &str, title: &str, pass: bool, observed: impl Into<String>) {
        self.0.push(Check {
            id: id.into(),
            title: title.into(),
            outcome: if pass { Outcome::Pass } else { Outcome::Fail },
            observed: observed.into(),
        });
    }

    fn skip(&mut self, id: &str, title: &str, observed: impl Into<String>) {
        self.0.push(Check {
            id: id.into(),
            title: title.into(),
            outcome: Outcome::Skip,
            observed: observed.into(),
        });
    }

    /// Repeat an earlier check's outcome under a criterion's name.
    fn same_as(&mut self, id: &str, title: &str, earlier: &str) {
        if let Some(c) = self.0.iter().find(|c| c.id == earlier).cloned() {
            self.0.push(Check {
                id: id.into(),
                title: title.into(),
                outcome: c.outcome,
                observed: format!("{} (as {earlier})", c.observed),
            });
        }
    }
}

/// One row of pg_proc for a function of interest.
struct Function {
    name: String,
    args: String,
    result: String,
    definer: bool,
    /// Trailing arguments with a default.
    defaults: i16,
    config: Vec<String>,
    public_execute: bool,
}

async fn functions(client: &Client) -> Result<Vec<Function>> {
    let names: Vec<String> = CHECKLIST_FUNCTIONS
        .iter()
        .map(|(n, _)| n.to_string())
        .chain(OTHER_DEFINER_FUNCTIONS.iter().map(|n| n.to_string()))
        .collect();
    let rows = client
        .query(
            "SELECT p.proname::text, oidvectortypes(p.proargtypes),
                    pg_get_function_result(p.oid), p.prosecdef, coalesce(p.proconfig, '{}'),
                    p.pronargdefaults,
                    EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                            WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')
             FROM pg_proc p
             WHERE p.proname = ANY($1) AND p.pronamespace = current_schema()::regnamespace
             ORDER BY p.proname",
            &[&names],
        )
        .await
        .context("reading pg_proc")?;
    Ok(rows
        .iter()
        .map(|r| Function {
            name: r.get(0),
            args: r.get(1),
            result: r.get(2),
            definer: r.get(3),
            config: r.get(4),
            defaults: r.get(5),
            public_execute: r.get(6),
        })
        .collect())
}

/// Whether the checklist's call with `args` reaches `f`: its arguments
/// start with them, and any further ones have defaults (a later step may
/// add an optional argument without breaking a caller).
fn callable_as(f: &Function, args: &str) -> bool {
    let have: Vec<&str> = if f.args.is_empty() {
        Vec::new()
    } else {
        f.args.split(", ").collect()
    };
    let want: Vec<&str> = args.split(", ").collect();
    have.len() >= want.len()
        && have[..want.len()] == want[..]
        && (have.len() - want.len()) as i64 <= i64::from(f.defaults)
}

fn list(items: &[String], max: usize) -> String {
    if items.len() <= max {
        items.join(", ")
    } else {
        format!("{}, … ({} in all)", items[..max].join(", "), items.len())
    }
}

/// Run every check (and the deep check when asked).
pub async fn verify(client: &Client, settings: &VerifySettings) -> Result<VerifyReport> {
    crate::migrate::require_migrated(client).await?;
    let mut c = Checks(Vec::new());

    // Step 2: the three columns, typed and NOT NULL.
    let rows = client
        .query(
            "SELECT column_name::text, data_type::text, is_nullable::text
             FROM information_schema.columns
             WHERE table_name = 'data_agg_state'
               AND column_name IN ('agg_start_utc', 'enabled', 'task_priority')
             ORDER BY ordinal_position",
            &[],
        )
        .await
        .context("Step 2")?;
    let cols: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expected_cols = [
        ("agg_start_utc", "timestamp with time zone"),
        ("enabled", "boolean"),
        ("task_priority", "integer"),
    ];
    let cols_ok = cols.len() == 3
        && expected_cols.iter().all(|(n, t)| {
            cols.iter()
                .any(|(cn, ct, nul)| cn == n && ct == t && nul == "NO")
        });
    let observed = cols
        .iter()
        .map(|(n, t, nul)| format!("{n} {t}{}", if nul == "NO" { " NOT NULL" } else { " NULL" }))
        .collect::<Vec<_>>();
    c.push(
        "step2",
        "Step 2: the 3 new columns exist",
        cols_ok,
        list(&observed, 5),
    );

    // Step 3: the five functions, SECURITY DEFINER.
    let funcs = functions(client).await?;
    let five: Vec<&Function> = funcs
        .iter()
        .filter(|f| CHECKLIST_FUNCTIONS.iter().any(|(n, _)| *n == f.name))
        .collect();
    let not_definer: Vec<String> = five
        .iter()
        .filter(|f| !f.definer)
        .map(|f| f.name.clone())
        .collect();
    c.push(
        "step3",
        "Step 3: 5 functions, all prosecdef",
        five.len() == 5 && not_definer.is_empty(),
        format!(
            "{} functions{}",
            five.len(),
            if not_definer.is_empty() {
                ", all SECURITY DEFINER".to_string()
            } else {
                format!("; not SECURITY DEFINER: {}", not_definer.join(", "))
            }
        ),
    );

    // Step 4: the claim index.
    let index: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_indexes
             WHERE tablename = 'data_agg_state' AND indexname = 'idx_agg_state_due_priority'",
            &[],
        )
        .await
        .context("Step 4")?
        .get(0);
    c.push(
        "step4",
        "Step 4: index idx_agg_state_due_priority",
        index == 1,
        format!("{index} index"),
    );

    // Step 5: data integrity, judged against how the tasks were synced.
    let row = client
        .query_one(
            "SELECT count(*),
                    count(*) FILTER (WHERE agg_start_utc IS NULL),
                    count(DISTINCT task_priority),
                    count(*) FILTER (WHERE status = 'hard_failed'),
                    count(*) FILTER (WHERE hard_fail_streak > 0)
             FROM data_agg_state",
            &[],
        )
        .await
        .context("Step 5")?;
    let (tasks, null_start, priorities, hard_failed, streaks): (i64, i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    c.push(
        "step5.start_set",
        "Step 5: every task has agg_start_utc",
        null_start == 0,
        format!("{null_start} of {tasks} tasks without a start"),
    );
    // A task parked by sync (its asset inactive) is disabled as designed.
    let disabled = client
        .query(
            "SELECT s.canonical_symbol || ' ' || s.timeframe
             FROM data_agg_state s
             LEFT JOIN core_asset_registry_all r ON r.canonical_symbol = s.canonical_symbol
             WHERE NOT s.enabled AND r.active AND r.test_active
             ORDER BY 1",
            &[],
        )
        .await
        .context("Step 5: disabled tasks")?;
    let disabled: Vec<String> = disabled.iter().map(|r| r.get(0)).collect();
    let parked: i64 = client
        .query_one("SELECT count(*) FROM data_agg_state WHERE NOT enabled", &[])
        .await
        .context("Step 5: disabled tasks")?
        .get(0);
    c.push(
        "step5.enabled",
        "Step 5: tasks enabled (except those parked with an inactive asset)",
        disabled.is_empty(),
        if disabled.is_empty() && parked == 0 {
            format!("all {tasks} tasks enabled")
        } else if disabled.is_empty() {
            format!("{parked} disabled, all with an inactive asset")
        } else {
            format!(
                "{} disabled with an active asset: {}",
                disabled.len(),
                list(&disabled, 5)
            )
        },
    );
    let prio_rows = client
        .query(
            "SELECT task_priority, count(*) FROM data_agg_state GROUP BY 1 ORDER BY 2 DESC, 1",
            &[],
        )
        .await
        .context("Step 5: priorities")?;
    let prio: Vec<String> = prio_rows
        .iter()
        .map(|r| format!("{} ({} tasks)", r.get::<_, i32>(0), r.get::<_, i64>(1)))
        .collect();
    if tasks == 0 {
        c.skip(
            "step5.priority",
            "Step 5: one priority for all tasks",
            "no tasks: run `barkeep sync`",
        );
    } else {
        c.push(
            "step5.priority",
            "Step 5: one priority for all tasks",
            priorities == 1,
            format!("{priorities} distinct: {}", list(&prio, 5)),
        );
    }
    c.push(
        "step5.hard_failed",
        "Step 5: no hard_failed task",
        hard_failed == 0,
        format!("{hard_failed} hard_failed"),
    );

    // Step 6: the functions answer.
    step6(client, &mut c).await?;

    // The 12 success criteria.
    let steps = migrate::status(client).await?;
    let pending: Vec<String> = steps
        .iter()
        .filter(|s| !s.applied)
        .map(|s| s.name.clone())
        .collect();
    let edited: Vec<String> = steps
        .iter()
        .filter(|s| s.applied && !s.checksum_ok)
        .map(|s| s.name.clone())
        .collect();
    let stale_functions = stale_function_files(client).await?;
    c.push(
        "criterion1",
        "1. migration applied without errors",
        pending.is_empty() && edited.is_empty() && stale_functions.is_empty(),
        if pending.is_empty() && edited.is_empty() && stale_functions.is_empty() {
            format!("{} steps applied, checksums match", steps.len())
        } else {
            format!(
                "pending: [{}]; edited since applied: [{}]; function files not current: [{}]",
                pending.join(", "),
                edited.join(", "),
                stale_functions.join(", ")
            )
        },
    );
    c.same_as(
        "criterion2",
        "2. all 3 new columns exist with correct types",
        "step2",
    );
    let mut wrong = Vec::new();
    for (name, args) in CHECKLIST_FUNCTIONS {
        let found: Vec<&&Function> = five.iter().filter(|f| f.name == name).collect();
        if !found.iter().any(|f| callable_as(f, args)) {
            let seen = found
                .iter()
                .map(|f| format!("{name}({})", f.args))
                .collect::<Vec<_>>();
            wrong.push(if seen.is_empty() {
                format!("{name} missing")
            } else {
                seen.join(" ")
            });
        }
    }
    let results_ok = five.iter().all(|f| match f.name.as_str() {
        "agg_bootstrap_cursor" => f.result == "timestamp with time zone",
        "catchup_aggregation_range" | "agg_finish" => f.result == "jsonb",
        _ => f.result.starts_with("TABLE("),
    });
    c.push(
        "criterion3",
        "3. all 5 functions exist with correct signatures",
        wrong.is_empty() && results_ok,
        if wrong.is_empty() {
            if results_ok {
                "5 signatures as the checklist calls them".to_string()
            } else {
                "a function returns another type".to_string()
            }
        } else {
            format!("differ: {}", wrong.join("; "))
        },
    );
    c.same_as("criterion4", "4. index created on data_agg_state", "step4");
    criterion5(client, &mut c, tasks).await?;
    c.same_as("criterion6", "6. all tasks enabled", "step5.enabled");
    c.same_as(
        "criterion7",
        "7. all tasks share one task_priority",
        "step5.priority",
    );
    criterion8(client, &mut c).await?;

    let (_, task_rows) = status::tasks(client, &StatusSettings::default()).await?;
    let watched: Vec<_> = task_rows
        .iter()
        .filter(|t| t.is_mandatory && t.enabled)
        .collect();
    let behind: Vec<String> = watched
        .iter()
        .filter(|t| t.behind_minutes.is_some_and(|b| b >= 60.0))
        .map(|t| {
            format!(
                "{} {} {:.0} min",
                t.symbol,
                t.timeframe,
                t.behind_minutes.unwrap_or(0.0)
            )
        })
        .collect();
    let worst = watched
        .iter()
        .filter_map(|t| t.behind_minutes)
        .fold(0.0_f64, f64::max);
    if watched.is_empty() {
        c.skip(
            "criterion9",
            "9. aggregation lag < 1 hour for all mandatory tasks",
            "no enabled mandatory task",
        );
    } else {
        c.push(
            "criterion9",
            "9. aggregation lag < 1 hour for all mandatory tasks",
            behind.is_empty(),
            if behind.is_empty() {
                format!(
                    "{} tasks, at most {worst:.1} min behind their data",
                    watched.len()
                )
            } else {
                format!("behind: {}", list(&behind, 5))
            },
        );
    }
    c.same_as(
        "criterion10",
        "10. zero hard_failed tasks",
        "step5.hard_failed",
    );
    c.push(
        "criterion11",
        "11. zero hard_fail_streak",
        streaks == 0,
        format!("{streaks} tasks with a streak"),
    );
    criterion12(client, &mut c).await?;

    security(&funcs, &mut c);

    let deep = match &settings.deep {
        Some(d) => Some(deep::deep(client, d).await?),
        None => None,
    };
    // A skipped check is not a passed one: a database without tasks or runs
    // has not met the criteria yet, and its SKIP lines say what to run.
    let passed = c.0.iter().all(|k| k.outcome == Outcome::Pass)
        && deep.as_ref().is_none_or(|d| d.differences.is_empty());
    Ok(VerifyReport {
        checks: c.0,
        deep,
        passed,
    })
}

/// Function files whose applied checksum is not the one this barkeep ships.
async fn stale_function_files(client: &Client) -> Result<Vec<String>> {
    let rows = match client
        .query("SELECT file, checksum FROM barkeep_schema_functions", &[])
        .await
    {
        Ok(rows) => rows,
        Err(_) => {
            return Ok(migrate::FUNCTION_FILES
                .iter()
                .map(|f| f.name.to_string())
                .collect())
        }
    };
    let applied: BTreeMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    Ok(migrate::FUNCTION_FILES
        .iter()
        .filter(|f| applied.get(f.name) != Some(&f.checksum()))
        .map(|f| f.name.to_string())
        .collect())
}

async fn step6(client: &Client, c: &mut Checks) -> Result<()> {
    // agg_bootstrap_cursor: the first bucket at or after each task's start.
    let rows = client
        .query(
            "SELECT s.canonical_symbol, s.timeframe, coalesce(r.asset_class, 'crypto'), s.agg_start_utc,
                    agg_bootstrap_cursor(s.canonical_symbol, s.timeframe)
             FROM data_agg_state s
             LEFT JOIN core_asset_registry_all r ON r.canonical_symbol = s.canonical_symbol
             WHERE s.agg_start_utc IS NOT NULL
             ORDER BY 1, 2",
            &[],
        )
        .await;
    match rows {
        Err(e) => c.push(
            "step6.bootstrap",
            "Step 6: agg_bootstrap_cursor",
            false,
            format!("error: {e}"),
        ),
        Ok(rows) if rows.is_empty() => c.skip(
            "step6.bootstrap",
            "Step 6: agg_bootstrap_cursor",
            "no tasks: run `barkeep sync`",
        ),
        Ok(rows) => {
            let mut wrong = Vec::new();
            for r in &rows {
                let (symbol, tf, class): (String, String, String) = (r.get(0), r.get(1), r.get(2));
                let start: DateTime<Utc> = r.get(3);
                let got: Option<DateTime<Utc>> = r.get(4);
                let expected = Timeframe::parse(&tf).ok().map(|tf| {
                    first_bucket_at_or_after(Calendar::for_asset_class(&class), tf, start)
                });
                if got != expected || expected.is_none() {
                    wrong.push(format!(
                        "{symbol} {tf}: {}",
                        got.map(|g| g.to_rfc3339()).unwrap_or("NULL".into())
                    ));
                }
            }
            c.push(
                "step6.bootstrap",
                "Step 6: agg_bootstrap_cursor gives each task's first bucket",
                wrong.is_empty(),
                if wrong.is_empty() {
                    format!(
                        "{} tasks, each at the first boundary at or after its agg_start_utc",
                        rows.len()
                    )
                } else {
                    format!("wrong: {}", list(&wrong, 3))
                },
            );
        }
    }

    match client
        .query_one(
            "SELECT COUNT(*) FROM agg_get_due_tasks('prod', NOW(), 10, 10)",
            &[],
        )
        .await
    {
        Ok(r) => c.push(
            "step6.due_tasks",
            "Step 6: agg_get_due_tasks answers",
            true,
            format!("{} due tasks", r.get::<_, i64>(0)),
        ),
        Err(e) => c.push(
            "step6.due_tasks",
            "Step 6: agg_get_due_tasks answers",
            false,
            format!("error: {e}"),
        ),
    }

    // The checklist's sync, in a transaction that is rolled back.
    let outcome = async {
        client.batch_execute("BEGIN").await?;
        let r = client
            .query_one(
                "SELECT success, tasks_total FROM sync_agg_state_from_registry('prod', '2025-07-01 00:00:00+00'::timestamptz)",
                &[],
            )
            .await;
        client.batch_execute("ROLLBACK").await?;
        r
    }
    .await;
    match outcome {
        Ok(r) => {
            let (success, total): (bool, i32) = (r.get(0), r.get(1));
            c.push(
                "step6.sync",
                "Step 6: sync_agg_state_from_registry answers success",
                success,
                format!("success={success}, {total} tasks (rolled back)"),
            );
        }
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            c.push(
                "step6.sync",
                "Step 6: sync_agg_state_from_registry answers success",
                false,
                format!("error: {e}"),
            );
        }
    }
    Ok(())
}

/// Criterion 5, judged against sync: every task has a start, and the tasks
/// of a symbol share one (as one sync creates them). The 1m bars before a
/// start are shown: a start later than the data leaves them out on purpose.
async fn criterion5(client: &Client, c: &mut Checks, tasks: i64) -> Result<()> {
    let title = "5. all tasks have agg_start_utc as synced (one start per symbol)";
    if tasks == 0 {
        c.skip("criterion5", title, "no tasks: run `barkeep sync`");
        return Ok(());
    }
    let rows = client
        .query(
            "SELECT s.canonical_symbol, count(DISTINCT s.agg_start_utc), min(s.agg_start_utc),
                    count(*) FILTER (WHERE s.agg_start_utc IS NULL),
                    (SELECT count(*) FROM data_bars b WHERE b.canonical_symbol = s.canonical_symbol
                       AND b.timeframe = '1m' AND b.ts_utc < min(s.agg_start_utc))
             FROM data_agg_state s GROUP BY s.canonical_symbol ORDER BY 1",
            &[],
        )
        .await
        .context("criterion 5")?;
    let mut bad = Vec::new();
    let mut seen = Vec::new();
    for r in &rows {
        let (symbol, starts, first, nulls, before): (String, i64, Option<DateTime<Utc>>, i64, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        if starts != 1 || nulls > 0 {
            bad.push(format!("{symbol}: {starts} starts, {nulls} unset"));
        }
        let left_out = if before > 0 {
            format!(", {before} earlier 1m bars left out")
        } else {
            String::new()
        };
        seen.push(format!(
            "{symbol} {}{left_out}",
            first
                .map(|f| f.format("%Y-%m-%d %H:%MZ").to_string())
                .unwrap_or("-".into())
        ));
    }
    c.push(
        "criterion5",
        title,
        bad.is_empty(),
        if bad.is_empty() {
            list(&seen, 5)
        } else {
            list(&bad, 5)
        },
    );
    Ok(())
}

/// Criterion 8: the longest logged run took under 5 minutes.
async fn criterion8(client: &Client, c: &mut Checks) -> Result<()> {
    let title = "8. aggregation runs complete within 5 minutes";
    match client
        .query_one(
            "SELECT count(*), max(extract(epoch FROM finished_at - started_at))::float8
             FROM agg_run_log WHERE finished_at IS NOT NULL",
            &[],
        )
        .await
    {
        Ok(r) => {
            let (runs, longest): (i64, Option<f64>) = (r.get(0), r.get(1));
            match longest {
                None => c.skip("criterion8", title, "no run logged yet: run `barkeep run`"),
                Some(s) => c.push(
                    "criterion8",
                    title,
                    s < 300.0,
                    format!("longest of {runs} logged runs: {s:.1} s"),
                ),
            }
        }
        Err(e) => c.skip("criterion8", title, format!("run log unreadable: {e}")),
    }
    Ok(())
}

/// Criterion 12, the checklist's daily quality query, judged against the
/// data rather than the wall clock: its window is the 24 hours up to the
/// newest 1m bar of the tasks' symbols (up to now, as the checklist's
/// when the data is live), so a database fed from history is judged on its
/// newest day instead of skipped. A symbol and timeframe passes with >= 90%
/// good bars, or, below that, when every bar its 1m minutes allow to be
/// good is good: the shortfall is in the data (`barkeep quality` shows it),
/// not in the aggregation.
async fn criterion12(client: &Client, c: &mut Checks) -> Result<()> {
    let title = "12. data quality stable (>= 90% good bars, or all the 1m minutes allow, newest 24 h of data)";
    let (newest, now) = quality::newest_1m_and_now(client).await?;
    let Some(window_end) = newest.map(|n| (n + chrono::Duration::minutes(1)).min(now)) else {
        c.skip(
            "criterion12",
            title,
            "no 1m bar under any task: run `barkeep ingest`",
        );
        return Ok(());
    };
    let settings = QualitySettings {
        since: Since::At(window_end - chrono::Duration::hours(24)),
        ..QualitySettings::default()
    };
    let report = quality::quality(client, &settings).await?;
    let window = if now - window_end < chrono::Duration::minutes(5) {
        "last 24 h".to_string()
    } else {
        format!(
            "24 h up to the newest data, {}",
            window_end.format("%Y-%m-%d %H:%MZ")
        )
    };
    if report.lines.is_empty() {
        c.skip(
            "criterion12",
            title,
            format!("no derived bar in the {window}: run `barkeep run --once`"),
        );
        return Ok(());
    }
    let pct = |l: &QualityLine| {
        format!(
            "{} {} {:.1}% (minutes allow {:.1}%)",
            l.symbol, l.timeframe, l.quality_pct, l.minutes_allow_good_pct
        )
    };
    let below: Vec<&QualityLine> = report
        .lines
        .iter()
        .filter(|l| l.quality_pct < settings.threshold_pct)
        .collect();
    let (held_by_data, poor): (Vec<&QualityLine>, Vec<&QualityLine>) = below
        .into_iter()
        .partition(|l| l.good_bars >= l.minutes_allow_good);
    let observed = if !poor.is_empty() {
        format!(
            "{window}: below 90% with the minutes for better: {}",
            list(&poor.iter().map(|l| pct(l)).collect::<Vec<_>>(), 5)
        )
    } else if held_by_data.is_empty() {
        let lowest = report
            .lines
            .iter()
            .map(|l| l.quality_pct)
            .fold(100.0_f64, f64::min);
        format!(
            "{window}: {} symbol/timeframe pairs, lowest {lowest:.1}%",
            report.lines.len()
        )
    } else {
        format!(
            "{window}: {} of {} symbol/timeframe pairs >= 90%; below it only as the 1m minutes allow: {}",
            report.lines.len() - held_by_data.len(),
            report.lines.len(),
            list(&held_by_data.iter().map(|l| pct(l)).collect::<Vec<_>>(), 5)
        )
    };
    c.push("criterion12", title, poor.is_empty(), observed);
    Ok(())
}

/// docs/DESIGN.md, "Security of the SQL face": SECURITY DEFINER, a pinned
/// search_path, no EXECUTE for PUBLIC,
/// exactly one function of each name.
fn security(funcs: &[Function], c: &mut Checks) {
    let names: Vec<&str> = CHECKLIST_FUNCTIONS
        .iter()
        .map(|(n, _)| *n)
        .chain(OTHER_DEFINER_FUNCTIONS)
        .collect();
    let present: Vec<&Function> = funcs
        .iter()
        .filter(|f| names.contains(&f.name.as_str()))
        .collect();
    let sig = |f: &Function| format!("{}({})", f.name, f.args);

    let not_definer: Vec<String> = present
        .iter()
        .filter(|f| !f.definer)
        .map(|f| sig(f))
        .collect();
    c.push(
        "security.definer",
        "SQL face security (docs/DESIGN.md): every task function is SECURITY DEFINER",
        not_definer.is_empty(),
        if not_definer.is_empty() {
            format!("{} functions", present.len())
        } else {
            format!("SECURITY INVOKER: {}", not_definer.join(", "))
        },
    );
    let unpinned: Vec<String> = present
        .iter()
        .filter(|f| {
            !f.config
                .iter()
                .any(|s| s.starts_with("search_path=") && !s.contains("$user"))
        })
        .map(|f| sig(f))
        .collect();
    c.push(
        "security.search_path",
        "SQL face security (docs/DESIGN.md): search_path pinned on each",
        unpinned.is_empty(),
        if unpinned.is_empty() {
            format!("{} functions", present.len())
        } else {
            format!("unpinned: {}", unpinned.join(", "))
        },
    );
    let public: Vec<String> = present
        .iter()
        .filter(|f| f.public_execute)
        .map(|f| sig(f))
        .collect();
    c.push(
        "security.public_execute",
        "SQL face security (docs/DESIGN.md): no EXECUTE for PUBLIC",
        public.is_empty(),
        if public.is_empty() {
            format!("{} functions", present.len())
        } else {
            format!("PUBLIC may execute: {}", public.join(", "))
        },
    );
    let mut counts: BTreeMap<&str, usize> = names.iter().map(|n| (*n, 0)).collect();
    for f in &present {
        if let Some(n) = counts.get_mut(f.name.as_str()) {
            *n += 1;
        }
    }
    let off: Vec<String> = counts
        .iter()
        .filter(|(_, n)| **n != 1)
        .map(|(name, n)| format!("{name} ×{n}"))
        .collect();
    c.push(
        "security.one_each",
        "SQL face security (docs/DESIGN.md): exactly one function of each name",
        off.is_empty(),
        if off.is_empty() {
            format!("{} names", counts.len())
        } else {
            off.join(", ")
        },
    );
}
