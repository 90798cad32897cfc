//! `barkeep backup` / `barkeep restore` as a service: the task state
//! (`data_agg_state`) and the instrument registry (`core_asset_registry_all`)
//! written to one JSON document, and put back in one transaction, as the
//! checklist asks before a migration. A malformed file, or one holding a
//! value no command would write ([`check`]), is refused before anything
//! changes.

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tokio_postgres::Client;

pub mod check;
mod dup_keys;

/// The `format` field every backup carries.
pub const FORMAT: &str = "barkeep-backup";
/// The layout version of this module's documents.
pub const VERSION: u32 = 1;

/// A backup document: every row of the two tables as JSON objects keyed by
/// column name, as PostgreSQL's `json_agg` writes them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Backup {
    pub format: String,
    pub version: u32,
    pub created_at: DateTime<Utc>,
    /// The newest migration applied when the backup was taken.
    pub schema_version: Option<i64>,
    pub core_asset_registry_all: Vec<Map<String, Value>>,
    pub data_agg_state: Vec<Map<String, Value>>,
}

/// What a restore did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreReport {
    pub assets_restored: usize,
    pub tasks_replaced: i64,
    pub tasks_restored: usize,
}

async fn rows_of(client: &Client, table: &str, order: &str) -> Result<Vec<Map<String, Value>>> {
    let row = client
        .query_one(
            &format!("SELECT coalesce(json_agg(t ORDER BY {order}), '[]'::json) FROM {table} t"),
            &[],
        )
        .await
        .with_context(|| format!("reading {table}"))?;
    let value: Value = row.get(0);
    serde_json::from_value(value).with_context(|| format!("decoding the rows of {table}"))
}

/// Read both tables into a backup document.
pub async fn backup(client: &Client) -> Result<Backup> {
    crate::migrate::require_migrated(client).await?;
    let schema_version: Option<i64> = client
        .query_one("SELECT max(version) FROM barkeep_schema_migrations", &[])
        .await
        .context("reading the migration history")?
        .get(0);
    Ok(Backup {
        format: FORMAT.into(),
        version: VERSION,
        created_at: Utc::now(),
        schema_version,
        core_asset_registry_all: rows_of(client, "core_asset_registry_all", "canonical_symbol")
            .await?,
        data_agg_state: rows_of(client, "data_agg_state", "canonical_symbol, timeframe").await?,
    })
}

impl Backup {
    /// Parse and check a backup file's bytes; nothing is written.
    pub fn parse(bytes: &[u8]) -> Result<Backup> {
        Self::parse_at(bytes, Utc::now())
    }

    /// [`Backup::parse`] with the instant leases are judged against: every
    /// value is checked as the commands check it ([`check`]), and the first
    /// bad one refuses the whole file.
    pub fn parse_at(bytes: &[u8], now: DateTime<Utc>) -> Result<Backup> {
        let backup: Backup = serde_json::from_slice(bytes)
            .context("not a barkeep backup (expected the JSON that `barkeep backup` writes)")?;
        if backup.format != FORMAT {
            bail!(
                "not a barkeep backup: format is {:?}, expected {FORMAT:?}",
                backup.format
            );
        }
        if backup.version != VERSION {
            bail!(
                "backup layout version {} is not supported (this barkeep reads version {VERSION})",
                backup.version
            );
        }
        dup_keys::refuse_duplicate_keys(bytes)
            .context("not restoring a backup with a key given twice")?;
        let registry = check::registry(&backup.core_asset_registry_all)
            .context("not restoring core_asset_registry_all")?;
        check::tasks(&backup.data_agg_state, &registry, now)
            .context("not restoring data_agg_state")?;
        Ok(backup)
    }
}

/// Columns of `table` in the current schema.
async fn columns(
    client: &impl tokio_postgres::GenericClient,
    table: &str,
) -> Result<BTreeSet<String>> {
    let rows = client
        .query(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1",
            &[&table],
        )
        .await
        .with_context(|| format!("reading the columns of {table}"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The columns the rows carry; refuses a column the table lacks.
fn restored_columns(
    rows: &[Map<String, Value>],
    table: &str,
    known: &BTreeSet<String>,
) -> Result<Vec<String>> {
    let mut cols = BTreeSet::new();
    for row in rows {
        for key in row.keys() {
            if !known.contains(key) {
                bail!("the backup's {table} has a column {key:?} that the database's {table} lacks; restore with the barkeep version that wrote it");
            }
            cols.insert(key.clone());
        }
    }
    Ok(cols.into_iter().collect())
}

fn quoted(cols: &[String]) -> String {
    cols.iter()
        .map(|c| crate::db::quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How many tasks a restore would replace.
pub async fn tasks_present(client: &Client) -> Result<i64> {
    crate::migrate::require_migrated(client).await?;
    Ok(client
        .query_one("SELECT count(*) FROM data_agg_state", &[])
        .await
        .context("counting tasks")?
        .get(0))
}

/// Put a backup back in one transaction: registry rows are upserted (assets
/// the backup does not name stay), and `data_agg_state` is replaced by the
/// backup's tasks. Any failure leaves both tables as they were.
pub async fn restore(client: &mut Client, backup: &Backup) -> Result<RestoreReport> {
    crate::migrate::require_migrated(client).await?;
    let tx = client
        .transaction()
        .await
        .context("opening a transaction")?;
    check::calendars(&tx, &backup.core_asset_registry_all)
        .await
        .context("not restoring core_asset_registry_all")?;
    let registry_known = columns(&tx, "core_asset_registry_all").await?;
    let state_known = columns(&tx, "data_agg_state").await?;

    let assets = backup.core_asset_registry_all.len();
    if assets > 0 {
        let cols = restored_columns(
            &backup.core_asset_registry_all,
            "core_asset_registry_all",
            &registry_known,
        )?;
        let updates = cols
            .iter()
            .filter(|c| c.as_str() != "canonical_symbol")
            .map(|c| format!("{0} = EXCLUDED.{0}", crate::db::quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let conflict = if updates.is_empty() {
            "DO NOTHING".to_string()
        } else {
            format!("DO UPDATE SET {updates}")
        };
        let list = quoted(&cols);
        let rows = Value::Array(
            backup
                .core_asset_registry_all
                .iter()
                .cloned()
                .map(Value::Object)
                .collect(),
        );
        tx.execute(
            &format!(
                "INSERT INTO core_asset_registry_all ({list})
                 SELECT {list} FROM json_populate_recordset(NULL::core_asset_registry_all, $1::json)
                 ON CONFLICT (canonical_symbol) {conflict}"
            ),
            &[&rows],
        )
        .await
        .context("restoring core_asset_registry_all")?;
    }

    let replaced = tx
        .execute("DELETE FROM data_agg_state", &[])
        .await
        .context("clearing data_agg_state")? as i64;
    let tasks = backup.data_agg_state.len();
    if tasks > 0 {
        let cols = restored_columns(&backup.data_agg_state, "data_agg_state", &state_known)?;
        let list = quoted(&cols);
        let rows = Value::Array(
            backup
                .data_agg_state
                .iter()
                .cloned()
                .map(Value::Object)
                .collect(),
        );
        tx.execute(
            &format!(
                "INSERT INTO data_agg_state ({list})
                 SELECT {list} FROM json_populate_recordset(NULL::data_agg_state, $1::json)"
            ),
            &[&rows],
        )
        .await
        .context("restoring data_agg_state")?;
    }
    tx.commit().await.context("committing the restore")?;
    Ok(RestoreReport {
        assets_restored: assets,
        tasks_replaced: replaced,
        tasks_restored: tasks,
    })
}
