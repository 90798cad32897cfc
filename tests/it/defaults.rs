//! Defaults that never lose or hide data, each through the real binary:
//! `sync` starts new tasks at the symbol's first 1m bar and warns about bars
//! an explicit `--start` leaves out; `db down` reverts one step and refuses
//! to drop tables holding rows without `--force`; `demo` refuses a database
//! that only the environment names; timeframe aliases and the ambiguous `1M`.

use barkeep::calendar::Timeframe;

use crate::common::{sample_path, stderr, stdout, TestDb};

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "barkeep failed: {}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

#[tokio::test]
async fn sync_without_start_begins_at_the_first_1m_bar_and_an_explicit_start_says_what_it_leaves_out(
) {
    let db = TestDb::migrated().await;
    let sample = sample_path();
    for symbol in ["AUDUSD", "EURUSD"] {
        ok(db.cli(&["assets", "add", symbol, "--class", "fx"]));
        ok(db.cli(&["ingest", "--symbol", symbol, sample.to_str().unwrap()]));
    }
    ok(db.cli(&["assets", "set", "EURUSD", "--active", "false"]));
    // The sample starts 2023-06-01 00:00 EST = 05:00Z: long before 2025-07-01.
    let text = ok(db.cli(&["sync"]));
    assert!(
        text.contains("AUDUSD: tasks start at its first 1m bar, 2023-06-01 05:00Z"),
        "{text}"
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM data_agg_state WHERE canonical_symbol = 'AUDUSD'
                  AND agg_start_utc = '2023-06-01 05:00+00'"
        )
        .await,
        6
    );
    // The 5m cursor is the first bucket; the fx 4h cursor the first FX-clock boundary after it.
    assert_eq!(
        db.count(
            "SELECT count(*) FROM data_agg_state WHERE canonical_symbol = 'AUDUSD'
                  AND ((timeframe = '5m' AND last_agg_bar_ts_utc = '2023-06-01 05:00+00')
                    OR (timeframe = '4h' AND last_agg_bar_ts_utc = '2023-06-01 05:00+00'))"
        )
        .await,
        2
    );
    ok(db.cli(&["run", "--once"]));
    assert!(
        db.count("SELECT count(*) FROM derived_data_bars WHERE canonical_symbol = 'AUDUSD'")
            .await
            > 4000
    );

    // An explicit later start for the second symbol: a warning with the count.
    ok(db.cli(&["assets", "set", "EURUSD", "--active", "true"]));
    let left_out = db
        .count("SELECT count(*) FROM data_bars WHERE canonical_symbol = 'EURUSD' AND ts_utc < '2023-06-10'")
        .await;
    assert!(left_out > 0);
    let out = db.cli(&["sync", "--start", "2023-06-10"]);
    ok(out.clone());
    assert!(
        stderr(&out).contains(&format!(
            "warning: EURUSD: --start 2023-06-10 00:00Z leaves out {left_out} stored 1m bars (from 2023-06-01 05:00Z)"
        )),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn db_down_reverts_one_step_and_refuses_to_drop_rows_without_force() {
    let db = TestDb::migrated().await;
    ok(db.cli(&["assets", "add", "AUDUSD", "--class", "fx"]));
    ok(db.cli(&[
        "ingest",
        "--symbol",
        "AUDUSD",
        sample_path().to_str().unwrap(),
    ]));
    let applied = |db: &TestDb| {
        let out = db.cli(&["db", "status", "--json"]);
        let steps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        steps
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["applied"] == true)
            .map(|s| s["version"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    let before = applied(&db);
    assert!(before.len() >= 3, "{before:?}");
    let text = ok(db.cli(&["db", "down"]));
    let newest = *before.last().unwrap();
    assert_eq!(text.trim(), format!("reverted migration {newest}"));
    assert_eq!(applied(&db), before[..before.len() - 1]);

    let refused = db.cli(&["db", "down", "--to", "0"]);
    assert!(!refused.status.success());
    let message = stderr(&refused);
    assert!(
        message.contains("data_bars (16875 rows, step 1)"),
        "{message}"
    );
    assert!(
        message.contains("core_asset_registry_all (1 rows, step 1)"),
        "{message}"
    );
    assert!(message.contains("--force"), "{message}");
    assert_eq!(
        applied(&db),
        before[..before.len() - 1],
        "a refused revert reverted something"
    );
    assert_eq!(db.count("SELECT count(*) FROM data_bars").await, 16875);

    ok(db.cli(&["db", "down", "--to", "0", "--force"]));
    assert!(applied(&db).is_empty());
}

#[tokio::test]
async fn demo_refuses_a_database_named_only_by_the_environment() {
    let db = TestDb::migrated().await;
    let home = tempfile::tempdir().unwrap();
    let home_arg = home.path().to_str().unwrap();
    let refused = db.cli(&["demo", "--home", home_arg]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr(&refused).contains("DATABASE_URL is set"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(
        db.count("SELECT count(*) FROM core_asset_registry_all")
            .await,
        0
    );

    let text = ok(db.cli(&["demo", "--home", home_arg, "--database-url", &db.url]));
    assert!(text.contains("16875 rows read, 16875 loaded"), "{text}");
    assert_eq!(
        db.count("SELECT count(*) FROM core_asset_registry_all")
            .await,
        1
    );
}

#[test]
fn timeframes_take_the_names_users_type_and_refuse_1m_in_capitals() {
    for (names, tf) in [
        (&["5m", "M5"][..], Timeframe::M5),
        (&["15m", "M15"], Timeframe::M15),
        (&["1h", "H1", "60m", "1H"], Timeframe::H1),
        (&["4h", "H4", "240m"], Timeframe::H4),
        (&["1d", "D1", "1D"], Timeframe::D1),
        (&["1w", "W1"], Timeframe::W1),
        (&["1m", "M1"], Timeframe::M1),
    ] {
        for name in names {
            assert_eq!(Timeframe::parse(name).unwrap(), tf, "{name}");
        }
    }
    let err = Timeframe::parse("1M").unwrap_err().to_string();
    assert!(err.contains("ambiguous") && err.contains("1m"), "{err}");
}

#[tokio::test]
async fn bad_timeframes_symbols_and_flags_are_usage_errors() {
    let db = TestDb::migrated().await;
    ok(db.cli(&["assets", "add", "AUDUSD", "--class", "fx"]));
    ok(db.cli(&["sync"]));
    let out = db.cli(&["status", "--timeframe", "H1", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["tasks"][0]["timeframe"], "1h");
    for (args, message) in [
        (&["status", "--timeframe", "1M"][..], "ambiguous"),
        (&["status", "--timeframe", "7m"], "unknown task timeframe"),
        (&["status", "--symbol", "NOPE"], "unknown symbol NOPE"),
        (&["quality", "--symbol", "NOPE"], "unknown symbol NOPE"),
        (&["alerts", "--no-such-flag"], "unexpected argument"),
        (&["quality", "--since", "yesterday-ish"], "unknown duration"),
    ] {
        let out = db.cli(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
    }
    for cmd in [
        "status",
        "alerts",
        "quality",
        "verify",
        "backup",
        "restore",
        "quarantine",
        "sync",
        "db",
    ] {
        let out = db.cli(&[cmd, "--help"]);
        assert!(out.status.success(), "{cmd} --help");
        assert!(
            stdout(&out).contains("Usage: barkeep"),
            "{cmd}: {}",
            stdout(&out)
        );
    }
}
