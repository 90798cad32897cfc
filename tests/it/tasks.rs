//! Operator task commands: disable, enable, re-enable after a hard failure,
//! priority, and a refused timeframe.

use crate::common::{stderr, TestDb};

fn ok(out: std::process::Output) {
    assert!(out.status.success(), "barkeep failed: {}", stderr(&out));
}

#[tokio::test]
async fn operators_disable_reenable_and_reprioritise_tasks() {
    let db = TestDb::migrated().await;
    ok(db.cli(&["assets", "add", "EURUSD", "--class", "fx"]));
    ok(db.cli(&["sync"]));
    let state = "SELECT count(*) FROM data_agg_state WHERE canonical_symbol = 'EURUSD'";

    ok(db.cli(&["task", "disable", "EURUSD", "5m"]));
    assert_eq!(db.count(&format!("{state} AND NOT enabled")).await, 1);

    ok(db.cli(&["task", "enable", "EURUSD"]));
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
    ok(db.cli(&["task", "reenable", "EURUSD", "1h"]));
    assert_eq!(
        db.count(&format!(
            "{state} AND timeframe = '1h' AND status = 'idle' AND hard_fail_streak = 0 AND last_error IS NULL"
        ))
        .await,
        1
    );

    ok(db.cli(&["task", "priority", "EURUSD", "4h", "--priority", "7"]));
    assert_eq!(db.count(&format!("{state} AND task_priority = 7")).await, 1);

    let refused = db.cli(&["task", "disable", "EURUSD", "1m"]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("1m"), "{}", stderr(&refused));
    assert_eq!(db.count(&format!("{state} AND NOT enabled")).await, 0);
}
