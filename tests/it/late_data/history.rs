//! The history kept for as-of reads: `export --as-of` returns the bars as
//! they stood; `history prune` and a worker keeping N days delete what is
//! older, keep as-of reads after the cut and refuse those before it.

use barkeep::model::AssetClass;
use barkeep::synth::{generate, SynthBar};
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use tokio_postgres::Client;

use crate::common::{stderr, TestDb};
use crate::fixtures::{db_now, load_bars, ok, register, rust_ladder};

use super::{assert_reference, fx_spec, model_of};

/// First minute of the data of [`caught_up`].
const CAUGHT_UP_FROM: &str = "2025-07-06T00:00:00Z";

/// `days` of synthetic fx bars of `symbol` (seed `seed`) loaded and caught
/// up by the worker: the database, a client, the bars and a minute under
/// live 5m and 1h bars (a correction of it changes every timeframe to 1d).
async fn caught_up(
    symbol: &str,
    days: i64,
    seed: u64,
) -> (TestDb, Client, Vec<SynthBar>, DateTime<Utc>) {
    let start = CAUGHT_UP_FROM;
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let bars: Vec<SynthBar> = generate(&fx_spec(start, days, seed)).collect();
    register(&c, symbol, AssetClass::Fx, start).await;
    load_bars(&c, symbol, &bars).await;
    rust_ladder(&db).await;
    let minute = first_minute_under_live_5m_and_1h_bars(&c, symbol).await;
    (db, c, bars, minute)
}

/// Correct one stored minute through plain SQL: its high raised by `by`.
async fn raise_high(c: &Client, symbol: &str, minute: DateTime<Utc>, by: f64) {
    let n = c
        .execute(
            "UPDATE data_bars SET high = high + $3 WHERE canonical_symbol = $1 AND ts_utc = $2",
            &[&symbol, &minute, &by],
        )
        .await
        .unwrap();
    assert_eq!(n, 1, "{symbol} {minute}");
}

/// Make every piece of kept history `days` older.
async fn age_history(c: &Client, days: i32) {
    c.execute(
        "UPDATE derived_data_bars SET deleted_at = deleted_at - make_interval(days => $1)
         WHERE deleted_at IS NOT NULL",
        &[&days],
    )
    .await
    .unwrap();
    c.execute(
        "UPDATE data_bars_history SET valid_from = valid_from - make_interval(days => $1),
                                      valid_to = valid_to - make_interval(days => $1)",
        &[&days],
    )
    .await
    .unwrap();
}

/// The first 1m bar from 2025-07-08 10:00 on whose 5m and 1h bars are
/// live: a correction there changes every timeframe up to 1d.
async fn first_minute_under_live_5m_and_1h_bars(c: &Client, symbol: &str) -> DateTime<Utc> {
    c.query_one(
        "SELECT min(b.ts_utc) FROM data_bars b
         WHERE b.canonical_symbol = $1 AND b.ts_utc >= (
           SELECT min(f.ts_utc) FROM derived_data_bars f
           JOIN derived_data_bars h ON h.canonical_symbol = f.canonical_symbol
             AND h.timeframe = '1h' AND h.ts_utc = date_trunc('hour', f.ts_utc)
             AND h.deleted_at IS NULL
           WHERE f.canonical_symbol = $1 AND f.timeframe = '5m' AND f.deleted_at IS NULL
             AND f.ts_utc >= '2025-07-08T10:00:00Z')",
        &[&symbol],
    )
    .await
    .unwrap()
    .get(0)
}

