//! The merge path: every row (bad ones too) copied into a temporary
//! staging table and merged from there: new bars inserted, identical ones
//! left alone, changed ones revised in place, a bar repeated within the
//! input taken from its last line (and, when its values differ from an
//! earlier line's, reported as a conflict, which `--strict` refuses).

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use super::{
    quarantine_sql, stream, strict_rejection, Conflict, Counts, LoadPath, Loaded, Names, Tally,
    Target, EXAMPLES,
};
use crate::ingest::copy::{Staged, STAGE_TABLE};
use crate::ingest::read::{Chunk, Reading};

/// The merge path.
pub(super) async fn merge(
    client: &mut Client,
    names: &Names,
    mut reading: Reading,
    first: Chunk,
    target: &Target<'_>,
) -> Result<Loaded> {
    let format = first.format;
    let carries = first.carries;
    let source = target.source.unwrap_or(format.name());
    let tx = client
        .transaction()
        .await
        .context("opening a transaction")?;
    tx.batch_execute(STAGE_TABLE)
        .await
        .context("creating the staging table")?;
    let sink = tx
        .copy_in("COPY ingest_stage FROM STDIN (FORMAT binary)")
        .await
        .context("starting COPY into the staging table")?;
    let mut sink = Box::pin(sink);
    let mut tally = Tally::default();
    stream(
        &mut reading,
        first,
        sink.as_mut(),
        &mut Staged,
        &mut tally,
        target.strict,
    )
    .await?;
    let notes = reading.finish().await?;
    if target.strict && tally.bad > 0 {
        drop(sink);
        tx.rollback().await.context("rolling back")?;
        return Err(strict_rejection(&names.label, &tally));
    }
    sink.as_mut()
        .finish()
        .await
        .context("copying rows into the staging table")?;
    let added: i64 = tx
        .query_one(
            &quarantine_sql(
                "SELECT line, raw_line, reason FROM ingest_stage WHERE reason IS NOT NULL",
                names.given_column,
            ),
            &[&names.quarantine, &target.symbol.as_str(), &names.label],
        )
        .await
        .context("writing bad rows to ingest_quarantine")?
        .get(0);
    // Statistics and sort memory let the planner hash-join a big staging
    // table instead of probing the index a million times. The merge needs
    // the row count, the distinct times and the share of good rows; the
    // other columns' statistics would only cost time.
    tx.batch_execute("ANALYZE ingest_stage (ts_utc, reason); SET LOCAL work_mem = '256MB'")
        .await
        .context("preparing the merge")?;
    let bounds = tx
        .query_one(
            "SELECT min(ts_utc), max(ts_utc) FROM ingest_stage WHERE reason IS NULL",
            &[],
        )
        .await
        .context("reading the staged time range")?;
    let (first_ts, last_ts): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
        (bounds.get(0), bounds.get(1));
    // One join of the staged rows with the stored ones finds what is new
    // and what differs (in a reload, usually nothing: the rest of the
    // statement then has no row to touch); a separate UPDATE and INSERT then
    // write those. ON CONFLICT DO UPDATE would lock (and so write) every
    // identical row. Everything sees one snapshot, so a bar is either
    // revised or inserted, never both; the UPDATE compares again, so a row
    // changed meanwhile by another load is compared as it is now, and DO
    // NOTHING covers a concurrent load of the same bars. A stored vwap or
    // trade count stays when the input has no such column ($5, $6: it has).
    let row = tx
        .query_one(
            "WITH latest AS MATERIALIZED (
               SELECT DISTINCT ON (ts_utc) ts_utc, open, high, low, close, vol, vwap, trade_count
               FROM ingest_stage WHERE reason IS NULL
               ORDER BY ts_utc, line DESC
             ), todo AS MATERIALIZED (
               SELECT l.*, d.ts_utc IS NULL AS is_new
               FROM latest l
               LEFT JOIN data_bars d
                 ON d.canonical_symbol = $1 AND d.timeframe = '1m' AND d.ts_utc = l.ts_utc
                AND d.ts_utc BETWEEN $3 AND $4
               WHERE d.ts_utc IS NULL
                  OR (d.open, d.high, d.low, d.close, d.vol, d.vwap, d.trade_count)
                     IS DISTINCT FROM
                     (l.open, l.high, l.low, l.close, l.vol,
                      CASE WHEN $5 THEN l.vwap ELSE d.vwap END,
                      CASE WHEN $6 THEN l.trade_count ELSE d.trade_count END)
             ), revised AS (
               UPDATE data_bars d
                 SET open = l.open, high = l.high, low = l.low, close = l.close, vol = l.vol,
                     vwap = CASE WHEN $5 THEN l.vwap ELSE d.vwap END,
                     trade_count = CASE WHEN $6 THEN l.trade_count ELSE d.trade_count END,
                     source = $2, ingested_at = now()
               FROM todo l
               WHERE NOT l.is_new
                 AND d.canonical_symbol = $1 AND d.timeframe = '1m' AND d.ts_utc = l.ts_utc
                 AND d.ts_utc BETWEEN $3 AND $4
                 AND (d.open, d.high, d.low, d.close, d.vol, d.vwap, d.trade_count)
                     IS DISTINCT FROM
                     (l.open, l.high, l.low, l.close, l.vol,
                      CASE WHEN $5 THEN l.vwap ELSE d.vwap END,
                      CASE WHEN $6 THEN l.trade_count ELSE d.trade_count END)
               RETURNING d.ts_utc
             ), inserted AS (
               INSERT INTO data_bars
                 (canonical_symbol, timeframe, ts_utc, open, high, low, close, vol,
                  vwap, trade_count, source)
               SELECT $1, '1m', l.ts_utc, l.open, l.high, l.low, l.close, l.vol,
                      l.vwap, l.trade_count, $2
               FROM todo l
               WHERE l.is_new
               ON CONFLICT (canonical_symbol, timeframe, ts_utc) DO NOTHING
               RETURNING 1
             )
             SELECT (SELECT count(*) FROM latest), (SELECT count(*) FROM inserted),
                    (SELECT count(*) FROM revised), (SELECT min(ts_utc) FROM revised),
                    (SELECT max(ts_utc) FROM revised)",
            &[
                &target.symbol.as_str(),
                &source,
                &first_ts,
                &last_ts,
                &carries.vwap,
                &carries.trade_count,
            ],
        )
        .await
        .context("merging staged rows into data_bars")?;
    let (distinct, loaded, revised): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    let revised_span = match (row.get(3), row.get(4)) {
        (Some(lo), Some(hi)) => Some((lo, hi)),
        _ => None,
    };
    // Only an input with a minute given twice can hold a conflict.
    let (conflicts, examples) = if tally.good > distinct as u64 {
        same_minute_conflicts(&tx).await?
    } else {
        (0, Vec::new())
    };
    if target.strict && conflicts > 0 {
        tx.rollback().await.context("rolling back")?;
        let mut msg = format!(
            "{} rejected (--strict): {conflicts} minute{} given twice with different values, nothing of it was loaded",
            names.label,
            if conflicts == 1 { "" } else { "s" }
        );
        for c in &examples {
            msg.push_str(&format!(
                "\n  {}:{} and {}:{}: {} differs",
                names.label,
                c.earlier_line,
                names.label,
                c.later_line,
                c.ts.to_rfc3339()
            ));
        }
        anyhow::bail!(msg);
    }
    if target.dry_run {
        tx.rollback().await.context("rolling the dry run back")?;
    } else {
        tx.commit().await.context("committing the load")?;
    }
    let (distinct, loaded, revised) = (distinct as u64, loaded as u64, revised as u64);
    Ok(Loaded {
        format,
        path: LoadPath::Merge,
        counts: Counts {
            rows_read: tally.read,
            loaded,
            revised,
            duplicates: distinct - loaded - revised,
            superseded: tally.good - distinct,
            conflicts,
            quarantined: tally.bad,
            already_quarantined: tally.bad - added as u64,
        },
        bad_rows: tally.examples,
        span: tally.span,
        revised_span,
        notes,
        conflicts: examples,
    })
}

