//! Writes a HistData-format file of synthetic 1-minute bars for the ingest
//! benchmark: `cargo run --release --example synth_histdata -- OUT ROWS`.
//! Bars are consecutive minutes from 2020-01-01 00:00 UTC (no weekends or
//! gaps, so ROWS minutes give ROWS rows), seed 7.

use std::io::BufWriter;

use anyhow::{Context, Result};
use barkeep::synth::{self, SynthSpec};
use chrono::{TimeZone, Utc};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let out = args.next().context("usage: synth_histdata OUT ROWS")?;
    let rows: i64 = args
        .next()
        .unwrap_or_else(|| "1000000".into())
        .parse()
        .context("ROWS must be a whole number")?;
    let spec = SynthSpec {
        start: Utc
            .with_ymd_and_hms(2020, 1, 1, 0, 0, 0)
            .single()
            .context("start date")?,
        minutes: rows,
        fx_weekends: false,
        gap_probability: 0.0,
        seed: 7,
        ..SynthSpec::default()
    };
    let file = std::fs::File::create(&out).with_context(|| format!("creating {out}"))?;
    synth::write_histdata(synth::generate(&spec), BufWriter::new(file))
        .with_context(|| format!("writing {out}"))?;
    Ok(())
}
