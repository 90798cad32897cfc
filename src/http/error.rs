//! A failed request of `barkeep serve`: its status and a one-line message,
//! sent as `{"error": "..."}`. Its own module so the API, the token check
//! and `/metrics` all answer errors alike without importing each other.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

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

    pub(super) fn internal(e: anyhow::Error) -> Self {
        tracing::warn!("request failed: {e:#}");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("{e:#}"),
        }
    }

    pub(super) fn unavailable(e: impl std::fmt::Display) -> Self {
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

pub(super) type ApiResult<T> = Result<T, ApiError>;
