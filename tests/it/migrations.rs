//! Migrations: up, down and up again; edited scripts refused; concurrent up.

use crate::common::{stderr, TestDb};
use barkeep::migrate;

/// A description of every barkeep object in the public schema, for comparing schemas.
async fn schema_fingerprint(db: &TestDb) -> Vec<String> {
    let client = db.client().await;
    let rows = client
        .query(
            "SELECT 'col ' || table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '')
               FROM information_schema.columns WHERE table_schema = 'public'
             UNION ALL
             SELECT 'idx ' || indexname || ' ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
             UNION ALL
             SELECT 'fn ' || p.oid::regprocedure::text || ' ' || p.prosecdef || ' ' || md5(p.prosrc)
               FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'
             ORDER BY 1",
            &[],
        )
        .await
        .expect("reading the schema");
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test]
async fn up_down_up_leaves_the_same_schema() {
    let db = TestDb::empty().await;
    let mut client = db.client().await;
    let applied = migrate::up(&mut client, None).await.expect("first up");
    assert_eq!(applied.len(), migrate::MIGRATIONS.len());
    let first = schema_fingerprint(&db).await;
    assert!(
        first.iter().any(|l| l.starts_with("col data_bars.ts_utc")),
        "{first:?}"
    );

    let reverted = migrate::down(&mut client, 0)
        .await
        .expect("down to nothing");
    assert_eq!(reverted.len(), migrate::MIGRATIONS.len());
    let empty = schema_fingerprint(&db).await;
    assert!(
        empty
            .iter()
            .all(|l| l.contains("barkeep_schema_migrations")
                || l.contains("barkeep_schema_functions")),
        "down to nothing left objects behind: {empty:?}"
    );

    migrate::up(&mut client, None).await.expect("second up");
    assert_eq!(first, schema_fingerprint(&db).await);
}

#[tokio::test]
async fn an_edited_applied_migration_is_refused_by_name() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    client
        .execute(
            "UPDATE barkeep_schema_migrations SET checksum = 'f00d' WHERE version = 1",
            &[],
        )
        .await
        .unwrap();
    let out = db.cli(&["db", "up"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("0001_base_schema") && err.contains("edited"),
        "{err}"
    );
}

#[tokio::test]
async fn concurrent_ups_end_with_one_correct_schema() {
    let db = TestDb::empty().await;
    let mut handles = Vec::new();
    for _ in 0..4 {
        let database = db.database.clone();
        handles.push(tokio::spawn(async move {
            let mut client = database.connect().await.expect("connect");
            migrate::up(&mut client, None).await
        }));
    }
    let mut applied_total = 0;
    for h in handles {
        applied_total += h.await.expect("join").expect("concurrent up").len();
    }
    assert_eq!(
        applied_total,
        migrate::MIGRATIONS.len(),
        "each step applied exactly once"
    );
    let reference = TestDb::migrated().await;
    assert_eq!(
        schema_fingerprint(&db).await,
        schema_fingerprint(&reference).await
    );
}

