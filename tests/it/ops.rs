//! Operating barkeep through the real binary: `status`, `alerts` (each alert
//! condition driven into existence, exit code and message checked),
//! `quality`, `quarantine list|purge`, and `backup` / `restore`.

use crate::common::{stderr, stdout, TestDb};
use crate::fixtures::demo_db;

async fn sql(db: &TestDb, statement: &str) {
    db.client()
        .await
        .batch_execute(statement)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

fn code(out: &std::process::Output) -> i32 {
    out.status.code().expect("barkeep exited by a signal")
}

#[tokio::test]
async fn alerts_is_quiet_on_a_healthy_database_and_names_each_problem_task() {
    let db = demo_db().await;
    let ok = db.cli(&["alerts"]);
    assert_eq!(code(&ok), 0, "{}{}", stdout(&ok), stderr(&ok));
    assert!(stdout(&ok).starts_with("OK: 6 tasks"), "{}", stdout(&ok));

    // ALERT 3: a failure streak is a warning naming the task.
    sql(
        &db,
        "UPDATE data_agg_state SET hard_fail_streak = 1, last_error = 'disk full'
              WHERE timeframe = '15m'",
    )
    .await;
    let out = db.cli(&["alerts"]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    assert!(
        stdout(&out).contains("WARNING AUDUSD 15m: hard_fail_streak 1; last error: disk full"),
        "{}",
        stdout(&out)
    );

    // ALERT 2: a hard_failed task is critical.
    sql(
        &db,
        "UPDATE data_agg_state SET status = 'hard_failed', hard_fail_streak = 3
              WHERE timeframe = '4h'",
    )
    .await;
    let out = db.cli(&["alerts"]);
    assert_eq!(code(&out), 2, "{}", stdout(&out));
    assert!(
        stdout(&out).contains("CRITICAL AUDUSD 4h: hard_failed after 3 failed runs"),
        "{}",
        stdout(&out)
    );

    // JSON carries the same problems and the same exit code.
    let out = db.cli(&["alerts", "--json"]);
    assert_eq!(code(&out), 2);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["severity"], "critical");
    let kinds: Vec<_> = report["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(
        kinds.contains(&"hard_failed".to_string()) && kinds.contains(&"fail_streak".to_string()),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn alerts_sees_a_lagging_task_a_stalled_worker_and_a_task_behind_its_data() {
    let db = demo_db().await;
    // ALERT 1: a mandatory task without a success for two hours.
    sql(
        &db,
        "UPDATE data_agg_state SET last_successful_at_utc = now() - interval '2 hours'
              WHERE timeframe = '1h'",
    )
    .await;
    let out = db.cli(&["alerts"]);
    assert_eq!(code(&out), 2, "{}", stdout(&out));
    assert!(
        stdout(&out).contains("CRITICAL AUDUSD 1h: no successful run for 120."),
        "{}",
        stdout(&out)
    );

    // Stalled worker: a task due for 30 minutes and no run finished since.
    sql(&db, "UPDATE data_agg_state SET last_successful_at_utc = now() - interval '40 minutes',
                     last_attempted_at_utc = now() - interval '40 minutes';
              UPDATE data_agg_state SET next_run_at = now() - interval '30 minutes' WHERE timeframe = '5m';
              DELETE FROM agg_run_log;").await;
    let out = db.cli(&["alerts"]);
    assert_eq!(code(&out), 2, "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains("CRITICAL AUDUSD 5m: stalled: due for 30."),
        "{text}"
    );
    assert!(!text.contains("AUDUSD 1h: no successful run"), "{text}");

    // Behind: the 1d task's cursor sits a week before data that is complete.
    sql(&db, "UPDATE data_agg_state SET last_successful_at_utc = now(), next_run_at = now() + interval '1 hour',
                     last_agg_bar_ts_utc = '2023-06-12 21:00+00' WHERE timeframe = '1d'").await;
    let out = db.cli(&["alerts", "--stall-minutes", "60"]);
    let text = stdout(&out);
    assert_eq!(code(&out), 1, "{text}");
    assert!(
        text.contains("WARNING AUDUSD 1d: ") && text.contains("minutes behind its data"),
        "{text}"
    );
}

#[tokio::test]
async fn an_empty_or_unmigrated_database_says_what_to_run_next() {
    let db = TestDb::empty().await;
    for cmd in [
        &["status"][..],
        &["alerts"],
        &["quality"],
        &["verify"],
        &["backup"],
        &["quarantine", "list"],
        &["sync"],
        &["run", "--once"],
        &["assets", "list"],
        &["export", "AUDUSD", "1h"],
        &["task", "enable", "AUDUSD"],
    ] {
        let out = db.cli(cmd);
        assert_eq!(code(&out), 1, "{cmd:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("not migrated: run `barkeep db up`"),
            "{cmd:?}: {}",
            stderr(&out)
        );
    }
    let db = TestDb::migrated().await;
    let out = db.cli(&["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("run `barkeep sync`"),
        "{}",
        stdout(&out)
    );
    let out = db.cli(&["alerts"]);
    assert_eq!(code(&out), 1);
    assert!(
        stdout(&out).contains("no aggregation tasks"),
        "{}",
        stdout(&out)
    );
    // verify has nothing to judge for the tasks: not a pass.
    let out = db.cli(&["verify"]);
    let text = stdout(&out);
    assert_eq!(code(&out), 1, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("SKIP") && l.contains("no tasks: run `barkeep sync`")),
        "{text}"
    );
    assert!(!text.contains("FAIL "), "{text}");
    assert!(text.contains("INCOMPLETE: "), "{text}");
    let out = db.cli(&["run", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing to aggregate: register an asset"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn status_shows_every_task_and_filters() {
    let db = demo_db().await;
    sql(
        &db,
        "UPDATE data_agg_state SET status = 'hard_failed', hard_fail_streak = 3,
              last_error = 'catch-up failed: relation \"x\" does not exist' WHERE timeframe = '1w'",
    )
    .await;
    let out = db.cli(&["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for tf in ["5m", "15m", "1h", "4h", "1d", "1w"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("AUDUSD     {tf:<4}"))),
            "no {tf} in {text}"
        );
    }
    assert!(text.contains("catch-up failed"), "{text}");
    // Durations read as such; a cursor past the data is not a negative lag.
    assert!(
        !text
            .split_whitespace()
            .any(|w| w.starts_with('-') && w.len() > 1),
        "{text}"
    );
    let out = db.cli(&["status", "--json", "--status", "hard-failed"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tasks = report["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["timeframe"], "1w");
    assert_eq!(tasks[0]["behind_minutes"], 0.0);
    let out = db.cli(&["status", "--timeframe", "1h", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["tasks"].as_array().unwrap().len(), 1);

    let out = db.cli(&["status", "--symbol", "EURUSD"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("unknown symbol EURUSD"),
        "{}",
        stderr(&out)
    );
    let out = db.cli(&["status", "--timeframe", "7m"]);
    assert_eq!(code(&out), 2);
}

#[tokio::test]
async fn quality_reports_the_checklist_share_and_minute_coverage() {
    let db = demo_db().await;
    let out = db.cli(&["quality", "--since", "all", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lines = report["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 6, "{report}");
    let five = &lines[0];
    assert_eq!(five["timeframe"], "5m");
    let total = five["total_bars"].as_i64().unwrap();
    let good = five["good_bars"].as_i64().unwrap();
    let expected_pct = (1000.0 * good as f64 / total as f64).round() / 10.0;
    assert_eq!(five["quality_pct"].as_f64().unwrap(), expected_pct);
    // Every 1m bar of the sample lies under exactly one 5m bar or a skipped bucket.
    let minutes = db.count("SELECT count(*) FROM data_bars").await;
    assert!(five["minutes_present"].as_i64().unwrap() <= minutes);
    let week = lines.iter().find(|l| l["timeframe"] == "1w").unwrap();
    assert!(
        week["minute_coverage_pct"].as_f64().unwrap() < 100.0,
        "{week}"
    );
    // The 1m minutes allow a good bar where at least 4 in 5 are present;
    // 5m bars are built from minutes, so there the two agree exactly.
    assert_eq!(five["minutes_allow_good"], five["good_bars"], "{five}");
    let daily = lines.iter().find(|l| l["timeframe"] == "1d").unwrap();
    let thin_days = db
        .count(
            "SELECT count(*) FROM derived_data_bars d
             WHERE d.timeframe = '1d' AND d.deleted_at IS NULL
               AND 5 * (SELECT count(*) FROM data_bars b WHERE b.timeframe = '1m'
                        AND b.ts_utc >= d.ts_utc AND b.ts_utc < d.ts_utc + interval '1 day')
                   < 4 * d.expected_candles * 240",
        )
        .await;
    assert_eq!(
        daily["minutes_allow_good"].as_i64().unwrap(),
        daily["total_bars"].as_i64().unwrap() - thin_days,
        "{daily}"
    );
    // Nothing in the last 24 hours: says so, and where the data ends, and exits 0.
    let out = db.cli(&["quality"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("no derived bars since")
            && stdout(&out).contains(
                "the newest 1m bar is 2023-06-23 19:58Z; try `--since 2023-06-22` or `--since all`"
            ),
        "{}",
        stdout(&out)
    );
    // A threshold above what the data reaches flags it with exit 1.
    let out = db.cli(&["quality", "--since", "all", "--threshold", "100.1"]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    assert!(
        stdout(&out).contains("quality below threshold"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn quarantine_lists_and_purges_only_what_it_is_told() {
    let db = TestDb::migrated().await;
    sql(
        &db,
        "INSERT INTO ingest_quarantine (file, line, canonical_symbol, raw_line, reason) VALUES
              ('a.csv', 3, 'EURUSD', 'x', 'bad price'), ('a.csv', 9, 'EURUSD', 'y', 'bad price'),
              ('b.csv', 1, 'GBPUSD', 'z', 'not a minute')",
    )
    .await;
    let out = db.cli(&["quarantine", "list"]);
    assert!(
        stdout(&out).starts_with("3 quarantined rows"),
        "{}",
        stdout(&out)
    );
    let out = db.cli(&["quarantine", "list", "--file", "b.csv", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["reason"], "not a minute");

    let refused = db.cli(&["quarantine", "purge"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("--force to delete all 3 rows"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(db.count("SELECT count(*) FROM ingest_quarantine").await, 3);

    let out = db.cli(&["quarantine", "purge", "--file", "a.csv"]);
    assert!(
        stdout(&out).contains("purged 2 quarantined rows (file a.csv)"),
        "{}",
        stdout(&out)
    );
    assert_eq!(db.count("SELECT count(*) FROM ingest_quarantine").await, 1);
    let out = db.cli(&["quarantine", "purge", "--force"]);
    assert!(stdout(&out).contains("purged 1"), "{}", stdout(&out));
    assert_eq!(db.count("SELECT count(*) FROM ingest_quarantine").await, 0);
}

const STATE: &str = "SELECT md5(string_agg(t::text, '|' ORDER BY canonical_symbol, timeframe)) FROM data_agg_state t";
const REGISTRY: &str =
    "SELECT md5(string_agg(t::text, '|' ORDER BY canonical_symbol)) FROM core_asset_registry_all t";

async fn digest(db: &TestDb, sql: &str) -> String {
    db.client().await.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn backup_then_damage_then_restore_gives_the_original_rows_back() {
    let db = demo_db().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.json");
    let file_arg = file.to_str().unwrap();
    let out = db.cli(&["backup", "--out", file_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (state, registry) = (digest(&db, STATE).await, digest(&db, REGISTRY).await);

    sql(&db, "UPDATE data_agg_state SET last_agg_bar_ts_utc = NULL, status = 'hard_failed', task_priority = 1;
              DELETE FROM data_agg_state WHERE timeframe = '1w';
              UPDATE core_asset_registry_all SET asset_class = 'crypto', active = false").await;
    assert_ne!(digest(&db, STATE).await, state);

    // A task table with rows is only replaced on request.
    let refused = db.cli(&["restore", file_arg]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("replaces the 5 tasks"),
        "{}",
        stderr(&refused)
    );

    let out = db.cli(&["restore", file_arg, "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("restored 1 asset and 6 tasks"),
        "{}",
        stdout(&out)
    );
    assert_eq!(digest(&db, STATE).await, state);
    assert_eq!(digest(&db, REGISTRY).await, registry);
}

#[tokio::test]
async fn restore_refuses_a_malformed_file_and_changes_nothing() {
    let db = demo_db().await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.json");
    let out = db.cli(&["backup", "--out", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&good).unwrap();
    let state = digest(&db, STATE).await;

    let cases = [
        (
            "truncated.json",
            text[..text.len() / 2].to_string(),
            "not a barkeep backup",
        ),
        (
            "other.json",
            text.replace("barkeep-backup", "something-else"),
            "format is",
        ),
        (
            "tf.json",
            text.replacen("\"timeframe\": \"5m\"", "\"timeframe\": \"7m\"", 1),
            "unknown task timeframe",
        ),
        (
            "column.json",
            text.replacen("\"task_priority\"", "\"no_such_column\"", 1),
            "no_such_column",
        ),
        (
            "type.json",
            text.replacen("\"task_priority\": 100", "\"task_priority\": \"high\"", 1),
            "restoring data_agg_state",
        ),
    ];
    for (name, body, message) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        let out = db.cli(&["restore", path.to_str().unwrap(), "--force"]);
        assert!(!out.status.success(), "{name} was accepted");
        assert!(stderr(&out).contains(message), "{name}: {}", stderr(&out));
        assert_eq!(digest(&db, STATE).await, state, "{name} changed the tasks");
    }
}
