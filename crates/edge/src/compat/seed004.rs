//! Seed 004: `POST /api/v1/` `{film_id: UUID, film_timestamp: int}` with a Bearer token
//! (user from `sub`). Answers 200 with a `null` body, and — as FastAPI's HTTPBearer did —
//! 403 `{"detail":"Not authenticated"}` when the Authorization header is missing.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use ugc_model::Event;

use super::{Canonical, Seed, claimed, film_uuid, ingest, object, position};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ClientIp, JsonBody, bearer_from};
use crate::state::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/", post(post_progress))
}

/// The player's position report: becomes `view_progress`.
#[utoipa::path(post, path = "/api/v1/", tag = "compat: seed 004",
    request_body(content = Object, example = json!({"film_id": "1ec4cd73-2fd5-4f25-af68-b6595d279af2", "film_timestamp": 754})),
    responses(
        (status = 200, description = "Durable in the log; the body is `null`"),
        (status = 401, description = "Bad token", body = ErrorBody),
        (status = 403, description = "No Authorization header", example = json!({"detail":"Not authenticated"})),
        (status = 422, body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn post_progress(
    State(state): State<AppState>,
    headers: HeaderMap,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    // FastAPI's HTTPBearer: 403 without the header, or with one that is not a Bearer.
    if !headers.contains_key(header::AUTHORIZATION) {
        return Ok((
            StatusCode::FORBIDDEN,
            Json(json!({"detail": "Not authenticated"})),
        )
            .into_response());
    }
    let Some(token) = bearer_from(&headers) else {
        return Ok((
            StatusCode::FORBIDDEN,
            Json(json!({"detail": "Invalid authentication credentials"})),
        )
            .into_response());
    };
    let principal = state.verifier().verify(token)?;
    let fields = object(body)?;
    let film_id = film_uuid("film_id", fields.get("film_id"))?;
    let film_timestamp = match fields.get("film_timestamp") {
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {
            position("film_timestamp", fields.get("film_timestamp"))?
        }
        _ => {
            return Err(super::invalid(
                "film_timestamp",
                "missing or not an integer number of seconds",
            ));
        }
    };
    let mut canonical = Canonical::new(Event::ViewProgress {
        film_id,
        film_timestamp,
    });
    canonical.extra = fields.clone();
    ingest(
        &state,
        Seed::S004,
        Some(&principal.user),
        claimed(fields.get("user_id")),
        ip,
        vec![canonical],
    )
    .await?;
    Ok(Json(Value::Null).into_response())
}
