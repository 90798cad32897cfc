//! `/api/alerts` and `/api/tasks` say what `barkeep alerts` and
//! `barkeep status` say, and the task list pages with a total count.

use serde_json::Value;

use crate::common::stderr;
use crate::fixtures::demo_db;

use super::{get_json, get_with_head, serve};

/// An alert report with the parts that move with the clock taken out: the
/// report's time, and the digits of the messages (minutes elapsed).
fn steady(mut report: Value) -> Value {
    report.as_object_mut().unwrap().remove("now");
    for alert in report["alerts"].as_array_mut().unwrap() {
        let message: String = alert["message"]
            .as_str()
            .unwrap()
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .collect();
        alert["message"] = Value::String(message);
    }
    report
}

#[tokio::test]
async fn the_api_reports_the_alerts_and_tasks_the_command_line_reports() {
    let db = demo_db().await;
    let c = db.client().await;
    // Three problems: a hard_failed task, a failure streak, a mandatory task
    // without a success for two hours.
    c.batch_execute(
        "UPDATE data_agg_state SET status = 'hard_failed', hard_fail_streak = 3,
           last_error = 'bad source bar' WHERE timeframe = '1d';
         UPDATE data_agg_state SET hard_fail_streak = 1, last_error = 'timeout'
           WHERE timeframe = '4h';
         UPDATE data_agg_state SET last_successful_at_utc = now() - interval '2 hours'
           WHERE timeframe = '15m';",
    )
    .await
    .unwrap();
    let server = serve(&db, &[]);
    let (status, api) = get_json(server.addr, "/api/alerts", None);
    assert_eq!(status, 200, "{api}");
    let out = db.cli(&["alerts", "--json"]);
    assert_eq!(out.status.code(), Some(2), "critical: {}", stderr(&out));
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&str> = api["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    for kind in ["hard_failed", "fail_streak", "lag"] {
        assert!(kinds.contains(&kind), "{kind}: {api}");
    }
    assert_eq!(api["severity"], "critical");
    assert_eq!(steady(api), steady(cli));

    let (status, tasks) = get_json(server.addr, "/api/tasks", None);
    assert_eq!(status, 200, "{tasks}");
    let out = db.cli(&["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let keyed = |tasks: &Value| -> Vec<Value> {
        tasks
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let mut t = t.clone();
                t.as_object_mut().unwrap().remove("minutes_since_success");
                t
            })
            .collect()
    };
    assert_eq!(keyed(&tasks), keyed(&report["tasks"]));
    let (_, failed) = get_json(server.addr, "/api/tasks?status=hard-failed", None);
    assert_eq!(failed.as_array().unwrap().len(), 1, "{failed}");
    assert_eq!(failed[0]["timeframe"], "1d");

    // Pages: `limit` and `offset` cut the same list, and the total matching
    // is in a header.
    let all = keyed(&tasks);
    assert!(all.len() >= 4, "{tasks}");
    let total = format!("x-total-count: {}\r\n", all.len());
    let (status, head, body) = get_with_head(server.addr, "/api/tasks?limit=2&offset=1", None);
    assert_eq!(status, 200, "{body}");
    assert!(head.contains(&total), "{head}");
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(keyed(&page), all[1..3].to_vec());
    let (_, head, body) = get_with_head(
        server.addr,
        &format!("/api/tasks?offset={}", all.len() - 1),
        None,
    );
    assert!(head.contains(&total), "{head}");
    let last: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(keyed(&last), all[all.len() - 1..].to_vec());
    let (_, past) = get_json(server.addr, "/api/tasks?offset=1000000", None);
    assert_eq!(past, Value::Array(vec![]));
    let (_, head, _) = get_with_head(server.addr, "/api/tasks?status=hard-failed&limit=5", None);
    assert!(head.contains("x-total-count: 1\r\n"), "{head}");
}
