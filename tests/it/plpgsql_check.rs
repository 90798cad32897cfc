//! Every PL/pgSQL function barkeep installs passes `plpgsql_check` (the
//! Debian package postgresql-15-plpgsql-check; `.ci/run` installs it): the
//! function list is read from the catalog (every plpgsql function in the
//! public schema, so a new one is checked without touching this file), and
//! each is checked with its trigger table where it is a trigger function.
//!
//! Failures: errors, warnings and extra warnings (unused or never-read
//! variables, shadowed names, implicit casts, unsafe dynamic SQL). Not
//! failures, being informational only: performance hints (`performance`:
//! e.g. a cast that would be cheaper spelled out), and the checker's note
//! that it cannot see into a dynamic statement ("cannot determinate a
//! result of dynamic SQL": the change-tracking trigger builds its queries
//! over the transition tables of each event) — neither says anything about
//! the code's correctness. A function may turn its extra warnings off with
//! a `@plpgsql_check_options` comment that says why (agg_bootstrap_cursor's
//! unused `now`, kept for the checklist's call shape).

use crate::common::TestDb;

#[tokio::test]
async fn every_plpgsql_function_passes_plpgsql_check() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    if let Err(e) = c
        .batch_execute("CREATE EXTENSION IF NOT EXISTS plpgsql_check")
        .await
    {
        // Never skipped: on CI the package is installed by .ci/run; here
        // the message says what to install.
        panic!(
            "plpgsql_check is not available ({e}); install postgresql-15-plpgsql-check (CI={:?})",
            std::env::var("CI").ok()
        );
    }
    let functions: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
             WHERE l.lanname = 'plpgsql' AND p.pronamespace = 'public'::regnamespace",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        functions > 20,
        "barkeep's functions are installed: {functions}"
    );
    let findings = c
        .query(
            "WITH f AS (
               SELECT p.oid, p.oid::regprocedure::text AS name,
                      -- A trigger function is checked against a table it fires on.
                      (SELECT t.tgrelid FROM pg_trigger t WHERE t.tgfoid = p.oid
                       ORDER BY t.tgname LIMIT 1) AS relid,
                      (SELECT t.tgoldtable FROM pg_trigger t WHERE t.tgfoid = p.oid
                         AND t.tgoldtable IS NOT NULL ORDER BY t.tgname LIMIT 1) AS oldtable,
                      (SELECT t.tgnewtable FROM pg_trigger t WHERE t.tgfoid = p.oid
                         AND t.tgnewtable IS NOT NULL ORDER BY t.tgname LIMIT 1) AS newtable
               FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
               WHERE l.lanname = 'plpgsql' AND p.pronamespace = 'public'::regnamespace
                 AND p.proname NOT LIKE 'plpgsql_check%'
             )
             SELECT f.name, r.level, r.lineno, r.message, coalesce(r.detail, ''), coalesce(r.query, '')
             FROM f
             CROSS JOIN LATERAL plpgsql_check_function_tb(
               f.oid, coalesce(f.relid, 0), fatal_errors => false, other_warnings => true,
               performance_warnings => false, extra_warnings => true, security_warnings => true,
               oldtable => f.oldtable, newtable => f.newtable) r
             WHERE r.level <> 'performance'
               AND r.message NOT LIKE 'cannot determinate a result of dynamic SQL%'
             ORDER BY 1, 3",
            &[],
        )
        .await
        .expect("running plpgsql_check");
    let report: Vec<String> = findings
        .iter()
        .map(|r| {
            let (name, level, line): (String, String, Option<i32>) = (r.get(0), r.get(1), r.get(2));
            let (message, detail, query): (String, String, String) = (r.get(3), r.get(4), r.get(5));
            format!("{name} line {line:?}: {level}: {message} {detail} {query}")
        })
        .collect();
    assert!(report.is_empty(), "plpgsql_check:\n{}", report.join("\n"));
}
