//! Loading one input into `data_bars` in one transaction with binary `COPY`.
//!
//! Two paths. The *new-range* path copies straight into `data_bars`: it is
//! taken when the symbol has no bars in the first batch's time range, and
//! the table's unique key proves the guess — a key violation rolls it back
//! and the input is read again on the merge path. The *merge* path copies
//! every row (bad ones too) into a temporary staging table and merges from
//! there: new bars inserted, identical ones left alone, changed ones
//! revised in place, a bar repeated within the input taken from its last
//! line. Quarantine rows commit with the bars; in `--strict` mode a bad row
//! rolls back the whole input.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::SinkExt;
use indicatif::ProgressBar;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, CopyInSink, Transaction};

use super::copy::{CopyBuf, Direct, Encode, Staged, DIRECT_COLUMNS, STAGE_TABLE};
use super::format::Format;
use super::read::{Chunk, Input, ReadPlan, Reading};
use super::validate::Row;
use crate::assets::Symbol;

/// Bad rows named in messages per input.
pub const EXAMPLES: usize = 10;

/// What happened to the rows of one input (or of all inputs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Rows in the input (blank lines and the CSV header excepted).
    pub rows_read: u64,
    /// New bars inserted.
    pub loaded: u64,
    /// Existing bars whose prices or volume changed, updated in place.
    pub revised: u64,
    /// Rows identical to the stored bar: nothing to do.
    pub duplicates: u64,
    /// Rows repeated later in the same input; the last one was used.
    pub superseded: u64,
    /// Bad rows, kept in `ingest_quarantine`.
    pub quarantined: u64,
    /// Of the bad rows, those an earlier load of the same file had already
    /// put in `ingest_quarantine` (same file, line and text): not added again.
    pub already_quarantined: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.rows_read += o.rows_read;
        self.loaded += o.loaded;
        self.revised += o.revised;
        self.duplicates += o.duplicates;
        self.superseded += o.superseded;
        self.quarantined += o.quarantined;
        self.already_quarantined += o.already_quarantined;
    }
}

/// One bad row, as messages name it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BadRow {
    pub line: u64,
    pub reason: String,
}

/// Which path an input took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadPath {
    NewRange,
    Merge,
}

/// The outcome of loading one input.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub format: Format,
    pub path: LoadPath,
    pub counts: Counts,
    /// The first bad rows.
    pub bad_rows: Vec<BadRow>,
    /// Earliest and latest stamp of the good rows.
    pub span: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Earliest and latest stamp of the revised bars.
    pub revised_span: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// File-level messages of the reader (a header skipped, columns not loaded).
    pub notes: Vec<String>,
}

/// Where the rows go and how bad rows are treated.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub symbol: &'a Symbol,
    /// `data_bars.source`; the format's name when None.
    pub source: Option<&'a str>,
    pub strict: bool,
    /// Work out what would happen, then roll everything back.
    pub dry_run: bool,
}

/// Load one input in one transaction.
pub async fn load(
    client: &mut Client,
    input: &Input,
    plan: ReadPlan,
    target: &Target<'_>,
    progress: Option<&ProgressBar>,
) -> Result<Loaded> {
    let names = Names {
        label: input.label(),
        quarantine: input.quarantine_name(),
        given_column: keeps_path_as_given(client).await?,
    };
    let (reading, first) = start(input, plan, progress).await?;
    if target.dry_run || !input.rereadable() || overlaps(client, target.symbol, &first.rows).await?
    {
        return merge(client, &names, reading, first, target).await;
    }
    if let Some(done) = new_range(client, &names, reading, first, target).await? {
        return Ok(done);
    }
    tracing::info!(
        "{}: bars already stored in its range; merging instead",
        names.label
    );
    if let Some(p) = progress {
        p.set_position(0);
    }
    let (reading, first) = start(input, plan, progress).await?;
    merge(client, &names, reading, first, target).await
}

/// The two names of an input: as the user gave it (messages, and
/// `ingest_quarantine.file_as_given`) and canonical (`ingest_quarantine.file`,
/// which identifies the file whatever folder ingest ran in).
struct Names {
    label: String,
    quarantine: String,
    /// `ingest_quarantine.file_as_given` exists (migration 11): a database
    /// not yet brought up to it still takes bad rows, without that column.
    given_column: bool,
}

/// Whether `ingest_quarantine` has the `file_as_given` column.
async fn keeps_path_as_given(client: &Client) -> Result<bool> {
    crate::migrate::has_column(client, "ingest_quarantine", "file_as_given").await
}

