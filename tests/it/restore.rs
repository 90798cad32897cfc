//! `barkeep restore` refuses every value no command would write: one test
//! per value the audit of issue 23 restored (items 1 and 2), each naming the
//! path to the bad value, exiting non-zero and leaving both tables as they
//! were; and a property test that mutates a caught-up database's backup
//! field by field: whatever restore accepts, `run --once` finishes and
//! `verify --deep` passes (but for the checks that report restored task
//! state as it is), and whatever it refuses changes nothing.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use barkeep::model::AssetClass;
use serde_json::{json, Value};

use crate::common::{stderr, stdout, TestDb};
use crate::fixtures::{demo_db, ok, register};

const STATE: &str = "SELECT coalesce(md5(string_agg(t::text, '|' ORDER BY canonical_symbol, timeframe)), '') FROM data_agg_state t";
const REGISTRY: &str = "SELECT coalesce(md5(string_agg(t::text, '|' ORDER BY canonical_symbol)), '') FROM core_asset_registry_all t";

async fn digest(db: &TestDb) -> (String, String) {
    let c = db.client().await;
    let state: String = c.query_one(STATE, &[]).await.unwrap().get(0);
    let registry: String = c.query_one(REGISTRY, &[]).await.unwrap().get(0);
    (state, registry)
}

/// AUDUSD registered as fx with its ladder of tasks, no bars: restore's
/// checks run before anything is read, so this is database enough.
async fn registered_db() -> TestDb {
    let db = TestDb::migrated().await;
    register(
        &db.client().await,
        "AUDUSD",
        AssetClass::Fx,
        "2023-05-28T00:00:00Z",
    )
    .await;
    db
}

/// The database's backup as JSON.
fn backup_of(db: &TestDb, dir: &Path) -> Value {
    let file = dir.join("good.json");
    ok(&db.cli(&["backup", "--out", file.to_str().unwrap()]));
    serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap()
}

fn task<'a>(doc: &'a mut Value, timeframe: &str) -> &'a mut Value {
    doc["data_agg_state"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|t| t["timeframe"] == timeframe)
        .unwrap()
}

/// Restore `body` and demand it is refused with `message` on standard error
/// and both tables unchanged.
async fn refused(db: &TestDb, dir: &Path, body: &[u8], message: &str) {
    let before = digest(db).await;
    let file = dir.join("bad.json");
    std::fs::write(&file, body).unwrap();
    let out = db.cli(&["restore", file.to_str().unwrap(), "--force"]);
    assert!(
        !out.status.success(),
        "accepted: {}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(message),
        "expected {message:?} in: {}",
        stderr(&out)
    );
    assert_eq!(
        digest(db).await,
        before,
        "a refused restore changed the tables"
    );
}

/// Mutate the registered database's backup with `change` and demand refusal.
async fn refuses(change: impl FnOnce(&mut Value), message: &str) {
    let db = registered_db().await;
    let dir = tempfile::tempdir().unwrap();
    let mut doc = backup_of(&db, dir.path());
    change(&mut doc);
    refused(&db, dir.path(), &serde_json::to_vec(&doc).unwrap(), message).await;
}

#[tokio::test]
async fn restore_refuses_a_source_timeframe_that_is_not_the_ladders() {
    refuses(
        |doc| task(doc, "15m")["source_timeframe"] = json!("1d"),
        "data_agg_state[0].source_timeframe: 1d is not the ladder's source of 15m (5m)",
    )
    .await;
}

#[tokio::test]
async fn restore_refuses_a_run_interval_of_zero() {
    refuses(
        |doc| task(doc, "5m")["run_interval_minutes"] = json!(0),
        "data_agg_state[5].run_interval_minutes: 0 is outside 1..=10080",
    )
    .await;
}

#[tokio::test]
async fn restore_refuses_a_negative_run_interval() {
    refuses(
        |doc| task(doc, "1h")["run_interval_minutes"] = json!(-1),
        "data_agg_state[2].run_interval_minutes: -1 is outside 1..=10080",
    )
    .await;
}

