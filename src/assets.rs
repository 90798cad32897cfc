//! The instrument registry (`core_asset_registry_all`): validated symbols
//! and asset classes, registering instruments and changing their flags.

use anyhow::{bail, Context, Result};
use tokio_postgres::Client;

use crate::model::{AssetClass, Calendar, Symbol};

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

/// Whether a class change would move a symbol to another calendar while
/// it has derived bars: Some((old class, live bars)) then.
pub async fn calendar_change(
    client: &Client,
    symbol: &Symbol,
    class: AssetClass,
) -> Result<Option<(String, i64)>> {
    let row = client
        .query_opt(
            "SELECT r.asset_class,
                    (SELECT count(*) FROM derived_data_bars d
                     WHERE d.canonical_symbol = r.canonical_symbol AND d.deleted_at IS NULL)
             FROM core_asset_registry_all r WHERE r.canonical_symbol = $1",
            &[&symbol.as_str()],
        )
        .await
        .context("reading the asset registry")?;
    Ok(row.and_then(|r| {
        let old: String = r.get(0);
        let bars: i64 = r.get(1);
        let moves = Calendar::for_asset_class(&old) != Calendar::for_asset_class(class.as_str());
        (moves && bars > 0).then_some((old, bars))
    }))
}

/// Insert or update one instrument. Refuses a class change that would move
/// a symbol with bars to another calendar (see [`change_class`]).
pub async fn add(
    client: &Client,
    symbol: &Symbol,
    class: AssetClass,
    name: Option<&str>,
    active: bool,
) -> Result<()> {
    if let Some((old, bars)) = calendar_change(client, symbol, class).await? {
        bail!(
            "{symbol} is {old} with {bars} derived bars on the {} calendar; class {} uses the {} \
             calendar: add --force to change it and rebuild its 4h, 1d and 1w bars",
            Calendar::for_asset_class(&old).as_str(),
            class.as_str(),
            Calendar::for_asset_class(class.as_str()).as_str()
        );
    }
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

/// What a forced class change did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClassChange {
    pub symbol: String,
    pub old_class: String,
    pub new_class: String,
    /// 4h, 1d and 1w bars of the old calendar retired (kept as history).
    pub bars_retired: u64,
    /// Bars built on the new calendar.
    pub bars_created: u64,
}

/// Timeframes whose buckets differ between the fx and utc calendars.
const CALENDAR_TIMEFRAMES: [&str; 3] = ["4h", "1d", "1w"];

/// Change a registered symbol's class even though its calendar moves: in one
/// transaction the class changes, the live 4h, 1d and 1w bars (cut on the
/// old calendar) are retired — kept as history, as every replaced version
/// is — and those tasks start again at their first bucket on the new
/// calendar; then they are caught up on it (`catchup_aggregation_range`,
/// which locks each task row, so a running worker cannot interleave).
pub async fn change_class(
    client: &mut Client,
    symbol: &Symbol,
    class: AssetClass,
) -> Result<ClassChange> {
    let old = class_of(client, symbol).await?;
    let tx = client
        .transaction()
        .await
        .context("opening a transaction")?;
    tx.execute(
        "UPDATE core_asset_registry_all SET asset_class = $2, updated_at = now()
         WHERE canonical_symbol = $1",
        &[&symbol.as_str(), &class.as_str()],
    )
    .await
    .with_context(|| format!("changing the class of {symbol}"))?;
    let tfs: Vec<&str> = CALENDAR_TIMEFRAMES.to_vec();
    let retired = tx
        .execute(
            "UPDATE derived_data_bars SET deleted_at = now(), updated_at = now()
             WHERE canonical_symbol = $1 AND timeframe = ANY($2) AND deleted_at IS NULL",
            &[&symbol.as_str(), &tfs],
        )
        .await
        .with_context(|| format!("retiring the {symbol} bars of the old calendar"))?;
    tx.execute(
        "DELETE FROM agg_dirty_buckets WHERE canonical_symbol = $1 AND timeframe = ANY($2)",
        &[&symbol.as_str(), &tfs],
    )
    .await
    .context("dropping marks of the old calendar")?;
    // The task state machine's restart (sql/functions/40_tasks.sql): each
    // started task back at its first bucket on the new calendar.
    tx.execute(
        "SELECT agg_restart_tasks($1, $2, NULL, true)",
        &[&symbol.as_str(), &tfs],
    )
    .await
    .with_context(|| format!("restarting the {symbol} 4h, 1d and 1w tasks"))?;
    tx.commit()
        .await
        .with_context(|| format!("committing the class change of {symbol}"))?;
    let mut created = 0u64;
    for tf in CALENDAR_TIMEFRAMES {
        loop {
            let row = client
                .query_opt(
                    "SELECT catchup_aggregation_range($1, $2, last_agg_bar_ts_utc, 5000, now(), 1, false)
                     FROM data_agg_state
                     WHERE canonical_symbol = $1 AND timeframe = $2 AND last_agg_bar_ts_utc IS NOT NULL",
                    &[&symbol.as_str(), &tf],
                )
                .await
                .with_context(|| format!("rebuilding {symbol} {tf} on the new calendar"))?;
            let Some(row) = row else { break };
            let r: serde_json::Value = row.get(0);
            if r["success"] != true {
                // The cursor moved under the call: a worker is building these
                // buckets itself.
                break;
            }
            created += r["bars_created"].as_u64().with_context(|| {
                format!("catchup_aggregation_range for {symbol} {tf} gave no bars_created: {r}")
            })?;
            if r["continue"] != true {
                break;
            }
        }
    }
    Ok(ClassChange {
        symbol: symbol.to_string(),
        old_class: old,
        new_class: class.as_str().to_string(),
        bars_retired: retired,
        bars_created: created,
    })
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
    crate::migrate::require_migrated(client).await?;
    let row = client
        .query_opt(
            "SELECT asset_class FROM core_asset_registry_all WHERE canonical_symbol = $1",
            &[&symbol.as_str()],
        )
        .await
        .context("reading the asset registry")?;
    match row {
        Some(r) => Ok(r.get(0)),
        None => Err(crate::error::UsageError(format!(
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
        return Err(crate::error::UsageError(
            "nothing to set: give --active and/or --test-active".into(),
        )
        .into());
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
