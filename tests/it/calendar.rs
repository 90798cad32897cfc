//! The bucket calendars: FX days and weeks on the New York clock, 4h
//! buckets across US daylight-saving changes, UTC weeks, and the tiling of
//! time by buckets.

use barkeep::model::calendar::{bucket_end, bucket_start, expected_candles};
use barkeep::model::{Calendar, Timeframe};
use chrono::Duration;
use proptest::prelude::*;

use crate::fixtures::ts;

#[test]
fn an_fx_day_is_labelled_by_its_utc_start_at_21h_in_summer_and_22h_in_winter() {
    let summer = bucket_start(Calendar::Fx, Timeframe::D1, ts("2023-06-06T10:00:00Z"));
    assert_eq!(summer, ts("2023-06-05T21:00:00Z"));
    assert_eq!(
        bucket_end(Calendar::Fx, Timeframe::D1, summer),
        ts("2023-06-06T21:00:00Z")
    );
    let winter = bucket_start(Calendar::Fx, Timeframe::D1, ts("2023-12-06T10:00:00Z"));
    assert_eq!(winter, ts("2023-12-05T22:00:00Z"));
    assert_eq!(expected_candles(Calendar::Fx, Timeframe::D1, winter), 24);
}

#[test]
fn sunday_evening_trading_belongs_to_mondays_bar_and_the_fx_week() {
    // Sunday 2023-06-04 17:30 New York (EDT) = 21:30Z.
    let sunday_evening = ts("2023-06-04T21:30:00Z");
    assert_eq!(
        bucket_start(Calendar::Fx, Timeframe::D1, sunday_evening),
        ts("2023-06-04T21:00:00Z")
    );
    let week = bucket_start(Calendar::Fx, Timeframe::W1, sunday_evening);
    assert_eq!(
        week,
        ts("2023-06-04T21:00:00Z"),
        "fx week starts Sunday 17:00 New York"
    );
    assert_eq!(
        bucket_end(Calendar::Fx, Timeframe::W1, week),
        ts("2023-06-11T21:00:00Z")
    );
    // Friday 16:59 New York is still in that week, Sunday 16:59 is the week before.
    assert_eq!(
        bucket_start(Calendar::Fx, Timeframe::W1, ts("2023-06-09T20:59:00Z")),
        week
    );
    assert_eq!(
        bucket_start(Calendar::Fx, Timeframe::W1, ts("2023-06-04T20:59:00Z")),
        ts("2023-05-28T21:00:00Z")
    );
}

#[test]
fn fx_4h_buckets_are_3h_at_the_spring_change_and_5h_at_the_fall_change() {
    // 2025-03-09: New York 01:00 EST (06:00Z) to 05:00 EDT (09:00Z).
    let spring = bucket_start(Calendar::Fx, Timeframe::H4, ts("2025-03-09T07:30:00Z"));
    assert_eq!(spring, ts("2025-03-09T06:00:00Z"));
    assert_eq!(
        bucket_end(Calendar::Fx, Timeframe::H4, spring),
        ts("2025-03-09T09:00:00Z")
    );
    assert_eq!(expected_candles(Calendar::Fx, Timeframe::H4, spring), 3);
    // 2025-11-02: New York 01:00 EDT (05:00Z, the earlier of the two) to 05:00 EST (10:00Z).
    let fall = bucket_start(Calendar::Fx, Timeframe::H4, ts("2025-11-02T06:30:00Z"));
    assert_eq!(fall, ts("2025-11-02T05:00:00Z"));
    assert_eq!(
        bucket_end(Calendar::Fx, Timeframe::H4, fall),
        ts("2025-11-02T10:00:00Z")
    );
    assert_eq!(expected_candles(Calendar::Fx, Timeframe::H4, fall), 5);
    // The fx days holding those changes are 23 h and 25 h long.
    let spring_day = bucket_start(Calendar::Fx, Timeframe::D1, ts("2025-03-09T12:00:00Z"));
    assert_eq!(
        expected_candles(Calendar::Fx, Timeframe::D1, spring_day),
        23
    );
    let fall_day = bucket_start(Calendar::Fx, Timeframe::D1, ts("2025-11-02T12:00:00Z"));
    assert_eq!(expected_candles(Calendar::Fx, Timeframe::D1, fall_day), 25);
}

