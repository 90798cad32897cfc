//! Reading one input (a file or standard input) on a blocking thread: sniff
//! the format, parse and validate every line, and hand rows to the loader
//! in bounded batches, so memory stays flat whatever the file's size.
//! Lines are read as bytes: one line of bad bytes is one bad row, never the
//! end of the file, and a line longer than `LINE_CAP` (64 KiB) is one bad row read
//! past without being held in memory.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::rc::Rc;

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use indicatif::ProgressBar;
use tokio::sync::mpsc;

use super::csv_layout::{Carries, CsvLayout};
use super::format::{self, Format, Zone};
use super::lines::{read_line, CappedLines, Line, Lines, LINE_CAP};
use super::validate::{self, Row};

/// Rows per batch handed to the loader.
const BATCH_ROWS: usize = 8192;
/// Batches in flight between the reader and the loader.
const BATCHES_IN_FLIGHT: usize = 4;

/// Where rows come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Stdin,
    File(PathBuf),
}

impl Input {
    /// `-` means standard input.
    pub fn from_arg(path: &std::path::Path) -> Self {
        if path.as_os_str() == "-" {
            Input::Stdin
        } else {
            Input::File(path.to_path_buf())
        }
    }

    /// How messages name this input: the path as the user gave it.
    pub fn label(&self) -> String {
        match self {
            Input::Stdin => "<stdin>".to_string(),
            Input::File(p) => p.display().to_string(),
        }
    }

    /// How `ingest_quarantine.file` names this input: the absolute path with
    /// symbolic links resolved, so the same file is one name whatever folder
    /// ingest ran in (a re-ingest finds its earlier rows, and `quarantine
    /// list --file` finds them from anywhere).
    pub fn quarantine_name(&self) -> String {
        match self {
            Input::Stdin => "<stdin>".to_string(),
            Input::File(p) => canonical_path(p),
        }
    }

    /// Whether the input can be read a second time.
    pub fn rereadable(&self) -> bool {
        matches!(self, Input::File(_))
    }

    /// Size in bytes, when known up front.
    pub fn size(&self) -> Option<u64> {
        match self {
            Input::Stdin => None,
            Input::File(p) => std::fs::metadata(p).ok().map(|m| m.len()),
        }
    }

    /// Open for reading; a missing file is an error naming it.
    pub fn open(&self) -> Result<Box<dyn Read + Send>> {
        match self {
            Input::Stdin => Ok(Box::new(std::io::stdin())),
            Input::File(p) => {
                let file = std::fs::File::open(p)
                    .with_context(|| format!("cannot open {}", p.display()))?;
                if file.metadata().is_ok_and(|m| m.is_dir()) {
                    return Err(anyhow!("{} is a directory, not a file", p.display()));
                }
                Ok(Box::new(file))
            }
        }
    }
}

/// `path` made absolute with symbolic links resolved; as absolute as it
/// can be made when the file is gone.
pub fn canonical_path(path: &std::path::Path) -> String {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// How to read an input.
#[derive(Debug, Clone, Copy)]
pub struct ReadPlan {
    pub format: Format,
    /// Zone of MT4 stamps; an MT4 input without one is refused (its stamps
    /// are broker time, and guessing UTC would shift every bar).
    pub zone: Option<Zone>,
    /// The pass of a repeated local hour when the file does not show it.
    pub ambiguous: Option<format::Pass>,
    /// Bars starting after this are in the future.
    pub now: DateTime<Utc>,
    /// Bars starting before this are implausibly old.
    pub not_before: DateTime<Utc>,
}

/// A batch of rows, with the format the input turned out to be in.
#[derive(Debug)]
pub struct Chunk {
    pub format: Format,
    /// Which optional columns the input has.
    pub carries: Carries,
    pub rows: Vec<Row>,
}

/// A running reader: batches arrive on `rows`; `finish` tells whether the
/// input was read to its end without an error, and hands back the
/// file-level notes (a header skipped, columns not loaded).
pub struct Reading {
    pub rows: mpsc::Receiver<Chunk>,
    thread: tokio::task::JoinHandle<Result<Vec<String>>>,
}

impl Reading {
    /// Start reading `input` on a blocking thread.
    pub fn spawn(input: Input, plan: ReadPlan, progress: Option<ProgressBar>) -> Reading {
        let (tx, rows) = mpsc::channel(BATCHES_IN_FLIGHT);
        let thread = tokio::task::spawn_blocking(move || {
            let label = input.label();
            let mut notes = Vec::new();
            read_all(&input, plan, &tx, progress.as_ref(), &mut notes)
                .with_context(|| format!("reading {label}"))?;
            Ok(notes.into_iter().map(|n| format!("{label}: {n}")).collect())
        });
        Reading { rows, thread }
    }

    /// Wait for the reader to end and report its error, if any, or its
    /// notes. Dropping the receiver first stops a reader that is still going.
    pub async fn finish(self) -> Result<Vec<String>> {
        drop(self.rows);
        self.thread.await.context("the reader thread failed")?
    }
}

/// Collects rows into batches and sends them; false once the loader has
/// stopped listening.
struct Batcher<'a> {
    format: Format,
    carries: Carries,
    rows: Vec<Row>,
    tx: &'a mpsc::Sender<Chunk>,
}