#[tokio::test]
async fn db_status_lists_every_step_as_applied() {
    let db = TestDb::migrated().await;
    let out = db.cli(&["db", "status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let steps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps = steps.as_array().unwrap();
    assert_eq!(steps.len(), migrate::MIGRATIONS.len());
    assert!(steps
        .iter()
        .all(|s| s["applied"] == true && s["checksum_ok"] == true));
}

#[tokio::test]
async fn a_changed_function_file_is_reapplied_and_an_unchanged_one_is_not() {
    let db = TestDb::migrated().await;
    let mut client = db.client().await;
    let v1 = migrate::FunctionFile {
        name: "99_probe.sql",
        sql: "-- requires: 2\nCREATE OR REPLACE FUNCTION agg_probe() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;",
    };
    let v2 = migrate::FunctionFile {
        name: "99_probe.sql",
        sql: "-- requires: 2\nCREATE OR REPLACE FUNCTION agg_probe() RETURNS int LANGUAGE sql AS $$ SELECT 2 $$;",
    };
    assert_eq!(v1.function_names(), vec!["agg_probe".to_string()]);
    for (file, expect_applied, expect_value) in [(v1, true, 1), (v1, false, 1), (v2, true, 2)] {
        let tx = client.transaction().await.expect("tx");
        let applied = migrate::apply_functions(&tx, &[file], 2)
            .await
            .expect("apply");
        tx.commit().await.expect("commit");
        assert_eq!(!applied.is_empty(), expect_applied, "{}", file.sql);
        let value: i32 = client
            .query_one("SELECT agg_probe()", &[])
            .await
            .expect("calling the probe")
            .get(0);
        assert_eq!(value, expect_value);
    }
    // A file whose step is not applied yet waits.
    let later = migrate::FunctionFile {
        name: "98_later.sql",
        sql: "-- requires: 99\nCREATE OR REPLACE FUNCTION agg_later() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;",
    };
    let tx = client.transaction().await.expect("tx");
    assert!(migrate::apply_functions(&tx, &[later], 2)
        .await
        .expect("apply")
        .is_empty());
    // Reverting the step drops what the file defined.
    migrate::drop_functions(&tx, &[v2], 2).await.expect("drop");
    tx.commit().await.expect("commit");
    let left: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_proc WHERE proname IN ('agg_probe', 'agg_later')",
            &[],
        )
        .await
        .expect("counting")
        .get(0);
    assert_eq!(left, 0);
}

#[tokio::test]
async fn every_function_file_names_its_step_and_the_functions_it_defines() {
    for f in migrate::FUNCTION_FILES {
        let step = f.requires().expect("a requires line");
        assert!(
            migrate::MIGRATIONS.iter().any(|m| m.version == step),
            "{} requires unknown step {step}",
            f.name
        );
        assert!(
            !f.function_names().is_empty(),
            "{} defines no function",
            f.name
        );
    }
    // Every agg_/checklist function in a migrated database comes from a file.
    let db = TestDb::migrated().await;
    let client = db.client().await;
    let names: Vec<String> = migrate::FUNCTION_FILES
        .iter()
        .flat_map(|f| f.function_names())
        .collect();
    let rows = client
        .query(
            "SELECT DISTINCT proname::text FROM pg_proc
             WHERE pronamespace = 'public'::regnamespace AND prokind = 'f'",
            &[],
        )
        .await
        .expect("listing functions");
    for row in rows {
        let name: String = row.get(0);
        if name.starts_with("gen_random") {
            continue;
        }
        assert!(
            names.contains(&name),
            "{name} is not defined by any sql/functions file"
        );
    }
}

#[tokio::test]
async fn a_database_migrated_with_the_earlier_phase5_text_is_accepted() {
    let db = TestDb::migrated().await;
    let mut client = db.client().await;
    client
        .execute(
            "UPDATE barkeep_schema_migrations SET checksum = $1 WHERE version = 2",
            &[&"97bcb7b8aff07910d02b2612b4815e5cb169b85aa077315fbb5e422574360350"],
        )
        .await
        .expect("recording the earlier checksum");
    client
        .execute("DELETE FROM barkeep_schema_functions", &[])
        .await
        .expect("forget");
    migrate::up(&mut client, None)
        .await
        .expect("up accepts the earlier text");
    let files: i64 = client
        .query_one("SELECT count(*) FROM barkeep_schema_functions", &[])
        .await
        .expect("counting")
        .get(0);
    assert_eq!(files as usize, migrate::FUNCTION_FILES.len());
}

#[tokio::test]
async fn reverting_step_10_removes_lease_recoveries_and_leaves_a_working_claim() {
    let db = TestDb::migrated().await;
    let objects = "SELECT (SELECT count(*) FROM pg_attribute
                           WHERE attrelid = 'data_agg_state'::regclass
                             AND attname = 'lease_recoveries' AND NOT attisdropped)
                        + (SELECT count(*) FROM pg_trigger WHERE tgname = 'agg_count_lease_recovery')
                        + (SELECT count(*) FROM pg_proc WHERE proname = 'agg_count_lease_recovery')";
    assert_eq!(db.count(objects).await, 3, "column, trigger and function");
    let out = db.cli(&["db", "down", "--to", "9"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(db.count(objects).await, 0, "db down --to 9 removes them");

    // The claim, which requires step 2, still takes over an expired lease.
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO core_asset_registry_all (canonical_symbol, asset_class) VALUES ('DOWN9', 'fx');
             SELECT sync_agg_state_from_registry('prod', '2025-07-01');
             SELECT agg_claim_tasks('prod', 'a', now(), 1, 60);",
        )
        .await
        .expect("a claim at step 9");
    let recovered: bool = client
        .query_one(
            "SELECT bool_or(recovered) FROM agg_claim_tasks('prod', 'b', now() + interval '1 hour', 10, 60)",
            &[],
        )
        .await
        .expect("a takeover at step 9")
        .get(0);
    assert!(recovered);

    let out = db.cli(&["db", "up"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(db.count(objects).await, 3, "db up brings them back");
    assert_eq!(
        db.count("SELECT sum(lease_recoveries)::bigint FROM data_agg_state")
            .await,
        0,
        "the count starts at 0"
    );
}

#[tokio::test]
async fn db_down_refuses_to_drop_a_column_holding_values_without_force() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO ingest_quarantine (file, file_as_given, line, raw_line, reason)
             SELECT '/data/bars.csv', 'bars.csv', g, 'x', 'bad price' FROM generate_series(1, 50) g;
             INSERT INTO ingest_quarantine (file, line, raw_line, reason) VALUES ('/data/old.csv', 1, 'x', 'bad');",
        )
        .await
        .unwrap();
    let column = "SELECT count(*) FROM pg_attribute WHERE attrelid = 'ingest_quarantine'::regclass
                  AND attname = 'file_as_given' AND NOT attisdropped";

    let refused = db.cli(&["db", "down", "--to", "10"]);
    assert!(
        !refused.status.success(),
        "a column holding values was dropped"
    );
    assert!(
        stderr(&refused).contains(
            "drops columns that hold values: ingest_quarantine.file_as_given (50 values, step 11)"
        ),
        "{}",
        stderr(&refused)
    );
    assert!(stderr(&refused).contains("--force"), "{}", stderr(&refused));
    assert_eq!(
        db.count(column).await,
        1,
        "a refused revert dropped the column"
    );
    assert_eq!(
        db.count("SELECT count(file_as_given) FROM ingest_quarantine")
            .await,
        50
    );

    let out = db.cli(&["db", "down", "--to", "10", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(db.count(column).await, 0);
}