#[test]
fn utc_weeks_start_on_monday_and_utc_days_at_midnight() {
    let week = bucket_start(Calendar::Utc, Timeframe::W1, ts("2023-06-04T23:59:00Z"));
    assert_eq!(week, ts("2023-05-29T00:00:00Z"));
    assert_eq!(
        bucket_end(Calendar::Utc, Timeframe::W1, week),
        ts("2023-06-05T00:00:00Z")
    );
    assert_eq!(expected_candles(Calendar::Utc, Timeframe::W1, week), 7);
    assert_eq!(
        bucket_start(Calendar::Utc, Timeframe::D1, ts("2023-06-04T23:59:00Z")),
        ts("2023-06-04T00:00:00Z")
    );
    assert_eq!(
        bucket_start(Calendar::Utc, Timeframe::H4, ts("2023-06-04T23:59:00Z")),
        ts("2023-06-04T20:00:00Z")
    );
}

#[test]
fn fx_minutes_to_hours_are_floored_in_utc() {
    let minute = ts("2025-03-09T06:59:00Z");
    assert_eq!(
        bucket_start(Calendar::Fx, Timeframe::M5, minute),
        ts("2025-03-09T06:55:00Z")
    );
    assert_eq!(
        bucket_start(Calendar::Fx, Timeframe::M15, minute),
        ts("2025-03-09T06:45:00Z")
    );
    assert_eq!(
        bucket_start(Calendar::Fx, Timeframe::H1, minute),
        ts("2025-03-09T06:00:00Z")
    );
}

#[test]
fn timeframes_parse_and_name_their_ladder_source() {
    for tf in Timeframe::LADDER {
        assert_eq!(Timeframe::parse(tf.as_str()).unwrap(), tf);
        assert!(tf.source().unwrap() < tf);
    }
    assert!(Timeframe::parse("2h").is_err());
    assert_eq!(Calendar::for_asset_class("metal"), Calendar::Fx);
    assert_eq!(Calendar::for_asset_class("crypto"), Calendar::Utc);
}

fn calendars() -> impl Strategy<Value = Calendar> {
    prop_oneof![Just(Calendar::Utc), Just(Calendar::Fx)]
}

fn timeframes() -> impl Strategy<Value = Timeframe> {
    prop::sample::select(Timeframe::LADDER.to_vec())
}

proptest! {
    /// Any minute from 2020 to 2030 falls in exactly one bucket: the one
    /// `bucket_start` names contains it, and its neighbours do not.
    #[test]
    fn every_minute_belongs_to_exactly_one_bucket(cal in calendars(), tf in timeframes(), minute in 0i64..5_300_000) {
        let ts = ts("2020-01-01T00:00:00Z") + Duration::minutes(minute);
        let start = bucket_start(cal, tf, ts);
        let end = bucket_end(cal, tf, start);
        prop_assert!(start <= ts && ts < end, "{ts} not in [{start}, {end})");
        let next_start = bucket_start(cal, tf, end);
        prop_assert_eq!(next_start, end);
        let prev = bucket_start(cal, tf, start - Duration::minutes(1));
        prop_assert_eq!(bucket_end(cal, tf, prev), start);
        prop_assert!(prev < start);
    }

    /// Walking bucket ends from any start never skips or overlaps time and
    /// every bucket's expected count matches its length in source bars.
    #[test]
    fn buckets_tile_time_without_gaps(cal in calendars(), tf in timeframes(), minute in 0i64..5_300_000) {
        let mut start = bucket_start(cal, tf, ts("2020-01-01T00:00:00Z") + Duration::minutes(minute));
        for _ in 0..60 {
            let end = bucket_end(cal, tf, start);
            prop_assert!(end > start);
            prop_assert_eq!(bucket_start(cal, tf, end - Duration::minutes(1)), start);
            let e = expected_candles(cal, tf, start);
            prop_assert!(e > 0);
            start = end;
        }
    }
}
