use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// The content database (ratings, reviews, bookmarks), when it does not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        log: None,
        store: None,
        content: None,
    })
}

/// Readiness: the log can take events, and the store and the content database answer.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let log = state.producer().check().await.err().map(|e| e.to_string());
    let store = state.queries().ping().await.err().map(|e| e.to_string());
    let content = state.content().ping().await.err().map(|e| e.to_string());
    let ready = log.is_none() && store.is_none() && content.is_none();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Health {
            status: if ready { "ready" } else { "not_ready" },
            log,
            store,
            content,
        }),
    )
}
