//! The JSON API of `barkeep serve`. Every parameter is parsed into a
//! validated type (`Symbol`, `Timeframe`, an instant) before any query, and
//! every query binds its values; a bad request gets a 4xx with
//! `{"error": "..."}`.
//!
//! `/api/bars?symbol=&timeframe=&from=&to=&partial=&limit=`: stored bars in
//! time order, at most [`BARS_CAP`] per response. With `from`, the first
//! `limit` bars at or after it, and `next` (the `from` of the next page)
//! when more remain; without `from`, the newest `limit` bars before `to`.
//! `partial=true` appends the open bucket ([`crate::bars::open_bucket`]) on
//! the last page when it falls in the range. `as_of=` reads the bars as they
//! stood at that instant ([`crate::bars::as_of`], as `export --as-of` does);
//! it cannot be combined with `partial=true` (the open bucket is live only),
//! as `export` refuses `--partial` with `--as-of`. A page of 1,000 bars or
//! more is streamed: written on a blocking thread and sent in pieces of
//! about 128 KB as it is written ([`super::bars_json`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use deadpool_postgres::Object;
use serde_json::json;

use super::{bars_json, reads, AppState, BARS_CAP};
use crate::bars::{self, BarRecord};
use crate::model::calendar::parse_instant;
use crate::model::{Calendar, Symbol, Timeframe};
use crate::ops::{
    self,
    alerts::{AlertReport, AlertSettings},
    quality::{QualityReport, QualitySettings, Since},
    quarantine::QuarantineSummary,
    status::{self, StatusSettings, TaskState, TaskStatus},
};

/// Pages of at least this many bars (some 300 KB of JSON) are sent in
/// pieces as they are written.
const STREAMED_BARS: usize = 1_000;

/// About how many bytes of a streamed page go out at once.
const PIECE_BYTES: usize = 128 * 1024;

/// A failed request: its status and a one-line message, sent as JSON.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            message: message.into(),
        }
    }

    fn internal(e: anyhow::Error) -> Self {
        tracing::warn!("request failed: {e:#}");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("{e:#}"),
        }
    }

    fn unavailable(e: impl std::fmt::Display) -> Self {
        tracing::warn!("no database connection: {e}");
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("the database is unavailable: {e}"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.message }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        // An as-of read before a history prune asks for what is gone.
        if let Some(pruned) = e.downcast_ref::<crate::ops::history::HistoryPruned>() {
            return Self {
                status: StatusCode::GONE,
                message: pruned.to_string(),
            };
        }
        Self::internal(e)
    }
}

type ApiResult<T> = Result<T, ApiError>;
type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

/// The query parameters, refusing any name not in `allowed` (a typo such as
/// `form=` would otherwise be silently ignored). `token` is always allowed.
fn params(raw: Params, allowed: &[&str]) -> ApiResult<HashMap<String, String>> {
    let Query(map) = raw.map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))?;
    if let Some(unknown) = map
        .keys()
        .find(|k| *k != "token" && !allowed.contains(&k.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "unknown parameter {unknown:?}: expected {}",
            allowed.join(", ")
        )));
    }
    Ok(map)
}

/// A non-empty parameter.
fn given<'a>(map: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    map.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())
}

/// A whole-number parameter within `range`, when given.
fn whole_number(
    map: &HashMap<String, String>,
    name: &str,
    range: std::ops::RangeInclusive<i64>,
) -> ApiResult<Option<i64>> {
    given(map, name)
        .map(|raw| match raw.parse::<i64>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "{name}: expected a whole number from {} to {}, got {raw:?}",
                range.start(),
                range.end()
            ))),
        })
        .transpose()
}

fn instant(map: &HashMap<String, String>, name: &str) -> ApiResult<Option<DateTime<Utc>>> {
    given(map, name)
        .map(|raw| parse_instant(raw).map_err(|e| ApiError::bad_request(format!("{name}: {e}"))))
        .transpose()
}

