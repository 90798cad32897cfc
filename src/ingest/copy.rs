//! Binary `COPY` data: PostgreSQL's binary format written by hand, and the
//! two row layouts — straight into `data_bars`, or into the staging table
//! with bad rows alongside the good ones.

use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, Utc};

use super::validate::Bar;

/// Bad rows held in memory on the new-range path; past this the input goes
/// the merge path, which streams bad rows to the database instead.
const HELD_BAD_ROWS: usize = 10_000;

/// How the rows of one chunk become COPY data.
pub trait Encode {
    fn good(&mut self, buf: &mut CopyBuf, line: u64, bar: &Bar);
    /// False when the bad row cannot be taken on this path.
    fn bad(&mut self, buf: &mut CopyBuf, line: u64, raw: &str, reason: &str) -> bool;
}

/// Direct COPY into `data_bars`, bad rows held in memory.
pub struct Direct<'a> {
    pub symbol: &'a str,
    pub source: &'a str,
    pub held: Vec<(i64, String, String)>,
}

impl Encode for Direct<'_> {
    fn good(&mut self, buf: &mut CopyBuf, _line: u64, bar: &Bar) {
        buf.tuple(9);
        buf.text(self.symbol);
        buf.text("1m");
        buf.timestamp(bar.ts);
        for v in [bar.open, bar.high, bar.low, bar.close, bar.vol] {
            buf.float(v);
        }
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
        buf.tuple(9);
        buf.int(line as i64);
        buf.timestamp(bar.ts);
        for v in [bar.open, bar.high, bar.low, bar.close, bar.vol] {
            buf.float(v);
        }
        buf.null();
        buf.null();
    }
    fn bad(&mut self, buf: &mut CopyBuf, line: u64, raw: &str, reason: &str) -> bool {
        buf.tuple(9);
        buf.int(line as i64);
        for _ in 0..6 {
            buf.null();
        }
        buf.text(raw);
        buf.text(reason);
        true
    }
}

/// PostgreSQL's binary COPY format, written by hand: the rows are already
/// typed, so this skips a per-value trait dispatch on the hot path.
pub struct CopyBuf {
    buf: BytesMut,
}

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

impl CopyBuf {
    pub fn with_header() -> Self {
        let mut buf = BytesMut::with_capacity(1 << 20);
        buf.put_slice(b"PGCOPY\n\xff\r\n\0");
        buf.put_i32(0); // flags
        buf.put_i32(0); // header extension length
        Self { buf }
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    pub fn take(&mut self) -> Bytes {
        self.buf.split().freeze()
    }
    pub fn tuple(&mut self, fields: i16) {
        self.buf.put_i16(fields);
    }
    pub fn trailer(&mut self) {
        self.buf.put_i16(-1);
    }
    pub fn null(&mut self) {
        self.buf.put_i32(-1);
    }
    pub fn text(&mut self, s: &str) {
        self.buf.put_i32(s.len() as i32);
        self.buf.put_slice(s.as_bytes());
    }
    pub fn int(&mut self, v: i64) {
        self.buf.put_i32(8);
        self.buf.put_i64(v);
    }
    pub fn float(&mut self, v: f64) {
        self.buf.put_i32(8);
        self.buf.put_f64(v);
    }
    pub fn timestamp(&mut self, t: DateTime<Utc>) {
        self.buf.put_i32(8);
        self.buf
            .put_i64(t.timestamp_micros() - PG_EPOCH_OFFSET_MICROS);
    }
}
