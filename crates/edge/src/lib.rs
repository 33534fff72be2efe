//! The HTTP edge: who is calling (auth), what they sent (validation), what the server
//! adds (enrichment), and the routes of ingest, progress, analytics and content
//! (ratings and bookmarks).

pub mod auth;
pub mod compat;
pub mod error;
pub mod extract;
pub mod limit;
pub mod observe;
pub mod openapi;
pub mod routes;
pub mod state;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use utoipa_swagger_ui::SwaggerUi;

pub use state::{AppState, EdgeConfig};

use crate::error::ApiError;
use crate::routes::{admin, content, events, health, queries};

pub fn router(state: AppState) -> Router {
    let doc = openapi::document(&state.config().compat);
    Router::new()
        .route("/api/v1/events", post(events::post_event))
        .route("/api/v1/events/batch", post(events::post_batch))
        .route(
            "/api/v1/films/{film_id}/progress",
            get(queries::film_progress),
        )
        .route("/api/v1/progress", get(queries::continue_watching))
        .route("/api/v1/query", post(queries::analyst_sql))
        .route(
            "/api/v1/films/{film_id}/rating",
            get(content::get_rating)
                .put(content::put_rating)
                .delete(content::delete_rating),
        )
        .route("/api/v1/me/ratings", get(content::my_ratings))
        .route(
            "/api/v1/films/{film_id}/reviews",
            get(content::film_reviews).post(content::post_review),
        )
        .route(
            "/api/v1/reviews/{review_id}",
            get(content::get_review)
                .patch(content::patch_review)
                .delete(content::delete_review),
        )
        .route(
            "/api/v1/reviews/{review_id}/vote",
            put(content::put_vote).delete(content::delete_vote),
        )
        .route("/api/v1/me/reviews", get(content::my_reviews))
        .route("/api/v1/me/bookmarks", get(content::my_bookmarks))
        .route(
            "/api/v1/me/bookmarks/{film_id}",
            put(content::put_bookmark).delete(content::delete_bookmark),
        )
        .route("/api/v1/users/{user_id}/data", delete(admin::erase_user))
        .route("/api/v1/jobs/{job_id}", get(admin::job))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .merge(compat::router(&state.config().compat))
        // Swagger UI at /docs and the document it shows at /openapi.json; its files are
        // in the binary, so the page works offline.
        .merge(SwaggerUi::new("/docs").url("/openapi.json", doc))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        // JsonBody enforces the configured limit itself, with a JSON 413.
        .layer(DefaultBodyLimit::disable())
        // Answers compressed (gzip, zstd) when the client accepts it and they are worth
        // it: progress lists, analysts' rows, the OpenAPI document.
        .layer(tower_http::compression::CompressionLayer::new())
        // Around everything, so refusals of every kind are counted and logged too.
        .layer(axum::middleware::from_fn_with_state(
            observe::AccessLog(state.config().access_log),
            observe::observe,
        ))
        .with_state(state)
}
