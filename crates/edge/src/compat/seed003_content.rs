//! Seed 003's content service ("ugc_fastapi": films, reviews, ratings and bookmarks, once
//! on MongoDB) under `/ugc_fastapi`, mapped onto the same tables as the native content
//! routes, with its field names, sort values, status codes and `detail` texts.
//!
//! - A film is a record the cinema registers (a title and a description).
//! - A rating is the caller's one rating of a film (1..10 here; the native scale is 0..10):
//!   its id is fixed for the user and film (`ugc_content::rating_id`), so posting again
//!   replaces it rather than adding a second one.
//! - A review is the native review: `body` is its text, `title` is kept beside it.
//! - A bookmark is the caller's set of bookmarked films, listed as one record.
//!
//! Like FastAPI's `HTTPBearer`, a missing Authorization header is `403
//! {"detail":"Not authenticated"}`. Its defects are fixed: a bad token is 401 (was 500),
//! the owner can edit and delete their ratings (was always 403), `/ratings/me/users` is
//! reachable (was taken for a rating id), a second `POST /bookmarks/` and a bookmark delete
//! answer (were 500), and an average with no ratings is 404 (was 500).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use ugc_content::{ContentError, Film, Limit, Review, ReviewsOf, UserRating};
use ugc_model::{FieldError, FilmId, ReviewId, ReviewText, Score, UserId};

use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{JsonBody, bearer_from};
use crate::state::AppState;

pub(super) fn routes() -> Router<AppState> {
    let films = get(films_list).post(film_create);
    let bookmark = post(bookmark_create);
    Router::new()
        .route("/ugc_fastapi/films/", films.clone())
        .route("/ugc_fastapi/films", films)
        .route(
            "/ugc_fastapi/films/{film_id}",
            get(film_get).patch(film_update).delete(film_delete),
        )
        .route("/ugc_fastapi/reviews/", get(reviews_all))
        .route("/ugc_fastapi/reviews", get(reviews_all))
        .route("/ugc_fastapi/reviews/me/users", get(reviews_mine))
        .route(
            "/ugc_fastapi/reviews/{id}",
            post(review_create)
                .get(review_get)
                .patch(review_update)
                .delete(review_delete),
        )
        .route("/ugc_fastapi/reviews/{id}/films", get(reviews_of_film))
        .route("/ugc_fastapi/reviews/{id}/users", get(reviews_of_user))
        .route("/ugc_fastapi/ratings/me/users", get(ratings_mine))
        .route(
            "/ugc_fastapi/ratings/{id}",
            post(rating_create)
                .get(rating_get)
                .patch(rating_update)
                .delete(rating_delete),
        )
        .route("/ugc_fastapi/ratings/{id}/film", get(rating_average))
        .route("/ugc_fastapi/ratings/{id}/films", get(ratings_of_film))
        .route("/ugc_fastapi/bookmarks/", bookmark.clone())
        .route("/ugc_fastapi/bookmarks", bookmark)
        .route(
            "/ugc_fastapi/bookmarks/{film_id}/films",
            post(bookmark_add_film),
        )
        .route("/ugc_fastapi/bookmarks/me/users/films", get(bookmark_films))
        .route(
            "/ugc_fastapi/bookmarks/me/users/{film_id}/films",
            delete(bookmark_remove_film),
        )
}

const FILM_NOT_FOUND: &str = "Film with the specified ID was not found.";
const FILMS_NOT_FOUND: &str = "Films were not found.";
const REVIEW_NOT_FOUND: &str = "Review with specified ID was not found.";
const REVIEWS_NOT_FOUND: &str = "Reviews were not found.";
const RATING_NOT_FOUND: &str = "Rating record with the specified ID was not found.";
const USER_RATINGS_NOT_FOUND: &str = "Rating records of the spicified user were not found.";
const FILM_RATINGS_NOT_FOUND: &str =
    "Rating records of the film with the specified ID were not found.";
const NOT_YOUR_RATING: &str = "You don't have the permissions to edit this rating.";
const NOT_YOUR_REVIEW: &str = "You don't have the permissions to edit this review.";

/// What a route answers when it does not succeed: the edge's errors (401, 422, 503, ...),
/// or the seed's own `{"detail": ...}` bodies.
pub enum Fail {
    Api(ApiError),
    Detail(StatusCode, Value),
}

