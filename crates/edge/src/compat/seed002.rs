//! Seed 002: `POST /api/v1/produce` and `POST /api/v1/batch_produce` (FastAPI). Body
//! `{payload: {movie_id, user_id, event_data?, event_timestamp}, event_type, language?,
//! timezone?, ip?, version?, ...}` (batch: a list of those). Answers 201
//! `{"result": {"was_loaded": true, movie_id, user_id}}` and 201 `{"batch_produced": true}`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use ugc_model::Context;

use super::{
    Canonical, Seed, check_depth, claimed, context_text, custom, ingest, instant, invalid,
};
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ClientIp, JsonBody};
use crate::ingest::check_batch_size;
use crate::state::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/produce", post(produce))
        .route("/api/v1/batch_produce", post(batch_produce))
}

const TYPES: &[&str] = &[
    "movie_like",
    "movie_dislike",
    "movie_share",
    "movie_comment",
    "movie_watch_history",
];

fn example() -> Value {
    json!({"payload":{"movie_id":"1ec4cd73-2fd5-4f25-af68-b6595d279af2","user_id":"1ec4cd73-2fd5-4f25-af68-b6595d279af2","event_data":"some_event_data","event_timestamp":1621932759},
           "event_type":"movie_like","language":"RU","timezone":"Europe/Moscow","ip":"192.168.1.1","version":"1.0"})
}

/// One event of seed 002: `custom` named after `event_type`, the payload as its data;
/// `version` becomes the context's `app_version`; every other field is kept in the context.
#[utoipa::path(
    post, path = "/api/v1/produce", tag = "compat: seed 002",
    request_body(content = Object, example = json!(example())),
    responses(
        (status = 201, description = "Durable in the log", example = json!({"result":{"was_loaded":true,"movie_id":"1ec4cd73-2fd5-4f25-af68-b6595d279af2","user_id":"1ec4cd73-2fd5-4f25-af68-b6595d279af2"}})),
        (status = 400, description = "Unknown event type", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 422, description = "Invalid payload", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn produce(
    State(state): State<AppState>,
    principal: Principal,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (canonical, claimed_user, movie_id) = message(&body)?;
    ingest(
        &state,
        Seed::S002,
        Some(&principal.user),
        claimed_user,
        ip,
        vec![canonical],
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"result": {"was_loaded": true, "movie_id": movie_id, "user_id": principal.user}}),
        ),
    ))
}

/// A list of seed 002 events, all durable together or none.
#[utoipa::path(
    post, path = "/api/v1/batch_produce", tag = "compat: seed 002",
    request_body(content = Vec<Object>, example = json!([example()])),
    responses(
        (status = 201, description = "All durable in the log", example = json!({"batch_produced": true})),
        (status = 400, description = "Unknown event type", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 413, description = "More events than the batch limit", body = ErrorBody),
        (status = 422, description = "Invalid payload", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn batch_produce(
    State(state): State<AppState>,
    principal: Principal,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Value::Array(items) = body else {
        return Err(invalid("", "expected a list of events"));
    };
    check_batch_size(&state, items.len(), "")?;
    let mut events = Vec::with_capacity(items.len());
    let mut claimed_user = None;
    for (i, item) in items.iter().enumerate() {
        let (canonical, claim, _) = message(item).map_err(|e| match e {
            ApiError::Validation(mut errs) => {
                for err in &mut errs {
                    err.field = if err.field.is_empty() {
                        format!("[{i}]")
                    } else {
                        format!("[{i}].{}", err.field)
                    };
                }
                ApiError::Validation(errs)
            }
            ApiError::BadRequest(m) => ApiError::BadRequest(format!("[{i}]: {m}")),
            e => e,
        })?;
        claimed_user = claimed_user.or(claim);
        events.push(canonical);
    }
    ingest(
        &state,
        Seed::S002,
        Some(&principal.user),
        claimed_user,
        ip,
        events,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(json!({"batch_produced": true}))))
}

/// One seed 002 message → canonical event, the user it claims, and its movie id.
fn message(body: &Value) -> Result<(Canonical, Option<String>, Value), ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| invalid("", "expected a JSON object"))?;
    let payload = obj
        .get("payload")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("payload", "missing or not an object"))?;
    // The type is top-level `event_type`; the seed's own example put it in `payload.event`.
    let event_type = obj
        .get("event_type")
        .or_else(|| payload.get("event"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            invalid(
                "event_type",
                format!("missing; one of: {}", TYPES.join(", ")),
            )
        })?;
    if !TYPES.contains(&event_type) {
        return Err(ApiError::BadRequest(format!(
            "unknown event_type `{event_type}`; one of: {}",
            TYPES.join(", ")
        )));
    }
    let movie_id = payload
        .get("movie_id")
        .cloned()
        .ok_or_else(|| invalid("payload.movie_id", "missing"))?;
    let mut canonical = Canonical::new(custom(event_type, Value::Object(payload.clone()))?);
    canonical.data_field = "payload";
    canonical.occurred_at = payload
        .get("event_timestamp")
        .map(|v| instant("payload.event_timestamp", v))
        .transpose()?;
    // `version` is the seed's name for the app version; `language` and `timezone` keep
    // their names and, like every other field, go to the context by the seeds' one rule
    // (`merge_context`), which also settles a clash with an `app_version` sent alongside.
    canonical.context = Context {
        app_version: obj.get("version").and_then(|v| context_text(v, 64)),
        ..Context::default()
    };
    let version_taken = canonical.context.app_version.is_some();
    // Everything else the client sent (its reported ip, client data) is kept as is.
    canonical.extra = obj
        .iter()
        .filter(|(k, _)| match k.as_str() {
            "payload" | "event_type" => false,
            "version" => !version_taken,
            _ => true,
        })
        .map(|(k, v)| {
            (
                if k == "ip" {
                    "client_reported_ip".to_owned()
                } else {
                    k.clone()
                },
                v.clone(),
            )
        })
        .collect();
    check_depth(&canonical)?;
    Ok((canonical, claimed(payload.get("user_id")), movie_id))
}
