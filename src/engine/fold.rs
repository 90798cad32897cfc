//! One bar from its source bars (docs/DESIGN.md): a streaming fold that
//! turns source bars in time order into the derived bars of a timeframe.
//! Sums run in time order with plain `+=`, starting from the first value,
//! exactly as PostgreSQL's float8 `sum` does, so both paths agree bit for bit.

use chrono::{DateTime, Utc};

use crate::model::calendar::{bucket_end, bucket_start, expected_candles};
use crate::model::{Bar, Calendar, DerivedBar, Timeframe};

/// A bucket that had at least one source bar (a "window").
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// None when too few source bars arrived: the bucket gets no bar.
    pub bar: Option<DerivedBar>,
}

/// Quality score of `s` source bars out of `e` expected, or None when the
/// bucket is too thin to store. Integer comparisons keep it exact.
pub fn quality(s: i32, e: i32) -> Option<i16> {
    let (s, e) = (s as i64, e as i64);
    if s >= e {
        Some(2)
    } else if 5 * s >= 4 * e {
        Some(1)
    } else if 5 * s >= 3 * e {
        Some(0)
    } else if 20 * s >= 11 * e {
        Some(-1)
    } else {
        None
    }
}

/// Running totals of the bucket being filled.
#[derive(Debug)]
struct Acc {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    vol: f64,
    vwap_num: Option<f64>,
    vwap_den: Option<f64>,
    trade_count: Option<i64>,
    candles: i32,
}

fn add(sum: &mut Option<f64>, x: f64) {
    *sum = Some(match *sum {
        Some(s) => s + x,
        None => x,
    });
}

impl Acc {
    fn open(start: DateTime<Utc>, end: DateTime<Utc>, b: &Bar) -> Acc {
        let mut acc = Acc {
            start,
            end,
            open: b.open,
            high: b.high,
            low: b.low,
            close: b.close,
            vol: b.vol,
            vwap_num: None,
            vwap_den: None,
            trade_count: b.trade_count,
            candles: 1,
        };
        acc.add_vwap(b);
        acc
    }

    fn add_vwap(&mut self, b: &Bar) {
        if let Some(vwap) = b.vwap {
            if b.vol > 0.0 {
                add(&mut self.vwap_num, vwap * b.vol);
                add(&mut self.vwap_den, b.vol);
            }
        }
    }

    fn push(&mut self, b: &Bar) {
        self.high = self.high.max(b.high);
        self.low = self.low.min(b.low);
        self.close = b.close;
        self.vol += b.vol;
        if let Some(n) = b.trade_count {
            self.trade_count = Some(self.trade_count.unwrap_or(0) + n);
        }
        self.add_vwap(b);
        self.candles += 1;
    }

    /// Σ(vwap·vol)/Σvol over sources with volume and a vwap; None without any.
    fn vwap(&self) -> Option<f64> {
        match (self.vwap_num, self.vwap_den) {
            (Some(num), Some(den)) if den != 0.0 => Some(num / den),
            _ => None,
        }
    }

    fn close_window(self, cal: Calendar, tf: Timeframe) -> Window {
        let expected = expected_candles(cal, tf, self.start);
        let vwap = self.vwap();
        let bar = quality(self.candles, expected).map(|q| DerivedBar {
            bar: Bar {
                ts: self.start,
                open: self.open,
                high: self.high,
                low: self.low,
                close: self.close,
                vol: self.vol,
                vwap,
                trade_count: self.trade_count,
            },
            source_candles: self.candles,
            expected_candles: expected,
            quality: q,
        });
        Window {
            start: self.start,
            end: self.end,
            bar,
        }
    }
}

/// Folds source bars, fed in time order, into windows of one timeframe.
#[derive(Debug)]
pub struct Folder {
    cal: Calendar,
    tf: Timeframe,
    acc: Option<Acc>,
}

impl Folder {
    pub fn new(cal: Calendar, tf: Timeframe) -> Folder {
        Folder { cal, tf, acc: None }
    }

