//! `/api/v1/analytics/...`: the cinema's questions with ready answers, for analysts and
//! admins. The edge parses and checks parameters into a typed request; the store builds
//! and runs the one statement that answers it (`ugc_store::analytics`, via `ugc-query`).

use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use ugc_model::{FieldError, FilmId, FilmPosition};
use ugc_query::analytics::{
    AnalyticsAnswer, AnalyticsRequest, AudiencePeriod, ContentFigures, ContentRank, Dropoff,
    FilmFigures, FilmRank, FilmSummary, Grain, PageFigures, PageGroup, Period, QoeGroup,
    QoeGroupFigures, QualityPeriod,
};
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// The default period: the last seven days.
const DEFAULT_DAYS: i64 = 7;
/// Most rows of a ranking.
const MAX_LIMIT: u32 = 100;
const MAX_BUCKETS: u32 = 100;

type RawQuery = Result<Query<HashMap<String, String>>, QueryRejection>;

/// The query string, read parameter by parameter so each bad one is named.
struct Params {
    raw: HashMap<String, String>,
    errors: Vec<FieldError>,
}

impl Params {
    /// The caller's parameters; a caller without the role is refused before any is read.
    fn new(principal: &Principal, raw: RawQuery) -> Result<Self, ApiError> {
        if !principal
            .roles
            .iter()
            .any(|r| ugc_query::ANALYST_ROLES.contains(&r.as_str()))
        {
            return Err(ugc_query::QueryError::Forbidden.into());
        }
        let Query(raw) =
            raw.map_err(|e| ApiError::Validation(vec![FieldError::new("query", e.body_text())]))?;
        Ok(Self {
            raw,
            errors: vec![],
        })
    }

    fn time(&mut self, name: &'static str) -> Option<OffsetDateTime> {
        let v = self.raw.get(name)?;
        match OffsetDateTime::parse(v, &Rfc3339) {
            Ok(t) => Some(t),
            Err(e) => {
                self.errors.push(FieldError::new(
                    name,
                    format!("must be an RFC 3339 time such as 2026-12-01T00:00:00Z: {e}"),
                ));
                None
            }
        }
    }

    /// `from` and `to`: the period `[from, to)`; by default the last seven days.
    fn period(&mut self) -> (Period, OffsetDateTime, OffsetDateTime) {
        let (from, to) = (self.time("from"), self.time("to"));
        let to = to.unwrap_or_else(OffsetDateTime::now_utc);
        let from = from.unwrap_or(to - time::Duration::days(DEFAULT_DAYS));
        if from > to
            && !self
                .errors
                .iter()
                .any(|e| e.field == "from" || e.field == "to")
        {
            self.errors
                .push(FieldError::new("from", "must not be after `to`".to_owned()));
        }
        let ms = |t: OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000) as i64;
        (
            Period {
                from_ms: ms(from),
                to_ms: ms(to),
            },
            from,
            to,
        )
    }

    /// One of `choices` (`default` when absent).
    fn choice<T: Copy>(&mut self, name: &'static str, choices: &[(&str, T)], default: T) -> T {
        let Some(v) = self.raw.get(name) else {
            return default;
        };
        match choices.iter().find(|(n, _)| n == v) {
            Some((_, t)) => *t,
            None => {
                let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
                self.errors.push(FieldError::new(
                    name,
                    format!("must be one of {}, got `{v}`", names.join(", ")),
                ));
                default
            }
        }
    }

    fn number(&mut self, name: &'static str, min: u32, max: u32) -> Option<u32> {
        let v = self.raw.get(name)?;
        match v.parse::<u32>() {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.errors.push(FieldError::new(
                    name,
                    format!("must be an integer from {min} to {max}, got `{v}`"),
                ));
                None
            }
        }
    }

    fn done(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.errors))
        }
    }
}

