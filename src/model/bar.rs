//! One bar: open, high, low, close, volume, vwap and trade count, stamped
//! with its start in UTC. A 1-minute bar as ingested, a source of the next
//! timeframe as the fold reads it and a derived bar as stored are the same
//! values, so they are one type, read from a row in one place.

use chrono::{DateTime, Utc};

/// A bar: a valid 1-minute row, a source of the next timeframe, or the
/// values of a derived bar. Flat, with no heap field: the fold and the
/// binary COPY encoder read millions of them per catch-up.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub ts: DateTime<Utc>,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub vol: f64,
    /// Volume-weighted average price, when the source has one.
    pub vwap: Option<f64>,
    /// Number of trades, when the source has one.
    pub trade_count: Option<i64>,
}

impl Bar {
    /// A bar from a row whose first eight columns are `ts_utc, open, high,
    /// low, close, vol, vwap, trade_count` (`data_bars` and
    /// `derived_data_bars` alike); further columns are the caller's.
    pub fn from_row(row: &tokio_postgres::Row) -> Bar {
        Bar {
            ts: row.get(0),
            open: row.get(1),
            high: row.get(2),
            low: row.get(3),
            close: row.get(4),
            vol: row.get(5),
            vwap: row.get(6),
            trade_count: row.get(7),
        }
    }
}

/// A finished derived bar with its quality fields.
#[derive(Debug, Clone, PartialEq)]
pub struct DerivedBar {
    pub bar: Bar,
    pub source_candles: i32,
    pub expected_candles: i32,
    pub quality: i16,
}
