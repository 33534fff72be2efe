//! Admin operations: erasing a user's data ("right to be forgotten") and its job.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use ugc_model::{FieldError, Timestamp, UserId};
use ugc_query::erasure::{ErasureJob, JobState};
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct JobView {
    pub job_id: uuid::Uuid,
    /// `erase_user`.
    pub kind: &'static str,
    pub user_id: UserId,
    /// `running`, or `done` once nothing of the user (up to the request) is stored.
    #[schema(example = "running")]
    pub status: String,
    /// Rows of the user still stored.
    pub remaining_rows: u64,
    pub requested_at: Timestamp,
    /// Where to ask for the job's state.
    pub status_url: String,
}

impl From<ErasureJob> for JobView {
    fn from(j: ErasureJob) -> Self {
        Self {
            status_url: format!("/api/v1/jobs/{}", j.job_id),
            job_id: j.job_id,
            kind: j.kind,
            user_id: j.user_id,
            status: match j.status {
                JobState::Running => "running",
                JobState::Done => "done",
            }
            .into(),
            remaining_rows: j.remaining_rows,
            requested_at: j.requested_at,
        }
    }
}

/// Erases everything stored of a user: their events and progress, on every replica, and
/// their ratings, reviews, votes and bookmarks (gone before the answer).
/// Their events still in the log are dropped by the loaders. Admins only.
#[utoipa::path(
    delete, path = "/api/v1/users/{user_id}/data", tag = "operations",
    params(("user_id" = String, Path, description = "The user, as in tokens' `sub`")),
    responses(
        (status = 202, description = "Erasure started; poll `status_url`", body = JobView),
        (status = 401, body = ErrorBody),
        (status = 403, description = "The token lacks the role admin", body = ErrorBody),
        (status = 422, description = "user_id is not a valid user id", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn erase_user(
    State(state): State<AppState>,
    principal: Principal,
    Path(user_id): Path<String>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let user = UserId::parse(user_id)
        .map_err(|e| ApiError::Validation(vec![FieldError::new("user_id", e)]))?;
    let job = state
        .queries()
        .erasures()
        .erase_user(&principal.roles, user.clone())
        .await?;
    // After the role check above. Content goes at once, in one transaction: ratings,
    // reviews, votes, bookmarks, with the films' and reviews' counts put right.
    state.content().erase_user(&user).await?;
    Ok((StatusCode::ACCEPTED, Json(job.into())))
}

/// The state of an erasure job. Admins only.
#[utoipa::path(
    get, path = "/api/v1/jobs/{job_id}", tag = "operations",
    params(("job_id" = String, Path, description = "Job UUID")),
    responses(
        (status = 200, body = JobView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 422, description = "job_id is not a UUID", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn job(
    State(state): State<AppState>,
    principal: Principal,
    Path(job_id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let id = uuid::Uuid::parse_str(&job_id)
        .map_err(|e| ApiError::Validation(vec![FieldError::new("job_id", e.to_string())]))?;
    match state.queries().erasures().job(&principal.roles, id).await? {
        Some(j) => Ok(Json(j.into())),
        None => Err(ApiError::NotFound(format!("no job {id}"))),
    }
}
