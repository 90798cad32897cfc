//! The instrument registry (`core_asset_registry_all`): validated symbols
//! and asset classes, registering instruments and changing their flags.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use tokio_postgres::Client;

use crate::calendar::Calendar;

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

/// One registry row, as `assets list` shows it.
#[derive(Debug, serde::Serialize)]
pub struct Asset {
    pub canonical_symbol: String,
    pub asset_class: String,
    pub active: bool,
    pub test_active: bool,
    pub base_timeframe: String,
    pub display_name: Option<String>,
}

/// Insert or update one instrument.
pub async fn add(
    client: &Client,
    symbol: &Symbol,
    class: AssetClass,
    name: Option<&str>,
    active: bool,
) -> Result<()> {
    client
        .execute(
            "INSERT INTO core_asset_registry_all (canonical_symbol, asset_class, active, display_name)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (canonical_symbol) DO UPDATE
               SET asset_class = EXCLUDED.asset_class,
                   display_name = COALESCE(EXCLUDED.display_name, core_asset_registry_all.display_name),
                   updated_at = now()",
            &[&symbol.as_str(), &class.as_str(), &active, &name],
        )
        .await
        .with_context(|| format!("registering {symbol}"))?;
    Ok(())
}

/// Every registered instrument, by symbol.
pub async fn list(client: &Client) -> Result<Vec<Asset>> {
    let rows = client
        .query(
            "SELECT canonical_symbol, asset_class, active, test_active, base_timeframe, display_name
             FROM core_asset_registry_all ORDER BY canonical_symbol",
            &[],
        )
        .await
        .context("reading the asset registry")?;
    Ok(rows
        .iter()
        .map(|r| Asset {
            canonical_symbol: r.get(0),
            asset_class: r.get(1),
            active: r.get(2),
            test_active: r.get(3),
            base_timeframe: r.get(4),
            display_name: r.get(5),
        })
        .collect())
}

/// The asset class of a registered symbol, or an error naming the symbol.
pub async fn class_of(client: &Client, symbol: &Symbol) -> Result<String> {
    crate::ops::require_migrated(client).await?;
    let row = client
        .query_opt(
            "SELECT asset_class FROM core_asset_registry_all WHERE canonical_symbol = $1",
            &[&symbol.as_str()],
        )
        .await
        .context("reading the asset registry")?;
    match row {
        Some(r) => Ok(r.get(0)),
        None => Err(crate::ops::UsageError(format!(
            "unknown symbol {symbol}: register it first with `barkeep assets add {symbol} --class fx|metal|crypto|equity`"
        ))
        .into()),
    }
}

/// Change an instrument's prod (`active`) and dev/test (`test_active`)
/// flags; `None` leaves a flag as it is.
pub async fn set_flags(
    client: &Client,
    symbol: &Symbol,
    active: Option<bool>,
    test_active: Option<bool>,
) -> Result<()> {
    if active.is_none() && test_active.is_none() {
        bail!("nothing to set: give --active and/or --test-active");
    }
    class_of(client, symbol).await?;
    client
        .execute(
            "UPDATE core_asset_registry_all
             SET active = COALESCE($2, active), test_active = COALESCE($3, test_active), updated_at = now()
             WHERE canonical_symbol = $1",
            &[&symbol.as_str(), &active, &test_active],
        )
        .await
        .with_context(|| format!("updating {symbol}"))?;
    Ok(())
}