fn flag(map: &HashMap<String, String>, name: &str) -> ApiResult<bool> {
    match given(map, name) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "{name}: expected true or false, got {other:?}"
        ))),
    }
}

async fn client(state: &AppState) -> ApiResult<Object> {
    state.pool.get().await.map_err(ApiError::unavailable)
}

/// The calendar of a registered symbol; 404 for an unknown one.
async fn calendar_of(client: &tokio_postgres::Client, symbol: &Symbol) -> ApiResult<Calendar> {
    let row = client
        .query_opt(
            "SELECT asset_class FROM core_asset_registry_all WHERE canonical_symbol = $1",
            &[&symbol.as_str()],
        )
        .await
        .map_err(|e| ApiError::internal(anyhow::Error::new(e).context("reading the registry")))?;
    match row {
        Some(r) => Ok(Calendar::for_asset_class(r.get::<_, &str>(0))),
        None => Err(ApiError::not_found(format!("unknown symbol {symbol}"))),
    }
}

/// One page of `/api/bars`.
#[derive(Debug, serde::Serialize)]
pub struct BarsPage {
    pub symbol: String,
    pub timeframe: Timeframe,
    pub calendar: &'static str,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub limit: i64,
    /// The instant the bars are read as of; null for the live bars.
    pub as_of: Option<DateTime<Utc>>,
    pub count: usize,
    pub bars: Vec<BarRecord>,
    /// `from` of the next page; null on the last one.
    pub next: Option<DateTime<Utc>>,
}

/// `GET /api/bars`.
pub async fn bars(State(state): State<Arc<AppState>>, raw: Params) -> ApiResult<Response> {
    let map = params(
        raw,
        &[
            "symbol",
            "timeframe",
            "from",
            "to",
            "partial",
            "limit",
            "as_of",
        ],
    )?;
    let symbol =
        given(&map, "symbol").ok_or_else(|| ApiError::bad_request("symbol is required"))?;
    let symbol = Symbol::parse(symbol).map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    let timeframe =
        given(&map, "timeframe").ok_or_else(|| ApiError::bad_request("timeframe is required"))?;
    let timeframe =
        Timeframe::parse(timeframe).map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    let from = instant(&map, "from")?;
    let to = instant(&map, "to")?;
    if let (Some(f), Some(t)) = (from, to) {
        if f > t {
            return Err(ApiError::bad_request(format!(
                "from ({f}) is after to ({t})"
            )));
        }
    }
    let partial = flag(&map, "partial")?;
    let limit = match given(&map, "limit") {
        None => BARS_CAP,
        Some(raw) => {
            let n: i64 = raw.parse().map_err(|_| {
                ApiError::bad_request(format!("limit: expected a whole number, got {raw:?}"))
            })?;
            if !(1..=BARS_CAP).contains(&n) {
                return Err(ApiError::bad_request(format!(
                    "limit {n} is outside 1..={BARS_CAP} (the cap per request; page on with `next`)"
                )));
            }
            n
        }
    };
    let as_of = instant(&map, "as_of")?;
    if partial && as_of.is_some() {
        return Err(ApiError::bad_request(
            "partial=true asks for the live open bucket, which has no earlier version: drop partial or as_of",
        ));
    }

    let client = client(&state).await?;
    let range = bars::Range {
        from,
        to,
        // One more than asked tells whether another page follows.
        limit: Some(if from.is_some() { limit + 1 } else { limit }),
    };
    // The symbol's calendar and its bars, pipelined on the connection: an
    // unknown symbol has no bars, and gets its 404 from the first.
    let rows = async {
        match as_of {
            Some(t) => bars::as_of(&client, symbol.as_str(), timeframe, range, t).await,
            None => bars::stored(&client, symbol.as_str(), timeframe, range).await,
        }
    };
    let (cal, rows) = tokio::join!(calendar_of(&client, &symbol), rows);
    let cal = cal?;
    let mut rows = rows?;
    let mut next = None;
    if rows.len() as i64 > limit {
        next = rows.pop().map(|b| b.ts_utc);
    }
    if partial && next.is_none() {
        if let Some(open) =
            bars::open_bucket(&client, symbol.as_str(), cal, timeframe, Utc::now()).await?
        {
            let in_range =
                from.is_none_or(|f| open.ts_utc >= f) && to.is_none_or(|t| open.ts_utc < t);
            let after_last = rows.last().is_none_or(|b| b.ts_utc < open.ts_utc);
            if in_range && after_last {
                rows.push(open);
            }
        }
    }
    let page = BarsPage {
        symbol: symbol.as_str().to_string(),
        timeframe,
        calendar: cal.as_str(),
        from,
        to,
        limit,
        as_of,
        count: rows.len(),
        bars: rows,
        next,
    };
    let json = [(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    )];
    if page.bars.len() < STREAMED_BARS {
        let body = bars_json::write(&page)
            .map_err(|e| ApiError::internal(anyhow::Error::new(e).context("encoding the bars")))?;
        return Ok((json, body).into_response());
    }
    // A large page is written on a blocking thread and sent piece by piece
    // as it is written. A failure half way ends the stream with an error, so
    // the client sees a broken response, never a short one that looks whole.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    tokio::task::spawn_blocking(move || {
        let written = bars_json::write_in_pieces(&page, PIECE_BYTES, |piece| {
            tx.blocking_send(Ok(piece)).is_ok()
        });
        if let Err(e) = written {
            tracing::warn!("encoding the bars: {e}");
            let _ = tx.blocking_send(Err(std::io::Error::other(e)));
        }
    });
    let pieces = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|piece| (piece, rx))
    });
    Ok((json, axum::body::Body::from_stream(pieces)).into_response())
}

