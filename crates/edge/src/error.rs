//! The edge's one error type and its one mapping to HTTP. Every failure a handler can
//! meet converts into [`ApiError`]; only this module picks status codes and bodies.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use ugc_log::LogError;
use ugc_model::FieldError;
use ugc_query::{QueryError, StoreError};
use utoipa::ToSchema;

use crate::auth::AuthError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The caller's review of this film exists already; the body names it.
    #[error("{reason}")]
    ReviewExists {
        reason: String,
        review_id: ugc_model::ReviewId,
    },
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{what} is larger than the limit of {limit}")]
    TooLarge { what: &'static str, limit: String },
    #[error("unsupported content type {0:?}: send application/json")]
    UnsupportedMediaType(String),
    #[error("{} invalid field(s)", .0.len())]
    Validation(Vec<FieldError>),
    #[error("{reason}")]
    Unavailable {
        reason: String,
        retry_after_secs: u64,
    },
    #[error("{reason}")]
    RateLimited {
        reason: String,
        retry_after_secs: u64,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

/// The JSON body of every error response.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable kind.
    #[schema(example = "validation_failed")]
    pub error: &'static str,
    /// What went wrong, for a person.
    pub message: String,
    /// For validation errors: every bad field with its JSON path.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// On 409 for a second review of a film: the caller's existing review.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review_id: Option<ugc_model::ReviewId>,
}

impl ApiError {
    pub fn unavailable(reason: impl Into<String>, retry_after: std::time::Duration) -> Self {
        ApiError::Unavailable {
            reason: reason.into(),
            retry_after_secs: retry_after.as_secs().max(1),
        }
    }

    fn status_and_kind(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::ReviewExists { .. } => (StatusCode::CONFLICT, "review_exists"),
            ApiError::MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            ApiError::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> Self {
        ApiError::unavailable(e.to_string(), e.retry_after())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Rejected(m) => ApiError::Internal(m),
            StoreError::NotAllowed(m) => ApiError::Forbidden(m),
            e => ApiError::unavailable(e.to_string(), std::time::Duration::from_secs(2)),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Forbidden | QueryError::AdminOnly => ApiError::Forbidden(e.to_string()),
            QueryError::InvalidSql(m) => ApiError::Validation(vec![FieldError::new("sql", m)]),
            QueryError::NotAllowed(m) => ApiError::Forbidden(m),
            QueryError::InvalidParameter(f, m) => ApiError::Validation(vec![FieldError::new(f, m)]),
            QueryError::Store(StoreError::Timeout(t)) => {
                ApiError::Validation(vec![FieldError::new(
                    "sql",
                    format!("the query ran longer than its limit of {}s", t.as_secs()),
                )])
            }
            QueryError::Store(s) => s.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind) = self.status_and_kind();
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        }
        let message = self.to_string();
        let review_id = match &self {
            ApiError::ReviewExists { review_id, .. } => Some(*review_id),
            _ => None,
        };
        let (errors, retry_after) = match self {
            ApiError::Validation(errors) => (errors, None),
            ApiError::Unavailable {
                retry_after_secs, ..
            }
            | ApiError::RateLimited {
                retry_after_secs, ..
            } => (vec![], Some(retry_after_secs)),
            _ => (vec![], None),
        };
        let mut resp = (
            status,
            Json(ErrorBody {
                error: kind,
                message,
                errors,
                review_id,
            }),
        )
            .into_response();
        let headers = resp.headers_mut();
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