async fn start(
    input: &Input,
    plan: ReadPlan,
    progress: Option<&ProgressBar>,
) -> Result<(Reading, Chunk)> {
    let mut reading = Reading::spawn(input.clone(), plan, progress.cloned());
    match reading.rows.recv().await {
        Some(first) => Ok((reading, first)),
        None => {
            reading.finish().await?;
            bail!("{} has no rows", input.label())
        }
    }
}

/// Whether the symbol has any 1m bar between the earliest and latest good
/// bar of a batch.
async fn overlaps(client: &Client, symbol: &Symbol, rows: &[Row]) -> Result<bool> {
    let stamps = rows.iter().filter_map(|r| match r {
        Row::Good { bar, .. } => Some(bar.ts),
        Row::Bad { .. } => None,
    });
    let (Some(lo), Some(hi)) = (stamps.clone().min(), stamps.max()) else {
        return Ok(false);
    };
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM data_bars
              WHERE canonical_symbol = $1 AND timeframe = '1m' AND ts_utc BETWEEN $2 AND $3)",
            &[&symbol.as_str(), &lo, &hi],
        )
        .await
        .context("looking for stored bars in the input's range")?;
    Ok(row.get(0))
}

/// Counting and remembering bad rows while streaming.
#[derive(Default)]
struct Tally {
    read: u64,
    good: u64,
    bad: u64,
    examples: Vec<BadRow>,
    span: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Tally {
    fn good(&mut self, ts: DateTime<Utc>) {
        self.good += 1;
        self.span = Some(match self.span {
            Some((lo, hi)) => (lo.min(ts), hi.max(ts)),
            None => (ts, ts),
        });
    }

    fn bad(&mut self, line: u64, reason: &str) {
        self.bad += 1;
        if self.examples.len() < EXAMPLES {
            self.examples.push(BadRow {
                line,
                reason: reason.to_string(),
            });
        }
    }
}

/// Stream every chunk into `sink`. Returns false when the encoder gave up.
async fn stream(
    reading: &mut Reading,
    first: Chunk,
    mut sink: std::pin::Pin<&mut CopyInSink<Bytes>>,
    encode: &mut impl Encode,
    tally: &mut Tally,
    strict: bool,
) -> Result<bool> {
    let mut buf = CopyBuf::with_header();
    let mut next = Some(first);
    loop {
        let chunk = match next.take() {
            Some(c) => c,
            None => match reading.rows.recv().await {
                Some(c) => c,
                None => break,
            },
        };
        for row in &chunk.rows {
            tally.read += 1;
            match row {
                Row::Good { line, bar } => {
                    tally.good(bar.ts);
                    if !(strict && tally.bad > 0) {
                        encode.good(&mut buf, *line, bar);
                    }
                }
                Row::Bad { line, raw, reason } => {
                    tally.bad(*line, reason);
                    if !strict && !encode.bad(&mut buf, *line, raw, reason) {
                        return Ok(false);
                    }
                }
            }
        }
        // Strict mode keeps reading to count the bad rows but sends nothing more.
        let rejecting = strict && tally.bad > 0;
        if !rejecting && !buf.is_empty() {
            sink.send(buf.take())
                .await
                .context("sending rows to the database")?;
        }
    }
    buf.trailer();
    if !(strict && tally.bad > 0) {
        sink.send(buf.take())
            .await
            .context("sending rows to the database")?;
    }
    Ok(true)
}

fn strict_rejection(label: &str, tally: &Tally) -> anyhow::Error {
    let mut msg = format!(
        "{label} rejected (--strict): {} bad row{} of {}, nothing of it was loaded",
        tally.bad,
        if tally.bad == 1 { "" } else { "s" },
        tally.read
    );
    for b in &tally.examples {
        msg.push_str(&format!("\n  {label}:{}: {}", b.line, b.reason));
    }
    anyhow::anyhow!(msg)
}

/// The new-range path. None when the input must go the merge path.
async fn new_range(
    client: &mut Client,
    names: &Names,
    mut reading: Reading,
    first: Chunk,
    target: &Target<'_>,
) -> Result<Option<Loaded>> {
    let format = first.format;
    let source = target.source.unwrap_or(format.name());
    let tx = client
        .transaction()
        .await
        .context("opening a transaction")?;
    // The change-tracking trigger reads the statement's rows back from its
    // transition table, which spills to disk beyond work_mem (4 MB by
    // default, about 35,000 rows): keep a file's rows in memory.
    tx.batch_execute("SET LOCAL work_mem = '128MB'")
        .await
        .context("sizing the load's memory")?;
    let sink = tx
        .copy_in(&format!(
            "COPY data_bars ({DIRECT_COLUMNS}) FROM STDIN (FORMAT binary)"
        ))
        .await
        .context("starting COPY into data_bars")?;
    let mut sink = Box::pin(sink);
    let mut direct = Direct {
        symbol: target.symbol.as_str(),
        source,
        held: Vec::new(),
    };
    let mut tally = Tally::default();
    let complete = stream(
        &mut reading,
        first,
        sink.as_mut(),
        &mut direct,
        &mut tally,
        target.strict,
    )
    .await?;
    if !complete {
        drop(sink);
        tx.rollback().await.context("rolling back")?;
        reading.finish().await?;
        return Ok(None);
    }
    let notes = reading.finish().await?;
    if target.strict && tally.bad > 0 {
        drop(sink);
        tx.rollback().await.context("rolling back")?;
        return Err(strict_rejection(&names.label, &tally));
    }
    match sink.as_mut().finish().await {
        Ok(_) => {}
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            tx.rollback().await.context("rolling back")?;
            return Ok(None);
        }
        Err(e) => return Err(e).context("copying rows into data_bars"),
    }
    let added = quarantine_held(&tx, names, target.symbol, &direct.held).await?;
    tx.commit().await.context("committing the load")?;
    Ok(Some(Loaded {
        format,
        path: LoadPath::NewRange,
        counts: Counts {
            rows_read: tally.read,
            loaded: tally.good,
            quarantined: tally.bad,
            already_quarantined: tally.bad - added,
            ..Counts::default()
        },
        bad_rows: tally.examples,
        span: tally.span,
        revised_span: None,
        notes,
    }))
}

