//! The read side over HTTP: a viewer's own progress, and analysts' SQL.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use ugc_model::{FieldError, FilmId, Progress};
use ugc_query::{Column, ProgressPage};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::extract::JsonBody;
use crate::state::AppState;

/// The caller's last position in a film.
#[utoipa::path(
    get, path = "/api/v1/films/{film_id}/progress", tag = "progress",
    params(("film_id" = String, Path, description = "Film UUID")),
    responses(
        (status = 200, body = Progress),
        (status = 401, body = ErrorBody),
        (status = 404, description = "No position recorded for this film", body = ErrorBody),
        (status = 422, description = "film_id is not a UUID", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn film_progress(
    State(state): State<AppState>,
    principal: Principal,
    Path(film_id): Path<String>,
) -> Result<Json<Progress>, ApiError> {
    let film = uuid::Uuid::parse_str(&film_id)
        .map(FilmId::from)
        .map_err(|e| ApiError::Validation(vec![FieldError::new("film_id", e.to_string())]))?;
    match state.queries().film_progress(&principal.user, film).await? {
        Some(p) => Ok(Json(p)),
        None => Err(ApiError::NotFound(format!(
            "no progress recorded for film {film}"
        ))),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page (1–100, default 20).
    limit: Option<u32>,
    /// Items to skip (default 0).
    offset: Option<u32>,
}

/// "Continue watching": films the caller started and has not finished, latest first.
#[utoipa::path(
    get, path = "/api/v1/progress", tag = "progress", params(PageParams),
    responses((status = 200, body = ProgressPage), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn continue_watching(
    State(state): State<AppState>,
    principal: Principal,
    params: Result<Query<PageParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ProgressPage>, ApiError> {
    let Query(params) =
        params.map_err(|e| ApiError::Validation(vec![FieldError::new("query", e.body_text())]))?;
    let page = state
        .queries()
        .continue_watching(&principal.user, params.limit, params.offset)
        .await?;
    Ok(Json(page))
}

#[derive(Deserialize, ToSchema)]
pub struct SqlRequest {
    /// One read-only SELECT.
    #[schema(example = "SELECT event_type, count() AS events FROM ugc.events GROUP BY event_type")]
    pub sql: String,
}

#[derive(Serialize, ToSchema)]
pub struct SqlResponse {
    #[schema(value_type = Vec<Object>)]
    pub columns: Vec<Column>,
    /// One JSON object per row.
    #[schema(value_type = Vec<Object>)]
    pub rows: Vec<serde_json::Map<String, serde_json::Value>>,
    pub row_count: usize,
    /// True when the row limit cut the result.
    pub truncated: bool,
}

/// Read-only SQL for analysts (tokens with role `admin` or `analyst`).
#[utoipa::path(
    post, path = "/api/v1/query", tag = "analytics", request_body = SqlRequest,
    responses(
        (status = 200, body = SqlResponse),
        (status = 401, body = ErrorBody),
        (status = 403, description = "The token has neither role admin nor analyst", body = ErrorBody),
        (status = 422, description = "Not a SELECT, or the engine refused it (its message in `errors`)", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn analyst_sql(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody,
) -> Result<Json<SqlResponse>, ApiError> {
    let req: SqlRequest = serde_json::from_value(body)
        .map_err(|e| ApiError::Validation(vec![FieldError::new("sql", e.to_string())]))?;
    let out = state
        .queries()
        .analyst_sql(&principal.roles, &req.sql)
        .await?;
    Ok(Json(SqlResponse {
        row_count: out.rows.len(),
        columns: out.columns,
        rows: out.rows,
        truncated: out.truncated,
    }))
}
