//! `barkeep verify` through the real binary: everything passes on a
//! demo-like database; each check fails on a copy of it where exactly that
//! property is broken; `--deep` finds a derived bar altered by SQL.

use std::collections::BTreeSet;

use crate::common::{stderr, stdout, TestDb};
use crate::fixtures::demo_db;

fn verify_json(db: &TestDb, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec!["verify", "--json"];
    args.extend_from_slice(extra);
    let out = db.cli(&args);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON ({e}): {}{}",
            stdout(&out),
            stderr(&out)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

fn failed(report: &serde_json::Value) -> BTreeSet<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["outcome"] == "FAIL")
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn verify_passes_everything_on_a_demo_like_database() {
    let db = demo_db().await;
    let out = db.cli(&["verify"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(!text.contains("FAIL "), "{text}");
    assert!(
        !text.contains("SKIP "),
        "nothing skipped on a demo database: {text}"
    );
    for id in [
        "step2",
        "step3",
        "step4",
        "step5.enabled",
        "step6.sync",
        "criterion1",
        "security.public_execute",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("PASS") && l.contains(&format!(" {id} "))),
            "{id}: {text}"
        );
    }
    // The security lines point at a document users have.
    let security: Vec<&str> = text.lines().filter(|l| l.contains(" security.")).collect();
    assert_eq!(security.len(), 4, "{text}");
    for line in security {
        assert!(line.contains("(docs/DESIGN.md)"), "{line}");
    }
    let design = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/DESIGN.md");
    assert!(std::fs::read_to_string(design)
        .unwrap()
        .contains("## Security of the SQL face"));
    assert!(!text.contains("SPEC"), "{text}");
    // Step 6's sync runs in a rolled-back transaction: nothing changed.
    assert_eq!(
        db.count("SELECT count(*) FROM data_agg_state WHERE agg_start_utc = '2025-07-01'")
            .await,
        0
    );
}

