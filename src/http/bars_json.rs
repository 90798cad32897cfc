//! A page of `/api/bars` ([`BarsPage`], defined here so the API handler
//! imports this module and never the reverse) written as JSON by hand: the
//! same bytes serde would write for it (a test holds them equal), without its
//! per-field work. A full page is 10,000 bars and 3 MB; through serde, each
//! of the 130,000 keys was escaped again and each bar start formatted into
//! a string of its own. Here the keys are fixed bytes, a bar start is
//! written digit by digit ([`crate::ops::instant`]), and numbers and strings still go through
//! serde_json, so they read exactly as before. A large page is handed out
//! in pieces as it is written, so the first bytes are on the wire while the
//! last bars are still being written.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::bars::BarRecord;
use crate::model::Timeframe;
use crate::ops::instant;

/// One page of `/api/bars`.
#[derive(Debug, serde::Serialize)]
pub struct BarsPage {
    pub symbol: String,
    pub timeframe: Timeframe,
    pub calendar: &'static str,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub limit: i64,
    /// The instant the bars are read as of; null for the live bars.
    pub as_of: Option<DateTime<Utc>>,
    pub count: usize,
    pub bars: Vec<BarRecord>,
    /// `from` of the next page; null on the last one.
    pub next: Option<DateTime<Utc>>,
}

/// About 300 bytes of JSON per bar.
const BYTES_PER_BAR: usize = 320;

/// The page as JSON, in one buffer.
pub fn write(page: &BarsPage) -> serde_json::Result<Vec<u8>> {
    let mut whole = Vec::new();
    write_in_pieces(page, usize::MAX, |piece| {
        whole = piece;
        true
    })?;
    Ok(whole)
}

/// The page as JSON, handed to `emit` in pieces of about `piece_bytes`
/// (cut between bars) as they are written, so a large page can go out on
/// the wire while the rest is being written. Stops early when `emit`
/// returns false (nobody reads any more).
pub fn write_in_pieces(
    page: &BarsPage,
    piece_bytes: usize,
    mut emit: impl FnMut(Vec<u8>) -> bool,
) -> serde_json::Result<()> {
    let capacity = |bars: usize| 512 + bars.min(piece_bytes / BYTES_PER_BAR + 1) * BYTES_PER_BAR;
    let mut out = Vec::with_capacity(capacity(page.bars.len()));
    out.extend_from_slice(b"{\"symbol\":");
    value(&mut out, &page.symbol)?;
    out.extend_from_slice(b",\"timeframe\":");
    value(&mut out, &page.timeframe)?;
    out.extend_from_slice(b",\"calendar\":");
    value(&mut out, &page.calendar)?;
    out.extend_from_slice(b",\"from\":");
    value(&mut out, &page.from)?;
    out.extend_from_slice(b",\"to\":");
    value(&mut out, &page.to)?;
    out.extend_from_slice(b",\"limit\":");
    value(&mut out, &page.limit)?;
    out.extend_from_slice(b",\"as_of\":");
    value(&mut out, &page.as_of)?;
    out.extend_from_slice(b",\"count\":");
    value(&mut out, &page.count)?;
    out.extend_from_slice(b",\"bars\":[");
    for (i, bar) in page.bars.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_bar(&mut out, bar)?;
        if out.len() >= piece_bytes {
            let rest = page.bars.len() - i - 1;
            let full = std::mem::replace(&mut out, Vec::with_capacity(capacity(rest)));
            if !emit(full) {
                return Ok(());
            }
        }
    }
    out.extend_from_slice(b"],\"next\":");
    value(&mut out, &page.next)?;
    out.push(b'}');
    emit(out);
    Ok(())
}

/// One value as serde_json writes it.
fn value<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) -> serde_json::Result<()> {
    serde_json::to_writer(&mut *out, v)
}

