//! Reversible, checksummed migrations embedded in the binary.
//!
//! Each step is `migrations/<version>_<name>.up.sql` with its
//! `.down.sql`. Steps run in one transaction each, under a session advisory
//! lock so concurrent `db up` calls queue instead of colliding. The SHA-256
//! of every applied up script is recorded; an applied step whose embedded
//! script no longer matches is refused by name.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

/// One migration step.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub up: &'static str,
    pub down: &'static str,
}

impl Migration {
    /// Hex SHA-256 of the up script.
    pub fn checksum(&self) -> String {
        Sha256::digest(self.up.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

macro_rules! migration {
    ($version:expr, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            up: include_str!(concat!("../migrations/", $name, ".up.sql")),
            down: include_str!(concat!("../migrations/", $name, ".down.sql")),
        }
    };
}

/// Every step, in order.
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_base_schema"),
    migration!(2, "0002_phase5"),
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
            Some(m) if m.checksum() != *checksum => bail!(
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
        tx.commit()
            .await
            .with_context(|| format!("committing migration {} ({})", m.version, m.name))?;
        done.push(m.version);
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
                checksum_ok: row.is_none_or(|r| r.2 == m.checksum()),
            }
        })
        .collect())
}
