//! The SQL face of the aggregation, each test on a fresh migrated
//! database: one file per topic (calendar helpers, catch-up, task
//! transitions, bad calls and role privileges); this one holds what they
//! share: registered fx tasks, a catch-up call, the cursor and the sample.

mod calendar;
mod calls;
mod catchup;
mod task_states;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::Client;

use crate::common::TestDb;
use crate::fixtures::{load_bars, sample_bars, ts};

/// A migrated database with `symbols` registered as fx (through the
/// registry table, as an operator's SQL would) and tasks starting at `start`.
async fn fx_registered(symbols: &[&str], start: &str) -> (TestDb, Client) {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    client.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    for s in symbols {
        client
            .execute(
                "INSERT INTO core_asset_registry_all (canonical_symbol, asset_class) VALUES ($1, 'fx')",
                &[s],
            )
            .await
            .unwrap();
    }
    client
        .query_one(
            "SELECT * FROM sync_agg_state_from_registry('prod', $1)",
            &[&ts(start)],
        )
        .await
        .unwrap();
    (db, client)
}

async fn catchup(
    client: &Client,
    symbol: &str,
    tf: &str,
    cursor: &str,
    max: i32,
    now: &str,
    ignore: bool,
) -> Value {
    client
        .query_one(
            "SELECT catchup_aggregation_range($1, $2, $3, $4, $5, 1, $6)",
            &[&symbol, &tf, &ts(cursor), &max, &ts(now), &ignore],
        )
        .await
        .unwrap_or_else(|e| panic!("catchup {symbol} {tf} {cursor}: {e}"))
        .get(0)
}

async fn cursor_of(client: &Client, symbol: &str, tf: &str) -> DateTime<Utc> {
    client
        .query_one(
            "SELECT last_agg_bar_ts_utc FROM data_agg_state WHERE canonical_symbol = $1 AND timeframe = $2",
            &[&symbol, &tf],
        )
        .await
        .unwrap()
        .get(0)
}

async fn set_cursor(client: &Client, symbol: &str, tf: &str, cursor: &str) {
    client
        .execute(
            "UPDATE data_agg_state SET last_agg_bar_ts_utc = $3 WHERE canonical_symbol = $1 AND timeframe = $2",
            &[&symbol, &tf, &ts(cursor)],
        )
        .await
        .unwrap();
}

async fn load_sample(client: &Client, symbol: &str) -> usize {
    let bars = sample_bars();
    load_bars(client, symbol, &bars).await;
    bars.len()
}

async fn text(client: &Client, sql: &str) -> String {
    client
        .query_one(&format!("SELECT ({sql})::text"), &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get::<_, Option<String>>(0)
        .unwrap_or_default()
}
