//! The one way events enter the log, whichever route they came by (the native ingest
//! routes, the beacon, the seeds' compat routes): validated events are admitted under
//! the caller's rate limit, enriched with what only the server knows, and appended
//! together; their ids come back once the log says they are durable.

use std::net::IpAddr;

use serde_json::Value;
use ugc_log::OutRecord;
use ugc_model::{
    ENVELOPE_VERSION, Envelope, EventId, FieldError, IncomingEvent, Timestamp, UserId,
};

use crate::error::ApiError;
use crate::state::AppState;

/// Admits `events` under the caller's rate limit (all or none), enriches them and
/// appends them together: all durable or none. Answers their ids in order.
pub(crate) async fn append(
    state: &AppState,
    user: Option<&UserId>,
    ip: Option<IpAddr>,
    events: Vec<IncomingEvent>,
) -> Result<Vec<EventId>, ApiError> {
    state.admit(user, ip, events.len())?;
    let now = Timestamp::now();
    let mut ids = Vec::with_capacity(events.len());
    let mut records = Vec::with_capacity(events.len());
    for incoming in events {
        let env = enrich(incoming, user, ip, now);
        ids.push(env.event_id);
        records.push(record(&env));
    }
    state.producer().append(records).await?;
    Ok(ids)
}

/// A batch must hold between one and the configured maximum of events; `field` names
/// the list in the route's own body shape.
pub(crate) fn check_batch_size(state: &AppState, len: usize, field: &str) -> Result<(), ApiError> {
    let max = state.config().max_batch;
    if len > max {
        return Err(ApiError::TooLarge {
            what: "the batch",
            limit: format!("{max} events"),
        });
    }
    if len == 0 {
        return Err(ApiError::Validation(vec![FieldError::new(
            field,
            "the batch is empty",
        )]));
    }
    Ok(())
}

/// Counts an event refused for its fields, by its type (`unknown` when that is not one).
pub(crate) fn count_rejected(item: &Value) {
    let kind = item
        .get("type")
        .and_then(Value::as_str)
        .and_then(|t| ugc_model::EVENT_TYPES.iter().find(|k| **k == t).copied())
        .unwrap_or("unknown");
    metrics::counter!("ugc_events_rejected_total", "type" => kind, "reason" => "invalid")
        .increment(1);
}

/// Adds what only the server knows. The user always comes from the token.
fn enrich(
    incoming: IncomingEvent,
    user: Option<&UserId>,
    ip: Option<IpAddr>,
    now: Timestamp,
) -> Envelope {
    let mut context = incoming.context;
    // The server's id of the request wins over any a client put in the context.
    if let Some(id) = crate::observe::request_id() {
        context.extra.insert("request_id".into(), Value::String(id));
    }
    if let Some(claimed) = incoming
        .claimed_user
        .filter(|c| Some(c.as_str()) != user.map(UserId::as_str))
    {
        context
            .extra
            .insert("claimed_user_id".into(), Value::String(claimed));
    }
    Envelope {
        v: ENVELOPE_VERSION,
        event_id: incoming.event_id.unwrap_or_else(EventId::new_v7),
        user_id: user.cloned(),
        received_at: now,
        occurred_at: incoming.occurred_at.unwrap_or(now),
        client_ip: ip,
        context,
        event: incoming.event,
    }
}

/// Keyed by user, so one user's events stay in order on one partition.
fn record(env: &Envelope) -> OutRecord {
    OutRecord {
        key: env.user_id.as_ref().map(|u| u.as_str().as_bytes().to_vec()),
        kind: env.event.type_name(),
        payload: env.encode(),
    }
}