#[tokio::test]
async fn restore_refuses_a_running_task_whose_lease_ends_in_9999() {
    refuses(
        |doc| {
            let t = task(doc, "5m");
            t["status"] = json!("running");
            t["lease_token"] = json!("6f1c1a52-4b0e-4a59-9a36-0d4c1f7f2b11");
            t["lease_owner"] = json!("host:1");
            t["lease_expires_at"] = json!("9999-01-01T00:00:00+00:00");
        },
        "data_agg_state[5].lease_expires_at: 9999-01-01 00:00:00 UTC is further ahead than the longest lease a worker takes (86400 s)",
    )
    .await;
}

#[tokio::test]
async fn restore_refuses_a_running_task_without_a_lease_and_a_lease_on_an_idle_one() {
    refuses(
        |doc| task(doc, "5m")["status"] = json!("running"),
        "data_agg_state[5].lease_expires_at: a running task holds a lease; this one has none",
    )
    .await;
    refuses(
        |doc| task(doc, "1w")["lease_owner"] = json!("host:1"),
        "data_agg_state[3].status: a task that is idle, not running, holds no lease",
    )
    .await;
}

#[tokio::test]
async fn restore_refuses_an_unknown_asset_class() {
    refuses(
        |doc| doc["core_asset_registry_all"][0]["asset_class"] = json!("bond"),
        "core_asset_registry_all[0].asset_class: unknown asset class \"bond\"",
    )
    .await;
}

#[tokio::test]
async fn restore_refuses_a_registry_symbol_the_symbol_parser_refuses() {
    refuses(
        |doc| {
            doc["core_asset_registry_all"][0]["canonical_symbol"] =
                json!("X'); DROP TABLE data_bars;--")
        },
        "core_asset_registry_all[0].canonical_symbol: symbol \"X'); DROP TABLE data_bars;--\" contains '\\''",
    )
    .await;
}

#[tokio::test]
async fn restore_refuses_a_negative_priority() {
    refuses(
        |doc| task(doc, "4h")["task_priority"] = json!(-5),
        "data_agg_state[4].task_priority: -5 is outside 0..=10000",
    )
    .await;
}

#[tokio::test]
async fn restore_refuses_a_negative_delay() {
    refuses(
        |doc| task(doc, "5m")["aggregation_delay_seconds"] = json!(-100_000),
        "data_agg_state[5].aggregation_delay_seconds: -100000 is outside 0..=86400",
    )
    .await;
}

#[tokio::test]
async fn restore_refuses_a_task_for_a_symbol_not_in_its_registry() {
    refuses(
        |doc| task(doc, "1d")["canonical_symbol"] = json!("EURUSD"),
        "data_agg_state[1].canonical_symbol: EURUSD is not in the backup's core_asset_registry_all",
    )
    .await;
}

#[tokio::test]
async fn restore_refuses_a_key_given_twice() {
    let db = registered_db().await;
    let dir = tempfile::tempdir().unwrap();
    let text = serde_json::to_string_pretty(&backup_of(&db, dir.path())).unwrap();
    // The second status is the one serde_json would keep.
    let body = text.replacen(
        "\"status\": \"idle\"",
        "\"status\": \"idle\", \"status\": \"disabled\"",
        1,
    );
    assert_ne!(body, text);
    refused(
        &db,
        dir.path(),
        body.as_bytes(),
        "data_agg_state[0].status: the key is given twice",
    )
    .await;
}

#[tokio::test]
async fn restore_refuses_a_last_error_of_megabytes() {
    refuses(
        |doc| task(doc, "1h")["last_error"] = json!("x".repeat(5_000_000)),
        "data_agg_state[2].last_error: 5000000 characters, more than the 8192 a backup may carry",
    )
    .await;
}

