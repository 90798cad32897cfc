//! Managed PostgreSQL: barkeep run by a database owner that is not a
//! superuser, on a cluster of this test's own (roles are cluster-wide).
//! Without CREATEROLE and without the roles, `db up` stops before writing
//! and prints the SQL a superuser must run; with the roles made by that SQL,
//! or with CREATEROLE, `db up`, `ingest`, `sync`, `run --once` and `export`
//! work as the owner, and `db status` and `export` work as a reader.

use std::io::Write;

use crate::common::{sample_path, stderr};
use crate::fixtures::{ok, OwnCluster};

/// The first `lines` lines of the shipped sample in a file of their own.
fn small_sample(dir: &std::path::Path, lines: usize) -> std::path::PathBuf {
    let text = std::fs::read_to_string(sample_path()).unwrap();
    let path = dir.join("sample.csv");
    let mut f = std::fs::File::create(&path).unwrap();
    for line in text.lines().take(lines) {
        writeln!(f, "{line}").unwrap();
    }
    path
}

/// The whole job as the owner `conn`: migrate, register, load, sync,
/// aggregate, export.
fn whole_job(pg: &OwnCluster, conn: &str, sample: &std::path::Path) {
    let up = ok(&pg.cli(conn, &["db", "up"]));
    assert!(up.contains("applied migration 1"), "{up}");
    ok(&pg.cli(conn, &["assets", "add", "AUDUSD", "--class", "fx"]));
    ok(&pg.cli(
        conn,
        &["ingest", "--symbol", "AUDUSD", sample.to_str().unwrap()],
    ));
    ok(&pg.cli(conn, &["sync", "--start", "2023-06-01"]));
    ok(&pg.cli(conn, &["run", "--once"]));
    let csv = ok(&pg.cli(conn, &["export", "AUDUSD", "1h"]));
    assert!(csv.lines().count() > 10, "{csv}");
}

#[tokio::test]
async fn a_database_owner_without_superuser_runs_the_whole_job() {
    let pg = OwnCluster::start("barkeep-managed-", None);
    let sample = small_sample(pg.home.path(), 3000);
    let admin = pg.superuser("postgres").await;
    for sql in [
        "CREATE ROLE plain_owner LOGIN",
        "CREATE DATABASE plain_db OWNER plain_owner",
        "CREATE ROLE creator_owner LOGIN CREATEROLE",
        "CREATE DATABASE creator_db OWNER creator_owner",
    ] {
        admin.batch_execute(sql).await.unwrap();
    }

    // No CREATEROLE, no roles yet: refused with the SQL to run, nothing written.
    let plain = pg.conn("plain_owner", "plain_db");
    let out = pg.cli(&plain, &["db", "up"]);
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(message.contains("may not create roles"), "{message}");
    let sql: Vec<&str> = message
        .lines()
        .filter(|l| l.starts_with("CREATE ROLE"))
        .collect();
    assert_eq!(sql.len(), 3, "{message}");
    let plain_admin = pg.superuser("plain_db").await;
    let tables: i64 = plain_admin
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "db up wrote before refusing");

    // A superuser runs exactly that SQL; then the owner does the whole job.
    admin.batch_execute(&sql.join("\n")).await.unwrap();
    whole_job(&pg, &plain, &sample);

    // A login that is only a member of barkeep_reader: db status and export.
    admin
        .batch_execute("CREATE ROLE report LOGIN IN ROLE barkeep_reader")
        .await
        .unwrap();
    let reader = pg.conn("report", "plain_db");
    let status = ok(&pg.cli(&reader, &["db", "status"]));
    assert!(!status.contains("pending"), "{status}");
    ok(&pg.cli(&reader, &["export", "AUDUSD", "1d"]));
    // The reader cannot migrate.
    assert!(!pg
        .cli(&reader, &["db", "down", "--to", "0"])
        .status
        .success());

    // Start over without the roles: an owner with CREATEROLE makes them.
    drop(plain_admin);
    for sql in [
        "DROP DATABASE plain_db WITH (FORCE)",
        "DROP ROLE report",
        "DROP ROLE barkeep_ingest, barkeep_worker, barkeep_reader",
    ] {
        admin.batch_execute(sql).await.unwrap();
    }
    let creator = pg.conn("creator_owner", "creator_db");
    whole_job(&pg, &creator, &sample);
    let roles: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'barkeep\\_%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(roles, 3);
    // And it can take the schema down again.
    ok(&pg.cli(&creator, &["db", "down", "--to", "0", "--force"]));
}
