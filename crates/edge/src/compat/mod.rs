//! Routes of the five services cinemas come to us from (the seeds), each answering as
//! its service did, so that their players, sites and back-ends work unchanged.
//!
//! Every seed's request becomes canonical events (`ugc_model::Event`) — the closest
//! catalogue type where one fits, `custom` otherwise — and goes through the same log
//! as the native API, so a 2xx here has our meaning: durable. Every field the client
//! sent is kept (in the event's `data` or its `context`), tagged with the seed.
//! The user is always the verified token's; a `user_id` a seed put in a body or query
//! string is recorded as `claimed_user_id`, never trusted.
//!
//! Where a seed answered 500 for bad input, these routes answer the right 4xx.

pub mod seed000;
pub mod seed001;
pub mod seed002;
pub mod seed003;
pub mod seed003_content;
pub mod seed004;

use std::net::IpAddr;
use std::str::FromStr;

use axum::Router;
use serde_json::{Map, Value};
use ugc_model::{
    Context, Event, EventId, EventName, FieldError, FilmId, FilmPosition, IncomingEvent,
    MAX_VALUE_DEPTH, Timestamp, UserId, value_depth,
};
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// One of the seed services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Seed {
    S000,
    S001,
    S002,
    S003,
    S004,
}

impl Seed {
    pub const ALL: [Seed; 5] = [Seed::S000, Seed::S001, Seed::S002, Seed::S003, Seed::S004];

    pub fn as_str(&self) -> &'static str {
        match self {
            Seed::S000 => "000",
            Seed::S001 => "001",
            Seed::S002 => "002",
            Seed::S003 => "003",
            Seed::S004 => "004",
        }
    }
}

impl FromStr for Seed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Seed::ALL
            .into_iter()
            .find(|seed| seed.as_str() == s.trim())
            .ok_or_else(|| format!("unknown seed `{s}`: one of 000, 001, 002, 003, 004"))
    }
}

/// A set of seeds as configured: `all`, `none`, or a comma-separated list (`000,004`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seeds(pub Vec<Seed>);

impl FromStr for Seeds {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "all" => Ok(Seeds(Seed::ALL.to_vec())),
            "none" | "" => Ok(Seeds(vec![])),
            list => list
                .split(',')
                .map(str::parse)
                .collect::<Result<Vec<_>, _>>()
                .map(Seeds),
        }
    }
}

#[derive(Clone, Debug)]
pub struct CompatConfig {
    /// Seeds whose routes are served.
    pub seeds: Vec<Seed>,
    /// Accept events without a token on seed 003's player routes (its player sends none).
    /// Such events carry no user.
    pub anonymous: bool,
}

impl Default for CompatConfig {
    fn default() -> Self {
        Self {
            seeds: Seed::ALL.to_vec(),
            anonymous: false,
        }
    }
}

/// The event routes of the enabled seeds (their ingest).
pub fn router(config: &CompatConfig) -> Router<AppState> {
    config.seeds.iter().fold(Router::new(), |router, seed| {
        router.merge(match seed {
            Seed::S000 => seed000::routes(),
            Seed::S001 => seed001::routes(),
            Seed::S002 => seed002::routes(),
            Seed::S003 => seed003::routes(),
            Seed::S004 => seed004::routes(),
        })
    })
}

/// Seed 003's content service (`/ugc_fastapi`), when that seed is enabled: reads and
/// writes of ratings, reviews and bookmarks, apart from the seeds' event routes.
pub fn content_router(config: &CompatConfig) -> Router<AppState> {
    if config.seeds.contains(&Seed::S003) {
        seed003_content::routes()
    } else {
        Router::new()
    }
}

/// One canonical event made from a seed's request.
pub(crate) struct Canonical {
    pub event: Event,
    /// Where the client sent the event's free-form value (`custom` data, `page_view`
    /// params), to name it when refused; empty when it is the whole body.
    pub data_field: &'static str,
    pub occurred_at: Option<Timestamp>,
    /// The seed's own fields, kept in the event's context.
    pub extra: Map<String, Value>,
    pub context: Context,
}

