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
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use deadpool_postgres::Object;
use serde_json::json;

use super::bars_json::{self, BarsPage};
pub use super::error::ApiError;
use super::error::ApiResult;
use super::{AppState, BARS_CAP};
use crate::bars;
use crate::model::calendar::parse_instant;
use crate::model::Symbol;
use crate::model::{Calendar, Timeframe};
use crate::ops::{
    self,
    alerts::{AlertReport, AlertSettings},
    quality::{QualityReport, QualitySettings, Since},
    quarantine::QuarantineSummary,
    status::{self, StatusSettings, TaskState, TaskStatus},
};
use crate::store::{self, registry::RegisteredSymbol, runs::LoggedRun};

/// Pages of at least this many bars (some 300 KB of JSON) are sent in
/// pieces as they are written.
const STREAMED_BARS: usize = 1_000;

/// About how many bytes of a streamed page go out at once.
const PIECE_BYTES: usize = 128 * 1024;

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
    store::registry::calendar_of(client, symbol)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("unknown symbol {symbol}")))
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
    let since = match store::bars::newest_1m(&client).await? {
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
) -> ApiResult<Json<Vec<LoggedRun>>> {
    let map = params(raw, &["limit"])?;
    let limit = whole_number(&map, "limit", 1..=1000)?.unwrap_or(50);
    let client = client(&state).await?;
    Ok(Json(store::runs::newest(&client, limit).await?))
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
) -> ApiResult<Json<Vec<RegisteredSymbol>>> {
    params(raw, &[])?;
    let client = client(&state).await?;
    Ok(Json(store::registry::symbols(&client).await?))
}

/// The answer of `/api/health`. Its fields are in alphabetical order,
/// the order the JSON has always had.
#[derive(Debug, serde::Serialize)]
pub struct Health {
    pub database: &'static str,
    pub newest_1m: Option<DateTime<Utc>>,
    pub role: String,
    pub server_time: DateTime<Utc>,
    pub status: &'static str,
    /// Tasks by status.
    pub tasks: BTreeMap<String, i64>,
}

/// `GET /api/health`: the database answers as the reader role; task counts
/// by status and the newest 1m bar.
pub async fn health(State(state): State<Arc<AppState>>, raw: Params) -> ApiResult<Json<Health>> {
    params(raw, &[])?;
    let client = client(&state).await?;
    let (session, newest_1m, tasks) = tokio::try_join!(
        store::session(&client),
        store::bars::newest_1m(&client),
        store::tasks::count_by_status(&client),
    )
    .map_err(ApiError::internal)?;
    Ok(Json(Health {
        database: "ok",
        newest_1m,
        role: session.role,
        server_time: session.server_time,
        status: "ok",
        tasks,
    }))
}

/// `GET /health`: the process answers (no token, no database).
pub async fn liveness() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Any other path.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no such path {}", uri.path()))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn health_is_written_as_the_json_map_it_replaced() {
        let at = Utc.with_ymd_and_hms(2025, 7, 1, 12, 0, 0).unwrap();
        let tasks: BTreeMap<String, i64> = [("idle".to_string(), 3), ("running".to_string(), 1)]
            .into_iter()
            .collect();
        let health = Health {
            database: "ok",
            newest_1m: Some(at),
            role: "barkeep_reader".into(),
            server_time: at,
            status: "ok",
            tasks: tasks.clone(),
        };
        let map = json!({
            "status": "ok",
            "database": "ok",
            "role": "barkeep_reader",
            "server_time": at,
            "newest_1m": Some(at),
            "tasks": tasks,
        });
        assert_eq!(
            serde_json::to_string(&health).unwrap(),
            serde_json::to_string(&map).unwrap()
        );
    }
}
