//! Operating barkeep: the checklist's monitoring queries turned into
//! services an operator, cron, a monitoring system or the HTTP dashboard
//! calls. Each service takes a `&Client` and a settings struct and returns a
//! typed, serialisable report; none of them prints.
//!
//! - [`status`]: every task's state, cursor, lag and streaks, plus the quarantine.
//! - [`alerts`]: the checklist's three alert conditions, stalled workers and
//!   tasks far behind their data, with a severity each.
//! - [`quality`]: the checklist's daily quality query and minute coverage.
//! - [`quarantine`]: listing and purging `ingest_quarantine`.
//! - [`verify`]: Steps 2–6, the 12 success criteria, the SQL face's security and
//!   the deep recomputation of stored bars.
//! - [`backup`]: task state and registry to a JSON file and back.
//! - [`history`]: pruning retired bar versions and 1m revisions, and
//!   refusing as-of reads before a prune.
//! - [`instant`]: instants in JSON as chrono writes them, without its
//!   formatter (reports list thousands).

pub mod alerts;
pub mod backup;
pub mod history;
pub mod instant;
pub mod quality;
pub mod quarantine;
pub mod status;
pub mod verify;

use anyhow::{bail, Context, Result};
use tokio_postgres::Client;

/// A mistake in what the user asked for (an unknown symbol, a bad
/// combination of flags); the command line exits 2 for it, as for clap's own
/// usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Refuse with the next step to take when the database has no barkeep
/// schema yet, instead of letting a query fail on a missing table.
pub async fn require_migrated(client: &Client) -> Result<()> {
    let row = client
        .query_one(
            // The catalog, not information_schema: a role without rights on
            // the table (the ingest role) still sees that it exists.
            "SELECT to_regclass('data_agg_state') IS NOT NULL,
                    EXISTS (SELECT 1 FROM pg_attribute
                            WHERE attrelid = to_regclass('data_agg_state')
                              AND attname = 'agg_start_utc' AND NOT attisdropped)",
            &[],
        )
        .await
        .context("looking for barkeep's tables")?;
    let (tables, phase5): (bool, bool) = (row.get(0), row.get(1));
    if !tables || !phase5 {
        bail!("the database is not migrated: run `barkeep db up` first");
    }
    Ok(())
}

/// A count and its noun, singular for one: `counted(1, "row")` is "1 row",
/// `counted(3, "row")` "3 rows".
pub fn counted(n: impl std::fmt::Display, noun: &str) -> String {
    let n = n.to_string();
    let s = if n == "1" { "" } else { "s" };
    format!("{n} {noun}{s}")
}

/// Shorten a text to at most `max` characters on one line, marking the cut.
pub fn shorten(text: &str, max: usize) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::{counted, shorten};

    #[test]
    fn counted_is_singular_for_one_only() {
        assert_eq!(counted(1, "row"), "1 row");
        assert_eq!(counted(0, "row"), "0 rows");
        assert_eq!(counted(2_i32, "quarantined row"), "2 quarantined rows");
    }

    #[test]
    fn shorten_keeps_short_text_and_marks_a_cut() {
        assert_eq!(shorten("a\n  b", 10), "a b");
        assert_eq!(shorten("abcdefghij", 5), "abcd…");
    }
}
