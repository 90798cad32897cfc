//! The input formats: HistData generic ASCII M1, MT4 CSV and headed CSV;
//! sniffing the format from a file's first line; the time zones MT4 files
//! are stamped in; and turning one line or record into a validated row.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};
use chrono::{
    DateTime, Duration, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone,
    Utc,
};
use chrono_tz::Tz;

use super::validate;
use crate::model::Bar;

/// The format of an input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Tell from the first line.
    Auto,
    /// HistData generic ASCII M1: `YYYYMMDD HHMMSS;O;H;L;C;V`, fixed UTC−5.
    Histdata,
    /// MetaTrader 4 export: `YYYY.MM.DD,HH:MM,O,H,L,C,V`, zone from `--tz`.
    Mt4,
    /// Headed CSV: `ts,open,high,low,close[,volume][,vwap][,trade_count]`, ISO-8601
    /// or epoch seconds.
    Csv,
}

impl Format {
    /// The name stored as `data_bars.source` when no `--source` is given.
    pub fn name(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Histdata => "histdata",
            Format::Mt4 => "mt4",
            Format::Csv => "csv",
        }
    }

    /// Guess the format from a file's first line.
    pub fn sniff(first_line: &[u8]) -> Option<Format> {
        let line = first_line
            .strip_prefix(b"\xEF\xBB\xBF")
            .unwrap_or(first_line);
        let digits = |range: std::ops::Range<usize>| {
            line.get(range)
                .is_some_and(|s| s.iter().all(u8::is_ascii_digit))
        };
        if digits(0..8)
            && line.get(8) == Some(&b' ')
            && digits(9..15)
            && line.get(15) == Some(&b';')
        {
            return Some(Format::Histdata);
        }
        if digits(0..4) && line.get(4) == Some(&b'.') && digits(5..7) && line.get(7) == Some(&b'.')
        {
            return Some(Format::Mt4);
        }
        if line.first().is_some_and(u8::is_ascii_alphabetic) {
            return Some(Format::Csv);
        }
        None
    }
}

impl FromStr for Format {
    type Err = anyhow::Error;
    fn from_str(raw: &str) -> Result<Self> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Format::Auto),
            "histdata" => Ok(Format::Histdata),
            "mt4" => Ok(Format::Mt4),
            "csv" => Ok(Format::Csv),
            _ => bail!("unknown format {raw:?}: expected auto, histdata, mt4 or csv"),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The zone an MT4 file's wall-clock stamps are in: an IANA zone (daylight
/// saving applies) or a fixed offset from UTC.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Zone {
    Fixed(FixedOffset),
    Iana(Tz),
}

impl Default for Zone {
    fn default() -> Self {
        Zone::Fixed(FixedOffset::east_opt(0).unwrap_or_else(|| unreachable!()))
    }
}

impl FromStr for Zone {
    type Err = anyhow::Error;
    fn from_str(raw: &str) -> Result<Self> {
        let s = raw.trim();
        if s.eq_ignore_ascii_case("utc") || s == "Z" {
            return Ok(Zone::default());
        }
        if let Some(rest) = s.strip_prefix(['+', '-']) {
            let sign = if s.starts_with('-') { -1 } else { 1 };
            let (h, m) = match rest.split_once(':') {
                Some((h, m)) => (h, m),
                None if rest.len() == 4 => rest.split_at(2),
                None => (rest, "0"),
            };
            let (Ok(h), Ok(m)) = (h.parse::<i32>(), m.parse::<i32>()) else {
                bail!("time zone {raw:?}: expected an offset like +02:00 or an IANA name like Europe/Athens");
            };
            if h > 14 || m > 59 {
                bail!("time zone {raw:?}: offset out of range");
            }
            return FixedOffset::east_opt(sign * (h * 3600 + m * 60))
                .map(Zone::Fixed)
                .ok_or_else(|| anyhow::anyhow!("time zone {raw:?}: offset out of range"));
        }
        s.parse::<Tz>().map(Zone::Iana).map_err(|_| {
            anyhow::anyhow!(
                "unknown time zone {raw:?}: give an IANA name like Europe/Athens or an offset like +02:00"
            )
        })
    }
}

