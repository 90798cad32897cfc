//! Synthetic 1-minute bars for tests and benchmarks: a seeded random walk
//! with optional FX weekend closures and random gaps, deterministic for a
//! given seed.

use chrono::{DateTime, Datelike, Duration, Timelike, Utc, Weekday};
use chrono_tz::America::New_York;

/// One generated 1-minute bar: the engine's own bar type.
pub type SynthBar = crate::model::Bar;

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthSpec {
    /// First minute (floored to the minute).
    pub start: DateTime<Utc>,
    /// Number of minutes covered (bars are fewer when gaps or weekends apply).
    pub minutes: i64,
    /// Skip the FX weekend: Friday 17:00 to Sunday 17:00 New York time.
    pub fx_weekends: bool,
    /// Chance that any one minute is missing, 0.0..1.0.
    pub gap_probability: f64,
    /// Chance that a gap, once started, runs on (longer outages).
    pub gap_continue_probability: f64,
    /// Give bars volume, vwap and trade counts (crypto-like) or leave vol 0.
    pub with_volume: bool,
    /// Starting price.
    pub price: f64,
    pub seed: u64,
}

impl Default for SynthSpec {
    fn default() -> Self {
        Self {
            start: DateTime::<Utc>::from_timestamp(1_735_689_600, 0).unwrap_or_default(), // 2025-01-01
            minutes: 7 * 24 * 60,
            fx_weekends: true,
            gap_probability: 0.02,
            gap_continue_probability: 0.9,
            with_volume: false,
            price: 1.1,
            seed: 1,
        }
    }
}

/// SplitMix64: tiny, fast, good enough for synthetic prices.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Whether the FX market is closed at `ts` (Friday 17:00 to Sunday 17:00 New York).
pub fn fx_closed(ts: DateTime<Utc>) -> bool {
    let ny = ts.with_timezone(&New_York);
    match ny.weekday() {
        Weekday::Sat => true,
        Weekday::Fri => ny.hour() >= 17,
        Weekday::Sun => ny.hour() < 17,
        _ => false,
    }
}

/// Round a price to 5 decimals, as FX quotes are.
fn quote(p: f64) -> f64 {
    (p * 100_000.0).round() / 100_000.0
}

/// Generate the bars of `spec`, in time order.
pub fn generate(spec: &SynthSpec) -> impl Iterator<Item = SynthBar> + '_ {
    let mut rng = Rng(spec.seed);
    let start = spec.start - Duration::seconds(spec.start.timestamp().rem_euclid(60));
    let mut price = spec.price;
    let mut in_gap = false;
    (0..spec.minutes).filter_map(move |i| {
        let ts = start + Duration::minutes(i);
        let step = (rng.unit() - 0.5) * price * 0.0004;
        let open = quote(price);
        price = (price + step).max(0.0001);
        let close = quote(price);
        let wick_up = rng.unit() * price * 0.0002;
        let wick_down = rng.unit() * price * 0.0002;
        let high = quote(open.max(close) + wick_up);
        let low = quote((open.min(close) - wick_down).max(0.00001));
        let gap_roll = rng.unit();
        let vol_roll = rng.unit();
        in_gap = if in_gap {
            gap_roll < spec.gap_continue_probability
        } else {
            gap_roll < spec.gap_probability
        };
        if in_gap || (spec.fx_weekends && fx_closed(ts)) {
            return None;
        }
        let (vol, vwap, trade_count) = if spec.with_volume {
            let vol = (vol_roll * 50.0 * 1000.0).round() / 1000.0;
            let vwap = quote((open + high + low + close) / 4.0);
            (vol, Some(vwap), Some((vol_roll * 400.0) as i64))
        } else {
            (0.0, None, None)
        };
        Some(SynthBar {
            ts,
            open,
            high,
            low,
            close,
            vol,
            vwap,
            trade_count,
        })
    })
}

/// Write bars in HistData's generic ASCII M1 format (fixed UTC−5 stamps);
/// returns how many were written.
pub fn write_histdata<W: std::io::Write>(
    bars: impl Iterator<Item = SynthBar>,
    mut w: W,
) -> std::io::Result<u64> {
    let mut rows = 0;
    for b in bars {
        rows += 1;
        let est = b.ts - Duration::hours(5);
        writeln!(
            w,
            "{:04}{:02}{:02} {:02}{:02}{:02};{:.5};{:.5};{:.5};{:.5};{}",
            est.year(),
            est.month(),
            est.day(),
            est.hour(),
            est.minute(),
            est.second(),
            b.open,
            b.high,
            b.low,
            b.close,
            b.vol
        )?;
    }
    w.flush()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bars_and_bars_are_consistent() {
        let spec = SynthSpec {
            minutes: 20_000,
            ..SynthSpec::default()
        };
        let a: Vec<_> = generate(&spec).collect();
        let b: Vec<_> = generate(&spec).collect();
        assert_eq!(a, b);
        assert!(a.len() > 5_000 && a.len() < 20_000, "{}", a.len());
        for bar in &a {
            assert!(bar.high >= bar.open.max(bar.close) && bar.low <= bar.open.min(bar.close));
            assert!(!fx_closed(bar.ts));
        }
    }
}
