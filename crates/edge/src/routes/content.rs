//! Ratings, reviews, votes and bookmarks: what a viewer thinks of films and keeps for later. The caller
//! is always the token's user; the content service keeps the data and its events.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use ugc_content::{
    Bookmark, ContentError, Limit, Page, Rating, RatingSummary, Review, ReviewSort, VoteSummary,
};
use ugc_model::{FieldError, FilmId, ReviewId, ReviewText, Score, Vote};
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::extract::JsonBody;
use crate::state::AppState;

impl From<ContentError> for ApiError {
    fn from(e: ContentError) -> Self {
        match e {
            ContentError::Unavailable(_) => {
                ApiError::unavailable(e.to_string(), std::time::Duration::from_secs(2))
            }
            ContentError::BadCursor(m) => ApiError::Validation(vec![FieldError::new("cursor", m)]),
            ContentError::NotFound(m) => ApiError::NotFound(m),
            ContentError::Forbidden(m) => ApiError::Forbidden(m),
            ContentError::ReviewExists(review_id) => ApiError::ReviewExists {
                reason: e.to_string(),
                review_id,
            },
            ContentError::Internal(m) => ApiError::Internal(m),
        }
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> ApiError {
    ApiError::Validation(vec![FieldError::new(field, reason)])
}

fn film(id: &str) -> Result<FilmId, ApiError> {
    uuid::Uuid::parse_str(id)
        .map(FilmId::from)
        .map_err(|e| invalid("film_id", format!("not a UUID: {e}")))
}

fn review_id(id: &str) -> Result<ReviewId, ApiError> {
    uuid::Uuid::parse_str(id)
        .map(ReviewId::from)
        .map_err(|e| invalid("review_id", format!("not a UUID: {e}")))
}

/// The body as an object with only `allowed` keys: a typo is a 422 naming it.
fn object<'a>(body: &'a Value, allowed: &[&str]) -> Result<&'a Map<String, Value>, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| invalid("", "expected a JSON object"))?;
    let unknown: Vec<FieldError> = obj
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(|k| FieldError::new(k.clone(), format!("unknown field; expected {allowed:?}")))
        .collect();
    if unknown.is_empty() {
        Ok(obj)
    } else {
        Err(ApiError::Validation(unknown))
    }
}

/// One field through its newtype; `None` when absent or null.
fn field<T: DeserializeOwned>(obj: &Map<String, Value>, name: &str) -> Result<Option<T>, ApiError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| invalid(name, e.to_string())),
    }
}

fn required<T: DeserializeOwned>(obj: &Map<String, Value>, name: &str) -> Result<T, ApiError> {
    field(obj, name)?.ok_or_else(|| invalid(name, "missing required field"))
}

/// `limit` and `cursor` of a list; other parameters are ignored (cache busters).
fn page_params(params: &[(String, String)]) -> Result<(Limit, Option<&str>), ApiError> {
    let mut limit = Limit::DEFAULT;
    let mut cursor = None;
    for (k, v) in params {
        match k.as_str() {
            "limit" => {
                let n = v
                    .parse::<i64>()
                    .map_err(|_| invalid("limit", format!("not an integer: {v:?}")))?;
                limit = Limit::try_from(n).map_err(|e| invalid("limit", e))?;
            }
            "cursor" => cursor = Some(v.as_str()),
            _ => {}
        }
    }
    Ok((limit, cursor))
}

type Params = Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>;

fn params(p: Params) -> Result<Vec<(String, String)>, ApiError> {
    p.map(|Query(p)| p)
        .map_err(|e| invalid("query", e.body_text()))
}

