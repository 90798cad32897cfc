//! Defaults that never lose or hide data, each through the real binary:
//! `sync` starts new tasks at the symbol's first 1m bar and warns about bars
//! an explicit `--start` leaves out; `db down` reverts one step and refuses
//! to drop tables holding rows without `--force`; `demo` refuses a database
//! that only the environment names; timeframe aliases and the ambiguous `1M`.

use barkeep::model::Timeframe;

use crate::common::{sample_path, stderr, stdout, TestDb};
use crate::fixtures::{ok, write, OwnCluster};

#[tokio::test]
async fn sync_without_start_begins_at_the_first_1m_bar_and_an_explicit_start_says_what_it_leaves_out(
) {
    let db = TestDb::migrated().await;
    let sample = sample_path();
    for symbol in ["AUDUSD", "EURUSD"] {
        ok(&db.cli(&["assets", "add", symbol, "--class", "fx"]));
        ok(&db.cli(&["ingest", "--symbol", symbol, sample.to_str().unwrap()]));
    }
    ok(&db.cli(&["assets", "set", "EURUSD", "--active", "false"]));
    // The sample starts 2023-06-01 00:00 EST = 05:00Z: long before 2025-07-01.
    let text = ok(&db.cli(&["sync"]));
    assert!(
        text.contains("AUDUSD: tasks start at its first 1m bar, 2023-06-01 05:00Z"),
        "{text}"
    );
    // Each task starts at its bucket holding that bar: 5m to 4h at 05:00Z,
    // the FX-clock day and week before it (Wednesday and Sunday 21:00Z).
    assert_eq!(
        db.count(
            "SELECT count(*) FROM data_agg_state WHERE canonical_symbol = 'AUDUSD'
                  AND agg_start_utc = CASE timeframe WHEN '1d' THEN timestamptz '2023-05-31 21:00+00'
                                                     WHEN '1w' THEN timestamptz '2023-05-28 21:00+00'
                                                     ELSE timestamptz '2023-06-01 05:00+00' END"
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
    ok(&db.cli(&["run", "--once"]));
    assert!(
        db.count("SELECT count(*) FROM derived_data_bars WHERE canonical_symbol = 'AUDUSD'")
            .await
            > 4000
    );

    // An explicit later start for the second symbol: a warning with the count.
    ok(&db.cli(&["assets", "set", "EURUSD", "--active", "true"]));
    let left_out = db
        .count("SELECT count(*) FROM data_bars WHERE canonical_symbol = 'EURUSD' AND ts_utc < '2023-06-10'")
        .await;
    assert!(left_out > 0);
    let out = db.cli(&["sync", "--start", "2023-06-10"]);
    ok(&out);
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
    ok(&db.cli(&["assets", "add", "AUDUSD", "--class", "fx"]));
    ok(&db.cli(&[
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
    let text = ok(&db.cli(&["db", "down"]));
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
        message.contains("core_asset_registry_all (1 row, step 1)"),
        "{message}"
    );
    assert!(message.contains("--force"), "{message}");
    assert_eq!(
        applied(&db),
        before[..before.len() - 1],
        "a refused revert reverted something"
    );
    assert_eq!(db.count("SELECT count(*) FROM data_bars").await, 16875);

    ok(&db.cli(&["db", "down", "--to", "0", "--force"]));
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

    let text = ok(&db.cli(&["demo", "--home", home_arg, "--database-url", &db.url]));
    assert!(text.contains("16875 rows read, 16875 loaded"), "{text}");
    assert_eq!(
        db.count("SELECT count(*) FROM core_asset_registry_all")
            .await,
        1
    );

    // verify passes everything on the demo's database, deep included.
    let out = db.cli(&["verify", "--deep"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(!text.contains("FAIL"), "{text}");
    assert!(!text.contains("SKIP"), "{text}");
    assert!(text.contains("PASS  deep"), "{text}");
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
    ok(&db.cli(&["assets", "add", "AUDUSD", "--class", "fx"]));
    ok(&db.cli(&["sync"]));
    let out = db.cli(&["status", "--timeframe", "H1", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["tasks"][0]["timeframe"], "1h");
    let sample = sample_path();
    let sample = sample.to_str().unwrap();
    for (args, message) in [
        (&["status", "--timeframe", "1M"][..], "ambiguous"),
        (&["export", "AUDUSD", "1M"], "write 1m for minutes"),
        (&["status", "--timeframe", "7m"], "unknown task timeframe"),
        (&["status", "--symbol", "NOPE"], "unknown symbol NOPE"),
        (&["quality", "--symbol", "NOPE"], "unknown symbol NOPE"),
        (&["export", "NOPE", "1h"], "unknown symbol NOPE"),
        (
            &["ingest", "--symbol", "NOPE", sample],
            "unknown symbol NOPE",
        ),
        (
            &["verify", "--deep", "--symbol", "NOPE"],
            "unknown symbol NOPE",
        ),
        (&["alerts", "--no-such-flag"], "unexpected argument"),
        (
            &["export", "AUDUSD", "1h", "--limit", "3"],
            "unexpected argument",
        ),
        (&["db", "down", "--to", "one"], "invalid value"),
        (&["quality", "--since", "yesterday-ish"], "unknown duration"),
    ] {
        let out = db.cli(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(message), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
    for (args, message) in [
        (&["task", "disable", "NOPE"][..], "unknown symbol NOPE"),
        (&["rebuild", "NOPE"], "unknown symbol NOPE"),
        (&["rebuild", "AUDUSD", "7m"], "unknown task timeframe"),
        (
            &["quarantine", "list", "--symbol", "NOPE"],
            "unknown symbol NOPE",
        ),
        (&["export", "AUDUSD", "7m"], "unknown timeframe"),
        (&["statsu"], "unrecognized subcommand"),
    ] {
        let out = db.cli(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: ") && first.contains(message),
            "{args:?}: {err}"
        );
        assert_eq!(err.matches("error:").count(), 1, "{args:?}: {err}");
    }
}

/// Every command and subcommand, as the words that name it.
fn every_command(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<Vec<String>>) {
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let mut p = path.clone();
        p.push(sub.get_name().to_string());
        out.push(p.clone());
        every_command(sub, p, out);
    }
}

#[test]
fn every_command_prints_usable_help() {
    use clap::CommandFactory;
    let root = barkeep::cli::Cli::command();
    let mut commands = Vec::new();
    every_command(&root, Vec::new(), &mut commands);
    assert!(commands.len() > 30, "{commands:?}");
    let mut undocumented = Vec::new();
    let mut sub = root.clone();
    sub.build();
    for path in &commands {
        let mut cmd = &sub;
        for word in path {
            cmd = cmd.find_subcommand(word).expect("a listed subcommand");
        }
        if cmd.get_about().is_none() {
            undocumented.push(format!("barkeep {}", path.join(" ")));
        }
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id != "help" && id != "version" && arg.get_help().is_none() && !arg.is_hide_set() {
                undocumented.push(format!("barkeep {} {id}", path.join(" ")));
            }
        }
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_barkeep"))
            .args(&args)
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let usage = format!("Usage: barkeep {}", path.join(" "));
        assert!(stdout(&out).contains(&usage), "{args:?}: {}", stdout(&out));
    }
    assert!(
        undocumented.is_empty(),
        "without help text: {undocumented:?}"
    );
}

#[tokio::test]
async fn ingest_exits_non_zero_on_a_file_with_no_loadable_row_or_too_many_bad_rows() {
    let db = TestDb::migrated().await;
    ok(&db.cli(&["assets", "add", "AUDUSD", "--class", "fx"]));
    let dir = tempfile::tempdir().unwrap();
    let all_bad = write(
        dir.path(),
        "bad.txt",
        b"20230601 000000;x;1;1;1;0\n20230601 000100;y;1;1;1;0\n",
    );
    let all_bad = all_bad.display().to_string();
    let out = db.cli(&["ingest", "--symbol", "AUDUSD", &all_bad]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "{all_bad}: no loadable row (2 read, 2 quarantined)"
        )),
        "{}",
        stderr(&out)
    );

    let mut some_bad = String::new();
    for m in 0..19 {
        some_bad.push_str(&format!("20230601 00{m:02}00;1.1;1.2;1.0;1.15;0\n"));
    }
    some_bad.push_str("20230601 002000;1.1;1.0;1.0;1.15;0\n");
    let file = write(dir.path(), "some_bad.txt", some_bad.as_bytes());
    let file = file.display().to_string();
    let out = db.cli(&["ingest", "--symbol", "AUDUSD", &file]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "1 of 20 is at the 5% default: {}",
        stderr(&out)
    );
    let out = db.cli(&[
        "ingest",
        "--symbol",
        "AUDUSD",
        &file,
        "--max-quarantined",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("1 of 20 rows quarantined (5.0%, above --max-quarantined 1)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(db.count("SELECT count(*) FROM data_bars").await, 19);
}

#[tokio::test]
async fn a_header_over_headerless_rows_is_one_message_and_mt4_needs_a_zone() {
    let db = TestDb::migrated().await;
    ok(&db.cli(&["assets", "add", "AUDUSD", "--class", "fx"]));
    let dir = tempfile::tempdir().unwrap();
    let histdata = write(
        dir.path(),
        "with_header.csv",
        b"DateTime;Open;High;Low;Close;Volume\n20230601 000000;1.1;1.2;1.0;1.15;0\n20230601 000100;1.1;1.2;1.0;1.15;0\n",
    );
    let histdata = histdata.display().to_string();
    let out = db.cli(&["ingest", "--symbol", "AUDUSD", &histdata]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.matches("is a header").count(), 1, "{err}");
    assert!(
        err.contains("histdata files have none: line 1 skipped"),
        "{err}"
    );
    assert_eq!(db.count("SELECT count(*) FROM data_bars").await, 2);
    assert_eq!(db.count("SELECT count(*) FROM ingest_quarantine").await, 0);

    let mt4 = write(
        dir.path(),
        "mt4.csv",
        b"Date,Time,Open,High,Low,Close,Volume\n2023.06.02,00:00,1.1,1.2,1.0,1.15,10\n2023.06.02,00:01,1.1,1.2,1.0,1.15,10\n",
    );

    let mt4 = mt4.display().to_string();
    let out = db.cli(&["ingest", "--symbol", "AUDUSD", &mt4]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("give --tz"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("quarantined"), "{}", stderr(&out));
    assert_eq!(db.count("SELECT count(*) FROM data_bars").await, 2);
    let out = db.cli(&[
        "ingest",
        "--symbol",
        "AUDUSD",
        &mt4,
        "--tz",
        "Europe/Athens",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        db.count("SELECT count(*) FROM data_bars WHERE ts_utc = '2023-06-01 21:00+00'")
            .await,
        1,
        "00:00 in Athens summer time is 21:00Z"
    );
}

#[tokio::test]
async fn the_header_message_is_printed_once_when_the_load_falls_back_to_merging() {
    let db = TestDb::migrated().await;
    ok(&db.cli(&["assets", "add", "AUDUSD", "--class", "fx"]));
    let dir = tempfile::tempdir().unwrap();
    let sample = std::fs::read_to_string(sample_path()).unwrap();
    // The sample's last bar stored first: the first batch of the file finds
    // no bar in its range, so the load starts on the new-range path, meets
    // the stored bar at its end, and reads the file again to merge.
    let last = sample.lines().last().unwrap();
    let tail = write(dir.path(), "tail.csv", format!("{last}\n").as_bytes());
    let tail = tail.display().to_string();
    ok(&db.cli(&["ingest", "--symbol", "AUDUSD", &tail]));
    let headed = write(
        dir.path(),
        "headed.csv",
        format!("DateTime;Open;High;Low;Close;Volume\n{sample}").as_bytes(),
    );
    let headed = headed.display().to_string();
    let out = db.cli(&["ingest", "--symbol", "AUDUSD", &headed, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["files"][0]["path"], "merge");
    assert_eq!(summary["total"]["loaded"], 16_874);
    assert_eq!(summary["total"]["duplicates"], 1);
    let err = stderr(&out);
    assert_eq!(err.matches("is a header").count(), 1, "{err}");
    assert_eq!(summary["files"][0]["notes"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn ingest_names_directories_devices_and_a_file_named_for_another_symbol() {
    let db = TestDb::migrated().await;
    ok(&db.cli(&["assets", "add", "AUDUSD", "--class", "fx"]));
    ok(&db.cli(&["assets", "add", "EURUSD", "--class", "fx"]));
    let dir = tempfile::tempdir().unwrap();
    let out = db.cli(&["ingest", "--symbol", "AUDUSD", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is a directory"), "{}", stderr(&out));
    let out = db.cli(&["ingest", "--symbol", "AUDUSD", "/dev/null"]);
    assert!(
        stderr(&out).contains("/dev/null is a device"),
        "{}",
        stderr(&out)
    );
    let file = write(
        dir.path(),
        "DAT_ASCII_EURUSD_M1_202306.csv",
        b"20230601 000000;1.1;1.2;1.0;1.15;0\n",
    );
    let file = file.display().to_string();
    let out = db.cli(&["ingest", "--symbol", "AUDUSD", &file]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the file name names EURUSD, but its rows are loaded for AUDUSD"),
        "{}",
        stderr(&out)
    );
    // HistData's names say the symbol whether it is registered or not.
    let unregistered = write(
        dir.path(),
        "DAT_ASCII_XAUUSD_M1_202306.csv",
        b"20230601 000100;1.1;1.2;1.0;1.15;0\n",
    );
    let unregistered = unregistered.display().to_string();
    let out = db.cli(&["ingest", "--symbol", "AUDUSD", &unregistered]);
    assert!(
        stderr(&out).contains("the file name names XAUUSD, but its rows are loaded for AUDUSD"),
        "{}",
        stderr(&out)
    );
    let own = write(
        dir.path(),
        "DAT_ASCII_AUDUSD_M1_202306.csv",
        b"20230601 000200;1.1;1.2;1.0;1.15;0\n",
    );
    let own = own.display().to_string();
    let out = db.cli(&["ingest", "--symbol", "AUDUSD", &own]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("names"), "{}", stderr(&out));
    let out = db.cli(&["ingest", "--symbol", "GBPUSD", &file]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown symbol is a usage error"
    );
    let empty = TestDb::empty().await;
    let out = empty.cli(&["ingest", "--symbol", "AUDUSD", &file]);
    assert!(
        stderr(&out).contains("run `barkeep db up`"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn the_embedded_cluster_trusts_only_its_own_socket() {
    let own = OwnCluster::start("barkeep-hba-", None);
    let hba = std::fs::read_to_string(own.cluster.data_dir().join("pg_hba.conf")).unwrap();
    let rules: Vec<&str> = hba
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(!rules.is_empty(), "{hba}");
    assert!(rules.iter().all(|l| l.starts_with("local")), "{hba}");
    let client = own.superuser("postgres").await;
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

#[tokio::test]
async fn a_repeated_local_hour_is_never_guessed_when_the_file_does_not_show_the_pass() {
    let db = TestDb::migrated().await;
    ok(&db.cli(&["assets", "add", "EURUSD", "--class", "fx"]));
    let dir = tempfile::tempdir().unwrap();
    let row = |hh: u32, mm: u32| format!("2023.11.05,{hh:02}:{mm:02},1.1,1.2,1.0,1.15,10\n");
    // New York falls back at 02:00 EDT to 01:00 EST on 2023-11-05: 01:xx occurs twice.
    // File A: 00:58 to the first pass's 01:59, then the second pass to 01:29.
    let mut a = row(0, 58) + &row(0, 59);
    (0..60).for_each(|m| a.push_str(&row(1, m)));
    (0..30).for_each(|m| a.push_str(&row(1, m)));
    // File B: the rest of the second pass, then 02:00 EST.
    let mut b = String::new();
    (30..60).for_each(|m| b.push_str(&row(1, m)));
    b.push_str(&row(2, 0));
    let a = write(dir.path(), "a.csv", a.as_bytes());
    let a = a.display().to_string();
    let b = write(dir.path(), "b.csv", b.as_bytes());
    let b = b.display().to_string();
    let tz = ["--tz", "America/New_York"];

    ok(&db.cli(&[&["ingest", "--symbol", "EURUSD", &a][..], &tz].concat()));
    assert_eq!(db.count("SELECT count(*) FROM data_bars").await, 92);
    assert_eq!(
        db.count("SELECT count(*) FROM data_bars WHERE ts_utc >= '2023-11-05 06:00+00'")
            .await,
        30,
        "the second pass of file A follows its first"
    );

    let out = db.cli(&[&["ingest", "--symbol", "EURUSD", &b][..], &tz].concat());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("occurs twice"), "{}", stderr(&out));
    assert_eq!(
        db.count("SELECT count(*) FROM data_bars").await,
        93,
        "only 02:00 EST loaded"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM ingest_quarantine WHERE reason LIKE '%--ambiguous earlier|later%'").await,
        30
    );

    ok(&db.cli(
        &[
            &["ingest", "--symbol", "EURUSD", &b, "--ambiguous", "later"][..],
            &tz,
        ]
        .concat(),
    ));
    assert_eq!(db.count("SELECT count(*) FROM data_bars").await, 123);
    assert_eq!(
        db.count("SELECT count(*) FROM data_bars WHERE ts_utc >= '2023-11-05 06:30+00' AND ts_utc < '2023-11-05 07:00+00'").await,
        30
    );
}
