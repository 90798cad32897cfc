//! `barkeep verify [--deep]`: the checklist's Steps 2–6, its 12 success
//! criteria and the SQL face's security properties (docs/DESIGN.md) as
//! PASS/FAIL/SKIP lines;
//! `--deep` recomputes stored bars from their sources. Exit 0 only when
//! everything passed: a FAIL, or a SKIP (a check with nothing to judge yet),
//! exits 1.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::Global;
use crate::model::Symbol;
use crate::ops::verify::{self, DeepSettings, Outcome, VerifySettings};

/// Arguments of `barkeep verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Also recompute stored bars from their sources and report differences.
    #[arg(long)]
    pub deep: bool,
    /// With --deep: how many bars, drawn at random.
    #[arg(long, default_value_t = 200, requires = "deep")]
    pub sample: i64,
    /// With --deep: every bar of this symbol instead of a sample.
    #[arg(long, requires = "deep")]
    pub symbol: Option<Symbol>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run `barkeep verify`.
pub async fn run(global: &Global, args: VerifyArgs) -> Result<ExitCode> {
    let client = global.database().await?.connect().await?;
    if let Some(symbol) = &args.symbol {
        super::require_registered(&client, symbol).await?;
    }
    let settings = VerifySettings {
        deep: args.deep.then(|| DeepSettings {
            sample: args.sample,
            symbol: args.symbol.clone(),
        }),
    };
    let report = verify::verify(&client, &settings).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for c in &report.checks {
            println!(
                "{:<4}  {:<24} {} — {}",
                c.outcome.as_str(),
                c.id,
                c.title,
                c.observed
            );
        }
        if let Some(deep) = &report.deep {
            let outcome = if deep.differences.is_empty() {
                Outcome::Pass
            } else {
                Outcome::Fail
            };
            println!(
                "{:<4}  {:<24} stored bars equal their recomputation ({}) — {} bars checked, {} differ",
                outcome.as_str(),
                "deep",
                deep.mode,
                deep.bars_checked,
                deep.differences.len()
            );
            for d in deep.differences.iter().take(50) {
                let fields = if d.fields.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", d.fields.join(", "))
                };
                println!(
                    "      {} {} {} {}{fields}",
                    d.kind,
                    d.symbol,
                    d.timeframe,
                    d.ts_utc.format("%Y-%m-%d %H:%MZ")
                );
            }
            if deep.differences.len() > 50 {
                println!("      … {} more (see --json)", deep.differences.len() - 50);
            }
        }
        let count = |o: Outcome| report.checks.iter().filter(|c| c.outcome == o).count();
        let deep_failed = report
            .deep
            .as_ref()
            .map(|d| usize::from(!d.differences.is_empty()));
        let failed = count(Outcome::Fail) + deep_failed.unwrap_or(0);
        let passed = count(Outcome::Pass) + deep_failed.map_or(0, |f| 1 - f);
        let skipped = count(Outcome::Skip);
        println!();
        println!(
            "{}: {passed} passed, {failed} failed, {skipped} skipped",
            if report.passed {
                "PASSED"
            } else if failed > 0 {
                "FAILED"
            } else {
                "INCOMPLETE"
            },
        );
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
