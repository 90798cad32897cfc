//! docs/DESIGN.md, "Security of the SQL face", checked on every function
//! it concerns: each SECURITY DEFINER function of the schema as the
//! catalog lists it (so a function added later is covered without being
//! named here), and the functions that must be definers (the checklist's
//! five and the worker's), under whatever overloads exist. Each is
//! SECURITY DEFINER, pins its search_path, gives PUBLIC no EXECUTE and
//! exists once under its name.

use std::collections::BTreeMap;

use super::facts::{Facts, Function};
use super::{Checks, CHECKLIST_FUNCTIONS, OTHER_DEFINER_FUNCTIONS};

fn signature(f: &Function) -> String {
    format!("{}({})", f.name, f.args)
}

/// A failing check names each function; a passing one counts them.
fn push(c: &mut Checks, id: &str, what: &str, f: &Facts, broken: Vec<String>, label: &str) {
    let observed = if broken.is_empty() {
        format!("{} functions", f.functions.len())
    } else {
        format!("{label}: {}", broken.join(", "))
    };
    let title = format!("SQL face security (docs/DESIGN.md): {what}");
    c.push(id, &title, broken.is_empty(), observed);
}

pub(super) fn definer(f: &Facts, c: &mut Checks) {
    let invoker = f
        .functions
        .iter()
        .filter(|func| !func.definer)
        .map(signature)
        .collect();
    let what = "every task function is SECURITY DEFINER";
    push(c, "security.definer", what, f, invoker, "SECURITY INVOKER");
}

/// A search_path is pinned when the function sets one without `$user` (a
/// schema the caller may own).
pub(super) fn search_path(f: &Facts, c: &mut Checks) {
    let unpinned = f
        .functions
        .iter()
        .filter(|func| {
            !func
                .config
                .iter()
                .any(|s| s.starts_with("search_path=") && !s.contains("$user"))
        })
        .map(signature)
        .collect();
    let what = "search_path pinned on each";
    push(c, "security.search_path", what, f, unpinned, "unpinned");
}

pub(super) fn public_execute(f: &Facts, c: &mut Checks) {
    let public = f
        .functions
        .iter()
        .filter(|func| func.public_execute)
        .map(signature)
        .collect();
    let what = "no EXECUTE for PUBLIC";
    push(
        c,
        "security.public_execute",
        what,
        f,
        public,
        "PUBLIC may execute",
    );
}

/// Exactly one function under each name: a stale overload left by a
/// changed signature would keep the old behaviour callable.
pub(super) fn one_each(f: &Facts, c: &mut Checks) {
    let mut counts: BTreeMap<&str, usize> = CHECKLIST_FUNCTIONS
        .iter()
        .map(|(n, _)| *n)
        .chain(OTHER_DEFINER_FUNCTIONS)
        .map(|n| (n, 0))
        .collect();
    for func in &f.functions {
        *counts.entry(func.name.as_str()).or_default() += 1;
    }
    let off: Vec<String> = counts
        .iter()
        .filter(|(_, n)| **n != 1)
        .map(|(name, n)| format!("{name} ×{n}"))
        .collect();
    c.push(
        "security.one_each",
        "SQL face security (docs/DESIGN.md): exactly one function of each name",
        off.is_empty(),
        if off.is_empty() {
            format!("{} names", counts.len())
        } else {
            off.join(", ")
        },
    );
}
