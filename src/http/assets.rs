//! The dashboard: one HTML page with its style, its script and the vendored
//! TradingView `lightweight-charts` inlined, all embedded in the binary at
//! build time, so the page makes no request but to this server's API and
//! works with no network. Inlining also means a token given as `?token=`
//! is needed for the page only; the page's script sends it as a header.

use std::sync::OnceLock;

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("../../assets/dashboard.html");
const STYLE: &str = include_str!("../../assets/dashboard.css");
const SCRIPT: &str = include_str!("../../assets/dashboard.js");
const CHARTS: &str = include_str!(
    "../../assets/vendor/lightweight-charts/lightweight-charts.standalone.production.js"
);

/// The page with everything inlined, built once.
pub fn page() -> &'static str {
    static BUILT: OnceLock<String> = OnceLock::new();
    BUILT.get_or_init(|| {
        PAGE.replace("/*STYLE*/", STYLE)
            .replace("/*CHARTS*/", CHARTS)
            .replace("/*SCRIPT*/", SCRIPT)
    })
}

/// `GET /`.
pub async fn index() -> Response {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-cache"),
        ],
        page(),
    )
        .into_response()
}