#[tokio::test]
async fn restore_still_accepts_its_own_backup_with_a_running_task_and_a_long_error() {
    let db = registered_db().await;
    let dir = tempfile::tempdir().unwrap();
    let mut doc = backup_of(&db, dir.path());
    let t = task(&mut doc, "5m");
    t["status"] = json!("running");
    t["lease_token"] = json!("6f1c1a52-4b0e-4a59-9a36-0d4c1f7f2b11");
    t["lease_owner"] = json!("host:1");
    t["lease_expires_at"] = json!(chrono::Utc::now().to_rfc3339());
    task(&mut doc, "1h")["last_error"] = json!("e".repeat(8_192));
    let file = dir.path().join("edge.json");
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    ok(&db.cli(&["restore", file.to_str().unwrap(), "--force"]));
    assert_eq!(
        db.count("SELECT count(*) FROM data_agg_state WHERE status = 'running'")
            .await,
        1
    );
}

/// Starts taken from the data differ by timeframe (1d and 1w start at their
/// bucket holding the symbol's start): restore accepts them, and refuses a
/// start that is neither the symbol's start nor its bucket's.
#[tokio::test]
async fn restore_reads_one_start_per_symbol_as_sync_sets_the_starts() {
    let starts = [
        ("5m", "2023-06-01T06:00:00Z"),
        ("15m", "2023-06-01T06:00:00Z"),
        ("1h", "2023-06-01T06:00:00Z"),
        ("4h", "2023-06-01T06:00:00Z"),
        // The fx day and week holding Thursday 06:00Z.
        ("1d", "2023-05-31T21:00:00Z"),
        ("1w", "2023-05-28T21:00:00Z"),
    ];
    let db = registered_db().await;
    let dir = tempfile::tempdir().unwrap();
    let mut doc = backup_of(&db, dir.path());
    for (tf, start) in starts {
        let t = task(&mut doc, tf);
        t["agg_start_utc"] = json!(start);
        t["last_agg_bar_ts_utc"] = Value::Null;
    }
    let file = dir.path().join("starts.json");
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    ok(&db.cli(&["restore", file.to_str().unwrap(), "--force"]));
    assert_eq!(
        db.count("SELECT count(DISTINCT agg_start_utc) FROM data_agg_state")
            .await,
        3
    );

    task(&mut doc, "1d")["agg_start_utc"] = json!("2023-05-30T21:00:00Z");
    refused(
        &db,
        dir.path(),
        &serde_json::to_vec(&doc).unwrap(),
        "is neither AUDUSD's start 2023-06-01 06:00:00 UTC nor the start of its 1d bucket",
    )
    .await;
}

/// Values a mutation puts in a field: each type a column holds, the edges
/// of each range, the statuses, classes and timeframes, instants far off.
fn pool() -> Vec<Value> {
    let soon = (chrono::Utc::now() + chrono::Duration::minutes(5)).to_rfc3339();
    vec![
        Value::Null,
        json!(-1),
        json!(0),
        json!(1),
        json!(100),
        json!(10_000),
        json!(2_147_483_647),
        json!(1.5),
        json!(""),
        json!("x"),
        json!("1d"),
        json!("5m"),
        json!("1h"),
        json!("idle"),
        json!("running"),
        json!("hard_failed"),
        json!("disabled"),
        json!("fx"),
        json!("crypto"),
        json!("equity"),
        json!(true),
        json!(false),
        json!("1970-01-01T00:00:00+00:00"),
        json!("2023-06-01T00:00:00+00:00"),
        json!(soon),
        json!("9999-01-01T00:00:00+00:00"),
        json!("6f1c1a52-4b0e-4a59-9a36-0d4c1f7f2b11"),
    ]
}

/// The checks of `verify` that report the task state a backup restores as
/// it is (a hard_failed task, a failure streak, priorities, a disabled task,
/// a task kept behind): a file may restore those faithfully. Every other
/// check, the deep recomputation of stored bars first, must pass.
const STATE_CHECKS: [&str; 8] = [
    "step5.enabled",
    "step5.priority",
    "step5.hard_failed",
    "criterion6",
    "criterion7",
    "criterion9",
    "criterion10",
    "criterion11",
];