/// (what is broken, the SQL that breaks it, the checks that must fail).
const BREAKS: &[(&str, &str, &[&str])] = &[
    (
        "a new column loses NOT NULL",
        "ALTER TABLE data_agg_state ALTER COLUMN task_priority DROP NOT NULL",
        &["step2", "criterion2"],
    ),
    (
        "a task without a start",
        "ALTER TABLE data_agg_state ALTER COLUMN agg_start_utc DROP NOT NULL;
         UPDATE data_agg_state SET agg_start_utc = NULL WHERE timeframe = '1w'",
        &["step2", "criterion2", "step5.start_set", "criterion5"],
    ),
    (
        "the claim index is gone",
        "DROP INDEX idx_agg_state_due_priority",
        &["step4", "criterion4"],
    ),
    (
        "a task of an active asset is disabled",
        "UPDATE data_agg_state SET enabled = false WHERE timeframe = '15m'",
        &["step5.enabled", "criterion6"],
    ),
    (
        "one task has another priority",
        "UPDATE data_agg_state SET task_priority = 7 WHERE timeframe = '4h'",
        &["step5.priority", "criterion7"],
    ),
    (
        "a task is hard_failed",
        "UPDATE data_agg_state SET status = 'hard_failed' WHERE timeframe = '1h'",
        &["step5.hard_failed", "criterion10"],
    ),
    (
        "a task has a failure streak",
        "UPDATE data_agg_state SET hard_fail_streak = 1 WHERE timeframe = '1h'",
        &["criterion11"],
    ),
    (
        "one task of a symbol starts elsewhere",
        "UPDATE data_agg_state SET agg_start_utc = '2023-06-05 00:00+00' WHERE timeframe = '5m'",
        &["criterion5"],
    ),
    (
        "a run took ten minutes",
        "INSERT INTO agg_run_log (canonical_symbol, timeframe, started_at, finished_at, status)
         VALUES ('AUDUSD', '5m', now() - interval '10 minutes', now(), 'success')",
        &["criterion8"],
    ),
    (
        "a task is a week behind its data",
        "UPDATE data_agg_state SET last_agg_bar_ts_utc = '2023-06-12 21:00+00' WHERE timeframe = '1d'",
        &["criterion9"],
    ),
    (
        "the newest day's 5m bars are poor over complete minutes",
        "UPDATE derived_data_bars SET quality_score = 0 WHERE timeframe = '5m' AND ts_utc >= '2023-06-23'",
        &["criterion12"],
    ),
    (
        "a migration was edited after it was applied",
        "UPDATE barkeep_schema_migrations SET checksum = 'edited' WHERE version = 2",
        &["criterion1"],
    ),
    (
        "agg_finish runs as its caller",
        "DO $$ DECLARE f regprocedure; BEGIN FOR f IN SELECT oid::regprocedure FROM pg_proc WHERE proname = 'agg_finish' LOOP EXECUTE format('ALTER FUNCTION %s SECURITY INVOKER', f); END LOOP; END $$",
        &["step3", "security.definer"],
    ),
    (
        "agg_heartbeat's search_path is not pinned",
        "DO $$ DECLARE f regprocedure; BEGIN FOR f IN SELECT oid::regprocedure FROM pg_proc WHERE proname = 'agg_heartbeat' LOOP EXECUTE format('ALTER FUNCTION %s RESET search_path', f); END LOOP; END $$",
        &["security.search_path"],
    ),
    (
        "PUBLIC may execute agg_finish",
        "DO $$ DECLARE f regprocedure; BEGIN FOR f IN SELECT oid::regprocedure FROM pg_proc WHERE proname = 'agg_finish' LOOP EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', f); END LOOP; END $$",
        &["security.public_execute"],
    ),
    (
        "a SECURITY DEFINER function added later leaves search_path unpinned",
        "CREATE FUNCTION agg_added_later(symbol text) RETURNS integer
         LANGUAGE sql SECURITY DEFINER AS $$ SELECT 1 $$;
         REVOKE EXECUTE ON FUNCTION agg_added_later(text) FROM PUBLIC",
        &["security.search_path"],
    ),
    (
        "PUBLIC may execute a SECURITY DEFINER function added later",
        "CREATE FUNCTION agg_added_later(symbol text) RETURNS integer
         LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$ SELECT 1 $$",
        &["security.public_execute"],
    ),
    (
        "a stale overload of agg_release, a definer no list names",
        "CREATE FUNCTION agg_release(symbol text) RETURNS boolean
         LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$ SELECT false $$;
         REVOKE EXECUTE ON FUNCTION agg_release(text) FROM PUBLIC",
        &["security.one_each"],
    ),
    (
        "agg_finish has another signature",
        "DO $$ DECLARE f regprocedure; BEGIN FOR f IN SELECT oid::regprocedure FROM pg_proc WHERE proname = 'agg_finish' LOOP EXECUTE format('DROP FUNCTION %s', f); END LOOP; END $$;
         CREATE FUNCTION agg_finish(symbol text, timeframe text, success boolean) RETURNS jsonb
         LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$ SELECT '{}'::jsonb $$;
         REVOKE EXECUTE ON FUNCTION agg_finish(text, text, boolean) FROM PUBLIC",
        &["criterion3"],
    ),
    (
        "a second sync_agg_state_from_registry",
        "CREATE FUNCTION sync_agg_state_from_registry(env text) RETURNS TABLE (success boolean)
         LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$ SELECT true $$;
         REVOKE EXECUTE ON FUNCTION sync_agg_state_from_registry(text) FROM PUBLIC",
        &["step3", "security.one_each"],
    ),
    (
        "agg_bootstrap_cursor ignores the task's start",
        "CREATE OR REPLACE FUNCTION agg_bootstrap_cursor(symbol text, timeframe text, now timestamptz DEFAULT now())
         RETURNS timestamptz LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
         AS $$ SELECT timestamptz '2025-07-01 00:00+00' $$",
        &["step6.bootstrap"],
    ),
    (
        "agg_get_due_tasks fails",
        "CREATE OR REPLACE FUNCTION agg_get_due_tasks(env text, now timestamptz DEFAULT now(), task_limit integer DEFAULT 100,
                                  stale_seconds integer DEFAULT 600)
         RETURNS TABLE (canonical_symbol text, timeframe text, source_timeframe text, status text,
               last_agg_bar_ts_utc timestamptz, next_run_at timestamptz, is_mandatory boolean,
               task_priority integer, last_successful_at_utc timestamptz, lease_expires_at timestamptz)
         LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp
         AS $$ BEGIN RAISE EXCEPTION 'broken'; END $$",
        &["step6.due_tasks"],
    ),
    (
        "sync_agg_state_from_registry answers failure",
        "DO $$ DECLARE f regprocedure; BEGIN FOR f IN SELECT oid::regprocedure FROM pg_proc WHERE proname = 'sync_agg_state_from_registry' LOOP EXECUTE format('ALTER FUNCTION %s RENAME TO sync_agg_state_from_registry_real', f); END LOOP; END $$;
         CREATE FUNCTION sync_agg_state_from_registry(env text, agg_start timestamptz DEFAULT '2025-07-01 00:00+00')
         RETURNS TABLE (success boolean, tasks_created integer, tasks_enabled integer,
               tasks_disabled integer, tasks_total integer)
         LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
         AS $$ SELECT false, 0, 0, 0, 0 $$;
         REVOKE EXECUTE ON FUNCTION sync_agg_state_from_registry(text, timestamptz) FROM PUBLIC",
        &["step6.sync"],
    ),
];

#[tokio::test]
async fn each_check_fails_when_exactly_its_property_is_broken() {
    let base = demo_db().await;
    let (code, report) = verify_json(&base, &[]);
    assert_eq!(code, 0, "{report:#}");
    let every: BTreeSet<String> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    let mut shown_failing = BTreeSet::new();
    for (what, sql, expected) in BREAKS {
        let db = base.copy().await;
        db.client()
            .await
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let (code, report) = verify_json(&db, &[]);
        let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
        assert_eq!(failed(&report), expected, "{what}: {report:#}");
        assert_eq!(code, 1, "{what}");
        assert_eq!(report["passed"], false, "{what}");
        shown_failing.extend(expected);
    }
    // Every check verify makes is shown failing by one of the breaks above.
    let never: Vec<_> = every.difference(&shown_failing).collect();
    assert!(never.is_empty(), "never shown failing: {never:?}");
}

