//! Writing one chunk of derived bars inside the chunk's transaction (the
//! caller opened it and locked the task row before reading the sources):
//! the one write protocol of derived bars (docs/DESIGN.md "Versions of a
//! bar") — a new bar is inserted, an unchanged bar is not touched, a changed
//! bar's live row is retired (`deleted_at = now()`) and its new version
//! inserted, a live bar whose bucket no longer qualifies is retired — then
//! the task's cursor moves (`agg_move_cursors`, the state machine's one
//! cursor move).

use std::collections::HashMap;

use anyhow::{Context, Result};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::{pin_mut, SinkExt};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::copy_binary::Encoder;
use crate::model::{Bar, Calendar, DerivedBar, Timeframe};

/// Which task a chunk belongs to and how it is fenced.
#[derive(Debug, Clone)]
pub struct ChunkTarget<'a> {
    pub symbol: &'a str,
    pub calendar: Calendar,
    pub timeframe: Timeframe,
    pub source: Timeframe,
    /// The claim's lease token; None writes unfenced (no task row needed).
    pub lease: Option<Uuid>,
    pub derivation_version: i32,
}

/// Bars a chunk wrote, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    pub created: u64,
    pub changed: u64,
    pub deleted: u64,
    /// Created or changed bars with quality <= 0.
    pub poor: u64,
}

/// Open the chunk's transaction and lock the task row `FOR UPDATE` before
/// anything is read: a 1m row committing meanwhile is then either read by
/// this chunk or, waiting for the lock in the change-tracking trigger,
/// recorded as late against the cursor this chunk commits. False when the
/// lease is gone (the transaction is rolled back).
pub async fn begin_chunk(client: &Client, target: &ChunkTarget<'_>) -> Result<bool> {
    let (symbol, tf) = (target.symbol, target.timeframe.as_str());
    // A crash may lose the last few chunk commits; bars and cursor vanish
    // together and the chunks are simply redone. The synchronous commit of
    // `agg_finish` flushes the WAL written before it, so a finished task
    // never outlives its bars. Not waiting for the flush per chunk saves
    // one fsync each.
    client
        .batch_execute("BEGIN; SET LOCAL synchronous_commit = off")
        .await
        .context("starting a chunk transaction")?;
    let held = client
        .query_opt(
            "SELECT 1 FROM data_agg_state
             WHERE canonical_symbol = $1 AND timeframe = $2
               AND ($3::uuid IS NULL OR lease_token = $3)
             FOR UPDATE",
            &[&symbol, &tf, &target.lease],
        )
        .await
        .with_context(|| format!("locking the {symbol} {tf} task"))?;
    if held.is_none() && target.lease.is_some() {
        rollback(client).await;
        return Ok(false);
    }
    Ok(true)
}

/// Commit the chunk's transaction.
pub async fn commit(client: &Client, what: impl FnOnce() -> String) -> Result<()> {
    client
        .batch_execute("COMMIT")
        .await
        .with_context(|| format!("committing {}", what()))
}

/// Roll the chunk's transaction back (best effort: a broken connection
/// rolls back by itself).
pub async fn rollback(client: &Client) {
    let _ = client.batch_execute("ROLLBACK").await;
}

/// A live stored bar as the protocol compares it.
struct Stored {
    bar: DerivedBar,
    source: String,
    is_partial: bool,
    version: i32,
}