/// Which pass of a repeated local hour (the fall-back night) a stamp means,
/// when the file itself does not show it (`--ambiguous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// The first pass (still daylight-saving time).
    Earlier,
    /// The second pass (standard time).
    Later,
}

impl FromStr for Pass {
    type Err = anyhow::Error;
    fn from_str(raw: &str) -> Result<Self> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "earlier" => Ok(Pass::Earlier),
            "later" => Ok(Pass::Later),
            _ => bail!("unknown pass {raw:?}: expected earlier or later"),
        }
    }
}

impl Zone {
    /// The UTC instant of a wall-clock time in this zone. In the repeated
    /// hour after a fall-back change the file's previous bar tells the pass:
    /// a sorted file coming from before the hour is in its first pass, one
    /// that already reached it in its second. Without a previous bar (a file
    /// that starts inside the hour) the time is never guessed: `pass` decides,
    /// or the row is refused with the reason.
    pub fn to_utc(
        &self,
        local: NaiveDateTime,
        previous: Option<DateTime<Utc>>,
        pass: Option<Pass>,
    ) -> Result<DateTime<Utc>, String> {
        let resolved = match self {
            Zone::Fixed(offset) => offset.from_local_datetime(&local).map(|t| t.to_utc()),
            Zone::Iana(tz) => tz.from_local_datetime(&local).map(|t| t.to_utc()),
        };
        match resolved {
            LocalResult::Single(t) => Ok(t),
            LocalResult::Ambiguous(early, late) => match (previous, pass) {
                (Some(p), _) if p >= early => Ok(late),
                (Some(_), _) | (None, Some(Pass::Earlier)) => Ok(early),
                (None, Some(Pass::Later)) => Ok(late),
                (None, None) => Err(format!(
                    "local time {local} occurs twice in {self} (daylight saving ends) and the file \
                     does not show which: give --ambiguous earlier|later"
                )),
            },
            LocalResult::None => Err(format!(
                "local time {local} does not exist in {self} (skipped by a daylight-saving change)"
            )),
        }
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Zone::Fixed(o) => write!(f, "UTC{o}"),
            Zone::Iana(tz) => f.write_str(tz.name()),
        }
    }
}

pub(super) fn field_count_error(expected: usize, sep: char, found: usize) -> String {
    format!("expected {expected} fields separated by {sep:?}, found {found}")
}

/// The optional fields of a bar, as text.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Extras<'a> {
    pub(super) vol: Option<&'a str>,
    pub(super) vwap: Option<&'a str>,
    pub(super) trade_count: Option<&'a str>,
}

pub(super) fn bar_from(
    ts: DateTime<Utc>,
    [o, h, l, c]: [&str; 4],
    extras: Extras<'_>,
    now: DateTime<Utc>,
) -> Result<Bar, String> {
    let bar = Bar {
        ts,
        open: validate::price(o, "open")?,
        high: validate::price(h, "high")?,
        low: validate::price(l, "low")?,
        close: validate::price(c, "close")?,
        vol: extras.vol.map(validate::volume).transpose()?.unwrap_or(0.0),
        vwap: extras.vwap.map(validate::vwap).transpose()?.flatten(),
        trade_count: extras
            .trade_count
            .map(validate::trade_count)
            .transpose()?
            .flatten(),
    };
    validate::check(&bar, now)?;
    Ok(bar)
}

/// HistData stamps are fixed UTC−5 ("EST without DST") all year.
const HISTDATA_OFFSET_HOURS: i64 = 5;

/// One HistData line: `YYYYMMDD HHMMSS;O;H;L;C;V`.
pub fn histdata_line(line: &str, now: DateTime<Utc>) -> Result<Bar, String> {
    let fields: Vec<&str> = line.split(';').collect();
    let [stamp, o, h, l, c, v] = fields[..] else {
        return Err(field_count_error(6, ';', fields.len()));
    };
    let stamp = stamp.trim();
    let local = NaiveDateTime::parse_from_str(stamp, "%Y%m%d %H%M%S")
        .map_err(|_| format!("unparseable timestamp {stamp:?} (expected YYYYMMDD HHMMSS)"))?;
    let ts = local.and_utc() + Duration::hours(HISTDATA_OFFSET_HOURS);
    let extras = Extras {
        vol: Some(v),
        ..Extras::default()
    };
    bar_from(ts, [o, h, l, c], extras, now)
}

