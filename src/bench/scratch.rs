//! The benchmark's scratch database and its child worker: creating and
//! dropping the database, the connection string a child process uses, the
//! worker run as a child (for its own peak memory), and settling the
//! server between the two sides of a pair.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context, Result};
use tokio_postgres::Client;

use crate::db::{quote_ident, Database};

pub(super) async fn recreate_scratch(server: &Database, name: &str) -> Result<Database> {
    drop_scratch(server, name).await?;
    let admin = server.connect().await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {}", quote_ident(name)))
        .await
        .with_context(|| format!("creating scratch database {name}"))?;
    let mut config = server.config().clone();
    config.dbname(name);
    Ok(Database::from_config(config))
}

pub(super) async fn drop_scratch(server: &Database, name: &str) -> Result<()> {
    let admin = server.connect().await?;
    admin
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(name)
        ))
        .await
        .with_context(|| format!("dropping scratch database {name}"))
}

pub(super) fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("barkeep-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Run `barkeep run --once` as a child on the scratch database (the same
/// settings as the worker's catch-up: no sync, 600 tasks a claim) and
/// return the largest resident set of any child this process has waited
/// for, in MiB. The benchmark's only other children are the embedded
/// cluster's `pg_ctl` calls, far smaller than a worker.
pub(super) async fn run_worker_child(
    exe: &Path,
    url: &str,
    concurrency: usize,
    dir: &Path,
) -> Result<f64> {
    let log_path = dir.join("worker.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut command = std::process::Command::new(exe);
    command
        .args([
            "run",
            "--once",
            "--no-sync",
            "--batch",
            "600",
            "--concurrency",
        ])
        .arg(concurrency.to_string())
        .env("DATABASE_URL", url)
        .env("BARKEEP_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log);
    let status = tokio::task::spawn_blocking(move || command.status())
        .await
        .context("waiting for the worker")?
        .with_context(|| format!("starting the worker {}", exe.display()))?;
    if !status.success() {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        bail!("the catch-up worker exited with {status}: {}", log.trim());
    }
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .context("reading the worker's peak memory")?;
    // ru_maxrss is in KiB on Linux.
    Ok(usage.max_rss() as f64 / 1024.0)
}

/// A connection string a child process can use (the password, if any, goes
/// through its environment, never its command line).
pub(super) fn url_of(db: &Database) -> String {
    let config = db.config();
    let mut parts = Vec::new();
    if let Some(host) = config.get_hosts().first() {
        match host {
            tokio_postgres::config::Host::Tcp(h) => parts.push(format!("host='{h}'")),
            tokio_postgres::config::Host::Unix(p) => parts.push(format!("host='{}'", p.display())),
        }
    }
    if let Some(port) = config.get_ports().first() {
        parts.push(format!("port={port}"));
    }
    if let Some(user) = config.get_user() {
        parts.push(format!("user='{user}'"));
    }
    if let Some(pw) = config.get_password() {
        let pw = String::from_utf8_lossy(pw)
            .replace('\\', "\\\\")
            .replace('\'', "\\'");
        parts.push(format!("password='{pw}'"));
    }
    if let Some(name) = config.get_dbname() {
        parts.push(format!("dbname='{name}'"));
    }
    parts.push(format!("sslmode={}", db.ssl_mode().as_str()));
    parts.join(" ")
}

/// Run `sql` (if any), then checkpoint, so that neither side of a pair pays
/// for the other's dirty buffers.
pub(super) async fn settle(client: &Client, sql: &str) -> Result<()> {
    if !sql.is_empty() {
        client
            .batch_execute(sql)
            .await
            .with_context(|| format!("running {sql}"))?;
    }
    client
        .batch_execute("CHECKPOINT")
        .await
        .context("checkpointing")
}

/// Live derived bars per timeframe, in ladder order.
pub(super) async fn count_bars(client: &Client) -> Result<Vec<(String, i64)>> {
    let rows = client
        .query(
            "SELECT timeframe, count(*) FROM derived_data_bars WHERE deleted_at IS NULL
             GROUP BY timeframe ORDER BY array_position(ARRAY['5m','15m','1h','4h','1d','1w'], timeframe)",
            &[],
        )
        .await
        .context("counting derived bars")?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