/// Minutes of the staged input given on more than one line where a later
/// line's values differ from an earlier one's: how many, and the first few
/// as (earlier, later) line pairs, the later being the line used.
async fn same_minute_conflicts(
    tx: &tokio_postgres::Transaction<'_>,
) -> Result<(u64, Vec<Conflict>)> {
    let rows = tx
        .query(
            "WITH used AS (
               SELECT DISTINCT ON (ts_utc) ts_utc, line,
                      (open, high, low, close, vol, vwap, trade_count) AS v
               FROM ingest_stage WHERE reason IS NULL
               ORDER BY ts_utc, line DESC
             ), conflict AS (
               SELECT u.ts_utc, max(s.line) AS earlier, u.line AS later
               FROM used u
               JOIN ingest_stage s ON s.ts_utc = u.ts_utc AND s.reason IS NULL AND s.line < u.line
               WHERE (s.open, s.high, s.low, s.close, s.vol, s.vwap, s.trade_count) IS DISTINCT FROM u.v
               GROUP BY u.ts_utc, u.line
             )
             SELECT count(*) OVER (), ts_utc, earlier, later FROM conflict
             ORDER BY ts_utc LIMIT $1",
            &[&(EXAMPLES as i64)],
        )
        .await
        .context("looking for minutes given twice with different values")?;
    let total = rows.first().map_or(0, |r| r.get::<_, i64>(0) as u64);
    let examples = rows
        .iter()
        .map(|r| Conflict {
            ts: r.get(1),
            earlier_line: r.get::<_, i64>(2) as u64,
            later_line: r.get::<_, i64>(3) as u64,
        })
        .collect();
    Ok((total, examples))
}
