//! Reversible, checksummed migrations embedded in the binary.
//!
//! Each step is `migrations/<version>_<name>.up.sql` with its
//! `.down.sql`. Steps run in one transaction each, under a session advisory
//! lock so concurrent `db up` calls queue instead of colliding. The SHA-256
//! of every applied up script is recorded; an applied step whose embedded
//! script no longer matches is refused by name.
//!
//! SQL functions are not copied into steps: each lives in a repeatable file
//! `sql/functions/NN_topic.sql` (`CREATE OR REPLACE`, its first line
//! `-- requires: <step>`). `db up` applies a file once its step is applied
//! and again whenever the file's SHA-256 differs from the one recorded in
//! `barkeep_schema_functions`, so changing a function is an edit of one file.
//! Reverting the step a file requires drops every function the file
//! defines, in the same transaction as the step's down script.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

mod columns;
mod functions;
mod schema;

pub use columns::{dropped_columns, values_dropped_by_down, ValuesAtRisk};
pub use functions::{apply_functions, drop_functions, FunctionFile, FUNCTION_FILES};
pub use schema::{has_column, has_table, require_migrated};

/// One migration step.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub up: &'static str,
    pub down: &'static str,
    /// Checksums of earlier texts of `up` that are equivalent for a database
    /// that applied them (a step whose functions moved to `sql/functions/`).
    pub previous_checksums: &'static [&'static str],
}

impl Migration {
    /// Hex SHA-256 of the up script.
    pub fn checksum(&self) -> String {
        sha256_hex(self.up)
    }

    /// True when `recorded` is the checksum of this step's script, now or
    /// in an equivalent earlier text.
    pub fn accepts(&self, recorded: &str) -> bool {
        self.checksum() == recorded || self.previous_checksums.contains(&recorded)
    }

    /// Tables the down script drops (`DROP TABLE [IF EXISTS] a, b …;` lines).
    pub fn dropped_tables(&self) -> Vec<String> {
        let mut tables = Vec::new();
        for line in self.down.lines() {
            let upper = line.trim().to_ascii_uppercase();
            let Some(rest) = upper.strip_prefix("DROP TABLE ") else {
                continue;
            };
            let rest = rest.strip_prefix("IF EXISTS ").unwrap_or(rest);
            let names = rest.split(';').next().unwrap_or("");
            for name in names.split(',') {
                let name = name.split_whitespace().next().unwrap_or("");
                if !name.is_empty() {
                    tables.push(name.to_ascii_lowercase());
                }
            }
        }
        tables
    }
}

/// The applied steps above `to`: what reverting to `to` undoes.
async fn reverted_steps(client: &Client, to: i64) -> Result<Vec<&'static Migration>> {
    let applied: Vec<i64> = status(client)
        .await?
        .iter()
        .filter(|s| s.applied && s.version > to)
        .map(|s| s.version)
        .collect();
    Ok(MIGRATIONS
        .iter()
        .filter(|m| applied.contains(&m.version))
        .collect())
}

/// A table a revert would drop with the rows it holds.
#[derive(Debug, serde::Serialize)]
pub struct RowsAtRisk {
    pub version: i64,
    pub table: String,
    pub rows: i64,
}

/// The tables holding rows that reverting every applied step above `to`
/// would drop, so `db down` can refuse without `--force` and say how many.
pub async fn rows_dropped_by_down(client: &Client, to: i64) -> Result<Vec<RowsAtRisk>> {
    let mut at_risk = Vec::new();
    for m in reverted_steps(client, to).await? {
        for table in m.dropped_tables() {
            if !has_table(client, &table).await? {
                continue;
            }
            let rows: i64 = client
                .query_one(
                    &format!("SELECT count(*) FROM {}", crate::db::quote_ident(&table)),
                    &[],
                )
                .await
                .with_context(|| format!("counting the rows of {table}"))?
                .get(0);
            if rows > 0 {
                at_risk.push(RowsAtRisk {
                    version: m.version,
                    table,
                    rows,
                });
            }
        }
    }
    Ok(at_risk)
}

