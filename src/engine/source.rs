//! Reading source bars with binary `COPY … TO STDOUT`: the 1m rows of
//! `data_bars` or the live rows of `derived_data_bars`, for one symbol and a
//! bounded time range, in time order.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use futures_util::{pin_mut, StreamExt};
use tokio_postgres::Client;

use super::fold::Bar;
use crate::calendar::Timeframe;
use crate::copy_binary::{field8, from_pg_micros, tuple_header, HEADER as COPY_HEADER};

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
    pin_mut!(stream);
    let mut decoder = BarDecoder::default();
    while let Some(data) = stream.next().await {
        let data = data.with_context(|| format!("reading {symbol} {source} bars"))?;
        decoder
            .feed(&data)
            .with_context(|| format!("decoding {symbol} {source} bars"))?;
    }
    let mut bars = decoder
        .finish()
        .with_context(|| format!("decoding {symbol} {source} bars"))?;
    // Timestamps are unique per (symbol, timeframe) among source rows.
    bars.sort_by_key(|b| b.ts);
    Ok(bars)
}

/// Decodes a binary COPY stream of (ts_utc, open, high, low, close, vol,
/// vwap, trade_count) rows straight into bars. The generic row decoder
/// allocated per row and checked types per field, which cost more client
/// CPU than the fold itself; the layout here is fixed by the query above.
#[derive(Default)]
struct BarDecoder {
    pending: Vec<u8>,
    header_seen: bool,
    trailer_seen: bool,
    bars: Vec<Bar>,
}

impl BarDecoder {
    fn feed(&mut self, data: &[u8]) -> Result<()> {
        self.pending.extend_from_slice(data);
        let mut at = 0;
        if !self.header_seen {
            if self.pending.len() < COPY_HEADER.len() {
                return Ok(());
            }
            anyhow::ensure!(
                self.pending.starts_with(COPY_HEADER),
                "not a binary COPY stream without header extension"
            );
            at = COPY_HEADER.len();
            self.header_seen = true;
        }
        while !self.trailer_seen {
            match parse_row(&self.pending[at..])? {
                Row::Incomplete => break,
                Row::Trailer => {
                    self.trailer_seen = true;
                    at += 2;
                }
                Row::Bar(bar, used) => {
                    self.bars.push(bar);
                    at += used;
                }
            }
        }
        self.pending.drain(..at);
        Ok(())
    }

    fn finish(self) -> Result<Vec<Bar>> {
        anyhow::ensure!(
            self.trailer_seen && self.pending.is_empty(),
            "the COPY stream ended mid-row"
        );
        Ok(self.bars)
    }
}

enum Row {
    Incomplete,
    Trailer,
    Bar(Bar, usize),
}

fn parse_row(buf: &[u8]) -> Result<Row> {
    let Some(count) = tuple_header(buf, 0) else {
        return Ok(Row::Incomplete);
    };
    if count == -1 {
        return Ok(Row::Trailer);
    }
    anyhow::ensure!(count == 8, "expected 8 columns per source row, got {count}");
    let mut at = 2;
    let mut values = [None::<[u8; 8]>; 8];
    for value in values.iter_mut() {
        let Some((bytes, used)) = field8(buf, at)? else {
            return Ok(Row::Incomplete);
        };
        *value = bytes;
        at += used;
    }
    let float = |i: usize| -> Result<f64> {
        values[i]
            .map(f64::from_be_bytes)
            .with_context(|| format!("column {i} of a source row is NULL"))
    };
    let micros = values[0]
        .map(i64::from_be_bytes)
        .context("a source row has no ts_utc")?;
    let ts = from_pg_micros(micros).context("a source timestamp is out of range")?;
    let bar = Bar {
        ts,
        open: float(1)?,
        high: float(2)?,
        low: float(3)?,
        close: float(4)?,
        vol: float(5)?,
        vwap: values[6].map(f64::from_be_bytes),
        trade_count: values[7].map(i64::from_be_bytes),
    };
    Ok(Row::Bar(bar, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(bars: &[Bar]) -> Vec<u8> {
        let mut out = crate::copy_binary::Encoder::with_header();
        for b in bars {
            out.tuple(8);
            out.timestamp(b.ts);
            for f in [b.open, b.high, b.low, b.close, b.vol] {
                out.float(f);
            }
            out.opt_float(b.vwap);
            out.opt_int(b.trade_count);
        }
        out.trailer();
        out.take().to_vec()
    }

    fn bar(ts: &str, vwap: Option<f64>, trade_count: Option<i64>) -> Bar {
        Bar {
            ts: ts.parse().unwrap(),
            open: 1.5,
            high: 2.25,
            low: -0.5,
            close: 1e-9,
            vol: 0.0,
            vwap,
            trade_count,
        }
    }

    #[test]
    fn rows_split_anywhere_across_messages_decode_to_the_same_bars() {
        let bars = vec![
            bar("1999-12-31T23:59:00Z", None, None),
            bar("2025-03-09T07:00:00Z", Some(1.75), Some(42)),
            bar("2025-11-02T05:59:00Z", None, Some(-1)),
        ];
        let stream = encode(&bars);
        for piece in [1, 2, 3, 7, 13, stream.len()] {
            let mut decoder = BarDecoder::default();
            for chunk in stream.chunks(piece) {
                decoder.feed(chunk).unwrap();
            }
            assert_eq!(decoder.finish().unwrap(), bars, "pieces of {piece} bytes");
        }
    }

    #[test]
    fn a_stream_cut_short_is_an_error() {
        let stream = encode(&[bar("2025-01-01T00:00:00Z", None, None)]);
        let mut decoder = BarDecoder::default();
        decoder.feed(&stream[..stream.len() - 5]).unwrap();
        assert!(decoder.finish().is_err());
    }
}
