//! `core_asset_registry_all`, as the command line and the HTTP face read
//! it: whether a symbol is registered, its calendar, the whole list.

use anyhow::{Context, Result};
use tokio_postgres::Client;

use crate::model::Calendar;
use crate::model::Symbol;

/// A registered instrument, for the chart's picker.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RegisteredSymbol {
    pub symbol: String,
    pub asset_class: String,
    pub active: bool,
}

/// Whether the registry holds `symbol`.
pub async fn is_registered(client: &Client, symbol: &Symbol) -> Result<bool> {
    Ok(client
        .query_opt(
            "SELECT 1 FROM core_asset_registry_all WHERE canonical_symbol = $1",
            &[&symbol.as_str()],
        )
        .await
        .context("looking up the symbol")?
        .is_some())
}

/// The calendar of a registered symbol; None for an unknown one.
pub async fn calendar_of(client: &Client, symbol: &Symbol) -> Result<Option<Calendar>> {
    let row = client
        .query_opt(
            "SELECT asset_class FROM core_asset_registry_all WHERE canonical_symbol = $1",
            &[&symbol.as_str()],
        )
        .await
        .context("reading the registry")?;
    Ok(row.map(|r| Calendar::for_asset_class(r.get::<_, &str>(0))))
}

/// How many instruments are registered.
pub async fn count(client: &Client) -> Result<i64> {
    Ok(client
        .query_one("SELECT count(*) FROM core_asset_registry_all", &[])
        .await
        .context("counting assets")?
        .get(0))
}

/// Every registered instrument, by symbol.
pub async fn symbols(client: &Client) -> Result<Vec<RegisteredSymbol>> {
    let rows = client
        .query(
            "SELECT canonical_symbol, asset_class, active FROM core_asset_registry_all ORDER BY 1",
            &[],
        )
        .await
        .context("reading the asset registry")?;
    Ok(rows
        .iter()
        .map(|r| RegisteredSymbol {
            symbol: r.get(0),
            asset_class: r.get(1),
            active: r.get(2),
        })
        .collect())
}
