//! What the connected database holds of barkeep's schema: whether it is
//! migrated at all, and whether a table or column a later step adds is
//! there yet. Readers ask before they query, so a database without the
//! schema (or one step behind the binary) gets the next step to take
//! instead of a failed query.

use anyhow::{bail, Context, Result};
use tokio_postgres::Client;

/// Refuse with the next step to take when the database has no barkeep
/// schema yet, instead of letting a query fail on a missing table.
pub async fn require_migrated(client: &Client) -> Result<()> {
    let row = client
        .query_one(
            // The catalog, not information_schema: a role without rights on
            // the table (the ingest role) still sees that it exists.
            "SELECT to_regclass('data_agg_state') IS NOT NULL,
                    EXISTS (SELECT 1 FROM pg_attribute
                            WHERE attrelid = to_regclass('data_agg_state')
                              AND attname = 'agg_start_utc' AND NOT attisdropped)",
            &[],
        )
        .await
        .context("looking for barkeep's tables")?;
    let (tables, phase5): (bool, bool) = (row.get(0), row.get(1));
    if !tables || !phase5 {
        bail!("the database is not migrated: run `barkeep db up` first");
    }
    Ok(())
}

/// Whether `table` exists: a database one step behind the binary may lack
/// what a later step adds, and readers of it fall back instead of failing.
pub async fn has_table(client: &Client, table: &str) -> Result<bool> {
    Ok(client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await
        .with_context(|| format!("looking up {table}"))?
        .get(0))
}

/// Whether `table` has `column`. The catalog, which every barkeep role may
/// read, not information_schema, which hides what a role has no rights on.
pub async fn has_column(client: &Client, table: &str, column: &str) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute
                            WHERE attrelid = to_regclass($1) AND attname = $2 AND NOT attisdropped)",
            &[&table, &column],
        )
        .await
        .with_context(|| format!("looking for {table}.{column}"))?
        .get(0))
}