/// Run the binary, killing it after `limit`: a restored task that makes the
/// worker loop for ever must fail the test, not hang it.
fn bounded(db: &TestDb, args: &[&str], limit: Duration) -> Output {
    let mut child = db
        .command(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "barkeep {args:?} ran past {limit:?}: {}{}",
                stdout(&out),
                stderr(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

/// One field of one row of a caught-up database's backup set to a value of
/// the pool (or the row's field removed). Accepted: the worker finishes and
/// every stored bar recomputes. Refused: both tables unchanged.
#[test]
fn a_mutated_backup_is_either_refused_with_nothing_changed_or_runs_and_verifies() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let rt = tokio::runtime::Runtime::new().unwrap();
    let demo = rt.block_on(demo_db());
    let dir = tempfile::tempdir().unwrap();
    let doc = backup_of(&demo, dir.path());
    let pool = pool();
    let tasks = doc["data_agg_state"].as_array().unwrap().len();
    let mut runner = TestRunner::new(Config {
        // Six cases keep the suite quick; RESTORE_CASES=200 explores more.
        cases: std::env::var("RESTORE_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(6),
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (0..=tasks, any::<prop::sample::Index>(), 0..=pool.len());
    let case = std::sync::atomic::AtomicUsize::new(0);
    let result = runner.run(&strategy, |(row, field, value)| {
        let case = case.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut mutated = doc.clone();
        let target = if row == tasks {
            &mut mutated["core_asset_registry_all"][0]
        } else {
            &mut mutated["data_agg_state"][row]
        };
        let obj = target.as_object_mut().unwrap();
        let key = field.get(&obj.keys().cloned().collect::<Vec<_>>()).clone();
        let what = match pool.get(value) {
            Some(v) => {
                obj.insert(key.clone(), v.clone());
                format!("{key} = {v}")
            }
            None => {
                obj.remove(&key);
                format!("{key} removed")
            }
        };
        let file = dir.path().join(format!("case{case}.json"));
        std::fs::write(&file, serde_json::to_vec(&mutated).unwrap()).unwrap();
        rt.block_on(async {
            let db = demo.copy().await;
            let before = digest(&db).await;
            let out = db.cli(&["restore", file.to_str().unwrap(), "--force"]);
            if !out.status.success() {
                prop_assert_eq!(
                    digest(&db).await,
                    before,
                    "{} was refused but changed the tables",
                    what
                );
                return Ok(());
            }
            let run = bounded(&db, &["run", "--once"], Duration::from_secs(60));
            prop_assert!(
                run.status.success(),
                "{} accepted, then run --once failed: {}",
                what,
                stderr(&run)
            );
            let verify = db.cli(&["verify", "--deep"]);
            let report = stdout(&verify);
            let failed: Vec<&str> = report
                .lines()
                .filter(|l| l.starts_with("FAIL "))
                .filter(|l| {
                    !STATE_CHECKS
                        .iter()
                        .any(|c| l.split_whitespace().nth(1) == Some(*c))
                })
                .collect();
            prop_assert!(
                failed.is_empty() && report.contains("0 differ"),
                "{} accepted, then verify --deep failed: {}{}",
                what,
                stdout(&verify),
                stderr(&verify)
            );
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[tokio::test]
async fn restore_refuses_a_class_whose_calendar_the_stored_bars_are_not_cut_on() {
    let db = demo_db().await;
    let dir = tempfile::tempdir().unwrap();
    let mut doc = backup_of(&db, dir.path());
    doc["core_asset_registry_all"][0]["asset_class"] = json!("crypto");
    // With the cursors on the fx grid the tasks would be refused first; with
    // none, the stored 4h, 1d and 1w bars are what betray the calendar.
    for t in doc["data_agg_state"].as_array_mut().unwrap() {
        t["last_agg_bar_ts_utc"] = Value::Null;
    }
    refused(
        &db,
        dir.path(),
        &serde_json::to_vec(&doc).unwrap(),
        "core_asset_registry_all[0].asset_class: crypto cuts AUDUSD's bars on the utc calendar",
    )
    .await;
}

#[tokio::test]
async fn backup_out_dash_writes_to_standard_output_not_a_file_named_dash() {
    let db = registered_db().await;
    let dir = tempfile::tempdir().unwrap();
    let out = db.cli_in(dir.path(), &["backup", "--out", "-"]);
    let doc: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(doc["format"], "barkeep-backup");
    assert!(!dir.path().join("-").exists(), "a file named - was written");
}
