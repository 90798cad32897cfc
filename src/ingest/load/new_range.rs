//! The new-range path: rows copied straight into `data_bars` with binary
//! `COPY`, bad rows held and quarantined with them. Taken when the symbol
//! has no bars in the first batch's range; a unique-key violation proves
//! the guess wrong, rolls back and sends the input to the merge path.

use anyhow::{Context, Result};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Transaction};

use super::{
    quarantine_sql, stream, strict_rejection, Counts, LoadPath, Loaded, Names, Tally, Target,
};
use crate::ingest::copy::{Direct, DIRECT_COLUMNS};
use crate::ingest::read::{Chunk, Reading};
use crate::model::Symbol;

/// The new-range path. None when the input must go the merge path.
pub(super) async fn new_range(
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
        // A minute given twice breaks the unique key: such an input merges.
        conflicts: Vec::new(),
    }))
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
