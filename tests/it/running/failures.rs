//! A task failing hard ends hard failed while the others finish, and
//! re-enabling brings it back.

use std::time::Duration as StdDuration;

use crate::common::{stderr, TestDb};
use crate::fixtures::load_fx;

use super::{child_stderr, spawn, wait_exit, SEEDS};

#[tokio::test]
async fn a_task_failing_hard_ends_hard_failed_while_others_finish_and_reenable_brings_it_back() {
    let db = TestDb::migrated().await;
    let symbols = vec!["GOODUSD".to_string(), "BADUSD".to_string()];
    load_fx(&db.client().await, &symbols, 3, SEEDS).await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE FUNCTION test_fail_bad() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.canonical_symbol = 'BADUSD' AND NEW.timeframe = '5m' THEN
             RAISE EXCEPTION 'injected failure';
           END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER test_fail_bad BEFORE INSERT ON derived_data_bars
           FOR EACH ROW EXECUTE FUNCTION test_fail_bad();",
    )
    .await
    .unwrap();
    let mut worker = spawn(&db.url, &["run", "--once"]);
    let status = wait_exit(&mut worker, StdDuration::from_secs(120)).await;
    let log = child_stderr(&mut worker);
    assert!(!status.success(), "a failed task must fail --once: {log}");
    let row = c
        .query_one(
            "SELECT status, hard_fail_streak FROM data_agg_state
             WHERE canonical_symbol = 'BADUSD' AND timeframe = '5m'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "hard_failed");
    assert_eq!(row.get::<_, i32>(1), 3);
    assert_eq!(
        db.count("SELECT count(*) FROM agg_run_log WHERE canonical_symbol = 'BADUSD' AND status = 'failed'")
            .await,
        3
    );
    // The good symbol was not held up.
    let good = db
        .count(
            "SELECT count(*) FROM derived_data_bars
             WHERE canonical_symbol = 'GOODUSD' AND deleted_at IS NULL",
        )
        .await;
    assert!(good > 0);
    assert_eq!(
        db.count("SELECT count(*) FROM data_agg_state WHERE canonical_symbol = 'GOODUSD' AND (status <> 'idle' OR hard_fail_streak > 0)")
            .await,
        0
    );

    c.batch_execute("DROP TRIGGER test_fail_bad ON derived_data_bars")
        .await
        .unwrap();
    let out = db.cli(&["task", "reenable", "BADUSD"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = db.cli(&["run", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Both symbols' data span the same days: every cursor ends level.
    let uneven = db
        .count(
            "SELECT count(*) FROM data_agg_state g JOIN data_agg_state b USING (timeframe)
             WHERE g.canonical_symbol = 'GOODUSD' AND b.canonical_symbol = 'BADUSD'
               AND (g.last_agg_bar_ts_utc IS DISTINCT FROM b.last_agg_bar_ts_utc
                    OR b.status <> 'idle')",
        )
        .await;
    assert_eq!(uneven, 0);
    assert!(
        db.count("SELECT count(*) FROM derived_data_bars WHERE canonical_symbol = 'BADUSD'")
            .await
            > 0
    );
}
