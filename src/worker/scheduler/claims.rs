//! The scheduler's claims: tasks close to the present first, many at a
//! time, in groups of whole symbols for the live path; then due tasks sized
//! to the free lanes, planned symbol by symbol for the fast path; and the
//! hand-back of leases no job holds.

use anyhow::Result;
use tokio_postgres::Client;

use super::Scheduler;
use crate::worker::jobs::{plan_jobs, Job, LiveGroup};
use crate::worker::lease;
use crate::worker::live;

/// Tasks claimed per free lane: a whole ladder of one symbol at best.
const TASKS_PER_LANE: usize = 6;
/// Most live tasks claimed at once (`agg_claim_live`).
const LIVE_CLAIM: usize = 2000;

impl Scheduler<'_> {
    /// Claim tasks close to the present first, many at a time, and queue
    /// them in groups of whole symbols (the live path). False when there
    /// were none.
    pub(super) async fn claim_live(&mut self, client: &Client) -> Result<bool> {
        let config = self.config;
        let (live, now) = lease::claim_live(
            client,
            config.env,
            &self.shared.worker,
            LIVE_CLAIM as i32,
            config.lease_seconds,
        )
        .await?;
        if live.is_empty() {
            return Ok(false);
        }
        self.summary.rounds += 1;
        lease::hold(&self.shared.leases, &live);
        // Every group's own bars first; a group's dependents are queued
        // when its report comes back (behind the groups still queued, and
        // never beside their group).
        for claims in live::groups(live) {
            self.dispatch(Job::Live(LiveGroup {
                claims,
                now,
                max_windows: config.max_windows,
            }))?;
        }
        Ok(true)
    }

    /// Claim due tasks for the free lanes and queue them symbol by symbol
    /// on the fast path.
    pub(super) async fn claim_catch_up(&mut self, client: &Client, free: usize) -> Result<()> {
        let config = self.config;
        let size = config
            .claim_size
            .unwrap_or(free * TASKS_PER_LANE)
            .min(i32::MAX as usize) as i32;
        let (claims, now) = lease::claim(
            client,
            config.env,
            &self.shared.worker,
            size,
            config.lease_seconds,
        )
        .await?;
        if claims.is_empty() {
            self.claim_wanted = false;
            return Ok(());
        }
        self.summary.rounds += 1;
        let recovered = claims.iter().filter(|c| c.recovered).count() as u64;
        if recovered > 0 {
            tracing::warn!(recovered, "took over tasks whose lease had expired");
        }
        self.summary.leases_recovered += recovered;
        lease::hold(&self.shared.leases, &claims);
        self.claim_wanted = claims.len() as i32 >= size;
        for job in plan_jobs(client, claims, now, config.max_windows).await? {
            self.dispatch(Job::Symbol(job))?;
        }
        Ok(())
    }

    /// With no job in flight, no lease of this worker belongs to one: a
    /// claim whose answer was lost with the connection, or whose jobs could
    /// not be planned, left it. Forget them all (the heartbeat would renew
    /// them for ever) and hand back every task the database still shows as
    /// ours. True when there were some.
    pub(super) async fn release_orphans(&mut self, client: &Client) -> Result<bool> {
        if let Ok(mut held) = self.shared.leases.lock() {
            held.clear();
        }
        let orphans = lease::release_orphans(client, &self.shared.worker).await?;
        if orphans == 0 {
            return Ok(false);
        }
        tracing::warn!(
            tasks = orphans,
            "handed back tasks of a claim that never ran"
        );
        self.claim_wanted = true;
        Ok(true)
    }
}
