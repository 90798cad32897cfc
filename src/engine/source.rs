//! Reading source bars with binary `COPY … TO STDOUT`: the 1m rows of
//! `data_bars` or the live rows of `derived_data_bars`, for one symbol and a
//! bounded time range, in time order.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use futures_util::{pin_mut, StreamExt};
use tokio_postgres::Client;

use super::fold::{Folder, Window};
use crate::copy_binary::{field8, from_pg_micros, tuple_header, HEADER as COPY_HEADER};
use crate::model::{Bar, Calendar, Timeframe};

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

/// `COPY (SELECT <the columns the decoder reads> FROM …) TO STDOUT`.
fn copy_sql(rows: &str, order: &str) -> String {
    format!(
        "COPY (SELECT ts_utc, open, high, low, close, vol, vwap, trade_count FROM {rows}{order}) \
         TO STDOUT (FORMAT binary)"
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
    let sql = copy_sql(&source_rows(symbol, source, from, to), "");
    let mut bars = copy_rows(client, &sql, Vec::new())
        .await
        .with_context(|| format!("reading {symbol} {source} bars from {from} to {to}"))?;
    // Timestamps are unique per (symbol, timeframe) among source rows.
    bars.sort_by_key(|b| b.ts);
    Ok(bars)
}

/// The windows of timeframe `tf` folded from the source bars of `source`
/// for `symbol` in [from, to), without holding the source rows: they are
/// folded as they arrive. Rows come in heap order, which is time order
/// wherever the rows were written in time order (the common case: a feed,
/// a file, a backfill of a range); the first row out of order abandons the
/// pass and the range is read again sorted by the server, so memory stays
/// at the windows whatever the heap looks like.
pub async fn fold_bars(
    client: &Client,
    symbol: &str,
    source: Timeframe,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    cal: Calendar,
    tf: Timeframe,
) -> Result<Vec<Window>> {
    let rows = source_rows(symbol, source, from, to);
    let what = || format!("reading {symbol} {source} bars from {from} to {to}");
    let pass = copy_rows(client, &copy_sql(&rows, ""), OrderedFold::new(cal, tf))
        .await
        .with_context(what)?;
    if let Some(windows) = pass.finish() {
        return Ok(windows);
    }
    let sorted = copy_sql(&rows, " ORDER BY ts_utc");
    copy_rows(client, &sorted, OrderedFold::new(cal, tf))
        .await
        .with_context(what)?
        .finish()
        .with_context(|| {
            format!("{symbol} {source} bars sorted by the server arrived out of order")
        })
}

/// Runs a binary COPY of source rows and hands each decoded row to `sink`.
async fn copy_rows<S: RowSink>(client: &Client, sql: &str, sink: S) -> Result<S> {
    let stream = client.copy_out(sql).await?;
    pin_mut!(stream);
    let mut decoder = BarDecoder::new(sink);
    while let Some(data) = stream.next().await {
        decoder.feed(&data?).context("decoding the rows")?;
    }
    decoder.finish().context("decoding the rows")
}

/// Where decoded source rows go.
trait RowSink {
    fn row(&mut self, bar: Bar);
}

impl RowSink for Vec<Bar> {
    fn row(&mut self, bar: Bar) {
        self.push(bar);
    }
}

/// Folds rows while they arrive in strictly increasing time; notes the
/// first one that does not and ignores the rest.
struct OrderedFold {
    folder: Folder,
    windows: Vec<Window>,
    last: Option<DateTime<Utc>>,
    in_order: bool,
}

impl OrderedFold {
    fn new(cal: Calendar, tf: Timeframe) -> Self {
        Self {
            folder: Folder::new(cal, tf),
            windows: Vec::new(),
            last: None,
            in_order: true,
        }
    }

    /// The windows, or None when the rows were not in time order.
    fn finish(mut self) -> Option<Vec<Window>> {
        if !self.in_order {
            return None;
        }
        self.windows.extend(self.folder.finish());
        Some(self.windows)
    }
}

impl RowSink for OrderedFold {
    fn row(&mut self, bar: Bar) {
        if !self.in_order {
            return;
        }
        if self.last.is_some_and(|last| bar.ts <= last) {
            self.in_order = false;
            return;
        }
        self.last = Some(bar.ts);
        self.windows.extend(self.folder.push(&bar));
    }
}

/// Decodes a binary COPY stream of (ts_utc, open, high, low, close, vol,
/// vwap, trade_count) rows straight into bars. The generic row decoder
/// allocated per row and checked types per field, which cost more client
/// CPU than the fold itself; the layout here is fixed by `copy_sql`.
struct BarDecoder<S> {
    pending: Vec<u8>,
    header_seen: bool,
    trailer_seen: bool,
    sink: S,
}

impl<S: RowSink> BarDecoder<S> {
    fn new(sink: S) -> Self {
        Self {
            pending: Vec::new(),
            header_seen: false,
            trailer_seen: false,
            sink,
        }
    }

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
                    self.sink.row(bar);
                    at += used;
                }
            }
        }
        self.pending.drain(..at);
        Ok(())
    }

    fn finish(self) -> Result<S> {
        anyhow::ensure!(
            self.trailer_seen && self.pending.is_empty(),
            "the COPY stream ended mid-row"
        );
        Ok(self.sink)
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
            let mut decoder = BarDecoder::new(Vec::new());
            for chunk in stream.chunks(piece) {
                decoder.feed(chunk).unwrap();
            }
            assert_eq!(decoder.finish().unwrap(), bars, "pieces of {piece} bytes");
        }
    }

    #[test]
    fn rows_in_time_order_fold_as_they_arrive_and_rows_out_of_order_give_up() {
        let bars: Vec<Bar> = (0..23)
            .map(|m| {
                let ts = format!("2025-03-10T10:{m:02}:00Z");
                bar(&ts, (m % 3 == 0).then_some(1.5), Some(m))
            })
            .collect();
        let mut fold = OrderedFold::new(Calendar::Utc, Timeframe::M5);
        bars.iter().cloned().for_each(|b| fold.row(b));
        let expected = super::super::fold::fold_all(Calendar::Utc, Timeframe::M5, &bars);
        assert_eq!(fold.finish(), Some(expected));

        let mut fold = OrderedFold::new(Calendar::Utc, Timeframe::M5);
        let mut swapped = bars.clone();
        swapped.swap(10, 11);
        swapped.into_iter().for_each(|b| fold.row(b));
        assert_eq!(fold.finish(), None, "a row earlier than the one before");

        let mut fold = OrderedFold::new(Calendar::Utc, Timeframe::M5);
        let mut doubled = bars.clone();
        doubled.insert(5, bars[4].clone());
        doubled.into_iter().for_each(|b| fold.row(b));
        assert_eq!(fold.finish(), None, "the same timestamp twice");
    }

    #[test]
    fn a_stream_cut_short_is_an_error() {
        let stream = encode(&[bar("2025-01-01T00:00:00Z", None, None)]);
        let mut decoder = BarDecoder::new(Vec::new());
        decoder.feed(&stream[..stream.len() - 5]).unwrap();
        assert!(decoder.finish().is_err());
    }
}
