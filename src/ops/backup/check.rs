//! What `restore` checks before it writes anything: every value of a backup
//! that the commands would validate (`assets add`, `task priority`, `task
//! delay`, `sync`, the ladder) is validated the same way here, so a file
//! cannot put into the task table what no command could. The first bad
//! value refuses the whole file, named by its path
//! (`data_agg_state[3].source_timeframe: ...`).

use std::collections::{HashMap, HashSet};
use std::ops::RangeInclusive;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};

use crate::model::calendar::{agrees_with_symbol_start, bucket_start};
use crate::model::{AssetClass, Symbol, Timeframe};

/// Claim priorities `barkeep task priority` accepts (lower runs first).
pub const TASK_PRIORITY: RangeInclusive<i64> = 0..=10_000;
/// Seconds a task may wait for a quiet feed (`task delay`, `sync --delay`).
pub const AGGREGATION_DELAY_SECONDS: RangeInclusive<i64> = 0..=86_400;
/// Minutes between two runs of a task: at least one, at most a week.
pub const RUN_INTERVAL_MINUTES: RangeInclusive<i64> = 1..=10_080;
/// The longest lease a worker takes (`run --lease-seconds`); a restored
/// `running` task whose lease ends further ahead than this is refused.
pub const MAX_LEASE_SECONDS: i64 = 86_400;
/// Longest `last_error` a backup may carry, in characters.
pub const MAX_ERROR_CHARS: usize = 8_192;
/// Longest other free text (`lease_owner`, `display_name`), in characters.
pub const MAX_TEXT_CHARS: usize = 256;

/// The statuses of the task state machine (migration 0003).
const STATUSES: [&str; 4] = ["idle", "running", "hard_failed", "disabled"];

/// One row and its path in the document, for messages.
struct Row<'a> {
    path: String,
    row: &'a Map<String, Value>,
}

impl<'a> Row<'a> {
    fn at(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.row.get(key).filter(|v| !v.is_null())
    }

    fn required_text(&self, key: &str) -> Result<&'a str> {
        match self.get(key) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            Some(other) => bail!("{}: expected text, got {other}", self.at(key)),
            None => bail!("{}: missing (every row names it)", self.at(key)),
        }
    }

    fn text(&self, key: &str, max: usize) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => {
                let n = s.chars().count();
                if n > max {
                    bail!(
                        "{}: {n} characters, more than the {max} a backup may carry",
                        self.at(key)
                    );
                }
                Ok(Some(s))
            }
            Some(other) => bail!("{}: expected text, got {}", self.at(key), short(other)),
        }
    }

    fn int(&self, key: &str, range: RangeInclusive<i64>) -> Result<Option<i64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_i64() {
                Some(n) if range.contains(&n) => Ok(Some(n)),
                Some(n) => bail!(
                    "{}: {n} is outside {}..={}",
                    self.at(key),
                    range.start(),
                    range.end()
                ),
                None => bail!("{}: expected an integer, got {}", self.at(key), short(v)),
            },
        }
    }

    fn boolean(&self, key: &str) -> Result<()> {
        match self.get(key) {
            None | Some(Value::Bool(_)) => Ok(()),
            Some(other) => bail!(
                "{}: expected true or false, got {}",
                self.at(key),
                short(other)
            ),
        }
    }

    fn instant(&self, key: &str) -> Result<Option<DateTime<Utc>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
                .map(|t| Some(t.with_timezone(&Utc)))
                .with_context(|| format!("{}: {s:?} is not an instant", self.at(key))),
            Some(other) => bail!(
                "{}: expected an instant, got {}",
                self.at(key),
                short(other)
            ),
        }
    }
}

/// A value for a message, cut so a huge one cannot flood the terminal.
fn short(v: &Value) -> String {
    crate::ops::shorten(&v.to_string(), 60)
}

fn rows<'a>(table: &str, rows: &'a [Map<String, Value>]) -> impl Iterator<Item = Row<'a>> + 'a {
    let table = table.to_string();
    rows.iter().enumerate().map(move |(i, row)| Row {
        path: format!("{table}[{i}]"),
        row,
    })
}

/// A symbol as the `Symbol` parser accepts it and in its canonical spelling
/// (the tables compare text, so `audusd` would be another instrument).
fn symbol(row: &Row) -> Result<Symbol> {
    let raw = row.required_text("canonical_symbol")?;
    let parsed = Symbol::parse(raw).with_context(|| row.at("canonical_symbol"))?;
    if parsed.as_str() != raw {
        bail!(
            "{}: {raw:?} is not canonical; write {parsed}",
            row.at("canonical_symbol")
        );
    }
    Ok(parsed)
}