/// Retired versions and earlier 1m values of the symbol: (derived, 1m).
async fn history_rows(c: &Client, symbol: &str) -> (i64, i64) {
    let r = c
        .query_one(
            "SELECT (SELECT count(*) FROM derived_data_bars
                     WHERE canonical_symbol = $1 AND deleted_at IS NOT NULL),
                    (SELECT count(*) FROM data_bars_history WHERE canonical_symbol = $1)",
            &[&symbol],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

/// Bars of `export … --format json`, optionally as of an instant.
fn export(db: &TestDb, symbol: &str, tf: &str, as_of: Option<DateTime<Utc>>) -> Value {
    let stamp = as_of.map(|t| t.to_rfc3339());
    let mut args = vec!["export", symbol, tf, "--format", "json"];
    if let Some(s) = &stamp {
        args.extend(["--as-of", s.as_str()]);
    }
    let out = db.cli(&args);
    ok(&out);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn export_as_of_an_instant_returns_the_bars_as_they_stood() {
    let (db, c, bars, t) = caught_up("ASOF", 8, 71).await;
    let before = db_now(&c).await;
    let old: Vec<Value> = ["1m", "1h", "1d"]
        .iter()
        .map(|tf| export(&db, "ASOF", tf, None))
        .collect();
    // A correction: one minute's high, through plain SQL, in a 5m bucket
    // whose bar and hour bar exist (so every timeframe up to 1d changes).
    raise_high(&c, "ASOF", t, 1.0).await;
    rust_ladder(&db).await;
    let after = db_now(&c).await;
    for (i, tf) in ["1m", "1h", "1d"].iter().enumerate() {
        assert_eq!(
            export(&db, "ASOF", tf, Some(before)),
            old[i],
            "{tf} as of before the correction"
        );
        let now = export(&db, "ASOF", tf, Some(after));
        assert_ne!(now, old[i], "{tf} after the correction");
        assert_eq!(
            now,
            export(&db, "ASOF", tf, None),
            "{tf}: as of now is live"
        );
    }
    let mut model = model_of(&bars);
    model.get_mut(&t).unwrap().high += 1.0;
    assert_reference(&db, "ASOF", true, &model, CAUGHT_UP_FROM).await;
}

#[tokio::test]
async fn a_worker_keeping_n_days_of_history_prunes_what_is_older() {
    let (db, c, _, minute) = caught_up("KEEP", 3, 72).await;
    // One correction's history made 40 days old, then a second correction.
    raise_high(&c, "KEEP", minute, 1.0).await;
    rust_ladder(&db).await;
    let (old_versions, old_revisions) = history_rows(&c, "KEEP").await;
    assert!(old_versions > 0 && old_revisions == 1);
    age_history(&c, 40).await;
    raise_high(&c, "KEEP", minute, 1.0).await;
    rust_ladder(&db).await;
    let (versions, revisions) = history_rows(&c, "KEEP").await;
    assert!(versions > old_versions && revisions == 2);

    let keep = |db: &TestDb| -> Value {
        let out = db.cli(&[
            "run",
            "--once",
            "--no-sync",
            "--keep-history-days",
            "30",
            "--json",
        ]);
        ok(&out);
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["history_pruned"].clone()
    };
    let t = db_now(&c).await;
    let pruned = keep(&db);
    assert_eq!(pruned["bar_versions"], old_versions, "{pruned}");
    assert_eq!(pruned["revisions_1m"], 1, "{pruned}");
    assert_eq!(
        history_rows(&c, "KEEP").await,
        (versions - old_versions, 1),
        "the recent correction's history stays"
    );
    let floor: DateTime<Utc> = c
        .query_one("SELECT max(pruned_before) FROM history_prunes", &[])
        .await
        .unwrap()
        .get(0);
    let since = floor - (t - Duration::days(30));
    assert!(
        since >= Duration::zero() && since < Duration::minutes(5),
        "pruned before {floor}, 30 days before {t}"
    );
    let out = db.cli(&[
        "export",
        "KEEP",
        "1h",
        "--as-of",
        &(t - Duration::days(35)).to_rfc3339(),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("was pruned"));

    // Nothing older than 30 days is left: nothing is deleted or recorded.
    assert_eq!(keep(&db), Value::Null);
    assert_eq!(db.count("SELECT count(*) FROM history_prunes").await, 1);
    let out = db.cli(&["run", "--once", "--keep-history-days", "0"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("keep-history-days"));

    // A worker left running prunes at start.
    age_history(&c, 40).await;
    let mut worker = db
        .command(&["run", "--no-sync", "--keep-history-days", "30"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while history_rows(&c, "KEEP").await != (0, 0) {
        if std::time::Instant::now() > deadline {
            let _ = worker.kill();
            panic!(
                "the running worker did not prune: {:?}",
                history_rows(&c, "KEEP").await
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = worker.kill();
    let _ = worker.wait();
    assert_eq!(db.count("SELECT count(*) FROM history_prunes").await, 2);
}

#[tokio::test]
async fn pruning_history_keeps_as_of_reads_after_it_and_refuses_those_before() {
    let (db, c, _, minute) = caught_up("PRUNE", 3, 72).await;
    let t0 = db_now(&c).await;
    // Two corrections of one minute, each re-aggregated, with an instant
    // between them: history then holds the original and the first correction.
    raise_high(&c, "PRUNE", minute, 1.0).await;
    rust_ladder(&db).await;
    let t1 = db_now(&c).await;
    let at_t1: Vec<Value> = ["1m", "1h", "1d"]
        .iter()
        .map(|tf| export(&db, "PRUNE", tf, Some(t1)))
        .collect();
    raise_high(&c, "PRUNE", minute, 1.0).await;
    rust_ladder(&db).await;
    let (versions, revisions) = history_rows(&c, "PRUNE").await;
    assert!(versions >= 8 && revisions == 2, "{versions} {revisions}");

    // Without --force: a count and a refusal, nothing deleted.
    let stamp = t1.to_rfc3339();
    let out = db.cli(&["history", "prune", "--before", &stamp]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("add --force"), "{err}");
    assert!(err.contains("1 earlier 1m value"), "{err}");
    assert_eq!(history_rows(&c, "PRUNE").await, (versions, revisions));
    let future = (Utc::now() + Duration::days(1)).to_rfc3339();
    let out = db.cli(&["history", "prune", "--before", &future, "--force"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("in the future"));
    assert_eq!(history_rows(&c, "PRUNE").await, (versions, revisions));

    let status = |db: &TestDb| -> Value {
        let out = db.cli(&["status", "--json"]);
        ok(&out);
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["history"].clone()
    };
    let kept = status(&db);
    assert_eq!(kept["bar_versions"], versions, "{kept}");
    assert_eq!(kept["revisions_1m"], revisions, "{kept}");
    assert_eq!(kept["pruned_before"], Value::Null, "{kept}");

    let out = db.cli(&["history", "prune", "--before", &stamp, "--force"]);
    ok(&out);
    let (left, left_1m) = history_rows(&c, "PRUNE").await;
    let kept = status(&db);
    assert_eq!(
        (&kept["bar_versions"], &kept["revisions_1m"]),
        (&left.into(), &left_1m.into())
    );
    assert_eq!(
        kept["pruned_before"]
            .as_str()
            .map(|s| s.parse::<DateTime<Utc>>().unwrap()),
        Some(t1),
        "{kept}"
    );
    assert!(left > 0 && left < versions, "{left} of {versions}");
    assert_eq!(left_1m, 1, "the value the second correction replaced stays");
    for (i, tf) in ["1m", "1h", "1d"].iter().enumerate() {
        assert_eq!(
            export(&db, "PRUNE", tf, Some(t1)),
            at_t1[i],
            "{tf} as of t1"
        );
        let now = db_now(&c).await;
        assert_eq!(
            export(&db, "PRUNE", tf, Some(now)),
            export(&db, "PRUNE", tf, None),
            "{tf} as of now is live"
        );
    }
    let out = db.cli(&["export", "PRUNE", "1h", "--as-of", &t0.to_rfc3339()]);
    let err = stderr(&out);
    assert!(!out.status.success() && out.stdout.is_empty(), "{err}");
    assert!(err.contains("was pruned"), "{err}");
}
