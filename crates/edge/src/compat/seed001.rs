//! Seed 001: `GET` and `POST /ugc/send-to-broker/{type_event}` (Flask). The data is the
//! query string (`?movie_id=1&user_id=12&movie_name=...&fully_viewed=True`; ids are not
//! UUIDs); the token is the auth service's `access_token` cookie. Answers 200
//! `{"status":"Message sent to Kafka"}`, 400 `{"error":"Data is required"}`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use ugc_model::Event;

use super::{Canonical, Seed, claimed, custom, film_id, ingest};
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ClientIp;
use crate::state::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route(
        "/ugc/send-to-broker/{type_event}",
        get(send_get).post(send_post),
    )
}

type Params = Query<Vec<(String, String)>>;

/// Seed 001's event intake (GET form). `fully_viewed=True` becomes `full_view`;
/// anything else becomes `custom` named after `type_event`, with every parameter.
#[utoipa::path(
    get, path = "/ugc/send-to-broker/{type_event}", tag = "compat: seed 001",
    params(
        ("type_event" = String, Path, description = "Event name, e.g. movie_events"),
        ("movie_id" = Option<String>, Query, description = "Film id (any id; non-UUIDs are mapped to a stable UUID)"),
        ("fully_viewed" = Option<String>, Query, description = "`True` records that the film was watched to the end"),
    ),
    responses(
        (status = 200, description = "Durable in the log", example = json!({"status":"Message sent to Kafka"})),
        (status = 400, description = "No data in the query string", example = json!({"error":"Data is required"})),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 503, description = "The log cannot take events now", body = ErrorBody),
    ),
    security(("cookie" = []), ("bearer" = []))
)]
pub async fn send_get(
    state: State<AppState>,
    principal: Principal,
    ip: ClientIp,
    path: Path<String>,
    params: Params,
) -> Result<Response, ApiError> {
    send(state, principal, ip, path, params).await
}

/// Seed 001's event intake (POST form): the same query string, the same answers.
#[utoipa::path(
    post, path = "/ugc/send-to-broker/{type_event}", tag = "compat: seed 001",
    params(("type_event" = String, Path, description = "Event name, e.g. movie_events")),
    responses(
        (status = 200, description = "Durable in the log", example = json!({"status":"Message sent to Kafka"})),
        (status = 400, description = "No data in the query string", example = json!({"error":"Data is required"})),
        (status = 401, description = "No or bad token", body = ErrorBody),
    ),
    security(("cookie" = []), ("bearer" = []))
)]
pub async fn send_post(
    state: State<AppState>,
    principal: Principal,
    ip: ClientIp,
    path: Path<String>,
    params: Params,
) -> Result<Response, ApiError> {
    send(state, principal, ip, path, params).await
}

async fn send(
    State(state): State<AppState>,
    principal: Principal,
    ClientIp(ip): ClientIp,
    Path(type_event): Path<String>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    if params.is_empty() {
        return Ok((
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "Data is required"})),
        )
            .into_response());
    }
    let data: Map<String, Value> = params
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let fully_viewed = data
        .get("fully_viewed")
        .and_then(Value::as_str)
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1"));
    let event = match data.get("movie_id") {
        Some(movie) if fully_viewed => Event::FullView {
            film_id: film_id("movie_id", movie)?,
        },
        _ => custom(&type_event, Value::Object(data.clone()))?,
    };
    let mut canonical = Canonical::new(event);
    canonical.extra = data.clone();
    canonical
        .extra
        .insert("type_event".into(), Value::String(type_event));
    ingest(
        &state,
        Seed::S001,
        Some(&principal.user),
        claimed(data.get("user_id")),
        ip,
        vec![canonical],
    )
    .await?;
    Ok(Json(json!({"status": "Message sent to Kafka"})).into_response())
}