/// Check the registry rows; returns each symbol with its asset class.
pub fn registry(assets: &[Map<String, Value>]) -> Result<HashMap<Symbol, AssetClass>> {
    let mut classes = HashMap::new();
    for row in rows("core_asset_registry_all", assets) {
        let sym = symbol(&row)?;
        let raw = row.required_text("asset_class")?;
        let class: AssetClass = raw.parse().with_context(|| row.at("asset_class"))?;
        if class.as_str() != raw {
            bail!(
                "{}: {raw:?} is not canonical; write {class}",
                row.at("asset_class")
            );
        }
        row.boolean("active")?;
        row.boolean("test_active")?;
        if let Some(base) = row.text("base_timeframe", MAX_TEXT_CHARS)? {
            if base != Timeframe::M1.as_str() {
                bail!(
                    "{}: {base:?} is not 1m, the only base timeframe",
                    row.at("base_timeframe")
                );
            }
        }
        row.text("display_name", MAX_TEXT_CHARS)?;
        if let Some(v) = row.get("tick_size") {
            if !v.as_f64().is_some_and(|t| t > 0.0 && t.is_finite()) {
                bail!(
                    "{}: expected a positive number, got {}",
                    row.at("tick_size"),
                    short(v)
                );
            }
        }
        row.instant("created_at")?;
        row.instant("updated_at")?;
        if classes.insert(sym.clone(), class).is_some() {
            bail!("{}: {sym} is listed twice", row.at("canonical_symbol"));
        }
    }
    Ok(classes)
}

/// Check the task rows against the file's registry, at `now` (for leases).
pub fn tasks(
    tasks: &[Map<String, Value>],
    registry: &HashMap<Symbol, AssetClass>,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut seen = HashSet::new();
    // (path, symbol, calendar, timeframe, start) of every task with a start:
    // judged once the symbol's one start (the latest) is known.
    let mut task_starts = Vec::new();
    for row in rows("data_agg_state", tasks) {
        let sym = symbol(&row)?;
        if !registry.contains_key(&sym) {
            bail!(
                "{}: {sym} is not in the backup's core_asset_registry_all",
                row.at("canonical_symbol")
            );
        }
        let raw_tf = row.required_text("timeframe")?;
        let tf = Timeframe::parse_derived(raw_tf).with_context(|| row.at("timeframe"))?;
        if tf.as_str() != raw_tf {
            bail!(
                "{}: {raw_tf:?} is not canonical; write {tf}",
                row.at("timeframe")
            );
        }
        let source = row.required_text("source_timeframe")?;
        let ladder = tf.source().map(Timeframe::as_str).unwrap_or_default();
        if source != ladder {
            bail!(
                "{}: {source} is not the ladder's source of {tf} ({ladder})",
                row.at("source_timeframe")
            );
        }
        row.int("run_interval_minutes", RUN_INTERVAL_MINUTES)?;
        row.int("aggregation_delay_seconds", AGGREGATION_DELAY_SECONDS)?;
        row.int("task_priority", TASK_PRIORITY)?;
        for counter in [
            "hard_fail_streak",
            "transient_fail_streak",
            "total_runs",
            "total_bars_created",
            "total_bars_quality_poor",
            "lease_recoveries",
        ] {
            row.int(counter, 0..=i64::MAX)?;
        }
        row.boolean("is_mandatory")?;
        row.boolean("enabled")?;
        let calendar = registry
            .get(&sym)
            .map(|c| c.calendar())
            .unwrap_or(crate::model::Calendar::Utc);
        let start = row.instant("agg_start_utc")?;
        if let Some(start) = start {
            if start < floor() {
                bail!(
                    "{}: {start} is before {}, the earliest bar barkeep keeps",
                    row.at("agg_start_utc"),
                    floor()
                );
            }
            task_starts.push((row.at("agg_start_utc"), sym.clone(), calendar, tf, start));
        }
        if let Some(cursor) = row.instant("last_agg_bar_ts_utc")? {
            cursor_fits(&row, calendar, tf, cursor, start, now)?;
        }
        for instant in [
            "next_run_at",
            "running_started_at_utc",
            "last_attempted_at_utc",
            "last_successful_at_utc",
            "updated_at",
        ] {
            row.instant(instant)?;
        }
        row.text("last_error", MAX_ERROR_CHARS)?;
        lease(&row, now)?;
        if !seen.insert((sym.clone(), tf)) {
            bail!("{}: the task {sym} {tf} is listed twice", row.path);
        }
    }
    let mut symbol_starts: HashMap<&Symbol, DateTime<Utc>> = HashMap::new();
    for (_, sym, _, _, start) in &task_starts {
        let latest = symbol_starts.entry(sym).or_insert(*start);
        *latest = (*latest).max(*start);
    }
    for (at, sym, calendar, tf, start) in &task_starts {
        let first = symbol_starts[sym];
        if !agrees_with_symbol_start(*calendar, *tf, *start, first) {
            bail!(
                "{at}: {start} is neither {sym}'s start {first} nor the start of its {tf} bucket (a symbol's tasks share one start)"
            );
        }
    }
    Ok(())
}

