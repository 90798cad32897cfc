//! The worker's settings ([`WorkerConfig`], checked before any work starts)
//! and how its sessions present themselves to the database: a name that
//! says which process holds a lease, and timeouts that end what a frozen
//! worker left open within about one lease.

use std::time::Duration as StdDuration;

use anyhow::{bail, Result};
use chrono::{DateTime, Duration, Utc};

use crate::db::Database;
use crate::model::Env;

/// Settings of a worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Catch up everything due (waiting for other workers' live leases and
    /// for retries of its own failures), then return.
    pub once: bool,
    /// Which registry flag marks an asset active.
    pub env: Env,
    /// Lanes: symbols processed at the same time, one connection each.
    pub concurrency: usize,
    /// Stop a task after this many non-empty buckets per claim.
    pub max_windows: Option<u64>,
    /// Most tasks per claim; None sizes claims to the free lanes.
    pub claim_size: Option<usize>,
    /// Lease length; heartbeats renew it while work goes on.
    pub lease_seconds: i32,
    /// After shutdown is requested, how long in-flight work may take.
    pub grace: StdDuration,
    /// Sync the env's tasks from the registry at start and on registry
    /// changes.
    pub sync: bool,
    /// First bucket of tasks such a sync creates (None: as `barkeep sync`).
    pub sync_from: Option<DateTime<Utc>>,
    /// Prune the history kept for as-of reads that stopped being live longer
    /// ago than this, at start and every hour (None: keep it all).
    pub keep_history: Option<Duration>,
}

impl WorkerConfig {
    /// An in-process `run --once` (demo, bench, tests): catch up everything
    /// due in the prod env with `concurrency` lanes.
    pub fn catch_up(concurrency: usize) -> Self {
        Self {
            once: true,
            env: Env::Prod,
            concurrency,
            max_windows: None,
            claim_size: Some(600),
            lease_seconds: 60,
            grace: StdDuration::from_secs(30),
            sync: false,
            sync_from: None,
            keep_history: None,
        }
    }

    /// Refuse settings that cannot work.
    pub fn validate(&self) -> Result<()> {
        if self.concurrency == 0 {
            bail!("concurrency must be at least 1");
        }
        if self.max_windows == Some(0) {
            bail!("max-windows must be at least 1 (leave it out to catch up fully)");
        }
        if self.claim_size == Some(0) {
            bail!("batch must be at least 1");
        }
        if self.lease_seconds < 1 {
            bail!("lease-seconds must be at least 1");
        }
        if self.keep_history.is_some_and(|k| k < Duration::days(1)) {
            bail!("keep-history-days must be at least 1");
        }
        Ok(())
    }
}

/// This process's name in leases and session names: host:pid and a
/// random tag, so two containers with the same host name and pid (both
/// pid 1, say) never take each other's leases for their own.
pub fn worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let tag = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}:{}:{}", std::process::id(), &tag[..6])
}

/// The database as the worker's sessions see it: named after the worker
/// (so a frozen worker's sessions can be found), TCP keepalives, and
/// timeouts that end a transaction left open by a frozen worker within
/// about one lease.
pub(super) fn session_database(database: &Database, worker: &str, lease_seconds: i32) -> Database {
    database.tuned(|config| {
        let name: String = format!("barkeep {worker}").chars().take(63).collect();
        config.application_name(name);
        let lease_ms = i64::from(lease_seconds.max(1)) * 1000;
        let statement_ms = (2 * lease_ms).max(60_000);
        let mut options = config
            .get_options()
            .map(|o| format!("{o} "))
            .unwrap_or_default();
        options.push_str(&format!(
            "-c idle_in_transaction_session_timeout={lease_ms} -c statement_timeout={statement_ms} -c lock_timeout={lease_ms}"
        ));
        config.options(options);
        config
            .keepalives(true)
            .keepalives_idle(StdDuration::from_secs(10))
            .keepalives_interval(StdDuration::from_secs(5))
            .keepalives_retries(3)
            .connect_timeout(StdDuration::from_secs(10));
    })
}
