//! Who may call what, and how: bad calls raise with the value and change
//! nothing, and each role can run only what it is granted.

use super::fx_registered;

#[tokio::test]
async fn bad_calls_raise_with_the_value_and_change_nothing() {
    let (db, c) = fx_registered(&["EURUSD"], "2025-07-01T00:00:00Z").await;
    c.execute("INSERT INTO core_asset_registry_all (canonical_symbol, asset_class) VALUES ('NOTASK', 'fx')", &[])
        .await
        .unwrap();
    let state = "SELECT count(*) + coalesce(sum(extract(epoch FROM last_agg_bar_ts_utc)), 0)::bigint FROM data_agg_state";
    let before = (
        db.count(state).await,
        db.count("SELECT count(*) FROM derived_data_bars").await,
    );
    let cases = [
        (
            "catchup_aggregation_range('XXXYYY', '5m', '2025-07-01 00:00Z', 10, now(), 1, false)",
            "XXXYYY",
        ),
        (
            "catchup_aggregation_range('EURUSD', '7m', '2025-07-01 00:00Z', 10, now(), 1, false)",
            "7m",
        ),
        (
            "catchup_aggregation_range('EURUSD', '1m', '2025-07-01 00:00Z', 10, now(), 1, false)",
            "1m",
        ),
        (
            "catchup_aggregation_range('NOTASK', '5m', '2025-07-01 00:00Z', 10, now(), 1, false)",
            "NOTASK",
        ),
        (
            "catchup_aggregation_range('EURUSD', '5m', '2025-07-01 00:03Z', 10, now(), 1, false)",
            "00:03",
        ),
        (
            "catchup_aggregation_range('EURUSD', '5m', '2025-07-01 00:00Z', 0, now(), 1, false)",
            "got 0",
        ),
        (
            "catchup_aggregation_range('EURUSD', '5m', NULL, 10, now(), 1, false)",
            "NULL",
        ),
        ("agg_get_due_tasks('staging', now(), 10, 10)", "staging"),
        ("sync_agg_state_from_registry('staging', now())", "staging"),
        (
            "agg_finish('EURUSD', '2h', true, NULL, '{}', NULL, NULL, now(), 3)",
            "2h",
        ),
    ];
    for (call, needle) in cases {
        let err = c
            .query(&format!("SELECT * FROM {call}"), &[])
            .await
            .expect_err(call);
        let msg = err
            .as_db_error()
            .map(|e| e.message().to_string())
            .unwrap_or_default();
        assert!(msg.contains(needle), "{call}: {msg}");
    }
    assert_eq!(
        before,
        (
            db.count(state).await,
            db.count("SELECT count(*) FROM derived_data_bars").await
        )
    );
}

#[tokio::test]
async fn roles_can_run_only_what_they_are_granted() {
    let (_db, c) = fx_registered(&["EURUSD"], "2025-07-01T00:00:00Z").await;
    let attempt = |role: &'static str, call: &'static str| {
        let c = &c;
        async move {
            c.batch_execute(&format!("SET ROLE {role}")).await.unwrap();
            let r = c.query(&format!("SELECT * FROM {call}"), &[]).await;
            c.batch_execute("RESET ROLE").await.unwrap();
            r.map(|_| ())
                .map_err(|e| e.code().map(|c| c.code().to_string()))
        }
    };
    let due = "agg_get_due_tasks('prod', now(), 10, 10)";
    let catch =
        "catchup_aggregation_range('EURUSD', '5m', '2025-07-01 00:00Z', 10, now(), 1, false)";
    let sync = "sync_agg_state_from_registry('prod', '2025-07-01')";
    assert_eq!(attempt("barkeep_reader", due).await, Ok(()));
    assert_eq!(attempt("barkeep_worker", catch).await, Ok(()));
    assert_eq!(attempt("barkeep_worker", sync).await, Ok(()));
    let denied = Err(Some("42501".to_string()));
    assert_eq!(attempt("barkeep_reader", catch).await, denied);
    assert_eq!(attempt("barkeep_ingest", due).await, denied);
    assert_eq!(attempt("barkeep_ingest", sync).await, denied);
}
