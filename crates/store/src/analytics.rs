//! The cinema's questions, answered: every figure of `/api/v1/analytics/...` is one SQL
//! statement built here, over the same [`Schema`] seam as [`sql`](crate::sql), so the
//! embedded engine, a ClickHouse server (18.16 included) and a cluster run the same text.
//!
//! What the statements avoid, because 18.16 lacks it: window functions, `sumMap` over
//! string keys, `JSONExtract*` (the event's JSON is read with `visitParamExtract*`),
//! `DateTime64`. What they keep: a filter on `event_type` (the first column of the
//! events' sort key) and on the event's time, and per-row work only within one
//! (viewer, film) group — no joins. The engine answers integer sums and counts; rates
//! and shares are divided here, so every engine gives the same figures to the bit.
//!
//! Definitions (README, "Analytics", says the same for users):
//! - a *viewing* is one viewer and one film within the period (and within one period
//!   bucket where answers are grouped by time); anonymous events are left out;
//! - its *watch time* is the furthest position its `view_progress` reports reached;
//! - it is *complete* with a `full_view`, or a position at least 95% of the film's
//!   length (the furthest position any viewer reached in the period).

use serde::Serialize;
use serde_json::Value;
use ugc_model::FilmId;
use utoipa::ToSchema;

use crate::StoreError;
use crate::sql::{Schema, quote};

/// `[from, to)` in Unix milliseconds, on the events' own time (`occurred_at`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Period {
    pub from_ms: i64,
    pub to_ms: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilmRank {
    Views,
    Viewers,
    Completion,
    WatchTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentRank {
    Rating,
    Reviews,
    Bookmarks,
}

/// A time bucket; each starts at 00:00 UTC (weeks on Mondays).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grain {
    Hour,
    Day,
    Week,
    Month,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QoeGroup {
    Day,
    Film,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageGroup {
    Page,
    Day,
}

/// One question of the analytics API, typed: the edge parses, the store builds SQL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnalyticsRequest {
    TopFilms {
        period: Period,
        by: FilmRank,
        limit: u32,
    },
    Dropoff {
        period: Period,
        film: FilmId,
        buckets: u32,
        /// The film's length in seconds; `None`: the furthest position seen.
        length: Option<u32>,
    },
    FilmSummary {
        period: Period,
        film: FilmId,
    },
    /// `grain` is `Hour` or `Day`.
    Quality {
        period: Period,
        grain: Grain,
    },
    Qoe {
        period: Period,
        group_by: QoeGroup,
    },
    /// `grain` is `Day`, `Week` or `Month`.
    Audience {
        period: Period,
        grain: Grain,
    },
    Pages {
        period: Period,
        group_by: PageGroup,
    },
    ContentTop {
        period: Period,
        by: ContentRank,
        limit: u32,
    },
}

/// The figures of one answer, by question.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum AnalyticsAnswer {
    TopFilms(Vec<FilmFigures>),
    Dropoff(Dropoff),
    FilmSummary(FilmSummary),
    Quality(Vec<QualityPeriod>),
    Qoe(Vec<QoeGroupFigures>),
    Audience(Vec<AudiencePeriod>),
    Pages(Vec<PageFigures>),
    ContentTop(Vec<ContentFigures>),
}

