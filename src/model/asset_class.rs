//! Asset classes: what kind of market an instrument trades in, which picks
//! the calendar its bars are cut on.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};

use super::Calendar;

/// What kind of market an instrument trades in; it picks the calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AssetClass {
    Fx,
    Metal,
    Crypto,
    Equity,
}

impl AssetClass {
    pub fn as_str(self) -> &'static str {
        match self {
            AssetClass::Fx => "fx",
            AssetClass::Metal => "metal",
            AssetClass::Crypto => "crypto",
            AssetClass::Equity => "equity",
        }
    }

    /// The calendar its bars are cut on.
    pub fn calendar(self) -> Calendar {
        Calendar::for_asset_class(self.as_str())
    }
}

impl fmt::Display for AssetClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AssetClass {
    type Err = anyhow::Error;
    /// Case and surrounding blanks do not matter (`FX`, ` fx `).
    fn from_str(raw: &str) -> Result<Self> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "fx" => Ok(AssetClass::Fx),
            "metal" => Ok(AssetClass::Metal),
            "crypto" => Ok(AssetClass::Crypto),
            "equity" => Ok(AssetClass::Equity),
            _ => bail!("unknown asset class {raw:?}: expected fx, metal, crypto or equity"),
        }
    }
}
