//! Seed 003: the Flask player page's clicks. `POST /api/pause {pause_at, timestamp}`,
//! `POST /api/full-view {timestamp}`, `POST /api/quality-change {quality_before,
//! quality_after, changed_at, timestamp}`; `timestamp` in milliseconds, positions in
//! seconds. Answers 200 `{"status":"success"}`.
//!
//! The seed's player sends no token and no film id. Tokenless events are accepted only
//! when `UGC_COMPAT_ANONYMOUS=true` and carry no user; a token, when sent, names the user.
//! A `film_id` may be added to the body or query string; without one the event is about
//! an unknown film (the nil UUID) and feeds no "continue watching".

use axum::extract::{Query, State};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use ugc_model::{Event, FilmId, Quality};

use super::{Canonical, Seed, claimed, film_uuid, ingest, instant, invalid, position};
use crate::auth::AuthError;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ClientIp, JsonBody, MaybePrincipal};
use crate::state::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/pause", post(pause))
        .route("/api/full-view", post(full_view))
        .route("/api/quality-change", post(quality_change))
}

#[derive(Deserialize)]
pub struct FilmParam {
    film_id: Option<String>,
}

enum Kind {
    Pause,
    FullView,
    QualityChange,
}

/// The player paused.
#[utoipa::path(post, path = "/api/pause", tag = "compat: seed 003",
    request_body(content = Object, example = json!({"pause_at": 754.3, "timestamp": 1716580000123u64})),
    responses((status = 200, example = json!({"status":"success"})), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn pause(
    s: State<AppState>,
    p: MaybePrincipal,
    ip: ClientIp,
    q: Query<FilmParam>,
    b: JsonBody,
) -> Result<Json<Value>, ApiError> {
    click(s, p, ip, q, b, Kind::Pause).await
}

/// The film was watched to the end.
#[utoipa::path(post, path = "/api/full-view", tag = "compat: seed 003",
    request_body(content = Object, example = json!({"timestamp": 1716580000123u64})),
    responses((status = 200, example = json!({"status":"success"})), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn full_view(
    s: State<AppState>,
    p: MaybePrincipal,
    ip: ClientIp,
    q: Query<FilmParam>,
    b: JsonBody,
) -> Result<Json<Value>, ApiError> {
    click(s, p, ip, q, b, Kind::FullView).await
}

/// The viewer switched quality.
#[utoipa::path(post, path = "/api/quality-change", tag = "compat: seed 003",
    request_body(content = Object, example = json!({"quality_before": "360", "quality_after": "720", "changed_at": 120.5, "timestamp": 1716580000123u64})),
    responses((status = 200, example = json!({"status":"success"})), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn quality_change(
    s: State<AppState>,
    p: MaybePrincipal,
    ip: ClientIp,
    q: Query<FilmParam>,
    b: JsonBody,
) -> Result<Json<Value>, ApiError> {
    click(s, p, ip, q, b, Kind::QualityChange).await
}

async fn click(
    State(state): State<AppState>,
    MaybePrincipal(principal): MaybePrincipal,
    ClientIp(ip): ClientIp,
    Query(q): Query<FilmParam>,
    JsonBody(body): JsonBody,
    kind: Kind,
) -> Result<Json<Value>, ApiError> {
    if principal.is_none() && !state.config().compat.anonymous {
        return Err(AuthError::Missing.into());
    }
    let fields: Map<String, Value> = match body {
        Value::Object(m) => m,
        _ => return Err(invalid("", "expected a JSON object")),
    };
    let film = match fields
        .get("film_id")
        .cloned()
        .or(q.film_id.map(Value::String))
    {
        Some(v) => film_uuid("film_id", Some(&v))?,
        None => FilmId::from(uuid::Uuid::nil()),
    };
    let quality = |k: &str| -> Result<Quality, ApiError> {
        let text = match fields.get(k) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(invalid(k, "missing; expected a quality label such as 720")),
        };
        Quality::try_from(text).map_err(|e| invalid(k, e))
    };
    let event = match kind {
        Kind::Pause => Event::Pause {
            film_id: film,
            position: position("pause_at", fields.get("pause_at"))?,
        },
        Kind::FullView => Event::FullView { film_id: film },
        Kind::QualityChange => Event::QualityChange {
            film_id: film,
            from: quality("quality_before")?,
            to: quality("quality_after")?,
            position: position("changed_at", fields.get("changed_at"))?,
        },
    };
    let mut canonical = Canonical::new(event);
    canonical.occurred_at = fields
        .get("timestamp")
        .map(|v| instant("timestamp", v))
        .transpose()?;
    canonical.extra = fields.clone();
    let user = principal.as_ref().map(|p| &p.user);
    ingest(
        &state,
        Seed::S003,
        user,
        claimed(fields.get("user_id")),
        ip,
        vec![canonical],
    )
    .await?;
    Ok(Json(json!({"status": "success"})))
}
