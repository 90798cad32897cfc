//! `data_agg_state`, counted for the command line and the HTTP face (the
//! task state itself is written by the SQL functions only).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use tokio_postgres::Client;

/// How many tasks are enabled.
pub async fn count_enabled(client: &Client) -> Result<i64> {
    Ok(client
        .query_one("SELECT count(*) FROM data_agg_state WHERE enabled", &[])
        .await
        .context("counting tasks")?
        .get(0))
}

/// How many tasks are in each status (statuses without a task are absent).
pub async fn count_by_status(client: &Client) -> Result<BTreeMap<String, i64>> {
    let rows = client
        .query(
            "SELECT status, count(*) FROM data_agg_state GROUP BY status",
            &[],
        )
        .await
        .context("counting tasks")?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