#[tokio::test]
async fn verify_deep_finds_a_derived_bar_altered_by_sql() {
    let db = demo_db().await;
    let (code, report) = verify_json(&db, &["--deep", "--symbol", "AUDUSD"]);
    assert_eq!(code, 0, "{report:#}");
    let checked = report["deep"]["bars_checked"].as_u64().unwrap();
    assert_eq!(
        checked as i64,
        db.count("SELECT count(*) FROM derived_data_bars WHERE deleted_at IS NULL")
            .await
    );
    let (code, report) = verify_json(&db, &["--deep", "--sample", "50"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["deep"]["bars_checked"], 50);

    db.client()
        .await
        .batch_execute(
            "UPDATE derived_data_bars SET close = close + 0.0001
             WHERE timeframe = '1h' AND ts_utc = '2023-06-14 13:00+00';
             DELETE FROM derived_data_bars WHERE timeframe = '4h' AND ts_utc = '2023-06-13 01:00+00'",
        )
        .await
        .unwrap();
    let out = db.cli(&["verify", "--deep", "--symbol", "AUDUSD"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("changed AUDUSD 1h 2023-06-14 13:00Z (close)"),
        "{text}"
    );
    assert!(
        text.contains("missing AUDUSD 4h 2023-06-13 01:00Z"),
        "{text}"
    );
    // A random sample finds altered bars too: every 1h bar changed, 300 of
    // the 4874 bars drawn (the chance of drawing no 1h bar is about 1e-8).
    db.client()
        .await
        .batch_execute("UPDATE derived_data_bars SET high = high + 0.0001 WHERE timeframe = '1h'")
        .await
        .unwrap();
    let (code, report) = verify_json(&db, &["--deep", "--sample", "300"]);
    assert_eq!(code, 1);
    let diffs = report["deep"]["differences"].as_array().unwrap();
    assert!(
        diffs
            .iter()
            .any(|d| d["timeframe"] == "1h" && d["kind"] == "changed"),
        "{report:#}"
    );
}

/// The observed value and outcome of one check.
fn check(report: &serde_json::Value, id: &str) -> (String, String) {
    let c = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no {id}: {report:#}"));
    (
        c["outcome"].as_str().unwrap().to_string(),
        c["observed"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn criterion_12_judges_the_newest_day_of_data_against_what_its_minutes_allow() {
    let db = demo_db().await;
    let newest_1m: chrono::DateTime<chrono::Utc> = db
        .client()
        .await
        .query_one(
            "SELECT max(ts_utc) FROM data_bars WHERE timeframe = '1m'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let window_end = newest_1m + chrono::Duration::minutes(1);
    // History ending in 2023: judged on its own newest 24 hours, not skipped.
    let (_, report) = verify_json(&db, &[]);
    let (outcome, observed) = check(&report, "criterion12");
    assert_eq!(outcome, "PASS", "{observed}");
    assert!(
        observed.contains(&window_end.format("%Y-%m-%d %H:%MZ").to_string()),
        "{observed}"
    );
    // The sample's 1d bars are thin (about 17 of 24 hours hold minutes):
    // below 90%, but as good as their minutes allow, and said so.
    let thin_daily: i64 = db
        .count(&format!(
            "SELECT count(*) FROM derived_data_bars WHERE timeframe = '1d' AND quality_score <= 0
             AND ts_utc >= '{}'",
            (window_end - chrono::Duration::hours(24)).to_rfc3339()
        ))
        .await;
    assert!(thin_daily > 0, "the window holds a poor daily bar");
    assert!(
        observed.contains("AUDUSD 1d 0.0% (minutes allow 0.0%)"),
        "{observed}"
    );

    // Poor 5m bars before the window do not count; inside it, over minutes
    // that are all there, they fail the criterion and are named.
    let older = db.copy().await;
    older
        .client()
        .await
        .batch_execute(
            "UPDATE derived_data_bars SET quality_score = 0
             WHERE timeframe = '5m' AND ts_utc < '2023-06-22'",
        )
        .await
        .unwrap();
    let (code, report) = verify_json(&older, &[]);
    assert_eq!(check(&report, "criterion12").0, "PASS");
    assert_eq!(code, 0);
    db.client()
        .await
        .batch_execute(&format!(
            "UPDATE derived_data_bars SET quality_score = 0
             WHERE timeframe = '15m' AND ts_utc >= '{}'",
            (window_end - chrono::Duration::hours(3)).to_rfc3339()
        ))
        .await
        .unwrap();
    let (code, report) = verify_json(&db, &[]);
    let (outcome, observed) = check(&report, "criterion12");
    assert_eq!((outcome.as_str(), code), ("FAIL", 1), "{observed}");
    assert!(
        observed.contains("below 90% with the minutes for better: AUDUSD 15m"),
        "{observed}"
    );
}
