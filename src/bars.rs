//! Reading bars the way users see them: the stored live bars of a symbol and
//! timeframe (live, or as they stood at an earlier instant), and the one
//! definition of the open (partial) bucket that `barkeep export --partial`
//! and `/api/bars?partial=true` share.
//!
//! # The open bucket
//!
//! The open bucket of a timeframe is the bucket holding the newest 1m bar,
//! while it is not final: no stored bar, the task's cursor not past it, and
//! the 1m watermark (SPEC §3) not past it either — `now` before its end plus
//! the `aggregation_delay_seconds` of the symbol's 1m-sourced task, and not
//! (`now` at or after its end with its last minute present): the horizon
//! `max(now − d, min(now, R))` of docs/DESIGN.md. A bucket whose data stopped
//! long ago is therefore never shown as partial, and 1m has no open bucket.
//!
//! Its bar is built like the stored one will be: from bars of the ladder's
//! source timeframe (1d from 1h, so 24 expected, not 1,440 minutes), taking
//! the stored final source bars and, after the last of them, the source
//! buckets computed the same way from their own source, down to 1m. A
//! computed source bucket that is complete keeps only a bar that qualifies
//! (SPEC §2 quality), as the worker will store it; the still-filling one is
//! kept whatever its count. Once the bucket turns final, the stored bar
//! equals the partial bar computed from the same rows (tests/it/http.rs).
//!
//! Every query here takes its values as bind parameters.

use std::future::Future;
use std::pin::Pin;

use anyhow::{Context, Result};
use chrono::{DateTime, Duration, Utc};
use tokio_postgres::Client;

use crate::engine::fold::{combine, quality, Folder};
use crate::model::calendar::{bucket_end, bucket_start, expected_candles};
use crate::model::{Bar, Calendar, Timeframe};

/// One bar as read by a user: stored (1m or derived) or the open bucket.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BarRecord {
    #[serde(serialize_with = "rfc3339")]
    pub ts_utc: DateTime<Utc>,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub vol: f64,
    pub vwap: Option<f64>,
    pub trade_count: Option<i64>,
    pub source_timeframe: Option<String>,
    pub source_candles: Option<i32>,
    pub expected_candles: Option<i32>,
    pub quality_score: Option<i16>,
    pub is_partial: bool,
}

/// An instant as chrono's own serde form writes it (RFC 3339, UTC as `Z`,
/// fractions only when present), formatted in one piece: 10,000 bars of
/// `/api/bars` otherwise go through the JSON writer a character at a time.
fn rfc3339<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

impl BarRecord {
    /// A bar from a row of the stored columns ([`Bar::from_row`]) followed
    /// by `source_timeframe, source_candles, expected_candles, quality_score,
    /// is_partial`.
    pub fn from_row(r: &tokio_postgres::Row) -> BarRecord {
        let bar = Bar::from_row(r);
        BarRecord {
            ts_utc: bar.ts,
            open: bar.open,
            high: bar.high,
            low: bar.low,
            close: bar.close,
            vol: bar.vol,
            vwap: bar.vwap,
            trade_count: bar.trade_count,
            source_timeframe: r.get(8),
            source_candles: r.get(9),
            expected_candles: r.get(10),
            quality_score: r.get(11),
            is_partial: r.get(12),
        }
    }
}

/// Which stored bars to read.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    /// First bar start to include.
    pub from: Option<DateTime<Utc>>,
    /// Bars starting before this instant only.
    pub to: Option<DateTime<Utc>>,
    /// At most this many bars (None: all). Without `from`, the newest ones.
    pub limit: Option<i64>,
}

const STORED_COLUMNS: &str = "ts_utc, open, high, low, close, vol, vwap, trade_count";

/// Stored live bars of `symbol` `tf` in the range, in time order.
///
/// With a limit and no `from`, the newest `limit` bars before `to`; with a
/// `from`, the first `limit` bars at or after it.
pub async fn stored(
    client: &Client,
    symbol: &str,
    tf: Timeframe,
    range: Range,
) -> Result<Vec<BarRecord>> {
    let (table, extra, quality_cols) = if tf == Timeframe::M1 {
        (
            "data_bars",
            "",
            "NULL::text, NULL::int, NULL::int, NULL::smallint, false",
        )
    } else {
        (
            "derived_data_bars",
            " AND deleted_at IS NULL",
            "source_timeframe, source_candles, expected_candles, quality_score, is_partial",
        )
    };
    let newest_first = range.limit.is_some() && range.from.is_none();
    // Only fixed text is spliced in; every value is a bind parameter.
    let sql = format!(
        "SELECT {STORED_COLUMNS}, {quality_cols} FROM {table}
         WHERE canonical_symbol = $1 AND timeframe = $2{extra}
           AND ($3::timestamptz IS NULL OR ts_utc >= $3) AND ($4::timestamptz IS NULL OR ts_utc < $4)
         ORDER BY ts_utc {} LIMIT $5",
        if newest_first { "DESC" } else { "ASC" }
    );
    let rows = client
        .query(
            &sql,
            &[&symbol, &tf.as_str(), &range.from, &range.to, &range.limit],
        )
        .await
        .with_context(|| format!("reading {symbol} {tf} bars"))?;
    let mut bars: Vec<BarRecord> = rows.iter().map(BarRecord::from_row).collect();
    if newest_first {
        bars.reverse();
    }
    Ok(bars)
}