impl From<ApiError> for Fail {
    fn from(e: ApiError) -> Self {
        Fail::Api(e)
    }
}

impl From<ContentError> for Fail {
    fn from(e: ContentError) -> Self {
        Fail::Api(e.into())
    }
}

impl From<crate::auth::AuthError> for Fail {
    fn from(e: crate::auth::AuthError) -> Self {
        Fail::Api(e.into())
    }
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        match self {
            Fail::Api(e) => e.into_response(),
            Fail::Detail(status, body) => (status, Json(body)).into_response(),
        }
    }
}

pub type Answer = Result<Response, Fail>;

fn detail(status: StatusCode, text: &str) -> Fail {
    Fail::Detail(status, json!({ "detail": text }))
}

fn not_found(text: &str) -> Fail {
    detail(StatusCode::NOT_FOUND, text)
}

fn invalid(field: &str, reason: impl Into<String>) -> Fail {
    Fail::Api(ApiError::Validation(vec![FieldError::new(field, reason)]))
}

/// The caller, as FastAPI's `HTTPBearer` and then our verifier see it.
fn caller(state: &AppState, headers: &HeaderMap) -> Result<Principal, Fail> {
    if !headers.contains_key(header::AUTHORIZATION) {
        return Err(detail(StatusCode::FORBIDDEN, "Not authenticated"));
    }
    let Some(token) = bearer_from(headers) else {
        return Err(detail(
            StatusCode::FORBIDDEN,
            "Invalid authentication credentials",
        ));
    };
    Ok(state.verifier().verify(token)?)
}

fn uuid_param(name: &str, v: &str) -> Result<uuid::Uuid, Fail> {
    uuid::Uuid::parse_str(v).map_err(|e| invalid(name, format!("not a UUID: {e}")))
}

fn film_param(v: &str) -> Result<FilmId, Fail> {
    uuid_param("film_id", v).map(FilmId::from)
}

#[derive(Deserialize)]
pub struct SortParam {
    sort: Option<String>,
}

const DESC: &str = "In descending order of the creation time";
const ASC: &str = "In ascending order of the creation time";

/// `true` for ascending; the seed's default is descending.
fn ascending(q: &SortParam) -> Result<bool, Fail> {
    match q.sort.as_deref() {
        None | Some(DESC) => Ok(false),
        Some(ASC) => Ok(true),
        Some(other) => Err(invalid(
            "sort",
            format!("expected {DESC:?} or {ASC:?}, got {other:?}"),
        )),
    }
}

fn object(body: Value) -> Result<Map<String, Value>, Fail> {
    match body {
        Value::Object(m) => Ok(m),
        _ => Err(invalid("", "expected a JSON object")),
    }
}

/// A text field: `None` when absent, `Some(None)` when null. Leading and trailing spaces
/// are dropped, as the seed's models did.
fn text(obj: &Map<String, Value>, name: &str, max: usize) -> Result<Option<Option<String>>, Fail> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.chars().count() > max {
                return Err(invalid(name, format!("must be at most {max} characters")));
            }
            if s.contains('\0') {
                return Err(invalid(name, "must not contain NUL characters"));
            }
            Ok(Some(Some(s.to_owned())))
        }
        Some(_) => Err(invalid(name, "expected a string")),
    }
}

/// Seed 003's `rating`: an integer from 1 to 10.
fn rating_value(obj: &Map<String, Value>) -> Result<Score, Fail> {
    let bad = || invalid("rating", "required: an integer from 1 to 10");
    let v = obj.get("rating").and_then(Value::as_i64).ok_or_else(bad)?;
    if !(1..=10).contains(&v) {
        return Err(bad());
    }
    Score::try_from(v).map_err(|e| invalid("rating", e))
}

fn rating_read(r: &UserRating) -> Value {
    json!({
        "rating": r.score.value(),
        "id": r.rating_id,
        "user_id": r.user_id,
        "film_id": r.film_id,
        "created_at": r.updated_at,
    })
}

fn review_read(r: &Review) -> Value {
    json!({
        "title": r.title,
        "body": r.text,
        "id": r.review_id,
        "film_id": r.film_id,
        "user_id": r.user_id,
        "created_at": r.created_at,
    })
}

