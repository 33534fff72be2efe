//! The ingest routes: validate, hand the valid events to [`crate::ingest`], and answer
//! 202 only once the log says they are durable.

use std::net::IpAddr;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use ugc_model::{EventId, FieldError, parse_event};
use utoipa::ToSchema;

use crate::auth::AuthError;
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{BeaconBody, ClientIp, JsonBody, bearer_from};
use crate::ingest::{self, check_batch_size, count_rejected};
use crate::openapi::EventRequest;
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct Accepted {
    pub event_id: EventId,
    /// The same id, as a list, so single and batch answers read alike.
    pub event_ids: Vec<EventId>,
}

/// The per-item outcome of a batch.
#[derive(Serialize, ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum BatchItem {
    Accepted {
        index: usize,
        event_id: EventId,
    },
    Rejected {
        index: usize,
        /// JSON path of the first bad field, relative to the item.
        field: String,
        reason: String,
        /// Every bad field of the item.
        errors: Vec<FieldError>,
    },
}

#[derive(Serialize, ToSchema)]
pub struct BatchAccepted {
    pub accepted: usize,
    pub rejected: usize,
    /// Ids of the accepted events, in request order.
    pub event_ids: Vec<EventId>,
    pub results: Vec<BatchItem>,
}

/// Record one viewer event.
#[utoipa::path(
    post, path = "/api/v1/events", tag = "ingest",
    request_body(content = EventRequest, example = json!({"type":"view_progress","film_id":"1ec4cd73-2fd5-4f25-af68-b6595d279af2","film_timestamp":754})),
    responses(
        (status = 202, description = "Durable in the log", body = Accepted),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid fields, each with its JSON path", body = ErrorBody),
        (status = 429, description = "Over the user's rate limit; see Retry-After", body = ErrorBody),
        (status = 503, description = "The log cannot take events now; see Retry-After", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn post_event(
    State(state): State<AppState>,
    principal: Principal,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let incoming = parse_event(&body).map_err(|e| {
        count_rejected(&body);
        ApiError::Validation(e)
    })?;
    let event_ids = ingest::append(&state, Some(&principal.user), ip, vec![incoming]).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            event_id: event_ids[0],
            event_ids,
        }),
    )
        .into_response())
}

/// Record many events at once. Valid items are accepted even when others are rejected.
#[utoipa::path(
    post, path = "/api/v1/events/batch", tag = "ingest",
    request_body(content = Vec<EventRequest>, description = "A JSON array of events, or `{\"events\": [...]}`"),
    responses(
        (status = 202, description = "The valid items are durable in the log", body = BatchAccepted),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 413, description = "Body or batch over the limit", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "No valid item; per-item reasons in `results`", body = BatchAccepted),
        (status = 429, description = "The valid items are more than the user's rate limit allows now; none is taken; see Retry-After", body = ErrorBody),
        (status = 503, description = "The log cannot take events now; see Retry-After", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn post_batch(
    State(state): State<AppState>,
    principal: Principal,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let items = match body {
        Value::Array(items) => items,
        Value::Object(mut obj) => match obj.remove("events") {
            Some(Value::Array(items)) => items,
            _ => {
                return Err(ApiError::Validation(vec![FieldError::new(
                    "events",
                    "expected an array of events",
                )]));
            }
        },
        _ => {
            return Err(ApiError::Validation(vec![FieldError::new(
                "",
                "expected an array of events or {\"events\": [...]}",
            )]));
        }
    };
    ingest_batch(&state, &principal, ip, items).await
}

/// A batch from a page being closed or hidden: `navigator.sendBeacon` and simple
/// `fetch(..., {keepalive: true})` requests cannot carry an `Authorization` header and
/// should not need a CORS preflight, so the body is `text/plain` (or JSON) holding the
/// token and the events. The token is verified exactly like the header's; cookies are
/// not read here, so another site cannot post events in a viewer's name.
#[utoipa::path(
    post, path = "/api/v1/events/beacon", tag = "ingest",
    request_body(content = BeaconRequest, content_type = "text/plain", description = "JSON text `{\"token\": \"<jwt>\", \"events\": [...]}`; `Content-Type: text/plain` keeps it a CORS simple request"),
    responses(
        (status = 202, description = "The valid items are durable in the log", body = BatchAccepted),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No or bad token in the body", body = ErrorBody),
        (status = 413, description = "Body or batch over the limit", body = ErrorBody),
        (status = 415, description = "Neither text/plain nor JSON", body = ErrorBody),
        (status = 422, description = "No valid item, or `token`/`events` missing; per-item reasons in `results`", body = BatchAccepted),
        (status = 429, description = "Over the user's rate limit; see Retry-After", body = ErrorBody),
        (status = 503, description = "The log cannot take events now; see Retry-After", body = ErrorBody),
    )
)]
pub async fn post_beacon(
    State(state): State<AppState>,
    headers: HeaderMap,
    ClientIp(ip): ClientIp,
    BeaconBody(body): BeaconBody,
) -> Result<Response, ApiError> {
    let Value::Object(mut obj) = body else {
        return Err(ApiError::Validation(vec![FieldError::new(
            "",
            "expected {\"token\": \"<jwt>\", \"events\": [...]}",
        )]));
    };
    let token = match obj.remove("token") {
        Some(Value::String(t)) => t,
        None | Some(Value::Null) => bearer_from(&headers)
            .map(str::to_owned)
            .ok_or(AuthError::Missing)?,
        Some(_) => {
            return Err(ApiError::Validation(vec![FieldError::new(
                "token",
                "expected the access token as a string",
            )]));
        }
    };
    let principal = state.verifier().verify(&token)?;
    let items = match obj.remove("events") {
        Some(Value::Array(items)) => items,
        _ => {
            return Err(ApiError::Validation(vec![FieldError::new(
                "events",
                "expected an array of events",
            )]));
        }
    };
    if let Some(k) = obj.keys().next() {
        return Err(ApiError::Validation(vec![FieldError::new(
            k.clone(),
            "unknown field; expected token and events",
        )]));
    }
    ingest_batch(&state, &principal, ip, items).await
}