/// A page of ratings (documentation only: the handler returns the same shape).
#[derive(Serialize, ToSchema)]
pub struct RatingPage {
    pub items: Vec<Rating>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A page of bookmarks (documentation only: the handler returns the same shape).
#[derive(Serialize, ToSchema)]
pub struct BookmarkPage {
    pub items: Vec<Bookmark>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(serde::Deserialize, ToSchema)]
#[allow(dead_code)] // documentation only: the body is parsed field by field
pub struct RatingRequest {
    score: Score,
}

/// Set or replace the caller's rating of a film (10 is a like, 0 a dislike).
#[utoipa::path(
    put, path = "/api/v1/films/{film_id}/rating", tag = "content",
    params(("film_id" = String, Path, description = "Film UUID")),
    request_body(content = RatingRequest, example = json!({"score": 8})),
    responses(
        (status = 200, body = Rating),
        (status = 401, body = ErrorBody),
        (status = 422, description = "Bad film_id, score out of 0..10, or an unknown field", body = ErrorBody),
        (status = 503, description = "The content database is unavailable; see Retry-After", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn put_rating(
    State(state): State<AppState>,
    principal: Principal,
    Path(film_id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Rating>, ApiError> {
    let film = film(&film_id)?;
    let obj = object(&body, &["score"])?;
    let score: Score = required(obj, "score")?;
    let rating = state
        .content()
        .set_rating(&principal.user, film, score)
        .await?;
    Ok(Json(rating))
}

/// Remove the caller's rating of a film.
#[utoipa::path(
    delete, path = "/api/v1/films/{film_id}/rating", tag = "content",
    params(("film_id" = String, Path, description = "Film UUID")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, body = ErrorBody),
        (status = 404, description = "The caller has no rating of this film", body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn delete_rating(
    State(state): State<AppState>,
    principal: Principal,
    Path(film_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let film = film(&film_id)?;
    if state.content().remove_rating(&principal.user, film).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "you have not rated film {film}"
        )))
    }
}

/// A film's ratings: count, average, likes (10s), dislikes (0s), the count of each
/// score, and the caller's own score. From an aggregate row: never a scan.
#[utoipa::path(
    get, path = "/api/v1/films/{film_id}/rating", tag = "content",
    params(("film_id" = String, Path, description = "Film UUID")),
    responses(
        (status = 200, body = RatingSummary),
        (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn get_rating(
    State(state): State<AppState>,
    principal: Principal,
    Path(film_id): Path<String>,
) -> Result<Json<RatingSummary>, ApiError> {
    let film = film(&film_id)?;
    Ok(Json(
        state
            .content()
            .rating_summary(&principal.user, film)
            .await?,
    ))
}

/// The caller's ratings, latest first.
#[utoipa::path(
    get, path = "/api/v1/me/ratings", tag = "content",
    params(
        ("limit" = Option<u32>, Query, description = "Items per page, 1–100 (default 20)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, body = RatingPage),
        (status = 401, body = ErrorBody),
        (status = 422, description = "Bad limit or cursor", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn my_ratings(
    State(state): State<AppState>,
    principal: Principal,
    query: Params,
) -> Result<Json<Page<Rating>>, ApiError> {
    let query = params(query)?;
    let (limit, cursor) = page_params(&query)?;
    Ok(Json(
        state
            .content()
            .ratings_of(&principal.user, limit, cursor)
            .await?,
    ))
}

/// Bookmark a film: 201 when added, 200 when it was already there.
#[utoipa::path(
    put, path = "/api/v1/me/bookmarks/{film_id}", tag = "content",
    params(("film_id" = String, Path, description = "Film UUID")),
    responses(
        (status = 201, description = "Added", body = Bookmark),
        (status = 200, description = "Already bookmarked", body = Bookmark),
        (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn put_bookmark(
    State(state): State<AppState>,
    principal: Principal,
    Path(film_id): Path<String>,
) -> Result<Response, ApiError> {
    let film = film(&film_id)?;
    let (bookmark, added) = state.content().add_bookmark(&principal.user, film).await?;
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(bookmark)).into_response())
}

/// Remove a bookmark.
#[utoipa::path(
    delete, path = "/api/v1/me/bookmarks/{film_id}", tag = "content",
    params(("film_id" = String, Path, description = "Film UUID")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, body = ErrorBody),
        (status = 404, description = "The film is not bookmarked", body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn delete_bookmark(
    State(state): State<AppState>,
    principal: Principal,
    Path(film_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let film = film(&film_id)?;
    if state
        .content()
        .remove_bookmark(&principal.user, film)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("film {film} is not bookmarked")))
    }
}

/// The caller's bookmarks, newest first.
#[utoipa::path(
    get, path = "/api/v1/me/bookmarks", tag = "content",
    params(
        ("limit" = Option<u32>, Query, description = "Items per page, 1–100 (default 20)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, body = BookmarkPage),
        (status = 401, body = ErrorBody),
        (status = 422, description = "Bad limit or cursor", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn my_bookmarks(
    State(state): State<AppState>,
    principal: Principal,
    query: Params,
) -> Result<Json<Page<Bookmark>>, ApiError> {
    let query = params(query)?;
    let (limit, cursor) = page_params(&query)?;
    Ok(Json(
        state
            .content()
            .bookmarks_of(&principal.user, limit, cursor)
            .await?,
    ))
}

/// A page of reviews (documentation only: the handler returns the same shape).
#[derive(Serialize, ToSchema)]
pub struct ReviewPage {
    pub items: Vec<Review>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(serde::Deserialize, ToSchema)]
#[allow(dead_code)] // documentation only: the body is parsed field by field
pub struct ReviewRequest {
    text: ReviewText,
    /// Also sets the author's rating of the film.
    score: Option<Score>,
}

#[derive(serde::Deserialize, ToSchema)]
#[allow(dead_code)] // documentation only: the body is parsed field by field
pub struct ReviewEdit {
    text: Option<ReviewText>,
    /// Also sets the author's rating of the film.
    score: Option<Score>,
}

#[derive(serde::Deserialize, ToSchema)]
#[allow(dead_code)] // documentation only: the body is parsed field by field
pub struct VoteRequest {
    /// 1: like, -1: dislike.
    value: Vote,
}

/// Review a film: one review per user and film. With `score`, the caller's rating is
/// set in the same transaction.
#[utoipa::path(
    post, path = "/api/v1/films/{film_id}/reviews", tag = "content",
    params(("film_id" = String, Path, description = "Film UUID")),
    request_body(content = ReviewRequest, example = json!({"text": "A slow start, a great last act.", "score": 8})),
    responses(
        (status = 201, body = Review),
        (status = 401, body = ErrorBody),
        (status = 409, description = "The caller reviewed this film already: `review_id` names that review", body = ErrorBody),
        (status = 422, description = "Bad film_id, empty or too long text, score out of 0..10, or an unknown field", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn post_review(
    State(state): State<AppState>,
    principal: Principal,
    Path(film_id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let film = film(&film_id)?;
    let obj = object(&body, &["text", "score"])?;
    let text: ReviewText = required(obj, "text")?;
    let score: Option<Score> = field(obj, "score")?;
    let review = state
        .content()
        .post_review(&principal.user, film, None, text, score)
        .await?;
    Ok((StatusCode::CREATED, Json(review)).into_response())
}

/// One review.
#[utoipa::path(
    get, path = "/api/v1/reviews/{review_id}", tag = "content",
    params(("review_id" = String, Path, description = "Review UUID")),
    responses(
        (status = 200, body = Review),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn get_review(
    State(state): State<AppState>,
    _principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Review>, ApiError> {
    let id = review_id(&id)?;
    Ok(Json(state.content().review(id).await?))
}

/// Edit one's own review: its text, and with `score` one's rating of the film.
#[utoipa::path(
    patch, path = "/api/v1/reviews/{review_id}", tag = "content",
    params(("review_id" = String, Path, description = "Review UUID")),
    request_body(content = ReviewEdit, example = json!({"text": "On a second viewing, better still."})),
    responses(
        (status = 200, body = Review),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not the author", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn patch_review(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Review>, ApiError> {
    let id = review_id(&id)?;
    let obj = object(&body, &["text", "score"])?;
    let text: Option<ReviewText> = field(obj, "text")?;
    let score: Option<Score> = field(obj, "score")?;
    Ok(Json(
        state
            .content()
            .edit_review(&principal.user, id, None, text, score)
            .await?,
    ))
}

/// Remove a review: its author, or a token with role `admin`.
#[utoipa::path(
    delete, path = "/api/v1/reviews/{review_id}", tag = "content",
    params(("review_id" = String, Path, description = "Review UUID")),
    responses(
        (status = 204, description = "Removed, with its votes"),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Neither the author nor an admin", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn delete_review(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = review_id(&id)?;
    let admin = principal.roles.iter().any(|r| r == "admin");
    state
        .content()
        .remove_review(&principal.user, admin, id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A film's reviews: `newest` (default), `oldest`, or `top` (likes − dislikes, then newest).
#[utoipa::path(
    get, path = "/api/v1/films/{film_id}/reviews", tag = "content",
    params(
        ("film_id" = String, Path, description = "Film UUID"),
        ("sort" = Option<String>, Query, description = "`newest` (default), `oldest` or `top`"),
        ("limit" = Option<u32>, Query, description = "Items per page, 1–100 (default 20)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page, same sort"),
    ),
    responses(
        (status = 200, body = ReviewPage),
        (status = 401, body = ErrorBody),
        (status = 422, description = "Bad film_id, sort, limit or cursor", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn film_reviews(
    State(state): State<AppState>,
    _principal: Principal,
    Path(film_id): Path<String>,
    query: Params,
) -> Result<Json<Page<Review>>, ApiError> {
    let film = film(&film_id)?;
    let query = params(query)?;
    let (limit, cursor) = page_params(&query)?;
    let sort = match query
        .iter()
        .rev()
        .find(|(k, _)| k == "sort")
        .map(|(_, v)| v.as_str())
    {
        None | Some("newest") => ReviewSort::Newest,
        Some("oldest") => ReviewSort::Oldest,
        Some("top") => ReviewSort::Top,
        Some(other) => {
            return Err(invalid(
                "sort",
                format!("one of newest, oldest, top; got {other:?}"),
            ));
        }
    };
    Ok(Json(
        state
            .content()
            .reviews_of_film(film, sort, limit, cursor)
            .await?,
    ))
}

/// The caller's reviews, newest first.
#[utoipa::path(
    get, path = "/api/v1/me/reviews", tag = "content",
    params(
        ("limit" = Option<u32>, Query, description = "Items per page, 1–100 (default 20)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, body = ReviewPage),
        (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn my_reviews(
    State(state): State<AppState>,
    principal: Principal,
    query: Params,
) -> Result<Json<Page<Review>>, ApiError> {
    let query = params(query)?;
    let (limit, cursor) = page_params(&query)?;
    Ok(Json(
        state
            .content()
            .reviews_of_user(&principal.user, limit, cursor)
            .await?,
    ))
}

/// Like (1) or dislike (-1) someone else's review; a second vote replaces the first.
#[utoipa::path(
    put, path = "/api/v1/reviews/{review_id}/vote", tag = "content",
    params(("review_id" = String, Path, description = "Review UUID")),
    request_body(content = VoteRequest, example = json!({"value": 1})),
    responses(
        (status = 200, body = VoteSummary),
        (status = 401, body = ErrorBody),
        (status = 403, description = "One's own review", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn put_vote(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<VoteSummary>, ApiError> {
    let id = review_id(&id)?;
    let obj = object(&body, &["value"])?;
    let value: Vote = required(obj, "value")?;
    Ok(Json(
        state.content().vote(&principal.user, id, value).await?,
    ))
}

/// Take one's vote back.
#[utoipa::path(
    delete, path = "/api/v1/reviews/{review_id}/vote", tag = "content",
    params(("review_id" = String, Path, description = "Review UUID")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, body = ErrorBody),
        (status = 404, description = "No such review, or no vote of the caller on it", body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn delete_vote(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = review_id(&id)?;
    if state.content().unvote(&principal.user, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "you have not voted on review {id}"
        )))
    }
}
