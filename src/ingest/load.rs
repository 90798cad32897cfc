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
//! rolls back the whole input. Each path is a file of its own
//! (`load/new_range.rs`, `load/merge.rs`); this one holds what they share.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::SinkExt;
use indicatif::ProgressBar;

use tokio_postgres::{Client, CopyInSink};

use super::copy::{CopyBuf, Encode};
use super::format::Format;
use super::read::{Chunk, Input, ReadPlan, Reading};
use super::validate::Row;
use crate::model::Symbol;

mod merge;
mod new_range;

use merge::merge;
use new_range::new_range;

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
    /// Minutes given twice in the same input with different values (the
    /// last was used; `--strict` refuses the input).
    pub conflicts: u64,
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
        self.conflicts += o.conflicts;
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

/// A minute given twice in one input with different values: the later
/// line is the one used, the earlier the last one that differs from it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Conflict {
    pub ts: DateTime<Utc>,
    pub earlier_line: u64,
    pub later_line: u64,
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
    /// The first same-minute conflicts.
    pub conflicts: Vec<Conflict>,
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
