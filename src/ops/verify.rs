//! `barkeep verify` as a service: the checklist's Steps 2–6 and its 12
//! success criteria (`checklist`), the security properties of the SQL
//! face (docs/DESIGN.md, `security`), and (`--deep`) a recomputation of
//! stored bars from their sources ([`deep`]). Each check is PASS, FAIL or
//! SKIP with the value observed.
//!
//! verify reads what it judges first (`facts`), then runs `CHECKS`, a
//! list of small functions in report order, each adding its rows.
//! Nothing here writes: the sync of Step 6 runs in a rolled-back transaction.

use anyhow::Result;
use tokio_postgres::Client;

mod checklist;
pub mod deep;
mod facts;
mod security;

use facts::Facts;

pub use deep::{DeepReport, DeepSettings};

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Outcome {
    Pass,
    Fail,
    Skip,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "SKIP",
        }
    }
}

/// One check and what it saw.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// Stable name: `step2`, `step5.enabled`, `criterion9`, `security.definer`…
    pub id: String,
    pub title: String,
    pub outcome: Outcome,
    pub observed: String,
}

/// What to verify beyond the checklist.
#[derive(Debug, Clone, Default)]
pub struct VerifySettings {
    /// Recompute stored bars from their sources.
    pub deep: Option<DeepSettings>,
}

/// What `barkeep verify` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyReport {
    pub checks: Vec<Check>,
    pub deep: Option<DeepReport>,
    /// True when every check passed (none failed, none skipped) and the deep
    /// check found no difference.
    pub passed: bool,
}

/// The checklist's five functions with their argument types.
pub const CHECKLIST_FUNCTIONS: [(&str, &str); 5] = [
    ("agg_bootstrap_cursor", "text, text, timestamp with time zone"),
    (
        "catchup_aggregation_range",
        "text, text, timestamp with time zone, integer, timestamp with time zone, integer, boolean",
    ),
    (
        "agg_finish",
        "text, text, boolean, timestamp with time zone, jsonb, text, text, timestamp with time zone, integer",
    ),
    ("agg_get_due_tasks", "text, timestamp with time zone, integer, integer"),
    ("sync_agg_state_from_registry", "text, timestamp with time zone"),
];

/// Functions that write task state besides the five: they must be SECURITY
/// DEFINER (docs/DESIGN.md). The other security properties hold for every
/// definer function the catalog lists, named here or not.
const OTHER_DEFINER_FUNCTIONS: [&str; 2] = ["agg_claim_tasks", "agg_heartbeat"];

struct Checks(Vec<Check>);

impl Checks {
    fn push(&mut self, id: &str, title: &str, pass: bool, observed: impl Into<String>) {
        self.0.push(Check {
            id: id.into(),
            title: title.into(),
            outcome: if pass { Outcome::Pass } else { Outcome::Fail },
            observed: observed.into(),
        });
    }

    fn skip(&mut self, id: &str, title: &str, observed: impl Into<String>) {
        self.0.push(Check {
            id: id.into(),
            title: title.into(),
            outcome: Outcome::Skip,
            observed: observed.into(),
        });
    }

    /// Repeat an earlier check's outcome under a criterion's name.
    fn same_as(&mut self, id: &str, title: &str, earlier: &str) {
        if let Some(c) = self.0.iter().find(|c| c.id == earlier).cloned() {
            self.0.push(Check {
                id: id.into(),
                title: title.into(),
                outcome: c.outcome,
                observed: format!("{} (as {earlier})", c.observed),
            });
        }
    }
}

/// Items joined with ", ", at most `max` of them.
fn list(items: &[String], max: usize) -> String {
    if items.len() <= max {
        items.join(", ")
    } else {
        format!("{}, … ({} in all)", items[..max].join(", "), items.len())
    }
}

/// A check: judges the facts and adds its rows to the report.
type CheckFn = fn(&Facts, &mut Checks);

/// Every check, in report order (the `criterionN` rows that repeat a step
/// come after the step they repeat).
const CHECKS: &[CheckFn] = &[
    checklist::step2,
    checklist::step3,
    checklist::step4,
    checklist::step5_start_set,
    checklist::step5_enabled,
    checklist::step5_priority,
    checklist::step5_hard_failed,
    checklist::step6_bootstrap,
    checklist::step6_due_tasks,
    checklist::step6_sync,
    checklist::criterion1,
    checklist::criterion2,
    checklist::criterion3,
    checklist::criterion4,
    checklist::criterion5,
    checklist::criterion6,
    checklist::criterion7,
    checklist::criterion8,
    checklist::criterion9,
    checklist::criterion10,
    checklist::criterion11,
    checklist::criterion12,
    security::definer,
    security::search_path,
    security::public_execute,
    security::one_each,
];

/// Run every check (and the deep check when asked).
pub async fn verify(client: &Client, settings: &VerifySettings) -> Result<VerifyReport> {
    crate::migrate::require_migrated(client).await?;
    let facts = Facts::read(client).await?;
    let mut c = Checks(Vec::new());
    for check in CHECKS {
        check(&facts, &mut c);
    }
    let deep = match &settings.deep {
        Some(d) => Some(deep::deep(client, d).await?),
        None => None,
    };
    // A skipped check is not a passed one: a database without tasks or runs
    // has not met the criteria yet, and its SKIP lines say what to run.
    let passed = c.0.iter().all(|k| k.outcome == Outcome::Pass)
        && deep.as_ref().is_none_or(|d| d.differences.is_empty());
    Ok(VerifyReport {
        checks: c.0,
        deep,
        passed,
    })
}