/// The statement that writes the bad rows `bad` (an SQL query of line,
/// raw_line, reason) of file `$1` (canonical; `$3` as the user gave it) and
/// symbol `$2` to `ingest_quarantine`,
/// leaving out those already there from an earlier load of the same file
/// (same file, symbol, line and text; the reason is left out of the
/// identity, as it may name the time of the load), and counts the rows added.
fn quarantine_sql(bad: &str, given_column: bool) -> String {
    // Without the column, $3 is still named (its type given, its value
    // unused) so the parameters keep their places.
    let (column, value, named) = if given_column {
        (", file_as_given", ", $3", "")
    } else {
        ("", "", "$3::text IS NULL OR ")
    };
    format!(
        "WITH bad AS ({bad}), added AS (
           INSERT INTO ingest_quarantine (file, line, canonical_symbol, raw_line, reason{column})
           SELECT $1, b.line, $2, b.raw_line, b.reason{value} FROM bad b
           WHERE ({named}true) AND NOT EXISTS (
             SELECT 1 FROM ingest_quarantine q
             WHERE q.file = $1 AND q.line = b.line
               AND q.canonical_symbol = $2 AND q.raw_line = b.raw_line)
           ORDER BY b.line
           RETURNING 1)
         SELECT count(*) FROM added"
    )
}

/// Quarantine the bad rows held on the new-range path; returns how many
/// were added.
async fn quarantine_held(
    tx: &Transaction<'_>,
    file: &Names,
    symbol: &Symbol,
    held: &[(i64, String, String)],
) -> Result<u64> {
    if held.is_empty() {
        return Ok(0);
    }
    let lines: Vec<i64> = held.iter().map(|h| h.0).collect();
    let raws: Vec<&str> = held.iter().map(|h| h.1.as_str()).collect();
    let reasons: Vec<&str> = held.iter().map(|h| h.2.as_str()).collect();
    let added: i64 = tx
        .query_one(
            &quarantine_sql(
                "SELECT * FROM unnest($4::bigint[], $5::text[], $6::text[])
                   AS q(line, raw_line, reason)",
                file.given_column,
            ),
            &[
                &file.quarantine,
                &symbol.as_str(),
                &file.label,
                &lines,
                &raws,
                &reasons,
            ],
        )
        .await
        .context("writing bad rows to ingest_quarantine")?
        .get(0);
    Ok(added as u64)
}

/// The merge path.
async fn merge(
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
            quarantined: tally.bad,
            already_quarantined: tally.bad - added as u64,
        },
        bad_rows: tally.examples,
        span: tally.span,
        revised_span,
        notes,
    })
}