/// One MT4 line: `YYYY.MM.DD,HH:MM,O,H,L,C,V`, stamped in `zone`.
pub fn mt4_line(
    line: &str,
    zone: &Zone,
    previous: Option<DateTime<Utc>>,
    pass: Option<Pass>,
    now: DateTime<Utc>,
) -> Result<Bar, String> {
    let fields: Vec<&str> = line.split(',').collect();
    let [date, time, o, h, l, c, v] = fields[..] else {
        return Err(field_count_error(7, ',', fields.len()));
    };
    let (date, time) = (date.trim(), time.trim());
    let day = NaiveDate::parse_from_str(date, "%Y.%m.%d")
        .map_err(|_| format!("unparseable date {date:?} (expected YYYY.MM.DD)"))?;
    let clock = NaiveTime::parse_from_str(time, "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(time, "%H:%M:%S"))
        .map_err(|_| format!("unparseable time {time:?} (expected HH:MM)"))?;
    let ts = zone.to_utc(day.and_time(clock), previous, pass)?;
    let extras = Extras {
        vol: Some(v),
        ..Extras::default()
    };
    bar_from(ts, [o, h, l, c], extras, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn sniffing_tells_the_three_formats_apart() {
        assert_eq!(
            Format::sniff(b"20230601 000000;1;1;1;1;0"),
            Some(Format::Histdata)
        );
        assert_eq!(
            Format::sniff(b"2023.06.01,00:00,1,1,1,1,0"),
            Some(Format::Mt4)
        );
        assert_eq!(Format::sniff(b"ts,open,high,low,close"), Some(Format::Csv));
        assert_eq!(Format::sniff(b"1685577600,1,1,1,1"), None);
    }

    #[test]
    fn histdata_stamps_are_utc_minus_five() {
        let now = Utc::now();
        let bar = histdata_line("20230601 000000;0.65141;0.65141;0.65124;0.65125;0", now).unwrap();
        assert_eq!(bar.ts, utc("2023-06-01T05:00:00Z"));
    }

    #[test]
    fn zones_parse_offsets_and_names_and_resolve_the_repeated_hour() {
        let z: Zone = "+02:00".parse().unwrap();
        assert_eq!(z, Zone::Fixed(FixedOffset::east_opt(7200).unwrap()));
        assert!("Mars/Olympus".parse::<Zone>().is_err());
        let ny: Zone = "America/New_York".parse().unwrap();
        let local =
            NaiveDateTime::parse_from_str("2023-11-05 01:30:00", "%Y-%m-%d %H:%M:%S").unwrap();
        assert!(ny
            .to_utc(local, None, None)
            .unwrap_err()
            .contains("occurs twice"));
        let first = ny.to_utc(local, None, Some(Pass::Earlier)).unwrap();
        assert_eq!(first, utc("2023-11-05T05:30:00Z"));
        assert_eq!(
            ny.to_utc(local, None, Some(Pass::Later)).unwrap(),
            utc("2023-11-05T06:30:00Z")
        );
        assert_eq!(
            ny.to_utc(local, Some(utc("2023-11-05T05:10:00Z")), None)
                .unwrap(),
            utc("2023-11-05T05:30:00Z"),
            "a file coming from before the hour is in its first pass"
        );
        assert_eq!(
            ny.to_utc(local, Some(utc("2023-11-05T05:59:00Z")), None)
                .unwrap(),
            utc("2023-11-05T06:30:00Z")
        );
        let gap =
            NaiveDateTime::parse_from_str("2023-03-12 02:30:00", "%Y-%m-%d %H:%M:%S").unwrap();
        assert!(ny.to_utc(gap, None, None).is_err());
    }
}
