//! Seed 000: `POST /ugc/api/v1/produce/send_to_broker/{event_type}` (FastAPI). A free
//! JSON body; the token in the `access_token_cookie` cookie, the user in its `user_id`
//! claim. Answers 200 `{detail, data, user_id, event_type, topic}`.

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use ugc_model::{Event, Timestamp};

use super::{Canonical, Seed, claimed, custom, film_uuid, ingest, instant, object, position};
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ClientIp, JsonBody};
use crate::state::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route(
        "/ugc/api/v1/produce/send_to_broker/{event_type}",
        post(send_to_broker),
    )
}

const TYPES: &[&str] = &["movie_progress", "movie_details", "movie_filters"];

/// Seed 000's event intake. `movie_progress` becomes `view_progress` (and `full_view`
/// when its status is `completed`); `movie_details` and `movie_filters` become `custom`.
#[utoipa::path(
    post, path = "/ugc/api/v1/produce/send_to_broker/{event_type}", tag = "compat: seed 000",
    params(("event_type" = String, Path, description = "movie_progress, movie_details or movie_filters")),
    request_body(content = Object, example = json!({"movie_id":"1ec4cd73-2fd5-4f25-af68-b6595d279af2","progress":754.5,"status":"in_progress","last_watched":"2024-05-01T20:15:00"})),
    responses(
        (status = 200, description = "Durable in the log", example = json!({"detail":"Event sent to broker","data":{"movie_id":"1ec4cd73-2fd5-4f25-af68-b6595d279af2","progress":754.5},"user_id":"6f1b8c1e-0a3c-4a36-9f57-2b1d6c7e8a90","event_type":"movie_progress","topic":"movie_progress"})),
        (status = 400, description = "Empty body", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 422, description = "Unknown event type or invalid field", body = ErrorBody),
        (status = 503, description = "The log cannot take events now", body = ErrorBody),
    ),
    security(("cookie" = []), ("bearer" = []))
)]
pub async fn send_to_broker(
    State(state): State<AppState>,
    principal: Principal,
    ClientIp(ip): ClientIp,
    Path(event_type): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    if !TYPES.contains(&event_type.as_str()) {
        return Err(super::invalid(
            "event_type",
            format!(
                "unknown event type `{event_type}`; one of: {}",
                TYPES.join(", ")
            ),
        ));
    }
    let fields = object(body)?;
    let data = Value::Object(fields.clone());
    let events = match event_type.as_str() {
        "movie_progress" => {
            let film_id = film_uuid("movie_id", fields.get("movie_id"))?;
            let mut watched = Canonical::new(Event::ViewProgress {
                film_id,
                film_timestamp: position("progress", fields.get("progress"))?,
            });
            watched.occurred_at = fields
                .get("last_watched")
                .map(|v| instant("last_watched", v))
                .transpose()?;
            watched.extra = fields.clone();
            let mut events = vec![watched];
            if fields.get("status").and_then(Value::as_str) == Some("completed") {
                let mut done = Canonical::new(Event::FullView { film_id });
                // Just after the position report, so "finished" is the newest state.
                done.occurred_at = events[0]
                    .occurred_at
                    .and_then(|t| Timestamp::from_millis(t.millis() + 1).ok());
                done.extra = fields.clone();
                events.push(done);
            }
            events
        }
        other => vec![Canonical::new(custom(other, data.clone())?)],
    };
    ingest(
        &state,
        Seed::S000,
        Some(&principal.user),
        claimed(fields.get("user_id")),
        ip,
        events,
    )
    .await?;
    Ok(Json(json!({
        "detail": "Event sent to broker",
        "data": data,
        "user_id": principal.user,
        "event_type": event_type,
        "topic": event_type,
    })))
}
