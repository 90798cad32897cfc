//! The two bucket calendars (`utc` and `fx`):
//! which bucket an instant belongs to, where a bucket ends and how many
//! source bars a full bucket has. The SQL face implements the same rules
//! (docs/DESIGN.md); a test proves both write identical bars.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::America::New_York;

use super::Timeframe;

/// How buckets are cut for an instrument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Calendar {
    /// Everything floored in UTC; weeks start Monday 00:00 UTC.
    Utc,
    /// 4h, 1d and 1w on the FX clock (New York wall time + 7 h).
    Fx,
}

impl Calendar {
    /// `fx` and `metal` trade on the FX clock; everything else on UTC.
    pub fn for_asset_class(class: &str) -> Calendar {
        match class.trim().to_ascii_lowercase().as_str() {
            "fx" | "metal" => Calendar::Fx,
            _ => Calendar::Utc,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Calendar::Utc => "utc",
            Calendar::Fx => "fx",
        }
    }
}

/// Hours FXT runs ahead of New York wall time.
const FXT_AHEAD_OF_NEW_YORK: i64 = 7;

fn floor_secs(ts: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
    let t = ts.timestamp();
    let floored = t - t.rem_euclid(secs);
    DateTime::from_timestamp(floored, 0).unwrap_or(ts)
}

fn monday_of(date: NaiveDate) -> NaiveDate {
    date - Duration::days(date.weekday().num_days_from_monday() as i64)
}

/// FXT wall time of an instant.
fn fxt_local(ts: DateTime<Utc>) -> NaiveDateTime {
    ts.with_timezone(&New_York).naive_local() + Duration::hours(FXT_AHEAD_OF_NEW_YORK)
}

/// The FXT key (a wall time) of the bucket containing `ts`.
fn fx_key(tf: Timeframe, ts: DateTime<Utc>) -> NaiveDateTime {
    let local = fxt_local(ts);
    let date = local.date();
    match tf {
        Timeframe::H4 => {
            date.and_time(chrono::NaiveTime::MIN) + Duration::hours((local.hour() / 4 * 4) as i64)
        }
        Timeframe::D1 => date.and_time(chrono::NaiveTime::MIN),
        _ => monday_of(date).and_time(chrono::NaiveTime::MIN),
    }
}

/// The earliest instant whose FXT wall time is at or after `key`: the earlier
/// instant of an ambiguous fall-back hour, the end of a spring-forward gap.
fn fx_instant(key: NaiveDateTime) -> DateTime<Utc> {
    let ny = key - Duration::hours(FXT_AHEAD_OF_NEW_YORK);
    let mut probe = ny;
    // A gap in New York wall time lasts one hour; step through it by minutes.
    for _ in 0..=180 {
        match New_York.from_local_datetime(&probe) {
            chrono::LocalResult::Single(t) => return t.with_timezone(&Utc),
            chrono::LocalResult::Ambiguous(earliest, _) => return earliest.with_timezone(&Utc),
            chrono::LocalResult::None => probe += Duration::minutes(1),
        }
    }
    // Unreachable for the IANA New York zone; fall back to the standard offset.
    Utc.from_utc_datetime(&(ny + Duration::hours(5)))
}

fn fx_step(tf: Timeframe) -> Duration {
    match tf {
        Timeframe::H4 => Duration::hours(4),
        Timeframe::D1 => Duration::days(1),
        _ => Duration::days(7),
    }
}
/// Whether a task of `tf` starting at `task_start` agrees with its symbol's
/// one start (the latest of its tasks' starts, the 5m task's): it is that
/// start as given (a pinned or default start), or the start of the `tf`
/// bucket holding it (a start taken from the data: a 1w task starts on the
/// Monday, or the FX-clock Sunday, before the 5m task). `verify`'s
/// criterion 5 and `restore` both read "one start" this way, as
/// `sync_agg_state_from_registry` sets the starts.
pub fn agrees_with_symbol_start(
    calendar: Calendar,
    tf: Timeframe,
    task_start: DateTime<Utc>,
    symbol_start: DateTime<Utc>,
) -> bool {
    task_start == symbol_start || task_start == bucket_start(calendar, tf, symbol_start)
}

/// Start (label) of the bucket of `tf` that contains `ts`.
pub fn bucket_start(cal: Calendar, tf: Timeframe, ts: DateTime<Utc>) -> DateTime<Utc> {
    if let Some(m) = tf.fixed_minutes() {
        return floor_secs(ts, m * 60);
    }
    match (cal, tf) {
        (Calendar::Utc, Timeframe::H4) => floor_secs(ts, 4 * 3600),
        (Calendar::Utc, Timeframe::D1) => floor_secs(ts, 86_400),
        (Calendar::Utc, _) => {
            let monday = monday_of(ts.date_naive());
            Utc.from_utc_datetime(&monday.and_time(chrono::NaiveTime::MIN))
        }
        (Calendar::Fx, _) => fx_instant(fx_key(tf, ts)),
    }
}

/// End of the bucket of `tf` that starts at `start` (the next bucket's start).
pub fn bucket_end(cal: Calendar, tf: Timeframe, start: DateTime<Utc>) -> DateTime<Utc> {
    if let Some(m) = tf.fixed_minutes() {
        return start + Duration::minutes(m);
    }
    match (cal, tf) {
        (Calendar::Utc, Timeframe::H4) => start + Duration::hours(4),
        (Calendar::Utc, Timeframe::D1) => start + Duration::days(1),
        (Calendar::Utc, _) => start + Duration::days(7),
        (Calendar::Fx, _) => fx_instant(fx_key(tf, start) + fx_step(tf)),
    }
}

/// Number of source bars a full bucket of `tf` starting at `start` has.
pub fn expected_candles(cal: Calendar, tf: Timeframe, start: DateTime<Utc>) -> i32 {
    match tf {
        Timeframe::M1 => 1,
        Timeframe::M5 => 5,
        Timeframe::M15 => 3,
        Timeframe::H1 => 12,
        Timeframe::H4 | Timeframe::D1 => {
            ((bucket_end(cal, tf, start) - start).num_seconds() / 3600) as i32
        }
        Timeframe::W1 => match cal {
            Calendar::Fx => 5,
            Calendar::Utc => 7,
        },
    }
}

/// The first bucket start at or after `ts`.
pub fn first_bucket_at_or_after(cal: Calendar, tf: Timeframe, ts: DateTime<Utc>) -> DateTime<Utc> {
    let start = bucket_start(cal, tf, ts);
    if start < ts {
        bucket_end(cal, tf, start)
    } else {
        start
    }
}

/// Parse a user-given instant: RFC 3339 (`2025-07-01T00:00:00Z`), a date
/// and time with an offset (`2025-07-01 12:30+02`), a date and time without
/// one (taken as UTC, with `T` or a space, with or without seconds), or a
/// plain date (its midnight UTC).
pub fn parse_instant(raw: &str) -> anyhow::Result<DateTime<Utc>> {
    let s = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%#z", "%Y-%m-%d %H:%M%#z"] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Ok(t.with_timezone(&Utc));
        }
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    anyhow::bail!("cannot read {raw:?} as a time: use 2025-07-01, 2025-07-01 12:30 or RFC 3339 (2025-07-01T00:00:00Z)")
}
