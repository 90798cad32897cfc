//! The ingest quarantine (`ingest_quarantine`): its size and newest entries
//! for `status`, a filtered listing, and a purge that says what it deletes.

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use crate::ingest::read::canonical_path;
use crate::model::Symbol;

/// One quarantined row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QuarantineEntry {
    pub id: i64,
    /// The file's canonical path (absolute, links resolved): what
    /// identifies it.
    pub file: String,
    /// The path as the user gave it to ingest; None for rows quarantined
    /// before barkeep recorded it.
    pub file_as_given: Option<String>,
    pub line: i64,
    pub symbol: Option<String>,
    pub reason: String,
    pub raw_line: String,
    pub quarantined_at: DateTime<Utc>,
}

/// Size of the quarantine and its newest entries.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QuarantineSummary {
    pub rows: i64,
    pub files: i64,
    pub newest: Vec<QuarantineEntry>,
}

/// Which quarantined rows a listing or a purge is about. An empty filter
/// means every row.
#[derive(Debug, Clone, Default)]
pub struct QuarantineFilter {
    /// The file as the user names it: a path relative to the current
    /// folder, an absolute one, or through a symbolic link; it matches the
    /// canonical path ingest records, and the path itself for rows recorded
    /// before ingest recorded canonical paths.
    pub file: Option<String>,
    pub symbol: Option<Symbol>,
    /// Rows quarantined before this instant.
    pub before: Option<DateTime<Utc>>,
}

impl QuarantineFilter {
    pub fn is_empty(&self) -> bool {
        self.file.is_none() && self.symbol.is_none() && self.before.is_none()
    }

    /// The WHERE clause and its parameters.
    fn sql(&self) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
        let mut clauses = Vec::new();
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        if let Some(f) = &self.file {
            params.push(Box::new(file_names(f)));
            clauses.push(format!("file = ANY(${})", params.len()));
        }
        if let Some(s) = &self.symbol {
            params.push(Box::new(s.as_str().to_string()));
            clauses.push(format!("canonical_symbol = ${}", params.len()));
        }
        if let Some(b) = self.before {
            params.push(Box::new(b));
            clauses.push(format!("quarantined_at < ${}", params.len()));
        }
        let sql = if clauses.is_empty() {
            "true".to_string()
        } else {
            clauses.join(" AND ")
        };
        (sql, params)
    }

    /// Describe the filter for messages ("every row" when empty).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(f) = &self.file {
            parts.push(format!("file {f}"));
        }
        if let Some(s) = &self.symbol {
            parts.push(format!("symbol {s}"));
        }
        if let Some(b) = self.before {
            parts.push(format!("quarantined before {}", b.to_rfc3339()));
        }
        if parts.is_empty() {
            "every row".into()
        } else {
            parts.join(", ")
        }
    }
}

/// The names under which `ingest_quarantine.file` may hold the file the user
/// typed: as typed, and its canonical path.
fn file_names(typed: &str) -> Vec<String> {
    let mut names = vec![typed.to_string()];
    if typed != "-" && typed != "<stdin>" {
        let canonical = canonical_path(std::path::Path::new(typed));
        if canonical != typed {
            names.push(canonical);
        }
    } else {
        names.push("<stdin>".to_string());
    }
    names
}

fn entry(r: &tokio_postgres::Row) -> QuarantineEntry {
    QuarantineEntry {
        id: r.get(0),
        file: r.get(1),
        line: r.get(2),
        symbol: r.get(3),
        reason: r.get(4),
        raw_line: r.get(5),
        quarantined_at: r.get(6),
        file_as_given: r.get(7),
    }
}

impl QuarantineEntry {
    /// File and line as ingest's messages named them, and the canonical
    /// path when that differs: `bars.csv:2 (/data/bars.csv)`.
    pub fn location(&self) -> String {
        match &self.file_as_given {
            Some(given) if *given != self.file => {
                format!("{given}:{} ({})", self.line, self.file)
            }
            _ => format!("{}:{}", self.file, self.line),
        }
    }
}

/// The newest `limit` entries matching the filter, newest first.
pub async fn list(
    client: &Client,
    filter: &QuarantineFilter,
    limit: i64,
) -> Result<Vec<QuarantineEntry>> {
    crate::migrate::require_migrated(client).await?;
    let (clause, mut params) = filter.sql();
    params.push(Box::new(limit.max(0)));
    let sql = format!(
        // Through to_jsonb, so a database not yet brought up to migration 11
        // (no file_as_given column) lists its rows too.
        "SELECT id, file, line, canonical_symbol, reason, raw_line, quarantined_at,
                to_jsonb(q) ->> 'file_as_given'
         FROM ingest_quarantine q WHERE {clause} ORDER BY id DESC LIMIT ${}",
        params.len()
    );
    let refs: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let rows = client
        .query(&sql, &refs)
        .await
        .context("reading ingest_quarantine")?;
    Ok(rows.iter().map(entry).collect())
}

/// How many rows match the filter.
pub async fn count(client: &Client, filter: &QuarantineFilter) -> Result<i64> {
    crate::migrate::require_migrated(client).await?;
    let (clause, params) = filter.sql();
    let refs: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    Ok(client
        .query_one(
            &format!("SELECT count(*) FROM ingest_quarantine WHERE {clause}"),
            &refs,
        )
        .await
        .context("counting ingest_quarantine")?
        .get(0))
}

/// Size and newest entries.
pub async fn summary(client: &Client, newest: i64) -> Result<QuarantineSummary> {
    crate::migrate::require_migrated(client).await?;
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT file) FROM ingest_quarantine",
            &[],
        )
        .await
        .context("counting ingest_quarantine")?;
    Ok(QuarantineSummary {
        rows: row.get(0),
        files: row.get(1),
        newest: list(client, &QuarantineFilter::default(), newest).await?,
    })
}

/// Delete the rows matching the filter; returns how many went. An empty
/// filter deletes everything and needs `everything = true` (the `--force`).
pub async fn purge(client: &Client, filter: &QuarantineFilter, everything: bool) -> Result<u64> {
    crate::migrate::require_migrated(client).await?;
    if filter.is_empty() && !everything {
        bail!(
            "purge deletes every quarantined row without a filter: give --file, --symbol or \
             --before to choose rows, or --force to delete all {} rows",
            count(client, filter).await?
        );
    }
    let (clause, params) = filter.sql();
    let refs: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    client
        .execute(
            &format!("DELETE FROM ingest_quarantine WHERE {clause}"),
            &refs,
        )
        .await
        .context("purging ingest_quarantine")
}