/// The most tasks one `/api/tasks` page may ask for.
const TASKS_PAGE_CAP: i64 = 100_000;

/// `GET /api/tasks?symbol=&timeframe=&status=&limit=&offset=`: the tasks as
/// `barkeep status` reports them, in its order. Without `limit`, every
/// matching task from `offset` on; `X-Total-Count` says how many match, so
/// a client paging with `limit` and `offset` knows when it has them all.
pub async fn tasks(State(state): State<Arc<AppState>>, raw: Params) -> ApiResult<Response> {
    let map = params(raw, &["symbol", "timeframe", "status", "limit", "offset"])?;
    let symbol = given(&map, "symbol")
        .map(|s| Symbol::parse(s).map_err(|e| ApiError::bad_request(format!("{e:#}"))))
        .transpose()?;
    let timeframe = given(&map, "timeframe")
        .map(|t| Timeframe::parse_derived(t).map_err(|e| ApiError::bad_request(format!("{e:#}"))))
        .transpose()?;
    let status = given(&map, "status")
        .map(|s| TaskState::parse(s).map_err(|e| ApiError::bad_request(format!("{e:#}"))))
        .transpose()?;
    let limit = whole_number(&map, "limit", 1..=TASKS_PAGE_CAP)?;
    let offset = whole_number(&map, "offset", 0..=1_000_000_000)?.unwrap_or(0);
    let settings = StatusSettings {
        symbol,
        timeframe,
        status,
        quarantine_newest: 0,
    };
    let client = client(&state).await?;
    let (_, tasks) = status::tasks(&client, &settings).await?;
    let total = tasks.len();
    // Both are within 0..=1e9, so they fit in usize.
    let page: Vec<TaskStatus> = tasks
        .into_iter()
        .skip(offset as usize)
        .take(limit.map_or(usize::MAX, |n| n as usize))
        .collect();
    Ok(([("x-total-count", total.to_string())], Json(page)).into_response())
}