/// Where `db down` without `--to` goes: one step below the newest applied
/// step (None when nothing is applied).
pub async fn one_step_down(client: &Client) -> Result<Option<i64>> {
    let applied: Vec<i64> = status(client)
        .await?
        .iter()
        .filter(|s| s.applied)
        .map(|s| s.version)
        .collect();
    Ok(match applied.as_slice() {
        [] => None,
        [.., below, _] => Some(*below),
        [_] => Some(0),
    })
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

macro_rules! migration {
    ($version:expr, $name:literal) => {
        migration!($version, $name, [])
    };
    ($version:expr, $name:literal, [$($previous:literal),*]) => {
        Migration {
            version: $version,
            name: $name,
            up: include_str!(concat!("../migrations/", $name, ".up.sql")),
            down: include_str!(concat!("../migrations/", $name, ".down.sql")),
            previous_checksums: &[$($previous),*],
        }
    };
}

/// Every step, in order.
pub const MIGRATIONS: &[Migration] = &[
    // Only a comment changed since release.
    migration!(
        1,
        "0001_base_schema",
        ["da7b455b80f2d900680f2b7f52f0e2005ec2b92a468606984173eb81b1a844b7"]
    ),
    // Its functions moved to sql/functions/ after release; a database that
    // applied the earlier text has the same columns and index.
    migration!(
        2,
        "0002_phase5",
        ["97bcb7b8aff07910d02b2612b4815e5cb169b85aa077315fbb5e422574360350"]
    ),
    migration!(3, "0003_task_states"),
    migration!(4, "0004_late_data"),
    // The worker's NOTIFY triggers (sql/functions/50_notify.sql).
    migration!(5, "0005_worker"),
    migration!(8, "0008_managed"),
    // Finding a file's quarantined rows (re-ingest, `quarantine --file`).
    migration!(9, "0009_quarantine_lookup"),
    // Lease recoveries per task (sql/functions/55_lease_recoveries.sql).
    migration!(10, "0010_lease_recoveries"),
    // The quarantined file's path as the user gave it, beside the canonical one.
    migration!(11, "0011_quarantine_path_as_given"),
    // The instants history was pruned before (`barkeep history prune`).
    migration!(12, "0012_history_prunes"),
    // The lease columns tied to 'running' (sql/functions/40_tasks.sql).
    migration!(13, "0013_lease_check"),
    // Whether a task's start was pinned by an operator (sql/functions/40_tasks.sql).
    migration!(14, "0014_agg_start_pinned"),
];

/// Key of the advisory lock held while migrating ("barkeep" in ASCII).
const LOCK_KEY: i64 = 0x0062_6172_6b65_6570;

/// State of one step in a database.
#[derive(Debug, serde::Serialize)]
pub struct StepStatus {
    pub version: i64,
    pub name: String,
    pub applied: bool,
    pub applied_at: Option<chrono::DateTime<chrono::Utc>>,
    /// False when the applied script differs from the embedded one.
    pub checksum_ok: bool,
}

async fn ensure_history(client: &Client) -> Result<()> {
    client
        .batch_execute(
            "SET client_min_messages = warning;
             CREATE TABLE IF NOT EXISTS barkeep_schema_migrations (
               version    bigint PRIMARY KEY,
               name       text NOT NULL,
               checksum   text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now()
             );
             CREATE TABLE IF NOT EXISTS barkeep_schema_functions (
               file       text PRIMARY KEY,
               checksum   text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now()
             );
             RESET client_min_messages;",
        )
        .await
        .context("creating the migration history table")
}

async fn applied(
    client: &Client,
) -> Result<Vec<(i64, String, String, chrono::DateTime<chrono::Utc>)>> {
    let rows = client
        .query(
            "SELECT version, name, checksum, applied_at FROM barkeep_schema_migrations ORDER BY version",
            &[],
        )
        .await
        .context("reading the migration history")?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect())
}

/// Refuse to go on when an applied step's script was edited or is unknown.
fn check_applied(history: &[(i64, String, String, chrono::DateTime<chrono::Utc>)]) -> Result<()> {
    for (version, name, checksum, _) in history {
        match MIGRATIONS.iter().find(|m| m.version == *version) {
            None => bail!(
                "the database has migration {version} ({name}) applied, which this barkeep does not know; \
                 use the barkeep version that applied it"
            ),
            Some(m) if !m.accepts(checksum) => bail!(
                "migration {version} ({}) was edited after it was applied: its checksum {} differs from \
                 the applied {checksum}; restore the original script or add a new migration instead",
                m.name,
                m.checksum()
            ),
            Some(_) => {}
        }
    }
    Ok(())
}