/// The beacon body, for the OpenAPI document.
#[derive(serde::Deserialize, ToSchema)]
#[allow(dead_code)] // documentation only
pub struct BeaconRequest {
    /// The viewer's access token (what the `Authorization` header would carry).
    token: String,
    events: Vec<EventRequest>,
}

/// Validates each item, appends the valid ones together, and answers per item.
async fn ingest_batch(
    state: &AppState,
    principal: &Principal,
    ip: Option<IpAddr>,
    items: Vec<Value>,
) -> Result<Response, ApiError> {
    check_batch_size(state, items.len(), "events")?;
    let mut valid = Vec::with_capacity(items.len());
    // Each item's outcome; an accepted item's id is filled in once it is durable.
    let mut outcomes: Vec<Option<BatchItem>> = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        match parse_event(item) {
            Ok(incoming) => {
                valid.push(incoming);
                outcomes.push(None);
            }
            Err(errors) => {
                count_rejected(item);
                let first = errors
                    .first()
                    .cloned()
                    .unwrap_or_else(|| FieldError::new("", "invalid"));
                outcomes.push(Some(BatchItem::Rejected {
                    index,
                    field: first.field,
                    reason: first.reason,
                    errors,
                }));
            }
        }
    }
    let accepted = valid.len();
    let rejected = items.len() - accepted;
    let (status, event_ids) = if accepted == 0 {
        (StatusCode::UNPROCESSABLE_ENTITY, Vec::new())
    } else {
        // The limit counts events, and the valid items go in together or not at all:
        // all durable or none.
        let ids = ingest::append(state, Some(&principal.user), ip, valid).await?;
        (StatusCode::ACCEPTED, ids)
    };
    // The ids come back in the valid items' order.
    let valid_indexes: Vec<usize> = (0..outcomes.len())
        .filter(|i| outcomes[*i].is_none())
        .collect();
    for (index, event_id) in valid_indexes.into_iter().zip(&event_ids) {
        outcomes[index] = Some(BatchItem::Accepted {
            index,
            event_id: *event_id,
        });
    }
    let results: Vec<BatchItem> = outcomes.into_iter().flatten().collect();
    let body = BatchAccepted {
        accepted,
        rejected,
        event_ids,
        results,
    };
    Ok((status, Json(body)).into_response())
}