/// `GET /api/alerts`: the report of `barkeep alerts --json`, with its
/// default thresholds.
pub async fn alerts(
    State(state): State<Arc<AppState>>,
    raw: Params,
) -> ApiResult<Json<AlertReport>> {
    params(raw, &[])?;
    let client = client(&state).await?;
    Ok(Json(
        ops::alerts::alerts(&client, &AlertSettings::default()).await?,
    ))
}

/// `GET /api/quality?days=`: the report of `barkeep quality --json` over
/// the `days` days before the newest 1m bar (so a database fed from history
/// reads as well as a live one); every line, one per symbol and timeframe.
pub async fn quality(
    State(state): State<Arc<AppState>>,
    raw: Params,
) -> ApiResult<Json<QualityReport>> {
    let map = params(raw, &["days"])?;
    let days = whole_number(&map, "days", 1..=3660)?.unwrap_or(7);
    let client = client(&state).await?;
    let since = match reads::newest_1m(&client).await? {
        Some(newest) => Since::At(newest - chrono::Duration::days(days)),
        // No bar yet: nothing to measure, whatever the window.
        None => Since::All,
    };
    let settings = QualitySettings {
        since,
        ..QualitySettings::default()
    };
    Ok(Json(ops::quality::quality(&client, &settings).await?))
}

/// `GET /api/runs?limit=`: the newest runs of the run log.
pub async fn runs(
    State(state): State<Arc<AppState>>,
    raw: Params,
) -> ApiResult<Json<Vec<reads::RunView>>> {
    let map = params(raw, &["limit"])?;
    let limit = whole_number(&map, "limit", 1..=1000)?.unwrap_or(50);
    let client = client(&state).await?;
    Ok(Json(reads::runs(&client, limit).await?))
}

/// `GET /api/quarantine`: its size and newest entries, as `barkeep
/// status` reports them.
pub async fn quarantine(
    State(state): State<Arc<AppState>>,
    raw: Params,
) -> ApiResult<Json<QuarantineSummary>> {
    params(raw, &[])?;
    let client = client(&state).await?;
    Ok(Json(ops::quarantine::summary(&client, 10).await?))
}

/// `GET /api/symbols`.
pub async fn symbols(
    State(state): State<Arc<AppState>>,
    raw: Params,
) -> ApiResult<Json<Vec<reads::SymbolView>>> {
    params(raw, &[])?;
    let client = client(&state).await?;
    Ok(Json(reads::symbols(&client).await?))
}

/// `GET /api/health`: the database answers as the reader role; task counts
/// by status and the newest 1m bar.
pub async fn health(
    State(state): State<Arc<AppState>>,
    raw: Params,
) -> ApiResult<Json<serde_json::Value>> {
    params(raw, &[])?;
    let client = client(&state).await?;
    let row = client
        .query_one(
            &format!(
                "SELECT current_user::text, now(), (SELECT max(latest_1m) FROM ({}) n)",
                reads::NEWEST_1M
            ),
            &[],
        )
        .await
        .map_err(|e| ApiError::internal(anyhow::Error::new(e).context("asking the database")))?;
    let role: String = row.get(0);
    let server_time: DateTime<Utc> = row.get(1);
    let newest: Option<DateTime<Utc>> = row.get(2);
    let counts = client
        .query(
            "SELECT status, count(*) FROM data_agg_state GROUP BY status",
            &[],
        )
        .await
        .map_err(|e| ApiError::internal(anyhow::Error::new(e).context("counting tasks")))?;
    let tasks: BTreeMap<String, i64> = counts.iter().map(|r| (r.get(0), r.get(1))).collect();
    Ok(Json(json!({
        "status": "ok",
        "database": "ok",
        "role": role,
        "server_time": server_time,
        "newest_1m": newest,
        "tasks": tasks,
    })))
}

/// `GET /health`: the process answers (no token, no database).
pub async fn liveness() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Any other path.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no such path {}", uri.path()))
}
