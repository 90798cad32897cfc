//! The ingest quarantine across loads: a file loaded again does not
//! quarantine its bad rows a second time (on either load path), rows are
//! recorded under the file's canonical path, and `quarantine list|purge
//! --file` takes the path as the user types it.

use std::path::{Path, PathBuf};

use crate::common::{stderr, stdout, TestDb};
use crate::fixtures::{audusd_db, json, write};

const GOOD_FIRST: &str = "20230601 000000;0.65141;0.65141;0.65124;0.65125;0";
const BAD_PRICE: &str = "20230601 000100;x;0.65127;0.65114;0.65118;0";
const BAD_FIELDS: &str = "20230601 000200;0.65125;0.65127;0.65114";
const GOOD_LAST: &str = "20230601 000300;0.65125;0.65130;0.65110;0.65120;0";

/// A file of `lines`, each ended by a newline.
fn write_lines(dir: &Path, name: &str, lines: &[&str]) -> PathBuf {
    write(dir, name, format!("{}\n", lines.join("\n")).as_bytes())
}

async fn quarantine_rows(db: &TestDb) -> Vec<(String, i64, String)> {
    db.client()
        .await
        .query(
            "SELECT file, line, raw_line FROM ingest_quarantine ORDER BY file, line, id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn loading_a_file_again_does_not_quarantine_its_bad_rows_again() {
    let db = audusd_db().await;
    let dir = tempfile::tempdir().unwrap();
    let mixed = write_lines(
        dir.path(),
        "mixed.csv",
        &[GOOD_FIRST, BAD_PRICE, BAD_FIELDS, GOOD_LAST],
    );
    let mixed = mixed.to_str().unwrap();
    let ingest = |args: &[&str]| {
        let mut all = vec!["ingest", "--symbol", "AUDUSD", "--max-quarantined", "100"];
        all.extend_from_slice(args);
        db.cli(&all)
    };

    let first = ingest(&[mixed, "--json"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let s = json(&first);
    assert_eq!(s["files"][0]["path"], "new_range");
    assert_eq!(s["total"]["quarantined"], 2);
    assert_eq!(s["total"]["already_quarantined"], 0);
    assert_eq!(quarantine_rows(&db).await.len(), 2);

    // The second load merges (its bars are stored): same bad rows, none added.
    let second = ingest(&[mixed, "--json"]);
    assert!(second.status.success(), "{}", stderr(&second));
    let s = json(&second);
    assert_eq!(s["files"][0]["path"], "merge");
    assert_eq!(s["total"]["duplicates"], 2);
    assert_eq!(
        s["total"]["quarantined"], 2,
        "the file still has 2 bad rows"
    );
    assert_eq!(s["total"]["already_quarantined"], 2);
    assert_eq!(
        quarantine_rows(&db).await.len(),
        2,
        "bad rows quarantined twice"
    );
    let text = ingest(&[mixed]);
    assert!(
        stdout(&text).contains("quarantined 2 (2 already in quarantine from an earlier load)"),
        "{}",
        stdout(&text)
    );

    // A file of bad rows only takes the new-range path each time.
    let all_bad = write_lines(dir.path(), "all_bad.csv", &[BAD_PRICE, BAD_FIELDS]);
    let all_bad = all_bad.to_str().unwrap();
    for run in 0..2 {
        let out = ingest(&[all_bad, "--json"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "no loadable row: {}",
            stderr(&out)
        );
        let s = json(&out);
        assert_eq!(s["files"][0]["path"], "new_range");
        assert_eq!(
            s["total"]["already_quarantined"],
            if run == 0 { 0 } else { 2 }
        );
    }
    assert_eq!(quarantine_rows(&db).await.len(), 4);

    // A line whose text changed is a new bad row; the unchanged one is not.
    let edited = "20230601 000100;y;0.65127;0.65114;0.65118;0";
    write_lines(
        dir.path(),
        "mixed.csv",
        &[GOOD_FIRST, edited, BAD_FIELDS, GOOD_LAST],
    );
    let out = ingest(&[mixed, "--json"]);
    assert_eq!(json(&out)["total"]["already_quarantined"], 1);
    let rows = quarantine_rows(&db).await;
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().any(|r| r.2 == edited), "{rows:?}");

    // The same rows for another symbol are that symbol's bad rows.
    let out = db.cli(&["assets", "add", "EURUSD", "--class", "fx"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = db.cli(&["ingest", "--symbol", "EURUSD", all_bad, "--json"]);
    assert_eq!(json(&out)["total"]["already_quarantined"], 0);
    assert_eq!(quarantine_rows(&db).await.len(), 7);
}

#[tokio::test]
async fn a_dry_run_says_what_is_already_quarantined_and_adds_nothing() {
    let db = audusd_db().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_lines(dir.path(), "bars.csv", &[GOOD_FIRST, BAD_PRICE, GOOD_LAST]);
    let file = file.to_str().unwrap();
    let dry = db.cli(&["ingest", "--symbol", "AUDUSD", file, "--dry-run", "--json"]);
    assert_eq!(json(&dry)["total"]["already_quarantined"], 0);
    assert!(quarantine_rows(&db).await.is_empty());
    db.cli(&["ingest", "--symbol", "AUDUSD", file]);
    let dry = db.cli(&["ingest", "--symbol", "AUDUSD", file, "--dry-run", "--json"]);
    assert_eq!(json(&dry)["total"]["quarantined"], 1);
    assert_eq!(json(&dry)["total"]["already_quarantined"], 1);
    assert_eq!(quarantine_rows(&db).await.len(), 1);
}

#[tokio::test]
async fn the_quarantine_records_the_canonical_path_and_takes_the_path_as_typed() {
    let db = audusd_db().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    write_lines(&data, "bars.csv", &[GOOD_FIRST, BAD_PRICE, GOOD_LAST]);
    let canonical = std::fs::canonicalize(data.join("bars.csv"))
        .unwrap()
        .display()
        .to_string();
    let link = dir.path().join("link.csv");
    std::os::unix::fs::symlink(data.join("bars.csv"), &link).unwrap();

    // Loaded by a relative path from the data folder: the message names the
    // path as typed, the quarantine the absolute path.
    let out = db.cli_in(&data, &["ingest", "--symbol", "AUDUSD", "bars.csv"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "1 of 3 rows bad: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("quarantined bars.csv:2: open is not a number"),
        "{}",
        stderr(&out)
    );
    let rows = quarantine_rows(&db).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, canonical);
    // Beside it, the path as the user gave it; listings show both.
    let given: Option<String> = db
        .client()
        .await
        .query_one("SELECT file_as_given FROM ingest_quarantine", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(given.as_deref(), Some("bars.csv"));
    let out = db.cli_in(&data, &["quarantine", "list"]);
    assert!(
        stdout(&out).contains(&format!(
            "bars.csv:2 ({canonical}) [AUDUSD] open is not a number"
        )),
        "{}",
        stdout(&out)
    );
    let out = db.cli_in(&data, &["quarantine", "list", "--json"]);
    assert_eq!(json(&out)[0]["file_as_given"], "bars.csv");
    assert_eq!(json(&out)[0]["file"], canonical.as_str());
    let out = db.cli_in(&data, &["status"]);
    assert!(
        stdout(&out).contains(&format!("bars.csv:2 ({canonical}): open is not a number")),
        "{}",
        stdout(&out)
    );

    // Loaded again by another spelling of the same file: nothing added.
    for (cwd, path) in [
        (dir.path(), "data/bars.csv"),
        (dir.path(), "link.csv"),
        (dir.path(), "./data/../data/bars.csv"),
    ] {
        let out = db.cli_in(cwd, &["ingest", "--symbol", "AUDUSD", path, "--json"]);
        assert_eq!(json(&out)["total"]["already_quarantined"], 1, "{path}");
    }
    assert_eq!(quarantine_rows(&db).await.len(), 1);

    // `quarantine list --file` takes each spelling, from its folder.
    let listed = |cwd: &Path, file: &str| {
        let out = db.cli_in(cwd, &["quarantine", "list", "--file", file, "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        json(&out).as_array().unwrap().len()
    };
    assert_eq!(listed(&data, "bars.csv"), 1);
    assert_eq!(listed(dir.path(), "data/bars.csv"), 1);
    assert_eq!(listed(dir.path(), "link.csv"), 1);
    assert_eq!(listed(dir.path(), &canonical), 1);
    assert_eq!(
        listed(dir.path(), "bars.csv"),
        0,
        "another folder's bars.csv"
    );

    // And so does purge.
    let out = db.cli_in(dir.path(), &["quarantine", "purge", "--file", "link.csv"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("purged 1 quarantined row"),
        "{}",
        stdout(&out)
    );
    assert!(quarantine_rows(&db).await.is_empty());
}

#[tokio::test]
async fn rows_recorded_under_a_path_as_typed_are_still_found_by_it() {
    // Rows written before ingest recorded canonical paths.
    let db = audusd_db().await;
    db.client()
        .await
        .execute(
            "INSERT INTO ingest_quarantine (file, line, canonical_symbol, raw_line, reason)
             VALUES ('old/bars.csv', 2, 'AUDUSD', 'x', 'open is not a number')",
            &[],
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = db.cli_in(
        dir.path(),
        &["quarantine", "list", "--file", "old/bars.csv", "--json"],
    );
    assert_eq!(json(&out).as_array().unwrap().len(), 1, "{}", stderr(&out));
}

#[tokio::test]
async fn standard_input_is_recorded_as_stdin_and_listed_by_a_dash() {
    let db = audusd_db().await;
    let input = format!("{GOOD_FIRST}\n{BAD_PRICE}\n{GOOD_LAST}\n");
    for _ in 0..2 {
        db.cli_with_stdin(
            &["ingest", "--symbol", "AUDUSD", "-"],
            Some(input.as_bytes()),
        );
    }
    let rows = quarantine_rows(&db).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, "<stdin>");
    let out = db.cli(&["quarantine", "list"]);
    assert!(
        stdout(&out).contains(" <stdin>:2 [AUDUSD]"),
        "{}",
        stdout(&out)
    );
    let out = db.cli(&["quarantine", "list", "--file", "-", "--json"]);
    assert_eq!(json(&out).as_array().unwrap().len(), 1, "{}", stderr(&out));
}

#[tokio::test]
async fn a_database_without_migration_11_still_quarantines_and_lists() {
    let db = audusd_db().await;
    let out = db.cli(&["db", "down", "--to", "10"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = tempfile::tempdir().unwrap();
    let file = write_lines(dir.path(), "bars.csv", &[GOOD_FIRST, BAD_PRICE, GOOD_LAST]);
    let file = file.to_str().unwrap();
    let out = db.cli(&[
        "ingest",
        "--symbol",
        "AUDUSD",
        "--max-quarantined",
        "50",
        file,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(quarantine_rows(&db).await.len(), 1);
    let out = db.cli(&["quarantine", "list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)[0]["file_as_given"], serde_json::Value::Null);
    // Brought up to date, the same load adds nothing and a new one keeps its path.
    let out = db.cli(&["db", "up"]);
    assert!(out.status.success(), "{}", stderr(&out));
    db.cli(&[
        "ingest",
        "--symbol",
        "AUDUSD",
        "--max-quarantined",
        "50",
        file,
    ]);
    assert_eq!(quarantine_rows(&db).await.len(), 1);
}
