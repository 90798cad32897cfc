//! The canonical instrument symbol, validated once where it enters the
//! program (command line, HTTP, files) and trusted everywhere after.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};

/// A canonical instrument symbol such as `EURUSD`, `XAUUSD` or `BTC-USD`:
/// 1 to 32 characters of A–Z, 0–9, `.`, `_`, `-`, `/`, upper-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Symbol(String);

impl Symbol {
    /// Validate and normalise a user-given symbol.
    pub fn parse(raw: &str) -> Result<Self> {
        let s = raw.trim().to_ascii_uppercase();
        if s.is_empty() || s.len() > 32 {
            bail!("symbol {raw:?} must be 1 to 32 characters long");
        }
        if let Some(bad) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "._-/".contains(*c)))
        {
            bail!(
                "symbol {raw:?} contains {bad:?}; only A-Z, 0-9, '.', '_', '-' and '/' are allowed"
            );
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Symbol {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}