fn same_float(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

fn same_bar(a: &Bar, b: &Bar) -> bool {
    same_float(a.open, b.open)
        && same_float(a.high, b.high)
        && same_float(a.low, b.low)
        && same_float(a.close, b.close)
        && same_float(a.vol, b.vol)
        && match (a.vwap, b.vwap) {
            (Some(x), Some(y)) => same_float(x, y),
            (None, None) => true,
            _ => false,
        }
        && a.trade_count == b.trade_count
}

/// Write the bars of [from, to) by the protocol and move the cursor to `to`,
/// inside the open chunk transaction.
pub async fn write_chunk(
    client: &Client,
    target: &ChunkTarget<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bars: &[&DerivedBar],
) -> Result<Written> {
    let symbol = target.symbol;
    let tf = target.timeframe.as_str();
    let source = target.source.as_str();
    let rows = client
        .query(
            "SELECT ts_utc, open, high, low, close, vol, vwap, trade_count, source_timeframe,
                    source_candles, expected_candles, quality_score, is_partial, derivation_version
             FROM derived_data_bars
             WHERE canonical_symbol = $1 AND timeframe = $2 AND ts_utc >= $3 AND ts_utc < $4
               AND deleted_at IS NULL",
            &[&symbol, &tf, &from, &to],
        )
        .await
        .with_context(|| format!("reading live {symbol} {tf} bars from {from} to {to}"))?;
    let mut stored: HashMap<DateTime<Utc>, Stored> = rows
        .iter()
        .map(|r| {
            let bar = Bar::from_row(r);
            (
                bar.ts,
                Stored {
                    bar: DerivedBar {
                        bar,
                        source_candles: r.get(9),
                        expected_candles: r.get(10),
                        quality: r.get(11),
                    },
                    source: r.get(8),
                    is_partial: r.get(12),
                    version: r.get(13),
                },
            )
        })
        .collect();
    let mut written = Written::default();
    let mut insert: Vec<&DerivedBar> = Vec::with_capacity(bars.len());
    let mut retire: Vec<DateTime<Utc>> = Vec::new();
    for &d in bars {
        match stored.remove(&d.bar.ts) {
            None => {
                written.created += 1;
                insert.push(d);
            }
            Some(s)
                if same_bar(&s.bar.bar, &d.bar)
                    && s.bar.source_candles == d.source_candles
                    && s.bar.expected_candles == d.expected_candles
                    && s.bar.quality == d.quality
                    && s.source == source
                    && !s.is_partial
                    && s.version == target.derivation_version => {}
            Some(_) => {
                written.changed += 1;
                retire.push(d.bar.ts);
                insert.push(d);
            }
        }
    }
    written.deleted = stored.len() as u64;
    retire.extend(stored.into_keys());
    written.poor = insert.iter().filter(|b| b.quality <= 0).count() as u64;
    if !retire.is_empty() {
        client
            .execute(
                "UPDATE derived_data_bars SET deleted_at = now(), updated_at = now()
                 WHERE canonical_symbol = $1 AND timeframe = $2 AND ts_utc = ANY($3)
                   AND deleted_at IS NULL",
                &[&symbol, &tf, &retire],
            )
            .await
            .with_context(|| format!("retiring changed {symbol} {tf} bars"))?;
        // The bars built from these ones must follow.
        client
            .execute(
                "SELECT agg_mark_dependents($1, $2, $3, $4, NULL)",
                &[&symbol, &tf, &target.calendar.as_str(), &retire],
            )
            .await
            .with_context(|| format!("marking the bars built from {symbol} {tf}"))?;
    }
    if !insert.is_empty() {
        copy_bars(client, target, &insert).await?;
    }
    // The task state machine's cursor move (sql/functions/40_tasks.sql).
    client
        .execute(
            "SELECT agg_move_cursors(ARRAY[$1::text], ARRAY[$2::text], ARRAY[$3::timestamptz])",
            &[&symbol, &tf, &to],
        )
        .await
        .with_context(|| format!("moving the {symbol} {tf} cursor to {to}"))?;
    Ok(written)
}

/// Binary-COPY new bar versions into `derived_data_bars`.
async fn copy_bars(client: &Client, target: &ChunkTarget<'_>, bars: &[&DerivedBar]) -> Result<()> {
    let symbol = target.symbol;
    let tf = target.timeframe.as_str();
    let source = target.source.as_str();
    let mut rows = Encoder::with_header();
    for d in bars {
        let b = &d.bar;
        rows.tuple(16);
        rows.text(symbol);
        rows.text(tf);
        rows.timestamp(b.ts);
        for v in [b.open, b.high, b.low, b.close, b.vol] {
            rows.float(v);
        }
        rows.opt_float(b.vwap);
        rows.opt_int(b.trade_count);
        rows.text(source);
        rows.int4(d.source_candles);
        rows.int4(d.expected_candles);
        rows.int2(d.quality);
        rows.bool(false);
        rows.int4(target.derivation_version);
    }
    rows.trailer();
    let sink = client
        .copy_in::<_, Bytes>(
            "COPY derived_data_bars (canonical_symbol, timeframe, ts_utc, open, high, low, close,
               vol, vwap, trade_count, source_timeframe, source_candles, expected_candles,
               quality_score, is_partial, derivation_version) FROM STDIN (FORMAT binary)",
        )
        .await
        .with_context(|| format!("opening the {symbol} {tf} bar copy"))?;
    pin_mut!(sink);
    sink.send(rows.take())
        .await
        .with_context(|| format!("writing {symbol} {tf} bars"))?;
    sink.as_mut()
        .finish()
        .await
        .with_context(|| format!("finishing the {symbol} {tf} bar copy"))?;
    Ok(())
}
