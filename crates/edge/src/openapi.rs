//! The OpenAPI document, generated from the handlers' annotations.

use serde::Deserialize;
use ugc_model::{Context, Event, EventId, Timestamp};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::routes::{events, health, queries};

/// An event as a client sends it: the event's own fields (selected by `type`) plus the
/// optional common fields. Unknown fields are rejected, so typos do not pass silently.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // documentation only: parsing is field by field in ugc-model
pub struct EventRequest {
    #[serde(flatten)]
    event: Event,
    /// Client-chosen id for idempotent retries; the server makes a UUIDv7 otherwise.
    event_id: Option<EventId>,
    /// The client's clock: RFC 3339 or Unix epoch milliseconds. Defaults to arrival time.
    occurred_at: Option<Timestamp>,
    context: Option<Context>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "ugc", description = "User-generated-content event platform of an online cinema: ingest viewer events, query them."),
    paths(
        events::post_event, events::post_batch,
        queries::film_progress, queries::continue_watching, queries::analyst_sql,
        health::healthz, health::readyz,
    ),
    modifiers(&Security),
    tags(
        (name = "ingest", description = "Viewer events in; a 2xx means durable"),
        (name = "progress", description = "Where the viewer stopped"),
        (name = "analytics", description = "Read-only SQL over every event"),
        (name = "operations", description = "Health and readiness"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("access_token_cookie"))),
        );
    }
}
