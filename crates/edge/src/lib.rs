//! The HTTP edge: who is calling (auth), what they sent (validation), what the server
//! adds (enrichment), and the routes of ingest, progress, analytics and content
//! (ratings and bookmarks).

pub mod auth;
pub mod compat;
pub mod error;
pub mod extract;
mod ingest;
pub mod limit;
pub mod observe;
pub mod openapi;
pub(crate) mod routes;
pub mod state;
pub mod web;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, header};
use axum::routing::{delete, get, post, put};
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa_swagger_ui::SwaggerUi;

pub use state::{AppState, EdgeConfig};

use crate::error::ApiError;
use crate::routes::{admin, analytics, content, events, health, queries};

pub fn router(state: AppState) -> Router {
    let doc = openapi::document(&state.config().compat);
    // Ingest answers are a few ids: compressing them (or wrapping their bodies to decide
    // not to) costs more than it saves on the busiest routes, so they stay outside the
    // compression layer below, with the seeds' event routes.
    let ingest = Router::new()
        .route("/api/v1/events", post(events::post_event))
        .route("/api/v1/events/batch", post(events::post_batch))
        .route("/api/v1/events/beacon", post(events::post_beacon))
        .merge(compat::router(&state.config().compat));
    let router = Router::new()
        .route(
            "/api/v1/films/{film_id}/progress",
            get(queries::film_progress),
        )
        .route("/api/v1/progress", get(queries::continue_watching))
        .route("/api/v1/query", post(queries::analyst_sql))
        .route("/api/v1/analytics/films/top", get(analytics::top_films))
        .route(
            "/api/v1/analytics/films/{film_id}/dropoff",
            get(analytics::dropoff),
        )
        .route(
            "/api/v1/analytics/films/{film_id}/summary",
            get(analytics::film_summary),
        )
        .route("/api/v1/analytics/quality", get(analytics::quality))
        .route("/api/v1/analytics/qoe", get(analytics::qoe))
        .route("/api/v1/analytics/audience", get(analytics::audience))
        .route("/api/v1/analytics/pages", get(analytics::pages))
        .route("/api/v1/analytics/content/top", get(analytics::content_top))
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
        .route("/sdk/ugc.js", get(web::sdk))
        .route("/sdk/test.html", get(web::sdk_test_page))
        .route("/sdk/ugc.test.js", get(web::sdk_test_js))
        .route("/player/{film_id}", get(web::player))
        .route("/dashboard", get(web::dashboard))
        .route("/dashboard/chart.umd.min.js", get(web::chart_js))
        .route("/media/{*path}", get(web::media))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .merge(compat::content_router(&state.config().compat))
        // Swagger UI at /docs and the document it shows at /openapi.json; its files are
        // in the binary, so the page works offline.
        .merge(SwaggerUi::new("/docs").url("/openapi.json", doc))
        // Answers compressed (gzip, zstd) when the client accepts it and they are worth
        // it: progress lists, analysts' rows, the OpenAPI document.
        .layer(tower_http::compression::CompressionLayer::new())
        .merge(ingest)
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        // JsonBody enforces the configured limit itself, with a JSON 413.
        .layer(DefaultBodyLimit::disable());
    let router = match cors(&state.config().cors_origins) {
        Some(layer) => router.layer(layer),
        None => router,
    };
    // Around everything, so refusals of every kind are counted and logged too.
    router
        .layer(axum::middleware::from_fn_with_state(
            observe::AccessLog(state.config().access_log),
            observe::observe,
        ))
        .with_state(state)
}

/// Lets the listed origins' pages call the API, preflight included. Without origins no
/// CORS header is sent, so browsers keep other sites' pages out.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::CONTENT_ENCODING,
                header::HeaderName::from_static(observe::REQUEST_ID),
            ])
            // The SDK backs off by Retry-After, so a page on another origin must see it.
            .expose_headers([
                header::RETRY_AFTER,
                header::HeaderName::from_static(observe::REQUEST_ID),
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}
