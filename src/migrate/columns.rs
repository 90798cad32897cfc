//! The columns a revert would drop with the values they hold: `db down`
//! guards them as it guards tables that hold rows, so a step that drops a
//! column with data in it (`ingest_quarantine.file_as_given`) needs
//! `--force`. A value equal to the column's default is not counted: a
//! re-applied step gives it back as it was (the checklist's own rollback
//! drops Phase 5's columns at their defaults and must stay a plain revert).

use anyhow::{Context, Result};
use tokio_postgres::Client;

use super::{has_column, has_table};
use crate::db::quote_ident;

/// `(table, column)` for each `DROP COLUMN` of a down script's
/// `ALTER TABLE` statements.
pub fn dropped_columns(down: &str) -> Vec<(String, String)> {
    let mut dropped = Vec::new();
    for statement in down.split(';') {
        // One statement on one line, comments out, in lower case.
        let text = statement
            .lines()
            .map(|l| l.split("--").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join(" ")
            .to_ascii_lowercase();
        let words: Vec<&str> = text.split_whitespace().collect();
        let Some(["alter", "table", rest @ ..]) = Some(words.as_slice()) else {
            continue;
        };
        let rest = match rest {
            ["if", "exists", rest @ ..] => rest,
            rest => rest,
        };
        let Some((table, mut rest)) = rest.split_first() else {
            continue;
        };
        while let Some(at) = rest.windows(2).position(|w| w == ["drop", "column"]) {
            rest = &rest[at + 2..];
            if let ["if", "exists", tail @ ..] = rest {
                rest = tail;
            }
            if let Some(column) = rest.first() {
                dropped.push((table.to_string(), column.trim_end_matches(',').to_string()));
            }
        }
    }
    dropped
}

/// A column a revert would drop with the values it holds.
#[derive(Debug, serde::Serialize)]
pub struct ValuesAtRisk {
    pub version: i64,
    pub table: String,
    pub column: String,
    /// Rows whose value is neither NULL nor the column's default.
    pub values: i64,
}

/// The columns holding values that reverting every applied step above `to`
/// would drop (columns of a table the revert drops whole are the table
/// guard's).
pub async fn values_dropped_by_down(client: &Client, to: i64) -> Result<Vec<ValuesAtRisk>> {
    let steps = super::reverted_steps(client, to).await?;
    let dropped_tables: Vec<String> = steps.iter().flat_map(|m| m.dropped_tables()).collect();
    let mut at_risk = Vec::new();
    for m in steps {
        for (table, column) in dropped_columns(m.down) {
            if dropped_tables.contains(&table)
                || !has_table(client, &table).await?
                || !has_column(client, &table, &column).await?
            {
                continue;
            }
            let values = count_values(client, &table, &column).await?;
            if values > 0 {
                at_risk.push(ValuesAtRisk {
                    version: m.version,
                    table,
                    column,
                    values,
                });
            }
        }
    }
    Ok(at_risk)
}

/// Rows of `table` whose `column` is neither NULL nor its default.
async fn count_values(client: &Client, table: &str, column: &str) -> Result<i64> {
    let default: Option<String> = client
        .query_opt(
            "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d
             JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
             WHERE d.adrelid = to_regclass($1) AND a.attname = $2",
            &[&table, &column],
        )
        .await
        .with_context(|| format!("reading the default of {table}.{column}"))?
        .map(|r| r.get(0));
    let col = quote_ident(column);
    // The default is an expression of the schema's own DDL, read from the catalog.
    let differs = match default {
        Some(expr) => format!("{col} IS NOT NULL AND {col} IS DISTINCT FROM ({expr})"),
        None => format!("{col} IS NOT NULL"),
    };
    Ok(client
        .query_one(
            &format!(
                "SELECT count(*) FROM {} WHERE {differs}",
                quote_ident(table)
            ),
            &[],
        )
        .await
        .with_context(|| format!("counting the values of {table}.{column}"))?
        .get(0))
}

#[cfg(test)]
mod tests {
    use super::dropped_columns;

    #[test]
    fn every_drop_column_of_an_alter_table_is_found() {
        let down = "-- revert\nALTER TABLE data_agg_state\n  DROP COLUMN IF EXISTS task_priority,\n  \
                    DROP COLUMN enabled;\nDROP TABLE x;\nALTER TABLE IF EXISTS q DROP COLUMN IF EXISTS file_as_given;";
        let found = dropped_columns(down);
        let want = [
            ("data_agg_state", "task_priority"),
            ("data_agg_state", "enabled"),
            ("q", "file_as_given"),
        ];
        assert_eq!(
            found,
            want.map(|(t, c)| (t.to_string(), c.to_string())).to_vec()
        );
    }
}
