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
//! - [`left_out`]: 1m rows before a pinned start, which no bar covers.
//! - [`instant`]: instants in JSON as chrono writes them, without its
//!   formatter (reports list thousands).

pub mod alerts;
pub mod backup;
pub mod history;
pub mod instant;
pub mod left_out;
pub mod quality;
pub mod quarantine;
pub mod status;
pub mod verify;

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
