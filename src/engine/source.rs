//! Reading source bars with binary `COPY … TO STDOUT`: the 1m rows of
//! `data_bars` or the live rows of `derived_data_bars`, for one symbol and a
//! bounded time range, in time order.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use futures_util::{pin_mut, StreamExt};
use tokio_postgres::binary_copy::BinaryCopyOutStream;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use super::fold::Bar;
use crate::calendar::Timeframe;

/// Quote a string as an SQL literal (COPY takes no bind parameters).
pub(crate) fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A timestamp as an SQL `timestamptz` literal.
pub(crate) fn ts_literal(ts: DateTime<Utc>) -> String {
    format!("'{}'::timestamptz", ts.to_rfc3339())
}

/// The `FROM … WHERE …` of the source rows of `source` for `symbol` in [from, to).
pub(crate) fn source_rows(
    symbol: &str,
    source: Timeframe,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> String {
    let table = if source == Timeframe::M1 {
        "data_bars WHERE"
    } else {
        "derived_data_bars WHERE deleted_at IS NULL AND NOT is_partial AND"
    };
    format!(
        "{table} canonical_symbol = {} AND timeframe = {} AND ts_utc >= {} AND ts_utc < {}",
        literal(symbol),
        literal(source.as_str()),
        ts_literal(from),
        ts_literal(to)
    )
}

/// Every source bar of `source` for `symbol` in [from, to), in time order.
/// Callers keep the range bounded so the result stays small.
///
/// The server returns rows in heap order and the client sorts them: the
/// bitmap heap scan the planner picks then needs no Sort node (which spilled
/// past `work_mem`), and heap order is already nearly time order, which the
/// client's run-detecting sort handles in about linear time.
pub async fn read_bars(
    client: &Client,
    symbol: &str,
    source: Timeframe,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Bar>> {
    let sql = format!(
        "COPY (SELECT ts_utc, open, high, low, close, vol, vwap, trade_count FROM {}) TO STDOUT (FORMAT binary)",
        source_rows(symbol, source, from, to)
    );
    let stream = client
        .copy_out(&sql)
        .await
        .with_context(|| format!("reading {symbol} {source} bars from {from} to {to}"))?;
    let rows = BinaryCopyOutStream::new(
        stream,
        &[
            Type::TIMESTAMPTZ,
            Type::FLOAT8,
            Type::FLOAT8,
            Type::FLOAT8,
            Type::FLOAT8,
            Type::FLOAT8,
            Type::FLOAT8,
            Type::INT8,
        ],
    );
    pin_mut!(rows);
    let mut bars = Vec::new();
    while let Some(row) = rows.next().await {
        let row = row.with_context(|| format!("reading {symbol} {source} bars"))?;
        bars.push(Bar {
            ts: row.try_get(0).context("decoding ts_utc")?,
            open: row.try_get(1).context("decoding open")?,
            high: row.try_get(2).context("decoding high")?,
            low: row.try_get(3).context("decoding low")?,
            close: row.try_get(4).context("decoding close")?,
            vol: row.try_get(5).context("decoding vol")?,
            vwap: row.try_get(6).context("decoding vwap")?,
            trade_count: row.try_get(7).context("decoding trade_count")?,
        });
    }
    // Timestamps are unique per (symbol, timeframe) among source rows.
    bars.sort_by_key(|b| b.ts);
    Ok(bars)
}