fn film_id(raw: &str) -> Result<FilmId, ApiError> {
    uuid::Uuid::parse_str(raw)
        .map(FilmId::from)
        .map_err(|e| ApiError::Validation(vec![FieldError::new("film_id", e.to_string())]))
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// The period of an answer and how long the store took.
#[derive(Serialize, ToSchema)]
pub struct Span {
    /// Start of the period (inclusive), RFC 3339.
    #[schema(example = "2026-11-25T12:00:00Z")]
    pub from: String,
    /// End of the period (exclusive), RFC 3339.
    #[schema(example = "2026-12-02T12:00:00Z")]
    pub to: String,
    /// How long the store took to run the answer's SQL statement, in milliseconds.
    #[schema(example = 4.2)]
    pub elapsed_ms: f64,
    /// The one statement the store ran for this answer, in its own dialect: run it, or
    /// a variation of it, through `POST /api/v1/query`.
    #[schema(example = "SELECT toString(film_id) AS film, … FROM ugc.events WHERE …")]
    pub sql: String,
}

async fn ask(
    state: &AppState,
    principal: &Principal,
    request: AnalyticsRequest,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<(Span, AnalyticsAnswer), ApiError> {
    let asked = state
        .queries()
        .analytics(&principal.roles, &request)
        .await?;
    let (answer, took) = (asked.answer, asked.took);
    Ok((
        Span {
            from: rfc3339(from),
            to: rfc3339(to),
            elapsed_ms: (took.as_secs_f64() * 1e6).round() / 1e3,
            sql: asked.sql,
        },
        answer,
    ))
}

fn unexpected() -> ApiError {
    ApiError::Internal("the store answered another question".into())
}

#[derive(Serialize, ToSchema)]
pub struct TopFilmsAnswer {
    #[serde(flatten)]
    pub span: Span,
    #[schema(example = "views")]
    pub by: String,
    pub films: Vec<FilmFigures>,
}

/// Films ranked by views, unique viewers, completion rate or total watch time.
#[utoipa::path(
    get, path = "/api/v1/analytics/films/top", tag = "analytics",
    params(
        ("by" = Option<String>, Query, description = "views (default), viewers, completion or watch_time"),
        ("limit" = Option<u32>, Query, description = "Films to list, 1–100 (default 10)"),
        ("from" = Option<String>, Query, description = "RFC 3339; default: `to` minus 7 days"),
        ("to" = Option<String>, Query, description = "RFC 3339, exclusive; default: now"),
    ),
    responses(
        (status = 200, body = TopFilmsAnswer, example = json!({
            "from": "2026-11-25T12:00:00Z", "to": "2026-12-02T12:00:00Z", "elapsed_ms": 4.2, "sql": "SELECT … FROM ugc.hourly WHERE … UNION ALL SELECT … FROM ugc.events WHERE …", "by": "views",
            "films": [{"film_id": "3fa85f64-5717-4562-b3fc-2c963f66afa6", "views": 120, "viewers": 131,
                       "completed": 54, "completion_rate": 0.45, "watch_time_s": 512000, "length_s": 7140}]
        })),
        (status = 401, body = ErrorBody),
        (status = 403, description = "The token has neither role admin nor analyst", body = ErrorBody),
        (status = 422, description = "A bad parameter, named in `errors`", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn top_films(
    State(state): State<AppState>,
    principal: Principal,
    raw: RawQuery,
) -> Result<Json<TopFilmsAnswer>, ApiError> {
    let mut p = Params::new(&principal, raw)?;
    let (period, from, to) = p.period();
    let choices = [
        ("views", FilmRank::Views),
        ("viewers", FilmRank::Viewers),
        ("completion", FilmRank::Completion),
        ("watch_time", FilmRank::WatchTime),
    ];
    let by = p.choice("by", &choices, FilmRank::Views);
    let limit = p.number("limit", 1, MAX_LIMIT).unwrap_or(10);
    p.done()?;
    let req = AnalyticsRequest::TopFilms { period, by, limit };
    match ask(&state, &principal, req, from, to).await? {
        (span, AnalyticsAnswer::TopFilms(films)) => Ok(Json(TopFilmsAnswer {
            span,
            by: name_of(&choices, by),
            films,
        })),
        _ => Err(unexpected()),
    }
}

fn name_of<T: PartialEq>(choices: &[(&str, T)], v: T) -> String {
    choices
        .iter()
        .find(|(_, c)| *c == v)
        .map_or_else(String::new, |(n, _)| (*n).to_owned())
}

#[derive(Serialize, ToSchema)]
pub struct DropoffAnswer {
    #[serde(flatten)]
    pub span: Span,
    #[schema(value_type = String, format = Uuid)]
    pub film_id: FilmId,
    pub buckets: u32,
    #[serde(flatten)]
    pub curve: Dropoff,
}

/// The share of a film's viewers still watching at each step of its length (from
/// `view_progress`): at 0%, 5%, ..., 100% with 20 buckets.
#[utoipa::path(
    get, path = "/api/v1/analytics/films/{film_id}/dropoff", tag = "analytics",
    params(
        ("film_id" = String, Path, description = "Film UUID"),
        ("buckets" = Option<u32>, Query, description = "Steps of the curve, 1–100 (default 20: every 5%)"),
        ("length" = Option<u32>, Query, description = "The film's length in seconds; default: the furthest position seen"),
        ("from" = Option<String>, Query, description = "RFC 3339; default: `to` minus 7 days"),
        ("to" = Option<String>, Query, description = "RFC 3339, exclusive; default: now"),
    ),
    responses(
        (status = 200, body = DropoffAnswer, example = json!({
            "from": "2026-11-25T12:00:00Z", "to": "2026-12-02T12:00:00Z", "elapsed_ms": 2.1, "sql": "SELECT … FROM ugc.events WHERE …",
            "film_id": "3fa85f64-5717-4562-b3fc-2c963f66afa6", "buckets": 2, "viewers": 4, "length_s": 3600,
            "points": [
                {"percent": 0.0, "position_s": 0.0, "viewers": 4, "share": 1.0},
                {"percent": 50.0, "position_s": 1800.0, "viewers": 3, "share": 0.75},
                {"percent": 100.0, "position_s": 3600.0, "viewers": 1, "share": 0.25}
            ]
        })),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 422, description = "A bad parameter, named in `errors`", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn dropoff(
    State(state): State<AppState>,
    principal: Principal,
    Path(film): Path<String>,
    raw: RawQuery,
) -> Result<Json<DropoffAnswer>, ApiError> {
    let mut p = Params::new(&principal, raw)?;
    let film = film_id(&film)?;
    let (period, from, to) = p.period();
    let buckets = p.number("buckets", 1, MAX_BUCKETS).unwrap_or(20);
    let length = p.number("length", 1, FilmPosition::MAX);
    p.done()?;
    let req = AnalyticsRequest::Dropoff {
        period,
        film,
        buckets,
        length,
    };
    match ask(&state, &principal, req, from, to).await? {
        (span, AnalyticsAnswer::Dropoff(curve)) => Ok(Json(DropoffAnswer {
            span,
            film_id: film,
            buckets,
            curve,
        })),
        _ => Err(unexpected()),
    }
}

#[derive(Serialize, ToSchema)]
pub struct FilmSummaryAnswer {
    #[serde(flatten)]
    pub span: Span,
    #[schema(value_type = String, format = Uuid)]
    pub film_id: FilmId,
    #[serde(flatten)]
    pub summary: FilmSummary,
}

/// One film: views, viewers, completion, average watch time, pauses and quality switches
/// per view, and its rating summary when there are ratings.
#[utoipa::path(
    get, path = "/api/v1/analytics/films/{film_id}/summary", tag = "analytics",
    params(
        ("film_id" = String, Path, description = "Film UUID"),
        ("from" = Option<String>, Query, description = "RFC 3339; default: `to` minus 7 days"),
        ("to" = Option<String>, Query, description = "RFC 3339, exclusive; default: now"),
    ),
    responses(
        (status = 200, body = FilmSummaryAnswer, example = json!({
            "from": "2026-11-25T12:00:00Z", "to": "2026-12-02T12:00:00Z", "elapsed_ms": 3.0, "sql": "SELECT … FROM ugc.events WHERE …",
            "film_id": "3fa85f64-5717-4562-b3fc-2c963f66afa6", "views": 120, "viewers": 131,
            "completed": 54, "completion_rate": 0.45, "average_watch_time_s": 4266.7,
            "pauses": 300, "pauses_per_view": 2.5, "quality_switches": 96, "quality_switches_per_view": 0.8,
            "length_s": 7140, "rating": {"ratings": 40, "average": 7.9}
        })),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 422, description = "A bad parameter, named in `errors`", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn film_summary(
    State(state): State<AppState>,
    principal: Principal,
    Path(film): Path<String>,
    raw: RawQuery,
) -> Result<Json<FilmSummaryAnswer>, ApiError> {
    let mut p = Params::new(&principal, raw)?;
    let film = film_id(&film)?;
    let (period, from, to) = p.period();
    p.done()?;
    let req = AnalyticsRequest::FilmSummary { period, film };
    match ask(&state, &principal, req, from, to).await? {
        (span, AnalyticsAnswer::FilmSummary(summary)) => Ok(Json(FilmSummaryAnswer {
            span,
            film_id: film,
            summary,
        })),
        _ => Err(unexpected()),
    }
}

#[derive(Serialize, ToSchema)]
pub struct QualityAnswer {
    #[serde(flatten)]
    pub span: Span,
    #[schema(example = "day")]
    pub group_by: String,
    pub periods: Vec<QualityPeriod>,
}

/// Quality switches up and down per hour or day, the share of time per rendition, and
/// the most common switch.
#[utoipa::path(
    get, path = "/api/v1/analytics/quality", tag = "analytics",
    params(
        ("group_by" = Option<String>, Query, description = "hour or day (default)"),
        ("from" = Option<String>, Query, description = "RFC 3339; default: `to` minus 7 days"),
        ("to" = Option<String>, Query, description = "RFC 3339, exclusive; default: now"),
    ),
    responses(
        (status = 200, body = QualityAnswer, example = json!({
            "from": "2026-11-25T12:00:00Z", "to": "2026-12-02T12:00:00Z", "elapsed_ms": 5.3, "sql": "SELECT … FROM ugc.hourly WHERE … UNION ALL SELECT … FROM ugc.events WHERE …", "group_by": "day",
            "periods": [{"period": "2026-12-01T00:00:00Z", "switches_up": 12, "switches_down": 7, "switches_other": 1,
                "renditions": [{"quality": "1080p", "seconds": 36000, "share": 0.6}, {"quality": "720p", "seconds": 24000, "share": 0.4}],
                "transitions": [{"from": "720p", "to": "1080p", "count": 12}, {"from": "1080p", "to": "720p", "count": 7}],
                "most_common": {"from": "720p", "to": "1080p", "count": 12}}]
        })),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 422, description = "A bad parameter, named in `errors`", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn quality(
    State(state): State<AppState>,
    principal: Principal,
    raw: RawQuery,
) -> Result<Json<QualityAnswer>, ApiError> {
    let mut p = Params::new(&principal, raw)?;
    let (period, from, to) = p.period();
    let choices = [("hour", Grain::Hour), ("day", Grain::Day)];
    let grain = p.choice("group_by", &choices, Grain::Day);
    p.done()?;
    let req = AnalyticsRequest::Quality { period, grain };
    match ask(&state, &principal, req, from, to).await? {
        (span, AnalyticsAnswer::Quality(periods)) => Ok(Json(QualityAnswer {
            span,
            group_by: name_of(&choices, grain),
            periods,
        })),
        _ => Err(unexpected()),
    }
}

#[derive(Serialize, ToSchema)]
pub struct QoeAnswer {
    #[serde(flatten)]
    pub span: Span,
    #[schema(example = "day")]
    pub group_by: String,
    pub groups: Vec<QoeGroupFigures>,
}

/// Quality of experience from the player's health events, per day or per film: startup
/// time p50/p95, rebuffer ratio, rebuffers per hour watched, failures per 100 starts,
/// exits before the first frame.
#[utoipa::path(
    get, path = "/api/v1/analytics/qoe", tag = "analytics",
    params(
        ("group_by" = Option<String>, Query, description = "day (default) or film"),
        ("from" = Option<String>, Query, description = "RFC 3339; default: `to` minus 7 days"),
        ("to" = Option<String>, Query, description = "RFC 3339, exclusive; default: now"),
    ),
    responses(
        (status = 200, body = QoeAnswer, example = json!({
            "from": "2026-11-25T12:00:00Z", "to": "2026-12-02T12:00:00Z", "elapsed_ms": 3.9, "sql": "SELECT … FROM ugc.hourly WHERE … UNION ALL SELECT … FROM ugc.events WHERE …", "group_by": "day",
            "groups": [{"key": "2026-12-01T00:00:00Z", "starts": 200, "startup_ms_p50": 850, "startup_ms_p95": 2400,
                "watch_time_s": 720000, "rebuffers": 40, "rebuffer_ms": 96000, "rebuffer_ratio": 0.000133,
                "rebuffers_per_hour": 0.2, "failures": 3, "failures_per_100_starts": 1.5, "exits_before_start": 2}]
        })),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 422, description = "A bad parameter, named in `errors`", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn qoe(
    State(state): State<AppState>,
    principal: Principal,
    raw: RawQuery,
) -> Result<Json<QoeAnswer>, ApiError> {
    let mut p = Params::new(&principal, raw)?;
    let (period, from, to) = p.period();
    let choices = [("day", QoeGroup::Day), ("film", QoeGroup::Film)];
    let group_by = p.choice("group_by", &choices, QoeGroup::Day);
    p.done()?;
    let req = AnalyticsRequest::Qoe { period, group_by };
    match ask(&state, &principal, req, from, to).await? {
        (span, AnalyticsAnswer::Qoe(groups)) => Ok(Json(QoeAnswer {
            span,
            group_by: name_of(&choices, group_by),
            groups,
        })),
        _ => Err(unexpected()),
    }
}

#[derive(Serialize, ToSchema)]
pub struct AudienceAnswer {
    #[serde(flatten)]
    pub span: Span,
    #[schema(example = "day")]
    pub group_by: String,
    pub periods: Vec<AudiencePeriod>,
}

/// Active users per day, week or month (DAU/WAU/MAU), new and returning.
#[utoipa::path(
    get, path = "/api/v1/analytics/audience", tag = "analytics",
    params(
        ("group_by" = Option<String>, Query, description = "day (default), week or month"),
        ("from" = Option<String>, Query, description = "RFC 3339; default: `to` minus 7 days"),
        ("to" = Option<String>, Query, description = "RFC 3339, exclusive; default: now"),
    ),
    responses(
        (status = 200, body = AudienceAnswer, example = json!({
            "from": "2026-11-25T12:00:00Z", "to": "2026-12-02T12:00:00Z", "elapsed_ms": 6.4, "sql": "SELECT … FROM ugc.hourly WHERE … UNION ALL SELECT … FROM ugc.events WHERE …", "group_by": "day",
            "periods": [{"period": "2026-12-01T00:00:00Z", "active_users": 1200, "new_users": 150, "returning_users": 1050}]
        })),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 422, description = "A bad parameter, named in `errors`", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn audience(
    State(state): State<AppState>,
    principal: Principal,
    raw: RawQuery,
) -> Result<Json<AudienceAnswer>, ApiError> {
    let mut p = Params::new(&principal, raw)?;
    let (period, from, to) = p.period();
    let choices = [
        ("day", Grain::Day),
        ("week", Grain::Week),
        ("month", Grain::Month),
    ];
    let grain = p.choice("group_by", &choices, Grain::Day);
    p.done()?;
    let req = AnalyticsRequest::Audience { period, grain };
    match ask(&state, &principal, req, from, to).await? {
        (span, AnalyticsAnswer::Audience(periods)) => Ok(Json(AudienceAnswer {
            span,
            group_by: name_of(&choices, grain),
            periods,
        })),
        _ => Err(unexpected()),
    }
}

#[derive(Serialize, ToSchema)]
pub struct PagesAnswer {
    #[serde(flatten)]
    pub span: Span,
    #[schema(example = "page")]
    pub group_by: String,
    pub pages: Vec<PageFigures>,
}

/// Page views and unique users (`page_view`), per page or per day.
#[utoipa::path(
    get, path = "/api/v1/analytics/pages", tag = "analytics",
    params(
        ("group_by" = Option<String>, Query, description = "page (default) or day"),
        ("from" = Option<String>, Query, description = "RFC 3339; default: `to` minus 7 days"),
        ("to" = Option<String>, Query, description = "RFC 3339, exclusive; default: now"),
    ),
    responses(
        (status = 200, body = PagesAnswer, example = json!({
            "from": "2026-11-25T12:00:00Z", "to": "2026-12-02T12:00:00Z", "elapsed_ms": 1.8, "sql": "SELECT … FROM ugc.events WHERE …", "group_by": "page",
            "pages": [{"key": "film", "views": 5400, "users": 1800}, {"key": "films_list", "views": 3100, "users": 1500}]
        })),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 422, description = "A bad parameter, named in `errors`", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn pages(
    State(state): State<AppState>,
    principal: Principal,
    raw: RawQuery,
) -> Result<Json<PagesAnswer>, ApiError> {
    let mut p = Params::new(&principal, raw)?;
    let (period, from, to) = p.period();
    let choices = [("page", PageGroup::Page), ("day", PageGroup::Day)];
    let group_by = p.choice("group_by", &choices, PageGroup::Page);
    p.done()?;
    let req = AnalyticsRequest::Pages { period, group_by };
    match ask(&state, &principal, req, from, to).await? {
        (span, AnalyticsAnswer::Pages(pages)) => Ok(Json(PagesAnswer {
            span,
            group_by: name_of(&choices, group_by),
            pages,
        })),
        _ => Err(unexpected()),
    }
}

#[derive(Serialize, ToSchema)]
pub struct ContentTopAnswer {
    #[serde(flatten)]
    pub span: Span,
    #[schema(example = "rating")]
    pub by: String,
    pub films: Vec<ContentFigures>,
}

/// Films ranked by average rating, reviews posted or bookmarks added (from the content
/// events).
#[utoipa::path(
    get, path = "/api/v1/analytics/content/top", tag = "analytics",
    params(
        ("by" = Option<String>, Query, description = "rating (default), reviews or bookmarks"),
        ("limit" = Option<u32>, Query, description = "Films to list, 1–100 (default 10)"),
        ("from" = Option<String>, Query, description = "RFC 3339; default: `to` minus 7 days"),
        ("to" = Option<String>, Query, description = "RFC 3339, exclusive; default: now"),
    ),
    responses(
        (status = 200, body = ContentTopAnswer, example = json!({
            "from": "2026-11-25T12:00:00Z", "to": "2026-12-02T12:00:00Z", "elapsed_ms": 2.6, "sql": "SELECT … FROM ugc.events WHERE …", "by": "rating",
            "films": [{"film_id": "3fa85f64-5717-4562-b3fc-2c963f66afa6", "ratings": 40, "average_rating": 8.2,
                       "reviews": 6, "bookmarks": 25}]
        })),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 422, description = "A bad parameter, named in `errors`", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn content_top(
    State(state): State<AppState>,
    principal: Principal,
    raw: RawQuery,
) -> Result<Json<ContentTopAnswer>, ApiError> {
    let mut p = Params::new(&principal, raw)?;
    let (period, from, to) = p.period();
    let choices = [
        ("rating", ContentRank::Rating),
        ("reviews", ContentRank::Reviews),
        ("bookmarks", ContentRank::Bookmarks),
    ];
    let by = p.choice("by", &choices, ContentRank::Rating);
    let limit = p.number("limit", 1, MAX_LIMIT).unwrap_or(10);
    p.done()?;
    let req = AnalyticsRequest::ContentTop { period, by, limit };
    match ask(&state, &principal, req, from, to).await? {
        (span, AnalyticsAnswer::ContentTop(films)) => Ok(Json(ContentTopAnswer {
            span,
            by: name_of(&choices, by),
            films,
        })),
        _ => Err(unexpected()),
    }
}
