//! Pruning history: the retired versions of derived bars and the earlier
//! values of revised 1m bars that stopped being live before an instant.
//! Every as-of read at or after that instant gives what it gave before;
//! each prune is recorded in `history_prunes`, and an as-of read before the
//! newest prune of its symbol is refused ([`HistoryPruned`]) instead of
//! being answered from what is left.

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Client;

use crate::migrate::has_table;
use crate::model::Symbol;

/// What a prune deletes (or deleted).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PruneCounts {
    /// Retired versions of derived bars (`derived_data_bars` rows with
    /// `deleted_at` at or before the instant).
    pub bar_versions: i64,
    /// Earlier values of 1m bars (`data_bars_history` rows with `valid_to`
    /// at or before the instant).
    pub revisions_1m: i64,
}

const BAR_VERSIONS: &str = "FROM derived_data_bars
     WHERE deleted_at IS NOT NULL AND deleted_at <= $1
       AND ($2::text IS NULL OR canonical_symbol = $2)";
const REVISIONS: &str = "FROM data_bars_history
     WHERE valid_to <= $1 AND ($2::text IS NULL OR canonical_symbol = $2)";

/// What pruning `symbol` (every symbol when None) before `before` would delete.
pub async fn count(
    client: &Client,
    symbol: Option<&Symbol>,
    before: DateTime<Utc>,
) -> Result<PruneCounts> {
    crate::migrate::require_migrated(client).await?;
    let symbol = symbol.map(Symbol::as_str);
    let row = client
        .query_one(
            &format!("SELECT (SELECT count(*) {BAR_VERSIONS}), (SELECT count(*) {REVISIONS})"),
            &[&before, &symbol],
        )
        .await
        .context("counting the history to prune")?;
    Ok(PruneCounts {
        bar_versions: row.get(0),
        revisions_1m: row.get(1),
    })
}

/// Whether a prune that deleted nothing is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// Always: as-of reads before the instant are refused from then on
    /// (`barkeep history prune`, which says so).
    Always,
    /// Only when something was deleted (a worker's hourly retention, which
    /// would otherwise record a prune every hour).
    WhenDeleted,
}

/// Delete the history of `symbol` (every symbol when None) that stopped
/// being live at or before `before`, and record the prune, in one
/// transaction. `before` must not be in the future.
pub async fn prune(
    client: &mut Client,
    symbol: Option<&Symbol>,
    before: DateTime<Utc>,
    record: Record,
) -> Result<PruneCounts> {
    crate::migrate::require_migrated(client).await?;
    if before > Utc::now() {
        bail!("--before {before} is in the future: history can only be pruned before now");
    }
    let symbol = symbol.map(Symbol::as_str);
    let tx = client.transaction().await.context("starting the prune")?;
    let bar_versions = tx
        .execute(&format!("DELETE {BAR_VERSIONS}"), &[&before, &symbol])
        .await
        .context("deleting retired versions of derived bars")?;
    let revisions_1m = tx
        .execute(&format!("DELETE {REVISIONS}"), &[&before, &symbol])
        .await
        .context("deleting earlier values of 1m bars")?;
    let counts = PruneCounts {
        bar_versions: bar_versions as i64,
        revisions_1m: revisions_1m as i64,
    };
    if record == Record::WhenDeleted && counts == PruneCounts::default() {
        // Nothing deleted, nothing to record: the empty transaction ends.
        return Ok(counts);
    }
    tx.execute(
        "INSERT INTO history_prunes (canonical_symbol, pruned_before, bars_deleted, revisions_deleted)
         VALUES ($1, $2, $3, $4)",
        &[&symbol, &before, &counts.bar_versions, &counts.revisions_1m],
    )
    .await
    .context("recording the prune")?;
    tx.commit().await.context("committing the prune")?;
    Ok(counts)
}

/// The history kept for as-of reads, as `barkeep status` shows it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct HistorySummary {
    /// Retired versions of derived bars and earlier values of 1m bars kept.
    #[serde(flatten)]
    pub kept: PruneCounts,
    /// The newest instant history of every symbol was pruned before.
    pub pruned_before: Option<DateTime<Utc>>,
}

/// How much history is kept, and when it was last pruned for every symbol.
pub async fn summary(client: &Client) -> Result<HistorySummary> {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM derived_data_bars WHERE deleted_at IS NOT NULL),
                    (SELECT count(*) FROM data_bars_history)",
            &[],
        )
        .await
        .context("counting the history kept")?;
    let kept = PruneCounts {
        bar_versions: row.get(0),
        revisions_1m: row.get(1),
    };
    // A database one step behind the binary has no record of prunes.
    let pruned_before = if has_table(client, "history_prunes").await? {
        client
            .query_one(
                "SELECT max(pruned_before) FROM history_prunes WHERE canonical_symbol IS NULL",
                &[],
            )
            .await
            .context("reading when history was pruned")?
            .get(0)
    } else {
        None
    };
    Ok(HistorySummary {
        kept,
        pruned_before,
    })
}

/// An as-of read before the history of its symbol was pruned.
#[derive(Debug, thiserror::Error)]
#[error(
    "{symbol}: history before {pruned_before} was pruned, so bars as of {as_of} cannot be \
     reproduced; read as of {pruned_before} or later"
)]
pub struct HistoryPruned {
    pub symbol: String,
    pub as_of: DateTime<Utc>,
    pub pruned_before: DateTime<Utc>,
}

/// Refuse an as-of read of `symbol` at `as_of` when history it needs was pruned.
pub async fn check_as_of(client: &Client, symbol: &str, as_of: DateTime<Utc>) -> Result<()> {
    // A database one step behind the binary has no record, and no prune.
    if !has_table(client, "history_prunes").await? {
        return Ok(());
    }
    let floor: Option<DateTime<Utc>> = client
        .query_one(
            "SELECT max(pruned_before) FROM history_prunes
             WHERE canonical_symbol IS NULL OR canonical_symbol = $1",
            &[&symbol],
        )
        .await
        .context("reading when history was pruned")?
        .get(0);
    match floor {
        Some(pruned_before) if as_of < pruned_before => Err(HistoryPruned {
            symbol: symbol.to_string(),
            as_of,
            pruned_before,
        }
        .into()),
        _ => Ok(()),
    }
}
