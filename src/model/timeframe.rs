//! Timeframes and the ladder: the bar lengths barkeep knows, how users
//! write them, and which timeframe each one is built from.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};

/// A bar length barkeep knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Timeframe {
    M1,
    M5,
    M15,
    H1,
    H4,
    D1,
    W1,
}

impl Timeframe {
    /// The derived timeframes in ladder order: every one comes after its source.
    pub const LADDER: [Timeframe; 6] = [
        Timeframe::M5,
        Timeframe::M15,
        Timeframe::H1,
        Timeframe::H4,
        Timeframe::D1,
        Timeframe::W1,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Timeframe::M1 => "1m",
            Timeframe::M5 => "5m",
            Timeframe::M15 => "15m",
            Timeframe::H1 => "1h",
            Timeframe::H4 => "4h",
            Timeframe::D1 => "1d",
            Timeframe::W1 => "1w",
        }
    }

    /// Parse a timeframe as users type it: `1m`, `5m`, `15m`, `1h`, `4h`,
    /// `1d`, `1w`, the MT4 names (`M1`, `M5`, `M15`, `H1`, `H4`, `D1`,
    /// `W1`) and minute counts (`60m`, `240m`, `1440m`). `1M` is refused:
    /// it could mean a minute or a month.
    pub fn parse(raw: &str) -> Result<Self> {
        let trimmed = raw.trim();
        if trimmed.ends_with('M') && trimmed.starts_with(|c: char| c.is_ascii_digit()) {
            bail!(
                "timeframe {raw:?} is ambiguous (minute or month?): write {}m for minutes; barkeep has no month bars",
                trimmed.trim_end_matches('M')
            );
        }
        Ok(match trimmed.to_ascii_lowercase().as_str() {
            "1m" | "m1" => Timeframe::M1,
            "5m" | "m5" => Timeframe::M5,
            "15m" | "m15" => Timeframe::M15,
            "1h" | "h1" | "60m" => Timeframe::H1,
            "4h" | "h4" | "240m" => Timeframe::H4,
            "1d" | "d1" | "24h" | "1440m" => Timeframe::D1,
            "1w" | "w1" | "7d" => Timeframe::W1,
            _ => bail!(
                "unknown timeframe {raw:?}: use 1m, 5m, 15m, 1h, 4h, 1d or 1w (or M5, H1, D1, W1)"
            ),
        })
    }

    /// Parse a timeframe that has an aggregation task (any but `1m`).
    pub fn parse_derived(raw: &str) -> Result<Self> {
        match Self::parse(raw) {
            Ok(Timeframe::M1) => {
                bail!("{raw:?} is the base timeframe, not a task: expected one of 5m, 15m, 1h, 4h, 1d, 1w")
            }
            Err(e) if e.to_string().contains("ambiguous") => Err(e),
            Err(_) => {
                bail!("unknown task timeframe {raw:?}: expected one of 5m, 15m, 1h, 4h, 1d, 1w")
            }
            Ok(tf) => Ok(tf),
        }
    }

    /// The timeframe this one is built from in the default ladder (None for 1m).
    pub fn source(self) -> Option<Timeframe> {
        match self {
            Timeframe::M1 => None,
            Timeframe::M5 => Some(Timeframe::M1),
            Timeframe::M15 | Timeframe::H1 => Some(Timeframe::M5),
            Timeframe::H4 | Timeframe::D1 => Some(Timeframe::H1),
            Timeframe::W1 => Some(Timeframe::D1),
        }
    }

    /// Claim order of the task queue: 5m=1 … 1w=6 (1m=0).
    pub fn rank(self) -> i32 {
        self as i32
    }

    /// Length of a bucket that is a fixed number of minutes on every calendar.
    pub fn fixed_minutes(self) -> Option<i64> {
        match self {
            Timeframe::M1 => Some(1),
            Timeframe::M5 => Some(5),
            Timeframe::M15 => Some(15),
            Timeframe::H1 => Some(60),
            _ => None,
        }
    }
}

impl fmt::Display for Timeframe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Timeframe {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}
