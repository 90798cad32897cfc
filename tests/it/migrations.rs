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
            .all(|l| l.contains("barkeep_schema_migrations")),
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
