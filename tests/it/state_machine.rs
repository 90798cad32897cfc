//! The task state machine (sql/functions/40_tasks.sql, docs/DESIGN.md
//! "Task state"): one writer per transition, the CHECK that ties the lease
//! columns to 'running' (migration 0013), and the constants that Rust and
//! SQL share held equal.

use barkeep::engine::finality_horizon;
use barkeep::model::Timeframe;
use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::common::{stderr, TestDb};

/// The sources that write task state, outside the state-machine file.
fn sources_under(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading a source folder") {
        let path = entry.expect("a folder entry").path();
        if path.is_dir() {
            sources_under(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs" || e == "sql") {
            out.push(path);
        }
    }
}

#[test]
fn only_the_state_machine_file_updates_task_state() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources_under(&root.join("src"), &mut files);
    sources_under(&root.join("sql"), &mut files);
    let writers: Vec<String> = files
        .iter()
        .filter(|f| {
            std::fs::read_to_string(f)
                .expect("reading a source file")
                .contains("UPDATE data_agg_state")
        })
        .map(|f| f.strip_prefix(root).unwrap_or(f).display().to_string())
        .collect();
    assert_eq!(writers, vec!["sql/functions/40_tasks.sql".to_string()]);
}

#[tokio::test]
async fn a_lease_without_running_or_running_without_a_lease_is_refused() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    c.batch_execute(
        "INSERT INTO core_asset_registry_all (canonical_symbol, asset_class) VALUES ('EURUSD', 'fx');
         SELECT sync_agg_state_from_registry('prod', '2025-07-01');",
    )
    .await
    .unwrap();
    for (what, sql) in [
        (
            "running without a lease",
            "UPDATE data_agg_state SET status = 'running' WHERE timeframe = '5m'",
        ),
        (
            "a lease on an idle task",
            "UPDATE data_agg_state SET lease_token = gen_random_uuid(), lease_owner = 'w',
               lease_expires_at = now() WHERE timeframe = '5m'",
        ),
        (
            "a running task with half a lease",
            "UPDATE data_agg_state SET status = 'running', lease_token = gen_random_uuid()
             WHERE timeframe = '5m'",
        ),
    ] {
        let err = c.execute(sql, &[]).await.expect_err(what);
        let constraint = err.as_db_error().and_then(|e| e.constraint());
        assert_eq!(
            constraint,
            Some("data_agg_state_lease_check"),
            "{what}: {err:?}"
        );
    }
    // The writers keep it: a claim, a finish and a release.
    let lease: uuid::Uuid = c
        .query_one(
            "SELECT lease_token FROM agg_claim_tasks('prod', 'w', now(), 1, 60)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    c.query_one("SELECT agg_release('EURUSD', '5m', $1)", &[&lease])
        .await
        .unwrap();
    assert_eq!(
        db.count("SELECT count(*) FROM data_agg_state WHERE status = 'running'")
            .await,
        0
    );
}

#[tokio::test]
async fn step_13_adopts_inconsistent_leases_and_reverts() {
    let db = TestDb::migrated().await;
    let out = db.cli(&["db", "down", "--to", "12"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let c = db.client().await;
    c.batch_execute(
        "INSERT INTO core_asset_registry_all (canonical_symbol, asset_class) VALUES ('EURUSD', 'fx');
         SELECT sync_agg_state_from_registry('prod', '2025-07-01');
         UPDATE data_agg_state SET status = 'running' WHERE timeframe = '5m';
         UPDATE data_agg_state SET lease_token = gen_random_uuid(), lease_owner = 'gone'
         WHERE timeframe = '1h';
         UPDATE data_agg_state SET status = 'running', lease_token = gen_random_uuid(),
           lease_owner = 'alive', lease_expires_at = now() + interval '1 minute'
         WHERE timeframe = '1d';",
    )
    .await
    .unwrap();
    let out = db.cli(&["db", "up"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = c
        .query(
            "SELECT timeframe, status, lease_token IS NOT NULL, lease_owner
             FROM data_agg_state WHERE timeframe IN ('5m', '1h', '1d') ORDER BY agg_timeframe_rank(timeframe)",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, String, bool, Option<String>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("5m".into(), "idle".into(), false, None),
            ("1h".into(), "idle".into(), false, None),
            ("1d".into(), "running".into(), true, Some("alive".into())),
        ]
    );
    let check = "SELECT count(*) FROM pg_constraint WHERE conname = 'data_agg_state_lease_check'";
    assert_eq!(db.count(check).await, 1);
    let out = db.cli(&["db", "down", "--to", "12"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(db.count(check).await, 0, "db down --to 12 drops the check");
}

#[tokio::test]
async fn the_ladder_is_the_same_in_rust_and_sql() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let ladder: Vec<String> = c
        .query_one("SELECT agg_ladder()", &[])
        .await
        .unwrap()
        .get(0);
    let rust: Vec<String> = Timeframe::LADDER
        .iter()
        .map(|t| t.as_str().to_string())
        .collect();
    assert_eq!(ladder, rust);
    for tf in Timeframe::LADDER {
        let row = c
            .query_one(
                "SELECT agg_source_timeframe($1), agg_timeframe_rank($1)",
                &[&tf.as_str()],
            )
            .await
            .unwrap();
        let source: String = row.get(0);
        let rank: i32 = row.get(1);
        let rust_source = tf.source().map(|s| s.as_str().to_string());
        assert_eq!(Some(source), rust_source, "the source of {tf}");
        let position = Timeframe::LADDER.iter().position(|t| *t == tf);
        assert_eq!(Some(rank as usize - 1), position, "the rank of {tf}");
    }
}

#[tokio::test]
async fn the_finality_horizon_is_the_same_in_rust_and_sql() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let now = Utc.with_ymd_and_hms(2026, 3, 6, 12, 7, 0).unwrap();
    let offsets: [Option<i64>; 5] = [None, Some(-3600), Some(-60), Some(0), Some(600)];
    let at = |o: Option<i64>| o.map(|s| now + Duration::seconds(s));
    for source in [Timeframe::M1, Timeframe::M5, Timeframe::H1] {
        for delay in [0_i32, 120, 86_400] {
            for reach in offsets {
                for cursor in offsets {
                    let sql: Option<DateTime<Utc>> = c
                        .query_one(
                            "SELECT agg_finality_horizon($1, $2, $3, $4, $5)",
                            &[&source.as_str(), &now, &delay, &at(reach), &at(cursor)],
                        )
                        .await
                        .unwrap()
                        .get(0);
                    let rust = finality_horizon(
                        source,
                        now,
                        Duration::seconds(delay.into()),
                        at(reach),
                        at(cursor),
                    );
                    assert_eq!(
                        sql, rust,
                        "source {source}, delay {delay}, reach {reach:?}, cursor {cursor:?}"
                    );
                }
            }
        }
    }
}
