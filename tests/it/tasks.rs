//! Operator task commands: disable, enable, re-enable after a hard failure,
//! priority, and a refused timeframe.

use crate::common::{barkeep_on, stderr, TestDb};
use crate::fixtures::ok;

#[tokio::test]
async fn operators_disable_reenable_and_reprioritise_tasks() {
    let db = TestDb::migrated().await;
    ok(&db.cli(&["assets", "add", "EURUSD", "--class", "fx"]));
    ok(&db.cli(&["sync"]));
    let state = "SELECT count(*) FROM data_agg_state WHERE canonical_symbol = 'EURUSD'";

    ok(&db.cli(&["task", "disable", "EURUSD", "5m"]));
    assert_eq!(db.count(&format!("{state} AND NOT enabled")).await, 1);

    ok(&db.cli(&["task", "enable", "EURUSD"]));
    assert_eq!(db.count(&format!("{state} AND NOT enabled")).await, 0);

    db.client()
        .await
        .execute(
            "UPDATE data_agg_state SET status = 'hard_failed', hard_fail_streak = 3, last_error = 'boom'
             WHERE canonical_symbol = 'EURUSD' AND timeframe = '1h'",
            &[],
        )
        .await
        .unwrap();
    ok(&db.cli(&["task", "reenable", "EURUSD", "1h"]));
    assert_eq!(
        db.count(&format!(
            "{state} AND timeframe = '1h' AND status = 'idle' AND hard_fail_streak = 0 AND last_error IS NULL"
        ))
        .await,
        1
    );

    ok(&db.cli(&["task", "priority", "EURUSD", "4h", "--priority", "7"]));
    assert_eq!(db.count(&format!("{state} AND task_priority = 7")).await, 1);

    let refused = db.cli(&["task", "disable", "EURUSD", "1m"]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("1m"), "{}", stderr(&refused));
    assert_eq!(db.count(&format!("{state} AND NOT enabled")).await, 0);
}

#[tokio::test]
async fn a_task_status_outside_the_four_states_is_refused() {
    let db = TestDb::migrated().await;
    ok(&db.cli(&["assets", "add", "EURUSD", "--class", "fx"]));
    ok(&db.cli(&["sync"]));
    let err = db
        .client()
        .await
        .execute(
            "UPDATE data_agg_state SET status = 'paused' WHERE canonical_symbol = 'EURUSD'",
            &[],
        )
        .await
        .expect_err("a fifth status must be refused");
    assert!(
        err.to_string().contains("data_agg_state_status_check")
            || format!("{err:?}").contains("data_agg_state_status_check"),
        "{err:?}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM data_agg_state WHERE status = 'idle'")
            .await,
        6
    );
}

#[tokio::test]
async fn an_operator_command_does_not_wait_for_ever_on_a_locked_task() {
    let db = TestDb::migrated().await;
    ok(&db.cli(&["assets", "add", "EURUSD", "--class", "fx"]));
    ok(&db.cli(&["sync"]));
    // A worker frozen inside a chunk transaction holds its task's row lock.
    let mut holder = db.client().await;
    let tx = holder.transaction().await.unwrap();
    tx.execute(
        "SELECT 1 FROM data_agg_state WHERE canonical_symbol = 'EURUSD' AND timeframe = '5m' FOR UPDATE",
        &[],
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let out = tokio::task::spawn_blocking({
        let url = db.url.clone();
        move || {
            barkeep_on(&url, &["task", "disable", "EURUSD", "5m"])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    // It gives up with a message instead of hanging (the lock is never released here).
    assert!(!out.status.success());
    assert!(stderr(&out).contains("lock"), "{}", stderr(&out));
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    tx.rollback().await.unwrap();
    ok(&db.cli(&["task", "disable", "EURUSD", "5m"]));
}

#[tokio::test]
async fn bench_refuses_to_use_the_database_it_points_at_as_scratch() {
    let db = TestDb::migrated().await;
    ok(&db.cli(&["assets", "add", "EURUSD", "--class", "fx"]));
    let out = db.cli(&[
        "bench",
        "--scratch-db",
        &db.name,
        "--symbols",
        "1",
        "--weeks",
        "1",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--scratch-db"), "{}", stderr(&out));
    assert_eq!(
        db.count("SELECT count(*) FROM core_asset_registry_all")
            .await,
        1,
        "the database must be untouched"
    );
}
