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
pub mod seed004;

use std::net::IpAddr;
use std::str::FromStr;

use axum::Router;
use serde_json::{Map, Value};
use ugc_model::{
    Context, Event, EventId, EventName, FieldError, FilmId, FilmPosition, IncomingEvent, Timestamp,
    UserId,
};
use uuid::Uuid;

use crate::error::ApiError;
use crate::routes::events::{enrich, record};
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

/// The routes of the enabled seeds.
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

/// One canonical event made from a seed's request.
pub(crate) struct Canonical {
    pub event: Event,
    pub occurred_at: Option<Timestamp>,
    /// The seed's own fields, kept in the event's context.
    pub extra: Map<String, Value>,
    pub context: Context,
}

impl Canonical {
    pub fn new(event: Event) -> Self {
        Self {
            event,
            occurred_at: None,
            extra: Map::new(),
            context: Context::default(),
        }
    }
}

/// Makes the events durable; returns their ids once the log has them.
pub(crate) async fn ingest(
    state: &AppState,
    seed: Seed,
    user: Option<&UserId>,
    claimed_user: Option<String>,
    ip: Option<IpAddr>,
    events: Vec<Canonical>,
) -> Result<Vec<EventId>, ApiError> {
    let now = Timestamp::now();
    let mut ids = Vec::with_capacity(events.len());
    let mut records = Vec::with_capacity(events.len());
    for c in events {
        let mut context = c.context;
        context
            .extra
            .insert("seed".into(), Value::String(seed.as_str().into()));
        context.extra.extend(c.extra);
        let incoming = IncomingEvent {
            event_id: None,
            claimed_user: claimed_user.clone(),
            occurred_at: c.occurred_at,
            context,
            event: c.event,
        };
        let env = enrich(incoming, user, ip, now);
        ids.push(env.event_id);
        records.push(record(&env));
    }
    state.producer().append(records).await?;
    Ok(ids)
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
        Value::String(s) => return Timestamp::parse_rfc3339(s).map_err(|e| invalid(field, e)),
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
