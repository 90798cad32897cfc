//! The repeatable SQL function files (`sql/functions/NN_topic.sql`):
//! embedded in the binary, applied once their step is applied and again
//! whenever a file's SHA-256 differs from the one recorded in
//! `barkeep_schema_functions`, and dropped with the step they require.

use anyhow::{Context, Result};

use super::sha256_hex;

/// One repeatable file of SQL functions.
#[derive(Debug, Clone, Copy)]
pub struct FunctionFile {
    /// File name under `sql/functions/`, which also orders the files.
    pub name: &'static str,
    pub sql: &'static str,
}

macro_rules! function_file {
    ($name:literal) => {
        FunctionFile {
            name: $name,
            sql: include_str!(concat!("../../sql/functions/", $name)),
        }
    };
}

/// Every function file, in the order they are applied.
pub const FUNCTION_FILES: &[FunctionFile] = &[
    function_file!("10_calendar.sql"),
    function_file!("20_sources.sql"),
    function_file!("30_catchup.sql"),
    function_file!("40_tasks.sql"),
    function_file!("45_late_data.sql"),
    function_file!("47_live.sql"),
    function_file!("50_notify.sql"),
    function_file!("55_lease_recoveries.sql"),
];

impl FunctionFile {
    /// Hex SHA-256 of the file.
    pub fn checksum(&self) -> String {
        sha256_hex(self.sql)
    }

    /// The migration step the file needs, from its first line
    /// `-- requires: N`.
    pub fn requires(&self) -> Result<i64> {
        self.sql
            .lines()
            .next()
            .and_then(|l| l.trim().strip_prefix("-- requires:"))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| {
                format!(
                    "sql/functions/{}: the first line must be `-- requires: <migration version>`",
                    self.name
                )
            })
    }

    /// Names of the functions the file creates.
    pub fn function_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for line in self.sql.lines() {
            let upper = line.trim_start().to_ascii_uppercase();
            let rest = upper
                .strip_prefix("CREATE OR REPLACE FUNCTION ")
                .or_else(|| upper.strip_prefix("CREATE FUNCTION "));
            if let Some(rest) = rest {
                let name: String = rest
                    .trim_start()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect::<String>()
                    .to_ascii_lowercase();
                if !name.is_empty() && !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names
    }
}

/// Apply every file of `files` whose required step is at most `applied_up_to`
/// and whose recorded checksum differs from its text (or is missing).
/// Returns the names of the files applied.
pub async fn apply_functions(
    tx: &tokio_postgres::Transaction<'_>,
    files: &[FunctionFile],
    applied_up_to: i64,
) -> Result<Vec<&'static str>> {
    let mut done = Vec::new();
    for f in files {
        if f.requires()? > applied_up_to {
            continue;
        }
        let checksum = f.checksum();
        let recorded: Option<String> = tx
            .query_opt(
                "SELECT checksum FROM barkeep_schema_functions WHERE file = $1",
                &[&f.name],
            )
            .await
            .context("reading the function history")?
            .map(|r| r.get(0));
        if recorded.as_deref() == Some(checksum.as_str()) {
            continue;
        }
        tx.batch_execute(f.sql)
            .await
            .with_context(|| format!("applying sql/functions/{}", f.name))?;
        tx.execute(
            "INSERT INTO barkeep_schema_functions (file, checksum) VALUES ($1, $2)
             ON CONFLICT (file) DO UPDATE SET checksum = EXCLUDED.checksum, applied_at = now()",
            &[&f.name, &checksum],
        )
        .await
        .context("recording the function file")?;
        done.push(f.name);
    }
    Ok(done)
}

/// Drop every function defined by a file of `files` that requires step
/// `version`, and forget the files.
pub async fn drop_functions(
    tx: &tokio_postgres::Transaction<'_>,
    files: &[FunctionFile],
    version: i64,
) -> Result<()> {
    for f in files.iter().rev() {
        if f.requires()? != version {
            continue;
        }
        for name in f.function_names() {
            let overloads = tx
                .query(
                    "SELECT p.oid::regprocedure::text FROM pg_proc p
                     WHERE p.pronamespace = current_schema()::regnamespace AND p.proname = $1",
                    &[&name],
                )
                .await
                .with_context(|| format!("looking up function {name}"))?;
            for row in overloads {
                let signature: String = row.get(0);
                tx.batch_execute(&format!("DROP FUNCTION IF EXISTS {signature}"))
                    .await
                    .with_context(|| {
                        format!("dropping {signature} (from sql/functions/{})", f.name)
                    })?;
            }
        }
        tx.execute(
            "DELETE FROM barkeep_schema_functions WHERE file = $1",
            &[&f.name],
        )
        .await
        .context("forgetting the function file")?;
    }
    Ok(())
}