/// 1970-01-01: no bar or task start before it is plausible.
fn floor() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH
}

/// A task's cursor (the start of its newest built bar) is a bucket start of
/// its timeframe on the symbol's calendar, not before the bucket of its
/// start and not in the future: the worker goes on from exactly there, so a
/// cursor off the grid or ahead of time would skip or never reach bars.
fn cursor_fits(
    row: &Row,
    calendar: crate::model::Calendar,
    tf: Timeframe,
    cursor: DateTime<Utc>,
    start: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<()> {
    let at = row.at("last_agg_bar_ts_utc");
    if bucket_start(calendar, tf, cursor) != cursor {
        bail!(
            "{at}: {cursor} is not the start of a {tf} bucket on the {} calendar",
            calendar.as_str()
        );
    }
    if cursor > now {
        bail!("{at}: {cursor} is in the future");
    }
    let first = bucket_start(calendar, tf, start.unwrap_or_else(floor));
    if cursor < first {
        bail!("{at}: {cursor} is before the task's first bucket ({first})");
    }
    Ok(())
}

/// A task's status and its lease agree: `running` holds a lease that ends no
/// further ahead than a worker's longest one; any other status holds none.
fn lease(row: &Row, now: DateTime<Utc>) -> Result<()> {
    let status = row.required_text("status")?;
    if !STATUSES.contains(&status) {
        bail!(
            "{}: {status:?} is not a task status ({})",
            row.at("status"),
            STATUSES.join(", ")
        );
    }
    let token = match row.text("lease_token", MAX_TEXT_CHARS)? {
        Some(t) => Some(
            uuid::Uuid::parse_str(t)
                .with_context(|| format!("{}: {t:?} is not a UUID", row.at("lease_token")))?,
        ),
        None => None,
    };
    let owner = row.text("lease_owner", MAX_TEXT_CHARS)?;
    let expires = row.instant("lease_expires_at")?;
    if status == "running" {
        let Some(expires) = expires else {
            bail!(
                "{}: a running task holds a lease; this one has none",
                row.at("lease_expires_at")
            );
        };
        if token.is_none() {
            bail!(
                "{}: a running task holds a lease token; this one has none",
                row.at("lease_token")
            );
        }
        if expires > now + Duration::seconds(MAX_LEASE_SECONDS) {
            bail!(
                "{}: {expires} is further ahead than the longest lease a worker takes ({MAX_LEASE_SECONDS} s)",
                row.at("lease_expires_at")
            );
        }
    } else if token.is_some() || owner.is_some() || expires.is_some() {
        bail!(
            "{}: a task that is {status}, not running, holds no lease; clear lease_token, lease_owner and lease_expires_at",
            row.at("status")
        );
    }
    Ok(())
}

/// The restored class of each symbol with stored 4h, 1d or 1w bars must put
/// them on the calendar they are cut on: restore writes the registry
/// directly, past `assets add`'s guard, and a class on another calendar
/// would leave every such bar wrong without a rebuild. A bar's start is a
/// bucket start on exactly one of the two calendars, so the newest bar of
/// each of those timeframes tells which one cut it.
pub async fn calendars(
    client: &impl tokio_postgres::GenericClient,
    assets: &[Map<String, Value>],
) -> Result<()> {
    for row in rows("core_asset_registry_all", assets) {
        let sym = symbol(&row)?;
        let class: AssetClass = row.required_text("asset_class")?.parse()?;
        let calendar = class.calendar();
        let bars = client
            .query(
                "SELECT DISTINCT ON (timeframe) timeframe, ts_utc FROM derived_data_bars
                 WHERE canonical_symbol = $1 AND deleted_at IS NULL AND timeframe IN ('4h', '1d', '1w')
                 ORDER BY timeframe, ts_utc DESC",
                &[&sym.as_str()],
            )
            .await
            .with_context(|| format!("reading the stored bars of {sym}"))?;
        for bar in bars {
            let tf = Timeframe::parse_derived(bar.get(0))?;
            let ts: DateTime<Utc> = bar.get(1);
            if bucket_start(calendar, tf, ts) != ts {
                bail!(
                    "{}: {class} cuts {sym}'s bars on the {} calendar, but its stored {tf} bar at {ts} \
                     is cut on another; restore the class it had, then change it with \
                     `barkeep assets add {sym} --class {class} --force` (which rebuilds those bars)",
                    row.at("asset_class"),
                    calendar.as_str()
                );
            }
        }
    }
    Ok(())
}