/// Stored bars of `symbol` `tf` in the range as they stood at `as_of`: 1m
/// revisions from `data_bars_history`, derived versions from retired rows
/// (docs/DESIGN.md, "Versions of a bar"). The range reads as in [`stored`]:
/// with a limit and no `from`, the newest `limit` bars before `to`.
/// `barkeep export --as-of` and `/api/bars?as_of=` both read through here.
pub async fn as_of(
    client: &Client,
    symbol: &str,
    tf: Timeframe,
    range: Range,
    as_of: DateTime<Utc>,
) -> Result<Vec<BarRecord>> {
    crate::ops::history::check_as_of(client, symbol, as_of).await?;
    let newest_first = range.limit.is_some() && range.from.is_none();
    let order = if newest_first { "DESC" } else { "ASC" };
    // Only fixed text is spliced in; every value is a bind parameter.
    let sql = if tf == Timeframe::M1 {
        format!(
            "SELECT {STORED_COLUMNS}, NULL::text, NULL::int, NULL::int, NULL::smallint, false
             FROM (
               SELECT {STORED_COLUMNS} FROM data_bars
               WHERE canonical_symbol = $1 AND timeframe = $2 AND ingested_at <= $5
                 AND ($3::timestamptz IS NULL OR ts_utc >= $3) AND ($4::timestamptz IS NULL OR ts_utc < $4)
               UNION ALL
               SELECT {STORED_COLUMNS} FROM data_bars_history
               WHERE canonical_symbol = $1 AND timeframe = $2 AND valid_from <= $5 AND valid_to > $5
                 AND ($3::timestamptz IS NULL OR ts_utc >= $3) AND ($4::timestamptz IS NULL OR ts_utc < $4)
             ) v
             ORDER BY ts_utc {order} LIMIT $6"
        )
    } else {
        format!(
            "SELECT {STORED_COLUMNS},
                    source_timeframe, source_candles, expected_candles, quality_score, is_partial
             FROM derived_data_bars
             WHERE canonical_symbol = $1 AND timeframe = $2
               AND created_at <= $5 AND (deleted_at IS NULL OR deleted_at > $5)
               AND ($3::timestamptz IS NULL OR ts_utc >= $3) AND ($4::timestamptz IS NULL OR ts_utc < $4)
             ORDER BY ts_utc {order} LIMIT $6"
        )
    };
    let rows = client
        .query(
            &sql,
            &[
                &symbol,
                &tf.as_str(),
                &range.from,
                &range.to,
                &as_of,
                &range.limit,
            ],
        )
        .await
        .with_context(|| format!("reading {symbol} {tf} bars as of {as_of}"))?;
    let mut bars: Vec<BarRecord> = rows.iter().map(BarRecord::from_row).collect();
    if newest_first {
        bars.reverse();
    }
    Ok(bars)
}

/// The open bucket of `symbol` `tf` at `now`, computed on the fly and
/// flagged partial; None when there is none (see the module docs).
pub async fn open_bucket(
    client: &Client,
    symbol: &str,
    cal: Calendar,
    tf: Timeframe,
    now: DateTime<Utc>,
) -> Result<Option<BarRecord>> {
    let Some(source) = tf.source() else {
        return Ok(None);
    };
    let newest: Option<DateTime<Utc>> = client
        .query_one(
            "SELECT max(ts_utc) FROM data_bars WHERE canonical_symbol = $1 AND timeframe = '1m'",
            &[&symbol],
        )
        .await
        .with_context(|| format!("finding the newest {symbol} 1m bar"))?
        .get(0);
    let Some(newest) = newest else {
        return Ok(None);
    };
    let start = bucket_start(cal, tf, newest);
    let end = bucket_end(cal, tf, start);

    // The task's cursor says whether the bucket was finalized; the lateness
    // that applies is the 1m-sourced task's, since a higher bucket is final
    // exactly when the source buckets under it are (docs/DESIGN.md).
    let task = client
        .query_one(
            "SELECT (SELECT last_agg_bar_ts_utc FROM data_agg_state
                     WHERE canonical_symbol = $1 AND timeframe = $2),
                    (SELECT min(aggregation_delay_seconds) FROM data_agg_state
                     WHERE canonical_symbol = $1 AND source_timeframe = '1m')",
            &[&symbol, &tf.as_str()],
        )
        .await
        .with_context(|| format!("reading the {symbol} {tf} task"))?;
    let cursor: Option<DateTime<Utc>> = task.get(0);
    let delay: i32 = task.get::<_, Option<i32>>(1).unwrap_or(0);
    if cursor.is_some_and(|c| c > start) {
        return Ok(None);
    }
    let past_lateness = now >= end + Duration::seconds(delay.max(0) as i64);
    let last_minute_in = now >= end && newest >= end - Duration::minutes(1);
    if past_lateness || last_minute_in {
        return Ok(None);
    }
    let stored_here = client
        .query_opt(
            "SELECT 1 FROM derived_data_bars WHERE canonical_symbol = $1 AND timeframe = $2
               AND ts_utc = $3 AND deleted_at IS NULL",
            &[&symbol, &tf.as_str(), &start],
        )
        .await
        .with_context(|| format!("checking the {symbol} {tf} bar at {start}"))?;
    if stored_here.is_some() {
        return Ok(None);
    }

    let sources = source_bars(client, symbol, cal, source, start, end, newest).await?;
    let Some((bar, candles)) = combine(start, &sources) else {
        return Ok(None);
    };
    let expected = expected_candles(cal, tf, start);
    Ok(Some(BarRecord {
        ts_utc: bar.ts,
        open: bar.open,
        high: bar.high,
        low: bar.low,
        close: bar.close,
        vol: bar.vol,
        vwap: bar.vwap,
        trade_count: bar.trade_count,
        source_timeframe: Some(source.as_str().to_string()),
        source_candles: Some(candles),
        expected_candles: Some(expected),
        quality_score: quality(candles, expected),
        is_partial: true,
    }))
}

type BarsFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<Bar>>> + Send + 'a>>;

/// Bars of timeframe `tf` with start in [from, to) as a source of the next
/// timeframe: the stored final ones, then after the last of them the buckets
/// computed from `tf`'s own source (recursively down to 1m). `newest` is the
/// newest 1m bar: a computed bucket ending after it is still filling.
fn source_bars<'a>(
    client: &'a Client,
    symbol: &'a str,
    cal: Calendar,
    tf: Timeframe,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    newest: DateTime<Utc>,
) -> BarsFuture<'a> {
    Box::pin(async move {
        let mut bars = read_source_rows(client, symbol, tf, from, to).await?;
        let Some(below) = tf.source() else {
            return Ok(bars);
        };
        let computed_from = match bars.last() {
            Some(last) => bucket_end(cal, tf, last.ts),
            None => from,
        };
        if computed_from >= to {
            return Ok(bars);
        }
        let lower = source_bars(client, symbol, cal, below, computed_from, to, newest).await?;
        let mut folder = Folder::new(cal, tf);
        let mut windows: Vec<_> = lower.iter().filter_map(|b| folder.push(b)).collect();
        windows.extend(folder.finish());
        for w in windows {
            let complete = newest >= w.end - Duration::minutes(1);
            if complete {
                bars.extend(w.bar.map(|d| d.bar));
            } else {
                let inside: Vec<Bar> = lower
                    .iter()
                    .filter(|b| b.ts >= w.start && b.ts < w.end)
                    .cloned()
                    .collect();
                bars.extend(combine(w.start, &inside).map(|(bar, _)| bar));
            }
        }
        Ok(bars)
    })
}

/// Stored source rows of `tf` for `symbol` in [from, to), in time order.
async fn read_source_rows(
    client: &Client,
    symbol: &str,
    tf: Timeframe,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Bar>> {
    let sql = if tf == Timeframe::M1 {
        "SELECT ts_utc, open, high, low, close, vol, vwap, trade_count FROM data_bars
         WHERE canonical_symbol = $1 AND timeframe = $2 AND ts_utc >= $3 AND ts_utc < $4
         ORDER BY ts_utc"
    } else {
        "SELECT ts_utc, open, high, low, close, vol, vwap, trade_count FROM derived_data_bars
         WHERE canonical_symbol = $1 AND timeframe = $2 AND ts_utc >= $3 AND ts_utc < $4
           AND deleted_at IS NULL AND NOT is_partial
         ORDER BY ts_utc"
    };
    let rows = client
        .query(sql, &[&symbol, &tf.as_str(), &from, &to])
        .await
        .with_context(|| format!("reading {symbol} {tf} source bars from {from} to {to}"))?;
    Ok(rows.iter().map(Bar::from_row).collect())
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    #[test]
    fn a_bar_start_is_written_as_chrono_writes_an_instant() {
        for raw in [
            "2025-07-01T00:00:00Z",
            "2025-07-01T13:05:00.250Z",
            "2025-07-01T13:05:00.000001Z",
        ] {
            let t: DateTime<Utc> = raw.parse().unwrap();
            let bar = super::BarRecord {
                ts_utc: t,
                open: 1.0,
                high: 1.0,
                low: 1.0,
                close: 1.0,
                vol: 0.0,
                vwap: None,
                trade_count: None,
                source_timeframe: None,
                source_candles: None,
                expected_candles: None,
                quality_score: None,
                is_partial: false,
            };
            let json = serde_json::to_value(&bar).unwrap();
            assert_eq!(json["ts_utc"], serde_json::to_value(t).unwrap(), "{raw}");
        }
    }
}
