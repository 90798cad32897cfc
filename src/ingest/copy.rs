//! The two row layouts of ingest's binary `COPY` (the format itself is
//! crate::copy_binary): straight into `data_bars`, or into the staging
//! table with bad rows alongside the good ones.

use crate::model::Bar;

/// Bad rows held in memory on the new-range path; past this the input goes
/// the merge path, which streams bad rows to the database instead.
const HELD_BAD_ROWS: usize = 10_000;

/// How the rows of one chunk become COPY data.
pub trait Encode {
    fn good(&mut self, buf: &mut CopyBuf, line: u64, bar: &Bar);
    /// False when the bad row cannot be taken on this path.
    fn bad(&mut self, buf: &mut CopyBuf, line: u64, raw: &str, reason: &str) -> bool;
}

/// The columns [`Direct`] writes, in its order.
pub const DIRECT_COLUMNS: &str =
    "canonical_symbol, timeframe, ts_utc, open, high, low, close, vol, vwap, trade_count, source";

/// The staging table [`Staged`] writes, in its column order.
pub const STAGE_TABLE: &str = "CREATE TEMP TABLE ingest_stage (
       line bigint, ts_utc timestamptz,
       open float8, high float8, low float8, close float8, vol float8,
       vwap float8, trade_count bigint,
       raw_line text, reason text
     ) ON COMMIT DROP";

/// Direct COPY into `data_bars`, bad rows held in memory.
pub struct Direct<'a> {
    pub symbol: &'a str,
    pub source: &'a str,
    pub held: Vec<(i64, String, String)>,
}

impl Encode for Direct<'_> {
    fn good(&mut self, buf: &mut CopyBuf, _line: u64, bar: &Bar) {
        buf.tuple(11);
        buf.text(self.symbol);
        buf.text("1m");
        buf.timestamp(bar.ts);
        for v in [bar.open, bar.high, bar.low, bar.close, bar.vol] {
            buf.float(v);
        }
        buf.opt_float(bar.vwap);
        buf.opt_int(bar.trade_count);
        buf.text(self.source);
    }
    fn bad(&mut self, _buf: &mut CopyBuf, line: u64, raw: &str, reason: &str) -> bool {
        if self.held.len() >= HELD_BAD_ROWS {
            return false;
        }
        self.held
            .push((line as i64, raw.to_string(), reason.to_string()));
        true
    }
}

/// COPY into the staging table, good and bad rows alike.
pub struct Staged;

impl Encode for Staged {
    fn good(&mut self, buf: &mut CopyBuf, line: u64, bar: &Bar) {
        buf.tuple(11);
        buf.int(line as i64);
        buf.timestamp(bar.ts);
        for v in [bar.open, bar.high, bar.low, bar.close, bar.vol] {
            buf.float(v);
        }
        buf.opt_float(bar.vwap);
        buf.opt_int(bar.trade_count);
        buf.null();
        buf.null();
    }
    fn bad(&mut self, buf: &mut CopyBuf, line: u64, raw: &str, reason: &str) -> bool {
        buf.tuple(11);
        buf.int(line as i64);
        for _ in 0..8 {
            buf.null();
        }
        buf.text(raw);
        buf.text(reason);
        true
    }
}

/// The shared binary COPY encoder (crate::copy_binary).
pub use crate::copy_binary::Encoder as CopyBuf;
