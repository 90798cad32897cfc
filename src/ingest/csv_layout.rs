//! Headed CSV files: where each column is (found by name, in any order),
//! which optional columns a file carries, and reading one record or
//! timestamp into a validated bar.

use chrono::{DateTime, NaiveDateTime, Utc};

use super::format::{bar_from, field_count_error, Extras};
use crate::model::Bar;

/// The optional columns an input has. A revision replaces a stored bar's
/// vwap and trade count only when its input has the column (a blank field
/// then clears it): an input without one says nothing about them, and
/// clearing them would lose data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Carries {
    pub vwap: bool,
    pub trade_count: bool,
}

/// Where each column of a headed CSV file is.
#[derive(Debug, Clone)]
pub struct CsvLayout {
    ts: usize,
    prices: [usize; 4],
    volume: Option<usize>,
    vwap: Option<usize>,
    trade_count: Option<usize>,
    width: usize,
    /// Named columns barkeep has no place for (said once per file).
    pub ignored: Vec<String>,
}

impl CsvLayout {
    /// Read the header; columns are found by name, in any order.
    pub fn from_header(header: &[String]) -> Result<Self, String> {
        let find = |names: &[&str]| {
            header.iter().position(|h| {
                let h = h.trim().trim_start_matches('\u{FEFF}');
                names.iter().any(|n| h.eq_ignore_ascii_case(n))
            })
        };
        let need = |names: &[&str]| {
            find(names).ok_or_else(|| {
                format!(
                    "the header must name the columns ts,open,high,low,close[,volume,vwap,trade_count]; \
                     {:?} is missing from {:?}",
                    names[0],
                    header.join(",")
                )
            })
        };
        let mut layout = CsvLayout {
            ts: need(&["ts", "ts_utc", "timestamp", "time"])?,
            prices: [
                need(&["open"])?,
                need(&["high"])?,
                need(&["low"])?,
                need(&["close"])?,
            ],
            volume: find(&["volume", "vol"]),
            vwap: find(&["vwap", "vw"]),
            trade_count: find(&["trade_count", "trades", "num_trades"]),
            width: header.len(),
            ignored: Vec::new(),
        };
        let used = [layout.ts]
            .into_iter()
            .chain(layout.prices)
            .chain(layout.volume)
            .chain(layout.vwap)
            .chain(layout.trade_count)
            .collect::<Vec<_>>();
        layout.ignored = header
            .iter()
            .enumerate()
            .filter(|(i, h)| !used.contains(i) && !h.trim().is_empty())
            .map(|(_, h)| h.trim().to_string())
            .collect();
        Ok(layout)
    }

    /// Which optional columns the file has.
    pub fn carries(&self) -> Carries {
        Carries {
            vwap: self.vwap.is_some(),
            trade_count: self.trade_count.is_some(),
        }
    }

    /// One data record of the file.
    pub fn record(&self, fields: &[&str], now: DateTime<Utc>) -> Result<Bar, String> {
        if fields.len() != self.width {
            return Err(field_count_error(self.width, ',', fields.len()));
        }
        let ts = csv_time(fields[self.ts].trim())?;
        let [o, h, l, c] = self.prices.map(|i| fields[i]);
        let extras = Extras {
            vol: self.volume.map(|i| fields[i]),
            vwap: self.vwap.map(|i| fields[i]),
            trade_count: self.trade_count.map(|i| fields[i]),
        };
        bar_from(ts, [o, h, l, c], extras, now)
    }
}

/// An ISO-8601 time with an offset or `Z`, or integer epoch seconds.
fn csv_time(s: &str) -> Result<DateTime<Utc>, String> {
    if !s.is_empty()
        && s.bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_digit() || (i == 0 && b == b'-'))
    {
        let secs: i64 = s
            .parse()
            .map_err(|_| format!("unparseable epoch seconds {s:?}"))?;
        return DateTime::from_timestamp(secs, 0)
            .ok_or_else(|| format!("epoch seconds {s:?} out of range"));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.to_utc());
    }
    for pattern in [
        "%Y-%m-%d %H:%M:%S%:z",
        "%Y-%m-%d %H:%M:%S%#z",
        "%Y-%m-%dT%H:%M%:z",
        "%Y-%m-%d %H:%M%:z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(s, pattern) {
            return Ok(t.to_utc());
        }
    }
    if NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").is_ok()
        || NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").is_ok()
    {
        return Err(format!(
            "timestamp {s:?} has no UTC offset; add Z or +HH:MM"
        ));
    }
    Err(format!(
        "unparseable timestamp {s:?} (expected ISO-8601 with an offset, or epoch seconds)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn csv_layouts_find_vwap_and_trade_count_and_name_what_they_leave() {
        let header: Vec<String> = "time,open,high,low,close,volume,VWAP,trades,spread"
            .split(',')
            .map(String::from)
            .collect();
        let layout = CsvLayout::from_header(&header).unwrap();
        assert_eq!(layout.ignored, vec!["spread".to_string()]);
        let bar = layout
            .record(
                &[
                    "1685577600",
                    "1",
                    "2",
                    "0.5",
                    "1.5",
                    "10",
                    "1.2",
                    "7",
                    "0.1",
                ],
                Utc::now(),
            )
            .unwrap();
        assert_eq!((bar.vwap, bar.trade_count), (Some(1.2), Some(7)));
        let blank = layout
            .record(
                &["1685577600", "1", "2", "0.5", "1.5", "10", "", "", ""],
                Utc::now(),
            )
            .unwrap();
        assert_eq!((blank.vwap, blank.trade_count), (None, None));
    }

    #[test]
    fn csv_times_need_an_offset_or_epoch_seconds() {
        assert_eq!(
            csv_time("2023-06-01T00:00:00Z"),
            Ok(utc("2023-06-01T00:00:00Z"))
        );
        assert_eq!(
            csv_time("2023-06-01 03:00:00+03:00"),
            Ok(utc("2023-06-01T00:00:00Z"))
        );
        assert_eq!(csv_time("1685577600"), Ok(utc("2023-06-01T00:00:00Z")));
        assert!(csv_time("2023-06-01T00:00:00")
            .unwrap_err()
            .contains("no UTC offset"));
        assert!(csv_time("yesterday").is_err());
    }
}
