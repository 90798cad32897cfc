//! The dashboard in headless Chromium: it renders the tasks and draws every
//! bar of the chart, and with more tasks than it draws it says how many it
//! leaves out.

use std::process::{Command, Stdio};

use crate::common::stderr;
use crate::fixtures::demo_db;

use super::serve;

/// Headless Chromium with a fresh profile and nothing that calls home.
fn chromium(profile: &std::path::Path, extra: &[&str], url: &str) -> std::process::Output {
    let binary = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect(
            "Chromium is required for the dashboard test: apt-get install chromium (.ci/run does)",
        );
    let user_data = format!("--user-data-dir={}", profile.display());
    let mut args = vec![
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--window-size=1400,1900",
        "--virtual-time-budget=20000",
        user_data.as_str(),
    ];
    args.extend_from_slice(extra);
    args.push(url);
    Command::new(binary)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .expect("running chromium")
}

/// The `data-*` attributes of the page's self-check element.
fn selfcheck(dom: &str) -> std::collections::HashMap<String, String> {
    let start = dom
        .find("id=\"selfcheck\"")
        .expect("the page has its self-check element");
    let tag_start = dom[..start].rfind('<').unwrap();
    let tag = &dom[tag_start..tag_start + dom[tag_start..].find('>').unwrap()];
    tag.split(" data-")
        .skip(1)
        .filter_map(|kv| {
            let (k, v) = kv.split_once("=\"")?;
            Some((k.to_string(), v[..v.find('"')?].to_string()))
        })
        .collect()
}

#[tokio::test]
async fn the_dashboard_renders_tasks_and_a_drawn_chart_in_chromium() {
    let db = demo_db().await;
    let server = serve(&db, &["--token", "t0ken"]);
    let profile = tempfile::tempdir().unwrap();
    let url = format!(
        "http://{}/?token=t0ken&symbol=AUDUSD&timeframe=1h",
        server.addr
    );
    let out = chromium(profile.path(), &["--dump-dom"], &url);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let check = selfcheck(&dom);
    assert_eq!(
        check.get("errors").map(String::as_str),
        Some(""),
        "{check:?}"
    );
    assert_eq!(
        check.get("ready").map(String::as_str),
        Some("1"),
        "{check:?}"
    );
    assert_eq!(check["task-rows"], "6", "one row per task: {check:?}");
    let hours = db
        .count(
            "SELECT count(*) FROM derived_data_bars WHERE timeframe = '1h' AND deleted_at IS NULL",
        )
        .await;
    assert_eq!(
        check["bars"],
        hours.to_string(),
        "the chart got every 1h bar: {check:?}"
    );
    let pixels: usize = check["candle-pixels"].parse().unwrap();
    assert!(pixels > 2000, "candles are drawn on the canvas: {check:?}");
    for text in [
        "AUDUSD",
        "hard_failed",
        "Quality per timeframe",
        "Recent runs",
    ] {
        assert!(dom.contains(text), "{text}");
    }
    assert!(
        dom.contains("<td>1w</td>"),
        "the task table lists the ladder"
    );

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let flag = format!("--screenshot={}", shot.display());
    let profile = tempfile::tempdir().unwrap();
    let out = chromium(profile.path(), &[flag.as_str()], &url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).expect("the screenshot was saved");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    if let Ok(to) = std::env::var("BARKEEP_SAVE_SCREENSHOT") {
        std::fs::copy(&shot, to).unwrap();
    }

    // More tasks than the table draws: the first 500 are drawn and the
    // count says how many there are.
    db.client()
        .await
        .batch_execute(
            "INSERT INTO core_asset_registry_all (canonical_symbol, asset_class, active)
             SELECT 'X' || lpad(i::text, 3, '0') || 'USD', 'crypto', true
             FROM generate_series(1, 100) i",
        )
        .await
        .unwrap();
    let out = db.cli(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let tasks = db.count("SELECT count(*) FROM data_agg_state").await;
    assert!(tasks > 500, "{tasks} tasks");
    let profile = tempfile::tempdir().unwrap();
    let out = chromium(profile.path(), &["--dump-dom"], &url);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    let check = selfcheck(&dom);
    assert_eq!(check["task-rows"], "500", "{check:?}");
    assert!(
        dom.contains(&format!(
            "{tasks} (first 500 shown; filter to see the rest)"
        )),
        "the count says what is not drawn"
    );
}
