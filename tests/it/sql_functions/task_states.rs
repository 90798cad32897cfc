//! Claims and finishes move tasks through their states: idle, running,
//! hard failed, disabled, with leases and retries.

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use tokio_postgres::Client;

use crate::fixtures::ts;

use super::fx_registered;

async fn claim(c: &Client, now: &str, lease: i32) -> Vec<(String, String, uuid::Uuid, bool)> {
    c.query(
        "SELECT canonical_symbol, timeframe, lease_token, recovered FROM agg_claim_tasks('prod', 'w1', $1, 100, $2)",
        &[&ts(now), &lease],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

async fn finish(
    c: &Client,
    tf: &str,
    ok: bool,
    stats: Value,
    kind: Option<&str>,
    now: &str,
) -> Value {
    c.query_one(
        "SELECT agg_finish('EURUSD', $1, $2, NULL, $3, $4, 'boom', $5, 3)",
        &[&tf, &ok, &stats, &kind, &ts(now)],
    )
    .await
    .unwrap()
    .get(0)
}

async fn task_state(c: &Client, tf: &str) -> (String, i32, i32, DateTime<Utc>) {
    let r = c
        .query_one(
            "SELECT status, hard_fail_streak, transient_fail_streak, next_run_at FROM data_agg_state
             WHERE canonical_symbol = 'EURUSD' AND timeframe = $1",
            &[&tf],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

#[tokio::test]
async fn claims_and_finishes_move_tasks_through_their_states() {
    let (db, c) = fx_registered(&["EURUSD"], "2025-07-01T00:00:00Z").await;
    let now = "2030-01-01T00:00:00Z";
    let claimed = claim(&c, now, 60).await;
    let order: Vec<&str> = claimed.iter().map(|t| t.1.as_str()).collect();
    assert_eq!(order, ["5m", "15m", "1h", "4h", "1d", "1w"]);
    assert!(claimed.iter().all(|t| !t.3));
    assert!(
        claim(&c, now, 60).await.is_empty(),
        "running tasks are not claimed twice"
    );

    // Success: idle, streak cleared, counters added.
    let token = claimed[0].2.to_string();
    let r = finish(
        &c,
        "5m",
        true,
        serde_json::json!({"lease_token": token, "bars_created": 7}),
        None,
        now,
    )
    .await;
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(task_state(&c, "5m").await.0, "idle");
    assert_eq!(
        db.count("SELECT total_bars_created FROM data_agg_state WHERE timeframe = '5m'")
            .await,
        7
    );

    // A finish with a lost lease changes nothing.
    let r = finish(
        &c,
        "15m",
        true,
        serde_json::json!({"lease_token": uuid::Uuid::nil().to_string()}),
        None,
        now,
    )
    .await;
    assert_eq!(r["reason"], "lease_lost");
    assert_eq!(task_state(&c, "15m").await.0, "running");

    // Transient: backoff, no hard streak.
    let r = finish(
        &c,
        "1h",
        false,
        serde_json::json!({}),
        Some("transient"),
        now,
    )
    .await;
    assert_eq!(r["status"], "idle");
    let (status, hard, transient, next) = task_state(&c, "1h").await;
    assert_eq!((status.as_str(), hard, transient), ("idle", 0, 1));
    assert_eq!(next, ts(now) + Duration::seconds(5));

    // Hard failures: hard_failed at the third for a mandatory task…
    for i in 1..=3 {
        c.execute(
            "UPDATE data_agg_state SET status = 'running', lease_token = gen_random_uuid(),
               lease_owner = 'test', lease_expires_at = now() + interval '1 minute'
             WHERE timeframe = '4h'",
            &[],
        )
        .await
        .unwrap();
        finish(&c, "4h", false, serde_json::json!({}), Some("hard"), now).await;
        let (status, hard, ..) = task_state(&c, "4h").await;
        assert_eq!(hard, i);
        assert_eq!(status, if i < 3 { "idle" } else { "hard_failed" });
    }
    // …and disabled for an optional one.
    c.execute("UPDATE data_agg_state SET is_mandatory = false, hard_fail_streak = 2 WHERE timeframe = '1d'", &[])
        .await
        .unwrap();
    finish(&c, "1d", false, serde_json::json!({}), None, now).await;
    assert_eq!(task_state(&c, "1d").await.0, "disabled");

    // An expired lease is recovered by the next claim; the old holder is fenced.
    let old = claimed[5].2.to_string();
    let later = "2030-01-01T00:02:00Z";
    let again = claim(&c, later, 60).await;
    let week = again.iter().find(|t| t.1 == "1w").expect("1w recovered");
    assert!(week.3, "recovered flag");
    let r = finish(
        &c,
        "1w",
        true,
        serde_json::json!({"lease_token": old}),
        None,
        later,
    )
    .await;
    assert_eq!(r["reason"], "lease_lost");
    assert_eq!(db.count("SELECT count(*) FROM agg_run_log").await, 6);
}