async fn lock(client: &Client) -> Result<()> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .context("taking the migration lock")?;
    Ok(())
}

async fn unlock(client: &Client) -> Result<()> {
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await
        .context("releasing the migration lock")?;
    Ok(())
}

/// Apply every pending step up to `target` (all when None). Returns the
/// versions applied.
pub async fn up(client: &mut Client, target: Option<i64>) -> Result<Vec<i64>> {
    lock(client).await?;
    let result = up_locked(client, target).await;
    unlock(client).await?;
    result
}

async fn up_locked(client: &mut Client, target: Option<i64>) -> Result<Vec<i64>> {
    crate::roles::ensure(client).await?;
    ensure_history(client).await?;
    let history = applied(client).await?;
    check_applied(&history)?;
    let mut done = Vec::new();
    for m in MIGRATIONS {
        if target.is_some_and(|t| m.version > t) {
            break;
        }
        if history.iter().any(|(v, ..)| *v == m.version) {
            continue;
        }
        let tx = client
            .transaction()
            .await
            .context("opening a transaction")?;
        tx.batch_execute(m.up)
            .await
            .with_context(|| format!("applying migration {} ({})", m.version, m.name))?;
        tx.execute(
            "INSERT INTO barkeep_schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &m.checksum()],
        )
        .await
        .context("recording the migration")?;
        apply_functions(&tx, FUNCTION_FILES, m.version).await?;
        tx.commit()
            .await
            .with_context(|| format!("committing migration {} ({})", m.version, m.name))?;
        done.push(m.version);
    }
    let newest = applied(client).await?.iter().map(|r| r.0).max();
    if let Some(newest) = newest {
        let tx = client
            .transaction()
            .await
            .context("opening a transaction")?;
        apply_functions(&tx, FUNCTION_FILES, newest).await?;
        tx.commit().await.context("committing the SQL functions")?;
    }
    Ok(done)
}

/// Revert applied steps above `to` (to 0 = everything). Returns the
/// versions reverted, newest first.
pub async fn down(client: &mut Client, to: i64) -> Result<Vec<i64>> {
    if to < 0 {
        bail!("--to must be 0 or a migration version, got {to}");
    }
    if to > 0 && !MIGRATIONS.iter().any(|m| m.version == to) {
        bail!(
            "there is no migration {to}; known versions: {}",
            MIGRATIONS
                .iter()
                .map(|m| m.version.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    lock(client).await?;
    let result = down_locked(client, to).await;
    unlock(client).await?;
    result
}

async fn down_locked(client: &mut Client, to: i64) -> Result<Vec<i64>> {
    ensure_history(client).await?;
    let history = applied(client).await?;
    check_applied(&history)?;
    let mut done = Vec::new();
    for m in MIGRATIONS.iter().rev() {
        if m.version <= to || !history.iter().any(|(v, ..)| *v == m.version) {
            continue;
        }
        let tx = client
            .transaction()
            .await
            .context("opening a transaction")?;
        tx.batch_execute(m.down)
            .await
            .with_context(|| format!("reverting migration {} ({})", m.version, m.name))?;
        drop_functions(&tx, FUNCTION_FILES, m.version).await?;
        tx.execute(
            "DELETE FROM barkeep_schema_migrations WHERE version = $1",
            &[&m.version],
        )
        .await
        .context("recording the revert")?;
        tx.commit()
            .await
            .with_context(|| format!("committing the revert of {} ({})", m.version, m.name))?;
        done.push(m.version);
    }
    Ok(done)
}

/// Every known step and whether it is applied. Reads only: a database
/// without the history table has every step pending.
pub async fn status(client: &Client) -> Result<Vec<StepStatus>> {
    let has_history: bool = client
        .query_one(
            "SELECT to_regclass('barkeep_schema_migrations') IS NOT NULL",
            &[],
        )
        .await
        .context("looking for the migration history table")?
        .get(0);
    let history = if has_history {
        applied(client).await?
    } else {
        Vec::new()
    };
    Ok(MIGRATIONS
        .iter()
        .map(|m| {
            let row = history.iter().find(|(v, ..)| *v == m.version);
            StepStatus {
                version: m.version,
                name: m.name.to_string(),
                applied: row.is_some(),
                applied_at: row.map(|r| r.3),
                checksum_ok: row.is_none_or(|r| m.accepts(&r.2)),
            }
        })
        .collect())
}
