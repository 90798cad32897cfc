//! The deployment checklist, run as written: every ```sql block of Steps 2–6
//! and of "Verify Rollback" in docs/PHASE5_DEPLOYMENT_CHECKLIST.md runs
//! unchanged and gives the outcome the checklist expects, before and after a
//! rollback, and on a database adopted from an earlier deployment.

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::common::TestDb;
use crate::fixtures::ok;

const CHECKLIST: &str = include_str!("../../docs/PHASE5_DEPLOYMENT_CHECKLIST.md");

/// The statements of the first ```sql block after the line starting with `heading`.
fn sql_after(heading: &str) -> Vec<String> {
    let start = CHECKLIST
        .lines()
        .position(|l| l.starts_with(heading))
        .unwrap_or_else(|| panic!("no heading {heading:?} in the checklist"));
    let lines: Vec<&str> = CHECKLIST.lines().skip(start + 1).collect();
    let open = lines
        .iter()
        .position(|l| l.trim() == "```sql")
        .unwrap_or_else(|| panic!("no sql block after {heading:?}"));
    let body: Vec<&str> = lines[open + 1..]
        .iter()
        .take_while(|l| l.trim() != "```")
        .filter(|l| !l.trim_start().starts_with("--"))
        .copied()
        .collect();
    body.join("\n")
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Rows of one statement as text, the way psql would show them.
async fn rows(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}\nfailed: {e}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

async fn scalar(client: &Client, sql: &str) -> String {
    let r = rows(client, sql).await;
    assert_eq!(r.len(), 1, "{sql} gave {r:?}");
    r[0][0].clone().unwrap_or_default()
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

/// Steps 2–4: columns, functions, index.
async fn schema_steps_pass(client: &Client) {
    let step2 = sql_after("### Step 2");
    assert_eq!(step2.len(), 1);
    assert_eq!(
        rows(client, &step2[0]).await,
        vec![
            vec![s("agg_start_utc"), s("timestamp with time zone"), s("NO")],
            vec![s("enabled"), s("boolean"), s("NO")],
            vec![s("task_priority"), s("integer"), s("NO")],
        ]
    );

    let step3 = sql_after("### Step 3");
    let functions = rows(client, &step3[0]).await;
    let names: Vec<_> = functions.iter().map(|r| r[0].clone().unwrap()).collect();
    assert_eq!(
        names,
        [
            "agg_bootstrap_cursor",
            "agg_finish",
            "agg_get_due_tasks",
            "catchup_aggregation_range",
            "sync_agg_state_from_registry"
        ]
    );
    assert!(
        functions.iter().all(|r| r[2] == s("t")),
        "every function must be SECURITY DEFINER: {functions:?}"
    );

    let step4 = sql_after("### Step 4");
    let index = rows(client, &step4[0]).await;
    assert_eq!(index.len(), 1, "{index:?}");
    assert_eq!(index[0][0], s("idx_agg_state_due_priority"));
}

/// Steps 5 and 6: data integrity and the quick function test.
async fn data_steps_pass(client: &Client) {
    let step5 = sql_after("### Step 5");
    let mut counts = Vec::new();
    for q in &step5 {
        counts.push(scalar(client, q).await);
    }
    assert_eq!(counts, ["0", "0", "1", "0"]);

    let step6 = sql_after("### Step 6");
    assert_eq!(step6.len(), 3);
    assert_eq!(scalar(client, &step6[0]).await, "2025-07-01 00:00:00+00");
    let due: i64 = scalar(client, &step6[1]).await.parse().unwrap();
    assert!((0..=10).contains(&due), "due {due}");
    let sync = rows(client, &step6[2]).await;
    assert_eq!(sync.len(), 1);
    assert_eq!(sync[0][0], s("t"), "sync row {sync:?}");
}

async fn rollback_verified(client: &Client) {
    let queries = sql_after("**Verify Rollback**");
    assert_eq!(queries.len(), 3);
    for q in &queries {
        assert_eq!(scalar(client, q).await, "0", "{q}");
    }
}

async fn utc_client(db: &TestDb) -> Client {
    let client = db.client().await;
    client.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    client
}

async fn bar_counts(client: &Client) -> (String, String) {
    (
        scalar(client, "SELECT count(*) FROM data_bars").await,
        scalar(client, "SELECT count(*) FROM derived_data_bars").await,
    )
}

/// A day of 1m bars for EURUSD in July 2025, aggregated to 5m and 1h.
async fn some_bars(client: &Client) {
    client
        .batch_execute(
            "INSERT INTO data_bars (canonical_symbol, timeframe, ts_utc, open, high, low, close, vol)
             SELECT 'EURUSD', '1m', t, 1.1, 1.2, 1.0, 1.15, 1
             FROM generate_series(timestamptz '2025-07-01 00:00+00', '2025-07-01 23:59+00', '1 minute') t;
             SELECT catchup_aggregation_range('EURUSD', '5m', '2025-07-01 00:00+00', 1000, '2025-07-02', 1, false);
             SELECT catchup_aggregation_range('EURUSD', '1h', '2025-07-01 00:00+00', 1000, '2025-07-02', 1, false);",
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn the_checklist_passes_rolls_back_and_comes_back() {
    let db = TestDb::migrated().await;
    for (symbol, class) in [("EURUSD", "fx"), ("GBPUSD", "fx"), ("XAUUSD", "metal")] {
        ok(&db.cli(&["assets", "add", symbol, "--class", class]));
    }
    let synced = ok(&db.cli(&["sync"]));
    assert!(synced.contains("18 created"), "{synced}");

    let client = utc_client(&db).await;
    schema_steps_pass(&client).await;
    data_steps_pass(&client).await;

    some_bars(&client).await;
    let before = bar_counts(&client).await;
    assert_eq!(before, ("1440".to_string(), "312".to_string()));
    drop(client);

    ok(&db.cli(&["db", "down", "--to", "1"]));
    let client = utc_client(&db).await;
    rollback_verified(&client).await;
    assert_eq!(bar_counts(&client).await, before, "rollback lost bars");
    drop(client);

    ok(&db.cli(&["db", "up"]));
    let client = utc_client(&db).await;
    schema_steps_pass(&client).await;
    data_steps_pass(&client).await;
    assert_eq!(bar_counts(&client).await, before);
}

#[tokio::test]
async fn a_database_from_an_earlier_deployment_is_adopted_with_its_rows() {
    let db = TestDb::empty().await;
    let client = db.client().await;
    // The original system's tables: another name for the 1m key, derived
    // bars without soft delete or versions, tasks without leases or Phase-5
    // columns, and no migration history.
    client
        .batch_execute(
            "CREATE TABLE core_asset_registry_all (
               canonical_symbol text PRIMARY KEY, asset_class text NOT NULL,
               active boolean NOT NULL DEFAULT true);
             CREATE TABLE data_bars (
               canonical_symbol text NOT NULL, timeframe text NOT NULL, ts_utc timestamptz NOT NULL,
               open double precision NOT NULL, high double precision NOT NULL,
               low double precision NOT NULL, close double precision NOT NULL,
               vol double precision NOT NULL DEFAULT 0,
               CONSTRAINT uq_bars_symbol_tf_ts UNIQUE (canonical_symbol, timeframe, ts_utc));
             CREATE TABLE derived_data_bars (
               canonical_symbol text NOT NULL, timeframe text NOT NULL, ts_utc timestamptz NOT NULL,
               open double precision NOT NULL, high double precision NOT NULL,
               low double precision NOT NULL, close double precision NOT NULL,
               vol double precision NOT NULL DEFAULT 0, source_timeframe text NOT NULL,
               source_candles integer NOT NULL, expected_candles integer NOT NULL,
               quality_score smallint NOT NULL);
             CREATE TABLE data_agg_state (
               canonical_symbol text NOT NULL, timeframe text NOT NULL, source_timeframe text NOT NULL,
               run_interval_minutes integer NOT NULL DEFAULT 1,
               aggregation_delay_seconds integer NOT NULL DEFAULT 0,
               is_mandatory boolean NOT NULL DEFAULT true, status text NOT NULL DEFAULT 'idle',
               last_agg_bar_ts_utc timestamptz, next_run_at timestamptz NOT NULL DEFAULT now(),
               last_successful_at_utc timestamptz, hard_fail_streak integer NOT NULL DEFAULT 0,
               last_error text, PRIMARY KEY (canonical_symbol, timeframe));
             INSERT INTO core_asset_registry_all VALUES ('EURUSD', 'fx', true), ('BTCUSD', 'crypto', true);
             INSERT INTO data_bars
               SELECT 'EURUSD', '1m', t, 1.1, 1.2, 1.0, 1.15, 1
               FROM generate_series(timestamptz '2025-07-01 00:00+00', '2025-07-01 00:59+00', '1 minute') t;
             INSERT INTO derived_data_bars VALUES
               ('EURUSD', '5m', '2025-06-30 23:55+00', 1.1, 1.2, 1.0, 1.15, 5, '1m', 5, 5, 2);
             INSERT INTO data_agg_state (canonical_symbol, timeframe, source_timeframe, last_agg_bar_ts_utc)
               VALUES ('EURUSD', '5m', '1m', '2025-07-01 00:00+00'), ('EURUSD', '1h', '5m', '2025-07-01 00:00+00');",
        )
        .await
        .unwrap();
    drop(client);

    let out = ok(&db.cli(&["db", "up"]));
    assert!(out.contains("applied migration 2"), "{out}");

    let client = utc_client(&db).await;
    schema_steps_pass(&client).await;
    assert_eq!(
        bar_counts(&client).await,
        ("60".to_string(), "1".to_string())
    );
    assert_eq!(
        scalar(
            &client,
            "SELECT string_agg(timeframe || ' ' || agg_start_utc || ' ' || enabled || ' ' || task_priority, ', ' ORDER BY timeframe)
             FROM data_agg_state"
        )
        .await,
        "1h 2025-07-01 00:00:00+00 true 100, 5m 2025-07-01 00:00:00+00 true 100"
    );
    data_steps_pass(&client).await;

    // The adopted task keeps working from its old cursor.
    let result = scalar(
        &client,
        "SELECT catchup_aggregation_range('EURUSD', '5m', '2025-07-01 00:00+00', 100, '2025-07-02', 1, false)->>'bars_created'",
    )
    .await;
    assert_eq!(result, "12");
}