#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct FilmFigures {
    #[schema(value_type = String, format = Uuid)]
    pub film_id: String,
    /// Viewings with any progress (`view_progress` or `full_view`).
    pub views: u64,
    /// Distinct viewers with any player event of the film.
    pub viewers: u64,
    /// Views that reached the end (see `completion_rate`).
    pub completed: u64,
    /// `completed / views`: a `full_view`, or progress ≥ 95% of the film's length.
    pub completion_rate: f64,
    /// Seconds: the sum over views of the furthest position reached.
    pub watch_time_s: u64,
    /// The furthest position any viewer reached, in seconds.
    pub length_s: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct DropoffPoint {
    /// Percent of the film's length: 0, 5, ..., 100 with 20 buckets.
    pub percent: f64,
    /// Seconds into the film.
    pub position_s: f64,
    /// Viewers whose furthest position is at least this far.
    pub viewers: u64,
    /// `viewers` over all the film's viewers (1 at 0%).
    pub share: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct Dropoff {
    /// Viewers with a `view_progress` of the film in the period.
    pub viewers: u64,
    /// Seconds: given, or the furthest position seen.
    pub length_s: u64,
    pub points: Vec<DropoffPoint>,
}

#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct RatingSummary {
    /// Viewers whose latest rating event in the period set a score.
    pub ratings: u64,
    /// Their mean score (0–10); absent without ratings.
    pub average: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct FilmSummary {
    pub views: u64,
    pub viewers: u64,
    pub completed: u64,
    pub completion_rate: f64,
    /// Seconds per view.
    pub average_watch_time_s: f64,
    pub pauses: u64,
    pub pauses_per_view: f64,
    pub quality_switches: u64,
    pub quality_switches_per_view: f64,
    pub length_s: u64,
    /// From the content events (ratings set or removed in the period); absent when
    /// there are none.
    pub rating: Option<RatingSummary>,
}

#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct RenditionShare {
    pub quality: String,
    /// Seconds of the film played in this rendition (between switches).
    pub seconds: u64,
    pub share: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct Transition {
    pub from: String,
    pub to: String,
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct QualityPeriod {
    /// Start of the period, RFC 3339 (UTC).
    pub period: String,
    /// To a higher resolution (by the label's leading number: `1080p` > `720p`).
    pub switches_up: u64,
    pub switches_down: u64,
    /// Switches from or to a label without a number (`auto`), or between equal ones.
    pub switches_other: u64,
    /// Share of time per rendition, largest first, over viewings with a switch: the
    /// quality before the first switch from 0, each switch's target until the next
    /// switch or the furthest position reached.
    pub renditions: Vec<RenditionShare>,
    /// Most common first (ties by name).
    pub transitions: Vec<Transition>,
    pub most_common: Option<Transition>,
}

#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct QoeGroupFigures {
    /// Start of the day (RFC 3339) or the film's id, by `group_by`.
    pub key: String,
    pub starts: u64,
    /// Milliseconds to the first frame; absent without starts.
    pub startup_ms_p50: Option<u64>,
    pub startup_ms_p95: Option<u64>,
    pub watch_time_s: u64,
    pub rebuffers: u64,
    pub rebuffer_ms: u64,
    /// Rebuffer time over watch time; absent without watch time.
    pub rebuffer_ratio: Option<f64>,
    pub rebuffers_per_hour: Option<f64>,
    /// `playback_error` events with `fatal: true`.
    pub failures: u64,
    pub failures_per_100_starts: Option<f64>,
    /// Viewings with a `playback_error` and no `playback_start`: the viewer never saw
    /// a first frame.
    pub exits_before_start: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct AudiencePeriod {
    pub period: String,
    /// Distinct users with any event in the period: DAU, WAU or MAU by `group_by`.
    pub active_users: u64,
    /// Active users whose first event ever is in this period.
    pub new_users: u64,
    pub returning_users: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct PageFigures {
    /// The page (`film`, `films_list`, ...) or the day's start (RFC 3339), by `group_by`.
    pub key: String,
    pub views: u64,
    /// Distinct signed-in users.
    pub users: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct ContentFigures {
    #[schema(value_type = String, format = Uuid)]
    pub film_id: String,
    /// Viewers whose latest rating event in the period set a score.
    pub ratings: u64,
    pub average_rating: Option<f64>,
    /// Reviews posted in the period.
    pub reviews: u64,
    /// Bookmarks added in the period.
    pub bookmarks: u64,
}

const PLAYBACK: &str = "('view_progress', 'pause', 'full_view', 'quality_change', \
                        'playback_start', 'rebuffer', 'playback_error')";
const RATINGS: &str = "('rating_set', 'rating_removed')";

/// The event's time as Unix milliseconds, in either dialect.
fn t_ms(s: &Schema) -> &'static str {
    if s.dialect.datetime64 {
        "toInt64(toUnixTimestamp64Milli(occurred_at))"
    } else {
        "toInt64(toUInt64(occurred_at) * 1000 + occurred_at_ms)"
    }
}

fn within(s: &Schema, p: Period) -> String {
    let t = t_ms(s);
    format!("{t} >= {} AND {t} < {}", p.from_ms, p.to_ms)
}

/// The bucket of a time in milliseconds (`ms`, an expression): its start in Unix
/// seconds, except months, which are `YYYYMM` (months differ in length).
fn bucket(g: Grain, ms: &str) -> String {
    match g {
        Grain::Hour => format!("intDiv({ms}, 3600000) * 3600"),
        Grain::Day => format!("intDiv({ms}, 86400000) * 86400"),
        // 1970-01-01 was a Thursday: shift by three days so weeks start on Monday.
        Grain::Week => format!("intDiv({ms} + 259200000, 604800000) * 604800 - 259200"),
        Grain::Month => format!("toYYYYMM(toDateTime(intDiv({ms}, 1000), 'UTC'))"),
    }
}

fn film_literal(f: FilmId) -> String {
    format!("toUUID({})", quote(&f.to_string()))
}

/// Per viewing of a film: whether it progressed or finished, its furthest position.
const VIEWING_COLUMNS: &str = "\
    countIf(event_type IN ('view_progress', 'full_view')) > 0 AS progressed, \
    countIf(event_type = 'full_view') > 0 AS finished, \
    maxIf(ifNull(position, 0), event_type = 'view_progress') AS pos";

/// Views completed, over per-viewing rows of one film (`progressed`, `finished`, `pos`)
/// and the film's length `len`.
const COMPLETED: &str = "arrayCount((p, f, g) -> g AND (f OR (len > 0 AND p * 100 >= len * 95)), \
     groupArray(pos), groupArray(finished), groupArray(progressed))";

/// How an `hourly` column folds the events of its hour.
#[derive(Clone, Copy)]
enum Fold {
    /// The largest value (flags: whether any event was of a kind).
    Max,
    /// The distinct values of the events that meet a condition (each carries its event
    /// id, so an event stored twice is one element).
    Set(&'static str),
}

/// What a fold is in each dialect: with `SimpleAggregateFunction` a column holds the
/// plain value; without it (18.16) an aggregate state, written with `…State` and read
/// with `…Merge`.
impl Fold {
    /// The column's type, for values of type `ty`.
    fn column_type(self, simple: bool, ty: &str) -> String {
        match (self, simple) {
            (Fold::Max, true) => format!("SimpleAggregateFunction(max, {ty})"),
            (Fold::Set(_), true) => {
                format!("SimpleAggregateFunction(groupUniqArrayArray, Array({ty}))")
            }
            (Fold::Max, false) => format!("AggregateFunction(max, {ty})"),
            (Fold::Set(_), false) => format!("AggregateFunction(groupUniqArrayIf, {ty}, UInt8)"),
        }
    }

    /// The column's value over a group of events, each worth `value`.
    fn of_events(self, simple: bool, value: &str) -> String {
        let state = if simple { "" } else { "State" };
        match self {
            Fold::Max => format!("max{state}({value})"),
            Fold::Set(when) => format!("groupUniqArrayIf{state}({value}, {when})"),
        }
    }

    /// The column `col`'s value over a group of rows. Sets are concatenated, and made
    /// distinct because an event a client sent twice may sit in two rows until the
    /// engine merges them.
    fn of_rows(self, simple: bool, col: &str) -> String {
        match (self, simple) {
            (Fold::Max, true) => format!("max({col})"),
            (Fold::Set(_), true) => format!("arrayDistinct(groupArrayArray({col}))"),
            (Fold::Max, false) => format!("maxMerge({col})"),
            (Fold::Set(_), false) => format!("groupUniqArrayIfMerge({col})"),
        }
    }
}

/// The aggregate columns of `hourly`: name, fold, value type, and the value of one
/// event (the event's time in milliseconds is `{t}`).
const HOURLY: &[(&str, Fold, &str, &str)] = &[
    (
        "playback",
        Fold::Max,
        "UInt8",
        "toUInt8(event_type IN {PLAYBACK})",
    ),
    (
        "progressed",
        Fold::Max,
        "UInt8",
        "toUInt8(event_type IN ('view_progress', 'full_view'))",
    ),
    (
        "finished",
        Fold::Max,
        "UInt8",
        "toUInt8(event_type = 'full_view')",
    ),
    (
        "reported",
        Fold::Max,
        "UInt8",
        "toUInt8(event_type = 'view_progress')",
    ),
    (
        "pos",
        Fold::Max,
        "UInt32",
        "toUInt32(if(event_type = 'view_progress', ifNull(position, 0), 0))",
    ),
    (
        "end_pos",
        Fold::Max,
        "UInt32",
        "toUInt32(if(event_type IN ('view_progress', 'quality_change'), ifNull(position, 0), 0))",
    ),
    (
        "switches",
        Fold::Set("event_type = 'quality_change'"),
        "Tuple(Int64, UInt32, String, String, UUID)",
        "({t}, toUInt32(ifNull(position, 0)), ifNull(quality_from, ''), ifNull(quality_to, ''), event_id)",
    ),
    (
        "starts",
        Fold::Set("event_type = 'playback_start'"),
        "Tuple(UUID, UInt64)",
        "(event_id, visitParamExtractUInt(data, 'startup_ms'))",
    ),
    (
        "rebuffers",
        Fold::Set("event_type = 'rebuffer'"),
        "Tuple(UUID, UInt64)",
        "(event_id, visitParamExtractUInt(data, 'duration_ms'))",
    ),
    (
        "errors",
        Fold::Set("event_type = 'playback_error'"),
        "Tuple(UUID, UInt8)",
        "(event_id, toUInt8(position(data, '\"fatal\":true') > 0))",
    ),
];

/// Columns of `hourly`: one row per (hour, film, viewer) with any event (anonymous
/// events left out; `film_id` is the nil UUID for events without a film), holding what
/// the whole-catalogue answers fold instead of reading every event. `hour` is hours
/// since the Unix epoch of the event's own time; every answer's bucket (hour, day,
/// Monday-week, month, in UTC) starts on an hour, so hours add up to any of them.
/// `user_key` (SipHash-128 of the user) groups viewers on a fixed-width key. Where the
/// engine has `SimpleAggregateFunction` (19.8+) a column holds the plain value (a max,
/// an array); older servers keep aggregate states (`…State` in, `…Merge` out).
pub(crate) fn hourly_columns(s: &Schema) -> String {
    let mut cols = vec![
        "hour UInt32".to_owned(),
        "film_id UUID".to_owned(),
        "user_key FixedString(16)".to_owned(),
        "user_id String".to_owned(),
    ];
    for (name, fold, ty, _) in HOURLY {
        cols.push(format!(
            "{name}_agg {}",
            fold.column_type(s.dialect.simple_aggregates, ty)
        ));
    }
    cols.join(", ")
}

/// The `hourly` rows of the events of `table` that match `filter`, in the columns'
/// order: what the materialized view inserts, and how the answers fold in the events
/// of a period's partial first and last hours.
pub(crate) fn hourly_select(s: &Schema, table: &str, filter: &str) -> String {
    let t = t_ms(s);
    let folds: Vec<String> = HOURLY
        .iter()
        .map(|(name, fold, _, value)| {
            let value = value.replace("{t}", t).replace("{PLAYBACK}", PLAYBACK);
            format!(
                "{} AS {name}_agg",
                fold.of_events(s.dialect.simple_aggregates, &value)
            )
        })
        .collect();
    format!(
        "SELECT toUInt32(intDiv({t}, 3600000)) AS hour, film_id, sipHash128(user_id) AS user_key, \
         user_id, {} FROM {table} WHERE user_id != '' AND {filter} \
         GROUP BY hour, film_id, user_key, user_id",
        folds.join(", ")
    )
}

/// The fold of the `hourly` column `name` over the rows of a group: the viewing's
/// value over the hours it spans.
fn fold(s: &Schema, name: &str) -> String {
    let (_, fold, _, _) = HOURLY
        .iter()
        .find(|c| c.0 == name)
        .expect("an hourly column");
    fold.of_rows(s.dialect.simple_aggregates, &format!("{name}_agg"))
}

const HOUR_MS: i64 = 3_600_000;

/// The start of an `hourly` row's hour in Unix milliseconds.
const HOUR_START: &str = "toInt64(hour) * 3600000";

/// The hours wholly inside `p`: `[first, end)`, in hours since the epoch; empty
/// (`first >= end`) when no hour is.
fn whole_hours(p: Period) -> (i64, i64) {
    let first = p.from_ms.div_euclid(HOUR_MS) + i64::from(p.from_ms.rem_euclid(HOUR_MS) != 0);
    (first, p.to_ms.div_euclid(HOUR_MS))
}

/// The `hourly` rows of `period` (and `filter`): the stored states of the hours wholly
/// inside it, and the partial first and last hours aggregated from `events` on the fly.
fn hourly_rows(s: &Schema, p: Period, filter: &str) -> String {
    let db = &s.database;
    let (first, end) = whole_hours(p);
    let t = t_ms(s);
    format!(
        "SELECT hour, film_id, user_key, user_id, {cols} FROM {db}.hourly \
         WHERE hour >= {first} AND hour < {end} AND {filter} \
         UNION ALL {edges}",
        cols = HOURLY
            .iter()
            .map(|c| format!("{}_agg", c.0))
            .collect::<Vec<_>>()
            .join(", "),
        edges = hourly_select(
            s,
            &format!("{db}.events"),
            &format!(
                "{w} AND NOT ({t} >= {a} AND {t} < {b}) AND {filter}",
                w = within(s, p),
                a = first * HOUR_MS,
                b = end * HOUR_MS
            )
        )
    )
}

/// The one statement that answers `req`.
pub fn statement(s: &Schema, req: &AnalyticsRequest) -> String {
    let db = &s.database;
    let t = t_ms(s);
    match *req {
        AnalyticsRequest::TopFilms { period, by, limit } => {
            let order = match by {
                FilmRank::Views => "views DESC",
                FilmRank::Viewers => "viewers DESC",
                FilmRank::Completion => "rate DESC, views DESC",
                FilmRank::WatchTime => "watch_time DESC",
            };
            format!(
                "SELECT toString(film_id) AS film, toUInt64(sum(progressed)) AS views, \
                 toUInt64(count()) AS viewers, toUInt64(max(pos)) AS len, \
                 toUInt64({COMPLETED}) AS completed, toUInt64(sum(pos)) AS watch_time, \
                 if(views = 0, 0, completed / views) AS rate \
                 FROM (SELECT film_id, user_key, {playback} AS playback, \
                 {progressed} AS progressed, {finished} AS finished, {pos} AS pos FROM ({rows}) \
                 GROUP BY film_id, user_key HAVING playback = 1) \
                 GROUP BY film_id HAVING views > 0 ORDER BY {order}, film LIMIT {limit}",
                rows = hourly_rows(
                    s,
                    period,
                    "film_id != toUUID('00000000-0000-0000-0000-000000000000')"
                ),
                playback = fold(s, "playback"),
                progressed = fold(s, "progressed"),
                finished = fold(s, "finished"),
                pos = fold(s, "pos"),
            )
        }
        AnalyticsRequest::Dropoff {
            period,
            film,
            buckets,
            length,
        } => {
            let len = length.map_or_else(|| "max(p)".to_owned(), |l| l.to_string());
            format!(
                // The outer SELECT leaves the viewers' positions behind.
                "SELECT viewers, len, reached FROM (\
                 SELECT toUInt64(count()) AS viewers, toUInt64({len}) AS len, groupArray(p) AS ps, \
                 arrayMap(i -> toUInt64(arrayCount(x -> x * {buckets} >= len * i, ps)), \
                 range({n})) AS reached \
                 FROM (SELECT user_id, max(ifNull(position, 0)) AS p FROM {db}.events \
                 WHERE event_type = 'view_progress' AND film_id = {f} AND {w} AND user_id != '' \
                 GROUP BY user_id))",
                n = buckets + 1,
                f = film_literal(film),
                w = within(s, period)
            )
        }
        AnalyticsRequest::FilmSummary { period, film } => format!(
            "SELECT toUInt64(sum(progressed)) AS views, toUInt64(sum(viewer)) AS viewers, \
             toUInt64(max(pos)) AS len, toUInt64({COMPLETED}) AS completed, \
             toUInt64(sum(pos)) AS watch_time, toUInt64(sum(v_pauses)) AS pauses, \
             toUInt64(sum(v_switches)) AS switches, \
             toUInt64(countIf(last_rating = 'rating_set')) AS ratings, \
             toUInt64(sumIf(score, last_rating = 'rating_set')) AS score_sum \
             FROM (SELECT user_id, {VIEWING_COLUMNS}, \
             countIf(event_type = 'pause') AS v_pauses, \
             countIf(event_type = 'quality_change') AS v_switches, \
             countIf(event_type IN {PLAYBACK}) > 0 AS viewer, \
             argMaxIf(toString(event_type), {t}, event_type IN {RATINGS}) AS last_rating, \
             argMaxIf(visitParamExtractUInt(data, 'score'), {t}, event_type IN {RATINGS}) AS score \
             FROM {db}.events WHERE event_type IN {PLAYBACK_AND_RATINGS} AND film_id = {f} \
             AND {w} AND user_id != '' GROUP BY user_id)",
            PLAYBACK_AND_RATINGS = "('view_progress', 'pause', 'full_view', 'quality_change', \
                 'playback_start', 'rebuffer', 'playback_error', 'rating_set', 'rating_removed')",
            f = film_literal(film),
            w = within(s, period)
        ),
        AnalyticsRequest::Quality { period, grain } => {
            // Per viewing with a switch: its switches in time order, then one entry
            // (kind, key, value) per rendition segment, per transition and per
            // direction; the outer query sums entries per period.
            let h = |x: &str| format!("toUInt32OrZero(extract(tupleElement(x, {x}), '^[0-9]+'))");
            let (hf, ht) = (h("3"), h("4"));
            format!(
                "SELECT toUInt64(pb) AS b, tupleElement(e, 1) AS kind, tupleElement(e, 2) AS key, \
                 toUInt64(sum(tupleElement(e, 3))) AS value \
                 FROM (SELECT pb, arrayConcat( \
                   arrayMap((n, st, en) -> ('time', n, greatest(en - st, 0)), \
                     arrayConcat([tupleElement(sw[1], 3)], arrayMap(x -> tupleElement(x, 4), sw)), \
                     arrayConcat([toInt64(0)], arrayMap(x -> toInt64(tupleElement(x, 2)), sw)), \
                     arrayPushBack(arrayMap(x -> toInt64(tupleElement(x, 2)), sw), toInt64(end_pos))), \
                   arrayMap(x -> ('switch', concat(tupleElement(x, 3), '\\t', tupleElement(x, 4)), toInt64(1)), sw), \
                   arrayMap(x -> ('direction', multiIf({hf} > 0 AND {ht} > {hf}, 'up', \
                     {ht} > 0 AND {ht} < {hf}, 'down', 'other'), toInt64(1)), sw)) AS entries \
                 FROM (SELECT {bk} AS pb, user_key, film_id, arraySort({switches}) AS sw, \
                   {end_pos} AS end_pos \
                   FROM ({rows}) GROUP BY pb, user_key, film_id HAVING length(sw) > 0)) \
                 ARRAY JOIN entries AS e GROUP BY b, kind, key ORDER BY b, kind, key",
                bk = bucket(grain, HOUR_START),
                rows = hourly_rows(s, period, "1"),
                switches = fold(s, "switches"),
                end_pos = fold(s, "end_pos"),
            )
        }
        AnalyticsRequest::Qoe { period, group_by } => {
            let key = match group_by {
                QoeGroup::Day => format!("toString({})", bucket(Grain::Day, HOUR_START)),
                QoeGroup::Film => "toString(film_id)".to_owned(),
            };
            format!(
                "SELECT k AS key, toUInt64(sum(v_starts)) AS starts, \
                 quantilesExactArray(0.5, 0.95)(startups) AS startup, \
                 toUInt64(sum(watched)) AS watch_time, toUInt64(sum(v_rebuffers)) AS rebuffers, \
                 toUInt64(sum(v_rebuffer_ms)) AS rebuffer_ms, toUInt64(sum(v_failures)) AS failures, \
                 toUInt64(sum(v_errors > 0 AND v_starts = 0)) AS exits \
                 FROM (SELECT {key} AS k, user_key, film_id, {pos} AS watched, {starts} AS st, \
                   arrayMap(x -> tupleElement(x, 2), st) AS startups, length(st) AS v_starts, \
                   {rebuffers} AS rb, length(rb) AS v_rebuffers, \
                   arraySum(arrayMap(x -> tupleElement(x, 2), rb)) AS v_rebuffer_ms, \
                   {errors} AS er, length(er) AS v_errors, \
                   arrayCount(x -> tupleElement(x, 2) = 1, er) AS v_failures \
                   FROM ({rows}) GROUP BY k, user_key, film_id \
                   HAVING {reported} = 1 OR v_starts + v_rebuffers + v_errors > 0) \
                 GROUP BY k ORDER BY k",
                rows = hourly_rows(s, period, "1"),
                pos = fold(s, "pos"),
                starts = fold(s, "starts"),
                rebuffers = fold(s, "rebuffers"),
                errors = fold(s, "errors"),
                reported = fold(s, "reported"),
            )
        }
        AnalyticsRequest::Audience { period, grain } => {
            // Per viewer, the hours with events before the period's end, each marked
            // whether it is within the period: stored hours, and the partial first and
            // last hours from `events`. First events are looked for before the period
            // too: "new" is new ever.
            let (first, end) = whole_hours(period);
            let partial_first = if period.from_ms.rem_euclid(HOUR_MS) != 0 {
                first - 1
            } else {
                -1
            };
            let h = format!("intDiv({t}, 3600000)");
            format!(
                "SELECT toUInt64(pb) AS b, toUInt64(count()) AS active, toUInt64(countIf(pb = first_b)) AS new_users \
                 FROM (SELECT user_key, {first_b} AS first_b, groupUniqArrayIf({bk}, in_p = 1) AS bs \
                   FROM (SELECT user_key, hour AS h, toUInt8(hour >= {first}) AS in_p FROM {db}.hourly \
                     WHERE hour < {end} AND hour != {partial_first} \
                     UNION ALL SELECT sipHash128(user_id) AS user_key, toUInt32({h}) AS h, \
                     toUInt8({t} >= {from}) AS in_p FROM {db}.events WHERE user_id != '' AND {t} < {to} \
                     AND ({h} = {partial_first} OR {t} >= {end_ms}) GROUP BY user_key, h, in_p) \
                   GROUP BY user_key HAVING length(bs) > 0) \
                 ARRAY JOIN bs AS pb GROUP BY pb ORDER BY pb",
                first_b = bucket(grain, "toInt64(min(h)) * 3600000"),
                bk = bucket(grain, "toInt64(h) * 3600000"),
                from = period.from_ms,
                to = period.to_ms,
                end_ms = end * HOUR_MS
            )
        }
        AnalyticsRequest::Pages { period, group_by } => {
            let (key, order) = match group_by {
                PageGroup::Page => ("ifNull(page, '')".to_owned(), "views DESC, key"),
                PageGroup::Day => (format!("toString({})", bucket(Grain::Day, t)), "b"),
            };
            let b = match group_by {
                PageGroup::Page => "0".to_owned(),
                PageGroup::Day => format!("min({})", bucket(Grain::Day, t)),
            };
            format!(
                "SELECT {key} AS key, toUInt64(count()) AS views, \
                 toUInt64(uniqExactIf(user_id, user_id != '')) AS users, toUInt64({b}) AS b \
                 FROM {db}.events WHERE event_type = 'page_view' AND {w} \
                 GROUP BY key ORDER BY {order}",
                w = within(s, period)
            )
        }
        AnalyticsRequest::ContentTop { period, by, limit } => {
            let order = match by {
                ContentRank::Rating => "mean_score DESC, ratings DESC",
                ContentRank::Reviews => "reviews DESC",
                ContentRank::Bookmarks => "bookmarks DESC",
            };
            format!(
                "SELECT toString(film_id) AS film, toUInt64(countIf(last_rating = 'rating_set')) AS ratings, \
                 toUInt64(sumIf(score, last_rating = 'rating_set')) AS score_sum, \
                 if(ratings = 0, 0, score_sum / ratings) AS mean_score, \
                 toUInt64(sum(r)) AS reviews, toUInt64(sum(bm)) AS bookmarks \
                 FROM (SELECT film_id, user_id, \
                   argMaxIf(toString(event_type), {t}, event_type IN {RATINGS}) AS last_rating, \
                   argMaxIf(visitParamExtractUInt(data, 'score'), {t}, event_type IN {RATINGS}) AS score, \
                   countIf(event_type = 'review_posted') AS r, \
                   countIf(event_type = 'bookmark_added') AS bm \
                   FROM {db}.events WHERE event_type IN \
                   ('rating_set', 'rating_removed', 'review_posted', 'bookmark_added') \
                   AND {w} AND user_id != '' GROUP BY film_id, user_id) \
                 GROUP BY film_id HAVING ratings + reviews + bookmarks > 0 \
                 ORDER BY {order}, film LIMIT {limit}",
                w = within(s, period)
            )
        }
    }
}

/// A 64-bit integer as engines write it in JSON: a number or a string of digits.
fn int(v: &Value) -> Result<u64, StoreError> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| StoreError::Unavailable(format!("unreadable analytics figure `{v}`")))
}

fn ints(v: &Value) -> Result<Vec<u64>, StoreError> {
    match v {
        Value::Array(a) => a.iter().map(int).collect(),
        _ => Err(StoreError::Unavailable(format!(
            "unreadable analytics figures `{v}`"
        ))),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn some_ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

/// Start of a bucket (see [`bucket`]) as RFC 3339.
fn period_start(g: Grain, b: u64) -> String {
    let secs = match g {
        Grain::Month => {
            let (y, m) = ((b / 100) as i32, (b % 100) as u8);
            time::Month::try_from(m)
                .ok()
                .and_then(|m| time::Date::from_calendar_date(y, m, 1).ok())
                .map_or(0, |d| d.midnight().assume_utc().unix_timestamp())
        }
        _ => b as i64,
    };
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

type Row = serde_json::Map<String, Value>;

fn field<'a>(r: &'a Row, name: &str) -> Result<&'a Value, StoreError> {
    r.get(name)
        .ok_or_else(|| StoreError::Unavailable(format!("analytics row without `{name}`")))
}

fn num(r: &Row, name: &str) -> Result<u64, StoreError> {
    int(field(r, name)?)
}

/// Reads the statement's `JSONEachRow` output into the answer's figures.
pub fn decode(req: &AnalyticsRequest, out: &[u8]) -> Result<AnalyticsAnswer, StoreError> {
    let rows: Vec<Row> = out
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice(l)
                .map_err(|e| StoreError::Unavailable(format!("unreadable store output: {e}")))
        })
        .collect::<Result<_, _>>()?;
    Ok(match *req {
        AnalyticsRequest::TopFilms { .. } => AnalyticsAnswer::TopFilms(
            rows.iter()
                .map(|r| {
                    let (views, completed) = (num(r, "views")?, num(r, "completed")?);
                    Ok(FilmFigures {
                        film_id: text(field(r, "film")?),
                        views,
                        viewers: num(r, "viewers")?,
                        completed,
                        completion_rate: ratio(completed, views),
                        watch_time_s: num(r, "watch_time")?,
                        length_s: num(r, "len")?,
                    })
                })
                .collect::<Result<_, StoreError>>()?,
        ),
        AnalyticsRequest::Dropoff { buckets, .. } => {
            let r = rows.first().cloned().unwrap_or_default();
            let viewers = r.get("viewers").map_or(Ok(0), int)?;
            let len = r.get("len").map_or(Ok(0), int)?;
            let reached = r.get("reached").map_or(Ok(vec![]), ints)?;
            AnalyticsAnswer::Dropoff(Dropoff {
                viewers,
                length_s: len,
                points: (0..=buckets)
                    .map(|i| {
                        let n = reached.get(i as usize).copied().unwrap_or(0);
                        DropoffPoint {
                            percent: 100.0 * i as f64 / buckets as f64,
                            position_s: len as f64 * i as f64 / buckets as f64,
                            viewers: n,
                            share: ratio(n, viewers),
                        }
                    })
                    .collect(),
            })
        }
        AnalyticsRequest::FilmSummary { .. } => {
            let r = rows.first().cloned().unwrap_or_default();
            let n = |k: &str| r.get(k).map_or(Ok(0), int);
            let (views, completed, ratings) = (n("views")?, n("completed")?, n("ratings")?);
            let (pauses, switches) = (n("pauses")?, n("switches")?);
            AnalyticsAnswer::FilmSummary(FilmSummary {
                views,
                viewers: n("viewers")?,
                completed,
                completion_rate: ratio(completed, views),
                average_watch_time_s: ratio(n("watch_time")?, views),
                pauses,
                pauses_per_view: ratio(pauses, views),
                quality_switches: switches,
                quality_switches_per_view: ratio(switches, views),
                length_s: n("len")?,
                rating: (ratings > 0).then(|| RatingSummary {
                    ratings,
                    average: Some(ratio(n("score_sum").unwrap_or(0), ratings)),
                }),
            })
        }
        AnalyticsRequest::Quality { grain, .. } => {
            let mut out: Vec<QualityPeriod> = Vec::new();
            for r in &rows {
                let b = num(r, "b")?;
                let period = period_start(grain, b);
                if out.last().is_none_or(|p| p.period != period) {
                    out.push(QualityPeriod {
                        period,
                        switches_up: 0,
                        switches_down: 0,
                        switches_other: 0,
                        renditions: vec![],
                        transitions: vec![],
                        most_common: None,
                    });
                }
                let p = out.last_mut().expect("pushed above");
                let (kind, key, value) = (
                    text(field(r, "kind")?),
                    text(field(r, "key")?),
                    num(r, "value")?,
                );
                match (kind.as_str(), key.as_str()) {
                    ("direction", "up") => p.switches_up += value,
                    ("direction", "down") => p.switches_down += value,
                    ("direction", _) => p.switches_other += value,
                    ("time", _) => p.renditions.push(RenditionShare {
                        quality: key,
                        seconds: value,
                        share: 0.0,
                    }),
                    ("switch", _) => {
                        let (from, to) = key.split_once('\t').unwrap_or((&key, ""));
                        p.transitions.push(Transition {
                            from: from.to_owned(),
                            to: to.to_owned(),
                            count: value,
                        });
                    }
                    _ => {}
                }
            }
            for p in &mut out {
                let total: u64 = p.renditions.iter().map(|r| r.seconds).sum();
                for r in &mut p.renditions {
                    r.share = ratio(r.seconds, total);
                }
                p.renditions
                    .sort_by(|a, b| b.seconds.cmp(&a.seconds).then(a.quality.cmp(&b.quality)));
                p.transitions.sort_by(|a, b| {
                    b.count
                        .cmp(&a.count)
                        .then_with(|| (&a.from, &a.to).cmp(&(&b.from, &b.to)))
                });
                p.most_common = p.transitions.first().cloned();
            }
            AnalyticsAnswer::Quality(out)
        }
        AnalyticsRequest::Qoe { group_by, .. } => AnalyticsAnswer::Qoe(
            rows.iter()
                .map(|r| {
                    let key = text(field(r, "key")?);
                    let key = match group_by {
                        QoeGroup::Day => period_start(Grain::Day, key.parse().unwrap_or(0)),
                        QoeGroup::Film => key,
                    };
                    let starts = num(r, "starts")?;
                    let startup = ints(field(r, "startup")?)?;
                    let watch = num(r, "watch_time")?;
                    let (rebuffers, rebuffer_ms, failures) = (
                        num(r, "rebuffers")?,
                        num(r, "rebuffer_ms")?,
                        num(r, "failures")?,
                    );
                    Ok(QoeGroupFigures {
                        key,
                        starts,
                        startup_ms_p50: startup.first().copied().filter(|_| starts > 0),
                        startup_ms_p95: startup.get(1).copied().filter(|_| starts > 0),
                        watch_time_s: watch,
                        rebuffers,
                        rebuffer_ms,
                        rebuffer_ratio: some_ratio(rebuffer_ms as f64 / 1000.0, watch as f64),
                        rebuffers_per_hour: some_ratio(rebuffers as f64, watch as f64 / 3600.0),
                        failures,
                        failures_per_100_starts: some_ratio(100.0 * failures as f64, starts as f64),
                        exits_before_start: num(r, "exits")?,
                    })
                })
                .collect::<Result<_, StoreError>>()?,
        ),
        AnalyticsRequest::Audience { grain, .. } => AnalyticsAnswer::Audience(
            rows.iter()
                .map(|r| {
                    let (active, new) = (num(r, "active")?, num(r, "new_users")?);
                    Ok(AudiencePeriod {
                        period: period_start(grain, num(r, "b")?),
                        active_users: active,
                        new_users: new,
                        returning_users: active.saturating_sub(new),
                    })
                })
                .collect::<Result<_, StoreError>>()?,
        ),
        AnalyticsRequest::Pages { group_by, .. } => AnalyticsAnswer::Pages(
            rows.iter()
                .map(|r| {
                    Ok(PageFigures {
                        key: match group_by {
                            PageGroup::Page => text(field(r, "key")?),
                            PageGroup::Day => period_start(Grain::Day, num(r, "b")?),
                        },
                        views: num(r, "views")?,
                        users: num(r, "users")?,
                    })
                })
                .collect::<Result<_, StoreError>>()?,
        ),
        AnalyticsRequest::ContentTop { .. } => AnalyticsAnswer::ContentTop(
            rows.iter()
                .map(|r| {
                    let ratings = num(r, "ratings")?;
                    Ok(ContentFigures {
                        film_id: text(field(r, "film")?),
                        ratings,
                        average_rating: (ratings > 0)
                            .then(|| ratio(num(r, "score_sum").unwrap_or(0), ratings)),
                        reviews: num(r, "reviews")?,
                        bookmarks: num(r, "bookmarks")?,
                    })
                })
                .collect::<Result<_, StoreError>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::Dialect;

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first() {
        // 2026-11-30 was a Monday.
        let monday = 1_795_996_800u64;
        assert_eq!(period_start(Grain::Week, monday), "2026-11-30T00:00:00Z");
        assert_eq!(period_start(Grain::Month, 202_612), "2026-12-01T00:00:00Z");
    }

    #[test]
    fn old_servers_get_seconds_plus_milliseconds() {
        let s = Schema {
            database: "ugc".into(),
            dialect: Dialect::from_parts(18, 16),
            cluster: None,
        };
        let q = statement(
            &s,
            &AnalyticsRequest::Pages {
                period: Period {
                    from_ms: 0,
                    to_ms: 1,
                },
                group_by: PageGroup::Page,
            },
        );
        assert!(q.contains("occurred_at_ms") && !q.contains("64Milli"));
    }
}