impl Batcher<'_> {
    fn push(&mut self, row: Row) -> bool {
        self.rows.push(row);
        if self.rows.len() >= BATCH_ROWS {
            return self.flush();
        }
        true
    }

    fn flush(&mut self) -> bool {
        if self.rows.is_empty() {
            return true;
        }
        let rows = std::mem::replace(&mut self.rows, Vec::with_capacity(BATCH_ROWS));
        self.tx
            .blocking_send(Chunk {
                format: self.format,
                carries: self.carries,
                rows,
            })
            .is_ok()
    }
}

fn read_all(
    input: &Input,
    plan: ReadPlan,
    tx: &mpsc::Sender<Chunk>,
    progress: Option<&ProgressBar>,
    notes: &mut Vec<String>,
) -> Result<()> {
    let mut reader = BufReader::with_capacity(1 << 18, input.open()?);
    let mut first = Line::default();
    read_line(&mut reader, &mut first).context("reading the first line")?;
    if first.consumed == 0 {
        return Ok(()); // the loader reports the empty input
    }
    if let Some(rest) = first.bytes.strip_prefix(b"\xEF\xBB\xBF") {
        first.bytes = rest.to_vec();
    }
    let mut format = match plan.format {
        Format::Auto => Format::sniff(&first.bytes).ok_or_else(|| {
            anyhow!(
                "cannot tell the format from the first line {:?}; give --format histdata, mt4 or csv",
                validate::raw_text(&first.bytes)
            )
        })?,
        given => given,
    };
    if format == Format::Csv && first.overlong {
        bail!(
            "line 1 is {} bytes long: not the header of a bar file (at most {LINE_CAP} bytes)",
            first.length
        );
    }
    // A header over the rows of a format that has none (HistData, MT4): one
    // message for the file, not one quarantined row per line.
    if (first.bytes.first().is_some_and(u8::is_ascii_alphabetic) && format != Format::Csv)
        || (format == Format::Csv && plan.format == Format::Auto)
    {
        let mut second = Line::default();
        read_line(&mut reader, &mut second).context("reading the second line")?;
        let rows_format = match format {
            Format::Csv if !second.overlong => {
                Format::sniff(&second.bytes).filter(|f| *f != Format::Csv)
            }
            Format::Csv => None,
            headerless => Some(headerless),
        };
        if let Some(rows_format) = rows_format {
            notes.push(format!(
                "line 1 {:?} is a header, but {} files have none: line 1 skipped",
                validate::raw_text(&first.bytes),
                rows_format.name()
            ));
            format = rows_format;
            // A blank line keeps the numbering of the lines below.
            first = Line {
                bytes: b"\n".to_vec(),
                consumed: 1,
                length: 0,
                overlong: false,
            };
        }
        let lines = Lines {
            pending: VecDeque::from([first, second]),
            rest: reader,
        };
        return read_body(lines, format, plan, tx, progress, notes);
    }
    let lines = Lines {
        pending: VecDeque::from([first]),
        rest: reader,
    };
    read_body(lines, format, plan, tx, progress, notes)
}

/// Read the lines after the format is known.
fn read_body(
    lines: Lines<impl BufRead>,
    format: Format,
    plan: ReadPlan,
    tx: &mpsc::Sender<Chunk>,
    progress: Option<&ProgressBar>,
    notes: &mut Vec<String>,
) -> Result<()> {
    if format == Format::Mt4 && plan.zone.is_none() {
        bail!(
            "MT4 stamps are the broker's server time: give --tz (an IANA zone such as \
             Europe/Athens, an offset such as +02:00, or UTC if the server runs on UTC)"
        );
    }
    let mut batcher = Batcher {
        format,
        carries: Carries::default(),
        rows: Vec::with_capacity(BATCH_ROWS),
        tx,
    };
    if format == Format::Csv {
        read_csv(lines, plan, &mut batcher, progress, notes)?;
    } else {
        read_lines(lines, plan, &mut batcher, progress)?;
    }
    batcher.flush();
    Ok(())
}

