//! Instants written as chrono writes them in JSON and in
//! `to_rfc3339_opts(AutoSi, true)` (RFC 3339, UTC as `Z`, only the
//! sub-second digits that are not zero, in groups of three), but digit by
//! digit: the task report holds five per task and a page of bars one per
//! bar, tens of thousands in all, and chrono's formatter goes through `fmt`
//! for each. Years outside 0–9999 and leap seconds take chrono's own way.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::{Serialize, Serializer};

/// Longest text written here: `9999-12-31T23:59:59.123456789Z`.
const LONGEST: usize = 30;

/// The instant's text in `buf` and its length; None when chrono's own way
/// is needed.
fn text_of(t: &DateTime<Utc>, buf: &mut [u8; LONGEST]) -> Option<usize> {
    let n = t.naive_utc();
    let nanos = n.nanosecond();
    let year = n.year();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return None;
    }
    buf[..19].copy_from_slice(b"0000-00-00T00:00:00");
    digits(&mut buf[0..4], year as u32);
    digits(&mut buf[5..7], n.month());
    digits(&mut buf[8..10], n.day());
    digits(&mut buf[11..13], n.hour());
    digits(&mut buf[14..16], n.minute());
    digits(&mut buf[17..19], n.second());
    let (fraction, places) = if nanos == 0 {
        (0, 0)
    } else if nanos.is_multiple_of(1_000_000) {
        (nanos / 1_000_000, 3)
    } else if nanos.is_multiple_of(1_000) {
        (nanos / 1_000, 6)
    } else {
        (nanos, 9)
    };
    let mut len = 19;
    if places > 0 {
        buf[19] = b'.';
        digits(&mut buf[20..20 + places], fraction);
        len = 20 + places;
    }
    buf[len] = b'Z';
    Some(len + 1)
}

/// `v` in decimal, zero-padded to fill `slot`.
fn digits(slot: &mut [u8], mut v: u32) {
    for d in slot.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Append the instant's text (no quotes), as `to_rfc3339_opts(AutoSi, true)`.
pub fn write(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    let mut buf = [0; LONGEST];
    match text_of(t, &mut buf) {
        Some(len) => out.extend_from_slice(&buf[..len]),
        None => out.extend_from_slice(t.to_rfc3339_opts(SecondsFormat::AutoSi, true).as_bytes()),
    }
}

/// `#[serde(serialize_with)]` for an instant: what chrono's `Serialize`
/// writes.
pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0; LONGEST];
    match text_of(t, &mut buf).and_then(|len| std::str::from_utf8(&buf[..len]).ok()) {
        Some(text) => s.serialize_str(text),
        None => t.serialize(s),
    }
}

/// `#[serde(serialize_with)]` for an optional instant.
pub fn serialize_opt<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    struct Text<'a>(&'a DateTime<Utc>);
    impl Serialize for Text<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            serialize(self.0, s)
        }
    }
    match t {
        Some(t) => s.serialize_some(&Text(t)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Duration, TimeZone, Utc};

    #[test]
    fn instants_read_as_chrono_writes_them() {
        let base = Utc.with_ymd_and_hms(2025, 7, 1, 13, 5, 9).unwrap();
        let mut instants = vec![
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(1, 2, 3, 4, 5, 6).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 6, 1, 0, 0, 0).unwrap(),
        ];
        for nanos in [
            0i64,
            1,
            1_000,
            120_000,
            250_000_000,
            999_999_999,
            123_456_789,
        ] {
            instants.push(base + Duration::nanoseconds(nanos));
        }
        // A spread of instants over centuries, at odd offsets.
        let mut t = Utc.with_ymd_and_hms(1899, 12, 31, 23, 0, 0).unwrap();
        for i in 0..2_000 {
            t += Duration::seconds(86_400 * 37 + 3_611 * i) + Duration::microseconds(7 * i);
            instants.push(t);
        }
        for t in instants {
            let chrono_json = serde_json::to_string(&t).unwrap();
            let mut serializer = serde_json::Serializer::new(Vec::new());
            super::serialize(&t, &mut serializer).unwrap();
            assert_eq!(
                String::from_utf8(serializer.into_inner()).unwrap(),
                chrono_json
            );
            let mut out = Vec::new();
            super::write(&mut out, &t);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            );
        }
        let none: Option<DateTime<Utc>> = None;
        let mut serializer = serde_json::Serializer::new(Vec::new());
        super::serialize_opt(&none, &mut serializer).unwrap();
        assert_eq!(serializer.into_inner(), b"null");
    }
}
