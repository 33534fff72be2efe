//! The OpenAPI document, generated from the handlers' annotations.

use serde::Deserialize;
use ugc_model::{Context, Event, EventId, Timestamp};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::compat::{self, CompatConfig, Seed};
use crate::routes::{admin, analytics, content, events, health, queries};

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
        events::post_event, events::post_batch, events::post_beacon,
        queries::film_progress, queries::continue_watching, queries::analyst_sql,
        analytics::top_films, analytics::dropoff, analytics::film_summary, analytics::quality,
        analytics::qoe, analytics::audience, analytics::pages, analytics::content_top,
        content::put_rating, content::delete_rating, content::get_rating, content::my_ratings,
        content::put_bookmark, content::delete_bookmark, content::my_bookmarks,
        content::post_review, content::get_review, content::patch_review, content::delete_review,
        content::film_reviews, content::my_reviews, content::put_vote, content::delete_vote,
        admin::erase_user, admin::job,
        health::healthz, health::readyz,
        compat::seed000::send_to_broker,
        compat::seed001::send_get, compat::seed001::send_post,
        compat::seed002::produce, compat::seed002::batch_produce,
        compat::seed003::pause, compat::seed003::full_view, compat::seed003::quality_change,
        compat::seed003_content::film_create, compat::seed003_content::films_list,
        compat::seed003_content::film_get, compat::seed003_content::film_update,
        compat::seed003_content::film_delete,
        compat::seed003_content::review_create, compat::seed003_content::review_get,
        compat::seed003_content::reviews_all, compat::seed003_content::reviews_of_film,
        compat::seed003_content::reviews_mine, compat::seed003_content::reviews_of_user,
        compat::seed003_content::review_update, compat::seed003_content::review_delete,
        compat::seed003_content::rating_create, compat::seed003_content::rating_average,
        compat::seed003_content::ratings_of_film, compat::seed003_content::rating_get,
        compat::seed003_content::ratings_mine, compat::seed003_content::rating_update,
        compat::seed003_content::rating_delete,
        compat::seed003_content::bookmark_create, compat::seed003_content::bookmark_add_film,
        compat::seed003_content::bookmark_films, compat::seed003_content::bookmark_remove_film,
        compat::seed004::post_progress,
    ),
    modifiers(&Security, &Descriptions),
    tags(
        (name = "ingest", description = "Viewer events in; a 2xx means durable"),
        (name = "progress", description = "Where the viewer stopped"),
        (name = "content", description = "Ratings, reviews, votes and bookmarks; every change is also an event in the log"),
        (name = "analytics", description = "Answers over every event (top films, drop-off, quality, QoE, audience, pages, content), and read-only SQL; roles admin or analyst"),
        (name = "operations", description = "Health, readiness, and admins' erasure of a user's data"),
        (name = "compat: seed 000", description = "As the seed 000 service answered: `send_to_broker/{event_type}`, token in the `access_token_cookie` cookie"),
        (name = "compat: seed 001", description = "As the seed 001 service answered: data in the query string, token in the `access_token` cookie"),
        (name = "compat: seed 002", description = "As the seed 002 service answered: `produce` and `batch_produce`; 201 on success"),
        (name = "compat: seed 003", description = "As the seed 003 player expected (tokenless events only with UGC_COMPAT_ANONYMOUS=true), and its content service under `/ugc_fastapi`: films, reviews, ratings and bookmarks on the same tables as the native content routes; 403 `{\"detail\":\"Not authenticated\"}` without the header"),
        (name = "compat: seed 004", description = "As the seed 004 service answered: position reports, 200 with a null body, 403 without the header"),
    )
)]
pub struct ApiDoc;

/// The document of the routes this instance serves: disabled seeds' routes are left out.
pub fn document(compat: &CompatConfig) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    let disabled: Vec<String> = Seed::ALL
        .iter()
        .filter(|s| !compat.seeds.contains(s))
        .map(|s| format!("compat: seed {}", s.as_str()))
        .collect();
    doc.paths.paths.retain(|_, item| {
        let tags = [&item.get, &item.post, &item.put, &item.patch, &item.delete]
            .into_iter()
            .flatten()
            .flat_map(|op| op.tags.iter().flatten());
        !tags.into_iter().any(|t| disabled.contains(t))
    });
    doc
}

/// OpenAPI requires a description on every response; where a handler gave none, the
/// status code's reason phrase stands in ("Unauthorized", "Unprocessable Entity", ...).
struct Descriptions;

impl Modify for Descriptions {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        for item in api.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in ops.into_iter().flatten() {
                for (code, response) in &mut op.responses.responses {
                    if let utoipa::openapi::RefOr::T(r) = response
                        && r.description.is_empty()
                    {
                        r.description = code
                            .parse::<u16>()
                            .ok()
                            .and_then(|c| axum::http::StatusCode::from_u16(c).ok())
                            .and_then(|c| c.canonical_reason())
                            .unwrap_or("Response")
                            .to_owned();
                    }
                }
            }
        }
    }
}

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