/// A film with its ratings and reviews, as the seed embedded them.
async fn film_read(state: &AppState, f: &Film) -> Result<Value, Fail> {
    let content = state.content();
    let ratings = content.film_ratings(f.film_id).await?;
    let reviews = content.reviews(ReviewsOf::Film(f.film_id), true).await?;
    Ok(json!({
        "title": f.title,
        "description": f.description,
        "id": f.film_id,
        "ratings": ratings.iter().map(rating_read).collect::<Vec<_>>(),
        "reviews": reviews.iter().map(review_read).collect::<Vec<_>>(),
        "created_at": f.created_at,
    }))
}

async fn registered(state: &AppState, id: FilmId) -> Result<Film, Fail> {
    state
        .content()
        .film(id)
        .await?
        .ok_or_else(|| not_found(FILM_NOT_FOUND))
}

fn ok(status: StatusCode, body: Value) -> Answer {
    Ok((status, Json(body)).into_response())
}

// Films.

/// Register a film (a title and a description).
#[utoipa::path(post, path = "/ugc_fastapi/films/", tag = "compat: seed 003",
    request_body(content = Object, example = json!({"title": "The Cranes Are Flying", "description": "Moscow, 1941."})),
    responses(
        (status = 201, description = "The film record", example = json!({"title": "The Cranes Are Flying", "description": "Moscow, 1941.", "id": "1ec4cd73-2fd5-4f25-af68-b6595d279af2", "ratings": [], "reviews": [], "created_at": "2026-05-24T12:00:00Z"})),
        (status = 401, body = ErrorBody), (status = 403, example = json!({"detail": "Not authenticated"})),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn film_create(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Answer {
    caller(&state, &headers)?;
    let obj = object(body)?;
    let title = text(&obj, "title", 1000)?
        .flatten()
        .ok_or_else(|| invalid("title", "required: a string"))?;
    let description = text(&obj, "description", 100_000)?.flatten();
    let film = state.content().create_film(title, description).await?;
    ok(StatusCode::CREATED, film_read(&state, &film).await?)
}

/// Every registered film, by creation time.
#[utoipa::path(get, path = "/ugc_fastapi/films/", tag = "compat: seed 003",
    params(("sort" = Option<String>, Query, description = "`In descending order of the creation time` (default) or `In ascending order of the creation time`")),
    responses((status = 200, description = "Film records"), (status = 404, example = json!({"detail": FILMS_NOT_FOUND})),
        (status = 401, body = ErrorBody), (status = 403, example = json!({"detail": "Not authenticated"})), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn films_list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<SortParam>,
) -> Answer {
    caller(&state, &headers)?;
    let films = state.content().films(ascending(&q)?).await?;
    if films.is_empty() {
        return Err(not_found(FILMS_NOT_FOUND));
    }
    let mut out = Vec::with_capacity(films.len());
    for f in &films {
        out.push(film_read(&state, f).await?);
    }
    ok(StatusCode::OK, Value::Array(out))
}

/// One film record.
#[utoipa::path(get, path = "/ugc_fastapi/films/{film_id}", tag = "compat: seed 003",
    params(("film_id" = String, Path, description = "Film UUID")),
    responses((status = 200, description = "The film record"), (status = 404, example = json!({"detail": FILM_NOT_FOUND})),
        (status = 401, body = ErrorBody), (status = 403, example = json!({"detail": "Not authenticated"})), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn film_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(film_id): Path<String>,
) -> Answer {
    caller(&state, &headers)?;
    let film = registered(&state, film_param(&film_id)?).await?;
    ok(StatusCode::OK, film_read(&state, &film).await?)
}

/// Change a film's title and/or description.
#[utoipa::path(patch, path = "/ugc_fastapi/films/{film_id}", tag = "compat: seed 003",
    params(("film_id" = String, Path, description = "Film UUID")),
    request_body(content = Object, example = json!({"description": "Moscow, 1941. A war, a love."})),
    responses((status = 200, description = "The film record"), (status = 404, example = json!({"detail": FILM_NOT_FOUND})),
        (status = 401, body = ErrorBody), (status = 403, example = json!({"detail": "Not authenticated"})), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn film_update(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(film_id): Path<String>,
    JsonBody(body): JsonBody,
) -> Answer {
    caller(&state, &headers)?;
    let id = film_param(&film_id)?;
    let obj = object(body)?;
    let title = match text(&obj, "title", 1000)? {
        Some(None) => return Err(invalid("title", "must be a string, not null")),
        t => t.flatten(),
    };
    let description = text(&obj, "description", 100_000)?;
    let film = state
        .content()
        .update_film(id, title, description)
        .await?
        .ok_or_else(|| not_found(FILM_NOT_FOUND))?;
    ok(StatusCode::OK, film_read(&state, &film).await?)
}

/// Remove a film record (the viewers' ratings, reviews and bookmarks of it stay).
#[utoipa::path(delete, path = "/ugc_fastapi/films/{film_id}", tag = "compat: seed 003",
    params(("film_id" = String, Path, description = "Film UUID")),
    responses((status = 204, description = "Removed"), (status = 404, example = json!({"detail": FILM_NOT_FOUND})),
        (status = 401, body = ErrorBody), (status = 403, example = json!({"detail": "Not authenticated"})), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn film_delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(film_id): Path<String>,
) -> Answer {
    caller(&state, &headers)?;
    if !state.content().delete_film(film_param(&film_id)?).await? {
        return Err(not_found(FILM_NOT_FOUND));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

// Reviews.

fn review_param(v: &str) -> Result<ReviewId, Fail> {
    uuid_param("review_id", v).map(ReviewId::from)
}

fn review_list(reviews: Vec<Review>) -> Answer {
    if reviews.is_empty() {
        return Err(not_found(REVIEWS_NOT_FOUND));
    }
    ok(
        StatusCode::OK,
        Value::Array(reviews.iter().map(review_read).collect()),
    )
}

/// The review's text from seed 003's `body`.
fn body_text(obj: &Map<String, Value>) -> Result<Option<ReviewText>, Fail> {
    match obj.get("body") {
        None => Ok(None),
        Some(Value::String(s)) => ReviewText::try_from(s.trim().to_owned())
            .map(Some)
            .map_err(|e| invalid("body", e)),
        Some(_) => Err(invalid("body", "expected a string")),
    }
}

/// Review a film: `title` and `body` (the review's text). One review per viewer and film.
#[utoipa::path(post, path = "/ugc_fastapi/reviews/{id}", tag = "compat: seed 003",
    params(("id" = String, Path, description = "Film UUID")),
    request_body(content = Object, example = json!({"title": "A slow start", "body": "A slow start, a great last act."})),
    responses(
        (status = 201, description = "The review", example = json!({"title": "A slow start", "body": "A slow start, a great last act.", "id": "0190a1b2-0000-7000-8000-000000000001", "film_id": "1ec4cd73-2fd5-4f25-af68-b6595d279af2", "user_id": "6f1b8c1e-0a3c-4a36-9f57-2b1d6c7e8a90", "created_at": "2026-05-24T12:00:00Z"})),
        (status = 404, example = json!({"detail": FILM_NOT_FOUND})),
        (status = 409, description = "The caller reviewed this film already: `review_id` names that review"),
        (status = 401, body = ErrorBody), (status = 403, example = json!({"detail": "Not authenticated"})), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn review_create(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Answer {
    let principal = caller(&state, &headers)?;
    let film = registered(&state, film_param(&id)?).await?;
    let obj = object(body)?;
    let title = text(&obj, "title", 1000)?.flatten();
    let text = body_text(&obj)?.ok_or_else(|| invalid("body", "required: the review's text"))?;
    match state
        .content()
        .post_review(&principal.user, film.film_id, title, text, None)
        .await
    {
        Ok(review) => ok(StatusCode::CREATED, review_read(&review)),
        Err(ContentError::ReviewExists(existing)) => Err(Fail::Detail(
            StatusCode::CONFLICT,
            json!({"detail": "You have already reviewed this film.", "review_id": existing}),
        )),
        Err(e) => Err(e.into()),
    }
}

/// One review.
#[utoipa::path(get, path = "/ugc_fastapi/reviews/{id}", tag = "compat: seed 003",
    params(("id" = String, Path, description = "Review UUID")),
    responses((status = 200, description = "The review"), (status = 404, example = json!({"detail": REVIEW_NOT_FOUND})),
        (status = 401, body = ErrorBody), (status = 403, example = json!({"detail": "Not authenticated"})), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn review_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    caller(&state, &headers)?;
    let review = state.content().store().review(review_param(&id)?).await?;
    let review = review.ok_or_else(|| not_found(REVIEW_NOT_FOUND))?;
    ok(StatusCode::OK, review_read(&review))
}

/// Every review, by creation time.
#[utoipa::path(get, path = "/ugc_fastapi/reviews/", tag = "compat: seed 003",
    params(("sort" = Option<String>, Query, description = "`In descending order of the creation time` (default) or `In ascending order of the creation time`")),
    responses((status = 200, description = "Reviews"), (status = 404, example = json!({"detail": REVIEWS_NOT_FOUND})),
        (status = 401, body = ErrorBody), (status = 403, example = json!({"detail": "Not authenticated"})), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn reviews_all(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<SortParam>,
) -> Answer {
    caller(&state, &headers)?;
    review_list(
        state
            .content()
            .reviews(ReviewsOf::All, ascending(&q)?)
            .await?,
    )
}

/// A film's reviews, by creation time.
#[utoipa::path(get, path = "/ugc_fastapi/reviews/{id}/films", tag = "compat: seed 003",
    params(("id" = String, Path, description = "Film UUID"),
        ("sort" = Option<String>, Query, description = "`In descending order of the creation time` (default) or `In ascending order of the creation time`")),
    responses((status = 200, description = "Reviews"), (status = 404, example = json!({"detail": REVIEWS_NOT_FOUND})),
        (status = 401, body = ErrorBody), (status = 403, example = json!({"detail": "Not authenticated"})), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn reviews_of_film(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<SortParam>,
) -> Answer {
    caller(&state, &headers)?;
    let film = film_param(&id)?;
    review_list(
        state
            .content()
            .reviews(ReviewsOf::Film(film), ascending(&q)?)
            .await?,
    )
}

/// The caller's reviews, by creation time.
#[utoipa::path(get, path = "/ugc_fastapi/reviews/me/users", tag = "compat: seed 003",
    params(("sort" = Option<String>, Query, description = "`In descending order of the creation time` (default) or `In ascending order of the creation time`")),
    responses((status = 200, description = "Reviews"), (status = 404, example = json!({"detail": REVIEWS_NOT_FOUND})),
        (status = 401, body = ErrorBody), (status = 403, example = json!({"detail": "Not authenticated"})), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn reviews_mine(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<SortParam>,
) -> Answer {
    let principal = caller(&state, &headers)?;
    review_list(
        state
            .content()
            .reviews(ReviewsOf::User(principal.user), ascending(&q)?)
            .await?,
    )
}

/// A viewer's reviews, by creation time.
#[utoipa::path(get, path = "/ugc_fastapi/reviews/{id}/users", tag = "compat: seed 003",
    params(("id" = String, Path, description = "User id"),
        ("sort" = Option<String>, Query, description = "`In descending order of the creation time` (default) or `In ascending order of the creation time`")),
    responses((status = 200, description = "Reviews"), (status = 404, example = json!({"detail": REVIEWS_NOT_FOUND})),
        (status = 401, body = ErrorBody), (status = 403, example = json!({"detail": "Not authenticated"})), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn reviews_of_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<SortParam>,
) -> Answer {
    caller(&state, &headers)?;
    let user = UserId::parse(id).map_err(|e| invalid("user_id", e))?;
    review_list(
        state
            .content()
            .reviews(ReviewsOf::User(user), ascending(&q)?)
            .await?,
    )
}

/// Edit one's review: `title` and/or `body`.
#[utoipa::path(patch, path = "/ugc_fastapi/reviews/{id}", tag = "compat: seed 003",
    params(("id" = String, Path, description = "Review UUID")),
    request_body(content = Object, example = json!({"body": "On a second viewing, better still."})),
    responses((status = 200, description = "The review"), (status = 404, example = json!({"detail": REVIEW_NOT_FOUND})),
        (status = 403, example = json!({"detail": NOT_YOUR_REVIEW})),
        (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn review_update(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Answer {
    let principal = caller(&state, &headers)?;
    let id = review_param(&id)?;
    let obj = object(body)?;
    let title = text(&obj, "title", 1000)?;
    let text = body_text(&obj)?;
    match state
        .content()
        .edit_review(&principal.user, id, title, text, None)
        .await
    {
        Ok(review) => ok(StatusCode::OK, review_read(&review)),
        Err(ContentError::NotFound(_)) => Err(not_found(REVIEW_NOT_FOUND)),
        Err(ContentError::Forbidden(_)) => Err(detail(StatusCode::FORBIDDEN, NOT_YOUR_REVIEW)),
        Err(e) => Err(e.into()),
    }
}

/// Remove one's review (or any, with role `admin`).
#[utoipa::path(delete, path = "/ugc_fastapi/reviews/{id}", tag = "compat: seed 003",
    params(("id" = String, Path, description = "Review UUID")),
    responses((status = 204, description = "Removed"), (status = 404, example = json!({"detail": REVIEW_NOT_FOUND})),
        (status = 403, example = json!({"detail": NOT_YOUR_REVIEW})),
        (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn review_delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    let principal = caller(&state, &headers)?;
    let id = review_param(&id)?;
    let admin = principal.roles.iter().any(|r| r == "admin");
    match state
        .content()
        .remove_review(&principal.user, admin, id)
        .await
    {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(ContentError::NotFound(_)) => Err(not_found(REVIEW_NOT_FOUND)),
        Err(ContentError::Forbidden(_)) => Err(detail(StatusCode::FORBIDDEN, NOT_YOUR_REVIEW)),
        Err(e) => Err(e.into()),
    }
}

// Ratings.

/// The rating `id` names, and that it is the caller's.
async fn own_rating(state: &AppState, id: &str, user: &UserId) -> Result<UserRating, Fail> {
    let id = uuid_param("rating_id", id)?;
    let rating = state
        .content()
        .rating_by_id(id)
        .await?
        .ok_or_else(|| not_found(RATING_NOT_FOUND))?;
    if &rating.user_id != user {
        return Err(detail(StatusCode::FORBIDDEN, NOT_YOUR_RATING));
    }
    Ok(rating)
}

/// Rate a film from 1 to 10 (the caller's one rating of it: again replaces it).
#[utoipa::path(post, path = "/ugc_fastapi/ratings/{id}", tag = "compat: seed 003",
    params(("id" = String, Path, description = "Film UUID")),
    request_body(content = Object, example = json!({"rating": 8})),
    responses(
        (status = 201, description = "The rating", example = json!({"rating": 8, "id": "5b0e2f7c-1d3a-5e4b-9c8d-7f6e5d4c3b2a", "user_id": "6f1b8c1e-0a3c-4a36-9f57-2b1d6c7e8a90", "film_id": "1ec4cd73-2fd5-4f25-af68-b6595d279af2", "created_at": "2026-05-24T12:00:00Z"})),
        (status = 404, example = json!({"detail": FILM_NOT_FOUND})),
        (status = 401, body = ErrorBody), (status = 403, example = json!({"detail": "Not authenticated"})), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn rating_create(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Answer {
    let principal = caller(&state, &headers)?;
    let film = registered(&state, film_param(&id)?).await?;
    let score = rating_value(&object(body)?)?;
    let r = state
        .content()
        .set_rating(&principal.user, film.film_id, score)
        .await?;
    let rating = UserRating {
        rating_id: ugc_content::rating_id(&principal.user, film.film_id),
        user_id: principal.user,
        film_id: r.film_id,
        score: r.score,
        updated_at: r.updated_at,
    };
    ok(StatusCode::CREATED, rating_read(&rating))
}

/// A film's average rating, to one decimal.
#[utoipa::path(get, path = "/ugc_fastapi/ratings/{id}/film", tag = "compat: seed 003",
    params(("id" = String, Path, description = "Film UUID")),
    responses((status = 200, example = json!({"avg_rating_value": 7.5})),
        (status = 404, description = "No such film, or no rating of it", example = json!({"detail": FILM_RATINGS_NOT_FOUND})),
        (status = 401, body = ErrorBody), (status = 403, example = json!({"detail": "Not authenticated"})), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn rating_average(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    let principal = caller(&state, &headers)?;
    let film = registered(&state, film_param(&id)?).await?;
    let summary = state
        .content()
        .rating_summary(&principal.user, film.film_id)
        .await?;
    let Some(avg) = summary.average else {
        return Err(not_found(FILM_RATINGS_NOT_FOUND));
    };
    ok(
        StatusCode::OK,
        json!({"avg_rating_value": (avg * 10.0).round() / 10.0}),
    )
}

/// A film's ratings.
#[utoipa::path(get, path = "/ugc_fastapi/ratings/{id}/films", tag = "compat: seed 003",
    params(("id" = String, Path, description = "Film UUID")),
    responses((status = 200, description = "Ratings"), (status = 404, example = json!({"detail": FILM_NOT_FOUND})),
        (status = 401, body = ErrorBody), (status = 403, example = json!({"detail": "Not authenticated"})), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn ratings_of_film(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    caller(&state, &headers)?;
    let film = registered(&state, film_param(&id)?).await?;
    let ratings = state.content().film_ratings(film.film_id).await?;
    ok(
        StatusCode::OK,
        Value::Array(ratings.iter().map(rating_read).collect()),
    )
}

/// One rating.
#[utoipa::path(get, path = "/ugc_fastapi/ratings/{id}", tag = "compat: seed 003",
    params(("id" = String, Path, description = "Rating UUID")),
    responses((status = 200, description = "The rating"), (status = 404, example = json!({"detail": RATING_NOT_FOUND})),
        (status = 401, body = ErrorBody), (status = 403, example = json!({"detail": "Not authenticated"})), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn rating_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    caller(&state, &headers)?;
    let id = uuid_param("rating_id", &id)?;
    let rating = state
        .content()
        .rating_by_id(id)
        .await?
        .ok_or_else(|| not_found(RATING_NOT_FOUND))?;
    ok(StatusCode::OK, rating_read(&rating))
}

/// The caller's ratings, by time.
#[utoipa::path(get, path = "/ugc_fastapi/ratings/me/users", tag = "compat: seed 003",
    params(("sort" = Option<String>, Query, description = "`In descending order of the creation time` (default) or `In ascending order of the creation time`")),
    responses((status = 200, description = "Ratings"), (status = 404, example = json!({"detail": USER_RATINGS_NOT_FOUND})),
        (status = 401, body = ErrorBody), (status = 403, example = json!({"detail": "Not authenticated"})), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn ratings_mine(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<SortParam>,
) -> Answer {
    let principal = caller(&state, &headers)?;
    let ratings = state
        .content()
        .user_ratings(&principal.user, ascending(&q)?)
        .await?;
    if ratings.is_empty() {
        return Err(not_found(USER_RATINGS_NOT_FOUND));
    }
    ok(
        StatusCode::OK,
        Value::Array(ratings.iter().map(rating_read).collect()),
    )
}

/// Change one's rating.
#[utoipa::path(patch, path = "/ugc_fastapi/ratings/{id}", tag = "compat: seed 003",
    params(("id" = String, Path, description = "Rating UUID")),
    request_body(content = Object, example = json!({"rating": 9})),
    responses((status = 200, description = "The rating"), (status = 404, example = json!({"detail": RATING_NOT_FOUND})),
        (status = 403, example = json!({"detail": NOT_YOUR_RATING})),
        (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn rating_update(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Answer {
    let principal = caller(&state, &headers)?;
    let score = rating_value(&object(body)?)?;
    let mut rating = own_rating(&state, &id, &principal.user).await?;
    let r = state
        .content()
        .set_rating(&principal.user, rating.film_id, score)
        .await?;
    rating.score = r.score;
    rating.updated_at = r.updated_at;
    ok(StatusCode::OK, rating_read(&rating))
}

/// Remove one's rating.
#[utoipa::path(delete, path = "/ugc_fastapi/ratings/{id}", tag = "compat: seed 003",
    params(("id" = String, Path, description = "Rating UUID")),
    responses((status = 204, description = "Removed"), (status = 404, example = json!({"detail": RATING_NOT_FOUND})),
        (status = 403, example = json!({"detail": NOT_YOUR_RATING})),
        (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn rating_delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    let principal = caller(&state, &headers)?;
    let rating = own_rating(&state, &id, &principal.user).await?;
    // Gone meanwhile (a concurrent delete): it is gone either way.
    state
        .content()
        .remove_rating(&principal.user, rating.film_id)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// Bookmarks.

/// Namespace of the one bookmark record each viewer has.
const BOOKMARK_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x9e4f_27c1_6b3d_4a58_8f02_d1c3_b5a7_e9f1);

/// Every bookmark of the caller, oldest first.
async fn bookmarked(state: &AppState, user: &UserId) -> Result<Vec<ugc_content::Bookmark>, Fail> {
    let page =
        Limit::try_from(i64::from(Limit::MAX)).map_err(|e| Fail::Api(ApiError::Internal(e)))?;
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let p = state
            .content()
            .bookmarks_of(user, page, cursor.as_deref())
            .await?;
        all.extend(p.items);
        match p.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    all.reverse();
    Ok(all)
}

/// The caller's bookmark record: the films, in the order they were added.
async fn bookmark_read(state: &AppState, user: &UserId) -> Result<Value, Fail> {
    let marks = bookmarked(state, user).await?;
    let created_at = marks
        .first()
        .map_or_else(ugc_model::Timestamp::now, |b| b.created_at);
    Ok(json!({
        "film_ids": marks.iter().map(|b| b.film_id).collect::<Vec<_>>(),
        "user_id": user,
        "id": uuid::Uuid::new_v5(&BOOKMARK_NAMESPACE, user.as_str().as_bytes()),
        "created_at": created_at,
    }))
}

/// The caller's bookmark record (every viewer has one; asking again returns the same).
#[utoipa::path(post, path = "/ugc_fastapi/bookmarks/", tag = "compat: seed 003",
    responses(
        (status = 201, description = "The caller's bookmark", example = json!({"film_ids": [], "user_id": "6f1b8c1e-0a3c-4a36-9f57-2b1d6c7e8a90", "id": "0c5a6f1e-3b2d-5c4e-8a9b-1d2e3f4a5b6c", "created_at": "2026-05-24T12:00:00Z"})),
        (status = 401, body = ErrorBody), (status = 403, example = json!({"detail": "Not authenticated"}))),
    security(("bearer" = [])))]
pub async fn bookmark_create(State(state): State<AppState>, headers: HeaderMap) -> Answer {
    let principal = caller(&state, &headers)?;
    ok(
        StatusCode::CREATED,
        bookmark_read(&state, &principal.user).await?,
    )
}

/// Bookmark a film.
#[utoipa::path(post, path = "/ugc_fastapi/bookmarks/{film_id}/films", tag = "compat: seed 003",
    params(("film_id" = String, Path, description = "Film UUID")),
    responses((status = 201, description = "The caller's bookmark"), (status = 404, example = json!({"detail": FILM_NOT_FOUND})),
        (status = 401, body = ErrorBody), (status = 403, example = json!({"detail": "Not authenticated"})), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn bookmark_add_film(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(film_id): Path<String>,
) -> Answer {
    let principal = caller(&state, &headers)?;
    let film = registered(&state, film_param(&film_id)?).await?;
    state
        .content()
        .add_bookmark(&principal.user, film.film_id)
        .await?;
    ok(
        StatusCode::CREATED,
        bookmark_read(&state, &principal.user).await?,
    )
}

/// The caller's bookmarked films, by the films' creation time.
#[utoipa::path(get, path = "/ugc_fastapi/bookmarks/me/users/films", tag = "compat: seed 003",
    params(("sort" = Option<String>, Query, description = "`In descending order of the creation time` (default) or `In ascending order of the creation time`")),
    responses((status = 200, description = "Film records"),
        (status = 401, body = ErrorBody), (status = 403, example = json!({"detail": "Not authenticated"})), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn bookmark_films(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<SortParam>,
) -> Answer {
    let principal = caller(&state, &headers)?;
    let asc = ascending(&q)?;
    let mut films = Vec::new();
    for b in bookmarked(&state, &principal.user).await? {
        // Films bookmarked through the native API need no record; only registered ones list.
        if let Some(f) = state.content().film(b.film_id).await? {
            films.push(f);
        }
    }
    films.sort_by_key(|f| (f.created_at.millis(), *f.film_id.as_uuid()));
    if !asc {
        films.reverse();
    }
    let mut out = Vec::with_capacity(films.len());
    for f in &films {
        out.push(film_read(&state, f).await?);
    }
    ok(StatusCode::OK, Value::Array(out))
}

/// Un-bookmark a film.
#[utoipa::path(delete, path = "/ugc_fastapi/bookmarks/me/users/{film_id}/films", tag = "compat: seed 003",
    params(("film_id" = String, Path, description = "Film UUID")),
    responses((status = 200, description = "The caller's bookmark, without the film"), (status = 404, example = json!({"detail": FILM_NOT_FOUND})),
        (status = 401, body = ErrorBody), (status = 403, example = json!({"detail": "Not authenticated"})), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn bookmark_remove_film(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(film_id): Path<String>,
) -> Answer {
    let principal = caller(&state, &headers)?;
    let film = registered(&state, film_param(&film_id)?).await?;
    state
        .content()
        .remove_bookmark(&principal.user, film.film_id)
        .await?;
    ok(
        StatusCode::OK,
        bookmark_read(&state, &principal.user).await?,
    )
}