/// HistData and MT4: one bar per line.
fn read_lines(
    mut lines: Lines<impl BufRead>,
    plan: ReadPlan,
    batcher: &mut Batcher<'_>,
    progress: Option<&ProgressBar>,
) -> Result<()> {
    let mut buf = Line::default();
    let mut line = 0u64;
    let mut previous = None;
    loop {
        lines
            .next_into(&mut buf)
            .with_context(|| format!("reading line {}", line + 1))?;
        if buf.consumed == 0 {
            return Ok(());
        }
        line += 1;
        if let Some(p) = progress {
            p.inc(buf.consumed as u64);
        }
        let row = if buf.overlong {
            Row::Bad {
                line,
                raw: validate::raw_text(&buf.bytes),
                reason: buf.overlong_reason(),
            }
        } else {
            let text = buf.bytes.trim_ascii();
            if text.is_empty() {
                continue;
            }
            let parsed = validate::utf8(text)
                .and_then(|s| match batcher.format {
                    Format::Mt4 => format::mt4_line(
                        s,
                        &plan.zone.unwrap_or_default(),
                        previous,
                        plan.ambiguous,
                        plan.now,
                    ),
                    _ => format::histdata_line(s, plan.now),
                })
                .and_then(|bar| validate::not_before(bar, plan.not_before));
            match parsed {
                Ok(bar) => {
                    previous = Some(bar.ts);
                    Row::Good { line, bar }
                }
                Err(reason) => Row::Bad {
                    line,
                    raw: validate::raw_text(&buf.bytes),
                    reason,
                },
            }
        };
        if !batcher.push(row) {
            return Ok(());
        }
    }
}

/// Headed CSV through the `csv` crate (quoting, CRLF), as raw bytes, with
/// lines longer than [`LINE_CAP`] taken out before it sees them.
fn read_csv(
    lines: Lines<impl BufRead>,
    plan: ReadPlan,
    batcher: &mut Batcher<'_>,
    progress: Option<&ProgressBar>,
    notes: &mut Vec<String>,
) -> Result<()> {
    let overlong: Rc<RefCell<VecDeque<(u64, Line)>>> = Rc::default();
    let capped = CappedLines {
        lines,
        line: Line::default(),
        at: 0,
        number: 0,
        overlong: Rc::clone(&overlong),
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(capped);
    let mut record = csv::ByteRecord::new();
    if !reader
        .read_byte_record(&mut record)
        .context("reading the header")?
    {
        return Ok(());
    }
    let header: Vec<String> = record
        .iter()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    let layout = CsvLayout::from_header(&header).map_err(|e| anyhow!("line 1: {e}"))?;
    batcher.carries = layout.carries();
    if !layout.ignored.is_empty() {
        notes.push(format!(
            "columns not loaded (data_bars has no place for them): {}",
            layout.ignored.join(", ")
        ));
    }
    // Overlong lines noted by the capped reader before `line`, as bad rows.
    let drain = |before: u64, batcher: &mut Batcher<'_>| -> bool {
        loop {
            let next = {
                let mut queue = overlong.borrow_mut();
                match queue.front() {
                    Some((n, _)) if *n < before => queue.pop_front(),
                    _ => None,
                }
            };
            let Some((line, long)) = next else {
                return true;
            };
            let row = Row::Bad {
                line,
                raw: validate::raw_text(&long.bytes),
                reason: long.overlong_reason(),
            };
            if !batcher.push(row) {
                return false;
            }
        }
    };
    while reader
        .read_byte_record(&mut record)
        .context("reading a CSV record")?
    {
        let position = record.position();
        let line = position.map_or(0, |p| p.line());
        if let (Some(p), Some(at)) = (progress, position) {
            p.set_position(at.byte());
        }
        if !drain(line, batcher) {
            return Ok(());
        }
        let parsed = record
            .iter()
            .map(validate::utf8)
            .collect::<Result<Vec<&str>, String>>()
            .and_then(|fields| layout.record(&fields, plan.now))
            .and_then(|bar| validate::not_before(bar, plan.not_before));
        let row = match parsed {
            Ok(bar) => Row::Good { line, bar },
            Err(reason) => Row::Bad {
                line,
                raw: validate::raw_text(&joined(&record)),
                reason,
            },
        };
        if !batcher.push(row) {
            return Ok(());
        }
    }
    drain(u64::MAX, batcher);
    Ok(())
}

/// The fields of a record joined by commas: the quarantine's best picture
/// of a CSV line once the reader has split it.
fn joined(record: &csv::ByteRecord) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, field) in record.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(field);
    }
    out
}
