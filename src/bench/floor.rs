//! The floor of a catch-up: what reading every 1m row and writing every
//! derived bar costs with nothing in between. One sequential binary COPY of
//! all 1m rows out of `data_bars` (the columns the worker reads), plus one
//! binary COPY of all the bars the worker built into a table shaped and
//! indexed like `derived_data_bars`. No aggregation can beat the sum.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use futures_util::StreamExt;
use tokio_postgres::Client;

/// The two halves of one floor measurement.
#[derive(Debug, Clone, Copy)]
pub struct FloorTimes {
    /// Seconds of the binary COPY of every 1m row to the client.
    pub read_seconds: f64,
    /// Seconds of the binary COPY of every derived bar into the twin table.
    pub write_seconds: f64,
    /// Bars written.
    pub bars: u64,
}

/// Time the read half: one sequential binary COPY of every 1m row's
/// columns the worker reads, received and dropped by the client.
pub async fn read_all_1m(client: &Client) -> Result<f64> {
    let t = Instant::now();
    let stream = client
        .copy_out(
            "COPY (SELECT ts_utc, open, high, low, close, vol, vwap, trade_count FROM data_bars
                   WHERE timeframe = '1m') TO STDOUT (FORMAT binary)",
        )
        .await
        .context("starting the floor's COPY of the 1m rows")?;
    futures_util::pin_mut!(stream);
    let mut bytes = 0usize;
    while let Some(data) = stream.next().await {
        bytes += data
            .context("reading the floor's COPY of the 1m rows")?
            .len();
    }
    anyhow::ensure!(
        bytes > 0,
        "the floor's COPY of the 1m rows returned nothing"
    );
    Ok(t.elapsed().as_secs_f64())
}

/// Save the derived bars as binary COPY data in `file` (not timed), so the
/// write half can send them again.
pub async fn save_derived_bars(client: &Client, file: &Path) -> Result<u64> {
    let stream = client
        .copy_out("COPY derived_data_bars TO STDOUT (FORMAT binary)")
        .await
        .context("starting the COPY of the derived bars")?;
    futures_util::pin_mut!(stream);
    let out =
        std::fs::File::create(file).with_context(|| format!("creating {}", file.display()))?;
    let mut out = std::io::BufWriter::new(out);
    while let Some(data) = stream.next().await {
        out.write_all(&data.context("reading the derived bars")?)
            .with_context(|| format!("writing {}", file.display()))?;
    }
    out.flush()
        .with_context(|| format!("writing {}", file.display()))?;
    let bars: i64 = client
        .query_one("SELECT count(*) FROM derived_data_bars", &[])
        .await
        .context("counting the derived bars")?
        .get(0);
    Ok(bars as u64)
}

/// Time the write half: `table` is created like `derived_data_bars` (its
/// columns, defaults, constraints and both partial indexes) before the
/// clock starts; the COPY of `file` into it is timed; the table is dropped.
pub async fn write_all_bars(client: &Client, file: &Path, table: &str) -> Result<f64> {
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {table};
             CREATE TABLE {table} (LIKE derived_data_bars INCLUDING ALL);
             CHECKPOINT"
        ))
        .await
        .context("creating the floor's bar table")?;
    let seconds = super::baseline::copy_file_in(
        client,
        &format!("COPY {table} FROM STDIN (FORMAT binary)"),
        file,
    )
    .await
    .context("the floor's COPY of the bars")?;
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .context("dropping the floor's bar table")?;
    Ok(seconds)
}
