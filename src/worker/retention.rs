//! Keeping the history for as-of reads to a window (`barkeep run
//! --keep-history-days N`): the worker prunes what stopped being live more
//! than N days ago (retired bar versions, earlier 1m values) when it starts
//! and every hour, with [`crate::ops::history::prune`], so each prune is
//! recorded and as-of reads before it are refused. A check that finds
//! nothing to delete records nothing.

use std::time::Duration as StdDuration;

use anyhow::Result;
use chrono::{Duration, Utc};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::retry::Conn;
use crate::ops::history::{self, PruneCounts, Record};

/// How often a long-running worker prunes.
const EVERY: StdDuration = StdDuration::from_secs(3600);

/// Prune every symbol's history that stopped being live more than `keep`
/// ago; None when there was nothing to delete.
pub(super) async fn prune_older_than(
    client: &mut Client,
    keep: Duration,
) -> Result<Option<PruneCounts>> {
    let before = Utc::now() - keep;
    let done = history::prune(client, None, before, Record::WhenDeleted).await?;
    if done == PruneCounts::default() {
        return Ok(None);
    }
    tracing::info!(
        bar_versions = done.bar_versions,
        revisions_1m = done.revisions_1m,
        before = %before.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "pruned the history kept for as-of reads"
    );
    Ok(Some(done))
}

/// Prune at once and then every hour until `stop`; a failure is logged and
/// tried again at the next hour.
pub(super) async fn retention_loop(mut conn: Conn, keep: Duration, stop: CancellationToken) {
    loop {
        let Some(client) = conn.get(&stop).await else {
            return;
        };
        if let Err(e) = prune_older_than(client, keep).await {
            conn.broken();
            tracing::warn!("pruning history failed, trying again in an hour: {e:#}");
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = stop.cancelled() => return,
        }
    }
}
