//! Writing one chunk of derived bars: in a single transaction, check the
//! lease, soft-delete the live bars of the chunk's range, binary-COPY the new
//! bars in and move the task's cursor.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use futures_util::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;
use uuid::Uuid;

use super::fold::DerivedBar;
use crate::calendar::Timeframe;

/// Which task a chunk belongs to and how it is fenced.
#[derive(Debug, Clone)]
pub struct ChunkTarget<'a> {
    pub symbol: &'a str,
    pub timeframe: Timeframe,
    pub source: Timeframe,
    /// The claim's lease token; None writes unfenced (no task row needed).
    pub lease: Option<Uuid>,
    pub derivation_version: i32,
}

/// What happened to a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkWrite {
    Committed,
    /// Another worker holds the task now; nothing was written.
    LeaseLost,
}

/// Write the bars of [from, to) and move the cursor to `to`, atomically.
pub async fn write_chunk(
    client: &mut Client,
    target: &ChunkTarget<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bars: &[&DerivedBar],
) -> Result<ChunkWrite> {
    let symbol = target.symbol;
    let tf = target.timeframe.as_str();
    let tx = client
        .transaction()
        .await
        .context("starting a chunk transaction")?;
    // A crash may lose the last few chunk commits; bars and cursor vanish
    // together and the chunks are simply redone. The synchronous commit of
    // `agg_finish` flushes the WAL written before it, so a finished task
    // never outlives its bars. Not waiting for the flush per chunk saves
    // one fsync each.
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await
        .context("relaxing the chunk's commit wait")?;
    if let Some(lease) = target.lease {
        let held = tx
            .query_opt(
                "SELECT 1 FROM data_agg_state
                 WHERE canonical_symbol = $1 AND timeframe = $2 AND lease_token = $3
                 FOR UPDATE",
                &[&symbol, &tf, &lease],
            )
            .await
            .with_context(|| format!("checking the lease of {symbol} {tf}"))?;
        if held.is_none() {
            return Ok(ChunkWrite::LeaseLost);
        }
    }
    tx.execute(
        "UPDATE derived_data_bars SET deleted_at = now(), updated_at = now()
         WHERE canonical_symbol = $1 AND timeframe = $2 AND ts_utc >= $3 AND ts_utc < $4
           AND deleted_at IS NULL",
        &[&symbol, &tf, &from, &to],
    )
    .await
    .with_context(|| format!("retiring old {symbol} {tf} bars from {from} to {to}"))?;
    if !bars.is_empty() {
        let sink = tx
            .copy_in(
                "COPY derived_data_bars (canonical_symbol, timeframe, ts_utc, open, high, low, close,
                   vol, vwap, trade_count, source_timeframe, source_candles, expected_candles,
                   quality_score, is_partial, derivation_version) FROM STDIN (FORMAT binary)",
            )
            .await
            .with_context(|| format!("opening the {symbol} {tf} bar copy"))?;
        let writer = BinaryCopyInWriter::new(
            sink,
            &[
                Type::TEXT,
                Type::TEXT,
                Type::TIMESTAMPTZ,
                Type::FLOAT8,
                Type::FLOAT8,
                Type::FLOAT8,
                Type::FLOAT8,
                Type::FLOAT8,
                Type::FLOAT8,
                Type::INT8,
                Type::TEXT,
                Type::INT4,
                Type::INT4,
                Type::INT2,
                Type::BOOL,
                Type::INT4,
            ],
        );
        pin_mut!(writer);
        let source = target.source.as_str();
        for d in bars {
            let b = &d.bar;
            let row: [&(dyn ToSql + Sync); 16] = [
                &symbol,
                &tf,
                &b.ts,
                &b.open,
                &b.high,
                &b.low,
                &b.close,
                &b.vol,
                &b.vwap,
                &b.trade_count,
                &source,
                &d.source_candles,
                &d.expected_candles,
                &d.quality,
                &false,
                &target.derivation_version,
            ];
            writer
                .as_mut()
                .write(&row)
                .await
                .with_context(|| format!("writing {symbol} {tf} bars"))?;
        }
        writer
            .finish()
            .await
            .with_context(|| format!("finishing the {symbol} {tf} bar copy"))?;
    }
    {
        tx.execute(
            "UPDATE data_agg_state
             SET last_agg_bar_ts_utc = GREATEST(last_agg_bar_ts_utc, $3), updated_at = now()
             WHERE canonical_symbol = $1 AND timeframe = $2",
            &[&symbol, &tf, &to],
        )
        .await
        .with_context(|| format!("moving the {symbol} {tf} cursor to {to}"))?;
    }
    tx.commit()
        .await
        .with_context(|| format!("committing {symbol} {tf} bars up to {to}"))?;
    Ok(ChunkWrite::Committed)
}
