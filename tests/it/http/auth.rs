//! Who may read: the token guards every path but /health, the server
//! reads as the reader role, and a non-loopback bind without a token
//! refuses to start.

use crate::common::{stderr, stdout, TestDb};

use super::{get, get_json, serve};

#[tokio::test]
async fn a_non_loopback_bind_without_a_token_refuses_to_start() {
    let db = TestDb::migrated().await;
    for args in [
        vec!["serve", "--addr", "0.0.0.0:0"],
        vec!["serve", "--addr", "0.0.0.0:0", "--token", " "],
    ] {
        let out = db.cli(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("token"), "{}", stderr(&out));
        assert!(
            stdout(&out).is_empty(),
            "nothing listened: {}",
            stdout(&out)
        );
    }
}

#[tokio::test]
async fn the_token_guards_every_path_but_health() {
    let db = TestDb::migrated().await;
    let server = serve(&db, &["--token", "s3cret"]);
    let (status, body) = get_json(server.addr, "/health", None);
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    for path in [
        "/",
        "/api/tasks",
        "/api/bars?symbol=X&timeframe=1h",
        "/metrics",
        "/nope",
    ] {
        let (status, body) = get_json(server.addr, path, None);
        assert_eq!(status, 401, "{path}");
        assert!(body["error"].as_str().unwrap().contains("token"), "{path}");
        let (status, body) = get_json(server.addr, path, Some("s3cret!"));
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("wrong token")),
            "{path}"
        );
    }
    let (status, _) = get(server.addr, "/api/tasks", Some("s3cret"));
    assert_eq!(status, 200);
    let (status, page) = get(server.addr, "/?token=s3cret", None);
    assert_eq!(status, 200);
    assert!(
        page.contains("LightweightCharts"),
        "the chart library is inlined"
    );
    // The server reads as the reader role, whoever the URL names.
    let (_, health) = get_json(server.addr, "/api/health", Some("s3cret"));
    assert_eq!(health["role"], "barkeep_reader");
}
