//! The plain-SQL side of the pairs: the rows written as COPY text, a plain
//! `COPY` into a table with the same unique key, and the hand-written 5m
//! `INSERT … SELECT … GROUP BY`.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use tokio_postgres::Client;

use super::spec;
use crate::model::Symbol;
use crate::synth;

/// The plain-SQL 5m aggregation users write by hand, into a table shaped
/// like `derived_data_bars` with the same indexes.
pub(super) const BASELINE_5M: &str = "
CREATE TABLE bench_baseline_5m (LIKE derived_data_bars INCLUDING ALL);
INSERT INTO bench_baseline_5m (canonical_symbol, timeframe, ts_utc, open, high, low, close, vol,
       source_timeframe, source_candles, expected_candles, quality_score)
SELECT canonical_symbol, '5m', date_bin('5 minutes', ts_utc, TIMESTAMPTZ 'epoch'),
       (array_agg(open ORDER BY ts_utc))[1], max(high), min(low),
       (array_agg(close ORDER BY ts_utc DESC))[1], sum(vol), '1m', count(*), 5, 2
FROM data_bars WHERE timeframe = '1m' GROUP BY 1, 3";

/// Write the rows of every symbol as COPY text into `file`, so the
/// baseline pays for COPY only (and memory stays flat at any size).
pub(super) fn write_copy_text(file: &Path, symbols: &[Symbol], weeks: i64) -> Result<()> {
    use std::io::Write;
    let out =
        std::fs::File::create(file).with_context(|| format!("creating {}", file.display()))?;
    let mut out = std::io::BufWriter::new(out);
    for (i, symbol) in symbols.iter().enumerate() {
        for b in synth::generate(&spec(i, weeks)?) {
            writeln!(
                out,
                "{symbol}\t1m\t{}\t{}\t{}\t{}\t{}\t{}",
                b.ts.to_rfc3339(),
                b.open,
                b.high,
                b.low,
                b.close,
                b.vol
            )
            .with_context(|| format!("writing {}", file.display()))?;
        }
    }
    out.flush()
        .with_context(|| format!("writing {}", file.display()))
}

/// Time a plain COPY of the rows in `file` into a table with the same unique key.
pub(super) async fn copy_baseline(client: &Client, file: &Path) -> Result<f64> {
    client
        .batch_execute(
            "CREATE TABLE bench_copy_baseline (LIKE data_bars INCLUDING DEFAULTS);
             CREATE UNIQUE INDEX ON bench_copy_baseline (canonical_symbol, timeframe, ts_utc);",
        )
        .await
        .context("creating the COPY baseline table")?;
    copy_file_in(
        client,
        "COPY bench_copy_baseline (canonical_symbol, timeframe, ts_utc, open, high, low, close, vol) FROM STDIN",
        file,
    )
    .await
    .context("the baseline COPY")
}

/// Time one COPY ... FROM STDIN of `file`'s bytes, streamed in 1 MiB pieces.
pub(super) async fn copy_file_in(client: &Client, copy: &str, file: &Path) -> Result<f64> {
    use futures_util::SinkExt;
    use std::io::Read;
    let mut input =
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let t = Instant::now();
    let sink = client.copy_in(copy).await.context("starting the COPY")?;
    futures_util::pin_mut!(sink);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input
            .read(&mut buf)
            .with_context(|| format!("reading {}", file.display()))?;
        if n == 0 {
            break;
        }
        sink.send(bytes::Bytes::copy_from_slice(&buf[..n]))
            .await
            .context("sending COPY data")?;
    }
    sink.as_mut().finish().await.context("finishing the COPY")?;
    Ok(t.elapsed().as_secs_f64())
}