impl Canonical {
    pub fn new(event: Event) -> Self {
        Self {
            event,
            data_field: "",
            occurred_at: None,
            extra: Map::new(),
            context: Context::default(),
        }
    }
}

/// Tags the events with their seed and makes them durable through the one ingest path
/// ([`crate::ingest`]); returns their ids once the log has them.
pub(crate) async fn ingest(
    state: &AppState,
    seed: Seed,
    user: Option<&UserId>,
    claimed_user: Option<String>,
    ip: Option<IpAddr>,
    events: Vec<Canonical>,
) -> Result<Vec<EventId>, ApiError> {
    for c in &events {
        check_depth(c)?;
    }
    let mut incoming = Vec::with_capacity(events.len());
    for c in events {
        let mut context = c.context;
        context
            .extra
            .insert("seed".into(), Value::String(seed.as_str().into()));
        merge_context(&mut context, c.extra);
        incoming.push(IncomingEvent {
            event_id: None,
            claimed_user: claimed_user.clone(),
            occurred_at: c.occurred_at,
            context,
            event: c.event,
        });
    }
    crate::ingest::append(state, user, ip, incoming).await
}

/// Refuses, naming the client's field, a value nested deeper than the loader decodes.
pub(crate) fn check_depth(c: &Canonical) -> Result<(), ApiError> {
    let too_deep = |v: &Value| value_depth(v) > MAX_VALUE_DEPTH;
    let reason = format!("nests arrays and objects deeper than {MAX_VALUE_DEPTH} levels");
    let data = match &c.event {
        Event::Custom { data, .. } => Some(data.clone()),
        Event::PageView { params, .. } => Some(Value::Object(params.clone())),
        _ => None,
    };
    if let Some(data) = data.filter(too_deep) {
        // When the data is the whole body, name the body's field that nests too deep.
        let field = match (&data, c.data_field) {
            (Value::Object(o), "") => o
                .iter()
                .find(|(_, v)| value_depth(v) >= MAX_VALUE_DEPTH)
                .map_or(String::new(), |(k, _)| k.clone()),
            (_, f) => f.to_owned(),
        };
        return Err(invalid(&field, reason));
    }
    if let Some((k, _)) = c
        .extra
        .iter()
        .chain(&c.context.extra)
        .find(|(_, v)| too_deep(v))
    {
        return Err(invalid(k, reason));
    }
    Ok(())
}

/// The context keys the store types as strings.
const TYPED_CONTEXT: [&str; 3] = ["language", "timezone", "app_version"];

/// Adds a seed's own fields to an event's context so that the record always decodes.
/// `language`, `timezone` and `app_version` are typed strings there, but seed clients
/// send anything under those names: a non-string scalar is kept as its JSON text; a
/// string or scalar the typed slot cannot take (the slot already holds what the seed's
/// own mapping put there, e.g. seed 002's `version`, or the text is longer than the
/// native API allows), and any object, array or null, is kept under `<key>_raw`. Keys
/// the seed tag or the mapping already set are never overwritten by the client's.
fn merge_context(context: &mut Context, fields: Map<String, Value>) {
    for (key, value) in fields {
        let slot = match key.as_str() {
            "language" => Some((&mut context.language, 35)),
            "timezone" => Some((&mut context.timezone, 64)),
            "app_version" => Some((&mut context.app_version, 64)),
            _ => None,
        };
        let value = match slot {
            Some((slot, max)) => match context_text(&value, max) {
                Some(t) if slot.is_none() => {
                    *slot = Some(t);
                    continue;
                }
                Some(t) if slot.as_deref() == Some(t.as_str()) => continue,
                _ => value,
            },
            None => value,
        };
        let mut name = key;
        while context.extra.contains_key(&name) || TYPED_CONTEXT.contains(&name.as_str()) {
            name.push_str("_raw");
        }
        context.extra.insert(name, value);
    }
}

