//! The machine a benchmark ran on: CPU model and cores, memory, the
//! PostgreSQL server's version, and the load average around the run, so a
//! figure can be read against the hardware and the noise that produced it.

use anyhow::{Context, Result};
use tokio_postgres::Client;

/// What a benchmark ran on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    /// `model name` of the first processor in /proc/cpuinfo.
    pub cpu_model: String,
    /// Logical CPUs this process may run on.
    pub cores: usize,
    /// `MemTotal` of /proc/meminfo, in MiB.
    pub memory_mib: u64,
    /// The server's `version()`.
    pub postgres: String,
    /// 1-, 5- and 15-minute load averages when the benchmark started.
    pub load_at_start: [f64; 3],
    /// The same when it ended (filled in at the end).
    pub load_at_end: [f64; 3],
}

impl Machine {
    /// Describe this machine and the server `client` is connected to.
    pub async fn describe(client: &Client) -> Result<Self> {
        let postgres: String = client
            .query_one("SELECT version()", &[])
            .await
            .context("asking the server for its version")?
            .get(0);
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: u64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(Self {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_mib: memory_kib / 1024,
            postgres,
            load_at_start: load_average(),
            load_at_end: [0.0; 3],
        })
    }

    /// One line for the text report.
    pub fn summary(&self) -> String {
        let load = |l: &[f64; 3]| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2]);
        // "PostgreSQL 15.18 (Debian …) on x86_64…": the name and number suffice.
        let pg: String = self
            .postgres
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        format!(
            "machine: {} cores ({}), {:.1} GiB memory, {pg}; load average {} at start, {} at end",
            self.cores,
            self.cpu_model,
            self.memory_mib as f64 / 1024.0,
            load(&self.load_at_start),
            load(&self.load_at_end)
        )
    }
}

/// The 1-, 5- and 15-minute load averages (zeros where /proc is missing).
pub fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut out = [0.0; 3];
    for (slot, v) in out.iter_mut().zip(text.split_whitespace()) {
        *slot = v.parse().unwrap_or(0.0);
    }
    out
}
