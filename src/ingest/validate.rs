//! Row validation: every parsed row either becomes a [`Bar`] fit for
//! `data_bars`, or a [`Row::Bad`] with the reason it goes to quarantine.
//! Reasons are written for the person who has to fix the file.

use chrono::{DateTime, Timelike, Utc};

use crate::model::Bar;

/// One input row after parsing and validation.
#[derive(Debug, Clone)]
pub enum Row {
    Good {
        line: u64,
        bar: Bar,
    },
    Bad {
        line: u64,
        /// The line as given (lossy UTF-8, NULs replaced, length capped).
        raw: String,
        reason: String,
    },
}

/// Longest raw line kept in quarantine; a runaway binary "line" must not
/// blow up the quarantine table.
const RAW_LINE_CAP: usize = 4096;

/// The raw bytes of a line as text PostgreSQL accepts: lossy UTF-8 without
/// NUL characters, trimmed of the line ending, capped in length.
pub fn raw_text(bytes: &[u8]) -> String {
    let mut s = String::from_utf8_lossy(bytes)
        .trim_end_matches(['\r', '\n'])
        .replace('\0', "\u{FFFD}");
    if s.len() > RAW_LINE_CAP {
        let mut cut = RAW_LINE_CAP;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// The line as UTF-8, or the reason it is not.
pub fn utf8(bytes: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        format!(
            "line is not valid UTF-8 (byte 0x{:02X} at column {})",
            bytes.get(at).copied().unwrap_or(0),
            at + 1
        )
    })
}

/// Highest price taken. No instrument trades near it, and far below it the
/// sums a derived bar takes (volume-weighted prices over a week of minutes)
/// stay finite: a value like `1e308` would turn them into infinity.
pub const MAX_PRICE: f64 = 1e15;
/// Highest volume of one minute taken, for the same reason.
pub const MAX_VOLUME: f64 = 1e18;
/// Highest trade count of one minute taken: the counts of a derived bar are
/// summed in 64-bit integers, which this keeps far from overflowing.
pub const MAX_TRADES: i64 = 1_000_000_000_000;

/// Parse one price field: a finite number above zero, at most [`MAX_PRICE`].
pub fn price(field: &str, name: &str) -> Result<f64, String> {
    let value = number(field, name, MAX_PRICE)?;
    if value <= 0.0 {
        return Err(format!("{name} must be above 0, got {:?}", field.trim()));
    }
    Ok(value)
}

/// Parse a volume field: a finite number, zero or more, at most [`MAX_VOLUME`].
pub fn volume(field: &str) -> Result<f64, String> {
    let value = number(field, "volume", MAX_VOLUME)?;
    if value < 0.0 {
        return Err(format!("volume must be 0 or more, got {:?}", field.trim()));
    }
    // Normalise -0 so an identical re-load compares equal.
    Ok(value + 0.0)
}

/// Parse an optional VWAP field: empty means none; otherwise a price.
pub fn vwap(field: &str) -> Result<Option<f64>, String> {
    if field.trim().is_empty() {
        return Ok(None);
    }
    price(field, "vwap").map(Some)
}

/// Parse an optional trade-count field: empty means none; otherwise a whole
/// number from 0 to [`MAX_TRADES`] (`12.0`, as spreadsheets write it, is 12).
pub fn trade_count(field: &str) -> Result<Option<i64>, String> {
    let field = field.trim();
    if field.is_empty() {
        return Ok(None);
    }
    let value = number(field, "trade_count", MAX_TRADES as f64)?;
    if value < 0.0 || value.fract() != 0.0 {
        return Err(format!(
            "trade_count must be a whole number, 0 or more, got {field:?}"
        ));
    }
    Ok(Some(value as i64))
}

/// A finite number of at most `max` in magnitude.
fn number(field: &str, name: &str, max: f64) -> Result<f64, String> {
    let field = field.trim();
    let value: f64 = field
        .parse()
        .map_err(|_| format!("{name} is not a number: {field:?}"))?;
    if !value.is_finite() {
        return Err(format!("{name} is not a finite number: {field:?}"));
    }
    if value.abs() > max {
        return Err(format!(
            "{name} {field} is out of range (at most {max:e}): sums of such values overflow"
        ));
    }
    Ok(value)
}

/// The earliest bar ingest takes unless told otherwise (`--not-before`):
/// 1970-01-01. A bar dated 1800 is a broken date field, not history.
pub fn default_floor() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH
}

/// A bar that starts before `floor` is a bad row.
pub fn not_before(bar: Bar, floor: DateTime<Utc>) -> Result<Bar, String> {
    if bar.ts < floor {
        return Err(format!(
            "bar starts before {} ({} is implausibly old; --not-before sets the earliest date taken)",
            floor.to_rfc3339(),
            bar.ts.to_rfc3339()
        ));
    }
    Ok(bar)
}

/// The checks that need the whole bar: candle shape, whole minute, not in
/// the future (relative to `now`, fixed once per file).
pub fn check(bar: &Bar, now: DateTime<Utc>) -> Result<(), String> {
    let body_top = bar.open.max(bar.close);
    let body_bottom = bar.open.min(bar.close);
    if bar.high < body_top {
        return Err(format!(
            "high {} is below max(open, close) {body_top}",
            bar.high
        ));
    }
    if bar.low > body_bottom {
        return Err(format!(
            "low {} is above min(open, close) {body_bottom}",
            bar.low
        ));
    }
    if bar.ts.second() != 0 || bar.ts.nanosecond() != 0 {
        return Err(format!(
            "timestamp {} is not on a whole minute",
            bar.ts.to_rfc3339()
        ));
    }
    if bar.ts > now {
        return Err(format!(
            "bar starts in the future ({} is after now, {})",
            bar.ts.to_rfc3339(),
            now.to_rfc3339()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_must_be_finite_and_positive() {
        assert_eq!(price(" 1.5 ", "open"), Ok(1.5));
        for bad in ["NaN", "inf", "-inf", "0", "-1", "abc", ""] {
            assert!(price(bad, "open").is_err(), "{bad} accepted");
        }
        assert_eq!(volume("0"), Ok(0.0));
        assert!(volume("-0.5").is_err());
    }

    #[test]
    fn values_whose_sums_overflow_are_out_of_range() {
        for bad in ["1e308", "1.7976931348623157e308", "1e16"] {
            let err = price(bad, "high").unwrap_err();
            assert!(err.contains("out of range"), "{bad}: {err}");
        }
        assert!(price("1e15", "high").is_ok());
        assert!(volume("1e19").unwrap_err().contains("out of range"));
        assert!(volume("1e309").unwrap_err().contains("not a finite number"));
        assert_eq!(vwap(" "), Ok(None));
        assert_eq!(vwap("1.5"), Ok(Some(1.5)));
        assert!(vwap("NaN").is_err());
        assert_eq!(trade_count("12.0"), Ok(Some(12)));
        assert_eq!(trade_count(""), Ok(None));
        for bad in ["1.5", "-1", "1e13", "inf", "x"] {
            assert!(trade_count(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn raw_text_never_carries_nul_or_unbounded_length() {
        assert_eq!(raw_text(b"a\0b\r\n"), "a\u{FFFD}b");
        assert!(raw_text(&[b'x'; 10_000]).len() < 5_000);
        assert_eq!(raw_text(b"\xffok"), "\u{FFFD}ok");
    }
}
