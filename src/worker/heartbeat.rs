//! The heartbeat: one task of the worker renews every lease it holds, a
//! few times per lease period, in one batched `agg_heartbeat` call, so a
//! long catch-up keeps its tasks and a frozen worker loses them within a
//! lease.

use std::time::Duration as StdDuration;

use tokio_util::sync::CancellationToken;

use super::lease::{self, Leases};
use super::retry::Conn;
use crate::model::Symbol;
use crate::model::Timeframe;

/// A lease as the heartbeat renews it and the shutdown hands it back.
pub(super) type HeldLease = ((Symbol, Timeframe), uuid::Uuid);

/// The leases held right now; None when a lane panicked while holding the
/// lock (the worker is going down then).
pub(super) fn held(leases: &Leases) -> Option<Vec<HeldLease>> {
    leases
        .lock()
        .ok()
        .map(|l| l.iter().map(|(k, v)| (k.clone(), *v)).collect())
}

/// Renew every held lease a few times per lease period, in one call, until
/// `kill`.
pub(super) async fn run(
    mut conn: Conn,
    leases: Leases,
    lease_seconds: i32,
    kill: CancellationToken,
) {
    let period =
        StdDuration::from_millis((u64::try_from(lease_seconds).unwrap_or(1) * 1000 / 3).max(200));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = kill.cancelled() => return,
        }
        let Some(held) = held(&leases) else { return };
        if held.is_empty() {
            continue;
        }
        let Some(client) = conn.get(&kill).await else {
            return;
        };
        match lease::heartbeat(client, &held, lease_seconds).await {
            Ok(lost) if !lost.is_empty() => {
                tracing::debug!(lost = lost.len(), "leases no longer held");
            }
            Ok(_) => {}
            Err(e) => {
                conn.broken();
                tracing::warn!("heartbeat failed, retrying: {e:#}");
            }
        }
    }
}