/// What a typed context key can hold from a seed's value: a string, or a number's or
/// boolean's JSON text, of at most `max` bytes (the native API's limit for the key).
pub(crate) fn context_text(v: &Value, max: usize) -> Option<String> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(_) | Value::Bool(_) => v.to_string(),
        _ => return None,
    };
    (text.len() <= max).then_some(text)
}

pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> ApiError {
    ApiError::Validation(vec![FieldError::new(field, reason)])
}

/// `custom {name, data}` for a seed event no catalogue type fits.
pub(crate) fn custom(name: &str, data: Value) -> Result<Event, ApiError> {
    let name = EventName::try_from(name.to_owned()).map_err(|e| invalid("event_type", e))?;
    Ok(Event::Custom { name, data })
}

/// Namespace of film ids derived from a seed's non-UUID movie ids (seed 001 sends `1`).
const SEED_FILM_NAMESPACE: Uuid = Uuid::from_u128(0x6f0c_5c1e_8f2a_4d7b_9a3e_1b2c_3d4e_5f60);

/// A film id from what a seed sent: a UUID as is; any other id (seed 001's integers)
/// as a stable UUIDv5 of it, the original kept in the event's context.
pub(crate) fn film_id(field: &str, v: &Value) -> Result<FilmId, ApiError> {
    let raw = match v {
        Value::String(s) if !s.trim().is_empty() => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return Err(invalid(field, "expected a film id")),
    };
    Ok(FilmId::from(Uuid::parse_str(&raw).unwrap_or_else(|_| {
        Uuid::new_v5(&SEED_FILM_NAMESPACE, raw.as_bytes())
    })))
}

/// A film id that must be a UUID (the seeds that declared it so).
pub(crate) fn film_uuid(field: &str, v: Option<&Value>) -> Result<FilmId, ApiError> {
    let s = v
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(field, "missing or not a string; expected a UUID"))?;
    Uuid::parse_str(s)
        .map(FilmId::from)
        .map_err(|e| invalid(field, e.to_string()))
}

/// Seconds into the film from a number (players send floats: `video.currentTime`).
pub(crate) fn position(field: &str, v: Option<&Value>) -> Result<FilmPosition, ApiError> {
    let secs = match v {
        Some(Value::Number(n)) => n.as_f64().unwrap_or(-1.0),
        Some(Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| invalid(field, "expected a number of seconds"))?,
        _ => return Err(invalid(field, "missing; expected a number of seconds")),
    };
    if !secs.is_finite() {
        return Err(invalid(field, "expected a finite number of seconds"));
    }
    FilmPosition::try_from(secs.floor() as i64).map_err(|e| invalid(field, e))
}

/// An instant from Unix seconds or milliseconds (told apart by size) or RFC 3339.
pub(crate) fn instant(field: &str, v: &Value) -> Result<Timestamp, ApiError> {
    let ms = match v {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(-1.0);
            // Anything below 10^11 is seconds (10^11 ms is 1973; 10^11 s is year 5138).
            if x < 1e11 {
                (x * 1000.0) as i64
            } else {
                x as i64
            }
        }
        Value::String(s) => return Timestamp::parse_iso_utc(s).map_err(|e| invalid(field, e)),
        _ => {
            return Err(invalid(
                field,
                "expected Unix seconds, milliseconds or an RFC 3339 string",
            ));
        }
    };
    Timestamp::from_millis(ms).map_err(|e| invalid(field, e))
}

/// A JSON object body, or the seed's 400 for an empty one.
pub(crate) fn object(body: Value) -> Result<Map<String, Value>, ApiError> {
    match body {
        Value::Object(m) if !m.is_empty() => Ok(m),
        Value::Object(_) | Value::Null => {
            Err(ApiError::BadRequest("the request body is empty".into()))
        }
        _ => Err(invalid("", "expected a JSON object")),
    }
}

/// The user a seed client claimed, as text, if any.
pub(crate) fn claimed(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}