fn write_bar(out: &mut Vec<u8>, b: &BarRecord) -> serde_json::Result<()> {
    out.extend_from_slice(b"{\"ts_utc\":\"");
    instant::write(out, &b.ts_utc);
    out.extend_from_slice(b"\",\"open\":");
    value(out, &b.open)?;
    out.extend_from_slice(b",\"high\":");
    value(out, &b.high)?;
    out.extend_from_slice(b",\"low\":");
    value(out, &b.low)?;
    out.extend_from_slice(b",\"close\":");
    value(out, &b.close)?;
    out.extend_from_slice(b",\"vol\":");
    value(out, &b.vol)?;
    out.extend_from_slice(b",\"vwap\":");
    value(out, &b.vwap)?;
    out.extend_from_slice(b",\"trade_count\":");
    value(out, &b.trade_count)?;
    out.extend_from_slice(b",\"source_timeframe\":");
    value(out, &b.source_timeframe)?;
    out.extend_from_slice(b",\"source_candles\":");
    value(out, &b.source_candles)?;
    out.extend_from_slice(b",\"expected_candles\":");
    value(out, &b.expected_candles)?;
    out.extend_from_slice(b",\"quality_score\":");
    value(out, &b.quality_score)?;
    out.extend_from_slice(if b.is_partial {
        b",\"is_partial\":true}"
    } else {
        b",\"is_partial\":false}"
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn bar(ts: DateTime<Utc>, partial: bool) -> BarRecord {
        BarRecord {
            ts_utc: ts,
            open: 1.10234,
            high: 1.1031000000000002,
            low: 0.9,
            close: 1e-7,
            vol: 12345678.25,
            vwap: partial.then_some(1.1),
            trade_count: partial.then_some(42),
            source_timeframe: (!partial).then(|| "1m".to_string()),
            source_candles: Some(5),
            expected_candles: (!partial).then_some(5),
            quality_score: Some(if partial { -1 } else { 2 }),
            is_partial: partial,
        }
    }

    #[test]
    fn a_page_is_written_as_serde_writes_it() {
        let t = Utc.with_ymd_and_hms(2025, 7, 1, 13, 5, 0).unwrap();
        let mut bars = Vec::new();
        for (i, nanos) in [0u32, 250_000_000, 1_000, 1, 999_999_999, 120_000]
            .into_iter()
            .enumerate()
        {
            let ts = t
                + chrono::Duration::minutes(5 * i as i64)
                + chrono::Duration::nanoseconds(i64::from(nanos));
            bars.push(bar(ts, i % 2 == 1));
        }
        bars.push(bar(Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap(), false));
        bars.push(bar(
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            true,
        ));
        for (bars, next) in [(bars.clone(), Some(t)), (Vec::new(), None)] {
            let page = BarsPage {
                symbol: "EUR\"USD".into(),
                timeframe: Timeframe::M5,
                calendar: "fx",
                from: Some(t),
                to: None,
                limit: 10_000,
                as_of: Some(t + chrono::Duration::milliseconds(1)),
                count: bars.len(),
                bars,
                next,
            };
            let by_hand = String::from_utf8(write(&page).unwrap()).unwrap();
            assert_eq!(by_hand, serde_json::to_string(&page).unwrap());
        }
    }

    #[test]
    fn a_page_in_pieces_is_the_page_whole() {
        let t = Utc.with_ymd_and_hms(2025, 7, 1, 0, 0, 0).unwrap();
        let bars: Vec<BarRecord> = (0..50)
            .map(|i| bar(t + chrono::Duration::minutes(5 * i), i % 3 == 0))
            .collect();
        let page = BarsPage {
            symbol: "EURUSD".into(),
            timeframe: Timeframe::M5,
            calendar: "fx",
            from: None,
            to: Some(t),
            limit: 50,
            as_of: None,
            count: bars.len(),
            bars,
            next: None,
        };
        let mut pieces = Vec::new();
        write_in_pieces(&page, 1000, |p| {
            pieces.push(p);
            true
        })
        .unwrap();
        assert!(pieces.len() > 10, "{}", pieces.len());
        assert!(pieces.iter().all(|p| p.len() < 1000 + BYTES_PER_BAR));
        assert_eq!(pieces.concat(), serde_json::to_vec(&page).unwrap());
        let mut taken = 0;
        write_in_pieces(&page, 1000, |_| {
            taken += 1;
            taken < 3
        })
        .unwrap();
        assert_eq!(taken, 3, "no piece is written after the reader left");
    }

    #[test]
    fn non_finite_numbers_are_null_as_serde_writes_them() {
        let mut b = bar(Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap(), false);
        b.open = f64::NAN;
        b.vol = f64::INFINITY;
        let mut out = Vec::new();
        write_bar(&mut out, &b).unwrap();
        assert_eq!(out, serde_json::to_vec(&b).unwrap());
    }
}