    /// Add the next source bar; returns the previous window when this bar
    /// starts a new one.
    pub fn push(&mut self, b: &Bar) -> Option<Window> {
        if let Some(acc) = self.acc.as_mut() {
            if b.ts >= acc.start && b.ts < acc.end {
                acc.push(b);
                return None;
            }
        }
        let start = bucket_start(self.cal, self.tf, b.ts);
        let end = bucket_end(self.cal, self.tf, start);
        let done = self.acc.replace(Acc::open(start, end, b));
        done.map(|acc| acc.close_window(self.cal, self.tf))
    }

    /// Close the window being filled, if any.
    pub fn finish(&mut self) -> Option<Window> {
        self.acc
            .take()
            .map(|acc| acc.close_window(self.cal, self.tf))
    }
}

/// Combine bars (time order) into one bar stamped `ts`, however few they
/// are, with the number of bars combined: the unfinished partial bar.
pub fn combine(ts: DateTime<Utc>, sources: &[Bar]) -> Option<(Bar, i32)> {
    let (first, rest) = sources.split_first()?;
    let mut acc = Acc::open(ts, ts, first);
    rest.iter().for_each(|b| acc.push(b));
    let vwap = acc.vwap();
    let bar = Bar {
        ts,
        open: acc.open,
        high: acc.high,
        low: acc.low,
        close: acc.close,
        vol: acc.vol,
        vwap,
        trade_count: acc.trade_count,
    };
    Some((bar, acc.candles))
}

/// Fold a whole slice of source bars (time order) into its windows.
pub fn fold_all(cal: Calendar, tf: Timeframe, sources: &[Bar]) -> Vec<Window> {
    let mut folder = Folder::new(cal, tf);
    let mut out: Vec<Window> = sources.iter().filter_map(|b| folder.push(b)).collect();
    out.extend(folder.finish());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(ts: &str, o: f64, h: f64, l: f64, c: f64, vol: f64, vwap: Option<f64>) -> Bar {
        Bar {
            ts: ts.parse().unwrap(),
            open: o,
            high: h,
            low: l,
            close: c,
            vol,
            vwap,
            trade_count: None,
        }
    }

    #[test]
    fn quality_reproduces_the_original_5m_and_1h_rules() {
        let five: Vec<_> = (0..=5).map(|s| quality(s, 5)).collect();
        assert_eq!(five, [None, None, None, Some(0), Some(1), Some(2)]);
        let hour: Vec<_> = (6..=12).map(|s| quality(s, 12)).collect();
        assert_eq!(
            hour,
            [None, Some(-1), Some(0), Some(0), Some(1), Some(1), Some(2)]
        );
    }

    #[test]
    fn a_bucket_takes_first_open_last_close_extremes_and_volume_weighted_vwap() {
        let sources = [
            bar("2024-01-01T00:00:00Z", 1.0, 2.0, 0.5, 1.5, 2.0, Some(1.2)),
            bar("2024-01-01T00:01:00Z", 1.5, 3.0, 1.0, 2.5, 0.0, Some(9.0)),
            bar("2024-01-01T00:02:00Z", 2.5, 2.6, 0.4, 2.0, 1.0, None),
            bar("2024-01-01T00:04:00Z", 2.0, 2.1, 1.9, 1.95, 3.0, Some(2.0)),
            bar("2024-01-01T00:05:00Z", 7.0, 7.0, 7.0, 7.0, 1.0, None),
        ];
        let windows = fold_all(Calendar::Utc, Timeframe::M5, &sources);
        assert_eq!(windows.len(), 2);
        let first = windows[0].bar.as_ref().unwrap();
        assert_eq!(first.bar.open, 1.0);
        assert_eq!(first.bar.close, 1.95);
        assert_eq!(first.bar.high, 3.0);
        assert_eq!(first.bar.low, 0.4);
        assert_eq!(first.bar.vol, 6.0);
        assert_eq!(first.bar.vwap, Some((1.2 * 2.0 + 2.0 * 3.0) / 5.0));
        assert_eq!((first.source_candles, first.quality), (4, 1));
        assert!(windows[1].bar.is_none(), "one of five minutes is too thin");
    }
}
