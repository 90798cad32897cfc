//! Duplicates and revisions: a second load is all duplicates, a changed row
//! is a revision updated in place, one merge inserts, revises and skips,
//! a row repeated within a file takes its last line, and one with other
//! values is a conflict reported (refused under `--strict`).

use crate::common::{sample_path, stderr, stdout};
use crate::fixtures::{audusd_db, json, write};

use super::{bar_at, bars, ingest, GOOD_FIRST, GOOD_LAST};

#[tokio::test]
async fn the_sample_loads_once_and_a_second_load_is_all_duplicates() {
    let db = audusd_db().await;
    let sample = sample_path();
    let first = ingest(&db, &[sample.to_str().unwrap(), "--json"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let s = json(&first);
    assert_eq!(s["total"]["rows_read"], 16_875);
    assert_eq!(s["total"]["loaded"], 16_875);
    assert_eq!(s["files"][0]["format"], "histdata");
    assert_eq!(bars(&db).await, 16_875);
    // 2023-06-01 00:00 EST is 05:00 UTC.
    let (open, _, _, close, _, source) = bar_at(&db, "2023-06-01T05:00:00Z").await.unwrap();
    assert_eq!(
        (open, close, source.as_str()),
        (0.65141, 0.65125, "histdata")
    );

    let second = ingest(&db, &[sample.to_str().unwrap(), "--json"]);
    assert!(second.status.success(), "{}", stderr(&second));
    let s = json(&second);
    assert_eq!(s["total"]["loaded"], 0);
    assert_eq!(s["total"]["duplicates"], 16_875);
    assert_eq!(s["total"]["revised"], 0);
    assert_eq!(bars(&db).await, 16_875);
}

#[tokio::test]
async fn a_changed_row_is_a_revision_updated_in_place() {
    let db = audusd_db().await;
    let sample = sample_path();
    assert!(ingest(&db, &[sample.to_str().unwrap()]).status.success());
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "fix.csv",
        b"20230601 000000;0.65141;0.65150;0.65124;0.65149;7\n20230601 000100;0.651250;0.651270;0.651140;0.651180;0\n",
    );
    let out = ingest(
        &db,
        &[file.to_str().unwrap(), "--json", "--source", "vendor-fix"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let s = json(&out);
    assert_eq!(s["total"]["revised"], 1);
    assert_eq!(s["total"]["duplicates"], 1);
    assert_eq!(s["total"]["loaded"], 0);
    assert_eq!(s["files"][0]["path"], "merge");
    assert_eq!(bars(&db).await, 16_875);
    let bar = bar_at(&db, "2023-06-01T05:00:00Z").await.unwrap();
    assert_eq!(
        bar,
        (0.65141, 0.6515, 0.65124, 0.65149, 7.0, "vendor-fix".into())
    );
}

#[tokio::test]
async fn one_merge_inserts_revises_and_skips_in_the_same_file() {
    let db = audusd_db().await;
    let sample = std::fs::read_to_string(sample_path()).unwrap();
    assert!(ingest(&db, &[sample_path().to_str().unwrap()])
        .status
        .success());
    let mut lines = sample.lines();
    let (same, second) = (lines.next().unwrap(), lines.next().unwrap());
    // The second minute with another close, and a Saturday minute the sample
    // does not have, inside the sample's range.
    let mut changed: Vec<&str> = second.split(';').collect();
    changed[4] = "0.651200";
    let input = format!(
        "{same}\n{}\n20230603 120000;0.66000;0.66100;0.65900;0.66050;0\n",
        changed.join(";")
    );
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "mixed.csv", input.as_bytes());
    let out = ingest(&db, &[file.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = json(&out);
    assert_eq!(s["files"][0]["path"], "merge");
    assert_eq!(
        (
            &s["total"]["loaded"],
            &s["total"]["revised"],
            &s["total"]["duplicates"]
        ),
        (&1.into(), &1.into(), &1.into())
    );
    assert_eq!(bars(&db).await, 16_876);
    let (_, _, _, close, _, _) = bar_at(&db, "2023-06-01T05:01:00Z").await.unwrap();
    assert_eq!(close, 0.6512);
    let new = bar_at(&db, "2023-06-03T17:00:00Z").await.unwrap();
    assert_eq!(new, (0.66, 0.661, 0.659, 0.6605, 0.0, "histdata".into()));
    // Loading the same file again finds nothing to do.
    let again = ingest(&db, &[file.to_str().unwrap(), "--json"]);
    assert!(again.status.success(), "{}", stderr(&again));
    let s = json(&again);
    assert_eq!(
        (
            &s["total"]["loaded"],
            &s["total"]["revised"],
            &s["total"]["duplicates"]
        ),
        (&0.into(), &0.into(), &3.into())
    );
}

#[tokio::test]
async fn a_row_repeated_within_a_file_takes_its_last_line() {
    let db = audusd_db().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "twice.csv",
        format!("{GOOD_FIRST}\n20230601 000000;0.65141;0.65160;0.65124;0.65155;0\n{GOOD_LAST}\n")
            .as_bytes(),
    );
    let out = ingest(&db, &[file.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = json(&out);
    assert_eq!(s["total"]["loaded"], 2);
    assert_eq!(s["total"]["superseded"], 1);
    let (_, high, _, close, _, _) = bar_at(&db, "2023-06-01T05:00:00Z").await.unwrap();
    assert_eq!((high, close), (0.6516, 0.65155));
}

#[tokio::test]
async fn an_overlap_found_only_after_the_first_batch_still_merges() {
    let db = audusd_db().await;
    let sample = std::fs::read_to_string(sample_path()).unwrap();
    let last = sample.lines().last().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tail = write(dir.path(), "tail.csv", format!("{last}\n").as_bytes());
    assert!(ingest(&db, &[tail.to_str().unwrap()]).status.success());
    let out = ingest(&db, &[sample_path().to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = json(&out);
    assert_eq!(s["total"]["loaded"], 16_874);
    assert_eq!(s["total"]["duplicates"], 1);
    assert_eq!(s["files"][0]["path"], "merge");
    assert_eq!(bars(&db).await, 16_875);
}

#[tokio::test]
async fn a_minute_given_twice_with_other_values_is_reported_and_refused_under_strict() {
    let db = audusd_db().await;
    let dir = tempfile::tempdir().unwrap();
    // Line 2 gives 00:00 again with another high and close; line 4 repeats
    // line 3 exactly, which is no conflict.
    let file = write(
        dir.path(),
        "conflict.csv",
        format!(
            "{GOOD_FIRST}\n20230601 000000;0.65141;0.65160;0.65124;0.65155;0\n{GOOD_LAST}\n{GOOD_LAST}\n"
        )
        .as_bytes(),
    );
    let name = file.to_str().unwrap();

    let strict = ingest(&db, &[name, "--strict"]);
    assert!(
        !strict.status.success(),
        "--strict took a same-minute conflict"
    );
    let err = stderr(&strict);
    assert!(
        err.contains("1 minute given twice with different values")
            && err.contains("conflict.csv:1 and ")
            && err.contains("conflict.csv:2: 2023-06-01T05:00:00+00:00 differs"),
        "{err}"
    );
    assert_eq!(bars(&db).await, 0, "a refused file loaded bars");

    let out = ingest(&db, &[name, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = json(&out);
    assert_eq!(s["total"]["conflicts"], 1);
    assert_eq!(s["total"]["superseded"], 2);
    let pair = &s["files"][0]["conflicting_lines"][0];
    assert_eq!(
        (&pair["earlier_line"], &pair["later_line"]),
        (&1.into(), &2.into())
    );
    assert!(
        stderr(&out).contains(
            "minute 2023-06-01T05:00:00+00:00 given twice with different values; line 2 used"
        ),
        "{}",
        stderr(&out)
    );
    let text = ingest(&db, &[name]);
    assert!(
        stdout(&text).contains("same-minute conflicts 1"),
        "{}",
        stdout(&text)
    );
}
