//! PostgreSQL's binary `COPY` format, written and read by hand in one
//! place: the encoder ingest and the engine's bar sink write with, and the
//! field readers the engine's source decoder parses with. The rows are
//! already typed, so this skips the per-value trait dispatch and per-row
//! allocations of the generic codecs on the hot paths.

use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, Utc};

/// The signature, flags (0) and header extension length (0) that open a
/// binary COPY stream.
pub const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
pub const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A `timestamptz` as PostgreSQL stores it: microseconds since 2000-01-01.
pub fn to_pg_micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros() - PG_EPOCH_MICROS
}

/// The instant of a binary `timestamptz`, None when out of range.
pub fn from_pg_micros(micros: i64) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_micros(micros.saturating_add(PG_EPOCH_MICROS))
}

/// Writes rows of binary COPY data into a growing buffer.
pub struct Encoder {
    buf: BytesMut,
}

impl Encoder {
    /// A buffer that starts with the stream header.
    pub fn with_header() -> Self {
        let mut buf = BytesMut::with_capacity(1 << 20);
        buf.put_slice(HEADER);
        Self { buf }
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    /// Hand over what was written so far.
    pub fn take(&mut self) -> Bytes {
        self.buf.split().freeze()
    }
    /// Start a row of `fields` values.
    pub fn tuple(&mut self, fields: i16) {
        self.buf.put_i16(fields);
    }
    /// End the stream.
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
    /// An `int8`.
    pub fn int(&mut self, v: i64) {
        self.buf.put_i32(8);
        self.buf.put_i64(v);
    }
    /// An `int4`.
    pub fn int4(&mut self, v: i32) {
        self.buf.put_i32(4);
        self.buf.put_i32(v);
    }
    /// An `int2`.
    pub fn int2(&mut self, v: i16) {
        self.buf.put_i32(2);
        self.buf.put_i16(v);
    }
    pub fn bool(&mut self, v: bool) {
        self.buf.put_i32(1);
        self.buf.put_u8(v as u8);
    }
    /// A `float8`.
    pub fn float(&mut self, v: f64) {
        self.buf.put_i32(8);
        self.buf.put_f64(v);
    }
    pub fn opt_float(&mut self, v: Option<f64>) {
        match v {
            Some(v) => self.float(v),
            None => self.null(),
        }
    }
    pub fn opt_int(&mut self, v: Option<i64>) {
        match v {
            Some(v) => self.int(v),
            None => self.null(),
        }
    }
    pub fn timestamp(&mut self, t: DateTime<Utc>) {
        self.buf.put_i32(8);
        self.buf.put_i64(to_pg_micros(t));
    }
}

/// One 8-byte field at `at`: its bytes (None for NULL) and the length it
/// takes; Ok(None) when the buffer ends first.
#[allow(clippy::type_complexity)]
pub fn field8(buf: &[u8], at: usize) -> anyhow::Result<Option<(Option<[u8; 8]>, usize)>> {
    let Some(len) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
    if len == -1 {
        return Ok(Some((None, 4)));
    }
    anyhow::ensure!(len == 8, "a column is {len} bytes wide, not 8");
    let Some(bytes) = buf.get(at + 4..at + 12) else {
        return Ok(None);
    };
    let mut value = [0u8; 8];
    value.copy_from_slice(bytes);
    Ok(Some((Some(value), 12)))
}

/// The field count opening a row at `at` (-1: the trailer); None when the
/// buffer ends first.
pub fn tuple_header(buf: &[u8], at: usize) -> Option<i16> {
    buf.get(at..at + 2)
        .map(|c| i16::from_be_bytes([c[0], c[1]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_through_the_pg_epoch() {
        let t: DateTime<Utc> = "1999-12-31T23:59:00.123456Z".parse().unwrap();
        assert_eq!(from_pg_micros(to_pg_micros(t)), Some(t));
        assert_eq!(to_pg_micros("2000-01-01T00:00:00Z".parse().unwrap()), 0);
    }

    #[test]
    fn the_header_is_the_signature_then_two_zero_words() {
        let mut e = Encoder::with_header();
        assert_eq!(&e.take()[..], HEADER);
        assert_eq!(HEADER.len(), 19);
    }
}
