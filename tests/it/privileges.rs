//! Least privilege: the roles of migration 0001, checked with `SET ROLE`
//! on a migrated database.

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::common::TestDb;

/// Run `sql` as `role`; Err carries the SQLSTATE of a refusal.
async fn as_role(client: &Client, role: &str, sql: &str) -> Result<(), SqlState> {
    client
        .batch_execute(&format!("SET ROLE {role}"))
        .await
        .unwrap();
    let outcome = client.batch_execute(sql).await;
    client.batch_execute("RESET ROLE").await.unwrap();
    outcome.map_err(|e| e.code().cloned().unwrap_or(SqlState::INTERNAL_ERROR))
}

async fn public_tables(client: &Client) -> Vec<String> {
    client
        .query(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn the_reader_can_read_but_not_write_any_table() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    let tables = public_tables(&client).await;
    assert!(tables.iter().any(|t| t == "data_bars"), "{tables:?}");
    for table in &tables {
        for sql in [
            format!("INSERT INTO {table} DEFAULT VALUES"),
            format!(
                "UPDATE {table} SET {} = {0} WHERE false",
                first_column(&client, table).await
            ),
            format!("DELETE FROM {table} WHERE false"),
            format!("TRUNCATE {table}"),
        ] {
            assert_eq!(
                as_role(&client, "barkeep_reader", &sql).await,
                Err(SqlState::INSUFFICIENT_PRIVILEGE),
                "the reader may run: {sql}"
            );
        }
    }
    for table in [
        "data_bars",
        "derived_data_bars",
        "data_agg_state",
        "core_asset_registry_all",
    ] {
        assert_eq!(
            as_role(
                &client,
                "barkeep_reader",
                &format!("SELECT count(*) FROM {table}")
            )
            .await,
            Ok(()),
            "the reader cannot read {table}"
        );
    }
}

async fn first_column(client: &Client, table: &str) -> String {
    client
        .query_one(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position LIMIT 1",
            &[&table],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn the_ingest_role_writes_raw_bars_only() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    assert_eq!(
        as_role(
            &client,
            "barkeep_ingest",
            "INSERT INTO data_bars (canonical_symbol, ts_utc, open, high, low, close)
             VALUES ('AUDUSD', '2023-06-01 05:00+00', 1, 1, 1, 1);
             INSERT INTO ingest_quarantine (file, line, raw_line, reason) VALUES ('f', 1, 'x', 'y')",
        )
        .await,
        Ok(())
    );
    assert_eq!(db.count("SELECT count(*) FROM data_bars").await, 1);
    for sql in [
        "INSERT INTO derived_data_bars (canonical_symbol, timeframe, ts_utc, open, high, low, close,
           source_timeframe, source_candles, expected_candles, quality_score)
         VALUES ('AUDUSD', '5m', '2023-06-01 05:00+00', 1, 1, 1, 1, '1m', 5, 5, 2)",
        "UPDATE derived_data_bars SET deleted_at = now() WHERE false",
        "DELETE FROM derived_data_bars WHERE false",
        "INSERT INTO data_agg_state (canonical_symbol, timeframe, source_timeframe)
         VALUES ('AUDUSD', '5m', '1m')",
        "UPDATE data_agg_state SET status = 'idle' WHERE false",
        "DELETE FROM data_agg_state WHERE false",
    ] {
        assert_eq!(
            as_role(&client, "barkeep_ingest", sql).await,
            Err(SqlState::INSUFFICIENT_PRIVILEGE),
            "the ingest role may run: {sql}"
        );
    }
}

#[tokio::test]
async fn the_ingest_role_can_run_a_whole_ingest() {
    use barkeep::assets;
    use barkeep::ingest::{ingest_files, IngestOptions};
    use barkeep::model::{AssetClass, Symbol};
    let db = TestDb::migrated().await;
    let mut client = db.client().await;
    let symbol = Symbol::parse("AUDUSD").unwrap();
    assets::add(&client, &symbol, AssetClass::Fx, None, true)
        .await
        .unwrap();
    client
        .batch_execute("SET ROLE barkeep_ingest")
        .await
        .unwrap();
    let files = [crate::common::sample_path()];
    let opts = IngestOptions::new(symbol);
    let first = ingest_files(&mut client, &files, &opts).await.unwrap();
    assert_eq!(first.total.loaded, 16_875);
    let again = ingest_files(&mut client, &files, &opts).await.unwrap();
    assert_eq!(again.total.duplicates, 16_875);
}
