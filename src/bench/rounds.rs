//! A pair's numbers from its timed rounds: the median of each side and of
//! the per-round ratios.

use super::Pair;

/// Medians of (barkeep, baseline) rounds, and the median of the per-round
/// ratios (a round's two sides ran back to back, so their ratio is what
/// survives a machine whose speed drifts).
pub(super) fn pair(what: &str, rows: u64, rounds: &[(f64, f64)]) -> Pair {
    let barkeep: Vec<f64> = rounds.iter().map(|r| r.0).collect();
    let baseline: Vec<f64> = rounds.iter().map(|r| r.1).collect();
    let ratios: Vec<f64> = rounds.iter().map(|r| r.1 / r.0.max(1e-9)).collect();
    Pair {
        what: what.into(),
        rows,
        barkeep_seconds: median(&barkeep),
        baseline_seconds: median(&baseline),
        speedup: median(&ratios),
        rounds: rounds.len(),
        speedups: ratios,
        barkeep_rounds: barkeep,
        baseline_rounds: baseline,
    }
}

pub(super) fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
